"""Read API over the market tables, on a psycopg ``AsyncConnectionPool``; every call is timed.

Times are int nanoseconds since the epoch or timezone-aware datetimes; ranges are half-open
[start, end). Prices and volumes come back as exact ``Decimal``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from rrr_platform.market.symbols import QUOTE_ASSETS
from rrr_platform.market.timeutil import datetime_to_ns, ns_to_datetime
from rrr_platform.market.types import BAR_VALUES, VENUES, Bar, Trade
from rrr_platform.storage.query_stats import QueryTimings
from rrr_platform.storage.rollup import vwap_sql

TimeLike = int | dt.datetime
_INTERVAL = re.compile(r"^(\d+)\s*(m|min|h|d)$")
_INTERVAL_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days"}


def parse_interval(interval: str) -> dt.timedelta:
    """``"1m"``, ``"15m"``, ``"1h"``, ``"1d"`` -> timedelta; a whole number of minutes, at least one."""
    match = _INTERVAL.match(interval.strip())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"bad bar interval {interval!r}: use e.g. 1m, 5m, 1h, 1d")
    return dt.timedelta(**{_INTERVAL_UNITS[match.group(2)]: int(match.group(1))})


def _as_datetime(value: TimeLike) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: give a timezone")
        return value
    return ns_to_datetime(value)


def _as_ns(value: TimeLike) -> int:
    return datetime_to_ns(value) if isinstance(value, dt.datetime) else value


@dataclass(frozen=True)
class LastPrice:
    venue: str
    symbol: str
    price: Decimal
    size: Decimal
    exchange_ts_ns: int
    trade_id: str


@dataclass(frozen=True)
class GapReportRow:
    venue: str
    symbol: str
    scope: str
    gaps: int
    open: int
    backfilled: int
    failed: int
    missing: int  # ids/sequence numbers in all gaps
    backfilled_trades: int
    first_detected: dt.datetime
    last_detected: dt.datetime


@dataclass(frozen=True)
class VenuePrice:
    ts_ns: int  # start of the interval
    venue: str
    symbol: str
    close: Decimal
    vwap: Decimal | None
    volume: Decimal
    deviation_bps: float  # close vs the median close of all venues in this interval


# ns of a timestamptz without numeric arithmetic: date_part returns float8 seconds, exact to well
# under 0.5 µs until 2255, so rounding to whole µs gives the stored value (extract() returns numeric,
# ~1 µs per row).
_TS_NS = "(date_part('epoch', {col}) * 1000000)::int8 * 1000"
# One venue: equality on the leading key column, so the primary key index returns the rows in time
# order (venue = ANY(...) makes PostgreSQL 15 sort them). Venue and symbol are the caller's.
_BARS_1M_ONE_VENUE = f"""
    SELECT {_TS_NS.format(col="ts")} AS ts_ns, open, high, low, close, volume, vwap, trade_count, buy_volume
    FROM market.bars_1m
    WHERE venue = %(venue)s AND symbol = %(symbol)s AND ts >= %(start)s AND ts < %(end)s
    ORDER BY ts
"""
_BARS_1M = f"""
    SELECT venue, symbol, {_TS_NS.format(col="ts")} AS ts_ns, open, high, low, close, volume, vwap,
           trade_count, buy_volume
    FROM market.bars_1m
    WHERE symbol = %(symbol)s AND venue = ANY(%(venues)s) AND ts >= %(start)s AND ts < %(end)s
    ORDER BY venue, ts
