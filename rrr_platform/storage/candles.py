"""Venue candles (REST history) into ``market.bars_1m`` with ``source = 'rest'``.

A minute already rolled up from stored trades (``source = 'trades'``) is never overwritten by a
candle: bars built from our own trades carry buy volume and an exact VWAP, candles may not.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from rrr_platform.market.timeutil import day_of_ns, ns_to_datetime
from rrr_platform.market.types import Bar
from rrr_platform.storage.partitions import ensure_partitions_async

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS rrr_candles_stage (
    ts timestamptz, venue text, symbol text, open numeric, high numeric, low numeric, close numeric,
    volume numeric, vwap numeric, trade_count integer, buy_volume numeric
) ON COMMIT DELETE ROWS
"""
_UPSERT = """
INSERT INTO market.bars_1m AS b (ts, venue, symbol, open, high, low, close, volume, vwap, trade_count,
                                 buy_volume, source)
SELECT DISTINCT ON (venue, symbol, ts) ts, venue, symbol, open, high, low, close, volume, vwap,
       trade_count, buy_volume, 'rest'
FROM rrr_candles_stage
ON CONFLICT (venue, symbol, ts) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count,
    buy_volume = excluded.buy_volume, updated_at = now()
WHERE b.source = 'rest'
"""


async def write_candles(conn: psycopg.AsyncConnection, bars: Sequence[Bar]) -> int:
    """Upsert venue candles; returns the rows inserted or updated."""
    if not bars:
        return 0
    await ensure_partitions_async(conn, "bars_1m", sorted({day_of_ns(b.ts_ns) for b in bars}))
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(_STAGE)
        async with cur.copy(
            "COPY rrr_candles_stage (ts, venue, symbol, open, high, low, close, volume, vwap, trade_count,"
            " buy_volume) FROM STDIN"
        ) as copy:
            for b in bars:
                await copy.write_row((ns_to_datetime(b.ts_ns), b.venue, b.symbol, b.open, b.high, b.low,
                                      b.close, b.volume, b.vwap, b.trade_count, b.buy_volume))
        await cur.execute(_UPSERT)
        return max(cur.rowcount, 0)
