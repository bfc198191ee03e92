"""Query latencies of rrr_platform.storage.queries: the bars of one symbol-day (1,440 bars) and friends.

    .venv/bin/python benchmarks/queries.py [--quick]

Runs in a database of its own (created, migrated, dropped): one day of 1-minute bars for 30
instruments (3 venues x 10 symbols; 43,200 bars) and one hour of trades for one of them, rolled up
into bars by the rollup itself. Prints p50/p99 per query over many calls through ``MarketQueries``
(the pool, prepared statements, ``Bar`` objects with exact Decimals), and the same bars SQL fetched
raw with psycopg as the baseline (no ``Bar`` construction).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN, datetime_to_ns
from rrr_platform.storage import queries as q
from rrr_platform.storage import writers
from rrr_platform.storage.migrate import migrate
from rrr_platform.storage.partitions import ensure_partitions
from rrr_platform.storage.rollup import compact_bars_day, rollup_dirty
from rrr_platform.storage.synthetic import synthetic_trades

SERVER_URL = os.environ.get("RRR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).resolve().parent / "results" / "queries.json"
DAY = dt.date(2026, 11, 2)
DAY_NS = datetime_to_ns(dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
VENUES = ("binance_spot", "coinbase_exchange", "polygon")


def _seed_bars(conn: psycopg.Connection) -> None:
    ensure_partitions(conn, "bars_1m", [DAY - dt.timedelta(days=1), DAY, DAY + dt.timedelta(days=1)])
    conn.execute(
        """
        INSERT INTO market.bars_1m (ts, venue, symbol, open, high, low, close, volume, vwap, trade_count,
                                    buy_volume, notional)
        SELECT %(day)s::timestamptz + m * interval '1 minute', v, 'SYM' || s || '-USD',
               p, p + 1.5, p - 1.25, p + 0.5, 12.345678, p + 0.123456789012, 100 + m %% 50, 6.1, 12.345678 * p
        FROM unnest(%(venues)s::text[]) v, generate_series(0, 9) s, generate_series(0, 1439) m,
             LATERAL (SELECT round((50000 + 500 * sin(m / 30.0))::numeric, 2) AS p) price
        """,
        {"day": dt.datetime(2026, 11, 2, tzinfo=dt.UTC), "venues": list(VENUES)},
    )
    # As the daily bars_1m asset leaves a finished day (rollup.compact_bars_day).
    compact_bars_day(conn, DAY)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 3),
        "calls": len(ordered),
    }


async def run(calls: int) -> dict:
    load_at_start = round(os.getloadavg()[0], 2)  # contention: 2 cores shared with other workloads
    dbname = f"rrr_bench_queries_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    url = urlunsplit(urlsplit(SERVER_URL)._replace(path=f"/{dbname}"))
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            _seed_bars(conn)
        trades = synthetic_trades("polygon", "TRD-USD", DAY_NS, 3600 * 10**9, 20_000, seed=1)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
            await writers.write_trades(aconn, trades)
        with psycopg.connect(url, autocommit=True) as conn:
            rollup_dirty(conn)
            conn.execute("ANALYZE market.trades")

        pool = await q.open_pool(url, max_size=2)
        api = q.MarketQueries(pool, flush_every_s=3600)
        samples: dict[str, list[float]] = {}
        cpu: dict[
            str, list[float]
        ] = {}  # this process's CPU per call: less skewed by contention than wall time

        async def timed(name: str, coro_factory) -> None:
            for _ in range(5):  # warm-up: prepare statements, fill caches
                await coro_factory()
            for _ in range(calls):
                c0, t0 = time.process_time(), time.perf_counter()
                await coro_factory()
                samples.setdefault(name, []).append(time.perf_counter() - t0)
                cpu.setdefault(name, []).append(time.process_time() - c0)

        day_end = DAY_NS + NS_PER_DAY
        bars = await api.bars("SYM3-USD", DAY_NS, day_end, venue="coinbase_exchange")
        assert len(bars) == 1440, len(bars)
        await timed(
            "bars_1m symbol-day (1,440 bars)",
            lambda: api.bars("SYM3-USD", DAY_NS, day_end, venue="coinbase_exchange"),
        )

        async with pool.connection() as conn:

            async def raw():
                cur = conn.cursor()  # text results, as bars() uses
                await cur.execute(
                    q._BARS_1M_ONE_VENUE,
                    {
                        "venue": "coinbase_exchange",
                        "symbol": "SYM3-USD",
                        "start": q._as_datetime(DAY_NS),
                        "end": q._as_datetime(day_end),
                    },
                )
                return await cur.fetchall()

            async def no_numerics():
                cur = conn.cursor()
                await cur.execute(
                    "SELECT (date_part('epoch', ts) * 1000000)::int8 * 1000, trade_count FROM market.bars_1m"
                    " WHERE venue = %(venue)s AND symbol = %(symbol)s AND ts >= %(start)s AND ts < %(end)s"
                    " ORDER BY ts",
                    {
                        "venue": "coinbase_exchange",
                        "symbol": "SYM3-USD",
                        "start": q._as_datetime(DAY_NS),
                        "end": q._as_datetime(day_end),
                    },
                )
                return await cur.fetchall()

            await timed("baseline: same SQL, raw rows", raw)
            await timed("floor: same rows, no numeric columns", no_numerics)

        await timed(
            "bars_arrow symbol-day (float64)",
            lambda: api.bars_arrow("SYM3-USD", DAY_NS, day_end, venue="coinbase_exchange"),
        )
        await timed(
            "bars_frame symbol-day (float64)",
            lambda: api.bars_frame("SYM3-USD", DAY_NS, day_end, venue="coinbase_exchange"),
        )
        await timed(
            "bars 1h symbol-day (24 bars)",
            lambda: api.bars("SYM3-USD", DAY_NS, day_end, venue="coinbase_exchange", interval="1h"),
        )
        await timed("bars_1m symbol-day, 3 venues", lambda: api.bars("SYM3-USD", DAY_NS, day_end))
        await timed(
            "last_price one venue", lambda: api.last_price("TRD-USD", DAY_NS + 1800 * 10**9, venue="polygon")
        )
        await timed("compare_venues day, 1h", lambda: api.compare_venues("SYM3", DAY_NS, day_end, "1h"))

        async def stream_hour():
            return [t async for t in api.stream_trades("TRD-USD", DAY_NS, DAY_NS + 60 * NS_PER_MIN)]

        t0 = time.perf_counter()
        streamed = await stream_hour()
        stream_rate = len(streamed) / (time.perf_counter() - t0)
        await pool.close()
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return {
        "results": {
            name: {**_percentiles(s), "client_cpu_p50_ms": round(statistics.median(cpu[name]) * 1e3, 3)}
            for name, s in samples.items()
        },
        "stream_trades_rows_per_s": round(stream_rate),
        "load_average_1m_at_start": load_at_start,
        "note": "2-core machine shared with other workloads: latencies are contended.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 calls per query instead of 300")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    out = asyncio.run(run(50 if args.quick else args.calls))
    print(f"{'query':<36} {'p50 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'calls':>6}")
    for name, r in out["results"].items():
        cpu = r["client_cpu_p50_ms"]
        print(f"{name:<36} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {cpu:>8.3f} {r['calls']:>6}")
    print(f"stream_trades: {out['stream_trades_rows_per_s']} trades/s")
    print(f"load average (1 min) at start: {out['load_average_1m_at_start']} on {os.cpu_count()} cores")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
