"""The Dagster layer of streaming ingest: the job against the simulator, and the supervisor sensor."""

from __future__ import annotations

import time

import dagster as dg
import orjson
import psycopg
import pytest
import redis

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.defs.ingest import SHARD_TAG, StreamConfig, build_market_stream_supervisor, market_stream
from rrr_platform.defs.resources import MlflowResource, PostgresResource, RedisResource
from rrr_platform.simulator.model import MarketConfig
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch):
    sim = SimulatorServer(
        SimulatorConfig(port=0, market=MarketConfig(trade_rate_scale=4.0))
    ).start_in_thread()
    for venue, setting in (("binance", "BINANCE"), ("coinbase", "COINBASE"), ("polygon", "POLYGON")):
        monkeypatch.setenv(f"RRR_{setting}_WS_URL", sim.url(venue))
        monkeypatch.setenv(f"RRR_{setting}_REST_URL", sim.rest_url(venue))
    monkeypatch.setenv("RRR_POLYGON_STOCKS_WS_URL", sim.url("polygon", "stocks"))
    yield sim
    sim.stop_thread()


def test_market_stream_job_stores_trades_and_observes_the_asset(
    simulator, fresh_pg_url, redis_url, redis_prefix, mlflow_uri, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    result = market_stream.execute_in_process(
        run_config=dg.RunConfig(
            ops={
                "run_ingest_engine": StreamConfig(
                    shard="coinbase", duration_s=6, score_live=True, observe_every_s=2
                )
            }
        ),
        resources={
            "postgres": PostgresResource(url=fresh_pg_url),
            "redis": RedisResource(url=redis_url, prefix=f"{redis_prefix}job:"),
            "mlflow": MlflowResource(tracking_uri=mlflow_uri),
        },
    )
    assert result.success
    with psycopg.connect(fresh_pg_url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM market.trades WHERE venue = 'coinbase_exchange'"
        ).fetchone()[0]
    assert stored > 0
    observations = [e for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
    assert len(observations) >= 2
    last = observations[-1].event_specific_data.asset_observation.metadata  # type: ignore[union-attr]
    assert last["stored"].value == stored and last["shard"].value == "coinbase"


def _alive_run(instance: dg.DagsterInstance, shard: str) -> dg.DagsterRun:
    run = instance.create_run_for_job(
        job_def=market_stream,
        tags={SHARD_TAG: shard},
        run_config={"ops": {"run_ingest_engine": {"config": {"shard": shard}}}},
    )
    # Runs are created NOT_STARTED: a start event makes it a live, started run.
    instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
    )
    return instance.get_run_by_id(run.run_id)  # type: ignore[return-value]


def test_supervisor_keeps_one_run_per_shard_and_replaces_a_dead_one(redis_url, redis_prefix) -> None:
    prefix = f"{redis_prefix}sup:"
    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(redis_url)
    sensor = build_market_stream_supervisor(grace_s=0.0, stale_after_s=5.0)
    resources = {"redis": RedisResource(url=redis_url, prefix=prefix)}
    with dg.instance_for_test() as instance:
        # Nothing runs: one run is requested per shard.
        requests = list(sensor(dg.build_sensor_context(instance=instance, resources=resources)) or [])
        assert sorted(r.tags[SHARD_TAG] for r in requests) == ["binance", "coinbase", "polygon"]

        # A run per shard; binance and polygon beat, coinbase's process has died (no heartbeat).
        runs = {shard: _alive_run(instance, shard) for shard in ("binance", "coinbase", "polygon")}
        for shard in ("binance", "polygon"):
            client.set(
                keys.heartbeat(shard), orjson.dumps({"run_id": runs[shard].run_id, "ts_ns": time.time_ns()})
            )
        time.sleep(0.05)
        requests = list(sensor(dg.build_sensor_context(instance=instance, resources=resources)) or [])
        assert [r.tags[SHARD_TAG] for r in requests] == ["coinbase"]
        assert instance.get_run_by_id(runs["coinbase"].run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(runs["binance"].run_id).status == dg.DagsterRunStatus.STARTED

        # A heartbeat left by an older run does not vouch for the current one.
        client.set(
            keys.heartbeat("binance"), orjson.dumps({"run_id": "someone-else", "ts_ns": time.time_ns()})
        )
        requests = list(sensor(dg.build_sensor_context(instance=instance, resources=resources)) or [])
        assert sorted(r.tags[SHARD_TAG] for r in requests) == ["binance", "coinbase"]
    client.close()
