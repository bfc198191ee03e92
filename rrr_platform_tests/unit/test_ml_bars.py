"""1-minute bars from columnar trades: hand-worked case, a pandas reference, exact prices, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_S
from rrr_platform.ml.bars import BarInputError, build_bars_1m, side_codes

T0 = 1_790_000_000 * NS_PER_S // NS_PER_MIN * NS_PER_MIN


def test_hand_worked_bars() -> None:
    ts = np.array([T0 + 1, T0 + 30 * NS_PER_S, T0 + 59 * NS_PER_S, T0 + 3 * NS_PER_MIN + 5])
    price = np.array([100.0, 102.0, 99.0, 101.0])
    size = np.array([1.0, 2.0, 1.0, 4.0])
    side = np.array([1, -1, 1, 0], dtype=np.int8)
    bars = build_bars_1m(ts, price, size, side)
    assert bars.ts_ns.tolist() == [T0, T0 + 3 * NS_PER_MIN]  # minutes without trades have no bar
    assert bars.open.tolist() == [100.0, 101.0]
    assert bars.high.tolist() == [102.0, 101.0]
    assert bars.low.tolist() == [99.0, 101.0]
    assert bars.close.tolist() == [99.0, 101.0]
    assert bars.volume.tolist() == [4.0, 4.0]
    assert bars.vwap[0] == pytest.approx((100 + 204 + 99) / 4)
    assert bars.trade_count.tolist() == [3, 1]
    assert bars.buy_volume.tolist() == [2.0, 0.0]


def test_unsorted_input_is_sorted_stably() -> None:
    ts = np.array([T0 + NS_PER_MIN, T0, T0, T0 + 5])
    price = np.array([50.0, 10.0, 11.0, 12.0])
    bars = build_bars_1m(ts, price, np.ones(4), np.zeros(4, np.int8))
    assert bars.open.tolist() == [10.0, 50.0]  # of the two trades at T0, the first given opens
    assert bars.close.tolist() == [12.0, 50.0]


def test_matches_a_pandas_groupby_reference() -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    ts = np.sort(T0 + rng.integers(0, 90 * NS_PER_MIN, n))
    price = 100 + rng.normal(0, 1, n).cumsum() * 0.01
    size = rng.uniform(0.01, 3, n)
    side = rng.choice(np.array([-1, 0, 1], np.int8), n)
    bars = build_bars_1m(ts, price, size, side)
    frame = pd.DataFrame({"m": ts // NS_PER_MIN * NS_PER_MIN, "p": price, "s": size,
                          "b": np.where(side == 1, size, 0.0), "ps": price * size})
    ref = frame.groupby("m").agg(o=("p", "first"), h=("p", "max"), l=("p", "min"), c=("p", "last"),
                                 v=("s", "sum"), n=("p", "size"), b=("b", "sum"), ps=("ps", "sum"))
    assert bars.ts_ns.tolist() == ref.index.tolist()
    np.testing.assert_array_equal(bars.open, ref["o"])
    np.testing.assert_array_equal(bars.high, ref["h"])
    np.testing.assert_array_equal(bars.low, ref["l"])
    np.testing.assert_array_equal(bars.close, ref["c"])
    np.testing.assert_allclose(bars.volume, ref["v"], rtol=1e-12)
    np.testing.assert_allclose(bars.buy_volume, ref["b"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bars.vwap, ref["ps"] / ref["v"], rtol=1e-12)
    np.testing.assert_array_equal(bars.trade_count, ref["n"])


def test_exact_integer_prices_stay_exact() -> None:
    # Prices in ticks of 0.01 and sizes in lots of 1e-8: far past float64's exact integers when multiplied.
    ts = np.array([T0, T0 + 1, T0 + 2])
    ticks = np.array([6_543_210_987, 6_543_210_999, 6_543_210_001], dtype=np.int64)
    lots = np.array([123_456_789, 1, 5], dtype=np.int64)
    bars = build_bars_1m(ts, ticks, lots, np.array([1, 1, -1], np.int8))
    assert bars.high.dtype == np.int64 and bars.high[0] == 6_543_210_999
    assert bars.low[0] == 6_543_210_001 and bars.close[0] == 6_543_210_001
    assert bars.volume[0] == 123_456_795 and bars.buy_volume[0] == 123_456_790


def test_empty_input() -> None:
    bars = build_bars_1m(np.array([], np.int64), np.array([]), np.array([]), np.array([], np.int8))
    assert len(bars) == 0


@pytest.mark.parametrize(
    ("price", "size", "side", "message"),
    [
        ([1.0, np.nan], [1.0, 1.0], [1, 1], "price must be positive and finite: nan at index 1"),
        ([1.0, -2.0], [1.0, 1.0], [1, 1], "index 1"),
        ([1.0, np.inf], [1.0, 1.0], [1, 1], "price"),
        ([1.0, 2.0], [1.0, -1.0], [1, 1], "size must be finite and >= 0"),
        ([1.0, 2.0], [1.0, 1.0], [1, 7], "side must be +1, -1 or 0"),
        ([1.0], [1.0, 1.0], [1, 1], "arrays differ in length"),
    ],
)
def test_bad_input_is_a_clear_error(price, size, side, message) -> None:
    with pytest.raises(BarInputError, match=message.replace("+", r"\+")):
        build_bars_1m(np.array([T0, T0 + 1]), np.array(price), np.array(size), np.array(side, np.int8))


def test_side_codes() -> None:
    assert side_codes(["BUY", "SELL", "UNKNOWN"]).tolist() == [1, -1, 0]
    with pytest.raises(BarInputError, match="unknown aggressor 'HOLD' at index 1"):
        side_codes(["BUY", "HOLD"])
