"""The end-to-end demo behind ``make demo``. It grows as capabilities land and always ends by itself."""

from __future__ import annotations

import click
import psycopg

from rrr_platform import services
from rrr_platform.settings import Settings
from rrr_platform.storage.migrate import migrate


def run_demo(settings: Settings) -> None:
    urls = services.ensure_services(settings)
    kind = "embedded" if settings.postgres_url is None else "configured"
    click.echo(f"[services] postgres ({kind}): {urls.postgres}")
    click.echo(f"[services] redis: {urls.redis}")
    applied = migrate(urls.postgres)
    click.echo(f"[schema] applied {len(applied)} migration(s)" if applied else "[schema] up to date")
    with psycopg.connect(urls.postgres) as conn:
        tables = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('market', 'ml') AND table_name NOT LIKE '%%\\_p2%%' ORDER BY 1"
        ).fetchall()
    click.echo("[schema] tables: " + ", ".join(t for (t,) in tables))
    click.echo("[demo] done")
