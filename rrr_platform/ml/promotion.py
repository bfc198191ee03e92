"""The promotion gate: a challenger becomes champion only when it wins, significantly, on the same folds.

The new version always gets the ``challenger`` alias. It takes ``champion`` only if its out-of-sample
loss beats every baseline *and* the current champion on the same test rows, each by a one-sided
Diebold-Mariano test at ``alpha`` (losses averaged per minute across symbols, Newey-West lag = the
label horizon). Requiring every test to pass is an intersection-union test: valid at ``alpha``
without a multiple-comparison correction.

The current champion is scored with its own booster on the challenger's test rows that lie after its
training window (out of sample for it too); if too few do, on all of them, which can only favour the
champion. A champion whose features are not in the frame cannot be scored: the reason says so and
the baselines alone decide.

Every alias move is written to ``ml.alias_history`` (with the reason, the tests and the best
baseline's parameters, which the predictor's last fallback tier reads from there) and published on
Redis so that running predictors reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import redis
from psycopg.types.json import Jsonb

from rrr_platform.ml.metrics import PairedTest, diebold_mariano
from rrr_platform.ml.registry import MODEL_NAMES, LoadedModel, Registry
from rrr_platform.ml.train import Evaluation, TrainConfig, TrainedModel, predict_booster, train_model

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
ALPHA = 0.05
MIN_CHAMPION_MINUTES = 200


def alias_channel(prefix: str, model: str) -> str:
    """Redis pub/sub channel announcing alias moves of ``model`` (hash tag: the model)."""
    return f"{prefix}ml:alias:{{{model}}}"


@dataclass
class Decision:
    promote: bool
    reason: str
    tests: dict[str, dict[str, float]] = field(default_factory=dict)
    overall: dict[str, dict[str, float]] = field(default_factory=dict)
    best_baseline: dict[str, Any] | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "tests": self.tests,
            "overall": self.overall,
            "best_baseline": self.best_baseline,
            "promote": self.promote,
        }


def champion_predictions(
    evaluation: Evaluation, frame: pd.DataFrame, champion: LoadedModel, champion_data_end_ns: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(mask over evaluation rows used, champion predictions on them)."""
    missing = [c for c in champion.feature_columns if c not in frame.columns]
    if missing:
        raise KeyError(f"champion v{champion.version} needs features missing here: {missing}")
    rows = frame.iloc[evaluation.test_idx]
    mask = np.ones(len(rows), dtype=bool)
    if champion_data_end_ns is not None:
        after = rows["ts_ns"].to_numpy() > champion_data_end_ns
        if len(np.unique(rows["ts_ns"].to_numpy()[after])) >= MIN_CHAMPION_MINUTES:
            mask = after
    X = rows.loc[mask, champion.feature_columns].to_numpy(dtype=np.float32)
    return mask, predict_booster(champion.booster, X, evaluation.kind)


def decide(
    evaluation: Evaluation,
    champion: tuple[str, np.ndarray, np.ndarray] | None = None,
    champion_note: str = "",
    alpha: float = ALPHA,
) -> Decision:
    """``champion``: (version, row mask over the evaluation's test rows, its predictions there)."""
    model_loss = evaluation.losses("model")
    tests: dict[str, PairedTest] = {}
    for name in evaluation.baseline_names:
        tests[name] = diebold_mariano(
            model_loss, evaluation.losses(name), evaluation.groups, evaluation.horizon
        )
    if champion is not None:
        version, mask, predicted = champion
        tests[f"champion_v{version}"] = diebold_mariano(
            model_loss[mask],
            evaluation.loss_of_rows(predicted, mask),
            evaluation.groups[mask],
            evaluation.horizon,
        )
    failed = [name for name, test in tests.items() if not test.significant(alpha)]
    metric = evaluation.primary_metric
    best = evaluation.best_baseline()
    summary = (
        f"{metric} model {evaluation.overall['model'][metric]:.5f} vs best baseline {best} "
        f"{evaluation.overall[best][metric]:.5f}"
    )
    if failed:
        detail = "; ".join(f"{n}: Δ={tests[n].mean_diff:+.2e} p={tests[n].p_value:.3f}" for n in failed)
        reason = f"refused: not significantly better at {alpha:.0%} than {detail} ({summary})"
    else:
        worst_p = max(t.p_value for t in tests.values())
        reason = f"promoted: beats {', '.join(tests)} (max p={worst_p:.4f}; {summary})"
    if champion_note:
        reason += f"; {champion_note}"
    best_params = evaluation.baseline_params.get(best) if evaluation.kind == "direction" else {"name": best}
    return Decision(
        promote=not failed,
        reason=reason,
        tests={n: t.as_dict() for n, t in tests.items()},
        overall=evaluation.overall,
        best_baseline=best_params,
    )


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def record_alias_move(
    conn: psycopg.Connection,
    model: str,
    alias: str,
    version: str | None,
    previous: str | None,
    moved_by: str,
    reason: str,
    metrics: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO ml.alias_history (model, alias, version, previous_version, moved_by, reason, metrics) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (model, alias, version, previous, moved_by, reason, Jsonb(_jsonable(metrics))),
    )


def publish_alias_move(
    redis_client: redis.Redis | None, prefix: str, model: str, alias: str, version: str, previous: str | None
) -> None:
    if redis_client is None:
        return
    try:
        redis_client.publish(
            alias_channel(prefix, model),
            orjson.dumps({"model": model, "alias": alias, "version": version, "previous": previous}),
        )
    except redis.RedisError as exc:  # predictors also poll the alias, so a lost message only delays
        log.warning("could not publish alias move of %s: %s", model, exc)


