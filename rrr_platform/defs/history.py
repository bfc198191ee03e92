"""Dagster layer of the REST history backfill: one daily partition per UTC day.

Backfilling a month is a partition-range backfill in the UI; each partition logs progress per
(venue, symbol) and skips what an earlier run already finished.
"""


import asyncio
import datetime as dt

import dagster as dg
from pydantic import Field

from rrr_platform.defs.partitions import daily_partitions
from rrr_platform.defs.resources import PostgresResource
from rrr_platform.ingest.history import HistoryResult, backfill_day
from rrr_platform.ingest.shards import default_shards
from rrr_platform.settings import load_settings


class HistoryConfig(dg.Config):
    include_trades: bool = False  # candles always; individual trades too where the venue serves them
    force: bool = False  # refetch days already recorded as complete
    venues: list[str] = Field(default_factory=list)  # empty: every venue of the default shards


@dg.asset(
    partitions_def=daily_partitions,
    group_name="market",
    kinds={"postgres"},
    description="1-minute candles (and optionally trades) of one UTC day from each venue's REST API into "
    "market.bars_1m (source='rest') / market.trades. Idempotent and resumable.",
)
def market_history(
    context: dg.AssetExecutionContext, config: HistoryConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    settings = load_settings()
    day = dt.date.fromisoformat(context.partition_key)
    feeds = [
        f
        for shard in default_shards(settings).values()
        for f in shard.feeds
        if not config.venues or f.venue in config.venues
    ]
    total = sum(len(f.symbols) for f in feeds)
    done: list[HistoryResult] = []

    def progress(result: HistoryResult) -> None:
        done.append(result)
        state = "skipped (done before)" if result.skipped else result.error or f"{result.bars} bars"
        context.log.info(f"[{len(done)}/{total}] {result.venue} {result.symbol} {day}: {state}")

    postgres.migrate()
    results = asyncio.run(
        backfill_day(
            settings,
            postgres.resolved_url(),
            feeds,
            day,
            include_trades=config.include_trades,
            force=config.force,
            progress=progress,
        )
    )
    failed = [r for r in results if r.error]
    if failed:
        # Partial success would read as complete in the UI: fail, so the partition is retried.
        raise dg.Failure(
            description=f"{len(failed)} of {len(results)} (venue, symbol) failed for {day}",
            metadata={"failed": dg.MetadataValue.json([f"{r.venue} {r.symbol}: {r.error}" for r in failed])},
        )
    return dg.MaterializeResult(
        metadata={
            "bars": dg.MetadataValue.int(sum(r.bars for r in results)),
            "trades": dg.MetadataValue.int(sum(r.trades for r in results)),
            "instruments": dg.MetadataValue.int(len(results)),
            "skipped_already_done": dg.MetadataValue.int(sum(r.skipped for r in results)),
        }
    )


ASSETS = [market_history]
