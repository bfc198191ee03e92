import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg

from rrr_platform.defs.jobs import migrate_job
from rrr_platform.defs.resources import PostgresResource
from rrr_platform.storage.migrate import available_migrations

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_validate(tmp_path) -> None:
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path), RRR_HOME=str(tmp_path / "rrr"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_migrate_job_runs_against_the_resource(fresh_pg_url: str) -> None:
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA market CASCADE; DROP SCHEMA ml CASCADE; TRUNCATE rrr_schema_migrations")
    result = migrate_job.execute_in_process(resources={"postgres": PostgresResource(url=fresh_pg_url)})
    assert result.success
    assert result.output_for_node("apply_migrations") == [m.name for m in available_migrations()]
    with psycopg.connect(fresh_pg_url) as conn:
        assert conn.execute("SELECT to_regclass('market.trades')").fetchone()[0] == "market.trades"


def test_definitions_object_has_the_platform_resources() -> None:
    from rrr_platform.definitions import defs

    assert isinstance(defs, dg.Definitions)
    assert {"postgres", "redis", "mlflow"} <= set(defs.resources or {})
