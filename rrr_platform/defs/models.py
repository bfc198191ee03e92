"""Dagster assets of the model side: ``training_set``, ``direction_model``, ``volatility_model``,
``champion``, ``predictions``; the retraining schedule and the feature-drift sensor.

Thin wrappers: the work is in ``rrr_platform.ml.{dataset,train,registry,promotion,predictor,drift}``.
The lead wires ``ASSETS``, ``ASSET_CHECKS``, ``JOBS``, ``SCHEDULES`` and ``SENSORS`` into
definitions.py. Every retraining run carries the tag ``rrr/retrain_reason`` (schedule, drift with
the PSI figures, or manual), which the Dagster UI shows on the run.
"""

import asyncio
import datetime as dt
import os
from typing import Any

import dagster as dg

from rrr_platform.defs.resources import MlflowResource, PostgresResource, RedisResource
from rrr_platform.market.timeutil import NS_PER_DAY, datetime_to_ns, now_ns
from rrr_platform.settings import load_settings

RETRAIN_REASON_TAG = "rrr/retrain_reason"
DEFAULT_RETRAIN_CRON = "0 3 * * 0"  # weekly, Sunday 03:00 UTC
RETRAIN_CRON = os.environ.get("RRR_RETRAIN_CRON", DEFAULT_RETRAIN_CRON)


class TrainingSetConfig(dg.Config):
    days: int = 30  # window length, whole UTC days
    end_date: str | None = None  # exclusive, YYYY-MM-DD; default: today (UTC)
    horizon: int = 1  # direction label horizon in minutes
    vol_horizon: int = 15  # volatility label horizon in minutes


class ModelTrainingConfig(dg.Config):
    n_splits: int = 4
    embargo_bars: int = 2
    num_boost_round: int = 150
    max_depth: int = 3
    eta: float = 0.05
    nthread: int = 2


class PromotionConfig(dg.Config):
    alpha: float = 0.05


class PredictionsConfig(dg.Config):
    venue: str = "binance_spot"
    recent_minutes: int = 60  # score symbols with a bar this recent


def _code_version(context: dg.AssetExecutionContext) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("rrr_platform")
    except PackageNotFoundError:
        package = "unknown"
    code = context.assets_def.code_versions_by_key.get(context.asset_key) if context.assets_def else None
    return f"{package}+{code}" if code else package


@dg.asset(
    deps=["features"],
    group_name="ml_models",
    compute_kind="pandas",
    description="Training rows (features, forward labels, event windows, baseline inputs) over a window of "
    "days, from the features asset's Parquet files or recomputed from market.bars_1m.",
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, postgres: PostgresResource
) -> dg.Output[Any]:
    from rrr_platform.ml.dataset import build_training_set

    end = dt.date.fromisoformat(config.end_date) if config.end_date else dt.datetime.now(dt.UTC).date()
    end_ns = datetime_to_ns(dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC))
    start_ns = end_ns - config.days * NS_PER_DAY
    with postgres.connect() as conn:
        frame, columns, source = build_training_set(
            conn, start_ns, end_ns, config.horizon, load_settings().home_dir / "features", config.vol_horizon
        )
    return dg.Output(
        {
            "frame": frame,
            "feature_columns": columns,
            "horizon": config.horizon,
            "vol_horizon": config.vol_horizon,
        },
        metadata={
            "rows": len(frame),
            "symbols": frame["symbol"].nunique(),
            "source": source,
            "window": f"{dt.date.fromordinal(end.toordinal() - config.days)} .. {end}",
            "features": len(columns),
        },
    )


