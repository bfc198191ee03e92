"""News sentiment: VADER tuned with a finance lexicon, per headline, aggregated per symbol and time.

VADER's general-purpose lexicon misses market words ("beats", "downgrade", "plunge") or scores them
as everyday language; ``FINANCE_LEXICON`` adds or overrides them (valence on VADER's -4..+4 scale).
Headlines come as Polygon-format news records (``/v2/reference/news``); tickers map to the platform's
symbols through their *news key*: the base asset for crypto (``X:BTCUSD`` and ``BTC-USDT`` both key
``BTC``), the ticker itself for equities, so one headline reaches the same asset on every venue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg
from scipy import stats

from rrr_platform.market.symbols import UnknownSymbol, canonical_from_polygon_rest
from rrr_platform.market.timeutil import NS_PER_MIN, datetime_to_ns, parse_rfc3339_ns

if TYPE_CHECKING:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

FINANCE_LEXICON: dict[str, float] = {
    # positive
    "beat": 2.0,
    "beats": 2.0,
    "upgrade": 2.2,
    "upgrades": 2.2,
    "upgraded": 2.2,
    "outperform": 2.0,
    "outperforms": 2.0,
    "surge": 2.5,
    "surges": 2.5,
    "surged": 2.5,
    "soar": 2.7,
    "soars": 2.7,
    "soared": 2.7,
    "rally": 2.2,
    "rallies": 2.2,
    "rallied": 2.2,
    "jump": 1.8,
    "jumps": 1.8,
    "jumped": 1.8,
    "climb": 1.5,
    "climbs": 1.5,
    "bullish": 2.5,
    "record": 1.2,
    "approval": 1.8,
    "approves": 1.8,
    "approved": 1.8,
    "inflows": 1.5,
    "buyback": 1.5,
    "dividend": 1.0,
    "profit": 1.8,
    "profits": 1.8,
    "breakout": 1.8,
    "adoption": 1.5,
    "partnership": 1.3,
    "rebound": 1.6,
    "rebounds": 1.6,
    "recovers": 1.4,
    "tops": 1.2,
    "raises": 1.0,
    "boost": 1.6,
    "boosts": 1.6,
    "expands": 1.0,
    "growth": 1.5,
    "all-time": 1.0,
    # negative
    "miss": -2.0,
    "misses": -2.0,
    "missed": -2.0,
    "downgrade": -2.2,
    "downgrades": -2.2,
    "downgraded": -2.2,
    "underperform": -2.0,
    "bankruptcy": -3.5,
    "bankrupt": -3.5,
    "insolvency": -3.2,
    "insolvent": -3.2,
    "default": -2.5,
    "defaults": -2.5,
    "plunge": -2.7,
    "plunges": -2.7,
    "plunged": -2.7,
    "tumble": -2.3,
    "tumbles": -2.3,
    "tumbled": -2.3,
    "slump": -2.2,
    "slumps": -2.2,
    "sink": -1.8,
    "sinks": -1.8,
    "slides": -1.6,
    "drop": -1.5,
    "drops": -1.5,
    "dropped": -1.5,
    "falls": -1.4,
    "fell": -1.4,
    "bearish": -2.5,
    "crash": -3.0,
    "crashes": -3.0,
    "selloff": -2.4,
    "sell-off": -2.4,
    "hack": -2.8,
    "hacked": -2.8,
    "exploit": -2.5,
    "breach": -2.3,
    "lawsuit": -2.0,
    "sues": -1.8,
    "sued": -1.8,
    "probe": -1.6,
    "investigation": -1.6,
    "fraud": -3.2,
    "delisting": -2.5,
    "delisted": -2.5,
    "outflows": -1.5,
    "liquidations": -1.8,
    "liquidated": -1.8,
    "layoffs": -2.0,
    "recall": -1.6,
    "warning": -1.5,
    "cuts": -1.2,
    "halts": -1.8,
    "halted": -1.8,
    "fine": -1.5,
    "fined": -1.8,
    "ban": -2.0,
    "bans": -2.0,
    "loss": -1.8,
    "losses": -1.8,
    "volatile": -0.8,
}


@lru_cache(maxsize=1)
def finance_analyzer() -> SentimentIntensityAnalyzer:
    """One VADER analyzer with the finance lexicon applied (building one reads a 7,500-word file)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # deferred: loads its lexicon

    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon.update(FINANCE_LEXICON)
    return analyzer


