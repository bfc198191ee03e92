"""The servers' view of the market model: cached per-minute trades, quotes, bars, decimal formatting.

The model is a pure function of time, so a minute's trades are computed once and shared by every
connection (and by REST) through a small LRU cache; a live stream slices ``[cursor, now)`` out of it.
Prices and sizes stay integers (ticks, lots) until they are formatted as each venue prints them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from cachetools import LRUCache

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN
from rrr_platform.market.types import COINBASE, COINBASE_AT
from rrr_platform.simulator.model import MarketConfig, MarketModel

HISTORY_DAYS_BEFORE_START = 366


def fixed_decimal(units: int, decimals: int) -> str:
    """Integer units -> exact decimal string with exactly ``decimals`` digits (Binance style)."""
    if decimals <= 0:
        return str(units * 10 ** (-decimals))
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def trimmed_decimal(units: int, decimals: int) -> str:
    """Integer units -> shortest exact decimal string, no exponent (``94210.01``, ``0.0035``, ``5``)."""
    text = fixed_decimal(units, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True, slots=True)
class TradeRows:
    """Plain-Python columns of trades (lists are much faster than numpy scalars to format one by one)."""

    ts_ns: list[int]
    trade_id: list[int]
    price_ticks: list[int]
    size_lots: list[int]
    side: list[int]  # +1 buyer was the aggressor, -1 seller

    def __len__(self) -> int:
        return len(self.trade_id)

    @staticmethod
    def empty() -> TradeRows:
        return TradeRows([], [], [], [], [])

    @staticmethod
    def from_batch(batch: Any) -> TradeRows:
        return TradeRows(
            np.asarray(batch.ts_ns).tolist(),
            np.asarray(batch.trade_id).tolist(),
            np.asarray(batch.price_ticks).tolist(),
            np.asarray(batch.size_lots).tolist(),
            np.asarray(batch.side).tolist(),
        )

    def concat(self, other: TradeRows) -> TradeRows:
        return TradeRows(
            self.ts_ns + other.ts_ns,
            self.trade_id + other.trade_id,
            self.price_ticks + other.price_ticks,
            self.size_lots + other.size_lots,
            self.side + other.side,
        )


@dataclass(frozen=True, slots=True)
class QuoteRow:
    bid_ticks: int
    bid_lots: int
    ask_ticks: int
    ask_lots: int


@dataclass(frozen=True, slots=True)
class BarRow:
    ts_ns: int
    open: int
    high: int
    low: int
    close: int
    volume: int  # lots
    trade_count: int
    buy_volume: int  # lots
    quote_volume: int  # sum(price_ticks * size_lots): price*size in units of 10**-(pd+sd)
    first_id: int
    last_id: int


def _attr(obj: Any, *names: str) -> Any:
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(f"{type(obj).__name__} has none of {names}")


def model_venue(venue: str) -> str:
    """Coinbase Advanced Trade shows the same exchange's trades as Coinbase Exchange."""
    return COINBASE if venue == COINBASE_AT else venue


