"""The training frame: labels, event windows and baseline inputs beside the feature columns.

One row per (symbol, minute bar). The model's features come from ``rrr_platform.ml.features``; this
module adds what evaluation needs, computed per symbol from closes only:

- ``y_return``: forward log return over ``horizon`` bars; ``y_up`` its sign (1 = up);
- ``y_vol``: forward realised volatility, sqrt of the sum of the next ``vol_horizon`` squared 1-bar returns;
- ``ts_ns``/``end_ns``: the event window (bar start .. last instant the label looks at), for purging;
- ``ret_1`` (last 1-bar return), ``mom`` (past ``horizon``-bar return) and ``ewma_vol`` (RiskMetrics
  λ = 0.94 forecast of the forward volatility): inputs of the baselines. They are causal, so
  computing them over the whole series leaks nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from rrr_platform.market.timeutil import NS_PER_MIN

LABEL_COLUMNS = ("y_return", "y_up", "y_vol")
BASELINE_INPUTS = ("ret_1", "mom", "ewma_vol")
EWMA_LAMBDA = 0.94
# Next-minute forecasts by default: the horizon at which order flow carries information (longer
# horizons dilute a one-minute effect by ~1/sqrt(h)). Configurable per training run.
DEFAULT_HORIZON = 1
# Volatility over the next quarter hour: over one minute realised variance is a single squared return,
# often exactly zero on a tick grid, which makes QLIKE reward forecasting zero.
DEFAULT_VOL_HORIZON = 15


def feature_hash(feature_columns: Sequence[str]) -> str:
    """Short stable hash of the ordered feature list: a model and its inputs must agree on it."""
    return hashlib.sha256("\n".join(feature_columns).encode()).hexdigest()[:16]


def ewma_variance(returns: np.ndarray, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """RiskMetrics recursion var_t = λ var_{t-1} + (1-λ) r_t², seeded with the first squared returns."""
    from scipy.signal import lfilter

    r2 = np.nan_to_num(np.asarray(returns, dtype=np.float64) ** 2)
    if len(r2) == 0:
        return r2
    seed = float(r2[: min(len(r2), 30)].mean())
    # var_t = λ var_{t-1} + (1-λ) r_t², var_{-1} = seed, as a linear filter
    out, _ = lfilter([1 - lam], [1.0, -lam], r2, zi=[lam * seed])
    return out


def instrument_keys(frame: pd.DataFrame) -> list[str]:
    """Columns naming one instrument: (venue, symbol) when the frame has venues, else symbol."""
    return ["venue", "symbol"] if "venue" in frame.columns else ["symbol"]


def add_labels(
    frame: pd.DataFrame,
    horizon: int = DEFAULT_HORIZON,
    vol_horizon: int = DEFAULT_VOL_HORIZON,
    price_column: str = "close",
    return_column: str = "ret_1",
) -> pd.DataFrame:
    """Labels, event windows and baseline inputs, per instrument, from closes or 1-bar log returns.

    ``frame`` has ``symbol`` (and ``venue``), ``ts_ns`` on a complete minute grid per instrument
    (``features.compute_features`` lays bars on one) and either ``price_column`` or
    ``return_column``. Rows without a full forward window (the last ``horizon`` of each instrument)
    get NaN labels; ``complete_rows`` drops them.
    """
    if horizon < 1 or vol_horizon < 1:
        raise ValueError("horizons must be at least 1 bar")
    source = price_column if price_column in frame.columns else return_column
    missing = {"symbol", "ts_ns", source} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)} (needs {price_column} or {return_column})")
    keys = instrument_keys(frame)
    out = frame.sort_values([*keys, "ts_ns"], kind="stable").reset_index(drop=True)
    columns: dict[str, np.ndarray] = {
        name: np.full(len(out), np.nan) for name in ("ret_1", "mom", "ewma_vol", "y_return", "y_up", "y_vol")
    }
    for _, rows in out.groupby(keys, sort=False).indices.items():
        values = out[source].to_numpy(dtype=np.float64)[rows]
        if source == price_column:
            if np.any(~(values > 0)):
                raise ValueError("closes must be positive to take log returns")
            log_price = np.log(values)
            ret_1 = np.concatenate(([np.nan], np.diff(log_price)))
        else:
            ret_1 = values
            log_price = np.cumsum(np.nan_to_num(values))
        n = len(rows)
        fwd = np.full(n, np.nan)
        mom = np.full(n, np.nan)
        if n > horizon:
            fwd[:-horizon] = log_price[horizon:] - log_price[:-horizon]
            mom[horizon:] = log_price[horizon:] - log_price[:-horizon]
        # A hole in the minute grid (a missing day of features) must not pass for h minutes.
        ts = out["ts_ns"].to_numpy(dtype=np.int64)[rows]
        if n > horizon:
            span_ok = (ts[horizon:] - ts[:-horizon]) == horizon * NS_PER_MIN
            fwd[:-horizon][~span_ok] = np.nan
            mom[horizon:][~span_ok] = np.nan
        csum = np.concatenate(([0.0], np.cumsum(np.nan_to_num(ret_1) ** 2)))
        fwd_var = np.full(n, np.nan)
        if n > vol_horizon:
            fwd_var[:-vol_horizon] = csum[vol_horizon + 1 :] - csum[1:-vol_horizon]
            fwd_var[:-vol_horizon][(ts[vol_horizon:] - ts[:-vol_horizon]) != vol_horizon * NS_PER_MIN] = (
                np.nan
            )
        columns["ret_1"][rows] = ret_1
        columns["mom"][rows] = mom
        columns["ewma_vol"][rows] = np.sqrt(vol_horizon * ewma_variance(np.nan_to_num(ret_1)))
        columns["y_return"][rows] = fwd
        columns["y_up"][rows] = np.where(np.isnan(fwd), np.nan, (fwd > 0).astype(np.float64))
        columns["y_vol"][rows] = np.sqrt(fwd_var)
    for name, values in columns.items():
        out[name] = values
    out["end_ns"] = out["ts_ns"].astype(np.int64) + (max(horizon, vol_horizon) + 1) * NS_PER_MIN - 1
    return out


def complete_rows(frame: pd.DataFrame, feature_columns: Sequence[str]) -> pd.DataFrame:
    """Rows with every feature, label and baseline input present, in time order (then symbol)."""
    needed = [*feature_columns, *LABEL_COLUMNS, *BASELINE_INPUTS]
    clean = frame.dropna(subset=needed)
    return clean.sort_values(["ts_ns", "symbol"], kind="stable").reset_index(drop=True)


SYNTHETIC_FEATURES = ["flow_imbalance", "ret_1_f", "ret_5_f", "vol_15_f", "volume_z"]


def synthetic_bars(
    n_minutes: int,
    symbols: Sequence[str],
    signal: float = 0.0,
    seed: int = 0,
    start_ns: int = 1_790_000_000 * 1_000_000_000,
) -> pd.DataFrame:
    """Random-walk 1-minute bars with an optional planted order-flow signal, for tests and benchmarks.

    With ``signal > 0`` the buy/sell imbalance of bar t shifts the mean of the next ``5`` returns;
    with ``signal = 0`` returns are independent of everything observable.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for k, symbol in enumerate(symbols):
        imbalance = np.clip(rng.normal(0, 0.35, n_minutes), -1, 1)
        vol = 1e-3 * np.exp(np.cumsum(rng.normal(0, 0.02, n_minutes)) * 0.2)
        drift = np.zeros(n_minutes)
        for lag in range(1, 6):
            drift[lag:] += signal * vol[lag:] * imbalance[:-lag] / 5
        ret = drift + vol * rng.standard_normal(n_minutes)
        close = 100.0 * (k + 1) * np.exp(np.cumsum(ret))
        volume = rng.gamma(2.0, 50.0, n_minutes)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts_ns": start_ns + np.arange(n_minutes, dtype=np.int64) * NS_PER_MIN,
                    "close": close,
                    "volume": volume,
                    "buy_volume": volume * (1 + imbalance) / 2,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def synthetic_features(bars: pd.DataFrame) -> pd.DataFrame:
    """A handful of causal features over ``synthetic_bars`` (tests and benchmarks only)."""
    out = bars.sort_values(["symbol", "ts_ns"], kind="stable").reset_index(drop=True)
    by_symbol = out.groupby("symbol", sort=False)
    log_close = np.log(out["close"])
    ret = log_close - by_symbol["close"].shift(1).pipe(np.log)
    out["flow_imbalance"] = 2 * out["buy_volume"] / out["volume"] - 1
    out["ret_1_f"] = ret
    out["ret_5_f"] = log_close - by_symbol["close"].shift(5).pipe(np.log)
    out["vol_15_f"] = ret.groupby(out["symbol"]).transform(lambda r: r.rolling(15).std())
    out["volume_z"] = (
        out["volume"]
        .groupby(out["symbol"])
        .transform(lambda v: (v - v.rolling(60).mean()) / v.rolling(60).std())
    )
    return out