def _train(
    context: dg.AssetExecutionContext,
    kind: str,
    training: dict[str, Any],
    config: ModelTrainingConfig,
    mlflow: MlflowResource,
) -> dg.Output[dict[str, Any]]:
    from rrr_platform.ml.train import TrainConfig as CoreConfig
    from rrr_platform.ml.train import train_model

    core = CoreConfig(
        horizon=training["horizon"],
        vol_horizon=training.get("vol_horizon", 15),
        n_splits=config.n_splits,
        embargo_bars=config.embargo_bars,
        num_boost_round=config.num_boost_round,
        max_depth=config.max_depth,
        eta=config.eta,
        nthread=config.nthread,
    )
    trained = train_model(training["frame"], training["feature_columns"], kind, core)  # type: ignore[arg-type]
    registered = mlflow.registry().log_training(
        trained, dagster_run_id=context.run_id, code_version=_code_version(context)
    )
    overall = trained.evaluation.overall
    metric = trained.evaluation.primary_metric
    return dg.Output(
        {
            "kind": kind,
            "model": registered.name,
            "version": registered.version,
            "run_id": registered.run_id,
            "feature_hash": registered.feature_hash,
        },
        metadata={
            "model": registered.name,
            "version": registered.version,
            "mlflow_run_id": registered.run_id,
            metric: overall["model"][metric],
            f"best_baseline_{metric}": overall[trained.evaluation.best_baseline()][metric],
            "rows": trained.n_rows,
            "folds": len(trained.evaluation.folds),
        },
    )


@dg.asset(
    group_name="ml_models",
    compute_kind="xgboost",
    description="XGBoost classifier of P(forward return > 0); walk-forward evaluated, logged to MLflow and "
    "registered as a new version of rrr_direction.",
)
def direction_model(
    context: dg.AssetExecutionContext,
    training_set: dict[str, Any],
    config: ModelTrainingConfig,
    mlflow: MlflowResource,
) -> dg.Output[dict[str, Any]]:
    return _train(context, "direction", training_set, config, mlflow)


@dg.asset(
    group_name="ml_models",
    compute_kind="xgboost",
    description="XGBoost regressor of forward realised volatility; walk-forward evaluated against EWMA and "
    "GARCH(1,1), logged to MLflow and registered as a new version of rrr_volatility.",
)
def volatility_model(
    context: dg.AssetExecutionContext,
    training_set: dict[str, Any],
    config: ModelTrainingConfig,
    mlflow: MlflowResource,
) -> dg.Output[dict[str, Any]]:
    return _train(context, "volatility", training_set, config, mlflow)


@dg.asset(
    group_name="ml_models",
    compute_kind="mlflow",
    description="Promotion gate: each new version becomes challenger, and champion only if it beats the "
    "baselines and the current champion on the same folds (Diebold-Mariano, 5%). Alias moves are "
    "recorded in ml.alias_history and published on Redis.",
)
def champion(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    training_set: dict[str, Any],
    direction_model: dict[str, Any],
    volatility_model: dict[str, Any],
    mlflow: MlflowResource,
    postgres: PostgresResource,
    redis: RedisResource,
) -> dg.MaterializeResult:
    from rrr_platform.ml.promotion import run_promotion
    from rrr_platform.ml.train import model_rows

    registry = mlflow.registry()
    outcomes = {}
    redis_client = redis.client()
    try:
        with postgres.connect() as conn:
            for trained in (direction_model, volatility_model):
                evaluation = registry.load_evaluation(trained["run_id"])
                rows = model_rows(training_set["frame"], trained["kind"])
                outcome = run_promotion(
                    registry,
                    conn,
                    redis_client,
                    redis.prefix,
                    (evaluation, rows),
                    trained["version"],
                    f"dagster:{context.run_id}",
                    config.alpha,
                    model=trained["model"],
                )
                outcomes[trained["model"]] = outcome
                context.log.info(f"{outcome.model} v{outcome.version}: {outcome.reason}")
    finally:
        redis_client.close()
    return dg.MaterializeResult(
        metadata={
            **{f"{m}_champion": o.champion_version or "none" for m, o in outcomes.items()},
            **{f"{m}_promoted": o.promoted for m, o in outcomes.items()},
            "reasons": dg.MetadataValue.json({m: o.reason for m, o in outcomes.items()}),
        }
    )


