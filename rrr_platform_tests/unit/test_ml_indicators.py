"""Each indicator against a hand-worked case and an independent reference computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rrr_platform.ml import indicators as ind

CLOSE = np.array([10.0, 11.0, 10.5, 10.5, 12.0, 11.0, 11.5])


def test_trailing_sum_and_mean_by_hand() -> None:
    out = ind.trailing_sum([1.0, 2.0, 3.0, 4.0], 3)
    assert np.isnan(out[:2]).all()
    assert out[2:].tolist() == [6.0, 9.0]
    assert ind.trailing_mean([1.0, 2.0, 3.0, 4.0], 2)[1:].tolist() == [1.5, 2.5, 3.5]
    assert np.isnan(ind.trailing_sum([1.0], 2)).all()
    with pytest.raises(ValueError):
        ind.trailing_sum([1.0], 0)


def test_trailing_std_matches_pandas_rolling() -> None:
    x = np.random.default_rng(3).normal(size=200)
    for ddof in (0, 1):
        ref = pd.Series(x).rolling(20).std(ddof=ddof).to_numpy()
        np.testing.assert_allclose(ind.trailing_std(x, 20, ddof), ref, rtol=1e-10, equal_nan=True)


def test_trailing_value_depends_only_on_its_window_bit_for_bit() -> None:
    x = np.random.default_rng(4).normal(size=5000) * 1e3
    full = ind.trailing_std(x, 60)
    tail = ind.trailing_std(x[-60:], 60)
    assert full[-1] == tail[-1]  # exactly, not approximately


def test_log_returns_by_hand() -> None:
    out = ind.log_returns(CLOSE, 2)
    assert np.isnan(out[:2]).all()
    assert out[2] == pytest.approx(math.log(10.5 / 10.0))
    assert out[6] == pytest.approx(math.log(11.5 / 12.0))


def test_realized_volatility_by_hand() -> None:
    out = ind.realized_volatility(CLOSE, 3)
    r = [math.log(11 / 10), math.log(10.5 / 11), 0.0]
    assert np.isnan(out[:3]).all()
    assert out[3] == pytest.approx(math.sqrt(sum(v * v for v in r)))


def test_parkinson_by_hand() -> None:
    high, low = np.array([11.0, 12.0]), np.array([10.0, 11.0])
    expected = math.sqrt((math.log(1.1) ** 2 + math.log(12 / 11) ** 2) / 2 / (4 * math.log(2)))
    assert ind.parkinson_volatility(high, low, 2)[1] == pytest.approx(expected)


def test_garman_klass_by_hand_and_floor() -> None:
    o, h, low, c = (np.array([v]) for v in (100.0, 104.0, 99.0, 103.0))
    term = 0.5 * math.log(104 / 99) ** 2 - (2 * math.log(2) - 1) * math.log(103 / 100) ** 2
    assert ind.garman_klass_volatility(o, h, low, c, 1)[0] == pytest.approx(math.sqrt(term))
    # Only an inconsistent bar (close far outside high-low) makes the raw estimate negative: floored at 0.
    bad = ind.garman_klass_volatility(np.array([100.0]), np.array([100.01]), np.array([100.0]),
                                      np.array([110.0]), 1)
    assert bad[0] == 0.0


def test_rsi_by_hand() -> None:
    # changes: +1, -0.5, 0, +1.5, -1, +0.5 -> over the last 3: 1.5, -1, 0.5 -> G = 2, L = 1
    out = ind.rsi(CLOSE, 3)
    assert np.isnan(out[:3]).all()
    assert out[6] == pytest.approx(100 * 2 / 3)
    # first full window: +1, -0.5, 0 -> 100 * 1 / 1.5
    assert out[3] == pytest.approx(100 / 1.5)
    assert ind.rsi(np.full(10, 5.0), 3)[5] == 50.0
    assert ind.rsi(np.arange(1.0, 11.0), 3)[5] == 100.0


def test_windowed_ema_equals_pandas_ewm_on_the_trailing_window() -> None:
    x = np.random.default_rng(5).normal(100, 1, 300)
    out = ind.windowed_ema(x, 12)
    window = ind.ema_window(12)
    for t in (window - 1, 150, 299):
        ref = pd.Series(x[t - window + 1 : t + 1]).ewm(span=12, adjust=True).mean().iloc[-1]
        assert out[t] == pytest.approx(ref, rel=1e-12)
    assert np.isnan(out[: window - 1]).all()


def test_macd_reference() -> None:
    x = 100 * np.exp(np.cumsum(np.random.default_rng(6).normal(0, 0.01, 400)))
    line, signal, hist = ind.macd(x)
    t = 399

    def ewm_last(values: np.ndarray, span: int) -> float:
        return float(pd.Series(values[-ind.ema_window(span):]).ewm(span=span, adjust=True).mean().iloc[-1])

    ref_line = [(ewm_last(x[: s + 1], 12) - ewm_last(x[: s + 1], 26)) / x[s] for s in range(t - 26, t + 1)]
    assert line[t] == pytest.approx(ref_line[-1], rel=1e-10)
    ref_signal = pd.Series(ref_line).ewm(span=9, adjust=True).mean().iloc[-1]
    assert signal[t] == pytest.approx(ref_signal, rel=1e-9)
    assert hist[t] == pytest.approx(ref_line[-1] - ref_signal, rel=1e-8, abs=1e-15)


def test_bollinger_position_by_hand() -> None:
    c = np.array([1.0, 2.0, 3.0])
    mean, std = 2.0, math.sqrt(2 / 3)  # population sigma
    expected = (3.0 - (mean - 2 * std)) / (4 * std)
    assert ind.bollinger_position(c, 3)[2] == pytest.approx(expected)
    assert ind.bollinger_position(np.full(5, 7.0), 3)[4] == 0.5


def test_zscore_by_hand() -> None:
    out = ind.zscore([1.0, 2.0, 6.0], 3)
    assert out[2] == pytest.approx((6 - 3) / math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    assert ind.zscore([4.0, 4.0, 4.0], 3)[2] == 0.0


def test_buy_imbalance_by_hand() -> None:
    buy, volume = np.array([3.0, 0.0, 2.0]), np.array([4.0, 0.0, 2.0])
    assert ind.buy_imbalance(buy, volume, 1).tolist() == [0.5, 0.0, 1.0]
    assert ind.buy_imbalance(buy, volume, 3)[2] == pytest.approx((2 * 5 - 6) / 6)


def test_decay_weights() -> None:
    assert ind.decay_weights(3, 1.0).tolist() == [1.0, 0.5, 0.25]