"""
# Coarser bars from 1-minute bars: first open, last close, extremes, sums; VWAP from the summed
# notional where every bar has it (bars from trades), else from vwap * volume (venue candles).
_BARS_ROLLED = f"""
    SELECT venue, symbol, {_TS_NS.format(col="bucket")} AS ts_ns,
           (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
           (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume,
           {vwap_sql("sum(coalesce(notional, vwap * volume))", "sum(volume)")} AS vwap,
           sum(trade_count)::int AS trade_count, sum(buy_volume) AS buy_volume
    FROM (
        SELECT *, date_bin(%(interval)s, ts, timestamptz '1970-01-01 00:00:00+00') AS bucket
        FROM market.bars_1m
        WHERE symbol = %(symbol)s AND venue = ANY(%(venues)s) AND ts >= %(start)s AND ts < %(end)s
    ) b
    GROUP BY venue, symbol, bucket ORDER BY venue, bucket
"""
FRAME_COLUMNS = ["ts_ns", "venue", "symbol", *BAR_VALUES]
_ROW_COLUMNS = ("venue", "symbol", "ts_ns", *FRAME_COLUMNS[3:])  # the columns of _BARS_1M and _BARS_ROLLED
_FLOAT_COLUMNS = frozenset(("open", "high", "low", "close", "volume", "vwap", "buy_volume"))
_FRAME_TYPES = {
    **{name: pa.int64() for name in FRAME_COLUMNS},
    **{name: pa.float64() for name in _FLOAT_COLUMNS},
    "venue": pa.string(),
    "symbol": pa.string(),
}
_FRAME_SCHEMA = pa.schema([(name, _FRAME_TYPES[name]) for name in FRAME_COLUMNS])
_LAST_PRICE = """
    SELECT venue, symbol, price, size, exchange_ts_ns, trade_id FROM market.trades
    WHERE venue = %(venue)s AND symbol = %(symbol)s AND ts <= %(at)s AND exchange_ts_ns <= %(at_ns)s
    ORDER BY ts DESC, exchange_ts_ns DESC, trade_id COLLATE "C" DESC LIMIT 1
"""
_TRADES = """
    SELECT venue, symbol, trade_id, price, size, aggressor, exchange_ts_ns, receive_ts_ns, seq, is_replay,
           source_exchange
    FROM market.trades
    WHERE symbol = %(symbol)s AND venue = ANY(%(venues)s) AND ts >= %(start)s AND ts < %(end)s
      AND exchange_ts_ns >= %(start_ns)s AND exchange_ts_ns < %(end_ns)s
    ORDER BY exchange_ts_ns, venue, trade_id COLLATE "C"
"""
_GAPS = """
    SELECT venue, symbol, scope, count(*), count(*) FILTER (WHERE status = 'open'),
           count(*) FILTER (WHERE status = 'backfilled'), count(*) FILTER (WHERE status = 'failed'),
           sum(last_missing - first_missing + 1), sum(backfilled_count), min(detected_at), max(detected_at)
    FROM market.gaps
    WHERE detected_at >= %(since)s AND (%(venue)s::text IS NULL OR venue = %(venue)s)
    GROUP BY venue, symbol, scope ORDER BY venue, symbol, scope
"""


def _bar(row: tuple[Any, ...]) -> Bar:
    venue, symbol, ts_ns, o, h, lo, c, v, vwap, n, buy = row
    return Bar(
        venue=venue,
        symbol=symbol,
        ts_ns=ts_ns,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=v,
        vwap=vwap,
        trade_count=n,
        buy_volume=buy,
    )


class MarketQueries:
    """The query API. ``timings`` collects latencies; they are flushed to PostgreSQL every
    ``flush_every_s`` seconds in the background (and by ``flush_timings``), so ``rrr status`` sees them.
    """

    def __init__(
        self, pool: AsyncConnectionPool, timings: QueryTimings | None = None, flush_every_s: float = 10.0
    ) -> None:
        self.pool = pool
        self.timings = timings or QueryTimings()
        self.flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        self._flush_task: asyncio.Task[int] | None = None

    # ------------------------------------------------------------------------------- timing

    @asynccontextmanager
    async def _timed(self, name: str) -> AsyncIterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings.record(name, time.perf_counter() - start)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if now - self._last_flush < self.flush_every_s or (self._flush_task and not self._flush_task.done()):
            return
        self._last_flush = now
        self._flush_task = asyncio.get_running_loop().create_task(self.flush_timings())

    async def flush_timings(self) -> int:
        async with self.pool.connection() as conn:
            return await self.timings.flush(conn)

    async def aclose(self) -> None:
        """Wait for a background flush and flush what is left (the pool stays open)."""
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        await self.flush_timings()

    # ------------------------------------------------------------------------------ queries

    async def bars(
        self, symbol: str, start: TimeLike, end: TimeLike, venue: str | None = None, interval: str = "1m"
    ) -> list[Bar]:
        """OHLCV bars for ``symbol`` (one venue, or every venue) in [start, end), by venue then time.

        Intervals coarser than one minute are rolled up from the 1-minute bars, aligned to the epoch
        (so ``1h`` bars start on the hour and ``1d`` bars at 00:00 UTC).
        """
        name, sql, params = self._bars_query(symbol, start, end, venue, interval)
        # Text results: psycopg builds a Decimal from numeric text ~2x faster than from binary.
        if venue is not None and name == "bars_1m":
            params["venue"] = venue
            async with self._timed(name), self.pool.connection() as conn:
                cur = await conn.execute(_BARS_1M_ONE_VENUE, params)
                rows = await cur.fetchall()
            return [
                Bar(
                    venue=venue,
                    symbol=symbol,
                    ts_ns=ts_ns,
                    open=o,
                    high=h,
                    low=lo,
                    close=c,
                    volume=v,
                    vwap=vwap,
                    trade_count=n,
                    buy_volume=buy,
                )
                for ts_ns, o, h, lo, c, v, vwap, n, buy in rows
            ]
        async with self._timed(name), self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return [_bar(r) for r in await cur.fetchall()]

    async def bars_frame(
        self, symbol: str, start: TimeLike, end: TimeLike, venue: str | None = None, interval: str = "1m"
    ) -> pd.DataFrame:
        """``bars`` as a DataFrame of float64 prices and volumes (``FRAME_COLUMNS``), for analytics."""
        table = await self.bars_arrow(symbol, start, end, venue, interval, _timer="_frame")
        # Column by column: Table.to_pandas costs ~2 ms more for this size (its conversion machinery).
        return pd.DataFrame(
            {
                name: table[name].to_pylist() if name in ("venue", "symbol") else table[name].to_numpy()
                for name in FRAME_COLUMNS
            }
        )

    async def bars_arrow(
        self,
        symbol: str,
        start: TimeLike,
        end: TimeLike,
        venue: str | None = None,
        interval: str = "1m",
        *,
        _timer: str = "_arrow",
    ) -> pa.Table:
        """``bars`` as an Arrow table (``FRAME_COLUMNS``; float64 prices and volumes), for analytics.

        Numerics are fetched as text and parsed by Arrow, correctly rounded as ``float(Decimal)`` is:
        no Decimal per value (~0.2 µs each), and no float8 cast in SQL (costlier than the text).
        """
        name, sql, params = self._bars_query(symbol, start, end, venue, interval)
        async with self._timed(name + _timer), self.pool.connection() as conn:
            cur = conn.cursor()
            # Numeric text as str, no Decimal per value; Arrow then parses each column at once.
            cur.adapters.register_loader("numeric", TextLoader)
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        # The bars queries return venue, symbol, ts_ns, open, ...: FRAME_COLUMNS leads with ts_ns.
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(_ROW_COLUMNS)
        by_name = dict(zip(_ROW_COLUMNS, columns, strict=True))
        return pa.table(
            [
                pa.array(by_name[name], pa.string()).cast(_FRAME_TYPES[name])
                if name in _FLOAT_COLUMNS
                else pa.array(by_name[name], _FRAME_TYPES[name])
                for name in FRAME_COLUMNS
            ],
            schema=_FRAME_SCHEMA,
        )

    @staticmethod
    def _bars_query(
        symbol: str, start: TimeLike, end: TimeLike, venue: str | None, interval: str
    ) -> tuple[str, str, dict[str, Any]]:
        width = parse_interval(interval)
        params: dict[str, Any] = {
            "symbol": symbol,
            "venues": [venue] if venue else list(VENUES),
            "start": _as_datetime(start),
            "end": _as_datetime(end),
        }
        if width == dt.timedelta(minutes=1):
            return "bars_1m", _BARS_1M, params
        params["interval"] = width
        return "bars_rollup", _BARS_ROLLED, params

    async def last_price(self, symbol: str, at: TimeLike, venue: str | None = None) -> LastPrice | None:
        """The last trade at or before ``at`` (ns precision): on ``venue``, or the latest on any venue."""
        at_ns = _as_ns(at)
        venues = [venue] if venue else list(VENUES)
        best: LastPrice | None = None
        async with self._timed("last_price"), self.pool.connection() as conn:
            for v in venues:  # one indexed probe per venue: the index leads with venue
                cur = await conn.execute(
                    _LAST_PRICE,
                    {
                        "venue": v,
                        "symbol": symbol,
                        "at": ns_to_datetime(at_ns),
                        "at_ns": at_ns,
                    },
                )
                row = await cur.fetchone()
                if row and (best is None or (row[4], row[5]) > (best.exchange_ts_ns, best.trade_id)):
                    best = LastPrice(*row)
        return best

    async def stream_trades(
        self, symbol: str, start: TimeLike, end: TimeLike, venue: str | None = None, batch_size: int = 5_000
    ) -> AsyncIterator[Trade]:
        """Trades in [start, end) in exchange-time order, ``batch_size`` rows in memory at a time
        (a server-side cursor). The timing recorded covers the whole iteration."""
        start_ns, end_ns = _as_ns(start), _as_ns(end)
        params = {
            "symbol": symbol,
            "venues": [venue] if venue else list(VENUES),
            "start": ns_to_datetime(start_ns),
            "end": ns_to_datetime(end_ns) + dt.timedelta(microseconds=1),
            "start_ns": start_ns,
            "end_ns": end_ns,
        }
        async with (
            self._timed("stream_trades"),
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(name="rrr_stream_trades", binary=True) as cur,
        ):
            cur.itersize = batch_size
            await cur.execute(_TRADES, params)
            async for v, s, tid, price, size, aggressor, ex, rx, seq, replay, src in cur:
                yield Trade(
                    venue=v,
                    symbol=s,
                    venue_symbol=s,
                    trade_id=tid,
                    price=price,
                    size=size,
                    aggressor=aggressor,
                    exchange_ts_ns=ex,
                    receive_ts_ns=rx,
                    seq=seq,
                    is_replay=replay,
                    source_exchange=src,
                )

    async def gaps_report(
        self, since: TimeLike | None = None, venue: str | None = None
    ) -> list[GapReportRow]:
        """Per venue, symbol and scope: gaps detected since ``since`` and how their backfill went."""
        params = {
            "since": _as_datetime(since) if since is not None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
            "venue": venue,
        }
        async with self._timed("gaps_report"), self.pool.connection() as conn:
            cur = await conn.execute(_GAPS, params)
            return [GapReportRow(*r[:7], int(r[7]), int(r[8]), r[9], r[10]) for r in await cur.fetchall()]

    async def compare_venues(
        self, base: str, start: TimeLike, end: TimeLike, interval: str = "1m"
    ) -> list[VenuePrice]:
        """One instrument across venues and quote currencies: ``BTC`` compares BTC-USD, BTC-USDT, ...
        on every venue (an equity ticker compares itself), interval by interval, each close against
        the median close of that interval."""
        base = base.upper().split("-", 1)[0]
        symbols = [base, *(f"{base}-{q}" for q in QUOTE_ASSETS)]
        width = parse_interval(interval)
        params = {
            "symbols": symbols,
            "start": _as_datetime(start),
            "end": _as_datetime(end),
            "interval": width,
        }
        async with self._timed("compare_venues"), self.pool.connection() as conn:
            cur = conn.cursor(binary=True)
            await cur.execute(
                f"""
                SELECT (extract(epoch FROM bucket) * 1000000000)::bigint, venue, symbol,
                       (array_agg(close ORDER BY ts DESC))[1], sum(volume),
                       {vwap_sql("sum(coalesce(notional, vwap * volume))", "sum(volume)")}
                FROM (SELECT *, date_bin(%(interval)s, ts, timestamptz '1970-01-01 00:00:00+00') AS bucket
                      FROM market.bars_1m
                      WHERE symbol = ANY(%(symbols)s) AND ts >= %(start)s AND ts < %(end)s) b
                GROUP BY bucket, venue, symbol ORDER BY bucket, venue, symbol
                """,
                params,
            )
            rows = await cur.fetchall()
        out: list[VenuePrice] = []
        i = 0
        while i < len(rows):  # rows come grouped by interval: one median per interval
            j = i
            while j < len(rows) and rows[j][0] == rows[i][0]:
                j += 1
            median = statistics.median(r[3] for r in rows[i:j])
            for ts_ns, venue, symbol, close, volume, vwap in rows[i:j]:
                out.append(
                    VenuePrice(
                        ts_ns=ts_ns,
                        venue=venue,
                        symbol=symbol,
                        close=close,
                        vwap=vwap,
                        volume=volume,
                        deviation_bps=float((close - median) / median * 10_000),
                    )
                )
            i = j
        return out


async def open_pool(url: str, min_size: int = 1, max_size: int = 4) -> AsyncConnectionPool:
    """An opened pool of autocommit connections for ``MarketQueries``."""
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True},
        configure=_configure,
    )
    await pool.open(wait=True)
    return pool


async def _configure(conn: psycopg.AsyncConnection) -> None:
    # Prepare the hot statements from their first use: the bars query then skips parse and plan.
    conn.prepare_threshold = 0
