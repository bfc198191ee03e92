import datetime as dt

import pytest

from rrr_platform.market.symbols import (
    UnknownSymbol,
    canonical_from_concatenated,
    canonical_from_polygon_rest,
)
from rrr_platform.market.timeutil import datetime_to_ns, format_rfc3339_ns, parse_rfc3339_ns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("2026-03-02T15:04:05.287312Z", 1772463845287312000),
        ("2026-03-02T15:04:05.123456789Z", 1772463845123456789),
        ("2026-03-02T16:04:05.287312+01:00", 1772463845287312000),
    ],
)
def test_rfc3339_to_ns_keeps_every_digit(text: str, expected: int) -> None:
    assert parse_rfc3339_ns(text) == expected


def test_rfc3339_round_trip_and_agrees_with_datetime() -> None:
    value = dt.datetime(2026, 11, 25, 13, 37, 1, 654321, tzinfo=dt.UTC)
    ns = datetime_to_ns(value)
    assert parse_rfc3339_ns(value.isoformat().replace("+00:00", "Z")) == ns
    assert parse_rfc3339_ns(format_rfc3339_ns(ns, 6)) == ns


def test_rfc3339_rejects_missing_zone() -> None:
    with pytest.raises(ValueError):
        parse_rfc3339_ns("2026-03-02T15:04:05")


def test_canonical_symbols() -> None:
    assert canonical_from_concatenated("BTCUSDT") == "BTC-USDT"
    assert canonical_from_concatenated("ethbtc") == "ETH-BTC"
    assert canonical_from_concatenated("BTCFDUSD") == "BTC-FDUSD"
    assert canonical_from_polygon_rest("X:BTCUSD") == "BTC-USD"
    assert canonical_from_polygon_rest("AAPL") == "AAPL"
    with pytest.raises(UnknownSymbol):
        canonical_from_concatenated("USDT")
