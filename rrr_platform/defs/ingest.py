"""Dagster layer of the streaming ingest: the long-running job, its supervisor sensor, the asset.

`market_stream` runs the ingest engine for one shard until the run is stopped, reporting metrics as
observations of the `market_trades` asset. `market_stream_supervisor` keeps exactly one live run per
shard: it launches a missing one, and replaces one whose process died or hung (its heartbeat key in
Redis went stale) after marking it failed.
"""

import asyncio
import contextlib
import signal
import threading
import time

import dagster as dg
import orjson
import redis as redispy

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.defs.resources import MlflowResource, PostgresResource, RedisResource
from rrr_platform.ingest.config import ShardConfig
from rrr_platform.ingest.engine import IngestEngine
from rrr_platform.ingest.shards import default_shards, shard_by_name
from rrr_platform.settings import Settings, load_settings

SHARD_TAG = "rrr/shard"
MARKET_TRADES = dg.AssetKey("market_trades")
market_trades = dg.AssetSpec(
    MARKET_TRADES,
    description="market.trades in PostgreSQL: every valid trade from the venue streams and REST backfills "
    "(daily partitions, idempotent on venue, symbol, trade_id, ts). Observed by market_stream runs.",
    group_name="market",
    kinds={"postgres"},
)


class StreamConfig(dg.Config):
    shard: str = "binance"
    observe_every_s: float = 30.0
    capture: bool = False
    duration_s: float | None = None  # None: until the run is stopped (demos and tests bound it)
    score_live: bool = False  # score every closed bar of the shard's first feed and publish to Redis


@dg.op(description="Run the ingest engine for one shard until the run is stopped.")
def run_ingest_engine(
    context: dg.OpExecutionContext,
    config: StreamConfig,
    postgres: PostgresResource,
    redis: RedisResource,
    mlflow: MlflowResource,
) -> dg.Nothing:
    settings = load_settings(redis_prefix=redis.prefix)
    shard = shard_by_name(settings, config.shard, capture=config.capture)
    engine = IngestEngine(
        shard, settings, postgres.resolved_url(), redis.resolved_url(), run_id=context.run_id
    )

    async def main() -> dict[str, object]:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            # Run termination arrives as SIGTERM/SIGINT: stop reading and flush, rather than being
            # interrupted mid-batch.
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, engine.stop)
        task = asyncio.create_task(engine.run())
        if config.duration_s is not None:
            loop.call_later(config.duration_s, engine.stop)
        scoring = (
            asyncio.create_task(_score_live(shard, settings, engine, mlflow)) if config.score_live else None
        )
        while not task.done():
            await asyncio.wait({task}, timeout=config.observe_every_s)
            context.log_event(dg.AssetObservation(asset_key=MARKET_TRADES, metadata=_metadata(engine)))
            run = context.instance.get_run_by_id(context.run_id)
            if run is not None and run.status == dg.DagsterRunStatus.CANCELING:
                engine.stop()
        if scoring is not None:
            await scoring
        return task.result()

    final = asyncio.run(main())
    context.log.info(f"ingest stopped: {final['counters']}")
    context.log_event(dg.AssetObservation(asset_key=MARKET_TRADES, metadata=_metadata(engine)))


async def _score_live(
    shard: ShardConfig, settings: Settings, engine: IngestEngine, mlflow: MlflowResource
) -> None:
    """The live scorer beside the engine, on the shard's first feed, until the engine stops."""
    from rrr_platform.ml.live import LiveScorer
    from rrr_platform.ml.predictor import PostgresFeatureSource, Predictor

    feed = shard.feeds[0]
    features = PostgresFeatureSource(engine.postgres_url, feed.venue)
    stop = asyncio.Event()
    async with Predictor(
        tracking_uri=mlflow.resolved_uri(),
        postgres_url=engine.postgres_url,
        feature_source=features,
        redis_url=engine.redis_sink.url,
        redis_prefix=settings.redis_prefix,
        cache_dir=settings.home_dir / "model-cache",
    ) as predictor:
        scorer = LiveScorer(
            predictor,
            features,
            engine.postgres_url,
            engine.redis_sink.url,
            settings.redis_prefix,
            feed.symbols,
        )
        runner = asyncio.create_task(scorer.run(stop))
        await engine.stopped.wait()
        stop.set()
        await runner
        await scorer.close()


def _metadata(engine: IngestEngine) -> dict[str, dg.MetadataValue]:
    snap = engine.metrics.snapshot()
    counters = snap["counters"]
    meta: dict[str, dg.MetadataValue] = {
        f"{name}": dg.MetadataValue.int(int(value))
        for name, value in counters.items()  # type: ignore[union-attr]
    }
    for name, pct in snap["latency_s"].items():  # type: ignore[union-attr]
        for q, seconds in pct.items():
            meta[f"{name}_{q}_ms"] = dg.MetadataValue.float(round(seconds * 1000, 3))
    meta["shard"] = dg.MetadataValue.text(engine.shard.name)
    return meta