def score_headline(text: str) -> float:
    """VADER compound score in [-1, 1] of one headline (0 for empty text)."""
    if not text or not text.strip():
        return 0.0
    return float(finance_analyzer().polarity_scores(text)["compound"])


def score_headlines(texts: Iterable[str]) -> np.ndarray:
    return np.fromiter((score_headline(t) for t in texts), dtype=np.float64)


# ------------------------------------------------------------------------------------ news records


class NewsRecordError(ValueError):
    """A news record lacks what a headline needs (id, time, title); the message says which."""


@dataclass(frozen=True)
class Headline:
    id: str
    published_ns: int
    title: str
    description: str | None
    publisher: str | None
    url: str | None
    tickers: tuple[str, ...]
    sentiment: float | None = None


def news_key(symbol_or_ticker: str) -> str:
    """``BTC-USDT`` / ``X:BTCUSD`` -> ``BTC``; an equity ticker is its own key."""
    text = symbol_or_ticker
    if text.startswith("X:"):
        try:
            text = canonical_from_polygon_rest(text)
        except UnknownSymbol:
            return text[2:].upper()
    return text.split("-", 1)[0].upper()


def parse_polygon_news(records: Iterable[Mapping[str, Any]]) -> tuple[list[Headline], list[tuple[Any, str]]]:
    """Polygon ``results`` records -> (headlines, rejected as (record, reason)). Never raises per record."""
    headlines: list[Headline] = []
    rejected: list[tuple[Any, str]] = []
    for record in records:
        try:
            headlines.append(_parse_one(record))
        except (NewsRecordError, ValueError, TypeError, AttributeError) as exc:
            rejected.append((record, str(exc)))
    return headlines, rejected


def _parse_one(record: Mapping[str, Any]) -> Headline:
    if not isinstance(record, Mapping):
        raise NewsRecordError(f"news record is not an object: {type(record).__name__}")
    news_id = record.get("id")
    title = record.get("title")
    published = record.get("published_utc")
    if not news_id:
        raise NewsRecordError("news record without id")
    if not title or not isinstance(title, str):
        raise NewsRecordError(f"news {news_id}: no title")
    if not published or not isinstance(published, str):
        raise NewsRecordError(f"news {news_id}: no published_utc")
    publisher = record.get("publisher")
    tickers = record.get("tickers") or []
    if not isinstance(tickers, list):
        raise NewsRecordError(f"news {news_id}: tickers is not a list")
    return Headline(
        id=str(news_id),
        published_ns=parse_rfc3339_ns(published),
        title=title,
        description=record.get("description"),
        publisher=publisher.get("name") if isinstance(publisher, Mapping) else publisher,
        url=record.get("article_url"),
        tickers=tuple(str(t) for t in tickers),
    )


def scored(headlines: Sequence[Headline]) -> list[Headline]:
    return [
        Headline(
            h.id,
            h.published_ns,
            h.title,
            h.description,
            h.publisher,
            h.url,
            h.tickers,
            score_headline(h.title),
        )
        for h in headlines
    ]


