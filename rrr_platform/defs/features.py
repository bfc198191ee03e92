"""Dagster assets of the ML data side: ``news_sentiment``, ``features``, ``risk_report``.

Thin wrappers: the work is in ``rrr_platform.ml.{sentiment,features,risk}``. The lead wires ``ASSETS``,
``ASSET_CHECKS``, ``JOBS`` and ``SCHEDULES`` into definitions.py. Checks of ``features`` are declared
on the asset (``check_specs``) and evaluated in the same step, from the very inputs it computed on.
"""

import datetime as dt
import math

import dagster as dg

from rrr_platform.defs.partitions import daily_partitions
from rrr_platform.defs.resources import PostgresResource
from rrr_platform.ml import features as feat
from rrr_platform.ml import risk
from rrr_platform.ml import sentiment as sent
from rrr_platform.settings import load_settings

# news_sentiment refreshes hourly during the day, so its partitions include today (end_offset=1);
# keys are the same dates as daily_partitions, so features(day) maps onto news_sentiment(day).
news_partitions = dg.DailyPartitionsDefinition(
    start_date=daily_partitions.start.strftime("%Y-%m-%d"), timezone="UTC", end_offset=1
)

BARS_1M = dg.AssetKey("bars_1m")
# A day's features read the previous day's bars too (the indicators' warm-up).
BARS_WITH_WARMUP = dg.AssetDep(BARS_1M, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1))


