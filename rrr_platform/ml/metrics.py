"""Forecast metrics, per-sample losses and the paired Diebold-Mariano test.

Classification (probability that the forward return is positive): log-loss, Brier, AUC, hit rate and
information coefficient (Spearman rank correlation of the forecast with the realised forward return).
Volatility (forecast of forward realised volatility): RMSE and QLIKE on variances (Patton 2011: the
loss that ranks variance forecasts robustly to noise in the realised proxy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

EPS = 1e-12
PROB_CLIP = 1e-6


def logloss_per_sample(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), PROB_CLIP, 1 - PROB_CLIP)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties get half credit via average ranks)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def information_coefficient(forecast: np.ndarray, realised: np.ndarray) -> float:
    forecast, realised = np.asarray(forecast), np.asarray(realised)
    if len(forecast) < 3 or np.ptp(forecast) == 0 or np.ptp(realised) == 0:
        return 0.0  # a constant forecast carries no rank information
    return float(stats.spearmanr(forecast, realised).statistic)


def classification_metrics(y: np.ndarray, p: np.ndarray, forward_return: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return {
        "log_loss": float(logloss_per_sample(y, p).mean()),
        "brier": float(np.mean((p - y) ** 2)),
        "auc": auc(y, p),
        "hit_rate": float(np.mean((p > 0.5) == (y > 0.5))),
        "ic": information_coefficient(p, forward_return),
        "n": float(len(y)),
    }


def qlike_per_sample(realised_vol: np.ndarray, forecast_vol: np.ndarray) -> np.ndarray:
    """QLIKE on variances: σ²/h − log(σ²/h) − 1, zero for a perfect forecast."""
    ratio = (np.asarray(realised_vol) ** 2 + EPS) / (np.maximum(np.asarray(forecast_vol), 0) ** 2 + EPS)
    return ratio - np.log(ratio) - 1


def sq_error_per_sample(realised_vol: np.ndarray, forecast_vol: np.ndarray) -> np.ndarray:
    return (np.asarray(forecast_vol, dtype=np.float64) - np.asarray(realised_vol, dtype=np.float64)) ** 2


def regression_metrics(realised_vol: np.ndarray, forecast_vol: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(math.sqrt(sq_error_per_sample(realised_vol, forecast_vol).mean())),
        "qlike": float(qlike_per_sample(realised_vol, forecast_vol).mean()),
        "ic": information_coefficient(forecast_vol, realised_vol),
        "n": float(len(realised_vol)),
    }


@dataclass(frozen=True)
class PairedTest:
    mean_diff: float  # mean loss(challenger) − loss(other); negative = challenger better
    statistic: float
    p_value: float  # one-sided: H1 is "the challenger's expected loss is lower"
    n: int

    def significant(self, alpha: float = 0.05) -> bool:
        return self.mean_diff < 0 and self.p_value < alpha

    def as_dict(self) -> dict[str, float]:
        return {"mean_diff": self.mean_diff, "dm_stat": self.statistic, "p_value": self.p_value, "n": self.n}


def diebold_mariano(
    loss_challenger: np.ndarray, loss_other: np.ndarray, groups: np.ndarray | None = None, lag: int = 1
) -> PairedTest:
    """One-sided Diebold-Mariano test of equal expected loss, with a Newey-West (Bartlett) variance.

    ``groups`` (for example the sample timestamp) averages differentials within a group first: symbols
    observed at the same minute are not independent evidence. ``lag`` should cover the label
    horizon, since overlapping forward windows make consecutive differentials autocorrelated.
    Harvey-Leybourne-Newbold small-sample correction, Student-t reference.
    """
    d = np.asarray(loss_challenger, dtype=np.float64) - np.asarray(loss_other, dtype=np.float64)
    if groups is not None:
        order = np.argsort(groups, kind="stable")
        _, first = np.unique(np.asarray(groups)[order], return_index=True)
        d = np.add.reduceat(d[order], first) / np.diff(np.append(first, len(d)))
    n = len(d)
    if n < 3:
        return PairedTest(float(d.mean()) if n else 0.0, 0.0, 1.0, n)
    mean = float(d.mean())
    centred = d - mean
    lag = max(0, min(lag, n - 1))
    var = float(centred @ centred) / n
    for k in range(1, lag + 1):
        var += 2 * (1 - k / (lag + 1)) * float(centred[k:] @ centred[:-k]) / n
    if var <= 0:
        return PairedTest(mean, 0.0, 1.0 if mean >= 0 else 0.0, n)
    dm = mean / math.sqrt(var / n)
    hln = math.sqrt((n + 1 - 2 * (lag + 1) + (lag + 1) * lag / n) / n) if n > 2 * (lag + 1) else 1.0
    statistic = dm * hln
    return PairedTest(mean, statistic, float(stats.t.cdf(statistic, df=n - 1)), n)
