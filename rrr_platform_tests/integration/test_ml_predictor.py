"""The predictor keeps answering, from the right tier, under every injected registry fault."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN
from rrr_platform.ml import promotion
from rrr_platform.ml.dataset import simulator_bars, store_bars, training_frame
from rrr_platform.ml.predictor import PostgresFeatureSource, Predictor
from rrr_platform.ml.registry import DIRECTION_MODEL, Registry
from rrr_platform.ml.train import TrainConfig, train_model
from rrr_platform.simulator.model import DEFAULT_START_NS

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
CONFIG = TrainConfig(horizon=1, n_splits=2, num_boost_round=30, nthread=1)


@pytest.fixture(scope="module")
def trained():
    bars = simulator_bars(
        SYMBOLS, DEFAULT_START_NS, DEFAULT_START_NS + NS_PER_DAY // 2, signal="flow", signal_strength=0.3
    )
    frame, features = training_frame(bars, horizon=1)
    return bars, frame, train_model(frame, features, "direction", CONFIG)


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")  # one gcc build per distinct model, shared by the tests


def _copy_version(registry: Registry, version: str) -> str:
    """A new version of the same logged model (cheap; shares its artifact)."""
    source = registry.client.get_model_version(DIRECTION_MODEL, version)
    copy = registry.client.create_model_version(
        DIRECTION_MODEL, source.source, run_id=source.run_id, tags=source.tags
    )
    return str(copy.version)


@pytest.fixture
def world(tmp_path: Path, fresh_pg_url: str, mlflow_uri: str, trained, compiled_dir: Path):
    """Bars in PostgreSQL; v1 champion, then v2 champion (v1 the previous one); v3 registered only."""
    bars, _, model = trained
    registry = Registry(mlflow_uri, tmp_path / "artifacts")
    v1 = registry.log_training(model, plots=False).version
    versions = [v1, _copy_version(registry, v1), _copy_version(registry, v1)]
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        store_bars(conn, bars)
        metrics = {"best_baseline": {"name": "momentum", "column": "mom", "p_pos": 0.6, "p_neg": 0.4}}
        for version in versions[:2]:
            promotion.move_alias(
                registry,
                conn,
                None,
                "t:",
                DIRECTION_MODEL,
                "champion",
                version,
                "test",
                "test setup",
                metrics,
            )
    return {
        "registry": registry,
        "versions": versions,
        "pg": fresh_pg_url,
        "uri": mlflow_uri,
        "model": model,
        "tmp": tmp_path,
        "compiled": compiled_dir,
    }


def _predictor(
    world, cache: str = "cache", uri: str | None = None, redis_url: str | None = None, prefix: str = "t:"
) -> Predictor:
    return Predictor(
        tracking_uri=uri or world["uri"],
        postgres_url=world["pg"],
        feature_source=PostgresFeatureSource(world["pg"]),
        redis_url=redis_url,
        redis_prefix=prefix,
        cache_dir=world["tmp"] / cache,
        compiled_dir=world["compiled"],
        ttl_s=30,
    )


async def test_champion_answers_and_matches_xgboost(
    world, redis_url: str, redis_prefix: str, redis_client
) -> None:
    _, v2, _ = world["versions"]
    async with _predictor(world, redis_url=redis_url, prefix=redis_prefix) as predictor:
        first = await predictor.predict("BTC-USDT")
        assert first is not None
        assert (first.tier, first.version) == ("champion", v2)
        assert first.bar_ts_ns == DEFAULT_START_NS + NS_PER_DAY // 2 - NS_PER_MIN
        live = predictor.features.latest("BTC-USDT")
        expected = float(world["model"].booster.inplace_predict(live.features.reshape(1, -1))[0])
        assert abs(first.value - expected) <= 1e-6
        assert predictor._tiers[0].fast.backend == "compiled"
        assert [t.name for t in predictor._tiers] == ["champion", "previous", "baseline"]
        # cached: memory, and Redis with a TTL
        assert await predictor.predict("BTC-USDT") is first
        key = predictor.keys.prediction(DIRECTION_MODEL, "BTC-USDT")
        assert 0 < redis_client.pttl(key) <= 30_000
        assert await predictor.predict("NOPE-USDT") is None  # no bars: no prediction, no exception


async def test_corrupt_champion_artifact_falls_to_previous(world) -> None:
    _, v2, _ = world["versions"]
    registry = world["registry"]
    v4 = registry.log_training(world["model"], plots=False).version  # an artifact of its own
    with psycopg.connect(world["pg"], autocommit=True) as conn:
        promotion.move_alias(registry, conn, None, "t:", DIRECTION_MODEL, "champion", v4, "test", "setup", {})
    path = registry.model_file(DIRECTION_MODEL, v4)
    path.write_bytes(b"\x00not a model at all")
    async with _predictor(world) as predictor:
        prediction = await predictor.predict("ETH-USDT")
        assert (prediction.tier, prediction.version) == ("previous", v2)
        assert predictor.stats["fallback.champion.corrupt_artifact"] == 1


async def test_deleted_champion_version_falls_to_previous(world) -> None:
    v1, v2, _ = world["versions"]
    world["registry"].client.delete_model_version(DIRECTION_MODEL, v2)
    async with _predictor(world) as predictor:
        prediction = await predictor.predict("ETH-USDT")
        assert (prediction.tier, prediction.version) == ("previous", v1)
        assert predictor.stats["fallback.champion.missing_version"] == 1


async def test_registry_down(world) -> None:
    v1, _, _ = world["versions"]
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    # a fresh machine: nothing cached locally -> the baseline from the alias history answers
    async with _predictor(world, cache="fresh", uri=down) as predictor:
        prediction = await predictor.predict("BTC-USDT")
        assert (prediction.tier, prediction.version) == ("baseline", "baseline:momentum")
        assert prediction.value in (0.6, 0.4)
        assert predictor.stats["fallback.champion.registry_down"] == 1
        assert predictor.stats["fallback.previous.registry_down"] == 1
    # a machine that served before keeps the previous champion from its model cache
    async with _predictor(world, cache="warm") as predictor:
        assert predictor.tier == "champion"
    async with _predictor(world, cache="warm", uri=down) as predictor:
        prediction = await predictor.predict("BTC-USDT")
        assert (prediction.tier, prediction.version) == ("previous", v1)


async def test_schema_change_falls_to_previous(world) -> None:
    _, v2, v3 = world["versions"]
    # v3's model takes other inputs than today's live features (a renamed feature)
    model = world["model"]
    changed = train_model(
        model.frame.rename(columns={"rsi_14": "rsi_21"}),
        [("rsi_21" if c == "rsi_14" else c) for c in model.feature_columns],
        "direction",
        CONFIG,
    )
    v4 = world["registry"].log_training(changed, plots=False).version
    with psycopg.connect(world["pg"], autocommit=True) as conn:
        promotion.move_alias(
            world["registry"], conn, None, "t:", DIRECTION_MODEL, "champion", v4, "test", "schema change", {}
        )
    async with _predictor(world) as predictor:
        prediction = await predictor.predict("BTC-USDT")
        assert (prediction.tier, prediction.version) == ("previous", v2)
        assert predictor.stats["fallback.champion.signature_mismatch"] == 1
    assert v3 != v4


async def test_reloads_when_the_champion_alias_moves(
    world, redis_url: str, redis_prefix: str, redis_client
) -> None:
    _, v2, v3 = world["versions"]
    async with _predictor(world, redis_url=redis_url, prefix=redis_prefix) as predictor:
        before = await predictor.predict("BTC-USDT")
        assert before.version == v2
        await asyncio.sleep(0.3)  # let the watcher subscribe
        with psycopg.connect(world["pg"], autocommit=True) as conn:
            await asyncio.to_thread(
                promotion.move_alias,
                world["registry"],
                conn,
                redis_client,
                redis_prefix,
                DIRECTION_MODEL,
                "champion",
                v3,
                "test",
                "promoted",
                {},
            )
        for _ in range(100):
            if predictor.version == v3:
                break
            await asyncio.sleep(0.1)
        after = await predictor.predict("BTC-USDT")
        assert (after.tier, after.version) == ("champion", v3)
        assert predictor.stats["alias_moves"] == 1
        assert np.isfinite(after.value)


def test_model_file_path_is_inside_the_artifact_store(world) -> None:
    path = world["registry"].model_file(DIRECTION_MODEL, world["versions"][0])
    assert path.name == "model.ubj" and path.exists()
    assert str(world["tmp"] / "artifacts") in str(path)
    shutil.copy(path, world["tmp"] / "copy.ubj")