def training_frame(
    bars: pd.DataFrame,
    horizon: int = DEFAULT_HORIZON,
    news: pd.DataFrame | None = None,
    vol_horizon: int = DEFAULT_VOL_HORIZON,
) -> tuple[pd.DataFrame, list[str]]:
    """Bars (``features.BAR_COLUMNS``) -> (complete training rows, the model's feature columns).

    Features come from the one feature code path (``features.compute_features``) that live scoring
    also uses; labels and baseline inputs from ``add_labels`` over the same minute grid.
    """
    from rrr_platform.ml import features as feat

    computed = feat.compute_features(bars, news, label_horizon=None)
    labelled = add_labels(computed, horizon, vol_horizon)
    return complete_rows(labelled, feat.FEATURE_COLUMNS), list(feat.FEATURE_COLUMNS)


def simulator_bars(
    symbols: Sequence[str],
    start_ns: int,
    end_ns: int,
    signal: str = "none",
    seed: int = 7,
    venue: str = "binance_spot",
    signal_strength: float | None = None,
) -> pd.DataFrame:
    """1-minute bars straight from the simulator's market model (no servers), as ``BAR_COLUMNS``.

    VWAP would need every trade of every minute drawn; the typical price (H+L+C)/3 stands in for it.
    """
    from rrr_platform.simulator.model import MarketConfig, MarketModel

    options: dict[str, object] = {"seed": seed, "signal": signal}
    if signal_strength is not None:
        options["signal_strength"] = signal_strength
    model = MarketModel(MarketConfig(**options))  # type: ignore[arg-type]
    frames = []
    for symbol in symbols:
        batch = model.bars_1m(venue, symbol, start_ns, end_ns)
        price_scale = 10.0**-batch.instrument.price_decimals
        size_scale = 10.0**-batch.instrument.size_decimals
        high, low, close = (
            getattr(batch, k).astype(np.float64) * price_scale for k in ("high", "low", "close")
        )
        frames.append(
            pd.DataFrame(
                {
                    "ts_ns": batch.ts_ns.astype(np.int64),
                    "venue": venue,
                    "symbol": symbol,
                    "open": batch.open.astype(np.float64) * price_scale,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": batch.volume.astype(np.float64) * size_scale,
                    "vwap": (high + low + close) / 3,
                    "trade_count": batch.trade_count.astype(np.int64),
                    "buy_volume": batch.buy_volume.astype(np.float64) * size_scale,
                }
            )
        )
    bars = pd.concat(frames, ignore_index=True)
    return bars[bars["trade_count"] > 0].reset_index(drop=True)  # a minute without trades has no bar