def _day(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def _day_range(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class NewsSentimentConfig(dg.Config):
    fetch: bool = True  # fetch the day's news from the Polygon-format REST endpoint first
    polygon_rest_url: str | None = None  # default: RRR_POLYGON_REST_URL
    bucket_minutes: int = 60


@dg.asset(
    partitions_def=news_partitions,
    group_name="ml_data",
    compute_kind="vader",
    description="Headlines of the day from the Polygon news endpoint, stored in market.news, scored with "
    "finance-tuned VADER, aggregated per asset and hour (Parquet under $RRR_HOME/sentiment).",
)
def news_sentiment(
    context: dg.AssetExecutionContext, config: NewsSentimentConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    day = _day(context)
    start, end = _day_range(day)
    records = None
    fetch_error = ""
    if config.fetch:
        records, fetch_error = sent.fetch_news_records(start, end, config.polygon_rest_url)
        if fetch_error:
            context.log.warning(f"news fetch skipped: {fetch_error}; scoring what market.news holds")
    with postgres.connect() as conn:
        refresh = sent.refresh_sentiment(conn, start, end, records, config.bucket_minutes)
    path = sent.write_aggregates(refresh.aggregates, load_settings().home_dir / "sentiment", day)
    tone = refresh.news["sentiment"]
    per_key = refresh.aggregates.groupby("key")["count"].sum().to_dict() if len(refresh.aggregates) else {}
    return dg.MaterializeResult(
        metadata={
            "headlines": len(refresh.news),
            "fetched_stored": refresh.stored,
            "dead_lettered": refresh.rejected,
            "rescored": refresh.rescored,
            "mean_tone": _finite(float(tone.mean())) if len(tone) else None,
            "headlines_per_asset": dg.MetadataValue.json({str(k): int(v) for k, v in per_key.items()}),
            "fetch_error": fetch_error,
            "path": dg.MetadataValue.path(str(path)),
        }
    )


class FeaturesConfig(dg.Config):
    label_horizon: int = feat.DEFAULT_LABEL_HORIZON
    lookahead_samples: int = 6  # minutes of the day at which the no-look-ahead check recomputes


FEATURE_CHECKS = [
    dg.AssetCheckSpec("no_lookahead", asset="features",
                      description="Features at t equal a recomputation on data up to t; labels need "
                      "data after t"),
    dg.AssetCheckSpec("no_invalid_after_warmup", asset="features",
                      description="No NaN or inf in any feature past its warm-up"),
    dg.AssetCheckSpec("complete_minutes", asset="features",
                      description="Every instrument has a real bar for every minute of the day"),
    dg.AssetCheckSpec("label_balance", asset="features",
                      description="Share of up labels, reported (fails only when nothing is labelled)"),
]


@dg.asset(
    partitions_def=daily_partitions,
    deps=[BARS_WITH_WARMUP, "news_sentiment"],
    check_specs=FEATURE_CHECKS,
    group_name="ml_data",
    compute_kind="pandas",
    description="Features and labels per instrument and minute (rrr_platform.ml.features), Parquet "
    "under $RRR_HOME/features/date=YYYY-MM-DD/.",
)
def features(
    context: dg.AssetExecutionContext, config: FeaturesConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    day = _day(context)
    with postgres.connect() as conn:
        built = feat.build_day_features(conn, day, config.label_horizon)
    frame = built.features
    path = feat.write_features(frame, load_settings().home_dir / "features", day)

    times = feat.check_times(built, config.lookahead_samples)
    leaks = feat.lookahead_violations(built.bars, built.news, times)
    label_leaks = feat.label_violations(built.bars, times, config.label_horizon)
    invalid = feat.invalid_after_warmup(frame)
    incomplete = feat.incomplete_minutes(built)
    balance = feat.label_balance(frame)
    nan_counts = {c: int(n) for c, n in frame[feat.FEATURE_COLUMNS].isna().sum().items() if n}
    instruments = sorted({f"{v}:{s}" for v, s in zip(frame["venue"], frame["symbol"], strict=True)})

    checks = [
        dg.AssetCheckResult(
            check_name="no_lookahead", passed=not leaks and not label_leaks,
            metadata={"check_times": len(times), "feature_violations": dg.MetadataValue.json(leaks[:20]),
                      "label_violations": dg.MetadataValue.json(label_leaks[:20])},
        ),
        dg.AssetCheckResult(check_name="no_invalid_after_warmup", passed=not invalid,
                            metadata={"invalid_per_column": dg.MetadataValue.json(invalid)}),
        dg.AssetCheckResult(
            check_name="complete_minutes", passed=not incomplete, severity=dg.AssetCheckSeverity.WARN,
            metadata={"missing_minutes": dg.MetadataValue.json(incomplete)},
        ),
        dg.AssetCheckResult(
            check_name="label_balance", passed=balance["labelled_rows"] > 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={k: (_finite(v) if isinstance(v, float) else v) for k, v in balance.items()},
        ),
    ]
    return dg.MaterializeResult(
        metadata={
            "rows": len(frame),
            "symbols": len(instruments),
            "instruments": dg.MetadataValue.json(instruments),
            "nan_counts": dg.MetadataValue.json(nan_counts),
            "filled_minutes": int(frame["filled"].sum()) if len(frame) else 0,
            "label_share_up": _finite(float(balance["share_up"])),  # type: ignore[arg-type]
            "label_horizon_minutes": config.label_horizon,
            "path": dg.MetadataValue.path(str(path)),
        },
        check_results=checks,
    )


class RiskConfig(dg.Config):
    lookback_days: int = 3  # of 1-minute returns; the backtest is on the later half
    train_fraction: float = 0.5


@dg.asset(
    partitions_def=daily_partitions,
    deps=[BARS_1M],
    group_name="ml_data",
    compute_kind="arch",
    description="Volatility (realized, EWMA, GARCH), VaR/ES 95/99 (historical, parametric, GARCH, FHS), "
    "max drawdown and Kupiec/Christoffersen backtests per instrument and equal-weight portfolio.",
)
def risk_report(
    context: dg.AssetExecutionContext, config: RiskConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    day = _day(context)
    with postgres.connect() as conn:
        report = risk.day_risk(conn, day, config.lookback_days, config.train_fraction)
    path = risk.write_report(report, load_settings().home_dir / "risk", day)
    return dg.MaterializeResult(
        metadata={
            "instruments": len([k for k in report if k != "portfolio"]),
            "var_es_bps": dg.MetadataValue.md(risk.var_table_markdown(report)),
            "backtests": dg.MetadataValue.json(risk.backtest_pvalues(report)),
            "volatility": dg.MetadataValue.json(risk.volatility_summary(report)),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


news_sentiment_job = dg.define_asset_job("news_sentiment_job", selection=["news_sentiment"])
features_job = dg.define_asset_job("features_job", selection=["features"])
risk_report_job = dg.define_asset_job("risk_report_job", selection=["risk_report"])


@dg.schedule(cron_schedule="5 * * * *", job=news_sentiment_job, execution_timezone="UTC",
             description="Hourly: refresh today's news sentiment.")
def news_sentiment_hourly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    # Five minutes past the hour, the day whose news is arriving is the day of the previous hour.
    when = context.scheduled_execution_time - dt.timedelta(hours=1)
    return dg.RunRequest(partition_key=when.strftime("%Y-%m-%d"))


# After the day closes: the partition of the day that just ended (the latest complete one).
features_daily = dg.build_schedule_from_partitioned_job(features_job, hour_of_day=0, minute_of_hour=30)
risk_report_daily = dg.build_schedule_from_partitioned_job(risk_report_job, hour_of_day=0, minute_of_hour=45)

ASSETS = [news_sentiment, features, risk_report]
ASSET_CHECKS: list[dg.AssetChecksDefinition] = []  # declared on the assets (check_specs)
JOBS = [news_sentiment_job, features_job, risk_report_job]
SCHEDULES = [news_sentiment_hourly, features_daily, risk_report_daily]
