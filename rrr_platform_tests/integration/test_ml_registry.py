"""What a training run leaves in MLflow: params, per-fold metrics, tags, plots, the model, its signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
import xgboost as xgb

from rrr_platform.ml import promotion
from rrr_platform.ml.dataset import (
    SYNTHETIC_FEATURES,
    add_labels,
    complete_rows,
    feature_hash,
    synthetic_bars,
    synthetic_features,
)
from rrr_platform.ml.registry import (
    DIRECTION_MODEL,
    VOLATILITY_MODEL,
    Registry,
    RegistryError,
    load_model_file,
)
from rrr_platform.ml.train import TrainConfig, train_model

CONFIG = TrainConfig(horizon=1, n_splits=3, num_boost_round=40, nthread=1)


@pytest.fixture(scope="module")
def frame():
    bars = synthetic_bars(1440, ["A-USD", "B-USD"], signal=3.0, seed=9)
    return complete_rows(add_labels(synthetic_features(bars), horizon=1), SYNTHETIC_FEATURES)


def test_training_run_is_fully_logged_and_registered(tmp_path: Path, mlflow_uri: str, frame) -> None:
    registry = Registry(mlflow_uri, tmp_path / "artifacts")
    trained = train_model(frame, SYNTHETIC_FEATURES, "direction", CONFIG)
    registered = registry.log_training(trained, dagster_run_id="run-42", code_version="0.1.0+abc")
    assert (registered.name, registered.version) == (DIRECTION_MODEL, "1")

    run = registry.client.get_run(registered.run_id)
    params = run.data.params
    assert params["objective"] == "binary:logistic" and params["nthread"] == "1"
    assert params["n_splits"] == "3" and params["horizon"] == "1"
    assert not any(word in key.lower() for key in params for word in ("key", "secret", "password", "token"))
    tags = run.data.tags
    assert tags["dagster_run_id"] == "run-42" and tags["code_version"] == "0.1.0+abc"
    assert tags["feature_hash"] == feature_hash(SYNTHETIC_FEATURES)
    assert tags["features"] == ",".join(SYNTHETIC_FEATURES)
    assert int(tags["data_start_ns"]) == int(trained.frame["ts_ns"].min())
    # per fold (one step per fold) for the model and every baseline, and overall
    history = registry.client.get_metric_history(registered.run_id, "model.log_loss")
    assert sorted(m.step for m in history) == list(range(len(trained.evaluation.folds)))
    for name in ("prior", "momentum", "last_return"):
        assert f"overall.{name}.log_loss" in run.data.metrics
    assert run.data.metrics["overall.model.auc"] == pytest.approx(trained.evaluation.overall["model"]["auc"])

    artifacts = {a.path for a in registry.client.list_artifacts(registered.run_id)}
    assert {
        "evaluation.json",
        "features.txt",
        "drift_reference.json",
        "oos_predictions.npz",
        "plots",
    } <= artifacts
    plots = {a.path for a in registry.client.list_artifacts(registered.run_id, "plots")}
    assert plots == {"plots/feature_importance.png", "plots/calibration.png", "plots/fold_metrics.png"}

    version = registry.client.get_model_version(DIRECTION_MODEL, "1")
    assert version.tags["run_id"] == registered.run_id and version.tags["dagster_run_id"] == "run-42"
    assert version.tags["feature_hash"] == registered.feature_hash
    model_file = registry.model_file(DIRECTION_MODEL, "1")
    assert model_file.name == "model.ubj" and not list(model_file.parent.glob("*.pkl"))
    mlmodel = (model_file.parent / "MLmodel").read_text()
    assert "signature:" in mlmodel and "flow_imbalance" in mlmodel and "input_example" in mlmodel

    loaded = registry.load(DIRECTION_MODEL, "1", tmp_path / "cache")
    X = trained.frame[SYNTHETIC_FEATURES].to_numpy(dtype=np.float32)[:50]
    np.testing.assert_array_equal(loaded.booster.inplace_predict(X), trained.booster.inplace_predict(X))
    assert loaded.feature_columns == list(SYNTHETIC_FEATURES)

    restored = registry.load_evaluation(registered.run_id)
    np.testing.assert_array_equal(restored.predictions["model"], trained.evaluation.predictions["model"])
    np.testing.assert_array_equal(restored.test_idx, trained.evaluation.test_idx)
    assert restored.overall["model"] == pytest.approx(trained.evaluation.overall["model"])


def test_volatility_model_is_judged_against_ewma_and_garch(tmp_path: Path, mlflow_uri: str, frame) -> None:
    trained = train_model(frame, SYNTHETIC_FEATURES, "volatility", CONFIG)
    assert set(trained.evaluation.predictions) == {"model", "ewma", "garch"}
    for name in ("model", "ewma", "garch"):
        assert np.isfinite(trained.evaluation.overall[name]["qlike"])
        assert np.all(trained.evaluation.predictions[name] > 0)
    registered = Registry(mlflow_uri, tmp_path / "a").log_training(trained, plots=False)
    assert registered.name == VOLATILITY_MODEL


def test_alias_moves_are_recorded_and_unloadable_files_are_named(
    tmp_path: Path, mlflow_uri: str, frame, fresh_pg_url: str
) -> None:
    registry = Registry(mlflow_uri, tmp_path / "artifacts")
    trained = train_model(frame, SYNTHETIC_FEATURES, "direction", CONFIG)
    first = registry.log_training(trained, plots=False).version
    second = registry.log_training(trained, plots=False).version
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        assert (
            promotion.move_alias(
                registry, conn, None, "t:", DIRECTION_MODEL, "champion", first, "me", "first", {"x": 1}
            )
            is None
        )
        assert (
            promotion.move_alias(
                registry,
                conn,
                None,
                "t:",
                DIRECTION_MODEL,
                "champion",
                second,
                "me",
                "second",
                {"x": np.float64(2.0)},
            )
            == first
        )
        assert promotion.previous_champion(conn, DIRECTION_MODEL) == first
        assert promotion.recorded_champion(conn, DIRECTION_MODEL) == second
        row = conn.execute(
            "SELECT moved_by, reason, metrics FROM ml.alias_history ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row == ("me", "second", {"x": 2.0})
    assert registry.alias_version(DIRECTION_MODEL, "champion") == second
    assert registry.alias_version("no_such_model", "champion") is None

    corrupt = tmp_path / "bad.ubj"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="corrupt model file"):
        load_model_file(DIRECTION_MODEL, "9", corrupt, list(SYNTHETIC_FEATURES))
    good = tmp_path / "good.ubj"
    trained.booster.save_model(str(good))
    with pytest.raises(RegistryError, match="differ from its tags"):
        load_model_file(DIRECTION_MODEL, "9", good, ["other", "names"])
    assert isinstance(
        load_model_file(DIRECTION_MODEL, "9", good, list(SYNTHETIC_FEATURES)).booster, xgb.Booster
    )
