"""Rollup of one day of trades into 1-minute bars (rollup_day), and the incremental rollup of late trades.

    .venv/bin/python benchmarks/rollup.py [--quick] [--trades 2000000] [--runs 3]

Runs in a database of its own (created, migrated, dropped). One day of trades for 30 instruments
(3 venues x 10 symbols) is generated server-side, then ``rollup_day`` recomputes the whole day
``--runs`` times (vectorised: trades streamed out with COPY, bars computed in numpy): the table
prints the median trades/s. Baselines measured on the same data in the same run: the previous
implementation (bars computed by PostgreSQL over ``numeric``, ``vectorised=False``), a bare scan
(``count(*)``) and the COPY of the day's trades to this process alone (the floor of the vectorised
path). CPU seconds of this process and of the PostgreSQL backend are reported next to wall time:
on a machine shared with other work, wall time is what is left of a core, CPU time what the work
costs. Then late trades are written into 200 old minutes through ``write_trades`` and
``rollup_dirty`` recomputes only those.
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

from rrr_platform.market.timeutil import NS_PER_MIN, datetime_to_ns
from rrr_platform.storage import rollup, writers
from rrr_platform.storage.migrate import migrate
from rrr_platform.storage.partitions import ensure_partitions
from rrr_platform.storage.rollup import rollup_day, rollup_dirty
from rrr_platform.storage.synthetic import synthetic_trades

SERVER_URL = os.environ.get("RRR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).resolve().parent / "results" / "rollup.json"
DAY = dt.date(2026, 11, 2)
LO = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
DAY_NS = datetime_to_ns(LO)


def _generate(conn: psycopg.Connection, count: int) -> None:
    ensure_partitions(conn, "trades", [DAY])
    step_ns = 86_400 * 10**9 // count
    conn.execute(
        """
        INSERT INTO market.trades (ts, venue, symbol, trade_id, price, size, aggressor, exchange_ts_ns,
                                   receive_ts_ns)
        SELECT %(lo)s::timestamptz + (g * %(step)s / 1000) * interval '1 microsecond',
               (ARRAY['binance_spot', 'coinbase_exchange', 'polygon'])[1 + g %% 3],
               'SYM' || (g / 3) %% 10 || '-USD', g::text,
               round((50000 + 1000 * sin(g / 100000.0))::numeric, 2), round(random()::numeric * 2, 6),
               CASE WHEN g %% 2 = 0 THEN 'BUY' ELSE 'SELL' END, %(day_ns)s + g * %(step)s, 0
        FROM generate_series(0::bigint, %(n)s - 1) g
        """,
        {"lo": LO, "step": step_ns, "day_ns": DAY_NS, "n": count},
    )
    conn.execute("VACUUM ANALYZE market.trades")


class _Clock:
    """Wall time, this process's CPU time and the PostgreSQL backend's CPU time (when it runs here)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.stat = Path(f"/proc/{conn.info.backend_pid}/stat")

    def _backend_cpu(self) -> float | None:
        try:
            fields = self.stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the server is on another machine
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def measure(self, fn) -> dict[str, float | None]:
        b0, c0, t0 = self._backend_cpu(), time.process_time(), time.perf_counter()
        fn()
        wall, cpu, b1 = time.perf_counter() - t0, time.process_time() - c0, self._backend_cpu()
        return {"wall_s": wall, "client_cpu_s": cpu, "server_cpu_s": None if b0 is None else b1 - b0}


def _summary(samples: list[dict[str, float | None]], count: int) -> dict:
    def med(key: str) -> float | None:
        values = [s[key] for s in samples if s[key] is not None]
        return round(statistics.median(values), 3) if values else None

    wall = med("wall_s")
    out = {
        "median_s": wall,
        "trades_per_s": round(count / wall),
        "samples_s": [round(s["wall_s"], 3) for s in samples],
        "client_cpu_s": med("client_cpu_s"),
        "server_cpu_s": med("server_cpu_s"),
    }
    if out["server_cpu_s"] is not None:  # what the work costs, whatever share of the cores it got
        out["trades_per_cpu_s"] = round(count / (out["client_cpu_s"] + out["server_cpu_s"]))
    return out


async def _write_late(url: str) -> int:
    late = []
    for k in range(200):  # 200 old minutes, 10 trades each
        late += synthetic_trades(
            "polygon",
            f"SYM{k % 10}-USD",
            DAY_NS + (k * 7) * NS_PER_MIN,
            NS_PER_MIN,
            10,
            seed=k,
            first_id=10**9 + 10 * k,
        )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return (await writers.write_trades(conn, late)).inserted


