"""Training on the simulator's markets: the planted signal is promoted, the random walk is not."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import orjson
import psycopg
import pytest
import redis

from rrr_platform.market.timeutil import NS_PER_DAY
from rrr_platform.ml import promotion
from rrr_platform.ml.dataset import simulator_bars, training_frame
from rrr_platform.ml.registry import DIRECTION_MODEL, Registry
from rrr_platform.ml.train import TrainConfig, train_model
from rrr_platform.simulator.model import DEFAULT_START_NS

SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
CONFIG = TrainConfig(horizon=1, n_splits=4, nthread=1)


@functools.cache
def _trained(signal: str, days: float = 2.0, seed: int = 7):
    bars = simulator_bars(
        SYMBOLS,
        DEFAULT_START_NS,
        DEFAULT_START_NS + int(days * NS_PER_DAY),
        signal=signal,
        seed=seed,
        signal_strength=0.3,
    )
    frame, features = training_frame(bars, horizon=CONFIG.horizon)
    return train_model(frame, features, "direction", CONFIG), frame


@pytest.fixture
def pg(fresh_pg_url: str):
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        yield conn


def test_flow_market_is_promoted_and_none_market_is_refused(
    tmp_path: Path, mlflow_uri: str, pg: psycopg.Connection, redis_client: redis.Redis, redis_prefix: str
) -> None:
    registry = Registry(mlflow_uri, tmp_path / "artifacts")
    pubsub = redis_client.pubsub()
    pubsub.subscribe(promotion.alias_channel(redis_prefix, DIRECTION_MODEL))
    pubsub.get_message(timeout=1)  # the subscribe confirmation

    # 1. Planted order-flow signal: beats every baseline out of sample, significantly -> champion.
    flow, flow_frame = _trained("flow")
    overall = flow.evaluation.overall
    for baseline in flow.evaluation.baseline_names:
        assert overall["model"]["log_loss"] < overall[baseline]["log_loss"]
    assert overall["model"]["auc"] > 0.53
    v1 = registry.log_training(flow, dagster_run_id="run-1", code_version="test", training_frame=flow_frame)
    outcome = promotion.run_promotion(registry, pg, redis_client, redis_prefix, flow, v1.version, "test")
    assert outcome.promoted, outcome.reason
    assert registry.alias_version(DIRECTION_MODEL, "champion") == v1.version
    assert registry.alias_version(DIRECTION_MODEL, "challenger") == v1.version
    for test in outcome.metrics["tests"].values():
        assert test["p_value"] < 0.05 and test["mean_diff"] < 0

    # 2. No signal: the challenger is registered and aliased challenger, but the champion stays.
    none, none_frame = _trained("none", seed=11)
    v2 = registry.log_training(none, dagster_run_id="run-2", code_version="test", training_frame=none_frame)
    refused = promotion.run_promotion(registry, pg, redis_client, redis_prefix, none, v2.version, "test")
    assert not refused.promoted
    assert refused.reason.startswith("refused")
    assert registry.alias_version(DIRECTION_MODEL, "champion") == v1.version
    assert registry.alias_version(DIRECTION_MODEL, "challenger") == v2.version
    # it was also judged against the current champion, on the same test rows
    assert f"champion_v{v1.version}" in refused.metrics["tests"]

    history = pg.execute(
        "SELECT alias, version, previous_version, moved_by, reason, metrics FROM ml.alias_history "
        "WHERE model = %s ORDER BY id",
        (DIRECTION_MODEL,),
    ).fetchall()
    assert [(h[0], h[1], h[2]) for h in history] == [
        ("challenger", v1.version, None),
        ("champion", v1.version, None),
        ("challenger", v2.version, v1.version),
    ]
    assert history[1][4].startswith("promoted") and history[2][4].startswith("refused")
    assert history[1][5]["best_baseline"]["name"] in ("prior", "momentum", "last_return")

    published = []
    while (message := pubsub.get_message(timeout=1)) is not None:
        if message["type"] == "message":
            published.append(orjson.loads(message["data"]))
    pubsub.close()
    assert [(m["alias"], m["version"]) for m in published] == [
        ("challenger", v1.version),
        ("champion", v1.version),
        ("challenger", v2.version),
    ]


def test_shuffled_labels_give_no_skill() -> None:
    flow, frame = _trained("flow")
    shuffled = frame.copy()
    rng = np.random.default_rng(3)
    shuffled["y_return"] = rng.permutation(shuffled["y_return"].to_numpy())
    shuffled["y_up"] = (shuffled["y_return"] > 0).astype(float)
    model = train_model(shuffled, flow.feature_columns, "direction", CONFIG)
    overall = model.evaluation.overall
    assert abs(overall["model"]["auc"] - 0.5) < 0.02
    assert abs(overall["model"]["ic"]) < 0.03
    decision = promotion.decide(model.evaluation)
    assert not decision.promote, decision.reason
