"""How fast the caches answer, against raw cachetools and a raw Redis GET measured in the same run.

    .venv/bin/python benchmarks/cache.py [--quick] [--redis-url redis://127.0.0.1:6379/0]

Memory paths (sub-microsecond) are timed as batches: each round calls ``get`` N times on a warm key
and divides; the figure includes the Python loop (~30 ns). Redis paths are timed call by call
(perf_counter_ns around each call), giving p50 and p99 per round. Every figure is the median over
the rounds. Baselines in the same run: ``cachetools.TTLCache.__getitem__`` and ``TLRUCache`` with no
lock, and a redis-py ``GET`` of the same key on the same connection. "tiered from Redis" evicts the
key from the memory tier before each call (not timed), so each call is a memory miss, a Redis GET,
a decode and a memory fill. Also: the codec on a small dict and on a day of 1-minute bars (1,440-row
DataFrame), and a Redis cache hit of that DataFrame. Targets: memory hit < 2 µs, tiered hit < 3 µs
from memory and < 300 µs from Redis (p50). Single-threaded. Writes benchmarks/results/cache.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import cachetools
import numpy as np
import pandas as pd
import redis

from rrr_platform.cache import codec
from rrr_platform.cache.memoize import memoize_async
from rrr_platform.cache.memory import MemoryCache
from rrr_platform.cache.redis import RedisCache, redis_client
from rrr_platform.cache.tiered import TieredCache

RESULTS = Path(__file__).resolve().parent / "results" / "cache.json"
VALUE = {"symbol": "BTC-USD", "px": Decimal("65000.10"), "size": Decimal("0.0125"), "ts_ns": 1_767_225_600}


def batch_ns(call: Callable[[], Any], n: int) -> float:
    """ns per call over a batch of n calls."""
    loop = range(n)
    start = time.perf_counter_ns()
    for _ in loop:
        call()
    return (time.perf_counter_ns() - start) / n


def per_call_ns(call: Callable[[], Any], n: int, before: Callable[[], Any] | None = None) -> list[int]:
    samples = []
    for _ in range(n):
        if before is not None:
            before()
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return samples


def p(samples: list[int] | list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls (a few seconds)")
    parser.add_argument("--redis-url", default=os.environ.get("RRR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    batch = 20_000 if args.quick else 200_000
    redis_calls = 300 if args.quick else 2_000

    prefix = f"rrr-bench-{uuid.uuid4().hex[:8]}:"
    rows: dict[str, dict[str, float]] = {}
    raw_ttl = cachetools.TTLCache(maxsize=10_000, ttl=600)
    raw_tlru = cachetools.TLRUCache(maxsize=10_000, ttu=lambda _k, _v, now: now + 600)
    memory = MemoryCache(maxsize=10_000, ttl=600)
    for cache in (raw_ttl, raw_tlru):
        cache["k"] = VALUE
    memory.set("k", VALUE)

    client = redis_client(args.redis_url)
    raw_client = redis.Redis.from_url(args.redis_url)
    redis_cache = RedisCache(client, "bench", prefix=prefix, ttl=600)
    tiered = TieredCache.connect(args.redis_url, "bench-tiered", prefix=prefix, memory_ttl=600, redis_ttl=600)
    redis_cache.set("k", VALUE)
    tiered.set("k", VALUE)
    raw_key = redis_cache.redis_key("k")
    small_frame = pd.DataFrame({"close": np.linspace(1, 2, 1440)},
                               index=pd.date_range("2026-01-01", periods=1440, freq="min", tz="UTC"))
    encoded_value, encoded_frame = codec.encode(VALUE), codec.encode(small_frame)
    redis_cache.set("bars", small_frame)

    async_memory = MemoryCache(maxsize=100, ttl=600)

    @memoize_async(async_memory, key=lambda symbol: symbol)
    async def memoized(symbol: str) -> dict[str, Any]:
        return VALUE

    async def memoized_batch(n: int) -> float:
        await memoized("BTC-USD")
        start = time.perf_counter_ns()
        for _ in range(n):
            await memoized("BTC-USD")
        return (time.perf_counter_ns() - start) / n

    batched: dict[str, Callable[[], float]] = {
        "cachetools TTLCache get hit, no lock (baseline)": lambda: batch_ns(lambda: raw_ttl["k"], batch),
        "cachetools TLRUCache get hit, no lock (baseline)": lambda: batch_ns(lambda: raw_tlru["k"], batch),
        "MemoryCache.get hit": lambda: batch_ns(lambda: memory.get("k"), batch),
        "MemoryCache.get miss": lambda: batch_ns(lambda: memory.get("absent"), batch),
        "MemoryCache.set": lambda: batch_ns(lambda: memory.set("k", VALUE), batch),
        "TieredCache.get hit from memory": lambda: batch_ns(lambda: tiered.get("k"), batch),
        "memoize_async hit (memory)": lambda: asyncio.run(memoized_batch(batch // 4)),
        "codec encode+decode, 4-field dict": lambda: batch_ns(lambda: codec.decode(codec.encode(VALUE)),
                                                               batch // 20),
    }
    per_call: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {
        "redis-py GET, raw bytes (baseline)": (lambda: raw_client.get(raw_key), None),
        "RedisCache.get hit": (lambda: redis_cache.get("k"), None),
        "TieredCache.get from Redis": (lambda: tiered.get("k"), lambda: tiered.memory.delete("k")),
        "codec encode+decode, 1,440-row DataFrame": (lambda: codec.decode(codec.encode(small_frame)), None),
        "RedisCache.get hit, 1,440-row DataFrame": (lambda: redis_cache.get("bars"), None),
    }

    results: dict[str, list[float]] = {name: [] for name in batched}
    samples: dict[str, list[list[int]]] = {name: [] for name in per_call}
    try:
        for _ in range(rounds):  # interleaved, so load changes hit every path alike
            for name, run in batched.items():
                results[name].append(run())
            for name, (call, before) in per_call.items():
                n = redis_calls // 10 if "DataFrame" in name else redis_calls
                samples[name].append(per_call_ns(call, n, before))
    finally:
        for cache in (redis_cache, tiered):
            cache.clear()
        tiered.close()
        client.close()
        raw_client.close()

    for name, values in results.items():
        rows[name] = {"p50_us": statistics.median(values) / 1000, "rounds_us": [v / 1000 for v in values]}
    for name, per_round in samples.items():
        rows[name] = {"p50_us": statistics.median(p(s, 0.5) for s in per_round) / 1000,
                      "p99_us": statistics.median(p(s, 0.99) for s in per_round) / 1000,
                      "rounds_p50_us": [p(s, 0.5) / 1000 for s in per_round]}

    raw_get = rows["cachetools TTLCache get hit, no lock (baseline)"]["p50_us"]
    raw_redis = rows["redis-py GET, raw bytes (baseline)"]["p50_us"]
    targets = {"MemoryCache.get hit": 2.0, "TieredCache.get hit from memory": 3.0,
               "TieredCache.get from Redis": 300.0}
    redis_paths = {"redis-py GET, raw bytes (baseline)", "RedisCache.get hit", "TieredCache.get from Redis",
                   "RedisCache.get hit, 1,440-row DataFrame"}
    for name, row in rows.items():
        if "codec" not in name:
            row["x_baseline"] = row["p50_us"] / (raw_redis if name in redis_paths else raw_get)
        if name in targets:
            row["target_us"] = targets[name]
            row["meets_target"] = row["p50_us"] < targets[name]

    print(f"{'path':<50} {'p50 µs':>10} {'p99 µs':>9} {'x base':>7}  target")
    for name, row in rows.items():
        target = ""
        if "target_us" in row:
            target = ("ok " if row["meets_target"] else "MISS ") + f"< {row['target_us']:g}"
        p99 = f"{row['p99_us']:9.1f}" if "p99_us" in row else " " * 9
        ratio = f"{row['x_baseline']:7.2f}" if "x_baseline" in row else " " * 7
        print(f"{name:<50} {row['p50_us']:10.3f} {p99} {ratio}  {target}")
    meta = {
        "quick": args.quick, "rounds": rounds, "batch": batch, "redis_calls_per_round": redis_calls,
        "python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
        "redis_server": raw_client_version(args.redis_url),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "encoded_bytes": {"dict": len(encoded_value), "dataframe_1440": len(encoded_frame)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"\nload average {meta['loadavg'][0]:.1f} on {meta['cpus']} cores; wrote {RESULTS}")


def raw_client_version(url: str) -> str:
    with redis.Redis.from_url(url) as client:
        return str(client.info("server").get("redis_version"))


if __name__ == "__main__":
    main()
