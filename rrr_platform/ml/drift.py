"""Feature drift: population stability index of recent features against the training window.

PSI = Σ (recentᵢ − refᵢ) · ln(recentᵢ / refᵢ) over the training deciles of each feature. Rules of
thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 a shift worth retraining for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

N_BINS = 10
DEFAULT_THRESHOLD = 0.25
_FLOOR = 1e-4  # an empty bin would make the log infinite


def reference(frame: pd.DataFrame, feature_columns: Sequence[str], n_bins: int = N_BINS) -> dict[str, Any]:
    """Bin edges (training quantiles) and bin shares of each feature; JSON-ready."""
    features: dict[str, Any] = {}
    for column in feature_columns:
        values = frame[column].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
        shares = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        features[column] = {"edges": edges.tolist(), "shares": (shares / len(values)).tolist()}
    return {"n_bins": n_bins, "n_rows": len(frame), "features": features}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), _FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftReport:
    psi_by_feature: dict[str, float]
    threshold: float
    n_rows: int

    @property
    def max_psi(self) -> float:
        return max(self.psi_by_feature.values(), default=0.0)

    @property
    def worst_feature(self) -> str | None:
        if not self.psi_by_feature:
            return None
        return max(self.psi_by_feature, key=lambda k: self.psi_by_feature[k])

    @property
    def drifted(self) -> bool:
        return self.max_psi > self.threshold

    def reason(self) -> str:
        drifted = sorted(
            (k for k, v in self.psi_by_feature.items() if v > self.threshold),
            key=lambda k: -self.psi_by_feature[k],
        )
        if not drifted:
            return f"no drift: max PSI {self.max_psi:.3f} <= {self.threshold} over {self.n_rows} rows"
        listed = ", ".join(f"{k} {self.psi_by_feature[k]:.3f}" for k in drifted[:5])
        return f"feature drift (PSI > {self.threshold}): {listed}"


def drift_report(
    ref: dict[str, Any], recent: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD
) -> DriftReport:
    """PSI of each reference feature present in ``recent``; raises ValueError when none is."""
    values: dict[str, float] = {}
    for column, spec in ref["features"].items():
        if column not in recent.columns:
            continue
        data = recent[column].to_numpy(dtype=np.float64)
        data = data[np.isfinite(data)]
        if len(data) == 0:
            continue
        edges = np.asarray(spec["edges"])
        counts = np.bincount(np.searchsorted(edges, data, side="right"), minlength=len(edges) + 1)
        values[column] = psi(np.asarray(spec["shares"]), counts / len(data))
    if not values:
        raise ValueError("recent frame shares no feature with the drift reference")
    return DriftReport(values, threshold, len(recent))


def recent_features(conn: Any, window_minutes: int) -> pd.DataFrame:
    """Features of the last ``window_minutes`` before the latest bar in ``market.bars_1m``."""
    from rrr_platform.market.timeutil import NS_PER_MIN, datetime_to_ns, ns_to_datetime
    from rrr_platform.ml import features as feat
    from rrr_platform.ml.sentiment import load_news

    latest = conn.execute("SELECT max(ts) FROM market.bars_1m").fetchone()[0]
    if latest is None:
        return pd.DataFrame()
    end_ns = datetime_to_ns(latest) + NS_PER_MIN
    start_ns = end_ns - window_minutes * NS_PER_MIN
    warmup = feat.MAX_WARMUP_MINUTES * NS_PER_MIN
    bars = feat.load_bars(conn, start_ns - warmup, end_ns)
    news = load_news(conn, ns_to_datetime(start_ns - warmup - 240 * NS_PER_MIN), ns_to_datetime(end_ns))
    computed = feat.compute_features(bars, news, label_horizon=None)
    return computed[computed["ts_ns"] >= start_ns]


def champion_drift(
    registry: Any, conn: Any, model: str, window_minutes: int = 120, threshold: float = DEFAULT_THRESHOLD
) -> tuple[DriftReport | None, str]:
    """PSI of the recent features against the current champion's training window.

    Returns (report, what was compared) or (None, why nothing could be compared).
    """
    version = registry.alias_version(model, "champion")
    if version is None:
        return None, f"{model} has no champion yet"
    run_id = registry.version_tags(model, version).get("run_id")
    if not run_id:
        return None, f"{model} v{version} has no training run tag"
    ref = registry.run_json(run_id, "drift_reference.json")
    recent = recent_features(conn, window_minutes)
    if recent.empty:
        return None, "no recent bars to compare"
    return drift_report(ref, recent, threshold), f"{model} v{version} vs last {window_minutes} min"
