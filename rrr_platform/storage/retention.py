"""Retention of the daily partitions: drop what is older than its table's age, create the coming days.

``plan_retention`` only reads the catalog and says what would change (the dry run);
``apply_retention`` does exactly that plan. Bars are kept longer than trades and quotes: they are
small and the models train on them. Partitions are dropped whole (``DROP TABLE`` of a partition is
instant and leaves no bloat, unlike ``DELETE``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg

from rrr_platform.storage.partitions import (
    CREATE_LOCK_KEY,
    PARTITIONED_TABLES,
    drop_partition,
    ensure_partitions,
    list_partitions,
    partition_name,
)


@dataclass(frozen=True)
class RetentionPolicy:
    trades_days: int = 30
    quotes_days: int = 30
    bars_days: int = 730
    ahead_days: int = 3

    def __post_init__(self) -> None:
        for name in ("trades_days", "quotes_days", "bars_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"retention {name} must be at least 1 day")
        if self.ahead_days < 0:
            raise ValueError("ahead_days must not be negative")

    def keep_days(self, table: str) -> int:
        return {"trades": self.trades_days, "quotes": self.quotes_days, "bars_1m": self.bars_days}[table]


@dataclass(frozen=True)
class RetentionPlan:
    today: dt.date
    drop: dict[str, list[dt.date]] = field(default_factory=dict)  # table -> days to drop
    create: dict[str, list[dt.date]] = field(default_factory=dict)  # table -> days to create

    def describe(self) -> list[str]:
        lines = [f"drop market.{partition_name(t, d)}" for t, days in self.drop.items() for d in days]
        lines += [f"create market.{partition_name(t, d)}" for t, days in self.create.items() for d in days]
        return lines

    @property
    def dropped_count(self) -> int:
        return sum(len(v) for v in self.drop.values())

    @property
    def created_count(self) -> int:
        return sum(len(v) for v in self.create.values())


def plan_retention(
    conn: psycopg.Connection, policy: RetentionPolicy, today: dt.date | None = None
) -> RetentionPlan:
    """What retention would do today: partitions whose whole day is older than the table's age,
    and missing partitions from today through ``ahead_days`` (UTC days)."""
    today = today or dt.datetime.now(dt.UTC).date()
    drop: dict[str, list[dt.date]] = {}
    create: dict[str, list[dt.date]] = {}
    for table in PARTITIONED_TABLES:
        existing = set(list_partitions(conn, table).values())
        # Keeping N days keeps today and the N-1 days before it.
        oldest_kept = today - dt.timedelta(days=policy.keep_days(table) - 1)
        drop[table] = sorted(d for d in existing if d < oldest_kept)
        wanted = [today + dt.timedelta(days=k) for k in range(policy.ahead_days + 1)]
        create[table] = [d for d in wanted if d not in existing]
    return RetentionPlan(today=today, drop=drop, create=create)


def apply_retention(conn: psycopg.Connection, plan: RetentionPlan) -> RetentionPlan:
    """Carry out ``plan`` (from ``plan_retention``) and return it."""
    for table, days in plan.drop.items():
        for day in days:
            drop_partition(conn, table, day)
            if table == "trades":
                # The dropped trades can no longer be rolled up; their bars stay as they are.
                lo = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
                conn.execute(
                    "DELETE FROM market.bars_dirty WHERE minute >= %s AND minute < %s",
                    (lo, lo + dt.timedelta(days=1)),
                )
    for table, days in plan.create.items():
        if days:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
                ensure_partitions(conn, table, days)
    return plan


def run_retention(
    conn: psycopg.Connection, policy: RetentionPolicy, today: dt.date | None = None, dry_run: bool = False
) -> RetentionPlan:
    plan = plan_retention(conn, policy, today)
    return plan if dry_run else apply_retention(conn, plan)
