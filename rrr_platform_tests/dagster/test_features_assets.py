"""materialize() of news_sentiment, features and risk_report on a small real PostgreSQL database."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from collections.abc import Iterator

import dagster as dg
import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest

from rrr_platform.defs import features as feature_defs
from rrr_platform.defs.partitions import daily_partitions
from rrr_platform.defs.resources import PostgresResource
from rrr_platform.market.timeutil import NS_PER_MIN, ns_to_datetime
from rrr_platform.ml import features as feat
from rrr_platform.storage.partitions import ensure_partitions

DAY = dt.date(2026, 10, 6)
POSITIVE, NEGATIVE = "Bitcoin surges after ETF approval", "Exchange hacked, bitcoin plunges"
INSTRUMENTS = (("binance_spot", "BTC-USDT", 1), ("coinbase_exchange", "BTC-USD", 2))


BARS_SPEC = dg.AssetSpec("bars_1m", partitions_def=daily_partitions)  # the storage helper's asset


def _bars(day_start: dt.datetime, minutes: int, venue: str, symbol: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    common = np.random.default_rng(99).normal(0, 8e-4, minutes)  # shared BTC moves across venues
    close = 60_000 * np.exp(np.cumsum(common + rng.normal(0, 2e-4, minutes)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 3e-4, minutes))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 3e-4, minutes))
    volume = rng.uniform(0.5, 5.0, minutes)
    return pd.DataFrame({
        "ts": pd.date_range(day_start, periods=minutes, freq="1min", tz="UTC"),
        "venue": venue, "symbol": symbol, "open": open_.round(2), "high": high.round(2),
        "low": low.round(2), "close": close.round(2), "volume": volume.round(6),
        "vwap": ((high + low + close) / 3).round(4), "trade_count": rng.integers(1, 40, minutes),
        "buy_volume": (volume * rng.uniform(0, 1, minutes)).round(6),
    })


def _load(conn: psycopg.Connection, frame: pd.DataFrame) -> None:
    columns = list(frame.columns)
    with conn.cursor() as cur, cur.copy(
        f"COPY market.bars_1m ({', '.join(columns)}) FROM STDIN"
    ) as copy:
        for row in frame.itertuples(index=False):
            copy.write_row([str(v) if isinstance(v, float) else v for v in row])


@pytest.fixture
def market_db(fresh_pg_url: str) -> str:
    start = dt.datetime.combine(DAY - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        ensure_partitions(conn, "bars_1m", [DAY - dt.timedelta(days=1), DAY, DAY + dt.timedelta(days=1)])
        for venue, symbol, seed in INSTRUMENTS:
            _load(conn, _bars(start, 2 * 1440 + 30, venue, symbol, seed))
        news_times = [start + dt.timedelta(minutes=int(m)) for m in np.linspace(30, 2 * 1440 - 30, 40)]
        conn.cursor().executemany(
            "INSERT INTO market.news (id, published_at, title, tickers) VALUES (%s, %s, %s, %s)",
            [(f"n{i}", t, POSITIVE if i % 2 else NEGATIVE, ["X:BTCUSD"]) for i, t in enumerate(news_times)],
        )
    return fresh_pg_url


def _materialize(assets: list, market_db: str, partition: str, run_config: dict | None = None):
    return dg.materialize(
        [*assets, BARS_SPEC],
        partition_key=partition,
        resources={"postgres": PostgresResource(url=market_db)},
        run_config=run_config,
        raise_on_error=True,
    )


def test_features_and_sentiment_materialize(market_db: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    key = DAY.isoformat()
    sentiment = _materialize([feature_defs.news_sentiment], market_db, key,
                             {"ops": {"news_sentiment": {"config": {"fetch": False}}}})
    assert sentiment.success
    meta = sentiment.asset_materializations_for_node("news_sentiment")[0].metadata
    assert meta["headlines"].value == 20  # the 20 headlines published on DAY
    assert meta["rescored"].value == 20  # stored unscored, scored by the asset
    with psycopg.connect(market_db) as conn:
        tones = dict(conn.execute("SELECT title, sentiment FROM market.news WHERE sentiment IS NOT NULL"))
    assert tones[POSITIVE] > 0 > tones[NEGATIVE]

    result = _materialize([feature_defs.features], market_db, key)
    assert result.success
    meta = result.asset_materializations_for_node("features")[0].metadata
    assert meta["rows"].value == 2 * 1440
    assert meta["symbols"].value == 2
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"no_lookahead", "no_invalid_after_warmup", "complete_minutes", "label_balance"}
    assert all(c.passed for c in checks.values()), {n: c.metadata for n, c in checks.items()}

    frame = pd.read_parquet(feat.features_path(tmp_path / "features", DAY))
    assert len(frame) == 2 * 1440
    assert frame["ts"].min() == pd.Timestamp(DAY, tz="UTC")
    # Warm-up came from the previous day: even the day's first minute has every feature.
    assert frame[feat.FEATURE_COLUMNS].notna().all().all()
    assert frame["fwd_ret"].notna().all()  # labels for the last minutes come from the next day's bars
    assert (frame["sent_count_60"] > 0).any()
    assert (frame["cross_venue_spread"] != 0).all()

    # Live scoring from the database agrees with the stored batch features to the last digit.
    with psycopg.connect(market_db) as conn:
        for minute in (3, 700, 1439):
            t = feat.day_bounds_ns(DAY)[0] + minute * NS_PER_MIN
            live = feat.live_features_at(conn, t)
            stored = frame[frame["ts_ns"] == t].sort_values(["venue", "symbol"]).reset_index(drop=True)
            assert live[["venue", "symbol"]].equals(stored[["venue", "symbol"]])
            columns = feat.FEATURE_COLUMNS
            assert np.array_equal(live[columns].to_numpy(), stored[columns].to_numpy())


def test_features_of_a_day_without_bars_fail_completeness(fresh_pg_url: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    result = _materialize([feature_defs.features], fresh_pg_url, DAY.isoformat())
    assert result.asset_materializations_for_node("features")[0].metadata["rows"].value == 0
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["complete_minutes"].passed and not checks["label_balance"].passed
    assert checks["complete_minutes"].metadata["missing_minutes"].value == {"*": 1440}


@pytest.fixture
def polygon_news_server() -> Iterator[str]:
    """The simulator's Polygon REST routes (news from the planted-news market) on an ephemeral port."""
    from aiohttp import web

    from rrr_platform.simulator.feed import MarketFeed
    from rrr_platform.simulator.model import MarketConfig, MarketModel
    from rrr_platform.simulator.polygon import add_routes

    loop = asyncio.new_event_loop()
    app = web.Application()
    add_routes(app, MarketFeed(MarketModel(MarketConfig(seed=3, signal="news", n_crypto=2, n_equities=1))),
               api_key="simulator")
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/polygon"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_news_sentiment_fetches_from_the_polygon_endpoint(
    fresh_pg_url: str, polygon_news_server: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    config = {"ops": {"news_sentiment": {"config": {"polygon_rest_url": polygon_news_server}}}}
    result = _materialize([feature_defs.news_sentiment], fresh_pg_url, DAY.isoformat(), config)
    meta = result.asset_materializations_for_node("news_sentiment")[0].metadata
    assert meta["fetch_error"].value == ""
    fetched = meta["fetched_stored"].value
    assert fetched > 0 and meta["headlines"].value == fetched
    with psycopg.connect(fresh_pg_url) as conn:
        rows = conn.execute("SELECT published_at, sentiment, tickers FROM market.news").fetchall()
    start = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC)
    assert len(rows) == fetched
    assert all(start <= r[0] < start + dt.timedelta(days=1) and r[1] is not None for r in rows)
    assert {t for r in rows for t in r[2]} & {"X:BTCUSD", "X:ETHUSD"}
    aggregates = pd.read_parquet(tmp_path / "sentiment" / f"date={DAY.isoformat()}" / "sentiment.parquet")
    assert aggregates["count"].sum() >= fetched  # a headline tagging two assets counts for each
    again = _materialize([feature_defs.news_sentiment], fresh_pg_url, DAY.isoformat(), config)
    assert again.asset_materializations_for_node("news_sentiment")[0].metadata["headlines"].value == fetched


