"""Live scoring of closed bars: rolled up, scored through the tier chain, stored and published."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import orjson
import psycopg
import redis

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.ingest.config import FeedConfig
from rrr_platform.ingest.history import backfill_day
from rrr_platform.market.timeutil import NS_PER_MIN, ns_to_datetime
from rrr_platform.market.types import BINANCE
from rrr_platform.ml.live import LiveScorer
from rrr_platform.ml.predictor import PostgresFeatureSource, Predictor
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform_tests.e2e.conftest import simulator_settings

SYMBOLS = ("BTC-USDT", "ETH-USDT")


async def test_closed_minute_is_scored_published_and_a_partial_bar_ignored(
    fresh_pg_url, redis_url, redis_prefix, mlflow_uri, tmp_path
) -> None:
    prefix = f"{redis_prefix}live:"
    async with SimulatorServer(SimulatorConfig(port=0)) as sim:
        settings = simulator_settings(sim, tmp_path, fresh_pg_url, redis_url, prefix)
        today = dt.datetime.now(dt.UTC).date()
        for day in (today - dt.timedelta(days=1), today):  # a full feature window before now
            await backfill_day(settings, fresh_pg_url, [FeedConfig(BINANCE, SYMBOLS)], day)

    boundary = time.time_ns() // NS_PER_MIN * NS_PER_MIN
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        # Only bars up to the closed minute; then a partial bar of the new minute that must not be used.
        conn.execute("DELETE FROM market.bars_1m WHERE ts >= %s", (ns_to_datetime(boundary),))
        conn.execute(
            "INSERT INTO market.bars_1m (ts, venue, symbol, open, high, low, close, volume, trade_count)"
            " VALUES (%s, %s, 'BTC-USDT', 1, 1, 1, 1, 1, 1)",
            (ns_to_datetime(boundary), BINANCE),
        )

    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    keys = RedisKeys(prefix)
    features = PostgresFeatureSource(fresh_pg_url, BINANCE)
    async with Predictor(
        tracking_uri=mlflow_uri,
        postgres_url=fresh_pg_url,
        feature_source=features,
        cache_dir=tmp_path / "models",
    ) as predictor:
        scorer = LiveScorer(predictor, features, fresh_pg_url, redis_url, prefix, SYMBOLS)
        pubsub.subscribe(keys.predictions_channel(predictor.model))
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        predictions = await scorer.score_closed_minute(boundary)
        await scorer.close()

    assert sorted(p.symbol for p in predictions) == sorted(SYMBOLS)
    assert all(p.bar_ts_ns == boundary - NS_PER_MIN for p in predictions)  # the closed bar, not the partial
    assert all(p.tier == "baseline" and 0.0 < p.value < 1.0 for p in predictions)  # no model registered yet
    message = None
    for _ in range(20):
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "message":
            break
        await asyncio.sleep(0.05)
    assert message is not None and message["type"] == "message"
    assert sorted(p["symbol"] for p in orjson.loads(message["data"])) == sorted(SYMBOLS)
    stored = orjson.loads(client.get(keys.prediction(predictions[0].model, "BTC-USDT")))
    assert stored["bar_ts_ns"] == boundary - NS_PER_MIN
    pubsub.close()
    client.close()