def store_news(conn: psycopg.Connection, headlines: Sequence[Headline]) -> int:
    """Upsert headlines into ``market.news`` (idempotent on id; a re-score updates the sentiment)."""
    if not headlines:
        return 0
    rows = [
        (
            h.id,
            pd.Timestamp(h.published_ns, unit="ns", tz="UTC").to_pydatetime(),
            h.title,
            h.description,
            h.publisher,
            h.url,
            list(h.tickers),
            h.sentiment,
        )
        for h in headlines
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO market.news (id, published_at, title, description, publisher, url, tickers, sentiment)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET sentiment = EXCLUDED.sentiment, title = EXCLUDED.title,
                tickers = EXCLUDED.tickers
            """,
            rows,
        )
    return len(rows)


NEWS_COLUMNS = ["id", "published_ns", "title", "tickers", "sentiment"]


def load_news(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Headlines published in [start, end), with their stored sentiment (scored here where missing)."""
    rows = conn.execute(
        "SELECT id, published_at, title, tickers, sentiment FROM market.news "
        "WHERE published_at >= %s AND published_at < %s ORDER BY published_at, id",
        (start, end),
    ).fetchall()
    frame = pd.DataFrame(
        [(r[0], datetime_to_ns(r[1]), r[2], list(r[3]), r[4]) for r in rows], columns=NEWS_COLUMNS
    )
    if len(frame):
        missing = frame["sentiment"].isna()
        if missing.any():
            frame.loc[missing, "sentiment"] = score_headlines(frame.loc[missing, "title"])
        frame["sentiment"] = frame["sentiment"].astype(np.float64)
    return frame


def headlines_frame(headlines: Sequence[Headline]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (
                h.id,
                h.published_ns,
                h.title,
                list(h.tickers),
                h.sentiment if h.sentiment is not None else score_headline(h.title),
            )
            for h in headlines
        ],
        columns=NEWS_COLUMNS,
    )


# -------------------------------------------------------------------------------------- aggregates


def explode_by_key(news: pd.DataFrame) -> pd.DataFrame:
    """One row per (headline, news key): a headline tagging BTC and ETH counts for both."""
    if news.empty:
        return pd.DataFrame(
            {
                "key": pd.Series(dtype=str),
                "published_ns": pd.Series(dtype=np.int64),
                "sentiment": pd.Series(dtype=np.float64),
            }
        )
    exploded = (
        news[["published_ns", "tickers", "sentiment"]]
        .reset_index(drop=True)
        .rename_axis("row")
        .explode("tickers")
        .dropna(subset=["tickers"])
        .reset_index()
    )
    exploded["key"] = [news_key(t) for t in exploded["tickers"]]
    # A headline tagging X:BTCUSD and X:BTCEUR is one BTC headline, not two.
    exploded = exploded.drop_duplicates(["row", "key"])
    return exploded[["key", "published_ns", "sentiment"]].astype({"published_ns": np.int64})


def aggregate_sentiment(
    news: pd.DataFrame, bucket_minutes: int = 60, half_life_minutes: float = 60.0
) -> pd.DataFrame:
    """Per news key and time bucket: headline count, mean tone, and a time-decayed score.

    The decayed score at the end of a bucket sums every earlier-or-same-bucket headline's tone times
    ``0.5 ** (age / half_life)``, age measured from publication to the bucket's end: only headlines
    published before the bucket closes contribute.
    """
    exploded = explode_by_key(news)
    columns = ["key", "bucket_start_ns", "count", "mean_tone", "decayed_score"]
    if exploded.empty:
        return pd.DataFrame(columns=columns)
    bucket_ns = bucket_minutes * NS_PER_MIN
    exploded["bucket_start_ns"] = exploded["published_ns"] // bucket_ns * bucket_ns
    grouped = exploded.groupby(["key", "bucket_start_ns"], sort=True)["sentiment"].agg(["count", "mean"])
    grouped = grouped.rename(columns={"mean": "mean_tone"}).reset_index()
    decayed = []
    for key, bucket_start in zip(grouped["key"], grouped["bucket_start_ns"], strict=True):
        mine = exploded[(exploded["key"] == key) & (exploded["published_ns"] < bucket_start + bucket_ns)]
        age_min = (bucket_start + bucket_ns - mine["published_ns"].to_numpy()) / NS_PER_MIN
        decayed.append(float(np.sum(mine["sentiment"].to_numpy() * 0.5 ** (age_min / half_life_minutes))))
    grouped["decayed_score"] = decayed
    grouped["count"] = grouped["count"].astype(np.int64)
    return grouped[columns]


