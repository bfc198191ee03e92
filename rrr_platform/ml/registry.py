"""MLflow tracking and model registry: one run per training, one registered version per run.

Each run logs the configuration as params, per-fold and overall metrics of the model and of every
baseline, the data window, the feature list and its hash, the Dagster run id and code version (as
tags), plots (feature importance, calibration, fold metrics), the evaluation and the drift reference
as JSON, and the model in XGBoost's own format (``model.ubj``, never pickle) with a signature and an
input example. The version is registered with the same tags.

MLflow defaults to SQLite under RRR_HOME; artifacts go under ``Settings.mlflow_artifact_root`` (an
experiment's artifact location is fixed when it is created, so it is set explicitly here).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from rrr_platform.ml import drift
from rrr_platform.ml.dataset import feature_hash
from rrr_platform.ml.train import Evaluation, TrainedModel

log = logging.getLogger(__name__)

DIRECTION_MODEL = "rrr_direction"
VOLATILITY_MODEL = "rrr_volatility"
MODEL_NAMES = {"direction": DIRECTION_MODEL, "volatility": VOLATILITY_MODEL}
EXPERIMENT = "rrr-models"
MODEL_FILE = "model.ubj"
OOS_FILE = "oos_predictions.npz"


def mlflow_environment() -> None:
    """Process-wide MLflow settings: no telemetry; a registry that is down fails fast, not after minutes."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


