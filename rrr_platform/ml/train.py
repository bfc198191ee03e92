"""Walk-forward evaluation and final fits of the direction and volatility models (native XGBoost API).

Each fold fits the model and the baselines on the fold's purged training rows and scores all of them
on the same test rows, so every comparison (including the promotion gate's paired tests) is paired
sample by sample. The final model is then fitted on every row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# Before xgboost loads libgomp: idle OpenMP threads sleep instead of spinning. On this shared 2-core
# machine spinning made 2-thread training 5-10x slower than 1 thread; passive waiting fixes it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import xgboost as xgb

from rrr_platform.market.timeutil import NS_PER_MIN
from rrr_platform.ml import baselines as bl
from rrr_platform.ml import metrics as mt
from rrr_platform.ml.cv import Fold, purged_walk_forward
from rrr_platform.ml.dataset import DEFAULT_HORIZON, DEFAULT_VOL_HORIZON

ModelKind = Literal["direction", "volatility"]
MAX_THREADS = 2  # the machine has 2 cores shared with everything else


@dataclass(frozen=True)
class TrainConfig:
    horizon: int = DEFAULT_HORIZON  # bars; must match the labels in the frame
    vol_horizon: int = DEFAULT_VOL_HORIZON  # bars of the volatility label; must match too
    n_splits: int = 4
    embargo_bars: int = 2
    num_boost_round: int = 150
    max_depth: int = 3
    eta: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 20.0
    reg_lambda: float = 5.0
    max_bin: int = 64
    nthread: int = 2
    seed: int = 0
    early_stopping_rounds: int = 20
    validation_fraction: float = 0.2

    def xgb_params(self, kind: ModelKind) -> dict[str, Any]:
        objective = (
            {"objective": "binary:logistic", "eval_metric": "logloss"}
            if kind == "direction"
            # gamma deviance on realised variance is QLIKE up to constants: the fit optimises the
            # loss the model is judged (and promoted) by
            else {"objective": "reg:gamma", "eval_metric": "gamma-deviance"}
        )
        return {
            **objective,
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "max_bin": self.max_bin,
            "nthread": min(self.nthread, MAX_THREADS),
            "seed": self.seed,
        }

    def as_params(self, kind: ModelKind) -> dict[str, Any]:
        """Everything that defines a run, flat, for MLflow params (no secrets live here)."""
        return {
            **self.xgb_params(kind),
            "horizon": self.horizon if kind == "direction" else self.vol_horizon,
            "n_splits": self.n_splits,
            "embargo_bars": self.embargo_bars,
            "num_boost_round": self.num_boost_round,
        }


@dataclass
class Evaluation:
    kind: ModelKind
    feature_columns: list[str]
    folds: list[Fold]
    test_idx: np.ndarray  # rows of the frame scored out of sample, fold after fold
    groups: np.ndarray  # ts_ns of those rows (for paired tests: one observation per minute)
    target: np.ndarray  # y_up or y_vol at those rows
    forward_return: np.ndarray
    predictions: dict[str, np.ndarray]  # "model" and each baseline, aligned with test_idx
    fold_metrics: list[dict[str, dict[str, float]]]
    overall: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # fitted on all rows
    horizon: int = DEFAULT_HORIZON

    @property
    def baseline_names(self) -> list[str]:
        return [name for name in self.predictions if name != "model"]

    def losses(self, name: str) -> np.ndarray:
        return self.loss_of(self.predictions[name])

    def loss_of(self, prediction: np.ndarray) -> np.ndarray:
        if self.kind == "direction":
            return mt.logloss_per_sample(self.target, prediction)
        return mt.qlike_per_sample(self.target, prediction)

    def loss_of_rows(self, prediction: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per-sample loss of ``prediction`` made for the test rows selected by ``mask``."""
        target = self.target[mask]
        if self.kind == "direction":
            return mt.logloss_per_sample(target, prediction)
        return mt.qlike_per_sample(target, prediction)

    def metrics_of(self, prediction: np.ndarray) -> dict[str, float]:
        if self.kind == "direction":
            return mt.classification_metrics(self.target, prediction, self.forward_return)
        return mt.regression_metrics(self.target, prediction)

    @property
    def primary_metric(self) -> str:
        return "log_loss" if self.kind == "direction" else "qlike"

    def best_baseline(self) -> str:
        return min(self.baseline_names, key=lambda name: self.overall[name][self.primary_metric])


