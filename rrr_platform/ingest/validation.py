"""Plausibility checks on normalized records: a reason string for a record that must not be stored.

The venue parsers already reject what cannot be decoded (bad JSON, wrong types, missing fields);
these checks catch well-formed but implausible data: non-positive or non-finite prices and sizes,
exchange times far from our receive time (a unit mix-up, a stuck clock), symbols the feed never
subscribed to, and crossed quotes. Each returns None for a good record; the engine dead-letters the
rest with the reason.
"""

from __future__ import annotations

from collections.abc import Container
from decimal import Decimal

from rrr_platform.market.types import Quote, Trade

DEFAULT_MAX_SKEW_NS = 300 * 1_000_000_000
"""Five minutes: far above any real exchange->receive latency or clock drift, far below the 1000x
errors of a ms/µs mix-up (which land decades away)."""

_AGGRESSORS = frozenset({"BUY", "SELL", "UNKNOWN"})


def _amount_problem(name: str, value: object, *, optional: bool = False) -> str | None:
    if value is None:
        return None if optional else f"{name} is missing"
    if not isinstance(value, Decimal):
        return f"{name} is a {type(value).__name__}, not an exact decimal"
    if not value.is_finite():
        return f"{name} is not finite ({value})"
    if value <= 0:
        return f"{name} is not positive ({value})"
    return None


def _time_problem(ts_ns: int | None, now_ns: int, max_skew_ns: int, is_replay: bool) -> str | None:
    if ts_ns is None:
        return None
    if ts_ns <= 0:
        return f"exchange time {ts_ns} ns is not a real time"
    skew = ts_ns - now_ns
    if skew > max_skew_ns:
        return f"exchange time is {skew / 1e9:.3f} s ahead of receive time"
    # History (snapshots, REST backfill) may be arbitrarily old, but never from the future.
    if not is_replay and -skew > max_skew_ns:
        return f"exchange time is {-skew / 1e9:.3f} s behind receive time"
    return None


def validate_trade(
    trade: Trade,
    *,
    now_ns: int,
    known_symbols: Container[str] | None = None,
    max_skew_ns: int = DEFAULT_MAX_SKEW_NS,
) -> str | None:
    """None for a plausible trade, else why it is not."""
    if known_symbols is not None and trade.symbol not in known_symbols:
        return f"unknown symbol {trade.symbol!r}"
    if not trade.trade_id:
        return "empty trade id"
    problem = _amount_problem("price", trade.price) or _amount_problem("size", trade.size)
    if problem:
        return problem
    if trade.aggressor not in _AGGRESSORS:
        return f"aggressor {trade.aggressor!r} is not BUY, SELL or UNKNOWN"
    return _time_problem(trade.exchange_ts_ns, now_ns, max_skew_ns, trade.is_replay)


def validate_quote(
    quote: Quote,
    *,
    now_ns: int,
    known_symbols: Container[str] | None = None,
    max_skew_ns: int = DEFAULT_MAX_SKEW_NS,
) -> str | None:
    """None for a plausible top of book, else why it is not. An empty side (price None) is allowed;
    an empty book is not a quote. Locked (bid == ask) is allowed: consolidated equity quotes lock
    across exchanges; crossed (bid > ask) is not."""
    if known_symbols is not None and quote.symbol not in known_symbols:
        return f"unknown symbol {quote.symbol!r}"
    if quote.bid_px is None and quote.ask_px is None:
        return "quote has neither bid nor ask"
    for name in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
        problem = _amount_problem(name, getattr(quote, name), optional=True)
        if problem:
            return problem
    if quote.bid_px is not None and quote.ask_px is not None and quote.bid_px > quote.ask_px:
        return f"crossed quote: bid {quote.bid_px} > ask {quote.ask_px}"
    return _time_problem(quote.exchange_ts_ns, now_ns, max_skew_ns, is_replay=False)
