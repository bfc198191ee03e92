"""Features per instrument and minute from 1-minute bars and news sentiment; one code path for
training (batch) and live scoring.

Every feature at minute t is computed from bars with start time <= t (the bar of minute t closes at
t + 1 min, when the row becomes available) and headlines published before t + 1 min, over a bounded
trailing window (see ``rrr_platform.ml.indicators``). ``live_features`` therefore runs the very same
``compute_features`` on the latest ``LIVE_WINDOW_MINUTES`` bars and keeps the last row: it agrees
with the batch row to the last digit.

Bars are first laid on a complete minute grid per instrument: a minute without a bar (no trade)
repeats the previous close with zero volume and is flagged ``filled``; window lengths are then exact
minutes.

Features (name: minutes of history needed before the first value, ``WARMUP_MINUTES``):
  ret_1, ret_5, ret_15, ret_60      log return over 1/5/15/60 minutes (h)
  rv_30, rv_60                      realized volatility: sqrt of summed squared 1-min log returns (w)
  parkinson_30                      Parkinson range volatility per minute (29)
  garman_klass_30                   Garman-Klass range volatility per minute (29)
  rsi_14                            Cutler's RSI (14)
  macd, macd_signal, macd_hist      MACD 12/26/9 on windowed EMAs, divided by the close (77, 103, 103)
  bb_pos_20                         Bollinger %B, 20 minutes, 2 sigma (19)
  volume_z_60, trades_z_60          z-score of volume / trade count against the trailing hour (59)
  buy_imbalance_1, buy_imbalance_15 (buy - sell) / volume over 1 and 15 minutes (0, 14)
  vwap_gap                          ln(close / vwap) of the minute (0)
  cross_venue_spread                ln(close / close of the same base asset on another venue: the
                                    first other venue by name) (0)
  sent_mean_60, sent_count_60       mean tone and count of headlines over the trailing hour (59)
  sent_decay_240                    sum of tones decayed with a 60-minute half-life over 4 hours (239)

Labels (``LABEL_COLUMNS``): ``fwd_ret`` = ln(close[t+h] / close[t]) for the configured horizon h
(strictly after t), ``label_up`` = 1.0 if fwd_ret > 0 else 0.0; NaN where t+h is not in the data.

Where a source is missing, the feature is neutral rather than NaN: bars without buy volume (venue
candles) give imbalance 0; an instrument with no counterpart venue gives spread 0; no news gives 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN, datetime_to_ns, ns_to_datetime
from rrr_platform.ml import indicators as ind
from rrr_platform.ml.sentiment import explode_by_key, minute_sentiment, news_key

RETURN_HORIZONS = (1, 5, 15, 60)
SENTIMENT_HALF_LIFE_MINUTES = 60.0
SENTIMENT_DECAY_WINDOW = 240

WARMUP_MINUTES: dict[str, int] = {
    **{f"ret_{h}": h for h in RETURN_HORIZONS},
    "rv_30": 30,
    "rv_60": 60,
    "parkinson_30": 29,
    "garman_klass_30": 29,
    "rsi_14": 14,
    "macd": ind.ema_window(26) - 1,
    "macd_signal": ind.ema_window(26) - 1 + ind.ema_window(9) - 1,
    "macd_hist": ind.ema_window(26) - 1 + ind.ema_window(9) - 1,
    "bb_pos_20": 19,
    "volume_z_60": 59,
    "trades_z_60": 59,
    "buy_imbalance_1": 0,
    "buy_imbalance_15": 14,
    "vwap_gap": 0,
    "cross_venue_spread": 0,
    "sent_mean_60": 59,
    "sent_count_60": 59,
    "sent_decay_240": SENTIMENT_DECAY_WINDOW - 1,
}
FEATURE_COLUMNS: list[str] = list(WARMUP_MINUTES)
MAX_WARMUP_MINUTES = max(WARMUP_MINUTES.values())
# Live scoring needs the warm-up plus the row itself.
LIVE_WINDOW_MINUTES = MAX_WARMUP_MINUTES + 1
LABEL_COLUMNS = ["fwd_ret", "label_up"]
DEFAULT_LABEL_HORIZON = 15
KEY_COLUMNS = ["ts_ns", "venue", "symbol"]
BAR_COLUMNS = [*KEY_COLUMNS, "open", "high", "low", "close", "volume", "vwap", "trade_count", "buy_volume"]


class FeatureInputError(ValueError):
    """Bars or news cannot be turned into features; the message says why."""


@dataclass(frozen=True)
class GriddedBars:
    """One instrument's bars on a complete minute grid (gap minutes repeat the previous close)."""

    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    trade_count: np.ndarray
    buy_volume: np.ndarray
    filled: np.ndarray