def run(count: int, runs: int) -> dict:
    load_at_start = round(os.getloadavg()[0], 2)  # contention: 2 cores shared with other workloads
    dbname = f"rrr_bench_rollup_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    url = urlunsplit(urlsplit(SERVER_URL)._replace(path=f"/{dbname}"))
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            t0 = time.perf_counter()
            _generate(conn, count)
            t_gen = time.perf_counter() - t0
            clock = _Clock(conn)
            hi = LO + dt.timedelta(days=1)
            scan = [
                clock.measure(
                    lambda: conn.execute(
                        "SELECT count(*) FROM market.trades WHERE ts >= %s AND ts < %s", (LO, hi)
                    ).fetchone()
                )
                for _ in range(runs)
            ]
            copy_out = [
                clock.measure(lambda: rollup._copy_out(conn, rollup._TRADES_DAY, {"lo": LO, "hi": hi}))
                for _ in range(runs)
            ]
            results: list[rollup.RollupResult] = []
            day_runs = [clock.measure(lambda: results.append(rollup_day(conn, DAY))) for _ in range(runs)]
            assert all(r.trades == count for r in results), results
            assert results[0].bars == results[0].minutes and all(r.bars == 0 for r in results[1:])
            bars_per_day = results[0].bars
            # Every bar inserted again, in a warm process (the first run also pays one-time costs:
            # thread pools, pyarrow's readers and kernels).
            insert_runs = []
            for _ in range(runs):
                conn.execute("DELETE FROM market.bars_1m WHERE ts >= %s AND ts < %s", (LO, hi))
                insert_runs.append(clock.measure(lambda: results.append(rollup_day(conn, DAY))))
                assert results[-1].bars == bars_per_day, results[-1]
            sql_runs = [clock.measure(lambda: results.append(rollup_day(conn, DAY, vectorised=False)))]
            assert results[-1].bars == 0, results[-1]  # the SQL path agrees with every vectorised bar
            bars = results[0].minutes
            late = asyncio.run(_write_late(url))
            t0 = time.perf_counter()
            incremental = rollup_dirty(conn)
            t_incremental = time.perf_counter() - t0
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    reruns = day_runs[1:] or day_runs
    return {
        "trades": count,
        "bars": bars,
        "runs": runs,
        "load_average_1m_at_start": load_at_start,
        "generate_s": round(t_gen, 1),
        # First run: every bar inserted, cold process. Re-runs: the same day again, every bar unchanged
        # (not rewritten). Insert warm: the day's bars deleted, then every bar inserted again.
        "rollup_day_first": _summary(day_runs[:1], count),
        "rollup_day_rerun": _summary(reruns, count),
        "rollup_day_insert_warm": _summary(insert_runs, count),
        "baseline_sql_numeric_rerun": _summary(sql_runs, count),
        "baseline_scan_count": _summary(scan, count),
        "floor_copy_trades_out": _summary(copy_out, count),
        "incremental": {
            "late_trades": late,
            "minutes": incremental.minutes,
            "bars": incremental.bars,
            "trades_recomputed": incremental.trades,
            "seconds": round(t_incremental, 4),
        },
        "note": "2-core machine shared with other workloads: figures are contended.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300,000 trades, 2 runs")
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3, help="the first run inserts, later ones re-run")
    args = parser.parse_args()
    count, runs = (300_000, 2) if args.quick else (args.trades, args.runs)
    out = run(count, runs)
    print(f"{count} trades in one day -> {out['bars']} bars; medians of {runs} runs")
    header = ("wall s", "trades/s", "client cpu", "server cpu", "trades/cpu-s")
    print(f"{'step':<30} {header[0]:>7} {header[1]:>9} {header[2]:>10} {header[3]:>10} {header[4]:>12}")
    for name in (
        "rollup_day_first",
        "rollup_day_rerun",
        "rollup_day_insert_warm",
        "baseline_sql_numeric_rerun",
        "baseline_scan_count",
        "floor_copy_trades_out",
    ):
        r = out[name]
        print(
            f"{name:<30} {r['median_s']:>7.3f} {r['trades_per_s']:>9} {r['client_cpu_s'] or 0:>10.3f}"
            f" {r['server_cpu_s'] or 0:>10.3f} {r.get('trades_per_cpu_s', '-'):>12}"
        )
    speedup = out["baseline_sql_numeric_rerun"]["median_s"] / out["rollup_day_rerun"]["median_s"]
    print(f"vectorised vs SQL numeric (re-runs): {speedup:.1f}x")
    print(f"load average (1 min) at start: {out['load_average_1m_at_start']} on {os.cpu_count()} cores")
    inc = out["incremental"]
    print(
        f"incremental: {inc['late_trades']} late trades -> {inc['minutes']} dirty minutes, "
        f"{inc['bars']} bars from {inc['trades_recomputed']} trades in {inc['seconds'] * 1e3:.1f} ms"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
