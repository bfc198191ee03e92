"""Technical indicators over bounded trailing windows, bit-for-bit reproducible.

Every indicator's value at row t is a function of rows ``t-window+1 .. t`` only, summed in one fixed
order (newest first), so the value at t is the same float whether the array holds a month or only
the last ``window`` rows. That is what lets live scoring (a short window of the latest bars) agree
with batch features to the last digit. Library rolling sums (pandas ``rolling().sum()``, cumsum
differences) add and subtract as they slide, so their value at t depends on everything before it in
the last bits; hence the hand-written lag loops below: each is ``window`` vectorised array adds,
cheap for the windows used here (at most a few hundred).

Exponential averages with infinite memory are truncated to a fixed number of terms and renormalised
(``windowed_ema``): equal to pandas ``ewm(span, adjust=True).mean()`` evaluated on the trailing window.
RSI is Cutler's variant (simple averages of gains and losses), which is bounded by construction.

Rows before a window is full are NaN; NaN inside a window propagates.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _as_float(values: npt.ArrayLike) -> FloatArray:
    return np.ascontiguousarray(values, dtype=np.float64)


def trailing_weighted_sum(values: npt.ArrayLike, weights: npt.ArrayLike) -> FloatArray:
    """``out[t] = sum_k weights[k] * values[t-k]`` for k = 0..len(weights)-1, added newest first."""
    x = _as_float(values)
    w = _as_float(weights)
    window, n = len(w), len(x)
    out = np.full(n, np.nan)
    if window == 0:
        raise ValueError("empty window")
    if n < window:
        return out
    acc = w[0] * x[window - 1 :]
    for k in range(1, window):
        acc += w[k] * x[window - 1 - k : n - k]
    out[window - 1 :] = acc
    return out


def trailing_sum(values: npt.ArrayLike, window: int) -> FloatArray:
    """Sum of the trailing ``window`` values (including t), added newest first."""
    x = _as_float(values)
    n = len(x)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = np.full(n, np.nan)
    if n < window:
        return out
    acc = x[window - 1 :].copy()
    for k in range(1, window):
        acc += x[window - 1 - k : n - k]
    out[window - 1 :] = acc
    return out


def trailing_mean(values: npt.ArrayLike, window: int) -> FloatArray:
    return trailing_sum(values, window) / window


def trailing_std(values: npt.ArrayLike, window: int, ddof: int = 1) -> FloatArray:
    """Two-pass standard deviation of the trailing window (mean first, then squared deviations)."""
    x = _as_float(values)
    n = len(x)
    if window <= ddof:
        raise ValueError(f"window {window} too short for ddof={ddof}")
    mean = trailing_mean(x, window)
    out = np.full(n, np.nan)
    if n < window:
        return out
    m = mean[window - 1 :]
    acc = (x[window - 1 :] - m) ** 2
    for k in range(1, window):
        acc += (x[window - 1 - k : n - k] - m) ** 2
    out[window - 1 :] = np.sqrt(acc / (window - ddof))
    return out


def lag_difference(values: npt.ArrayLike, lag: int) -> FloatArray:
    """``values[t] - values[t-lag]``; NaN for the first ``lag`` rows."""
    x = _as_float(values)
    out = np.full(len(x), np.nan)
    if lag < 1:
        raise ValueError(f"lag must be >= 1, got {lag}")
    if len(x) > lag:
        out[lag:] = x[lag:] - x[:-lag]
    return out


def ema_window(span: int, terms_per_span: int = 3) -> int:
    return span * terms_per_span


def windowed_ema(values: npt.ArrayLike, span: int, terms_per_span: int = 3) -> FloatArray:
    """EMA with ``alpha = 2/(span+1)`` truncated to ``span * terms_per_span`` terms, renormalised.

    Equals pandas ``Series(window).ewm(span=span, adjust=True).mean().iloc[-1]`` on the trailing window.
    """
    alpha = 2.0 / (span + 1.0)
    weights = (1.0 - alpha) ** np.arange(ema_window(span, terms_per_span), dtype=np.float64)
    return trailing_weighted_sum(values, weights / weights.sum())


def log_returns(close: npt.ArrayLike, horizon: int) -> FloatArray:
    """``ln(close[t] / close[t-horizon])``."""
    return lag_difference(np.log(_as_float(close)), horizon)


def realized_volatility(close: npt.ArrayLike, window: int) -> FloatArray:
    """Square root of the sum of squared 1-bar log returns over the trailing window (not annualised)."""
    r1 = log_returns(close, 1)
    return np.sqrt(trailing_sum(r1 * r1, window))


PARKINSON_FACTOR = 1.0 / (4.0 * np.log(2.0))
GARMAN_KLASS_FACTOR = 2.0 * np.log(2.0) - 1.0


def parkinson_volatility(high: npt.ArrayLike, low: npt.ArrayLike, window: int) -> FloatArray:
    """Per-bar Parkinson volatility: ``sqrt(mean(ln(H/L)^2) / (4 ln 2))`` over the trailing window."""
    hl = np.log(_as_float(high) / _as_float(low))
    return np.sqrt(PARKINSON_FACTOR * trailing_mean(hl * hl, window))


def garman_klass_volatility(
    open_: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, window: int
) -> FloatArray:
    """Per-bar Garman-Klass volatility: ``sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2))``.

    Never negative for consistent bars (|ln C/O| <= ln H/L); an inconsistent bar could make it so, and
    the mean is floored at 0 rather than turning into NaN.
    """
    hl = np.log(_as_float(high) / _as_float(low))
    co = np.log(_as_float(close) / _as_float(open_))
    mean = trailing_mean(0.5 * hl * hl - GARMAN_KLASS_FACTOR * co * co, window)
    return np.sqrt(np.where(mean < 0.0, 0.0, mean))


def rsi(close: npt.ArrayLike, window: int = 14) -> FloatArray:
    """Cutler's RSI: ``100 * G / (G + L)`` with G, L the sums of gains and losses over ``window`` bars.

    50 where the window has neither gains nor losses.
    """
    change = lag_difference(close, 1)
    # np.maximum propagates NaN (the first row has no change), np.where would turn it into a zero gain.
    gains = trailing_sum(np.maximum(change, 0.0), window)
    losses = trailing_sum(np.maximum(-change, 0.0), window)
    total = gains + losses
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 100.0 * gains / total
    return np.where(total == 0.0, 50.0, value)


def macd(
    close: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram from windowed EMAs, each divided by the close (scale-free)."""
    c = _as_float(close)
    line = (windowed_ema(c, fast) - windowed_ema(c, slow)) / c
    signal_line = windowed_ema(line, signal)
    return line, signal_line, line - signal_line


