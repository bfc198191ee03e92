"""Ingest throughput and latency, end to end: simulator -> WebSocket -> engine -> PostgreSQL + Redis.

Everything runs on this machine: the simulator in its own process (rate mode: pre-encoded real model
trades pushed as fast as the socket takes them, or at a set rate), one ingest process per shard as in
production, the local PostgreSQL and Redis. Each scenario runs on a fresh database; "sustained" is
trades committed / (last commit - first receive). Baseline, measured in the same run: a bare binary
COPY of the same number of rows into the same partitioned table (no staging, no dedup, no Redis).

Rate mode replays the most recent trades before now, so the engines run with a wide clock-skew
bound and no idle reconnects (a benchmark-only setting, printed below).

    .venv/bin/python benchmarks/ingest.py            # all scenarios, 3 rounds each
    .venv/bin/python benchmarks/ingest.py --quick    # smaller counts, 1 round
    .venv/bin/python benchmarks/ingest.py --steady 600   # the 10k trades/s latency + memory run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rrr_platform.ingest.config import FeedConfig, ShardConfig  # noqa: E402
from rrr_platform.ingest.engine import IngestEngine  # noqa: E402
from rrr_platform.market.types import BINANCE, COINBASE, POLYGON  # noqa: E402
from rrr_platform.settings import load_settings  # noqa: E402
from rrr_platform.simulator.server import start_subprocess  # noqa: E402
from rrr_platform.storage.migrate import migrate  # noqa: E402

ADMIN_URL = os.environ.get("RRR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RRR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CRYPTO = ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "LINK")
SYMBOLS = {
    BINANCE: tuple(f"{b}-USDT" for b in CRYPTO),
    COINBASE: tuple(f"{b}-USD" for b in CRYPTO),
    POLYGON: tuple(f"{b}-USD" for b in CRYPTO),
}
RESULTS = ROOT / "benchmarks" / "results"


def _database() -> str:
    name = f"rrr_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    return url


def _drop(url: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _worker(
    feed_spec: tuple[str, tuple[str, ...], str],
    count: int,
    batch: int,
    rate: float,
    sim_port: int,
    pg_url: str,
    home: str,
    out: mp.Queue,
) -> None:
    """One ingest process: stream ``count`` trades, stop once all are committed, report."""
    import uvloop

    venue, symbols, shard_name = feed_spec

    settings = load_settings(
        home=home, postgres_url=pg_url, redis_url=REDIS_URL, redis_prefix=f"rrr-bench-{os.getpid()}:"
    )
    base = f"ws://127.0.0.1:{sim_port}"
    market = "stocks" if "-" not in symbols[0] else "crypto"
    ws_url = {BINANCE: f"{base}/binance", COINBASE: f"{base}/coinbase", POLYGON: f"{base}/polygon/{market}"}[
        venue
    ]
    rest = {
        BINANCE: f"http://127.0.0.1:{sim_port}/binance",
        COINBASE: f"http://127.0.0.1:{sim_port}/coinbase",
        POLYGON: f"http://127.0.0.1:{sim_port}/polygon",
    }[venue]
    feed = FeedConfig(
        venue,
        symbols,
        ("trades",),
        ws_url=ws_url,
        rest_url=rest,
        ws_query=f"sim_rate={rate}&sim_count={count}&sim_batch={batch}",
    )
    shard = ShardConfig(
        shard_name,
        (feed,),
        max_clock_skew_s=30 * 86400,
        idle_timeout_s=3600,
        ping_interval_s=None,
        heartbeat_interval_s=5,
    )
    engine = IngestEngine(shard, settings, pg_url, REDIS_URL)
    proc = psutil.Process()
    rss: list[float] = []

    async def main() -> dict[str, object]:
        task = asyncio.create_task(engine.run())
        started = time.time()
        first_receive = None
        while True:
            await asyncio.sleep(0.05)
            m = engine.metrics
            done = m.total("stored") + m.total("duplicates")
            # The clock runs from 1% to 100% committed: what a venue sends at subscribe (Coinbase's
            # last_match) and the simulator's setup of the rate-mode data stay out of the figure.
            if first_receive is None and done >= count * 0.01:
                first_receive = time.time()
            if len(rss) == 0 or time.time() - started > len(rss) * 5:
                rss.append(proc.memory_info().rss / 2**20)
            if done >= count or task.done():
                break
        finished = time.time()
        engine.stop()
        snapshot = await task
        return {
            "venue": venue,
            "count": count,
            "committed": engine.metrics.total("stored"),
            "timed": int(count * 0.99),  # trades committed between the 1% and the 100% marks
            "duplicates": engine.metrics.total("duplicates"),
            "seconds": finished - (first_receive or started),
            "redis_dropped": engine.metrics.total("redis_dropped"),
            "latency_s": snapshot["latency_s"],
            "rss_mb": rss,
            "first_receive": first_receive,
            "finished": finished,
        }

    out.put(uvloop.run(main()))


Feed = tuple[str, tuple[str, ...], str]  # venue, symbols, shard name


def run_scenario(
    name: str, feeds: list[Feed], count: int, batch: int, rate: float, sim_ports: dict[str, int]
) -> dict:
    pg_url = _database()
    try:
        out: mp.Queue = mp.Queue()
        home = f"/tmp/rrr-bench-{uuid.uuid4().hex[:6]}"
        procs = [
            mp.Process(target=_worker, args=(f, count, batch, rate, sim_ports[f[2]], pg_url, home, out))
            for f in feeds
        ]
        for p in procs:
            p.start()
        results = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(60)
        with psycopg.connect(pg_url) as conn:
            stored = conn.execute("SELECT count(*) FROM market.trades").fetchone()[0]
        span = max(r["finished"] for r in results) - min(r["first_receive"] for r in results)
        total = sum(r["timed"] for r in results)
        return {
            "scenario": name,
            "feeds": [f"{v}:{shard}" for v, _, shard in feeds],
            "trades": total,
            "stored_rows": stored,
            "lost": len(feeds) * count - stored,
            "seconds": span,
            "trades_per_s": total / span,
            "redis_dropped": sum(r["redis_dropped"] for r in results),
            "per_venue": results,
        }
    finally:
        _drop(pg_url)


def _summary(run: dict) -> dict:
    per_venue = [{k: v for k, v in pv.items() if k not in ("latency_s", "rss_mb")} for pv in run["per_venue"]]
    return {k: v for k, v in run.items() if k != "per_venue"} | {"per_venue": per_venue}


def bare_copy(count: int) -> float:
    """Rows/s of a bare binary COPY of ``count`` trades into market.trades (same table, fresh DB)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from storage_write import _bare_rows
    from storage_write import bare_copy as copy_rows

    from rrr_platform.storage.synthetic import synthetic_trades

    pg_url = _database()
    try:
        now = time.time_ns()
        trades = synthetic_trades(BINANCE, "BTC-USDT", now - 600 * 10**9, 600 * 10**9, count)
        rows = _bare_rows(trades)

        async def main() -> float:
            async with await psycopg.AsyncConnection.connect(pg_url) as conn:
                from rrr_platform.market.timeutil import day_of_ns
                from rrr_platform.storage.partitions import ensure_partitions_async

                await ensure_partitions_async(conn, "trades", {day_of_ns(t.exchange_ts_ns) for t in trades})
                await conn.commit()
                started = time.perf_counter()
                await copy_rows(conn, rows)
                return count / (time.perf_counter() - started)

        return asyncio.run(main())
    finally:
        _drop(pg_url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=0, help="trades per venue (default 400k, quick 100k)")
    parser.add_argument("--steady", type=float, default=0.0, help="seconds of the steady 10k trades/s run")
    parser.add_argument("--steady-only", action="store_true", help="skip the throughput scenarios")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    n = args.count or (100_000 if args.quick else 400_000)
    polygon_sets = [
        tuple(f"{b}-USD" for b in CRYPTO[:4]),
        tuple(f"{b}-USD" for b in CRYPTO[4:]),
        ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA"),
    ]
    scenarios: list[tuple[str, list[Feed], int, int]] = [
        # The headline case: three ingest processes at once, each fed Polygon-style batched
        # frames (100 trades per frame), over disjoint instruments so every trade is distinct.
        (
            "three shards at once, Polygon-style batched frames (100 trades/frame)",
            [(POLYGON, symbols, f"pg{i}") for i, symbols in enumerate(polygon_sets)],
            n,
            100,
        ),
        # Each venue in its own framing: Binance and Coinbase send one trade per frame.
        (
            "three venues at once, each in its own framing",
            [
                (BINANCE, SYMBOLS[BINANCE], "binance"),
                (COINBASE, SYMBOLS[COINBASE], "coinbase"),
                (POLYGON, SYMBOLS[POLYGON], "polygon"),
            ],
            n,
            100,
        ),
        ("Binance single-event frames", [(BINANCE, SYMBOLS[BINANCE], "binance")], n, 1),
    ]
    report: dict[str, object] = {"rounds": rounds, "trades_per_venue": n, "scenarios": {}}
    # One simulator process per venue: a connection's rate-mode setup (generating and encoding its
    # trades) then never stalls another venue's stream.
    shards = {shard for _, feeds, _, _ in scenarios for _, _, shard in feeds}
    sims = {shard: start_subprocess(["--seed", "7"]) for shard in sorted(shards)}
    ports = {v: sim.port for v, sim in sims.items()}
    try:
        for name, feeds, count, batch in [] if args.steady_only else scenarios:
            run_scenario(name, feeds, count, batch, 0, ports)  # warm-up: fills the model's caches
            runs = [run_scenario(name, feeds, count, batch, 0, ports) for _ in range(rounds)]
            copies = [bare_copy(count * len(feeds)) for _ in range(rounds)]
            med = statistics.median(r["trades_per_s"] for r in runs)
            bare = statistics.median(copies)
            report["scenarios"][name] = {  # type: ignore[index]
                "median_trades_per_s": round(med),
                "bare_copy_rows_per_s": round(bare),
                "ratio_vs_bare_copy": round(med / bare, 3),
                "lost": sum(r["lost"] for r in runs),
                "redis_dropped": sum(r["redis_dropped"] for r in runs),
                "runs": [_summary(r) for r in runs],
            }
        if args.steady:
            count = int(10_000 * args.steady)
            run = run_scenario(
                "steady 10k trades/s", [(POLYGON, SYMBOLS[POLYGON], "pg0")], count, 10, 1000, ports
            )
            lat = run["per_venue"][0]["latency_s"]
            rss = run["per_venue"][0]["rss_mb"]
            report["steady"] = {
                "seconds": args.steady,
                "trades_per_s": round(run["trades_per_s"]),
                "receive_to_redis_ms": {k: v * 1000 for k, v in lat["receive_to_redis"].items()},
                "receive_to_committed_ms": {k: v * 1000 for k, v in lat["receive_to_committed"].items()},
                "rss_mb_every_5s": [round(x, 1) for x in rss],
                "lost": run["lost"],
            }
    finally:
        for sim in sims.values():
            sim.stop()

    print(f"\n{'scenario':<72} {'trades/s':>10} {'bare COPY':>10} {'ratio':>6} {'lost':>5}")
    for name, r in report["scenarios"].items():  # type: ignore[union-attr]
        print(
            f"{name:<72} {r['median_trades_per_s']:>10,} {r['bare_copy_rows_per_s']:>10,}"
            f" {r['ratio_vs_bare_copy']:>6.2f} {r['lost']:>5}"
        )
    if "steady" in report:
        s = report["steady"]
        print(
            f"\nsteady {s['trades_per_s']:,} trades/s for {s['seconds']:.0f} s: receive->redis"
            f" p50 {s['receive_to_redis_ms']['p50']:.2f} ms p99 {s['receive_to_redis_ms']['p99']:.2f} ms;"
            f" receive->committed p99 {s['receive_to_committed_ms']['p99']:.1f} ms;"
            f" RSS MB first/last {s['rss_mb_every_5s'][0]}/{s['rss_mb_every_5s'][-1]}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {RESULTS / 'ingest.json'}")


if __name__ == "__main__":
    main()
