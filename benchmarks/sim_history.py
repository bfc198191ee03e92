"""How fast the simulator's market model generates history.

    .venv/bin/python benchmarks/sim_history.py [--quick]

Measures, each as the median of several runs on a fresh model (empty caches):
- a month of 1-minute bars for 20 instruments (the 8 Binance + 8 Coinbase pairs + 4 Polygon equities);
- the same bars again from the warm cache;
- individual trades generated on demand (one busy instrument, BTCUSDT on Binance, ~4 trades/s);
- exact per-minute notional (VWAP) for one day of bars, which needs that day's trades.
Baselines measured in the same run: a plain numpy Gaussian random walk with as many points as the
bars (the floor for "a path of that size"), and drawing as many raw random trade columns as trades.
Writes benchmarks/results/sim_history.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from rrr_platform.market.types import BINANCE, COINBASE, POLYGON
from rrr_platform.simulator.model import MarketConfig, MarketModel

MIN = 60 * 10**9
DAY = 1440 * MIN


def instruments_20(model: MarketModel) -> list[tuple[str, str]]:
    chosen = [(i.venue, i.symbol) for i in model.instruments(BINANCE) + model.instruments(COINBASE)]
    chosen += [(i.venue, i.symbol) for i in model.instruments(POLYGON) if i.asset_class == "equity"][:4]
    return chosen[:20]


def median_time(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and a shorter trade window")
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    runs = 3 if args.quick else 5
    days = 7 if args.quick and args.days == 30 else args.days
    trade_hours = 1 if args.quick else 4
    start = MarketConfig().start_ns

    def month_cold() -> tuple[MarketModel, int]:
        model = MarketModel()
        n = sum(len(model.bars_1m(v, s, start, start + days * DAY)) for v, s in instruments_20(model))
        return model, n

    t_cold, (warm_model, n_bars) = median_time(month_cold, runs)  # type: ignore[misc]
    t_warm, _ = median_time(lambda: sum(len(warm_model.bars_1m(v, s, start, start + days * DAY))
                                        for v, s in instruments_20(warm_model)), runs)

    def walk_baseline() -> float:
        rng = np.random.default_rng(1)
        return float(np.cumsum(rng.normal(size=(20, days * 1440)), axis=1)[:, -1].sum())

    t_walk, _ = median_time(walk_baseline, runs)

    def trades_cold() -> tuple[float, int]:
        """Seconds for the trades alone: the model and its day arrays are set up outside the timing."""
        model = MarketModel()
        model.bars_1m(BINANCE, "BTCUSDT", start, start + DAY)
        t0 = time.perf_counter()
        n = len(model.trades(BINANCE, "BTCUSDT", start, start + trade_hours * 3600 * 10**9))
        return time.perf_counter() - t0, n

    trade_runs = [trades_cold() for _ in range(runs)]
    t_trades = statistics.median(t for t, _ in trade_runs)
    n_trades = trade_runs[0][1]

    def raw_trade_columns() -> int:
        rng = np.random.default_rng(2)
        cols = [rng.random(n_trades) for _ in range(5)]
        return len(cols[0])

    t_raw, _ = median_time(raw_trade_columns, runs)

    def notional_day() -> int:
        model = MarketModel()
        bars = model.bars_1m(BINANCE, "BTCUSDT", start, start + DAY)
        return int(bars.notional.sum() > 0)

    t_notional, _ = median_time(notional_day, max(1, runs - 2))

    rows = [
        ("bars: month x 20 instruments, cold", f"{days} d x 20", t_cold, n_bars / t_cold, "bars/s"),
        ("bars: same, warm cache", f"{days} d x 20", t_warm, n_bars / t_warm, "bars/s"),
        ("baseline: numpy random walk, same size", f"{days} d x 20", t_walk, n_bars / t_walk, "points/s"),
        ("trades on demand (BTCUSDT)", f"{n_trades} trades", t_trades, n_trades / t_trades, "trades/s"),
        ("baseline: 5 raw random columns", f"{n_trades} rows", t_raw, n_trades / t_raw, "rows/s"),
        ("notional/VWAP for 1 day of bars", "1440 bars", t_notional, 1440 / t_notional, "bars/s"),
    ]
    print(f"sim_history: median of {runs} runs (cold = fresh model), {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"{'measure':42} {'size':>16} {'median s':>10} {'rate':>14}")
    for name, size, secs, rate, unit in rows:
        print(f"{name:42} {size:>16} {secs:10.3f} {rate:14,.0f} {unit}")
    print(f"ratio cold bars / numpy walk: {t_cold / t_walk:.1f}x; "
          f"trades / raw columns: {t_trades / t_raw:.1f}x")

    out = {
        "benchmark": "sim_history",
        "runs": runs,
        "quick": args.quick,
        "days": days,
        "instruments": 20,
        "bars": n_bars,
        "bars_cold_s": t_cold,
        "bars_warm_s": t_warm,
        "baseline_numpy_walk_s": t_walk,
        "ratio_bars_cold_vs_walk": t_cold / t_walk,
        "trades": n_trades,
        "trades_s": t_trades,
        "trades_per_s": n_trades / t_trades,
        "baseline_raw_columns_s": t_raw,
        "ratio_trades_vs_raw": t_trades / t_raw,
        "notional_day_s": t_notional,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "note": "measured on a shared 2-core machine under contention from other jobs",
    }
    path = Path(__file__).resolve().parent / "results" / "sim_history.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
