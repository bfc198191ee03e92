"""Sentiment: finance lexicon, Polygon records, storage, aggregates, the signal test on the simulator."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN, NS_PER_S, parse_rfc3339_ns
from rrr_platform.ml import features as feat
from rrr_platform.ml import sentiment as sent
from rrr_platform.simulator.model import MarketConfig, MarketModel

T0 = parse_rfc3339_ns("2026-10-02T00:00:00Z")


def record(news_id: str, title: str, published: str = "2026-10-02T10:15:00Z", **extra) -> dict:
    return {"id": news_id, "title": title, "published_utc": published, "tickers": ["X:BTCUSD"],
            "publisher": {"name": "Wire"}, "article_url": f"https://example.invalid/{news_id}", **extra}


@pytest.mark.parametrize(
    ("headline", "sign"),
    [
        ("Acme beats estimates", 1), ("Analysts upgrade Acme", 1), ("Acme shares surge", 1),
        ("Acme misses estimates", -1), ("Analysts downgrade Acme", -1), ("Acme files for bankruptcy", -1),
        ("Acme stock plunges", -1), ("Exchange hacked", -1),
    ],
)
def test_finance_lexicon_scores_market_words(headline: str, sign: int) -> None:
    plain = SentimentIntensityAnalyzer().polarity_scores(headline)["compound"]
    tuned = sent.score_headline(headline)
    assert np.sign(tuned) == sign
    assert abs(tuned) > abs(plain) or np.sign(plain) == sign  # the lexicon adds what VADER lacked


def test_empty_headline_is_neutral() -> None:
    assert sent.score_headline("") == 0.0 and sent.score_headline("   ") == 0.0


def test_news_keys() -> None:
    assert sent.news_key("X:BTCUSD") == "BTC"
    assert sent.news_key("BTC-USDT") == "BTC"
    assert sent.news_key("BTC") == "BTC"
    assert sent.news_key("AAPL") == "AAPL"


def test_parse_polygon_news_keeps_bad_records_with_a_reason() -> None:
    headlines, rejected = sent.parse_polygon_news([
        record("a", "Bitcoin surges"),
        {"id": "b", "published_utc": "2026-10-02T10:00:00Z"},
        record("c", "No time", published="yesterday"),
        "not an object",
    ])
    assert [h.id for h in headlines] == ["a"]
    assert headlines[0].published_ns == parse_rfc3339_ns("2026-10-02T10:15:00Z")
    assert headlines[0].publisher == "Wire" and headlines[0].tickers == ("X:BTCUSD",)
    reasons = [reason for _, reason in rejected]
    assert len(reasons) == 3
    assert "no title" in reasons[0] and "zone" in reasons[1] and "not an object" in reasons[2]


def test_store_score_load_and_dead_letter(pg_conn: psycopg.Connection) -> None:
    start = dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    pg_conn.execute("DELETE FROM market.news WHERE published_at >= %s AND published_at < %s", (start, end))
    pg_conn.execute(
        "INSERT INTO market.news (id, published_at, title, tickers) VALUES "
        "('sent-old', '2026-10-02T08:00:00Z', 'Bitcoin plunges after hack', '{X:BTCUSD}')"
    )
    records = [record("sent-a", "Bitcoin surges to record"), record("sent-a", "Bitcoin surges to record"),
               {"id": "sent-bad"}]
    refresh = sent.refresh_sentiment(pg_conn, start, end, records)
    assert refresh.stored == 2 and refresh.rejected == 1 and refresh.rescored == 1
    assert refresh.news["id"].tolist() == ["sent-old", "sent-a"]  # idempotent upsert: one row for sent-a
    tone = dict(zip(refresh.news["id"], refresh.news["sentiment"], strict=True))
    assert tone["sent-a"] > 0 > tone["sent-old"]
    stored = pg_conn.execute("SELECT count(*) FROM market.news WHERE sentiment IS NULL "
                             "AND published_at >= %s AND published_at < %s", (start, end)).fetchone()
    assert stored == (0,)
    dead = pg_conn.execute("SELECT reason FROM market.dead_letters WHERE venue = 'polygon_news' "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert dead is not None and "no title" in dead[0]
    again = sent.refresh_sentiment(pg_conn, start, end, records)
    assert len(again.news) == 2 and again.rescored == 0


def test_aggregates_by_hand() -> None:
    news = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "published_ns": [T0 + 10 * NS_PER_MIN, T0 + 50 * NS_PER_MIN, T0 + 70 * NS_PER_MIN, T0 + 5 * NS_PER_S],
        "title": "x",
        "tickers": [["X:BTCUSD", "X:BTCEUR"], ["BTC"], ["X:BTCUSD", "X:ETHUSD"], ["AAPL"]],
        "sentiment": [0.6, -0.2, 0.4, 0.9],
    })
    agg = sent.aggregate_sentiment(news, bucket_minutes=60, half_life_minutes=60.0).set_index(
        ["key", "bucket_start_ns"])
    btc0 = agg.loc[("BTC", T0)]
    assert btc0["count"] == 2  # "a" tags BTC twice (two quotes) but is one BTC headline
    assert btc0["mean_tone"] == pytest.approx(0.2)
    assert btc0["decayed_score"] == pytest.approx(0.6 * 0.5 ** (50 / 60) - 0.2 * 0.5 ** (10 / 60))
    btc1 = agg.loc[("BTC", T0 + 60 * NS_PER_MIN)]
    assert btc1["count"] == 1 and btc1["mean_tone"] == pytest.approx(0.4)
    assert btc1["decayed_score"] == pytest.approx(
        0.6 * 0.5 ** (110 / 60) - 0.2 * 0.5 ** (70 / 60) + 0.4 * 0.5 ** (50 / 60))
    assert agg.loc[("ETH", T0 + 60 * NS_PER_MIN), "count"] == 1
    assert agg.loc[("AAPL", T0), "mean_tone"] == pytest.approx(0.9)
    assert sent.aggregate_sentiment(news.iloc[:0]).empty


def _simulated(signal: str, seed: int, days: int, horizon: int) -> pd.DataFrame:
    model = MarketModel(MarketConfig(seed=seed, signal=signal, signal_strength=0.3, n_crypto=4, n_equities=0))
    start = model.config.start_ns
    end = start + days * NS_PER_DAY
    frames = []
    for inst in model.instruments("binance_spot"):
        bars = model.bars_1m(inst.venue, inst.symbol, start, end)
        px, qty = 10.0 ** -inst.price_decimals, 10.0 ** -inst.size_decimals
        frames.append(pd.DataFrame({
            "ts_ns": bars.ts_ns, "venue": inst.venue, "symbol": inst.symbol, "open": bars.open * px,
            "high": bars.high * px, "low": bars.low * px, "close": bars.close * px,
            "volume": bars.volume * qty, "vwap": bars.close * px, "trade_count": bars.trade_count,
            "buy_volume": bars.buy_volume * qty,
        }))
    items = model.news(start, end)
    # Scored from the headline text only: the planted tone is never shown to the scorer.
    news = pd.DataFrame({"id": [n.id for n in items], "published_ns": [n.published_ns for n in items],
                         "title": [n.title for n in items], "tickers": [list(n.tickers) for n in items]})
    news["sentiment"] = sent.score_headlines(news["title"])
    return feat.compute_features(pd.concat(frames, ignore_index=True), news, horizon)


ALPHA = 0.01


def test_sentiment_predicts_returns_on_the_planted_news_market_only() -> None:
    """Same seed, same test, declared level: reject independence on "news", not on "none"."""
    horizon = 30
    planted = sent.sentiment_return_association(_simulated("news", 1, 5, horizon), "sent_mean_60",
                                                stride=horizon)
    assert planted.p_value < ALPHA and planted.rho > 0, planted
    null = sent.sentiment_return_association(_simulated("none", 1, 5, horizon), "sent_mean_60",
                                             stride=horizon)
    assert null.p_value >= ALPHA, null
    assert planted.observations > 300 and null.observations > 300