class RegistryError(RuntimeError):
    """The registry could not answer or a model version could not be loaded; the message says why."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    feature_hash: str


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    booster: xgb.Booster
    feature_columns: list[str]
    path: Path


class Registry:
    def __init__(self, tracking_uri: str, artifact_root: Path | str | None = None) -> None:
        mlflow_environment()
        from mlflow import MlflowClient  # deferred: mlflow is slow to import

        self.tracking_uri = tracking_uri
        self.artifact_root = Path(artifact_root) if artifact_root else None
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # ------------------------------------------------------------------ tracking
    def experiment_id(self, name: str = EXPERIMENT) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = None
        if self.artifact_root is not None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            location = (self.artifact_root / name).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def log_training(
        self,
        trained: TrainedModel,
        *,
        dagster_run_id: str = "",
        code_version: str = "",
        training_frame: pd.DataFrame | None = None,
        plots: bool = True,
        model_name: str | None = None,
    ) -> RegisteredVersion:
        """One MLflow run for ``trained``, its model registered as a new version; returns the version."""
        import mlflow
        import mlflow.xgboost
        from mlflow.entities import Metric
        from mlflow.models import infer_signature

        name = model_name or MODEL_NAMES[trained.kind]
        training_frame = trained.frame if training_frame is None else training_frame
        evaluation = trained.evaluation
        fhash = feature_hash(trained.feature_columns)
        tags = {
            "kind": trained.kind,
            "feature_hash": fhash,
            "features": ",".join(trained.feature_columns),
            "data_start_ns": str(trained.data_start_ns),
            "data_end_ns": str(trained.data_end_ns),
            "data_start": pd.Timestamp(trained.data_start_ns, unit="ns", tz="UTC").isoformat(),
            "data_end": pd.Timestamp(trained.data_end_ns, unit="ns", tz="UTC").isoformat(),
            "symbols": ",".join(trained.symbols),
            "n_rows": str(trained.n_rows),
            "dagster_run_id": dagster_run_id or "none",
            "code_version": code_version or "none",
        }
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=f"{name}-train", tags=tags) as run:
            mlflow.log_params(trained.config.as_params(trained.kind))
            mlflow.log_param("n_features", len(trained.feature_columns))
            now_ms = int(time.time() * 1000)
            metrics = [  # one batch: per fold (step = fold) and overall, for the model and each baseline
                Metric(f"{who}.{m}", float(v), now_ms, k)
                for k, fold_metrics in enumerate(evaluation.fold_metrics)
                for who, values in fold_metrics.items()
                for m, v in values.items()
                if np.isfinite(v)
            ] + [
                Metric(f"overall.{who}.{m}", float(v), now_ms, 0)
                for who, values in evaluation.overall.items()
                for m, v in values.items()
                if np.isfinite(v)
            ]
            self.client.log_batch(run.info.run_id, metrics=metrics)
            mlflow.log_dict(
                {
                    "fold_metrics": evaluation.fold_metrics,
                    "overall": evaluation.overall,
                    "baseline_params": evaluation.baseline_params,
                    "horizon": evaluation.horizon,
                    "folds": [
                        {
                            "train": len(f.train_idx),
                            "test": len(f.test_idx),
                            "purged": f.purged,
                            "test_start_ns": f.test_start_ns,
                            "test_end_ns": f.test_end_ns,
                        }
                        for f in evaluation.folds
                    ],
                    "feature_columns": trained.feature_columns,
                },
                "evaluation.json",
            )
            mlflow.log_text("\n".join(trained.feature_columns), "features.txt")
            with tempfile.TemporaryDirectory() as tmp:  # out-of-sample predictions, for the promotion gate
                oos = Path(tmp) / OOS_FILE
                np.savez(
                    oos,
                    test_idx=evaluation.test_idx,
                    groups=evaluation.groups,
                    target=evaluation.target,
                    forward_return=evaluation.forward_return,
                    **{f"pred__{k}": v for k, v in evaluation.predictions.items()},
                )
                mlflow.log_artifact(str(oos))
            if training_frame is not None:
                mlflow.log_dict(
                    drift.reference(training_frame, trained.feature_columns), "drift_reference.json"
                )
            if plots:
                self._log_plots(trained)
            example = pd.DataFrame(
                training_frame[trained.feature_columns].head(5).to_numpy(dtype=np.float32)
                if training_frame is not None
                else np.zeros((5, len(trained.feature_columns)), np.float32),
                columns=trained.feature_columns,
            )
            signature = infer_signature(example, trained.booster.inplace_predict(example.to_numpy()))
            info = mlflow.xgboost.log_model(
                trained.booster,
                name="model",
                signature=signature,
                input_example=example,
                model_format="ubj",
                registered_model_name=name,
                tags=tags,
                # explicit: inferring requirements runs a subprocess that costs ~8 s per run
                pip_requirements=[f"xgboost-cpu=={xgb.__version__}"],
            )
            version = str(info.registered_model_version)
            run_id = run.info.run_id
        for key, value in {**tags, "run_id": run_id}.items():
            self.client.set_model_version_tag(name, version, key, value)
        overall = evaluation.overall["model"]
        self.client.set_model_version_tag(
            name, version, evaluation.primary_metric, f"{overall[evaluation.primary_metric]:.6f}"
        )
        return RegisteredVersion(name=name, version=version, run_id=run_id, feature_hash=fhash)

    def _log_plots(self, trained: TrainedModel) -> None:
        import matplotlib

        matplotlib.use("Agg")  # headless: Dagster runs and tests have no display
        import matplotlib.pyplot as plt
        import mlflow

        evaluation = trained.evaluation
        gain = trained.booster.get_score(importance_type="gain")
        fig, ax = plt.subplots(figsize=(6, 4))
        items = sorted(gain.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set_title(f"{trained.kind}: feature importance (gain)")
        fig.tight_layout()
        mlflow.log_figure(fig, "plots/feature_importance.png")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5, 5))
        predicted = evaluation.predictions["model"]
        bins = np.unique(np.quantile(predicted, np.linspace(0, 1, 11)))
        which = np.clip(np.digitize(predicted, bins[1:-1]), 0, max(len(bins) - 2, 0))
        xs = [predicted[which == b].mean() for b in np.unique(which)]
        ys = [evaluation.target[which == b].mean() for b in np.unique(which)]
        ax.plot(xs, ys, "o-", label="model (out of sample)")
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect")
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed")
        ax.set_title(f"{trained.kind}: calibration")
        ax.legend()
        fig.tight_layout()
        mlflow.log_figure(fig, "plots/calibration.png")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        metric = evaluation.primary_metric
        for model_name in evaluation.predictions:
            ax.plot([fm[model_name][metric] for fm in evaluation.fold_metrics], "o-", label=model_name)
        ax.set_xlabel("fold")
        ax.set_ylabel(metric)
        ax.set_title(f"{trained.kind}: {metric} per walk-forward fold")
        ax.legend()
        fig.tight_layout()
        mlflow.log_figure(fig, "plots/fold_metrics.png")
        plt.close(fig)

    # ------------------------------------------------------------------ registry
    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at, None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    def run_json(self, run_id: str, artifact: str) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, artifact, tmp)
            return json.loads(Path(path).read_text())

    def load_evaluation(self, run_id: str) -> Evaluation:
        """The walk-forward evaluation a training run logged (metrics and out-of-sample predictions)."""
        summary = self.run_json(run_id, "evaluation.json")
        run = self.client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, OOS_FILE, tmp)
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        return Evaluation(
            kind=run.data.tags["kind"],  # type: ignore[arg-type]
            feature_columns=summary["feature_columns"],
            folds=[],
            test_idx=arrays["test_idx"],
            groups=arrays["groups"],
            target=arrays["target"],
            forward_return=arrays["forward_return"],
            predictions={k.removeprefix("pred__"): v for k, v in arrays.items() if k.startswith("pred__")},
            fold_metrics=summary["fold_metrics"],
            overall=summary["overall"],
            baseline_params=summary["baseline_params"],
            horizon=int(summary.get("horizon", run.data.params["horizon"])),
        )

    def model_file(self, name: str, version: str) -> Path:
        """Where the registry keeps the version's ``model.ubj`` (a local path for file artifact stores)."""
        import mlflow

        uri = self.client.get_model_version_download_uri(name, version)
        local = (
            mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=self.tracking_uri)
            if not uri.startswith(("file:", "/"))
            else uri.removeprefix("file://")
        )
        return Path(local) / MODEL_FILE

    def load(self, name: str, version: str, cache_dir: Path | None = None) -> LoadedModel:
        """Download (into ``cache_dir`` when given) and load one version; RegistryError on any failure."""
        import mlflow

        try:
            uri = self.client.get_model_version_download_uri(name, version)
            target = Path(cache_dir or tempfile.mkdtemp(prefix="rrr-model-")) / name / version
            staging = target.with_name(f"{version}.download")
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(staging), tracking_uri=self.tracking_uri
            )
            tags = self.version_tags(name, version)
            # replace the cached copy only once the download is whole
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            local = target
        except Exception as exc:  # network, missing version, store errors: one type up
            raise RegistryError(f"cannot fetch {name} v{version}: {exc}") from exc
        model_path = next(local.rglob(MODEL_FILE), None)
        if model_path is None:
            raise RegistryError(f"{name} v{version} has no {MODEL_FILE}")
        features = [f for f in tags.get("features", "").split(",") if f]
        (target / "features.txt").write_text("\n".join(features))
        return load_model_file(name, version, model_path, features)


def load_model_file(name: str, version: str, path: Path, features: list[str]) -> LoadedModel:
    """Load a ``model.ubj``; RegistryError when it is corrupt or its inputs are not ``features``."""
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        raise RegistryError(f"{name} v{version}: corrupt model file {path}: {exc}") from exc
    if booster.feature_names is not None and features and list(booster.feature_names) != features:
        raise RegistryError(f"{name} v{version}: model inputs {booster.feature_names} differ from its tags")
    return LoadedModel(name, version, booster, list(booster.feature_names or features), path)