class MarketFeed:
    def __init__(
        self, model: MarketModel | None = None, config: MarketConfig | None = None, cache_minutes: int = 8192
    ) -> None:
        self.model = model or MarketModel(config or MarketConfig())
        self._minutes: LRUCache[tuple[str, str, int], TradeRows] = LRUCache(maxsize=cache_minutes)
        # History begins a year before the model's start day: requests for older data (``startTime=0``)
        # get the first data there, as a venue answers with a symbol's first data after its listing.
        self.earliest_ns = self.model.config.start_ns - HISTORY_DAYS_BEFORE_START * NS_PER_DAY

    def clip(self, start_ns: int) -> int:
        return max(start_ns, self.earliest_ns)

    # --- instruments -------------------------------------------------------------------------
    def instruments(self, venue: str) -> list[Any]:
        return list(self.model.instruments(model_venue(venue)))

    def instrument(self, venue: str, name: str) -> Any:
        """By venue symbol or canonical symbol, case-insensitive for Binance stream names."""
        mv = model_venue(venue)
        try:
            return self.model.instrument(mv, name)
        except KeyError:
            upper = name.upper()
            if upper != name:
                return self.model.instrument(mv, upper)
            raise

    def warm(self) -> None:
        """Generate every instrument's history up to now (trade ids chain from the model's start day)."""
        now = time.time_ns()
        for inst in self.model.instruments():
            self.model.last_trade_before(inst.venue, inst.symbol, now)

    # --- trades --------------------------------------------------------------------------------
    def minute_trades(self, venue: str, symbol: str, minute_ns: int) -> TradeRows:
        mv = model_venue(venue)
        key = (mv, symbol, minute_ns)
        rows = self._minutes.get(key)
        if rows is None:
            rows = TradeRows.from_batch(self.model.trades(mv, symbol, minute_ns, minute_ns + NS_PER_MIN))
            self._minutes[key] = rows
        return rows

    def trades_between(self, venue: str, symbol: str, start_ns: int, end_ns: int) -> TradeRows:
        """Trades with ``start_ns <= ts < end_ns`` from cached minutes (a live window is short)."""
        if end_ns <= start_ns:
            return TradeRows.empty()
        out = TradeRows.empty()
        minute = start_ns - start_ns % NS_PER_MIN
        while minute < end_ns:
            rows = self.minute_trades(venue, symbol, minute)
            if rows.ts_ns:
                lo = int(np.searchsorted(rows.ts_ns, start_ns, "left")) if rows.ts_ns[0] < start_ns else 0
                hi = (
                    int(np.searchsorted(rows.ts_ns, end_ns, "left"))
                    if rows.ts_ns[-1] >= end_ns
                    else len(rows.ts_ns)
                )
                if lo < hi:
                    part = TradeRows(
                        rows.ts_ns[lo:hi],
                        rows.trade_id[lo:hi],
                        rows.price_ticks[lo:hi],
                        rows.size_lots[lo:hi],
                        rows.side[lo:hi],
                    )
                    out = part if not out.trade_id else out.concat(part)
            minute += NS_PER_MIN
        return out

    def trades_range(self, venue: str, symbol: str, start_ns: int, end_ns: int) -> TradeRows:
        """Longer REST windows: straight from the model (no per-minute cache churn)."""
        start_ns = self.clip(start_ns)
        if end_ns <= start_ns:
            return TradeRows.empty()
        return TradeRows.from_batch(self.model.trades(model_venue(venue), symbol, start_ns, end_ns))

    def trades_by_id(self, venue: str, symbol: str, first_id: int, last_id: int) -> TradeRows:
        """Trades by inclusive id range, never past the last trade before now (venues have no future);
        ids outside the model's simulated range give no trades, as a venue answers an unknown id."""
        latest = self.last_trade_before(venue, symbol, time.time_ns())
        if latest.trade_id:
            last_id = min(last_id, latest.trade_id[0])
        if last_id < first_id:
            return TradeRows.empty()
        try:
            batch = self.model.trades_by_id(model_venue(venue), symbol, first_id, last_id)
        except ValueError:
            return TradeRows.empty()
        return TradeRows.from_batch(batch)

    def last_trade_before(self, venue: str, symbol: str, ts_ns: int, lookback_min: int = 60) -> TradeRows:
        """The most recent trade before ``ts_ns`` (Coinbase ``last_match``), empty if none in the hour."""
        minute = ts_ns - ts_ns % NS_PER_MIN
        for _ in range(lookback_min):
            rows = self.trades_between(venue, symbol, minute, min(minute + NS_PER_MIN, ts_ns))
            if rows.trade_id:
                i = len(rows) - 1
                return TradeRows(
                    [rows.ts_ns[i]],
                    [rows.trade_id[i]],
                    [rows.price_ticks[i]],
                    [rows.size_lots[i]],
                    [rows.side[i]],
                )
            minute -= NS_PER_MIN
        return TradeRows.empty()

    def recent_trades(
        self, venue: str, symbol: str, ts_ns: int, count: int, lookback_min: int = 30
    ) -> TradeRows:
        """Up to ``count`` most recent trades before ``ts_ns``, oldest first."""
        start = ts_ns - ts_ns % NS_PER_MIN - (lookback_min - 1) * NS_PER_MIN
        rows = self.trades_between(venue, symbol, start, ts_ns)
        n = len(rows)
        if n <= count:
            return rows
        return TradeRows(
            rows.ts_ns[n - count :],
            rows.trade_id[n - count :],
            rows.price_ticks[n - count :],
            rows.size_lots[n - count :],
            rows.side[n - count :],
        )

    # --- quotes and bars -----------------------------------------------------------------------
    def quote_at(self, venue: str, symbol: str, ts_ns: int) -> QuoteRow:
        q = self.model.quote_at(model_venue(venue), symbol, ts_ns)
        return QuoteRow(
            int(_attr(q, "bid_ticks", "bid_price_ticks", "bid_px_ticks")),
            int(_attr(q, "bid_lots", "bid_size_lots", "bid_sz_lots")),
            int(_attr(q, "ask_ticks", "ask_price_ticks", "ask_px_ticks")),
            int(_attr(q, "ask_lots", "ask_size_lots", "ask_sz_lots")),
        )

    def bars(self, venue: str, symbol: str, start_ns: int, end_ns: int) -> list[BarRow]:
        """Minute bars with start in ``[start_ns, end_ns)`` (Binance/Coinbase/Polygon REST, kline, XA)."""
        start_ns = self.clip(start_ns)
        if end_ns <= start_ns:
            return []
        b = self.model.bars_1m(model_venue(venue), symbol, start_ns, end_ns)
        n = len(b)
        if n == 0:
            return []
        cols = {
            "ts": _attr(b, "ts_ns"),
            "o": _attr(b, "open_ticks", "open"),
            "h": _attr(b, "high_ticks", "high"),
            "l": _attr(b, "low_ticks", "low"),
            "c": _attr(b, "close_ticks", "close"),
            "v": _attr(b, "volume_lots", "volume"),
            "n": _attr(b, "trade_count"),
            "bv": _attr(b, "buy_volume_lots", "buy_volume"),
        }
        qv = _bar_quote_volume(b)
        first = _bar_first_ids(b)
        lists = {k: np.asarray(v).tolist() for k, v in cols.items()}
        out = []
        for i in range(n):
            count = int(lists["n"][i])
            first_id = int(first[i]) if first is not None else -1
            out.append(
                BarRow(
                    lists["ts"][i],
                    lists["o"][i],
                    lists["h"][i],
                    lists["l"][i],
                    lists["c"][i],
                    lists["v"][i],
                    count,
                    lists["bv"][i],
                    int(qv[i]) if qv is not None else 0,
                    first_id if count else -1,
                    first_id + count - 1 if count else -1,
                )
            )
        return out

    def bar_from_trades(self, venue: str, symbol: str, minute_ns: int, until_ns: int) -> BarRow | None:
        """The minute's bar so far (trades before ``until_ns``): the live kline."""
        rows = self.trades_between(venue, symbol, minute_ns, min(until_ns, minute_ns + NS_PER_MIN))
        if not rows.trade_id:
            return None
        px, sz = rows.price_ticks, rows.size_lots
        return BarRow(
            minute_ns,
            px[0],
            max(px),
            min(px),
            px[-1],
            sum(sz),
            len(px),
            sum(s for s, d in zip(sz, rows.side, strict=True) if d > 0),
            sum(p * s for p, s in zip(px, sz, strict=True)),
            rows.trade_id[0],
            rows.trade_id[-1],
        )