def test_news_sentiment_survives_an_unreachable_endpoint(fresh_pg_url: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    config = {"ops": {"news_sentiment": {"config": {"polygon_rest_url": f"http://127.0.0.1:{closed}/polygon"}}}}
    result = _materialize([feature_defs.news_sentiment], fresh_pg_url, DAY.isoformat(), config)
    meta = result.asset_materializations_for_node("news_sentiment")[0].metadata
    assert meta["fetch_error"].value and meta["headlines"].value == 0


def test_features_check_reports_missing_minutes(market_db: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    with psycopg.connect(market_db, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM market.bars_1m WHERE venue = 'binance_spot' AND ts >= %s AND ts < %s",
            (ns_to_datetime(feat.day_bounds_ns(DAY)[0] + 600 * NS_PER_MIN),
             ns_to_datetime(feat.day_bounds_ns(DAY)[0] + 605 * NS_PER_MIN)),
        )
    result = _materialize([feature_defs.features], market_db, DAY.isoformat(),
                          {"ops": {"features": {"config": {"lookahead_samples": 2}}}})
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["complete_minutes"].passed
    assert checks["complete_minutes"].metadata["missing_minutes"].value == {"binance_spot:BTC-USDT": 5}
    assert checks["no_lookahead"].passed and checks["no_invalid_after_warmup"].passed


def test_risk_report_materializes(market_db: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    result = _materialize([feature_defs.risk_report], market_db, DAY.isoformat(),
                          {"ops": {"risk_report": {"config": {"lookback_days": 2}}}})
    meta = result.asset_materializations_for_node("risk_report")[0].metadata
    assert meta["instruments"].value == 2
    backtests = meta["backtests"].value
    assert {"binance_spot:BTC-USDT/garch/99%", "portfolio/fhs/95%"} <= set(backtests)
    assert all(0 <= b["kupiec_p"] <= 1 and 0 <= b["christoffersen_p"] <= 1 for b in backtests.values())
    assert "| portfolio | garch |" in meta["var_es_bps"].value
    report = orjson.loads((tmp_path / "risk" / f"date={DAY.isoformat()}" / "risk.json").read_bytes())
    assert report["portfolio"]["observations"] == 2 * 1440 - 1


def test_definitions_pieces_resolve() -> None:
    defs = dg.Definitions(
        assets=[*feature_defs.ASSETS, BARS_SPEC],
        jobs=feature_defs.JOBS, schedules=feature_defs.SCHEDULES,
        resources={"postgres": PostgresResource(url="postgresql://unused@127.0.0.1/none")},
    )
    defs.resolve_all_job_defs()
    repository = defs.get_repository_def()
    # A day's features depend on that day's bars and the previous day's (warm-up).
    mapping = feature_defs.features.get_partition_mapping(dg.AssetKey("bars_1m"))
    assert mapping == dg.TimeWindowPartitionMapping(start_offset=-1)

    def first_partition(name: str, hour: int, minute: int) -> str | None:
        at = dt.datetime(2026, 10, 7, hour, minute, tzinfo=dt.UTC)
        context = dg.build_schedule_context(scheduled_execution_time=at, repository_def=repository)
        return defs.resolve_schedule_def(name).evaluate_tick(context).run_requests[0].partition_key

    # 00:05 still gathers the news of the day that just ended; 13:05 today's.
    assert first_partition("news_sentiment_hourly", 0, 5) == "2026-10-06"
    assert first_partition("news_sentiment_hourly", 13, 5) == "2026-10-07"
    # Features and risk run after the day closes, on the day that closed.
    assert first_partition("features_job_schedule", 0, 30) == "2026-10-06"
    assert first_partition("risk_report_job_schedule", 0, 45) == "2026-10-06"