def move_alias(
    registry: Registry,
    conn: psycopg.Connection,
    redis_client: redis.Redis | None,
    prefix: str,
    model: str,
    alias: str,
    version: str,
    moved_by: str,
    reason: str,
    metrics: dict[str, Any],
) -> str | None:
    """Point ``alias`` at ``version``, record it, announce it; returns the previous version."""
    previous = registry.alias_version(model, alias)
    registry.set_alias(model, alias, version)
    record_alias_move(conn, model, alias, version, previous, moved_by, reason, metrics)
    publish_alias_move(redis_client, prefix, model, alias, version, previous)
    log.info("%s@%s: v%s -> v%s (%s)", model, alias, previous, version, reason)
    return previous


def previous_champion(conn: psycopg.Connection, model: str) -> str | None:
    """The version that was champion before the current one, from the alias history."""
    row = conn.execute(
        "SELECT previous_version FROM ml.alias_history WHERE model = %s AND alias = %s "
        "ORDER BY moved_at DESC, id DESC LIMIT 1",
        (model, CHAMPION),
    ).fetchone()
    return row[0] if row else None


def recorded_champion(conn: psycopg.Connection, model: str) -> str | None:
    """The version the alias history says is champion now."""
    row = conn.execute(
        "SELECT version FROM ml.alias_history WHERE model = %s AND alias = %s "
        "ORDER BY moved_at DESC, id DESC "
        "LIMIT 1",
        (model, CHAMPION),
    ).fetchone()
    return row[0] if row else None


def latest_best_baseline(conn: psycopg.Connection, model: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT metrics->'best_baseline' FROM ml.alias_history WHERE model = %s "
        "AND metrics ? 'best_baseline' AND metrics->'best_baseline' <> 'null'::jsonb "
        "ORDER BY moved_at DESC, id DESC LIMIT 1",
        (model,),
    ).fetchone()
    return row[0] if row else None


@dataclass(frozen=True)
class PromotionOutcome:
    model: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None
    previous_champion: str | None
    metrics: dict[str, Any]


def run_promotion(
    registry: Registry,
    conn: psycopg.Connection,
    redis_client: redis.Redis | None,
    prefix: str,
    trained: TrainedModel | tuple[Evaluation, pd.DataFrame],
    version: str,
    moved_by: str,
    alpha: float = ALPHA,
    cache_dir: Any = None,
    model: str | None = None,
) -> PromotionOutcome:
    """The gate for ``version``, the freshly registered model of ``trained``.

    ``trained``: the training result, or (its evaluation, the rows it was evaluated on) as reloaded
    from the registry (``Registry.load_evaluation`` and ``train.model_rows``).
    """
    evaluation, frame = (trained.evaluation, trained.frame) if isinstance(trained, TrainedModel) else trained
    model = model or MODEL_NAMES[evaluation.kind]
    champion_version = registry.alias_version(model, CHAMPION)
    champion_input = None
    note = ""
    if champion_version is not None and champion_version != version:
        try:
            loaded = registry.load(model, champion_version, cache_dir)
            tags = registry.version_tags(model, champion_version)
            end = int(tags["data_end_ns"]) if "data_end_ns" in tags else None
            mask, predicted = champion_predictions(evaluation, frame, loaded, end)
            champion_input = (champion_version, mask, predicted)
            if end is not None and not (frame.iloc[evaluation.test_idx]["ts_ns"].to_numpy() > end).all():
                note = f"champion v{champion_version} scored on {int(mask.sum())} rows"
        except Exception as exc:  # an unloadable champion must not block the gate
            note = f"current champion v{champion_version} could not be scored ({exc}); baselines decide"
            log.warning(note)
    decision = decide(evaluation, champion_input, note, alpha)
    move_alias(
        registry,
        conn,
        redis_client,
        prefix,
        model,
        CHALLENGER,
        version,
        moved_by,
        decision.reason,
        decision.metrics(),
    )
    previous = None
    if decision.promote:
        previous = move_alias(
            registry,
            conn,
            redis_client,
            prefix,
            model,
            CHAMPION,
            version,
            moved_by,
            decision.reason,
            decision.metrics(),
        )
    return PromotionOutcome(
        model,
        version,
        decision.promote,
        decision.reason,
        version if decision.promote else champion_version,
        previous,
        decision.metrics(),
    )


def retrain_and_promote(
    registry: Registry,
    conn: psycopg.Connection,
    redis_client: redis.Redis | None,
    prefix: str,
    frame: pd.DataFrame,
    feature_columns: list[str],
    config: TrainConfig | None = None,
    moved_by: str = "rrr",
    dagster_run_id: str = "",
    code_version: str = "",
) -> list[PromotionOutcome]:
    """Both models end to end (the Dagster assets' steps in one call, for the CLI and the demo):
    walk-forward train, log and register, then the gate."""
    outcomes = []
    for kind in ("direction", "volatility"):
        trained = train_model(frame, feature_columns, kind, config)  # type: ignore[arg-type]
        registered = registry.log_training(trained, dagster_run_id=dagster_run_id, code_version=code_version)
        outcomes.append(
            run_promotion(registry, conn, redis_client, prefix, trained, registered.version, moved_by)
        )
    return outcomes
