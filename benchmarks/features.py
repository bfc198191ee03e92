"""How fast bars are built from trades and features from bars, against pandas baselines in the same run.

    .venv/bin/python benchmarks/features.py [--quick]

1. Bar building: ``rrr_platform.ml.bars.build_bars_1m`` on 5 million trades (1 million with --quick)
   of one instrument over a month, in columnar numpy form (int64 ns times, exact int64 ticks and
   lots, int8 sides), validated. Baseline: pandas ``groupby(minute).agg`` of the same columns.
   Target: over 5 million trades per second.
2. Features: ``compute_features`` (every feature and the labels) for one symbol-month of 1-minute bars
   (43,200 rows) with 300 scored headlines. Baseline: the same window statistics written with pandas
   ``rolling``/``ewm`` (faster where it slides, but its value at t depends on the whole history in
   the last bits, which rules it out for live == batch). Target: under 1 s.
3. Live: ``live_features`` for one instrument from its latest ``LIVE_WINDOW_MINUTES`` bars.

Reports the median of several rounds, interleaved with the baseline. Single-threaded.
Writes benchmarks/results/features.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_S
from rrr_platform.ml import features as feat
from rrr_platform.ml.bars import build_bars_1m

T0 = 1_790_000_000 * NS_PER_S // NS_PER_MIN * NS_PER_MIN
MONTH_MINUTES = 30 * 1440


def make_trades(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ts = T0 + np.sort(rng.integers(0, MONTH_MINUTES * NS_PER_MIN, n))
    ticks = 6_500_000 + np.cumsum(rng.integers(-2, 3, n))
    size = rng.integers(1, 100_000, n).astype(np.int64)
    return {"ts_ns": ts, "price": ticks.astype(np.int64), "size": size,
            "side": rng.choice(np.array([-1, 1], np.int8), n)}


def pandas_bars(trades: dict[str, np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame({"minute": trades["ts_ns"] // NS_PER_MIN, "p": trades["price"], "s": trades["size"],
                          "b": np.where(trades["side"] == 1, trades["size"], 0),
                          "ps": trades["price"].astype(float) * trades["size"]})
    out = frame.groupby("minute").agg(o=("p", "first"), h=("p", "max"), l=("p", "min"), c=("p", "last"),
                                      v=("s", "sum"), n=("p", "size"), b=("b", "sum"), ps=("ps", "sum"))
    out["vwap"] = out["ps"] / out["v"]
    return out


def make_bars(minutes: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 1e-3, minutes))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 1e-3, minutes))
    volume = rng.uniform(1, 10, minutes)
    return pd.DataFrame({
        "ts_ns": T0 + np.arange(minutes, dtype=np.int64) * NS_PER_MIN, "venue": "binance_spot",
        "symbol": "BTC-USDT", "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        "vwap": (high + low + close) / 3, "trade_count": rng.integers(1, 50, minutes).astype(float),
        "buy_volume": volume * rng.uniform(0, 1, minutes),
    })


def make_news(count: int, minutes: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"id": [f"n{i}" for i in range(count)],
                         "published_ns": np.sort(T0 + rng.integers(0, minutes * NS_PER_MIN, count)),
                         "title": "headline", "tickers": [["X:BTCUSD"]] * count,
                         "sentiment": rng.uniform(-1, 1, count)})


def pandas_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The same window statistics with pandas rolling/ewm (history-dependent in the last bits)."""
    c, h, low, o, v = (bars[k] for k in ("close", "high", "low", "open", "volume"))
    logc = np.log(c)
    r1 = logc.diff()
    out = pd.DataFrame({f"ret_{k}": logc.diff(k) for k in feat.RETURN_HORIZONS})
    out["rv_30"] = np.sqrt((r1 * r1).rolling(30).sum())
    out["rv_60"] = np.sqrt((r1 * r1).rolling(60).sum())
    hl = np.log(h / low)
    out["parkinson_30"] = np.sqrt((hl * hl).rolling(30).mean() / (4 * np.log(2)))
    gk = 0.5 * hl * hl - (2 * np.log(2) - 1) * np.log(c / o) ** 2
    out["garman_klass_30"] = np.sqrt(gk.rolling(30).mean())
    gains, losses = r1.clip(lower=0).rolling(14).sum(), (-r1).clip(lower=0).rolling(14).sum()
    out["rsi_14"] = 100 * gains / (gains + losses)
    line = (c.ewm(span=12).mean() - c.ewm(span=26).mean()) / c
    out["macd"], out["macd_signal"] = line, line.ewm(span=9).mean()
    out["macd_hist"] = out["macd"] - out["macd_signal"]
    mean, std = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out["bb_pos_20"] = (c - mean + 2 * std) / (4 * std)
    for name, col in (("volume_z_60", v), ("trades_z_60", bars["trade_count"])):
        out[name] = (col - col.rolling(60).mean()) / col.rolling(60).std()
    net = 2 * bars["buy_volume"] - v
    out["buy_imbalance_1"] = net / v
    out["buy_imbalance_15"] = net.rolling(15).sum() / v.rolling(15).sum()
    out["fwd_ret"] = logc.shift(-15) - logc
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    ours: Callable[[], object], baseline: Callable[[], object], rounds: int
) -> tuple[float, float]:
    ours_times, base_times = [], []
    for _ in range(rounds):
        ours_times.append(timed(ours))
        base_times.append(timed(baseline))
    return statistics.median(ours_times), statistics.median(base_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trades and rounds")
    args = parser.parse_args()
    n_trades = 1_000_000 if args.quick else 5_000_000
    rounds = 3 if args.quick else 7

    trades = make_trades(n_trades)
    bars_s, bars_base_s = interleaved(
        lambda: build_bars_1m(trades["ts_ns"], trades["price"], trades["size"], trades["side"]),
        lambda: pandas_bars(trades), rounds)

    month = make_bars(MONTH_MINUTES)
    news = make_news(300, MONTH_MINUTES)
    feat_s, feat_base_s = interleaved(lambda: feat.compute_features(month, news),
                                      lambda: pandas_features(month), rounds)
    window = month.iloc[-feat.LIVE_WINDOW_MINUTES:]
    live_s = statistics.median(timed(lambda: feat.live_features(window, news)) for _ in range(rounds * 5))

    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "rounds": rounds,
        "bars": {"trades": n_trades, "median_s": bars_s, "trades_per_s": n_trades / bars_s,
                 "pandas_median_s": bars_base_s, "pandas_trades_per_s": n_trades / bars_base_s,
                 "speedup_vs_pandas": bars_base_s / bars_s, "target_trades_per_s": 5_000_000},
        "features": {"rows": MONTH_MINUTES, "columns": len(feat.FEATURE_COLUMNS), "median_s": feat_s,
                     "pandas_rolling_median_s": feat_base_s, "ratio_vs_pandas": feat_s / feat_base_s,
                     "target_s": 1.0},
        "live": {"window_minutes": feat.LIVE_WINDOW_MINUTES, "median_ms": live_s * 1e3},
    }
    print(f"{'benchmark':<34}{'ours':>14}{'baseline':>14}{'ratio':>10}")
    print(f"{'bars: trades/s (' + format(n_trades, ',') + ')':<34}{n_trades / bars_s:>14,.0f}"
          f"{n_trades / bars_base_s:>14,.0f}{bars_base_s / bars_s:>9.1f}x")
    print(f"{'features: symbol-month s':<34}{feat_s:>14.3f}{feat_base_s:>14.3f}{feat_s / feat_base_s:>9.2f}x")
    print(f"{'live_features: one row ms':<34}{live_s * 1e3:>14.2f}")
    out = Path(__file__).resolve().parent / "results" / "features.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
