"""Metrics, the Diebold-Mariano test, baselines and drift on hand-checkable data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from rrr_platform.ml import metrics as mt
from rrr_platform.ml.baselines import DirectionBaseline, fit_direction_baselines
from rrr_platform.ml.dataset import add_labels
from rrr_platform.ml.drift import drift_report, psi, reference


def test_auc_equals_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.normal(size=200) + y * 0.5, 1)  # rounded: ties happen
    pairs = [(p, n) for p, n in itertools.product(score[y == 1], score[y == 0])]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert mt.auc(y, score) == pytest.approx(expected)
    assert math.isnan(mt.auc(np.ones(5), np.arange(5)))


def test_classification_metrics_by_hand() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.8, 0.3, 0.4, 0.1])
    fwd = np.array([0.02, -0.01, 0.005, -0.03])
    m = mt.classification_metrics(y, p, fwd)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.4, 0.9])))
    assert m["brier"] == pytest.approx(np.mean([0.04, 0.09, 0.36, 0.01]))
    assert m["hit_rate"] == 0.75
    assert m["auc"] == 1.0
    assert m["ic"] == pytest.approx(1.0)  # same ranks as the forward returns


def test_regression_metrics_are_zero_for_a_perfect_forecast() -> None:
    vol = np.array([0.01, 0.02, 0.005])
    m = mt.regression_metrics(vol, vol)
    assert m["rmse"] == 0 and m["qlike"] == pytest.approx(0, abs=1e-9)
    worse = mt.regression_metrics(vol, vol * 1.5)
    assert worse["qlike"] > 0 and worse["rmse"] > 0
    # QLIKE punishes under-forecasting variance more than over-forecasting by the same factor
    assert mt.qlike_per_sample(vol, vol / 1.5).mean() > mt.qlike_per_sample(vol, vol * 1.5).mean()


def test_diebold_mariano_detects_a_real_edge_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    base = rng.exponential(1.0, 2000)
    better = base - 0.05 + rng.normal(0, 0.2, 2000)
    assert mt.diebold_mariano(better, base, lag=1).significant()
    same = base + rng.normal(0, 0.2, 2000)
    assert not mt.diebold_mariano(same, base, lag=1).significant()
    worse = base + 0.05 + rng.normal(0, 0.2, 2000)
    test = mt.diebold_mariano(worse, base, lag=1)
    assert test.mean_diff > 0 and test.p_value > 0.9


def test_diebold_mariano_counts_a_minute_once_across_symbols() -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(-0.02, 1.0, 300)
    # the same differential copied to 10 symbols is one observation per minute, not ten
    repeated = np.repeat(d, 10)
    groups = np.repeat(np.arange(300), 10)
    grouped = mt.diebold_mariano(repeated, np.zeros_like(repeated), groups=groups, lag=0)
    single = mt.diebold_mariano(d, np.zeros_like(d), lag=0)
    assert grouped.n == 300
    assert grouped.statistic == pytest.approx(single.statistic)


def test_direction_baselines_are_conditional_frequencies() -> None:
    train = pd.DataFrame(
        {
            "y_up": [1, 1, 1, 0, 0, 0, 0, 1],
            "mom": [1, 2, 3, 4, -1, -2, -3, -4],
            "ret_1": [1, -1, 1, -1, 1, -1, 1, -1],
        }
    )
    fitted = fit_direction_baselines(train)
    assert fitted["prior"].p_pos == pytest.approx(5 / 10)  # Laplace: (4 + 1) / (8 + 2)
    assert fitted["momentum"].p_pos == pytest.approx(4 / 6) and fitted["momentum"].p_neg == pytest.approx(
        2 / 6
    )
    restored = DirectionBaseline.from_params(fitted["momentum"].params)
    assert restored.predict(np.array([0.5, -0.5])).tolist() == [4 / 6, 2 / 6]


def test_labels_from_closes_and_from_returns_agree_and_respect_gaps() -> None:
    minute = 60_000_000_000
    close = np.array([100, 101, 100, 102, 103, 101, 104.0])
    frame = pd.DataFrame({"symbol": "X", "ts_ns": np.arange(7) * minute, "close": close})
    by_close = add_labels(frame, horizon=2, vol_horizon=2)
    assert by_close["y_return"].iloc[0] == pytest.approx(math.log(100 / 100))
    assert by_close["y_return"].iloc[1] == pytest.approx(math.log(102 / 101))
    assert by_close["y_up"].iloc[1] == 1.0 and np.isnan(by_close["y_return"].iloc[-1])
    assert by_close["y_vol"].iloc[1] == pytest.approx(math.hypot(math.log(100 / 101), math.log(102 / 100)))
    returns = frame.assign(ret_1=np.concatenate(([np.nan], np.diff(np.log(close))))).drop(columns="close")
    by_return = add_labels(returns, horizon=2, vol_horizon=2)
    np.testing.assert_allclose(by_return["y_return"], by_close["y_return"], equal_nan=True)
    gap = frame.assign(ts_ns=frame["ts_ns"] + np.array([0, 0, 0, 5, 5, 5, 5]) * minute)
    gapped = add_labels(gap, horizon=2, vol_horizon=2)
    assert np.isnan(gapped["y_return"].iloc[1]) and np.isnan(gapped["y_vol"].iloc[2])
    assert not np.isnan(gapped["y_return"].iloc[3])


def test_psi_flags_a_shift_and_not_a_resample() -> None:
    rng = np.random.default_rng(4)
    train = pd.DataFrame({"a": rng.normal(0, 1, 20_000), "b": rng.normal(0, 1, 20_000)})
    ref = reference(train, ["a", "b"])
    same = drift_report(ref, pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.normal(0, 1, 5000)}))
    assert not same.drifted and same.max_psi < 0.02
    shifted = drift_report(ref, pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.normal(1.0, 1, 5000)}))
    assert shifted.drifted and shifted.worst_feature == "b"
    assert "b" in shifted.reason() and "a " not in shifted.reason()
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0
    with pytest.raises(ValueError, match="shares no feature"):
        drift_report(ref, pd.DataFrame({"c": [1.0]}))