def model_rows(frame: pd.DataFrame, kind: ModelKind) -> pd.DataFrame:
    """The rows a model trains and is judged on. Direction drops minutes whose forward return is
    exactly zero (a price on a tick grid often does not move): "up" vs "not up" would otherwise
    reward predicting *stillness* from volume and volatility, which is skill at the wrong question
    and shows up as spurious skill on a market with no directional signal.
    """
    if kind == "direction":
        frame = frame[frame["y_return"].to_numpy() != 0]
    return frame.reset_index(drop=True)


VARIANCE_FLOOR = 1e-12  # gamma needs positive labels; a minute without a price move has zero variance


def _target(frame: pd.DataFrame, kind: ModelKind) -> np.ndarray:
    """What a forecast is scored against: the up label, or the forward realised volatility."""
    return frame["y_up" if kind == "direction" else "y_vol"].to_numpy(dtype=np.float64)


def training_label(frame: pd.DataFrame, kind: ModelKind) -> np.ndarray:
    """What the booster fits: the up label, or the forward realised variance (floored above zero)."""
    target = _target(frame, kind)
    return target if kind == "direction" else np.maximum(target**2, VARIANCE_FLOOR)


def fit_booster(
    X: np.ndarray,
    y: np.ndarray,
    kind: ModelKind,
    config: TrainConfig,
    feature_columns: Sequence[str],
    ts_ns: np.ndarray,
    end_ns: np.ndarray,
) -> xgb.Booster:
    """Fit on rows in time order, early-stopping on the last ``validation_fraction`` of the time span.

    The fitted head keeps only rows whose label window ends before the validation tail starts (the
    same purging as the outer folds). On weak signals early stopping is what keeps the model from
    fitting noise that the paired test would, rightly, punish.
    """
    names = list(feature_columns)
    threads = min(config.nthread, MAX_THREADS)
    if config.early_stopping_rounds and config.validation_fraction > 0:
        times = np.unique(ts_ns)
        valid_start = times[int(len(times) * (1 - config.validation_fraction))]
        valid = ts_ns >= valid_start
        head = end_ns + config.embargo_bars * NS_PER_MIN < valid_start
        if valid.sum() >= 100 and head.sum() >= 100:
            dtrain = xgb.DMatrix(X[head], label=y[head], feature_names=names, nthread=threads)
            dvalid = xgb.DMatrix(X[valid], label=y[valid], feature_names=names, nthread=threads)
            booster = xgb.train(
                config.xgb_params(kind),
                dtrain,
                num_boost_round=config.num_boost_round,
                evals=[(dvalid, "valid")],
                early_stopping_rounds=config.early_stopping_rounds,
                verbose_eval=False,
            )
            best = booster.best_iteration + 1
            return booster[:best] if best < booster.num_boosted_rounds() else booster
    dtrain = xgb.DMatrix(X, label=y, feature_names=names, nthread=threads)
    return xgb.train(config.xgb_params(kind), dtrain, num_boost_round=config.num_boost_round)


def predict_booster(booster: xgb.Booster, X: np.ndarray, kind: ModelKind) -> np.ndarray:
    """Probabilities, or volatilities (the square root of the predicted variance)."""
    out = np.asarray(booster.inplace_predict(X), dtype=np.float64)
    return out if kind == "direction" else np.sqrt(np.maximum(out, VARIANCE_FLOOR))