def minute_sentiment(
    exploded: pd.DataFrame, key: str, minute_ns: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per minute of the grid ``minute_ns`` (minute starts): (sum of tones, headline count) for ``key``.

    ``exploded``: ``explode_by_key(news)``. A headline counts in the minute it was published in: by
    that bar's close it is public.
    """
    sums = np.zeros(len(minute_ns))
    counts = np.zeros(len(minute_ns))
    if exploded.empty or len(minute_ns) == 0:
        return sums, counts
    mine = exploded[exploded["key"] == key]
    if mine.empty:
        return sums, counts
    minute = mine["published_ns"].to_numpy() // NS_PER_MIN * NS_PER_MIN
    index = np.searchsorted(minute_ns, minute)
    inside = (index < len(minute_ns)) & (minute_ns[np.minimum(index, len(minute_ns) - 1)] == minute)
    np.add.at(sums, index[inside], mine["sentiment"].to_numpy()[inside])
    np.add.at(counts, index[inside], 1.0)
    return sums, counts


# ------------------------------------------------------------------------------- daily refresh


def fetch_news_records(
    start: dt.datetime,
    end: dt.datetime,
    base_url: str | None = None,
    max_attempts: int = 3,
) -> tuple[list[dict[str, Any]] | None, str]:
    """Polygon-format news records published in [start, end), through the venue REST client.

    Returns (records, "") or (None, why not) when the endpoint does not answer after the client's
    bounded retries: the caller then scores what ``market.news`` already holds.
    """
    import asyncio

    from rrr_platform.settings import load_settings
    from rrr_platform.venues.polygon import RestClient

    async def fetch() -> list[dict[str, Any]]:
        async with RestClient(
            base_url, settings=load_settings(), max_attempts=max_attempts, base_wait_s=0.2
        ) as client:
            return await client.news(datetime_to_ns(start), datetime_to_ns(end))

    try:
        return asyncio.run(fetch()), ""
    # Transport errors, a malformed page, or the client's own error once its bounded retries are spent:
    # all mean "no fresh news this time", never a failed asset.
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class SentimentRefresh:
    news: pd.DataFrame  # every headline of the window, scored
    aggregates: pd.DataFrame  # ``aggregate_sentiment`` of ``news``
    stored: int  # records fetched and upserted in this refresh
    rejected: int  # records dead-lettered
    rescored: int  # stored headlines that had no score yet


def dead_letter_news(conn: psycopg.Connection, rejected: Sequence[tuple[Any, str]]) -> int:
    """Keep unusable news records in ``market.dead_letters`` with the reason: nothing is silently lost."""
    if not rejected:
        return 0
    import orjson

    now = dt.datetime.now(dt.UTC)
    rows = []
    for record, reason in rejected:
        try:
            payload = orjson.dumps(record)
        except TypeError:
            payload = repr(record).encode()
        rows.append((now, datetime_to_ns(now), "polygon_news", reason, payload))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO market.dead_letters (received_at, receive_ts_ns, venue, reason, payload) "
            "VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    return len(rows)


def score_unscored(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> int:
    """Score stored headlines of [start, end) that have no sentiment yet (e.g. written by another loader)."""
    rows = conn.execute(
        "SELECT id, title FROM market.news "
        "WHERE sentiment IS NULL AND published_at >= %s AND published_at < %s",
        (start, end),
    ).fetchall()
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE market.news SET sentiment = %s WHERE id = %s",
                [(score_headline(title), news_id) for news_id, title in rows],
            )
    return len(rows)


def refresh_sentiment(
    conn: psycopg.Connection,
    start: dt.datetime,
    end: dt.datetime,
    records: Sequence[Mapping[str, Any]] | None,
    bucket_minutes: int = 60,
) -> SentimentRefresh:
    """Store and score fetched Polygon news records (if any), score what is stored unscored, aggregate."""
    stored = rejected = 0
    if records is not None:
        headlines, bad = parse_polygon_news(records)
        stored = store_news(conn, scored(headlines))
        rejected = dead_letter_news(conn, bad)
    rescored = score_unscored(conn, start, end)
    news = load_news(conn, start, end)
    return SentimentRefresh(news, aggregate_sentiment(news, bucket_minutes), stored, rejected, rescored)


def sentiment_path(root: Path, day: dt.date) -> Path:
    return root / f"date={day.isoformat()}" / "sentiment.parquet"


def write_aggregates(aggregates: pd.DataFrame, root: Path, day: dt.date) -> Path:
    path = sentiment_path(root, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    aggregates.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------- signal statistics


@dataclass(frozen=True)
class Association:
    """Rank correlation of a sentiment feature with forward returns, and how surprising it is."""

    rho: float  # Spearman, over sampled rows with news in the window
    p_value: float  # two-sided, from circular shifts (see ``sentiment_return_association``)
    naive_p_value: float  # scipy's, which assumes independent rows: reported, not relied on
    observations: int
    shifts: int


def _sampled_pairs(
    series: list[tuple[np.ndarray, np.ndarray]], shift: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for sentiment, returns in series:
        rows = np.arange(0, len(returns), stride)
        x = np.roll(sentiment, shift)[rows] if shift else sentiment[rows]
        y = returns[rows]
        keep = np.isfinite(x) & np.isfinite(y) & (x != 0.0)
        xs.append(x[keep])
        ys.append(y[keep])
    return np.concatenate(xs), np.concatenate(ys)


def sentiment_return_association(
    features: pd.DataFrame,
    sentiment_column: str = "sent_mean_60",
    return_column: str = "fwd_ret",
    stride: int = 30,
    min_shift: int = 480,
    n_shifts: int = 199,
) -> Association:
    """Does a sentiment feature predict the forward return? Spearman rho with a shift-permutation p-value.

    Rows are sampled every ``stride`` minutes (the label horizon: forward returns do not overlap), and
    rows without news in the window (feature exactly 0) are dropped. The naive p-value would be far
    too small here: sentiment aggregates are autocorrelated, returns cluster in volatility, and one
    headline or one market-wide move touches several instruments at once. So the null distribution
    is built by rotating each instrument's sentiment series against its returns by ``n_shifts``
    offsets of at least ``min_shift`` minutes (longer than the feature window plus the horizon), the
    same offset for every instrument: each rotation keeps all of that dependence and breaks only the
    alignment in time. p = (1 + #{|rho_shift| >= |rho|}) / (1 + n_shifts).
    """
    series = []
    for _, group in features.groupby(["venue", "symbol"], sort=True):
        group = group.sort_values("ts_ns")
        series.append(
            (group[sentiment_column].to_numpy(np.float64), group[return_column].to_numpy(np.float64))
        )
    shortest = min((len(r) for _, r in series), default=0)
    if shortest < 2 * min_shift + n_shifts:
        raise ValueError(f"series of {shortest} minutes too short for shifts of at least {min_shift}")
    x, y = _sampled_pairs(series, 0, stride)
    if len(x) < 10:
        raise ValueError(f"too few sampled rows with news to test ({len(x)})")
    observed = stats.spearmanr(x, y)
    rho = float(observed.statistic)
    offsets = np.linspace(min_shift, shortest - min_shift, n_shifts).round().astype(int)
    exceed = 0
    for offset in offsets:
        sx, sy = _sampled_pairs(series, int(offset), stride)
        if abs(float(stats.spearmanr(sx, sy).statistic)) >= abs(rho):
            exceed += 1
    return Association(rho, (1 + exceed) / (1 + len(offsets)), float(observed.pvalue), len(x), len(offsets))