def bollinger_position(close: npt.ArrayLike, window: int = 20, width: float = 2.0) -> FloatArray:
    """%B: ``(close - lower) / (upper - lower)`` with bands at mean ± width·σ (population σ); 0.5 if σ = 0."""
    c = _as_float(close)
    mean = trailing_mean(c, window)
    std = trailing_std(c, window, ddof=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (c - (mean - width * std)) / (2.0 * width * std)
    return np.where(std == 0.0, 0.5, value)


def zscore(values: npt.ArrayLike, window: int) -> FloatArray:
    """``(x[t] - mean) / std`` over the trailing window including t (sample σ); 0 if σ = 0."""
    x = _as_float(values)
    mean = trailing_mean(x, window)
    std = trailing_std(x, window, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (x - mean) / std
    return np.where(std == 0.0, 0.0, value)


def buy_imbalance(buy_volume: npt.ArrayLike, volume: npt.ArrayLike, window: int) -> FloatArray:
    """``sum(buy - sell) / sum(volume)`` over the trailing window, in [-1, 1]; 0 where nothing traded."""
    b = _as_float(buy_volume)
    v = _as_float(volume)
    net = trailing_sum(2.0 * b - v, window)
    total = trailing_sum(v, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = net / total
    return np.where(total == 0.0, 0.0, value)


def decay_weights(window: int, half_life: float) -> FloatArray:
    """``0.5 ** (k / half_life)`` for k = 0..window-1: weight of a value k bars old."""
    return 0.5 ** (np.arange(window, dtype=np.float64) / half_life)