def evaluate(
    frame: pd.DataFrame, feature_columns: Sequence[str], kind: ModelKind, config: TrainConfig
) -> Evaluation:
    """Purged walk-forward evaluation of the model and its baselines on the same folds.

    ``frame`` comes from ``dataset.complete_rows``: labels present, sorted by time.
    """
    features = list(feature_columns)
    X = frame[features].to_numpy(dtype=np.float32)
    y = _target(frame, kind)
    label = training_label(frame, kind)
    ts, ends = frame["ts_ns"].to_numpy(dtype=np.int64), frame["end_ns"].to_numpy(dtype=np.int64)
    folds = purged_walk_forward(
        ts,
        ends,
        n_splits=config.n_splits,
        embargo_ns=config.embargo_bars * NS_PER_MIN,
    )
    names = ["model", *(bl.DIRECTION_BASELINES if kind == "direction" else bl.VOLATILITY_BASELINES)]
    per_fold: list[dict[str, dict[str, float]]] = []
    preds: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for fold in folds:
        train, test = frame.iloc[fold.train_idx], frame.iloc[fold.test_idx]
        booster = fit_booster(
            X[fold.train_idx],
            label[fold.train_idx],
            kind,
            config,
            features,
            ts[fold.train_idx],
            ends[fold.train_idx],
        )
        fold_preds = {"model": predict_booster(booster, X[fold.test_idx], kind)}
        if kind == "direction":
            for name, baseline in bl.fit_direction_baselines(train).items():
                fold_preds[name] = baseline.predict_frame(test)
        else:
            fold_preds["ewma"] = bl.ewma_forecast(test)
            fold_preds["garch"] = bl.garch_forecast(frame, fold.train_idx, fold.test_idx, config.vol_horizon)
        y_test = y[fold.test_idx]
        fwd = test["y_return"].to_numpy(dtype=np.float64)
        per_fold.append(
            {
                name: (
                    mt.classification_metrics(y_test, p, fwd)
                    if kind == "direction"
                    else mt.regression_metrics(y_test, p)
                )
                for name, p in fold_preds.items()
            }
        )
        for name, p in fold_preds.items():
            preds[name].append(p)
    test_idx = np.concatenate([fold.test_idx for fold in folds])
    evaluation = Evaluation(
        kind=kind,
        feature_columns=features,
        folds=folds,
        test_idx=test_idx,
        groups=frame["ts_ns"].to_numpy()[test_idx],
        target=y[test_idx],
        forward_return=frame["y_return"].to_numpy(dtype=np.float64)[test_idx],
        predictions={name: np.concatenate(parts) for name, parts in preds.items()},
        fold_metrics=per_fold,
        horizon=config.horizon if kind == "direction" else config.vol_horizon,
    )
    evaluation.overall = {name: evaluation.metrics_of(p) for name, p in evaluation.predictions.items()}
    if kind == "direction":
        evaluation.baseline_params = {n: b.params for n, b in bl.fit_direction_baselines(frame).items()}
    return evaluation


@dataclass
class TrainedModel:
    kind: ModelKind
    booster: xgb.Booster
    evaluation: Evaluation
    config: TrainConfig
    feature_columns: list[str]
    data_start_ns: int
    data_end_ns: int
    n_rows: int
    symbols: list[str]
    frame: pd.DataFrame  # the rows evaluated (positions match evaluation.test_idx)


def train_model(
    frame: pd.DataFrame, feature_columns: Sequence[str], kind: ModelKind, config: TrainConfig | None = None
) -> TrainedModel:
    """Walk-forward evaluation, then the final fit on every row."""
    config = config or TrainConfig()
    frame = model_rows(frame, kind)
    if frame.empty:
        raise ValueError("empty training frame")
    evaluation = evaluate(frame, feature_columns, kind, config)
    X = frame[list(feature_columns)].to_numpy(dtype=np.float32)
    booster = fit_booster(
        X,
        training_label(frame, kind),
        kind,
        config,
        feature_columns,
        frame["ts_ns"].to_numpy(dtype=np.int64),
        frame["end_ns"].to_numpy(dtype=np.int64),
    )
    return TrainedModel(
        kind=kind,
        booster=booster,
        evaluation=evaluation,
        config=config,
        feature_columns=list(feature_columns),
        data_start_ns=int(frame["ts_ns"].min()),
        data_end_ns=int(frame["end_ns"].max()),
        n_rows=len(frame),
        symbols=sorted(frame["symbol"].unique().tolist()),
        frame=frame,
    )
