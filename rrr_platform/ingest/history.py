"""History backfill: 1-minute candles (and optionally trades) of whole UTC days from venue REST APIs.

Idempotent (candles upsert, trades insert on their key) and resumable: each finished
(venue, symbol, day) is recorded in ``market.history_progress`` and skipped by a rerun unless forced.
Rate limits are the REST clients' business (429 + Retry-After, bounded retries); a symbol that still
fails is reported and the others go on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from rrr_platform.ingest.config import FeedConfig
from rrr_platform.market.timeutil import NS_PER_DAY, datetime_to_ns
from rrr_platform.settings import Settings
from rrr_platform.storage.candles import write_candles
from rrr_platform.storage.writers import write_trades
from rrr_platform.venues.base import VenueHTTPError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryResult:
    venue: str
    symbol: str
    day: dt.date
    bars: int
    trades: int
    skipped: bool = False
    error: str | None = None


def day_range_ns(day: dt.date) -> tuple[int, int]:
    start = datetime_to_ns(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    return start, start + NS_PER_DAY


async def _done(conn: psycopg.AsyncConnection, venue: str, symbol: str, day: dt.date) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM market.history_progress WHERE venue = %s AND symbol = %s AND day = %s",
        (venue, symbol, day),
    )
    return await cur.fetchone() is not None


async def backfill_day(
    settings: Settings,
    postgres_url: str,
    feeds: Sequence[FeedConfig],
    day: dt.date,
    *,
    include_trades: bool = False,
    force: bool = False,
    concurrency: int = 4,
    progress: Callable[[HistoryResult], None] | None = None,
) -> list[HistoryResult]:
    start_ns, end_ns = day_range_ns(day)
    if start_ns >= datetime_to_ns(dt.datetime.now(dt.UTC)):
        raise ValueError(f"{day} has not started yet: history ends now")
    semaphore = asyncio.Semaphore(concurrency)
    clients = {
        feed.venue: feed.module().RestClient(feed.urls(settings)[1], settings=settings) for feed in feeds
    }

    async def one(feed: FeedConfig, symbol: str) -> HistoryResult:
        async with semaphore, await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            if not force and await _done(conn, feed.venue, symbol, day):
                return HistoryResult(feed.venue, symbol, day, 0, 0, skipped=True)
            client = clients[feed.venue]
            try:
                bars = await client.bars_1m(symbol, start_ns, end_ns)
                await write_candles(conn, bars)
                n_trades = 0
                if include_trades:
                    async for page in client.trades(symbol, start_ns, end_ns):
                        n_trades += (await write_trades(conn, page)).inserted
            except (VenueHTTPError, OSError, TimeoutError, ValueError) as exc:
                log.warning("history %s %s %s failed: %s", feed.venue, symbol, day, exc)
                return HistoryResult(feed.venue, symbol, day, 0, 0, error=str(exc)[:300])
            # Only a finished day is recorded: today (still going) is fetched again next time.
            if end_ns <= datetime_to_ns(dt.datetime.now(dt.UTC)):
                await conn.execute(
                    "INSERT INTO market.history_progress (venue, symbol, day, bars, trades)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (venue, symbol, day) DO UPDATE SET bars = excluded.bars,"
                    " trades = excluded.trades, completed_at = now()",
                    (feed.venue, symbol, day, len(bars), n_trades),
                )
            return HistoryResult(feed.venue, symbol, day, len(bars), n_trades)

    async def tracked(feed: FeedConfig, symbol: str) -> HistoryResult:
        result = await one(feed, symbol)
        if progress is not None:
            progress(result)
        return result

    try:
        return list(await asyncio.gather(*(tracked(f, s) for f in feeds for s in f.symbols)))
    finally:
        for client in clients.values():
            await client.close()
