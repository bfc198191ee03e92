"""Plausibility checks on normalized records."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from rrr_platform.ingest.validation import DEFAULT_MAX_SKEW_NS, validate_quote, validate_trade
from rrr_platform.market.types import Quote, Trade
from rrr_platform.venues import binance

NOW = 1_767_225_600_000_000_000
S = 1_000_000_000

GOOD_TRADE = Trade(
    venue="binance_spot",
    symbol="BTC-USDT",
    venue_symbol="BTCUSDT",
    trade_id="1",
    price=Decimal("94210.01"),
    size=Decimal("0.0035"),
    aggressor="BUY",
    exchange_ts_ns=NOW - S // 100,
    receive_ts_ns=NOW,
)
GOOD_QUOTE = Quote(
    venue="binance_spot",
    symbol="BTC-USDT",
    venue_symbol="BTCUSDT",
    bid_px=Decimal("94210"),
    bid_sz=Decimal("1"),
    ask_px=Decimal("94210.01"),
    ask_sz=Decimal("2"),
    receive_ts_ns=NOW,
)


def trade(**changes: object) -> Trade:
    return msgspec.structs.replace(GOOD_TRADE, **changes)


def quote(**changes: object) -> Quote:
    return msgspec.structs.replace(GOOD_QUOTE, **changes)


def test_good_records_pass() -> None:
    assert validate_trade(GOOD_TRADE, now_ns=NOW) is None
    assert validate_trade(GOOD_TRADE, now_ns=NOW, known_symbols={"BTC-USDT"}) is None
    assert validate_quote(GOOD_QUOTE, now_ns=NOW, known_symbols=frozenset({"BTC-USDT"})) is None


def test_a_parsed_frame_passes() -> None:
    frame = '{"e":"trade","E":1767225600123,"s":"BTCUSDT","t":1,"p":"1.5","q":"2","T":1767225600121,"m":true}'
    (parsed,) = binance.parse(frame, NOW).trades
    assert validate_trade(parsed, now_ns=NOW) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"price": Decimal(0)}, "price is not positive (0)"),
        ({"price": Decimal("-1.5")}, "price is not positive (-1.5)"),
        ({"size": Decimal("0.000")}, "size is not positive (0.000)"),
        ({"price": Decimal("NaN")}, "price is not finite (NaN)"),
        ({"size": Decimal("Infinity")}, "size is not finite (Infinity)"),
        ({"price": 94210.01}, "price is a float, not an exact decimal"),
        ({"trade_id": ""}, "empty trade id"),
        ({"aggressor": "buy"}, "aggressor 'buy' is not BUY, SELL or UNKNOWN"),
        ({"exchange_ts_ns": NOW + 301 * S}, "exchange time is 301.000 s ahead of receive time"),
        ({"exchange_ts_ns": NOW - 301 * S}, "exchange time is 301.000 s behind receive time"),
        ({"exchange_ts_ns": (NOW // 1000) * 1000 // 1000}, "behind receive time"),  # a µs value taken as ns
        ({"exchange_ts_ns": 0}, "exchange time 0 ns is not a real time"),
    ],
)
def test_implausible_trades(changes: dict[str, object], reason: str) -> None:
    problem = validate_trade(trade(**changes), now_ns=NOW)
    assert problem is not None and reason in problem, problem


def test_unknown_symbol() -> None:
    assert validate_trade(GOOD_TRADE, now_ns=NOW, known_symbols={"ETH-USDT"}) == "unknown symbol 'BTC-USDT'"
    assert validate_quote(GOOD_QUOTE, now_ns=NOW, known_symbols=()) == "unknown symbol 'BTC-USDT'"


def test_replayed_history_may_be_old_but_not_from_the_future() -> None:
    old = trade(is_replay=True, exchange_ts_ns=NOW - 30 * 86_400 * S)
    assert validate_trade(old, now_ns=NOW) is None
    future = trade(is_replay=True, exchange_ts_ns=NOW + 3600 * S)
    assert "ahead of receive time" in (validate_trade(future, now_ns=NOW) or "")


def test_skew_bound_is_a_parameter() -> None:
    late = trade(exchange_ts_ns=NOW - 2 * S)
    assert validate_trade(late, now_ns=NOW) is None
    assert validate_trade(late, now_ns=NOW, max_skew_ns=S) == "exchange time is 2.000 s behind receive time"
    assert DEFAULT_MAX_SKEW_NS == 300 * S


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"bid_px": Decimal("94210.02")}, "crossed quote: bid 94210.02 > ask 94210.01"),
        ({"bid_px": None, "ask_px": None}, "quote has neither bid nor ask"),
        ({"ask_px": Decimal(0)}, "ask_px is not positive (0)"),
        ({"bid_sz": Decimal(-1)}, "bid_sz is not positive (-1)"),
        ({"ask_sz": Decimal("sNaN")}, "ask_sz is not finite"),
        ({"exchange_ts_ns": NOW - 3600 * S}, "behind receive time"),
    ],
)
def test_implausible_quotes(changes: dict[str, object], reason: str) -> None:
    problem = validate_quote(quote(**changes), now_ns=NOW)
    assert problem is not None and reason in problem, problem


def test_one_sided_and_locked_quotes_pass() -> None:
    assert validate_quote(quote(bid_px=None, bid_sz=None), now_ns=NOW) is None
    assert validate_quote(quote(bid_px=Decimal("94210.01")), now_ns=NOW) is None  # locked
