"""Compiled trees answer exactly like XGBoost, and fall back to it when compilation fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from rrr_platform.ml.inference import FastModel


@pytest.fixture(scope="module")
def boosters() -> dict[str, xgb.Booster]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values take the learned default branch
    y_cls = (X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) + rng.normal(size=3000) > 0).astype(float)
    y_reg = np.abs(np.nan_to_num(X[:, 2])) + rng.random(3000)
    params = {"max_depth": 4, "eta": 0.1, "nthread": 1, "tree_method": "hist"}
    return {
        "classifier": xgb.train({**params, "objective": "binary:logistic"}, xgb.DMatrix(X, y_cls), 60),
        "regressor": xgb.train({**params, "objective": "reg:squarederror"}, xgb.DMatrix(X, y_reg), 60),
    }


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_compiled_predictions_equal_xgboost(kind: str, boosters, tmp_path_factory) -> None:
    booster = boosters[kind]
    fast = FastModel(booster, tmp_path_factory.mktemp("compiled"))
    assert fast.backend == "compiled", fast.fallback_reason
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    expected = booster.inplace_predict(X)
    scale = np.maximum(1.0, np.abs(expected))  # 1e-6 absolute up to 1, relative above
    single = np.array([fast.predict_one(row) for row in X])
    assert np.max(np.abs(single - expected) / scale) <= 1e-6
    assert np.max(np.abs(fast.predict_batch(X) - expected) / scale) <= 1e-6
    # the same row twice gives the same answer (the C predict accumulates into its output)
    assert fast.predict_one(X[0]) == fast.predict_one(X[0])


def test_compiled_library_is_reused_across_instances(boosters, tmp_path: Path) -> None:
    FastModel(boosters["classifier"], tmp_path)
    libraries = sorted(tmp_path.glob("*.so"))
    assert len(libraries) == 1
    before = libraries[0].stat().st_mtime_ns
    again = FastModel(boosters["classifier"], tmp_path)
    assert again.backend == "compiled" and libraries[0].stat().st_mtime_ns == before


def test_falls_back_to_xgboost_when_compilation_fails(boosters, tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("occupied")
    fast = FastModel(boosters["classifier"], not_a_directory)
    assert fast.backend == "xgboost"
    assert fast.fallback_reason
    X = np.random.default_rng(2).normal(size=(20, 8)).astype(np.float32)
    expected = boosters["classifier"].inplace_predict(X)
    np.testing.assert_allclose([fast.predict_one(r) for r in X], expected, atol=1e-7)
    np.testing.assert_allclose(fast.predict_batch(X), expected, atol=1e-7)
