"""Cache codec: values come back exactly as they went in."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from decimal import Decimal

import msgspec
import numpy as np
import pandas as pd
import pytest

from rrr_platform.cache.codec import CacheSerializationError, decode, encode
from rrr_platform.market.types import Trade


def roundtrip(value: object) -> object:
    return decode(encode(value))


@pytest.mark.parametrize("value", [
    None, True, 0, -(2**63), 2**64 - 1, 1.5, float("inf"), "text", b"\x00bytes", [1, [2]], {"a": {"b": 1}},
    {1: "int key", (1, 2): "tuple key"}, (1, (2, "x")), {1, 2}, frozenset({"a"}),
    Decimal("0.1"), Decimal("1.10"), Decimal("-1E-30"), Decimal("123456789012345678901234567890.12345"),
    dt.datetime(2024, 5, 1, 12, 0, 0, 123456), dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
    dt.date(2024, 2, 29), dt.timedelta(days=1, microseconds=5),
    OrderedDict([("b", 1), ("a", 2)]),
])
def test_plain_values_round_trip_with_their_types(value: object) -> None:
    out = roundtrip(value)
    assert out == value and type(out) is type(value)
    if isinstance(value, Decimal):
        assert str(out) == str(value)  # scale kept, not just numerically equal


def test_decimals_nested_in_containers_stay_exact() -> None:
    value = {"px": [Decimal("65000.10"), Decimal("0.00000001")], "meta": (Decimal("2.50"),)}
    out = roundtrip(value)
    assert out == value and [d.as_tuple() for d in out["px"]] == [d.as_tuple() for d in value["px"]]


def test_numpy_arrays_and_scalars() -> None:
    for array in (np.arange(12, dtype=np.int64).reshape(3, 4), np.linspace(0, 1, 7, dtype=np.float32),
                  np.array([[1.5, np.nan]]).T, np.array(["a", "bc"]), np.array([True, False]),
                  np.array(["2024-01-01T00:00:00.000000001"], dtype="datetime64[ns]"),
                  np.array([Decimal("1.10"), None, "x"], dtype=object)):
        out = roundtrip(array)
        assert isinstance(out, np.ndarray) and out.dtype == array.dtype and out.shape == array.shape
        assert np.array_equal(out, array, equal_nan=array.dtype.kind == "f")
    transposed = np.arange(6).reshape(2, 3).T  # not C-contiguous
    assert np.array_equal(roundtrip(transposed), transposed)
    out = roundtrip(np.arange(3))
    out[0] = 9  # decoded arrays are writable copies
    for scalar in (np.float64(0.1), np.int32(-7), np.bool_(True), np.datetime64("2024-01-01", "D")):
        result = roundtrip(scalar)
        assert result == scalar and type(result) is type(scalar)


def test_dataframes_round_trip_exactly() -> None:
    frame = pd.DataFrame(
        {
            "price": [65000.1, np.nan, 64999.9],
            "size": np.array([1, 2, 3], dtype=np.int32),
            "venue": ["binance_spot", None, "coinbase_exchange"],
            "ts": pd.to_datetime([1, 2, 3], unit="ns", utc=True).tz_convert("America/New_York"),
            "exact": [Decimal("1.10"), Decimal("2.000"), None],
            "side": pd.Categorical(["BUY", "SELL", "BUY"]),
            1: [True, False, True],  # a non-string column label
        },
        index=pd.Index([10, 20, 30], name="trade_no"),
    )
    out = roundtrip(frame)
    pd.testing.assert_frame_equal(out, frame, check_exact=True)
    assert [str(d) for d in out["exact"].iloc[:2]] == ["1.10", "2.000"]
    bars = pd.DataFrame({"close": np.random.default_rng(1).random(1440)},
                        index=pd.date_range("2024-01-01", periods=1440, freq="min", tz="UTC"))
    pd.testing.assert_frame_equal(roundtrip(bars), bars, check_exact=True, check_freq=True)
    wide = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["L", "N"]))
    pd.testing.assert_frame_equal(roundtrip(wide), wide, check_exact=True)
    pd.testing.assert_frame_equal(roundtrip(pd.DataFrame()), pd.DataFrame())


def test_series_round_trip_exactly() -> None:
    series = pd.Series([1.0, 2.5], index=pd.date_range("2024-01-01", periods=2, freq="D"), name=("px", 1))
    pd.testing.assert_series_equal(roundtrip(series), series, check_exact=True, check_freq=True)
    unnamed = pd.Series(["a", None])
    pd.testing.assert_series_equal(roundtrip(unnamed), unnamed, check_exact=True)
    mixed = pd.Series([Decimal("1.10"), "x", 3], name="mixed")
    pd.testing.assert_series_equal(roundtrip(mixed), mixed, check_exact=True)


def test_registered_structs_round_trip_typed() -> None:
    trade = Trade(venue="binance_spot", symbol="BTC-USDT", venue_symbol="BTCUSDT", trade_id="1",
                  price=Decimal("65000.10"), size=Decimal("0.00100"), aggressor="BUY",
                  exchange_ts_ns=1_700_000_000_000_000_001, receive_ts_ns=1_700_000_000_000_000_002)
    out = roundtrip({"last": trade})["last"]
    assert out == trade and isinstance(out, Trade) and str(out.price) == "65000.10"


def test_unsupported_values_raise_a_clear_error() -> None:
    class Unregistered(msgspec.Struct):
        x: int

    with pytest.raises(CacheSerializationError, match="not registered"):
        encode(Unregistered(1))
    with pytest.raises(CacheSerializationError, match=r"cannot cache a value of type builtins\.object"):
        encode({"k": object()})
    with pytest.raises(CacheSerializationError):
        encode(2**70)
    with pytest.raises(CacheSerializationError, match="cannot be decoded"):
        decode(b"\xc1not msgpack")


def test_numeric_frames_take_the_raw_numpy_path_and_others_fall_back_to_arrow() -> None:
    from rrr_platform.cache import codec

    numeric = pd.DataFrame(
        {
            "f32": np.arange(5, dtype=np.float32), "i8": np.arange(5, dtype=np.int8) - 2,
            "u64": np.arange(5, dtype=np.uint64) * (2**63 // 5), "b": [True, False] * 2 + [True],
            "c": np.arange(5) * (1 + 2j), "td": pd.to_timedelta(np.arange(5), unit="s"),
            "naive": pd.date_range("2024-03-10", periods=5, freq="h"),
            "ny": pd.date_range("2024-03-10 01:00", periods=5, freq="h", tz="America/New_York"),  # spans DST
        },
        index=pd.RangeIndex(10, 20, 2, name="row"),
    )
    assert codec._frame_to_arrays(numeric) is not None
    pd.testing.assert_frame_equal(roundtrip(numeric), numeric, check_exact=True)
    by_time = numeric.set_index("ny")
    pd.testing.assert_frame_equal(roundtrip(by_time), by_time, check_exact=True)
    float_index = pd.DataFrame({"x": [1.0]}, index=pd.Index([0.5], name="k"))
    pd.testing.assert_frame_equal(roundtrip(float_index), float_index, check_exact=True)

    plus_two = dt.timezone(dt.timedelta(hours=2))
    fixed_offset = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=2, tz=plus_two)})
    nullable = pd.DataFrame({"n": pd.array([1, None], dtype="Int64")})
    for frame in (fixed_offset, nullable):
        assert codec._frame_to_arrays(frame) is None  # Arrow carries what raw arrays cannot
        pd.testing.assert_frame_equal(roundtrip(frame), frame, check_exact=True)
    out = roundtrip(numeric)
    out.iloc[0, 0] = 99  # decoded frames are writable