def _bar_quote_volume(b: Any) -> Any:
    for name in ("notional", "quote_volume", "turnover", "pv_sum", "price_volume"):
        if hasattr(b, name):
            return np.asarray(getattr(b, name)).tolist()
    return None


def _bar_first_ids(b: Any) -> Any:
    for name in ("first_trade_id", "first_id"):
        if hasattr(b, name):
            return np.asarray(getattr(b, name)).tolist()
    return None


def now_ns() -> int:
    return time.time_ns()


class WindowStats:
    """Open/high/low/last/volume of a window of minute bars (24 h and 30 d ticker statistics)."""

    __slots__ = ("close", "high", "low", "open", "volume")

    def __init__(self, open_: int, high: int, low: int, close: int, volume: int) -> None:
        self.open, self.high, self.low, self.close, self.volume = open_, high, low, close, volume


def window_stats(feed: MarketFeed, venue: str, symbol: str, start_ns: int, end_ns: int) -> WindowStats | None:
    start_ns = feed.clip(start_ns)
    if end_ns <= start_ns:
        return None
    b = feed.model.bars_1m(model_venue(venue), symbol, start_ns, end_ns)
    if len(b) == 0:
        return None
    highs = np.asarray(_attr(b, "high_ticks", "high"))
    lows = np.asarray(_attr(b, "low_ticks", "low"))
    vols = np.asarray(_attr(b, "volume_lots", "volume"))
    opens = np.asarray(_attr(b, "open_ticks", "open"))
    closes = np.asarray(_attr(b, "close_ticks", "close"))
    return WindowStats(int(opens[0]), int(highs.max()), int(lows.min()), int(closes[-1]), int(vols.sum()))
