"""The promotion gate's decision on evaluations with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from rrr_platform.ml.dataset import (
    SYNTHETIC_FEATURES,
    add_labels,
    complete_rows,
    synthetic_bars,
    synthetic_features,
)
from rrr_platform.ml.promotion import decide
from rrr_platform.ml.train import Evaluation, TrainConfig, train_model

CONFIG = TrainConfig(horizon=1, n_splits=3, nthread=1)


def _evaluation(p_model: np.ndarray, y: np.ndarray, p_base: float = 0.5) -> Evaluation:
    n = len(y)
    evaluation = Evaluation(
        kind="direction",
        feature_columns=["f"],
        folds=[],
        test_idx=np.arange(n),
        groups=np.arange(n),
        target=y.astype(float),
        forward_return=np.where(y > 0, 0.01, -0.01),
        predictions={"model": p_model, "prior": np.full(n, p_base), "momentum": np.full(n, p_base)},
        fold_metrics=[],
        horizon=1,
        baseline_params={"prior": {"name": "prior", "column": None, "p_pos": p_base, "p_neg": p_base}},
    )
    evaluation.overall = {k: evaluation.metrics_of(v) for k, v in evaluation.predictions.items()}
    return evaluation


def test_a_model_with_an_edge_is_promoted() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.3, 0.7, 4000)
    y = (rng.random(4000) < p).astype(int)  # calibrated, informative
    decision = decide(_evaluation(p, y))
    assert decision.promote, decision.reason
    assert decision.reason.startswith("promoted")
    assert set(decision.tests) == {"prior", "momentum"}
    assert decision.best_baseline["name"] == "prior"


def test_noise_is_refused_with_the_reason() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4000)
    p = rng.uniform(0.45, 0.55, 4000)  # uninformative
    decision = decide(_evaluation(p, y))
    assert not decision.promote
    assert decision.reason.startswith("refused") and "prior" in decision.reason


def test_beating_baselines_is_not_enough_when_the_champion_is_better() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.2, 0.8, 4000)
    y = (rng.random(4000) < truth).astype(int)
    weaker = 0.5 + 0.5 * (truth - 0.5)  # informative, but less than the champion
    evaluation = _evaluation(weaker, y)
    assert decide(evaluation).promote
    mask = np.ones(4000, dtype=bool)
    decision = decide(evaluation, champion=("7", mask, truth))
    assert not decision.promote
    assert "champion_v7" in decision.reason
    # and against a weak champion it passes
    assert decide(evaluation, champion=("7", mask, np.full(4000, 0.5))).promote


@pytest.mark.parametrize("signal", [0.0, 5.0])
def test_walk_forward_gate_on_synthetic_markets(signal: float) -> None:
    bars = synthetic_bars(1440, ["A-USD", "B-USD", "C-USD"], signal=signal, seed=5)
    frame = complete_rows(add_labels(synthetic_features(bars), horizon=1), SYNTHETIC_FEATURES)
    trained = train_model(frame, SYNTHETIC_FEATURES, "direction", CONFIG)
    decision = decide(trained.evaluation)
    assert decision.promote is (signal > 0), decision.reason