def store_bars(conn: psycopg.Connection, bars: pd.DataFrame, source: str = "rest") -> int:
    """Write a ``BAR_COLUMNS`` frame into ``market.bars_1m`` (partitions created), by COPY.

    For simulator history in tests, benchmarks and the demo; the ingest path has its own writers.
    """
    from rrr_platform.market.timeutil import day_of_ns
    from rrr_platform.market.types import BAR_VALUES
    from rrr_platform.storage.partitions import ensure_partitions

    if bars.empty:
        return 0
    ensure_partitions(conn, "bars_1m", sorted({day_of_ns(int(t)) for t in bars["ts_ns"].unique()}))
    ts = pd.to_datetime(bars["ts_ns"].to_numpy(dtype=np.int64), unit="ns", utc=True)
    columns = ["ts", "venue", "symbol", *BAR_VALUES, "source"]
    with conn.cursor() as cur, cur.copy(f"COPY market.bars_1m ({', '.join(columns)}) FROM STDIN") as copy:
        for i, row in enumerate(bars.itertuples(index=False)):
            copy.write_row(
                (
                    ts[i].to_pydatetime(),
                    row.venue,
                    row.symbol,
                    row.open,
                    row.high,
                    row.low,
                    row.close,
                    row.volume,
                    row.vwap,
                    int(row.trade_count),
                    row.buy_volume,
                    source,
                )
            )
    return len(bars)


def build_training_set(
    conn: psycopg.Connection,
    start_ns: int,
    end_ns: int,
    horizon: int = DEFAULT_HORIZON,
    features_root: Path | None = None,
    vol_horizon: int = DEFAULT_VOL_HORIZON,
) -> tuple[pd.DataFrame, list[str], str]:
    """Training rows for bars starting in [start_ns, end_ns): (rows, feature columns, source).

    Reads the ``features`` asset's daily Parquet files when they cover the window, else computes the
    features from ``market.bars_1m`` and ``market.news`` with the same code (``source`` says which).
    """
    import datetime as dt

    from rrr_platform.market.timeutil import NS_PER_DAY, day_of_ns, ns_to_datetime
    from rrr_platform.ml import features as feat
    from rrr_platform.ml.sentiment import load_news

    days = [
        day_of_ns(start_ns) + dt.timedelta(days=k)
        for k in range((end_ns - 1) // NS_PER_DAY - start_ns // NS_PER_DAY + 1)
    ]
    frame = pd.DataFrame()
    source = "features"
    if features_root is not None and all(feat.features_path(features_root, d).exists() for d in days):
        frame = feat.read_features(features_root, days)
    if frame.empty:
        source = "bars"
        warmup = feat.MAX_WARMUP_MINUTES * NS_PER_MIN
        bars = feat.load_bars(conn, start_ns - warmup, end_ns + max(horizon, vol_horizon) * NS_PER_MIN)
        news = load_news(conn, ns_to_datetime(start_ns - warmup - 240 * NS_PER_MIN), ns_to_datetime(end_ns))
        frame = feat.compute_features(bars, news, label_horizon=None)
    if frame.empty:
        raise ValueError("no bars in the training window: backfill market.bars_1m first")
    labelled = add_labels(
        frame.drop(columns=[c for c in ("fwd_ret", "label_up") if c in frame.columns]), horizon, vol_horizon
    )
    in_window = labelled[(labelled["ts_ns"] >= start_ns) & (labelled["ts_ns"] < end_ns)]
    return complete_rows(in_window, feat.FEATURE_COLUMNS), list(feat.FEATURE_COLUMNS), source
