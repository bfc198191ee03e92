"""Dagster layer for 1-minute bars and retention: wiring only; the work is in rrr_platform.storage."""

import datetime as dt

import dagster as dg

from rrr_platform.defs.partitions import daily_partitions
from rrr_platform.defs.resources import PostgresResource
from rrr_platform.storage.retention import RetentionPolicy, run_retention
from rrr_platform.storage.rollup import compact_bars_day, reconcile_day, rollup_day, rollup_dirty


def _partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


@dg.asset(
    name="bars_1m",
    partitions_def=daily_partitions,
    group_name="market",
    # The streamed trades and the REST history (candles and trades) it is computed from or replaces.
    deps=[dg.AssetKey("market_trades"), dg.AssetKey("market_history")],
    description="1-minute OHLCV bars (VWAP, trade count, buy volume) of market.trades, one UTC day per "
    "partition, recomputed from every trade of the day (late and backfilled ones included).",
    kinds={"postgres"},
)
def bars_1m(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    day = _partition_day(context)
    with postgres.connect() as conn:
        result = rollup_day(conn, day)
        # A finished day is laid out per instrument for fast reads; today's partition is still written.
        compacted = day < dt.datetime.now(dt.UTC).date() and compact_bars_day(conn, day)
    context.log.info(
        f"{day}: {result.minutes} bars ({result.bars} new or changed) from {result.trades} trades"
    )
    return dg.MaterializeResult(
        metadata={
            "bars": dg.MetadataValue.int(result.minutes),
            "bars_changed": dg.MetadataValue.int(result.bars),
            "compacted": dg.MetadataValue.bool(bool(compacted)),
            "trades": dg.MetadataValue.int(result.trades),
        }
    )


@dg.asset_check(
    asset=bars_1m,
    name="reconciles_with_trades",
    partitions_def=daily_partitions,
    description="Every minute's bar volume and trade count equal the sums of the trades it came from.",
)
def bars_reconcile_with_trades(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> dg.AssetCheckResult:
    day = _partition_day(context)
    with postgres.connect() as conn:
        checked, mismatches = reconcile_day(conn, day)
    return dg.AssetCheckResult(
        passed=not mismatches,
        metadata={
            "minutes_checked": dg.MetadataValue.int(checked),
            "mismatches": dg.MetadataValue.int(len(mismatches)),
            "first_mismatches": dg.MetadataValue.json(
                [
                    {
                        "venue": m.venue,
                        "symbol": m.symbol,
                        "minute": m.minute.isoformat(),
                        "bar_volume": str(m.bar_volume),
                        "trade_volume": str(m.trade_volume),
                        "bar_count": m.bar_count,
                        "trade_count": m.trade_count,
                    }
                    for m in mismatches[:10]
                ]
            ),
        },
    )


@dg.op(description="Recompute the bars of every minute whose trades changed since the last rollup.")
def rollup_dirty_minutes(context: dg.OpExecutionContext, postgres: PostgresResource) -> None:
    with postgres.connect() as conn:
        result = rollup_dirty(conn)
    context.log.info(f"{result.minutes} dirty minutes: {result.bars} bars from {result.trades} trades")


@dg.job(description="Keep market.bars_1m current: roll up only the minutes that changed.")
def bars_incremental_job() -> None:
    rollup_dirty_minutes()


class RetentionConfig(dg.Config):
    trades_days: int = RetentionPolicy.trades_days
    quotes_days: int = RetentionPolicy.quotes_days
    bars_days: int = RetentionPolicy.bars_days
    ahead_days: int = RetentionPolicy.ahead_days
    dry_run: bool = False


@dg.op(description="Drop partitions older than their table's age and create the coming days' partitions.")
def apply_retention(
    context: dg.OpExecutionContext, config: RetentionConfig, postgres: PostgresResource
) -> None:
    policy = RetentionPolicy(
        trades_days=config.trades_days,
        quotes_days=config.quotes_days,
        bars_days=config.bars_days,
        ahead_days=config.ahead_days,
    )
    with postgres.connect() as conn:
        plan = run_retention(conn, policy, dry_run=config.dry_run)
    verb = "would" if config.dry_run else "did"
    context.log.info(f"retention {verb}: " + ("; ".join(plan.describe()) or "nothing to do"))


@dg.job(description="Partition retention for market.trades, quotes and bars_1m.")
def retention_job() -> None:
    apply_retention()


bars_incremental_schedule = dg.ScheduleDefinition(
    job=bars_incremental_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
retention_schedule = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

ASSETS = [bars_1m]
ASSET_CHECKS = [bars_reconcile_with_trades]
JOBS = [bars_incremental_job, retention_job]
SCHEDULES = [bars_incremental_schedule, retention_schedule]
