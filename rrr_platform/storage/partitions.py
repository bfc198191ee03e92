"""Daily range partitions of the market time-series tables: create ahead, list, drop by age."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import psycopg
from psycopg import sql

PARTITIONED_TABLES = ("trades", "quotes", "bars_1m")
_SUFFIX = re.compile(r"_p(\d{8})$")


def partition_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def ensure_partitions(conn: psycopg.Connection, table: str, days: Iterable[dt.date]) -> list[str]:
    """Create the daily partitions of ``market.<table>`` for ``days`` that do not exist yet."""
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"market.{table} is not a partitioned table")
    created = []
    existing = set(list_partitions(conn, table))
    for day in sorted(set(days)):
        name = partition_name(table, day)
        if name in existing:
            continue
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS market.{} PARTITION OF market.{} FOR VALUES FROM ({}) TO ({})"
            ).format(
                sql.Identifier(name),
                sql.Identifier(table),
                sql.Literal(start),
                sql.Literal(start + dt.timedelta(days=1)),
            )
        )
        created.append(name)
    return created


def list_partitions(conn: psycopg.Connection, table: str) -> dict[str, dt.date]:
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = 'market' AND p.relname = %s
        """,
        (table,),
    ).fetchall()
    out = {}
    for (name,) in rows:
        match = _SUFFIX.search(name)
        if match:
            out[name] = dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    return out


def days_ahead(today: dt.date, ahead: int, behind: int = 1) -> list[dt.date]:
    return [today + dt.timedelta(days=d) for d in range(-behind, ahead + 1)]


def _create_partition_sql(table: str, day: dt.date) -> sql.Composed:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS market.{} PARTITION OF market.{} FOR VALUES FROM ({}) TO ({})"
    ).format(
        sql.Identifier(partition_name(table, day)),
        sql.Identifier(table),
        sql.Literal(start),
        sql.Literal(start + dt.timedelta(days=1)),
    )


# Serialises partition creation across processes: two writers creating the same partition at once
# would otherwise collide on the catalog (CREATE TABLE IF NOT EXISTS is not concurrency-safe).
CREATE_LOCK_KEY = 0x5252_5202


class KnownPartitions:
    """Partitions this process knows exist, per database, so a write checks the catalog only for new days.

    Retention may drop a partition behind our back: a write that then fails with "no partition"
    calls ``forget`` and retries.
    """

    def __init__(self) -> None:
        self._known: set[tuple[str, str, dt.date]] = set()

    @staticmethod
    def _db(conn: psycopg.AsyncConnection | psycopg.Connection) -> str:
        info = conn.info
        return f"{info.host}:{info.port}/{info.dbname}"

    def missing(
        self, conn: psycopg.AsyncConnection | psycopg.Connection, table: str, days: Iterable[dt.date]
    ) -> list[dt.date]:
        db = self._db(conn)
        return [d for d in days if (db, table, d) not in self._known]

    def add(
        self, conn: psycopg.AsyncConnection | psycopg.Connection, table: str, days: Iterable[dt.date]
    ) -> None:
        db = self._db(conn)
        self._known.update((db, table, d) for d in days)

    def forget(self, conn: psycopg.AsyncConnection | psycopg.Connection, table: str | None = None) -> None:
        db = self._db(conn)
        self._known = {k for k in self._known if not (k[0] == db and (table is None or k[1] == table))}


known_partitions = KnownPartitions()


async def ensure_partitions_async(
    conn: psycopg.AsyncConnection, table: str, days: Iterable[dt.date]
) -> list[str]:
    """Async ``ensure_partitions`` with the per-process cache: the catalog is read only for unknown days."""
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"market.{table} is not a partitioned table")
    wanted = sorted(set(days))
    todo = known_partitions.missing(conn, table, wanted)
    if not todo:
        return []
    created: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
        cur = await conn.execute(
            """
            SELECT c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent
            JOIN pg_namespace n ON n.oid = p.relnamespace
            WHERE n.nspname = 'market' AND p.relname = %s
            """,
            (table,),
        )
        existing = {row[0] for row in await cur.fetchall()}
        for day in todo:
            if partition_name(table, day) not in existing:
                await conn.execute(_create_partition_sql(table, day))
                created.append(partition_name(table, day))
    known_partitions.add(conn, table, todo)
    return created


def drop_partition(conn: psycopg.Connection, table: str, day: dt.date) -> None:
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"market.{table} is not a partitioned table")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS market.{}").format(sql.Identifier(partition_name(table, day))))
    known_partitions.forget(conn, table)
