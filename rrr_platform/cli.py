"""The ``rrr`` command."""

from __future__ import annotations

import os
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
    from rrr_platform.storage.query_stats import query_stats_lines  # query timings, every process

    pg = next(s for s in services.service_status(settings) if s.name == "postgres")
    for line in query_stats_lines(pg.url) if pg.running else ["queries   (postgres not running)"]:
        click.echo(line)


def _service_env(settings: Settings) -> dict[str, str]:
    from rrr_platform.defs.instance import dagster_home

    urls = services.ensure_services(settings)
    env = dict(os.environ)
    env.update(
        RRR_HOME=str(settings.home_dir),
        RRR_POSTGRES_URL=urls.postgres,
        RRR_REDIS_URL=urls.redis,
        MLFLOW_TRACKING_URI=urls.mlflow,
        MLFLOW_DISABLE_TELEMETRY="true",
        DAGSTER_DISABLE_TELEMETRY="true",
        DAGSTER_HOME=str(dagster_home(settings)),
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
            [
                str(bin_dir / "dagster"),
                "dev",
                "-w",
                str(root / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(dagster_port),
            ],
            env=env,
            cwd=root,
            start_new_session=True,
        ),
        subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                env["MLFLOW_TRACKING_URI"],
                "--default-artifact-root",
                str(settings.mlflow_artifact_root),
            ],
            env=env,
            cwd=root,
            start_new_session=True,
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


@main.command("ingest")
@click.option(
    "--shard", "shards", multiple=True, help="Shard(s) to run (default: all): binance, coinbase, polygon"
)
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)"
)
@click.option("--capture/--no-capture", default=False, help="Write every raw frame to $RRR_HOME/capture")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT")
def ingest_cmd(
    shards: tuple[str, ...], duration: float | None, capture: bool, metrics_port: int | None
) -> None:
    """Stream trades and quotes into PostgreSQL and Redis (the market_stream job, without Dagster)."""
    import asyncio
    import logging

    from rrr_platform.ingest.runner import run_shards

    logging.basicConfig(level=_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings()
    urls = services.ensure_services(settings)
    migrate(urls.postgres)
    summaries = asyncio.run(
        run_shards(
            settings,
            urls.postgres,
            urls.redis,
            list(shards) or None,
            duration_s=duration,
            capture=capture,
            metrics_port=metrics_port,
        )
    )
    for summary in summaries:
        click.echo(f"{summary['shard']}: {summary['counters']}")


@main.command(
    "simulate", add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulate_cmd(args: tuple[str, ...]) -> None:
    """Local Binance/Coinbase/Polygon simulator (--port --seed --signal --faults ...; --help for all)."""
    from rrr_platform.simulator.server import main as simulator_main

    simulator_main(list(args))


@main.command("predict")
@click.argument("symbol")
@click.option("--venue", default="binance_spot", show_default=True)
@click.option("--model", default="rrr_direction", show_default=True, help="rrr_direction or rrr_volatility")
def predict_cmd(symbol: str, venue: str, model: str) -> None:
    """The live prediction for SYMBOL, with the model version and the tier that answered."""
    from rrr_platform.ml.predictor import predict_symbol
    from rrr_platform.ml.registry import mlflow_environment

    mlflow_environment()
    prediction, stats = predict_symbol(_settings(), symbol, venue, model)
    if prediction is None:
        raise click.ClickException(f"no bars for {venue}:{symbol} in market.bars_1m: nothing to predict from")
    bar = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(prediction.bar_ts_ns // 1_000_000_000))
    click.echo(f"{prediction.symbol}  {prediction.model}  value={prediction.value:.6f}  "
               f"version={prediction.version}  tier={prediction.tier}  bar={bar}")
    faults = {k: v for k, v in stats.items() if k.startswith("fallback.")}
    if faults:
        click.echo("fallbacks: " + ", ".join(f"{k}={v}" for k, v in sorted(faults.items())))


@main.command("demo")
@click.option("--days", default=7, show_default=True, help="Days of REST history to backfill")
@click.option("--stream-seconds", default=20.0, show_default=True, help="How long to stream live")
def demo_cmd(days: int, stream_seconds: float) -> None:
    """End to end: services, simulator, history, live stream, features, models, predictions."""
    from rrr_platform.demo import run_demo

    run_demo(_settings(), days=days, stream_s=stream_seconds)


if __name__ == "__main__":
    main()