@dg.asset(
    deps=[champion],
    group_name="ml_models",
    compute_kind="xgboost",
    description="Direction predictions of every recently traded symbol, from the best available tier "
    "(champion -> previous champion -> baseline), upserted into ml.predictions.",
)
def predictions(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    mlflow: MlflowResource,
    postgres: PostgresResource,
    redis: RedisResource,
) -> dg.MaterializeResult:
    from rrr_platform.ml.predictor import (
        PostgresFeatureSource,
        Predictor,
        recent_symbols,
        score_all,
        write_predictions,
    )

    settings = load_settings()
    url = postgres.resolved_url()
    with postgres.connect() as conn:
        symbols = recent_symbols(conn, config.venue, config.recent_minutes)

    async def run() -> list[Any]:
        predictor = Predictor(
            tracking_uri=mlflow.resolved_uri(),
            postgres_url=url,
            feature_source=PostgresFeatureSource(url, config.venue),
            cache_dir=settings.home_dir / "model-cache",
        )
        async with predictor:
            return await score_all(predictor, symbols)

    scored = asyncio.run(run())
    with postgres.connect() as conn:
        written = write_predictions(conn, scored)
    tiers: dict[str, int] = {}
    for p in scored:
        tiers[p.tier] = tiers.get(p.tier, 0) + 1
    return dg.MaterializeResult(
        metadata={
            "symbols": len(symbols),
            "written": written,
            "tiers": dg.MetadataValue.json(tiers),
            "versions": sorted({p.version for p in scored}),
        }
    )


retrain_job = dg.define_asset_job(
    "retrain_models",
    selection=["training_set", "direction_model", "volatility_model", "champion", "predictions"],
    description="Rebuild the training set, retrain both models, run the promotion gate, rescore.",
    tags={RETRAIN_REASON_TAG: "manual"},
)

retrain_schedule = dg.ScheduleDefinition(
    name="retrain_models_weekly",
    job=retrain_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone="UTC",
    tags={RETRAIN_REASON_TAG: f"schedule ({RETRAIN_CRON})"},
    description="Scheduled retraining (cron from RRR_RETRAIN_CRON, weekly by default).",
)


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=900,
    description="Population stability index of the last day of features against the champion's "
    "training window; requests retraining when any feature's PSI crosses the threshold.",
)
def feature_drift_sensor(
    context: dg.SensorEvaluationContext, mlflow: MlflowResource, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    from rrr_platform.ml.drift import DEFAULT_THRESHOLD, champion_drift
    from rrr_platform.ml.registry import DIRECTION_MODEL

    threshold = float(os.environ.get("RRR_DRIFT_PSI_THRESHOLD", DEFAULT_THRESHOLD))
    # a day: shorter windows see intraday volatility regimes (persistent rv_* features) as drift
    window = int(os.environ.get("RRR_DRIFT_WINDOW_MINUTES", "1440"))
    with postgres.connect() as conn:
        report, compared = champion_drift(mlflow.registry(), conn, DIRECTION_MODEL, window, threshold)
    if report is None:
        return dg.SkipReason(compared)
    if not report.drifted:
        return dg.SkipReason(f"{compared}: {report.reason()}")
    hour = now_ns() // (3600 * 10**9)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{report.worst_feature}-{hour}",
                tags={
                    RETRAIN_REASON_TAG: f"{compared}: {report.reason()}"[:4000],
                    "rrr/drift_max_psi": f"{report.max_psi:.4f}",
                },
            )
        ]
    )


ASSETS = [training_set, direction_model, volatility_model, champion, predictions]
ASSET_CHECKS: list[dg.AssetChecksDefinition] = []
JOBS = [retrain_job]
SCHEDULES = [retrain_schedule]
SENSORS = [feature_drift_sensor]
