"""The bars_1m asset, its reconciliation check, and the retention job, run in process on real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import dagster as dg
import psycopg

from rrr_platform.defs import bars
from rrr_platform.defs.resources import PostgresResource
from rrr_platform.market.timeutil import NS_PER_MIN, datetime_to_ns
from rrr_platform.storage import writers
from rrr_platform.storage.partitions import ensure_partitions, list_partitions
from rrr_platform.storage.synthetic import synthetic_trades

DAY = "2026-09-15"
DAY_NS = datetime_to_ns(dt.datetime(2026, 9, 15, tzinfo=dt.UTC))


async def _write(url: str, trades) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await writers.write_trades(conn, trades)


def _materialize(url: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*bars.ASSETS, *bars.ASSET_CHECKS],
        partition_key=DAY,
        resources={"postgres": PostgresResource(url=url)},
        raise_on_error=False,
    )


def _check_passed(result: dg.ExecuteInProcessResult) -> bool:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation.passed


def test_bars_partition_materializes_and_reconciles(fresh_pg_url: str) -> None:
    trades = synthetic_trades("polygon", "BTC-USD", DAY_NS, 90 * NS_PER_MIN, 400, seed=1)
    trades += synthetic_trades(
        "coinbase_exchange", "BTC-USD", DAY_NS - NS_PER_MIN, 2 * NS_PER_MIN, 50, seed=2
    )
    asyncio.run(_write(fresh_pg_url, trades))

    result = _materialize(fresh_pg_url)
    assert result.success
    (mat,) = result.asset_materializations_for_node("bars_1m")
    in_day = [t for t in trades if t.exchange_ts_ns >= DAY_NS]
    assert mat.metadata["trades"].value == len(in_day)
    assert mat.metadata["bars"].value == len({(t.venue, t.exchange_ts_ns // NS_PER_MIN) for t in in_day})
    assert _check_passed(result)
    assert mat.metadata["compacted"].value is True  # a past day is clustered for reads

    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        # A bar claiming trades in a minute that has none: the rollup leaves it, the check catches it.
        conn.execute(
            "INSERT INTO market.bars_1m (ts, venue, symbol, open, high, low, close, volume, trade_count)"
            " VALUES (%s, 'polygon', 'BTC-USD', 1, 1, 1, 1, 5, 3)",
            (dt.datetime(2026, 9, 15, 23, 0, tzinfo=dt.UTC),),
        )
    assert not _check_passed(_materialize(fresh_pg_url))


def test_incremental_job_rolls_up_dirty_minutes(fresh_pg_url: str) -> None:
    asyncio.run(
        _write(fresh_pg_url, synthetic_trades("polygon", "ETH-USD", DAY_NS, 3 * NS_PER_MIN, 30, seed=3))
    )
    result = bars.bars_incremental_job.execute_in_process(
        resources={"postgres": PostgresResource(url=fresh_pg_url)}
    )
    assert result.success
    with psycopg.connect(fresh_pg_url) as conn:
        assert conn.execute("SELECT count(*), sum(trade_count) FROM market.bars_1m").fetchone() == (3, 30)
        assert conn.execute("SELECT count(*) FROM market.bars_dirty").fetchone() == (0,)


def test_retention_job_dry_run_then_real(fresh_pg_url: str) -> None:
    today = dt.datetime.now(dt.UTC).date()
    old = today - dt.timedelta(days=100)
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        for table in ("trades", "quotes", "bars_1m"):
            ensure_partitions(conn, table, [old, today])
    resources = {"postgres": PostgresResource(url=fresh_pg_url)}

    def run(dry_run: bool) -> dict[str, set[dt.date]]:
        config = {
            "ops": {
                "apply_retention": {
                    "config": {
                        "trades_days": 30,
                        "quotes_days": 30,
                        "bars_days": 365,
                        "ahead_days": 1,
                        "dry_run": dry_run,
                    }
                }
            }
        }
        assert bars.retention_job.execute_in_process(run_config=config, resources=resources).success
        with psycopg.connect(fresh_pg_url) as conn:
            return {t: set(list_partitions(conn, t).values()) for t in ("trades", "quotes", "bars_1m")}

    assert run(dry_run=True) == {t: {old, today} for t in ("trades", "quotes", "bars_1m")}
    tomorrow = today + dt.timedelta(days=1)
    assert run(dry_run=False) == {
        "trades": {today, tomorrow},
        "quotes": {today, tomorrow},
        "bars_1m": {old, today, tomorrow},
    }


def test_module_exports_build_valid_definitions() -> None:
    defs = dg.Definitions(
        assets=bars.ASSETS,
        asset_checks=bars.ASSET_CHECKS,
        jobs=bars.JOBS,
        schedules=bars.SCHEDULES,
        resources={"postgres": PostgresResource(url="postgresql://x")},
    )
    repo = defs.get_repository_def()
    assert {"bars_incremental_job", "retention_job"} <= {j.name for j in repo.get_all_jobs()}
    assert {s.cron_schedule for s in bars.SCHEDULES} == {"*/5 * * * *", "15 0 * * *"}
