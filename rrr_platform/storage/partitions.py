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
                sql.Identifier(name), sql.Identifier(table),
                sql.Literal(start), sql.Literal(start + dt.timedelta(days=1)),
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