def complete_minutes(bars: pd.DataFrame) -> GriddedBars:
    """Lay one instrument's bars (sorted, unique minutes) on every minute from its first to its last."""
    ts = bars["ts_ns"].to_numpy(np.int64)
    if len(ts) == 0:
        empty = np.empty(0)
        return GriddedBars(np.empty(0, np.int64), *([empty] * 8), np.empty(0, bool))
    if (ts % NS_PER_MIN).any():
        raise FeatureInputError("bar times must be minute starts")
    if not (ts[1:] > ts[:-1]).all():
        raise FeatureInputError("bar times must be strictly increasing per instrument")
    slot = (ts - ts[0]) // NS_PER_MIN
    n = int(slot[-1]) + 1
    present = np.zeros(n, bool)
    present[slot] = True
    # Index of the latest real bar at or before each minute: forward fill without pandas.
    last_real = np.maximum.accumulate(np.where(present, np.arange(n), 0))
    src = np.full(n, -1)
    src[slot] = np.arange(len(ts))
    from_bar = src[last_real]

    def column(name: str, fill_zero: bool) -> np.ndarray:
        values = bars[name].to_numpy(np.float64, na_value=np.nan)
        out = values[from_bar]
        if fill_zero:
            out = np.where(present, out, 0.0)
        return out

    close = column("close", False)
    return GriddedBars(
        ts_ns=ts[0] + np.arange(n, dtype=np.int64) * NS_PER_MIN,
        open=np.where(present, column("open", False), close),
        high=np.where(present, column("high", False), close),
        low=np.where(present, column("low", False), close),
        close=close,
        volume=column("volume", True),
        vwap=np.where(present, column("vwap", False), close),
        trade_count=column("trade_count", True),
        buy_volume=column("buy_volume", True),
        filled=~present,
    )


