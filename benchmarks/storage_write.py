"""write_trades (staging COPY + INSERT ... ON CONFLICT) against a bare binary COPY into the same table.

    .venv/bin/python benchmarks/storage_write.py [--quick] [--batch 10000] [--rounds 7]

Runs in a database of its own (created, migrated, dropped). Each round writes fresh batches with every
method, in alternating order, into the same partitioned ``market.trades``; the table prints medians
over rounds (rows/s) and ratios against the bare COPY measured in the same run.

- ``bare_copy``: binary COPY of rows already converted (datetime ``ts``, Decimals) straight into
  ``market.trades``: the server-and-wire floor, no idempotency, no Python row work timed.
- ``bare_copy_from_trades``: the same, timing the conversion from ``Trade`` objects too.
- ``write_trades``: the writer the ingest uses (idempotent, dirty minutes marked).
- ``stage_numeric_binary``: the writer's shape with psycopg's binary numeric dumper instead of
  Decimals as text (the alternative it was measured against).
- ``write_trades_replay``: a batch that is entirely duplicates.
- ``python_rows_only``: the writer's per-row Python work alone (no server), rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from rrr_platform.market.timeutil import NS_PER_S, ns_to_datetime
from rrr_platform.market.types import Trade
from rrr_platform.storage import writers
from rrr_platform.storage.migrate import migrate
from rrr_platform.storage.partitions import ensure_partitions_async
from rrr_platform.storage.synthetic import synthetic_trades

SERVER_URL = os.environ.get("RRR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).resolve().parent / "results" / "storage_write.json"
DAY_NS = 1_793_577_600 * 10**9  # 2026-11-02

_BARE_COLUMNS = (
    "ts, venue, symbol, trade_id, price, size, aggressor, exchange_ts_ns, receive_ts_ns, seq, is_replay,"
    " source_exchange"
)
_BARE_TYPES = [
    "timestamptz",
    "text",
    "text",
    "text",
    "numeric",
    "numeric",
    "text",
    "int8",
    "int8",
    "int8",
    "bool",
    "text",
]


def _bare_rows(trades: list[Trade]) -> list[tuple]:
    return [
        (
            ns_to_datetime(t.exchange_ts_ns),
            t.venue,
            t.symbol,
            t.trade_id,
            t.price,
            t.size,
            t.aggressor,
            t.exchange_ts_ns,
            t.receive_ts_ns,
            t.seq,
            t.is_replay,
            t.source_exchange,
        )
        for t in trades
    ]


async def bare_copy(conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
    async with conn.transaction(), conn.cursor() as cur:
        await writers._copy_rows(
            cur, f"COPY market.trades ({_BARE_COLUMNS}) FROM STDIN (FORMAT BINARY)", _BARE_TYPES, rows
        )


async def stage_numeric_binary(conn: psycopg.AsyncConnection, trades: list[Trade]) -> int:
    stage = writers._TRADE_STAGE.replace("rrr_trades_stage", "bench_stage_numeric").replace(
        "price text, size text", "price numeric, size numeric"
    )
    insert = writers._TRADE_INSERT.replace("rrr_trades_stage", "bench_stage_numeric")
    fields = writers._trade_fields
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(f"{stage}; SELECT pg_advisory_xact_lock_shared({writers.DIRTY_LOCK_KEY})")
        types = [*writers._TRADE_COPY_TYPES]
        types[3] = types[4] = "numeric"
        await writers._copy_rows(
            cur,
            f"COPY bench_stage_numeric ({', '.join(writers._TRADE_COLUMNS)}) FROM STDIN (FORMAT BINARY)",
            types,
            map(fields, trades),
        )
        await cur.execute(insert)
        inserted = cur.rowcount
        await cur.execute(writers._TRADE_MARK_DIRTY.replace("rrr_trades_stage", "bench_stage_numeric"))
        return inserted


def python_rows_only(conn: psycopg.AsyncConnection, trades: list[Trade]) -> None:
    from psycopg.adapt import Transformer
    from psycopg.pq import Format

    tx = Transformer(conn)
    tx.set_dumper_types([conn.adapters.types[t].oid for t in writers._TRADE_COPY_TYPES], Format.BINARY)
    buffer = bytearray()
    for row in writers._trade_rows(trades):
        writers._format_row_binary(row, tx, buffer)


async def run(batch: int, rounds: int, time_index: str = "as-migrated") -> dict:
    dbname = f"rrr_bench_write_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    url = urlunsplit(urlsplit(SERVER_URL)._replace(path=f"/{dbname}"))
    try:
        migrate(url)
        if time_index != "as-migrated":
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("DROP INDEX IF EXISTS market.trades_venue_symbol_ts")
                c.execute("DROP INDEX IF EXISTS market.trades_ts_brin")
                if time_index == "btree":
                    c.execute("CREATE INDEX trades_venue_symbol_ts ON market.trades (venue, symbol, ts)")
                elif time_index == "brin":
                    c.execute("CREATE INDEX trades_ts_brin ON market.trades USING brin (ts)")
        samples: dict[str, list[float]] = {}
        methods = ["bare_copy", "bare_copy_from_trades", "write_trades", "stage_numeric_binary"]
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await ensure_partitions_async(conn, "trades", [ns_to_datetime(DAY_NS).date()])
            next_id = 0

            def fresh() -> list[Trade]:
                # As the ingest sees them: a batch spans a moment (here 1 s) of 5 instruments on one venue.
                nonlocal next_id
                start = DAY_NS + next_id // batch * NS_PER_S
                per_symbol = batch // 5
                trades = []
                for k in range(5):
                    trades += synthetic_trades(
                        "polygon", f"S{k}-USD", start, NS_PER_S, per_symbol, seed=next_id, first_id=next_id
                    )
                    next_id += per_symbol
                return trades

            # Warm-up: temp tables, prepared paths, caches.
            await writers.write_trades(conn, fresh())
            await bare_copy(conn, _bare_rows(fresh()))
            for r in range(rounds):
                order = methods if r % 2 == 0 else methods[::-1]
                for method in order:
                    trades = fresh()
                    if method == "bare_copy":
                        rows = _bare_rows(trades)
                        t0 = time.perf_counter()
                        await bare_copy(conn, rows)
                    elif method == "bare_copy_from_trades":
                        t0 = time.perf_counter()
                        await bare_copy(conn, _bare_rows(trades))
                    elif method == "write_trades":
                        t0 = time.perf_counter()
                        result = await writers.write_trades(conn, trades)
                        assert result.inserted == batch
                        replay_t0 = time.perf_counter()
                        elapsed = replay_t0 - t0
                        replay = await writers.write_trades(conn, trades)
                        assert replay.duplicates == batch
                        samples.setdefault("write_trades_replay", []).append(
                            batch / (time.perf_counter() - replay_t0)
                        )
                        samples.setdefault(method, []).append(batch / elapsed)
                        continue
                    else:
                        t0 = time.perf_counter()
                        assert await stage_numeric_binary(conn, trades) == batch
                    samples.setdefault(method, []).append(batch / (time.perf_counter() - t0))
                trades = fresh()
                t0 = time.perf_counter()
                python_rows_only(conn, trades)
                samples.setdefault("python_rows_only", []).append(batch / (time.perf_counter() - t0))
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    medians = {k: statistics.median(v) for k, v in samples.items()}
    base = medians["bare_copy"]
    return {
        "batch": batch,
        "rounds": rounds,
        "unit": "rows/s (median over rounds)",
        "results": {
            k: {
                "median_rows_per_s": round(v),
                "ratio_vs_bare_copy": round(v / base, 3),
                "samples": [round(x) for x in samples[k]],
            }
            for k, v in medians.items()
        },
        "note": "2-core machine shared with other workloads: absolute figures are contended.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5,000 rows")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--time-index",
        choices=["as-migrated", "btree", "brin", "none"],
        default="as-migrated",
        help="replace the migrations' time index, to measure what each costs",
    )
    args = parser.parse_args()
    batch, rounds = (5_000, 3) if args.quick else (args.batch, args.rounds)
    out = asyncio.run(run(batch, rounds, args.time_index))
    out["time_index"] = args.time_index
    print(f"batch {batch} rows, {rounds} rounds; medians (rows/s) and ratio to bare binary COPY")
    print(f"{'method':<24} {'rows/s':>10} {'vs bare':>8}")
    for name, r in out["results"].items():
        print(f"{name:<24} {r['median_rows_per_s']:>10} {r['ratio_vs_bare_copy']:>8.2f}")
    path = (
        RESULTS if args.time_index == "as-migrated" else RESULTS.with_stem(f"storage_write_{args.time_index}")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
