"""Features: documented warm-ups, live == batch to the last digit, look-ahead checks that can fail."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_S
from rrr_platform.ml import features as feat

T0 = 1_790_000_000 * NS_PER_S // NS_PER_MIN * NS_PER_MIN


def make_bars(venue: str, symbol: str, minutes: int, seed: int, start: int = T0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 1e-3, minutes))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 1e-3, minutes))
    volume = rng.uniform(1, 10, minutes)
    return pd.DataFrame({
        "ts_ns": start + np.arange(minutes, dtype=np.int64) * NS_PER_MIN, "venue": venue, "symbol": symbol,
        "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        "vwap": (high + low + close) / 3, "trade_count": rng.integers(1, 50, minutes).astype(float),
        "buy_volume": volume * rng.uniform(0, 1, minutes),
    })


def make_news(count: int, minutes: int, seed: int, tickers: tuple[str, ...] = ("X:BTCUSD",)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    published = np.sort(T0 + rng.integers(0, minutes * NS_PER_MIN, count))
    return pd.DataFrame({"id": [f"n{i}" for i in range(count)], "published_ns": published,
                         "title": "headline", "tickers": [list(tickers)] * count,
                         "sentiment": rng.uniform(-1, 1, count)})


@pytest.fixture(scope="module")
def two_venues() -> pd.DataFrame:
    return pd.concat([make_bars("binance_spot", "BTC-USDT", 900, 1), make_bars("coinbase_exchange", "BTC-USD",
                                                                             900, 2)], ignore_index=True)


def test_warmup_minutes_document_the_first_value(two_venues: pd.DataFrame) -> None:
    features = feat.compute_features(two_venues, make_news(40, 900, 3))
    one = features[features["venue"] == "binance_spot"]
    first_valid = {c: int(np.flatnonzero(np.isfinite(one[c].to_numpy()))[0]) for c in feat.FEATURE_COLUMNS}
    assert first_valid == feat.WARMUP_MINUTES
    assert feat.invalid_after_warmup(features) == {}
    assert max(feat.WARMUP_MINUTES.values()) + 1 == feat.LIVE_WINDOW_MINUTES


def test_live_features_equal_batch_to_the_last_digit(two_venues: pd.DataFrame) -> None:
    news = make_news(60, 900, 4)
    batch = feat.compute_features(two_venues, news, label_horizon=None)
    for t in (T0 + 400 * NS_PER_MIN, T0 + 777 * NS_PER_MIN, T0 + 899 * NS_PER_MIN):
        window = two_venues[(two_venues["ts_ns"] <= t)
                            & (two_venues["ts_ns"] > t - feat.LIVE_WINDOW_MINUTES * NS_PER_MIN)]
        live = feat.live_features(window, news[news["published_ns"] < t + NS_PER_MIN])
        expected = batch[batch["ts_ns"] == t].reset_index(drop=True)
        assert live[["venue", "symbol", "ts_ns"]].equals(expected[["venue", "symbol", "ts_ns"]])
        live_values = live[feat.FEATURE_COLUMNS].to_numpy()
        batch_values = expected[feat.FEATURE_COLUMNS].to_numpy()
        assert np.isfinite(live_values).all()
        assert np.array_equal(live_values, batch_values), np.array(feat.FEATURE_COLUMNS)[
            (live_values != batch_values).any(axis=0)]


def test_no_lookahead_in_the_real_features(two_venues: pd.DataFrame) -> None:
    bars = two_venues[two_venues["ts_ns"] < T0 + 400 * NS_PER_MIN]
    news = make_news(30, 400, 5)
    times = [T0 + m * NS_PER_MIN for m in (10, 150, 260, 399)]
    assert feat.lookahead_violations(bars, news, times) == []
    assert feat.label_violations(bars, times, 15) == []


def test_lookahead_check_catches_a_leaking_feature(two_venues: pd.DataFrame) -> None:
    def leaking(bars: pd.DataFrame, news: pd.DataFrame | None) -> pd.DataFrame:
        out = feat.compute_features(bars, news, label_horizon=None)
        # "next close": a classic leak, the value at t needs the bar of t+1.
        out["next_close_leak"] = out.groupby(["venue", "symbol"])["ret_1"].shift(-1)
        return out

    bars = two_venues[two_venues["ts_ns"] < T0 + 300 * NS_PER_MIN]
    times = [T0 + 100 * NS_PER_MIN, T0 + 200 * NS_PER_MIN]
    violations = feat.lookahead_violations(bars, None, times, compute=leaking)
    assert {v["column"] for v in violations} == {"next_close_leak"}
    assert len(violations) == 4  # both instruments at both times


def test_lookahead_check_catches_news_from_the_future(two_venues: pd.DataFrame) -> None:
    def early_news(bars: pd.DataFrame, news: pd.DataFrame | None) -> pd.DataFrame:
        shifted = None if news is None else news.assign(published_ns=news["published_ns"] - 5 * NS_PER_MIN)
        return feat.compute_features(bars, shifted, label_horizon=None)

    bars = two_venues[two_venues["ts_ns"] < T0 + 300 * NS_PER_MIN]
    news = make_news(3, 1, 9).assign(published_ns=[T0 + 262 * NS_PER_MIN] * 3, id=["a", "b", "c"])
    violations = feat.lookahead_violations(bars, news, [T0 + 260 * NS_PER_MIN], compute=early_news)
    assert {v["column"] for v in violations} >= {"sent_count_60", "sent_mean_60", "sent_decay_240"}


def test_label_check_catches_a_label_known_at_t(two_venues: pd.DataFrame) -> None:
    def same_minute_label(bars: pd.DataFrame, horizon: int) -> pd.DataFrame:
        out = feat.compute_features(bars, None, horizon)
        out["fwd_ret"] = out["ret_1"]  # "the return of minute t" is known at t: not a forward label
        return out

    bars = two_venues[two_venues["ts_ns"] < T0 + 300 * NS_PER_MIN]
    violations = feat.label_violations(bars, [T0 + 100 * NS_PER_MIN], 15, compute=same_minute_label)
    assert {v["problem"] for v in violations} == {"label known from data up to t"}


def test_forward_labels_by_hand() -> None:
    fwd, up = feat.forward_labels(np.array([100.0, 101.0, 99.0, 99.0]), 2)
    assert fwd[0] == pytest.approx(math.log(0.99)) and fwd[1] == pytest.approx(math.log(99 / 101))
    assert np.isnan(fwd[2:]).all()
    assert up[:2].tolist() == [0.0, 0.0] and np.isnan(up[2:]).all()
    with pytest.raises(feat.FeatureInputError):
        feat.forward_labels(np.array([1.0]), 0)


def test_missing_minutes_are_filled_and_flagged() -> None:
    bars = make_bars("binance_spot", "BTC-USDT", 5, 1).drop(index=[2, 3])
    out = feat.compute_features(bars, label_horizon=1)
    assert out["ts_ns"].tolist() == [T0 + m * NS_PER_MIN for m in range(5)]
    assert out["filled"].tolist() == [False, False, True, True, False]
    grid = feat.complete_minutes(bars)
    assert grid.close[2] == grid.close[3] == bars["close"].iloc[1]
    assert grid.volume[2] == 0.0 and grid.high[3] == grid.low[3] == grid.close[1]
    assert out["ret_1"].iloc[2] == 0.0


def test_cross_venue_spread_and_neutral_defaults() -> None:
    a = make_bars("binance_spot", "BTC-USDT", 3, 1)
    b = make_bars("coinbase_exchange", "BTC-USD", 3, 2)
    b["close"] = a["close"] * 1.01
    b["high"] = np.maximum(b["high"], b["close"])
    eth = make_bars("binance_spot", "ETH-USDT", 3, 3).assign(buy_volume=np.nan)
    out = feat.compute_features(pd.concat([a, b, eth]), label_horizon=None).set_index(["venue", "symbol"])
    assert out.loc[("binance_spot", "BTC-USDT"), "cross_venue_spread"].to_numpy() == pytest.approx(
        [-math.log(1.01)] * 3)
    assert out.loc[("coinbase_exchange", "BTC-USD"), "cross_venue_spread"].to_numpy() == pytest.approx(
        [math.log(1.01)] * 3)
    assert (out.loc[("binance_spot", "ETH-USDT"), "cross_venue_spread"] == 0).all()  # no counterpart
    assert (out.loc[("binance_spot", "ETH-USDT"), "buy_imbalance_1"] == 0).all()  # candles: no buy volume


def test_sentiment_counts_only_published_headlines() -> None:
    bars = make_bars("binance_spot", "BTC-USDT", 300, 1)
    in_minute_90 = [T0 + 90 * NS_PER_MIN + 30 * NS_PER_S, T0 + 90 * NS_PER_MIN + 59 * NS_PER_S]
    news = pd.DataFrame({"id": ["a", "b", "c"], "published_ns": [*in_minute_90, T0 + 100 * NS_PER_MIN],
                         "title": "x", "tickers": [["X:BTCUSD"], ["BTC"], ["X:ETHUSD"]],
                         "sentiment": [0.5, -0.1, 0.9]})
    out = feat.compute_features(bars, news, label_horizon=None).set_index("ts_ns")
    assert out.loc[T0 + 89 * NS_PER_MIN, "sent_count_60"] == 0.0
    assert out.loc[T0 + 90 * NS_PER_MIN, "sent_count_60"] == 2.0  # in minute 90, public at its close
    assert out.loc[T0 + 90 * NS_PER_MIN, "sent_mean_60"] == pytest.approx(0.2)
    assert out.loc[T0 + 149 * NS_PER_MIN, "sent_count_60"] == 2.0  # the ETH headline is not BTC's
    assert out.loc[T0 + 150 * NS_PER_MIN, "sent_count_60"] == 0.0  # out of the trailing hour
    # 240 minutes of warm-up; then the minute-90 tone 0.4, 160 minutes old, half-life 60.
    assert out.loc[T0 + 250 * NS_PER_MIN, "sent_decay_240"] == pytest.approx(0.4 * 0.5 ** (160 / 60))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.drop(columns=["vwap"]), "lack columns"),
        (lambda b: pd.concat([b, b.iloc[[3]]]), "duplicate bar"),
        (lambda b: b.assign(close=b["close"].where(b.index != 4, -1.0)), "positive"),
        (lambda b: b.assign(ts_ns=b["ts_ns"] + 7), "minute starts"),
    ],
)
def test_bad_bars_are_a_clear_error(mutate, message) -> None:
    with pytest.raises(feat.FeatureInputError, match=message):
        feat.compute_features(mutate(make_bars("binance_spot", "BTC-USDT", 10, 1)))


def test_invalid_after_warmup_reports_a_nan() -> None:
    features = feat.compute_features(make_bars("binance_spot", "BTC-USDT", 400, 1), label_horizon=None)
    features.loc[350, "rsi_14"] = np.inf
    assert feat.invalid_after_warmup(features) == {"rsi_14": 1}


def test_parquet_round_trip(tmp_path) -> None:
    import datetime as dt

    features = feat.compute_features(make_bars("binance_spot", "BTC-USDT", 50, 1))
    day = dt.date(2026, 9, 21)
    feat.write_features(features, tmp_path, day)
    back = feat.read_features(tmp_path, [day, day + dt.timedelta(days=1)])
    pd.testing.assert_frame_equal(back, features)
