"""Full retrain time: both models, purged walk-forward with baselines, MLflow logging and registration.

    .venv/bin/python benchmarks/training.py [--quick] [--rounds N]

Data: one month x 10 instruments of 1-minute simulator bars (8 Binance pairs + BTC-USD, ETH-USD on
Coinbase; planted order-flow signal), ~430 k rows; --quick: one week x 4. Stages timed: features
(``features.compute_features``) and labels, direction model (4 walk-forward folds + baselines + final
fit), volatility model (same, EWMA and GARCH(1,1) baselines), MLflow logging and registration of both.
Target: features + both models + logging under 120 s. Beside it, in the same run, the raw XGBoost
cost: one plain ``xgb.train`` on every row with the same parameters and as many rounds as the final
model used, per model. Median over rounds; writes benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost loads libgomp (see ml/train.py)

import xgboost as xgb

from rrr_platform.market.timeutil import NS_PER_DAY
from rrr_platform.ml.dataset import add_labels, complete_rows, simulator_bars
from rrr_platform.ml.registry import Registry
from rrr_platform.ml.train import TrainConfig, model_rows, train_model, training_label
from rrr_platform.simulator.model import DEFAULT_START_NS

RESULTS = Path(__file__).resolve().parent / "results" / "training.json"
BINANCE = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "ADA-USDT", "AVAX-USDT", "LINK-USDT"]


def load_bars(days: int, n_symbols: int):
    import pandas as pd

    end = DEFAULT_START_NS + days * NS_PER_DAY
    frames = [simulator_bars(BINANCE[: min(n_symbols, 8)], DEFAULT_START_NS, end, signal="flow")]
    if n_symbols > 8:
        frames.append(
            simulator_bars(
                ["BTC-USD", "ETH-USD"][: n_symbols - 8],
                DEFAULT_START_NS,
                end,
                signal="flow",
                venue="coinbase_exchange",
            )
        )
    return pd.concat(frames, ignore_index=True)


def one_round(bars, registry: Registry, config: TrainConfig) -> dict[str, float]:
    from rrr_platform.ml import features as feat

    timings: dict[str, float] = {}
    start = time.perf_counter()
    computed = feat.compute_features(bars, None, label_horizon=None)
    frame = complete_rows(add_labels(computed, config.horizon), feat.FEATURE_COLUMNS)
    timings["features_s"] = time.perf_counter() - start
    trained = {}
    for kind in ("direction", "volatility"):
        start = time.perf_counter()
        trained[kind] = train_model(frame, feat.FEATURE_COLUMNS, kind, config)  # type: ignore[arg-type]
        timings[f"{kind}_train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for model in trained.values():
        registry.log_training(model)
    timings["mlflow_s"] = time.perf_counter() - start
    timings["total_s"] = sum(timings.values())
    # raw XGBoost in the same run: one fit on every row, same params, the final model's round count
    for kind, model in trained.items():
        rows = model_rows(frame, kind)  # type: ignore[arg-type]
        X = rows[feat.FEATURE_COLUMNS].to_numpy(dtype=np.float32)
        y = training_label(rows, kind)  # type: ignore[arg-type]
        start = time.perf_counter()
        xgb.train(
            config.xgb_params(kind),
            xgb.DMatrix(X, label=y, nthread=2),  # type: ignore[arg-type]
            num_boost_round=model.booster.num_boosted_rounds(),
        )
        timings[f"{kind}_raw_xgb_s"] = time.perf_counter() - start
    timings["rows"] = float(len(frame))
    timings["direction_trees"] = float(trained["direction"].booster.num_boosted_rounds())
    timings["volatility_trees"] = float(trained["volatility"].booster.num_boosted_rounds())
    promoted_like = trained["direction"].evaluation.overall
    timings["direction_model_log_loss"] = promoted_like["model"]["log_loss"]
    timings["direction_prior_log_loss"] = promoted_like["prior"]["log_loss"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    days, n_symbols = (7, 4) if args.quick else (30, 10)
    rounds = args.rounds or (1 if args.quick else 3)
    start = time.perf_counter()
    bars = load_bars(days, n_symbols)
    bars_s = time.perf_counter() - start
    work = Path(tempfile.mkdtemp(prefix="rrr-bench-training-"))
    start = time.perf_counter()
    registry = Registry(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")
    registry.experiment_id()  # creates the store (one-time, not part of a retrain)
    store_s = time.perf_counter() - start
    config = TrainConfig()
    runs = [one_round(bars, registry, config) for _ in range(rounds)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "xgboost": xgb.__version__,
            "note": "2 shared cores, other work running: figures are under contention",
        },
        "days": days,
        "instruments": n_symbols,
        "bars": len(bars),
        "bars_generation_s": bars_s,
        "mlflow_store_creation_s": store_s,
        "rounds": rounds,
        "median": median,
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"{days} days x {n_symbols} instruments: {len(bars):,} bars, {int(median['rows']):,} training rows "
        f"(simulator bars made in {bars_s:.1f} s, not counted)"
    )
    print(f"{'stage':<34}{'median s':>10}{'raw xgboost s':>16}")
    print(f"{'features + labels':<34}{median['features_s']:>10.1f}")
    print(
        f"{'direction: walk-forward + final':<34}{median['direction_train_s']:>10.1f}"
        f"{median['direction_raw_xgb_s']:>16.1f}   ({int(median['direction_trees'])} trees)"
    )
    print(
        f"{'volatility: walk-forward + final':<34}{median['volatility_train_s']:>10.1f}"
        f"{median['volatility_raw_xgb_s']:>16.1f}   ({int(median['volatility_trees'])} trees)"
    )
    print(f"{'MLflow log + register (both)':<34}{median['mlflow_s']:>10.1f}")
    print(f"{'full retrain':<34}{median['total_s']:>10.1f}{'':>16}   target < 120 s")
    print(
        f"direction OOS log-loss {median['direction_model_log_loss']:.5f} vs prior "
        f"{median['direction_prior_log_loss']:.5f}"
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
