"""Jobs of the Dagster layer."""

import dagster as dg

from rrr_platform.defs.resources import PostgresResource


@dg.op(description="Apply pending PostgreSQL migrations (market and ml schemas).")
def apply_migrations(context: dg.OpExecutionContext, postgres: PostgresResource) -> list[str]:
    applied = postgres.migrate()
    context.log.info(f"applied {len(applied)} migration(s): {applied}")
    return applied


@dg.job(description="Create or upgrade the platform's PostgreSQL schemas.")
def migrate_job() -> None:
    apply_migrations()
