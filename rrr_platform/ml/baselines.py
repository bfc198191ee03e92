"""Baselines every model must beat, fitted on a fold's training rows and scored on its test rows.

Direction (probability of an up move): the class prior; momentum sign and last-return sign, each
turned into a probability by the up-frequency after a positive / non-positive value in training
(Laplace-smoothed), so they are scored by the same log-loss as the model. Volatility: EWMA
(RiskMetrics) and GARCH(1,1) (``arch``), both forecasting the forward realised volatility.

A fitted direction baseline is a small dict (``params``) so the predictor's last fallback tier can
rebuild it from PostgreSQL without the model registry.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

log = logging.getLogger(__name__)

DIRECTION_BASELINES = ("prior", "momentum", "last_return")
VOLATILITY_BASELINES = ("ewma", "garch")
GARCH_FIT_ROWS = 5000


@dataclass(frozen=True)
class DirectionBaseline:
    """``p_up`` = ``p_pos`` if the input (``column``) is positive else ``p_neg``; prior: both equal."""

    name: str
    column: str | None
    p_pos: float
    p_neg: float

    @property
    def params(self) -> dict[str, Any]:
        return {"name": self.name, "column": self.column, "p_pos": self.p_pos, "p_neg": self.p_neg}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DirectionBaseline:
        return cls(str(params["name"]), params.get("column"), float(params["p_pos"]), float(params["p_neg"]))

    def predict(self, signal: np.ndarray | float | None) -> np.ndarray:
        if self.column is None or signal is None:
            return np.full(np.shape(signal) if signal is not None else (), self.p_pos, dtype=np.float64)
        values = np.asarray(signal, dtype=np.float64)
        return np.where(values > 0, self.p_pos, self.p_neg)

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        if self.column is None:
            return np.full(len(frame), self.p_pos)
        return self.predict(frame[self.column].to_numpy())


def _smoothed_rate(y: np.ndarray) -> float:
    return float((y.sum() + 1.0) / (len(y) + 2.0))


def fit_direction_baselines(train: pd.DataFrame) -> dict[str, DirectionBaseline]:
    y = train["y_up"].to_numpy(dtype=np.float64)
    prior = _smoothed_rate(y)
    fitted = {"prior": DirectionBaseline("prior", None, prior, prior)}
    for name, column in (("momentum", "mom"), ("last_return", "ret_1")):
        positive = train[column].to_numpy() > 0
        fitted[name] = DirectionBaseline(
            name, column, _smoothed_rate(y[positive]), _smoothed_rate(y[~positive])
        )
    return fitted


def ewma_forecast(frame: pd.DataFrame) -> np.ndarray:
    return frame["ewma_vol"].to_numpy(dtype=np.float64)


def garch_forecast(
    frame: pd.DataFrame, train_idx: np.ndarray, test_idx: np.ndarray, horizon: int
) -> np.ndarray:
    """GARCH(1,1) per symbol: fit on the symbol's training returns, filter through every return with
    the fitted parameters (causal), forecast the sum of the next ``horizon`` variances at test rows.

    Falls back to the EWMA forecast for a symbol whose fit fails (logged), so one bad series never
    sinks a training run.
    """
    from arch import arch_model  # deferred: arch is slow to import

    frame = frame.reset_index(drop=True)  # row labels = positions, as train_idx/test_idx are
    out = ewma_forecast(frame.iloc[test_idx]).copy()
    is_test = np.zeros(len(frame), dtype=bool)
    is_test[test_idx] = True
    is_train = np.zeros(len(frame), dtype=bool)
    is_train[train_idx] = True
    position_in_test = np.full(len(frame), -1)
    position_in_test[test_idx] = np.arange(len(test_idx))
    keys = ["venue", "symbol"] if "venue" in frame.columns else ["symbol"]
    for symbol, group in frame.groupby(keys, sort=False):
        group = group.sort_values("ts_ns")
        rows = group.index.to_numpy()
        test_rows = rows[is_test[rows]]
        if len(test_rows) == 0:
            continue
        returns = np.nan_to_num(group["ret_1"].to_numpy(dtype=np.float64))
        # the last GARCH_FIT_ROWS training returns pin three parameters well; fitting on all of a
        # month costs seconds per symbol and fold for no better forecast
        train_returns = returns[is_train[rows]][-GARCH_FIT_ROWS:]
        if len(train_returns) < 100:
            continue
        scale = 1.0 / max(float(np.std(train_returns)), 1e-12)  # arch fits best on unit-scale data
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = arch_model(train_returns * scale, mean="Zero", vol="GARCH", p=1, q=1, rescale=False)
                fit = model.fit(disp="off", show_warning=False)
            omega, alpha, beta = (float(fit.params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
        except Exception as exc:  # any numerical failure: keep the EWMA forecast
            log.warning("GARCH fit failed for %s (%s); using EWMA for it", symbol, exc)
            continue
        persistence = alpha + beta
        if not (omega > 0 and 0 <= persistence < 1):
            continue
        scaled = returns * scale
        # the GARCH filter var_t = omega + alpha r_{t-1}^2 + beta var_{t-1}, as a linear filter
        drive = np.concatenate(([omega / (1 - persistence)], omega + alpha * scaled[:-1] ** 2))
        cond_var = lfilter([1.0], [1.0, -beta], drive)
        cond_var[0] = omega / (1 - persistence)
        # next-step variance after observing r_t, then the h-step sum of expected variances
        next_var = omega + alpha * scaled**2 + beta * cond_var
        long_run = omega / (1 - persistence)
        decay = (1 - persistence**horizon) / (1 - persistence)
        total = horizon * long_run + (next_var - long_run) * decay
        is_test_row = is_test[rows]
        out[position_in_test[rows[is_test_row]]] = np.sqrt(np.maximum(total[is_test_row], 0)) / scale
    return out


def best_direction_baseline(losses: dict[str, float]) -> str:
    return min(losses, key=lambda name: losses[name] if math.isfinite(losses[name]) else math.inf)