def instrument_features(
    grid: GriddedBars,
    sentiment_sums: np.ndarray,
    sentiment_counts: np.ndarray,
    counterpart_close: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Every feature column for one instrument on its minute grid."""
    c, o, h, low = grid.close, grid.open, grid.high, grid.low
    out: dict[str, np.ndarray] = {}
    for horizon in RETURN_HORIZONS:
        out[f"ret_{horizon}"] = ind.log_returns(c, horizon)
    out["rv_30"] = ind.realized_volatility(c, 30)
    out["rv_60"] = ind.realized_volatility(c, 60)
    out["parkinson_30"] = ind.parkinson_volatility(h, low, 30)
    out["garman_klass_30"] = ind.garman_klass_volatility(o, h, low, c, 30)
    out["rsi_14"] = ind.rsi(c, 14)
    out["macd"], out["macd_signal"], out["macd_hist"] = ind.macd(c, 12, 26, 9)
    out["bb_pos_20"] = ind.bollinger_position(c, 20, 2.0)
    out["volume_z_60"] = ind.zscore(grid.volume, 60)
    out["trades_z_60"] = ind.zscore(grid.trade_count, 60)
    # Venue candles carry no buy volume: NaN there reads as balanced flow (0), not as missing data.
    buy = np.where(np.isnan(grid.buy_volume), 0.5 * grid.volume, grid.buy_volume)
    out["buy_imbalance_1"] = ind.buy_imbalance(buy, grid.volume, 1)
    out["buy_imbalance_15"] = ind.buy_imbalance(buy, grid.volume, 15)
    out["vwap_gap"] = np.log(c / grid.vwap)
    if counterpart_close is None:
        out["cross_venue_spread"] = np.zeros(len(c))
    else:
        spread = np.log(c / counterpart_close)
        out["cross_venue_spread"] = np.where(np.isnan(spread), 0.0, spread)
    sums = ind.trailing_sum(sentiment_sums, 60)
    counts = ind.trailing_sum(sentiment_counts, 60)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["sent_mean_60"] = np.where(counts > 0, sums / counts, np.where(np.isnan(counts), np.nan, 0.0))
    out["sent_count_60"] = counts
    out["sent_decay_240"] = ind.trailing_weighted_sum(
        sentiment_sums, ind.decay_weights(SENTIMENT_DECAY_WINDOW, SENTIMENT_HALF_LIFE_MINUTES)
    )
    return out


def forward_labels(close: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """``fwd_ret[t] = ln(close[t+h] / close[t])`` (strictly after t) and its sign as 1.0 / 0.0."""
    if horizon < 1:
        raise FeatureInputError(f"label horizon must be >= 1 minute, got {horizon}")
    log_close = np.log(close)
    fwd = np.full(len(close), np.nan)
    if len(close) > horizon:
        fwd[:-horizon] = log_close[horizon:] - log_close[:-horizon]
    up = np.where(np.isnan(fwd), np.nan, (fwd > 0).astype(np.float64))
    return fwd, up


def _check_bars(bars: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise FeatureInputError(f"bars lack columns {missing}")
    if bars.duplicated(KEY_COLUMNS).any():
        first = bars.loc[bars.duplicated(KEY_COLUMNS), KEY_COLUMNS].iloc[0].tolist()
        raise FeatureInputError(f"duplicate bar {first}")
    prices = bars[["open", "high", "low", "close"]].to_numpy(np.float64, na_value=np.nan)
    if not (prices > 0).all():
        raise FeatureInputError("bar prices must be positive and present")
    return bars.sort_values(KEY_COLUMNS, kind="stable")


def _empty_news() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=str), "published_ns": pd.Series(dtype=np.int64),
                         "title": pd.Series(dtype=str), "tickers": pd.Series(dtype=object),
                         "sentiment": pd.Series(dtype=np.float64)})


def compute_features(
    bars: pd.DataFrame,
    news: pd.DataFrame | None = None,
    label_horizon: int | None = DEFAULT_LABEL_HORIZON,
) -> pd.DataFrame:
    """Features (and labels unless ``label_horizon`` is None) for every instrument in ``bars``.

    ``bars``: ``BAR_COLUMNS`` (ts_ns = minute start), any number of venues and symbols.
    ``news``: scored headlines (``published_ns``, ``tickers``, ``sentiment``), or None.
    Returns one row per instrument and grid minute: ``ts_ns, ts, venue, symbol, filled``, features, labels.
    """
    bars = _check_bars(bars)
    news = _empty_news() if news is None else news.sort_values(["published_ns", "id"], kind="stable")
    news_by_key = explode_by_key(news)
    grids: dict[tuple[str, str], GriddedBars] = {
        (str(venue), str(symbol)): complete_minutes(group)
        for (venue, symbol), group in bars.groupby(["venue", "symbol"], sort=True)
    }
    frames = []
    for (venue, symbol), grid in grids.items():
        key = news_key(symbol)
        counterpart = next(
            (g for (v, s), g in grids.items() if v != venue and news_key(s) == key), None
        )
        counterpart_close = None
        if counterpart is not None:
            counterpart_close = np.full(len(grid.ts_ns), np.nan)
            pos = np.searchsorted(counterpart.ts_ns, grid.ts_ns)
            hit = (pos < len(counterpart.ts_ns)) & (
                counterpart.ts_ns[np.minimum(pos, len(counterpart.ts_ns) - 1)] == grid.ts_ns
            )
            counterpart_close[hit] = counterpart.close[pos[hit]]
        sums, counts = minute_sentiment(news_by_key, key, grid.ts_ns)
        columns = instrument_features(grid, sums, counts, counterpart_close)
        frame = pd.DataFrame({"ts_ns": grid.ts_ns, "venue": venue, "symbol": symbol, "filled": grid.filled,
                              **columns})
        if label_horizon is not None:
            frame["fwd_ret"], frame["label_up"] = forward_labels(grid.close, label_horizon)
        frames.append(frame)
    if not frames:
        columns = ["ts_ns", "venue", "symbol", "filled", *FEATURE_COLUMNS]
        if label_horizon is not None:
            columns += LABEL_COLUMNS
        result = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in columns})
    else:
        result = pd.concat(frames, ignore_index=True)
    result.insert(1, "ts", pd.to_datetime(result["ts_ns"].astype(np.int64), unit="ns", utc=True))
    return result


def live_features(latest_bars: pd.DataFrame, news: pd.DataFrame | None = None) -> pd.DataFrame:
    """Features of the latest minute of each instrument, from at least ``LIVE_WINDOW_MINUTES`` of bars.

    The same ``compute_features`` as in batch, on the window, keeping each instrument's last row.
    """
    features = compute_features(latest_bars, news, label_horizon=None)
    return features.groupby(["venue", "symbol"], sort=True).tail(1).reset_index(drop=True)


def live_features_at(
    conn: psycopg.Connection, as_of_ns: int, symbols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Live features of the minute starting at ``as_of_ns``, from ``market.bars_1m`` and ``market.news``.

    Reads only the last ``LIVE_WINDOW_MINUTES`` bars and the headlines of the sentiment window.
    """
    from rrr_platform.ml.sentiment import load_news

    if as_of_ns % NS_PER_MIN:
        raise FeatureInputError("as_of_ns must be a minute start")
    bars = load_bars(conn, as_of_ns - (LIVE_WINDOW_MINUTES - 1) * NS_PER_MIN, as_of_ns + NS_PER_MIN, symbols)
    news = load_news(conn, ns_to_datetime(as_of_ns - SENTIMENT_DECAY_WINDOW * NS_PER_MIN),
                     ns_to_datetime(as_of_ns + NS_PER_MIN))
    return live_features(bars, news)


# ------------------------------------------------------------------------------ look-ahead checks

FeatureFunction = Callable[[pd.DataFrame, pd.DataFrame | None], pd.DataFrame]


def _batch_features(bars: pd.DataFrame, news: pd.DataFrame | None) -> pd.DataFrame:
    return compute_features(bars, news, label_horizon=None)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def lookahead_violations(
    bars: pd.DataFrame,
    news: pd.DataFrame | None,
    check_times_ns: Sequence[int],
    compute: FeatureFunction = _batch_features,
    columns: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """Feature values at t that change when everything after t is removed: a look-ahead.

    For each check time t, recompute on bars with start <= t and news published before t + 1 min,
    and compare each instrument's row at t with the full computation, exactly (NaN equals NaN).
    Returns one record per (t, instrument, column) that differs; empty means no look-ahead found.
    """
    full = compute(bars, news).set_index(KEY_COLUMNS)
    cols = list(columns) if columns is not None else [
        c for c in full.columns if c not in ("ts", "filled", *LABEL_COLUMNS)
    ]
    violations: list[dict[str, object]] = []
    for t in check_times_ns:
        cut_bars = bars[bars["ts_ns"] <= t]
        cut_news = None if news is None else news[news["published_ns"] < t + NS_PER_MIN]
        if cut_bars.empty:
            continue
        part = compute(cut_bars, cut_news).set_index(KEY_COLUMNS)
        rows = part.index[part.index.get_level_values(0) == t]
        for row in rows:
            a = full.loc[row, cols].to_numpy(np.float64)
            b = part.loc[row, cols].to_numpy(np.float64)
            for col in np.asarray(cols)[~_same(a, b)]:
                violations.append({"ts_ns": int(t), "venue": row[1], "symbol": row[2], "column": str(col)})
    return violations


LabelFunction = Callable[[pd.DataFrame, int], pd.DataFrame]


def _labelled(bars: pd.DataFrame, label_horizon: int) -> pd.DataFrame:
    return compute_features(bars, None, label_horizon)


def label_violations(
    bars: pd.DataFrame,
    check_times_ns: Sequence[int],
    label_horizon: int = DEFAULT_LABEL_HORIZON,
    compute: LabelFunction = _labelled,
) -> list[dict[str, object]]:
    """Labels must come strictly after t: unknown (NaN) from data up to t, and fixed by data up to t+h."""
    full = compute(bars, label_horizon).set_index(KEY_COLUMNS)
    violations: list[dict[str, object]] = []
    horizon_ns = label_horizon * NS_PER_MIN
    for t in check_times_ns:
        upto_t = compute(bars[bars["ts_ns"] <= t], label_horizon).set_index(KEY_COLUMNS)
        upto_h = compute(bars[bars["ts_ns"] <= t + horizon_ns], label_horizon).set_index(KEY_COLUMNS)
        for row in upto_t.index[upto_t.index.get_level_values(0) == t]:
            if not np.isnan(upto_t.loc[row, "fwd_ret"]):
                violations.append({"ts_ns": int(t), "venue": row[1], "symbol": row[2],
                                   "problem": "label known from data up to t"})
            if row in upto_h.index and not _same(
                np.array([full.loc[row, "fwd_ret"]]), np.array([upto_h.loc[row, "fwd_ret"]])
            )[0]:
                violations.append({"ts_ns": int(t), "venue": row[1], "symbol": row[2],
                                   "problem": "label depends on data after t + horizon"})
    return violations


def invalid_after_warmup(features: pd.DataFrame, warmup_start_ns: int | None = None) -> dict[str, int]:
    """NaN/inf count per feature column past each column's warm-up (per instrument), non-zero only.

    ``warmup_start_ns``: the first minute whose warm-up is counted from; by default each instrument's
    first row.
    """
    counts: dict[str, int] = {}
    for _, group in features.groupby(["venue", "symbol"], sort=False):
        ts = group["ts_ns"].to_numpy(np.int64)
        start = ts[0] if warmup_start_ns is None else max(int(ts[0]), warmup_start_ns)
        for col in FEATURE_COLUMNS:
            valid_from = start + WARMUP_MINUTES[col] * NS_PER_MIN
            values = group[col].to_numpy(np.float64)[ts >= valid_from]
            bad = int((~np.isfinite(values)).sum())
            if bad:
                counts[col] = counts.get(col, 0) + bad
    return counts


# ---------------------------------------------------------------------------------------- storage


def load_bars(
    conn: psycopg.Connection, start_ns: int, end_ns: int, symbols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Bars of ``market.bars_1m`` with start in [start_ns, end_ns), as floats (features are floats)."""
    query = """
        SELECT ((extract(epoch FROM ts) * 1000000)::bigint * 1000) AS ts_ns, venue, symbol,
               open::float8, high::float8, low::float8, close::float8, volume::float8, vwap::float8,
               trade_count, buy_volume::float8
        FROM market.bars_1m
        WHERE ts >= %s AND ts < %s
    """
    params: list[object] = [ns_to_datetime(start_ns), ns_to_datetime(end_ns)]
    if symbols:
        query += " AND symbol = ANY(%s)"
        params.append(list(symbols))
    rows = conn.execute(query + " ORDER BY venue, symbol, ts", params).fetchall()
    frame = pd.DataFrame(rows, columns=BAR_COLUMNS)
    return frame.astype({"ts_ns": np.int64, "trade_count": np.int64, "open": np.float64,
                         "high": np.float64, "low": np.float64, "close": np.float64,
                         "volume": np.float64, "vwap": np.float64, "buy_volume": np.float64})


# ------------------------------------------------------------------------------- daily partition


@dataclass(frozen=True)
class DayFeatures:
    """A day's features and the inputs they came from (the checks recompute from the inputs)."""

    day: dt.date
    features: pd.DataFrame  # rows of the day only
    bars: pd.DataFrame  # the day's bars plus the warm-up before and the label horizon after
    news: pd.DataFrame
    label_horizon: int


def day_bounds_ns(day: dt.date) -> tuple[int, int]:
    start = datetime_to_ns(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    return start, start + NS_PER_DAY


def build_day_features(
    conn: psycopg.Connection,
    day: dt.date,
    label_horizon: int = DEFAULT_LABEL_HORIZON,
    symbols: Sequence[str] | None = None,
) -> DayFeatures:
    """Features of one UTC day from ``market.bars_1m`` and ``market.news``.

    Reads the warm-up (``MAX_WARMUP_MINUTES``) from the previous day and ``label_horizon`` minutes of
    the next day where they exist, so the day's first rows are warm and its last rows labelled.
    """
    from rrr_platform.ml.sentiment import load_news

    start, end = day_bounds_ns(day)
    bars = load_bars(conn, start - MAX_WARMUP_MINUTES * NS_PER_MIN, end + label_horizon * NS_PER_MIN, symbols)
    news = load_news(conn, ns_to_datetime(start - SENTIMENT_DECAY_WINDOW * NS_PER_MIN), ns_to_datetime(end))
    features = compute_features(bars, news, label_horizon)
    in_day = (features["ts_ns"] >= start) & (features["ts_ns"] < end)
    return DayFeatures(day, features[in_day].reset_index(drop=True), bars, news, label_horizon)


def check_times(day_features: DayFeatures, count: int = 6) -> list[int]:
    """Evenly spaced minutes of the day that have rows: where the look-ahead checks recompute."""
    ts = np.unique(day_features.features["ts_ns"].to_numpy(np.int64))
    if len(ts) == 0:
        return []
    picks = np.linspace(0, len(ts) - 1, min(count, len(ts))).round().astype(int)
    return [int(t) for t in ts[np.unique(picks)]]


def incomplete_minutes(day_features: DayFeatures) -> dict[str, int]:
    """Per instrument (``venue:symbol``): minutes of the day with no row or only a gap-filled row."""
    start, end = day_bounds_ns(day_features.day)
    expected = (end - start) // NS_PER_MIN
    out: dict[str, int] = {}
    instruments = day_features.bars.groupby(["venue", "symbol"]).size().index
    if len(instruments) == 0:
        return {"*": int(expected)}  # no bars at all: every minute is missing
    for venue, symbol in instruments:
        rows = day_features.features[
            (day_features.features["venue"] == venue) & (day_features.features["symbol"] == symbol)
        ]
        missing = int(expected - (~rows["filled"].astype(bool)).sum())
        if missing:
            out[f"{venue}:{symbol}"] = missing
    return out


def label_balance(features: pd.DataFrame) -> dict[str, object]:
    labelled = features["label_up"].dropna()
    return {
        "labelled_rows": len(labelled),
        "unlabelled_rows": int(features["label_up"].isna().sum()),
        "share_up": float(labelled.mean()) if len(labelled) else float("nan"),
    }


def features_path(root: Path, day: dt.date) -> Path:
    return root / f"date={day.isoformat()}" / "features.parquet"


def write_features(frame: pd.DataFrame, root: Path, day: dt.date) -> Path:
    """Write a day's features as Parquet, atomically (a reader never sees half a file)."""
    path = features_path(root, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def read_features(root: Path, days: Sequence[dt.date]) -> pd.DataFrame:
    """Concatenated features of ``days`` (those written; a missing day is skipped)."""
    paths = [features_path(root, d) for d in days if features_path(root, d).exists()]
    if not paths:
        return pd.DataFrame(columns=["ts_ns", "ts", "venue", "symbol", "filled", *FEATURE_COLUMNS,
                                     *LABEL_COLUMNS])
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
