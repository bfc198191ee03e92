"""The ``rrr`` command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from rrr_platform import services
from rrr_platform.settings import Settings, SettingsError, load_settings
from rrr_platform.storage.migrate import migrate


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """RRR Platform: market-data ingest and ML on Dagster."""


@main.group("services")
def services_group() -> None:
    """Embedded PostgreSQL and Redis under RRR_HOME (used where no URL is configured)."""


@services_group.command("up")
def services_up() -> None:
    urls = services.ensure_services(_settings())
    click.echo(f"postgres  {urls.postgres}\nredis     {urls.redis}\nmlflow    {urls.mlflow}")


@services_group.command("down")
def services_down() -> None:
    stopped = services.stop_services(_settings())
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services_group.command("status")
def services_status() -> None:
    _print_status(_settings())


def _print_status(settings: Settings) -> None:
    for st in services.service_status(settings):
        state = "running" if st.running else "stopped"
        kind = "embedded" if st.embedded else "external"
        click.echo(f"{st.name:<9} {state:<8} {kind:<9} {st.url}" + (f"  ({st.detail})" if st.detail else ""))


@main.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the PostgreSQL schemas."""
    urls = services.ensure_services(_settings())
    applied = migrate(urls.postgres)
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@main.command("status")
def status_cmd() -> None:
    """What is running and where the data lives."""
    settings = _settings()
    click.echo(f"RRR_HOME  {settings.home_dir}")
    _print_status(settings)


def _dagster_home(settings: Settings) -> Path:
    home = settings.home_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).resolve().parent.parent / "dagster.yaml", home / "dagster.yaml")
    return home


def _service_env(settings: Settings) -> dict[str, str]:
    urls = services.ensure_services(settings)
    env = dict(os.environ)
    env.update(
        RRR_HOME=str(settings.home_dir),
        RRR_POSTGRES_URL=urls.postgres,
        RRR_REDIS_URL=urls.redis,
        MLFLOW_TRACKING_URI=urls.mlflow,
        MLFLOW_DISABLE_TELEMETRY="true",
        DAGSTER_DISABLE_TELEMETRY="true",
        DAGSTER_HOME=str(_dagster_home(settings)),
    )
    return env


@main.command("ui")
@click.option("--dagster-port", default=3000, show_default=True)
@click.option("--mlflow-port", default=5000, show_default=True)
def ui_cmd(dagster_port: int, mlflow_port: int) -> None:
    """Dagster UI and MLflow UI on 127.0.0.1; Ctrl-C stops both."""
    settings = _settings()
    env = _service_env(settings)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    root = Path(__file__).resolve().parent.parent
    procs = [
        subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-w", str(root / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(dagster_port)],
            env=env, cwd=root, start_new_session=True,
        ),
        subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1", "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
             "--default-artifact-root", str(settings.mlflow_artifact_root)],
            env=env, cwd=root, start_new_session=True,
        ),
    ]
    click.echo(f"Dagster UI  http://127.0.0.1:{dagster_port}\nMLflow UI   http://127.0.0.1:{mlflow_port}")
    click.echo("Ctrl-C stops both.")
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        # Each child leads its own process group: SIGTERM to the group stops dagster dev's whole tree
        # (webserver, daemon, code server) and mlflow's workers.
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    click.echo("stopped")


@main.command("demo")
def demo_cmd() -> None:
    """End to end: services, schema, and (as capabilities land) stream, features, models."""
    from rrr_platform.demo import run_demo

    run_demo(_settings())


if __name__ == "__main__":
    main()
