"""Schema migrations: plain SQL files applied in order, each once, recorded in a table.

Each file runs in its own transaction together with its bookkeeping row, under an advisory lock, so
concurrent starters (CLI, Dagster runs, tests) never apply a file twice and a failed file leaves
nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import psycopg

MIGRATIONS_PACKAGE = "rrr_platform.storage.migrations"
_LOCK_KEY = 0x5252_5201  # arbitrary, constant: "RRR" migrations


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    files = sorted(
        (f for f in resources.files(MIGRATIONS_PACKAGE).iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    return [Migration(f.name.split("_", 1)[0], f.name, f.read_text()) for f in files]


def applied_versions(conn: psycopg.Connection) -> set[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS public.rrr_schema_migrations ("
        " version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    return {row[0] for row in conn.execute("SELECT version FROM public.rrr_schema_migrations")}


def migrate(url: str) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            done = applied_versions(conn)
            for migration in available_migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO public.rrr_schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied_now.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
