"""The model assets end to end on real PostgreSQL, Redis and MLflow: train, gate, score, drift."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from rrr_platform.defs import models
from rrr_platform.defs.resources import MlflowResource, PostgresResource, RedisResource
from rrr_platform.market.timeutil import NS_PER_DAY
from rrr_platform.ml.dataset import simulator_bars, store_bars
from rrr_platform.ml.registry import DIRECTION_MODEL, VOLATILITY_MODEL
from rrr_platform.simulator.model import DEFAULT_START_NS

SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
DAYS = 1


@pytest.fixture
def resources(
    tmp_path: Path,
    fresh_pg_url: str,
    redis_url: str,
    redis_prefix: str,
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, dg.ConfigurableResource]:
    monkeypatch.setenv("RRR_HOME", str(tmp_path / "home"))
    bars = simulator_bars(
        SYMBOLS, DEFAULT_START_NS, DEFAULT_START_NS + DAYS * NS_PER_DAY, signal="flow", signal_strength=0.3
    )
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        store_bars(conn, bars)
    return {
        "postgres": PostgresResource(url=fresh_pg_url),
        "redis": RedisResource(url=redis_url, prefix=redis_prefix),
        "mlflow": MlflowResource(tracking_uri=mlflow_uri, artifact_root=str(tmp_path / "artifacts")),
    }


def test_train_promote_and_score(resources, fresh_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    end = (dt.datetime.fromtimestamp(DEFAULT_START_NS / 1e9, dt.UTC) + dt.timedelta(days=DAYS)).date()
    result = dg.materialize(
        models.ASSETS,
        resources=resources,
        run_config={
            "ops": {
                "training_set": {"config": {"days": DAYS, "end_date": end.isoformat(), "horizon": 1}},
                "direction_model": {"config": {"n_splits": 3, "nthread": 1}},
                "volatility_model": {"config": {"n_splits": 3, "nthread": 1, "num_boost_round": 60}},
            }
        },
        selection=[a.key for a in models.ASSETS],
    )
    assert result.success
    champion = result.asset_materializations_for_node("champion")[0].metadata
    assert champion[f"{DIRECTION_MODEL}_promoted"].value is True
    assert champion[f"{DIRECTION_MODEL}_champion"].value == "1"
    assert f"{VOLATILITY_MODEL}_promoted" in champion
    with psycopg.connect(fresh_pg_url) as conn:
        rows = conn.execute(
            "SELECT symbol, model, version, tier, value FROM ml.predictions ORDER BY symbol"
        ).fetchall()
        moves = conn.execute(
            "SELECT model, alias, version, moved_by FROM ml.alias_history ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == sorted(SYMBOLS)
    assert all(r[1:4] == (DIRECTION_MODEL, "1", "champion") and 0 < r[4] < 1 for r in rows)
    assert (DIRECTION_MODEL, "champion", "1") in [m[:3] for m in moves]
    assert all(m[3].startswith("dagster:") for m in moves)
    # the run's tags say why it ran and which code trained it
    registry = resources["mlflow"].registry()
    tags = registry.version_tags(DIRECTION_MODEL, "1")
    assert tags["dagster_run_id"] == result.run_id
    assert tags["features"].split(",")[0] == "ret_1"

    # drift sensor: the same market -> no retraining; an absurdly low threshold -> a run with its reason
    with dg.build_sensor_context(resources=resources) as context:
        skipped = models.feature_drift_sensor(context)
    assert isinstance(skipped, dg.SkipReason)
    assert "no drift" in skipped.skip_message
    monkeypatch.setenv("RRR_DRIFT_PSI_THRESHOLD", "0.000001")
    with dg.build_sensor_context(resources=resources) as context:
        requested = models.feature_drift_sensor(context)
    run = requested.run_requests[0]
    assert run.tags[models.RETRAIN_REASON_TAG].startswith(
        f"{DIRECTION_MODEL} v1 vs last 1440 min: feature drift"
    )


def test_schedule_is_weekly_by_default_and_tagged() -> None:
    assert models.retrain_schedule.cron_schedule == models.DEFAULT_RETRAIN_CRON
    assert models.retrain_schedule.tags[models.RETRAIN_REASON_TAG].startswith("schedule")
