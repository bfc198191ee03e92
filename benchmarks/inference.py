"""Model inference speed: compiled trees against raw XGBoost, measured in the same run.

    .venv/bin/python benchmarks/inference.py [--quick] [--postgres-url URL] [--redis-url URL]

A direction model shaped like the production one (the live feature columns, 150 trees of depth 3,
trained on simulator features) is scored four ways:

- batch: ``FastModel.predict_batch`` (tl2cgen, 2 threads) vs ``Booster.inplace_predict`` (2 threads),
  rows/s over 1 M rows (200 k with --quick); target >= 90 % of raw;
- single uncached row: ``FastModel.predict_one`` vs ``inplace_predict`` on a (1, n) array, per-call
  p50/p99; targets p50 <= 50 µs, p99 <= 200 µs; predictions must equal XGBoost's to 1e-6;
- cached prediction: ``await Predictor.predict(symbol)`` answered from the memory tier; target p50 <= 5 µs;
- ``predict(symbol)`` with live features, uncached prediction: ``Predictor.predict_fresh`` (thread hop,
  latest-bar query in PostgreSQL, the bar's feature row, compiled model); target p50 <= 2 ms. The
  "new bar" row is the same call when the bar is new (features recomputed by features.live_features).

Every figure is the median over rounds. Needs PostgreSQL (a temporary database is created and dropped)
and Redis. Writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost loads libgomp (see ml/train.py)

import xgboost as xgb

from rrr_platform.market.timeutil import NS_PER_DAY
from rrr_platform.ml import promotion
from rrr_platform.ml.dataset import simulator_bars, store_bars, training_frame
from rrr_platform.ml.inference import FastModel
from rrr_platform.ml.predictor import PostgresFeatureSource, Predictor
from rrr_platform.ml.registry import DIRECTION_MODEL, Registry
from rrr_platform.ml.train import TrainConfig, fit_booster, model_rows
from rrr_platform.simulator.model import DEFAULT_START_NS
from rrr_platform.storage.migrate import migrate

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"
SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]


def pct(samples: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(samples) / 1e3, q))  # ns -> µs


def train_benchmark_model(frame: Any, features: list[str]) -> xgb.Booster:
    rows = model_rows(frame, "direction")
    config = TrainConfig(num_boost_round=150, max_depth=3, early_stopping_rounds=0, nthread=2)
    X = rows[features].to_numpy(dtype=np.float32)
    return fit_booster(
        X,
        rows["y_up"].to_numpy(),
        "direction",
        config,
        features,
        rows["ts_ns"].to_numpy(),
        rows["end_ns"].to_numpy(),
    )


def bench_batch(booster: xgb.Booster, fast: FastModel, X: np.ndarray, rounds: int) -> dict[str, float]:
    import tl2cgen

    raw, compiled, trees_in_c = [], [], []
    booster.set_param({"nthread": 2})
    for _ in range(rounds):
        start = time.perf_counter()
        booster.inplace_predict(X)
        raw.append(len(X) / (time.perf_counter() - start))
        start = time.perf_counter()
        fast.predict_batch(X)
        compiled.append(len(X) / (time.perf_counter() - start))
        if fast._tl_predictor is not None:  # tl2cgen's own threaded batch predictor, for the record
            start = time.perf_counter()
            fast._tl_predictor.predict(tl2cgen.DMatrix(X))
            trees_in_c.append(len(X) / (time.perf_counter() - start))
    return {
        "rows": len(X),
        "batch_backend": fast.batch_backend,
        "tl2cgen_rows_per_s": statistics.median(trees_in_c) if trees_in_c else 0.0,
        "raw_rows_per_s": statistics.median(raw),
        "compiled_rows_per_s": statistics.median(compiled),
        "ratio": statistics.median(compiled) / statistics.median(raw),
    }


def bench_single(booster: xgb.Booster, fast: FastModel, X: np.ndarray, rounds: int) -> dict[str, float]:
    p50s, p99s, raw50, raw99 = [], [], [], []
    booster.set_param({"nthread": 1})
    for _ in range(rounds):
        samples = []
        for row in X:
            start = time.perf_counter_ns()
            fast.predict_one(row)
            samples.append(time.perf_counter_ns() - start)
        p50s.append(pct(samples, 50))
        p99s.append(pct(samples, 99))
        samples = []
        for row in X[: len(X) // 4]:
            batch = row.reshape(1, -1)
            start = time.perf_counter_ns()
            booster.inplace_predict(batch)
            samples.append(time.perf_counter_ns() - start)
        raw50.append(pct(samples, 50))
        raw99.append(pct(samples, 99))
    single = np.array([fast.predict_one(row) for row in X])
    diff = float(np.max(np.abs(single - booster.inplace_predict(X))))
    return {
        "compiled_p50_us": statistics.median(p50s),
        "compiled_p99_us": statistics.median(p99s),
        "raw_p50_us": statistics.median(raw50),
        "raw_p99_us": statistics.median(raw99),
        "max_abs_diff": diff,
        "backend": fast.backend,
    }


async def bench_predictor(predictor: Predictor, rounds: int, calls: int) -> dict[str, float]:
    symbol = SYMBOLS[0]
    await predictor.predict(symbol)  # warm: memory + Redis filled
    cached = []
    for _ in range(rounds):
        samples = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            await predictor.predict(symbol)
            samples.append(time.perf_counter_ns() - start)
        cached.append(pct(samples, 50))
    live50, live99 = [], []
    for _ in range(rounds):
        samples = []
        for _ in range(max(calls // 20, 50)):
            start = time.perf_counter_ns()
            await predictor.predict_fresh(symbol)
            samples.append(time.perf_counter_ns() - start)
        live50.append(pct(samples, 50))
        live99.append(pct(samples, 99))
    source = predictor.features
    assert isinstance(source, PostgresFeatureSource)
    cold = []
    for _ in range(max(rounds, 5)):
        source._rows.clear()  # as if a new bar had just closed
        start = time.perf_counter_ns()
        await predictor.predict_fresh(symbol)
        cold.append(time.perf_counter_ns() - start)
    return {
        "cached_p50_us": statistics.median(cached),
        "live_p50_us": statistics.median(live50),
        "live_p99_us": statistics.median(live99),
        "new_bar_p50_us": pct(cold, 50),
        "tier": predictor.tier,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RRR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("RRR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    rounds = 3 if args.quick else 5
    n_batch = 200_000 if args.quick else 1_000_000
    n_single = 2_000 if args.quick else 10_000

    bars = simulator_bars(SYMBOLS, DEFAULT_START_NS, DEFAULT_START_NS + NS_PER_DAY, signal="flow")
    frame, features = training_frame(bars, horizon=1)
    booster = train_benchmark_model(frame, features)
    work = Path(tempfile.mkdtemp(prefix="rrr-bench-inference-"))
    start = time.perf_counter()
    fast = FastModel(booster, work / "compiled")
    compile_s = time.perf_counter() - start

    rng = np.random.default_rng(0)
    sample = frame[features].to_numpy(dtype=np.float32)
    X_batch = sample[rng.integers(0, len(sample), n_batch)]
    X_single = sample[rng.integers(0, len(sample), n_single)]
    batch = bench_batch(booster, fast, X_batch, rounds)
    single = bench_single(booster, fast, X_single, rounds)

    db = f"rrr_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    pg_url = urlunsplit(urlsplit(args.postgres_url)._replace(path=f"/{db}"))
    prefix = f"rrr-bench-{uuid.uuid4().hex[:6]}:"
    try:
        migrate(pg_url)
        tracking = f"sqlite:///{work / 'mlflow.db'}"
        registry = Registry(tracking, work / "artifacts")
        from rrr_platform.ml.train import train_model

        trained = train_model(
            frame,
            features,
            "direction",
            TrainConfig(num_boost_round=150, max_depth=3, early_stopping_rounds=0),
        )
        version = registry.log_training(trained, plots=False).version
        with psycopg.connect(pg_url, autocommit=True) as conn:
            store_bars(conn, bars)
            promotion.move_alias(
                registry, conn, None, prefix, DIRECTION_MODEL, "champion", version, "bench", "benchmark", {}
            )

        async def run() -> dict[str, float]:
            predictor = Predictor(
                tracking_uri=tracking,
                postgres_url=pg_url,
                feature_source=PostgresFeatureSource(pg_url),
                redis_url=args.redis_url,
                redis_prefix=prefix,
                cache_dir=work / "cache",
                compiled_dir=work / "compiled",
                ttl_s=600,
            )
            async with predictor:
                return await bench_predictor(predictor, rounds, 20_000 if not args.quick else 5_000)

        served = asyncio.run(run())
    finally:
        with psycopg.connect(args.postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        import redis

        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)

    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "xgboost": xgb.__version__,
            "note": "2 shared cores, other work running: figures are under contention",
        },
        "model": {"trees": booster.num_boosted_rounds(), "features": len(features), "compile_s": compile_s},
        "batch": batch,
        "single": single,
        "predictor": served,
        "quick": args.quick,
        "rounds": rounds,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"model: {booster.num_boosted_rounds()} trees x depth 3, {len(features)} features; "
        f"compiled in {compile_s:.1f} s ({fast.backend})"
    )
    print(f"{'measure':<42}{'compiled/ours':>16}{'raw xgboost':>14}{'target':>16}")
    print(
        f"{'batch rows/s (' + str(n_batch) + ' rows)':<42}{batch['compiled_rows_per_s']:>16,.0f}"
        f"{batch['raw_rows_per_s']:>14,.0f}{'>= 90% raw':>16}   ratio {batch['ratio']:.2f} "
        f"(batch backend: {batch['batch_backend']})"
    )
    print(f"{'  (tl2cgen batch predictor alone)':<42}{batch['tl2cgen_rows_per_s']:>16,.0f}")
    print(
        f"{'single row p50 µs':<42}{single['compiled_p50_us']:>16.1f}"
        f"{single['raw_p50_us']:>14.1f}{'<= 50':>16}"
    )
    print(
        f"{'single row p99 µs':<42}{single['compiled_p99_us']:>16.1f}"
        f"{single['raw_p99_us']:>14.1f}{'<= 200':>16}"
    )
    print(f"{'max |compiled - xgboost|':<42}{single['max_abs_diff']:>16.2e}{'':>14}{'<= 1e-6':>16}")
    print(f"{'cached predict(symbol) p50 µs':<42}{served['cached_p50_us']:>16.2f}{'':>14}{'<= 5':>16}")
    print(
        f"{'predict(symbol) live features p50 µs':<42}{served['live_p50_us']:>16.1f}{'':>14}{'<= 2000':>16}"
    )
    print(f"{'predict(symbol) live features p99 µs':<42}{served['live_p99_us']:>16.1f}")
    print(
        f"{'predict(symbol) on a new bar p50 µs':<42}{served['new_bar_p50_us']:>16.1f}"
        f"{'':>14}{'(features recomputed)':>24}"
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