@dg.job(
    description="Stream trades and quotes of one shard into PostgreSQL and Redis, until stopped.",
    tags={"rrr/kind": "stream"},
)
def market_stream() -> None:
    run_ingest_engine()


ALIVE = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def _heartbeat(client: redispy.Redis, keys: RedisKeys, shard: str) -> dict[str, object] | None:
    """The shard's last heartbeat (None when expired or never written)."""
    raw = client.get(keys.heartbeat(shard))
    return orjson.loads(raw) if raw is not None else None


def build_market_stream_supervisor(grace_s: float = 60.0, stale_after_s: float = 30.0) -> dg.SensorDefinition:
    """A run that has been up ``grace_s`` with no heartbeat of its own for ``stale_after_s`` is dead
    or hung: it is marked failed and replaced."""

    @dg.sensor(
        name="market_stream_supervisor",
        job=market_stream,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Keeps exactly one market_stream run alive per shard; replaces dead or hung runs.",
    )
    def supervisor(context: dg.SensorEvaluationContext, redis: RedisResource):
        keys = RedisKeys(redis.prefix)
        try:
            client: redispy.Redis | None = redis.client()
            client.ping()
        except redispy.RedisError:
            client = None  # Redis down: heartbeats cannot be judged, so only run status is
        for shard in default_shards(load_settings()):
            runs = context.instance.get_runs(
                filters=dg.RunsFilter(job_name="market_stream", statuses=list(ALIVE), tags={SHARD_TAG: shard})
            )
            beat = _heartbeat(client, keys, shard) if client is not None else None
            live = []
            for run in runs:
                record = context.instance.get_run_record_by_id(run.run_id)
                up_since = (
                    (record.start_time or record.create_timestamp.timestamp()) if record else time.time()
                )
                beat_age = (
                    (time.time_ns() - int(beat["ts_ns"])) / 1e9  # type: ignore[call-overload]
                    if beat is not None and beat.get("run_id") == run.run_id
                    else None
                )
                stale = (
                    client is not None
                    and run.status == dg.DagsterRunStatus.STARTED
                    and time.time() - up_since > grace_s
                    and (beat_age is None or beat_age > stale_after_s)
                )
                if not stale:
                    live.append(run)
                    continue
                context.log.warning(f"shard {shard}: run {run.run_id} has no fresh heartbeat; replacing it")
                context.instance.report_run_failed(run, "no heartbeat from the ingest engine (dead or hung)")
                with contextlib.suppress(Exception):
                    context.instance.run_launcher.terminate(run.run_id)
            for extra in live[1:]:  # exactly one per shard
                context.log.warning(f"shard {shard}: terminating duplicate run {extra.run_id}")
                with contextlib.suppress(Exception):
                    context.instance.run_launcher.terminate(extra.run_id)
            if not live:
                yield dg.RunRequest(
                    run_key=f"{shard}-{time.time_ns()}",
                    run_config=dg.RunConfig(ops={"run_ingest_engine": StreamConfig(shard=shard)}),
                    tags={SHARD_TAG: shard, "rrr/reason": "supervisor: no live run for the shard"},
                )

    return supervisor


market_stream_supervisor = build_market_stream_supervisor()


@dg.asset_check(asset=MARKET_TRADES, description="The newest stored trade is recent (streams are flowing).")
def market_trades_fresh(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        rows = conn.execute(
            "SELECT venue, extract(epoch FROM now() - max(ts)) FROM market.trades"
            " WHERE ts > now() - interval '1 day' GROUP BY venue"
        ).fetchall()
    lag = {venue: float(seconds) for venue, seconds in rows}
    worst = max(lag.values(), default=None)
    return dg.AssetCheckResult(
        passed=worst is not None and worst < 300,
        metadata={
            "lag_seconds_by_venue": dg.MetadataValue.json(lag),
            "worst_lag_seconds": dg.MetadataValue.float(worst if worst is not None else -1.0),
        },
    )


market_checks_job = dg.define_asset_job(
    "market_checks", selection=dg.AssetSelection.checks_for_assets(MARKET_TRADES)
)
market_checks_schedule = dg.ScheduleDefinition(job=market_checks_job, cron_schedule="*/5 * * * *")

ASSETS = [market_trades]
ASSET_CHECKS = [market_trades_fresh]
JOBS = [market_stream, market_checks_job]
SCHEDULES = [market_checks_schedule]
SENSORS = [market_stream_supervisor]
