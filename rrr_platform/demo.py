"""The end-to-end demo behind ``make demo``: it always ends by itself.

Services (embedded or configured) -> schema -> the exchange simulator on a free loopback port ->
REST history backfill (the Dagster ``market_history`` asset) -> a live stream from all three venues
into PostgreSQL and Redis -> bars, features, models, predictions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time

import click
import dagster as dg
import psycopg
import redis

from rrr_platform import services
from rrr_platform.cache.keys import RedisKeys
from rrr_platform.settings import Settings, get_settings, load_settings
from rrr_platform.storage.migrate import migrate

# Dagster's console logger prints every event; the demo shows its own summary (the UI has the rest).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _step(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


def _done(started: float) -> None:
    click.echo(f"   ({time.perf_counter() - started:.1f} s)")


def _point_at_simulator(sim, urls: services.ServiceUrls) -> Settings:  # sim: SimulatorProcess
    """Every venue endpoint of this process (and of the Dagster code it runs) is the simulator."""
    os.environ.update(
        RRR_POSTGRES_URL=urls.postgres,
        RRR_REDIS_URL=urls.redis,
        MLFLOW_TRACKING_URI=urls.mlflow,
        RRR_BINANCE_WS_URL=sim.url("binance"),
        RRR_BINANCE_REST_URL=sim.rest_url("binance"),
        RRR_COINBASE_WS_URL=sim.url("coinbase"),
        RRR_COINBASE_REST_URL=sim.rest_url("coinbase"),
        RRR_POLYGON_WS_URL=sim.url("polygon"),
        RRR_POLYGON_STOCKS_WS_URL=sim.url("polygon", "stocks"),
        RRR_POLYGON_REST_URL=sim.rest_url("polygon"),
    )
    get_settings.cache_clear()
    return load_settings()


def run_demo(settings: Settings, *, days: int = 7, stream_s: float = 20.0) -> None:
    from rrr_platform.simulator.server import start_subprocess

    t = _step("services")
    urls = services.ensure_services(settings)
    kind = "embedded" if settings.postgres_url is None else "configured"
    click.echo(f"   postgres ({kind}): {urls.postgres}\n   redis: {urls.redis}\n   mlflow: {urls.mlflow}")
    applied = migrate(urls.postgres)
    click.echo(f"   schema: {len(applied)} migration(s) applied" if applied else "   schema: up to date")
    _done(t)

    t = _step("exchange simulator")
    with start_subprocess(["--seed", "7", "--signal", "flow"]) as sim:
        click.echo(f"   Binance, Coinbase and Polygon protocols on 127.0.0.1:{sim.port}")
        settings = _point_at_simulator(sim, urls)
        _done(t)
        _history(settings, days)
        _stream(settings, urls, stream_s)
    click.secho("\n== demo done", bold=True)


def _history(settings: Settings, days: int) -> None:
    from rrr_platform.defs.history import market_history
    from rrr_platform.defs.instance import platform_instance
    from rrr_platform.defs.resources import PostgresResource

    t = _step(f"history: {days} day(s) of 1-minute candles over each venue's REST API (Dagster asset)")
    today = dt.datetime.now(dt.UTC).date()
    keys = [(today - dt.timedelta(days=d)).isoformat() for d in range(days, 0, -1)]
    instance = platform_instance(settings)
    for key in keys:
        result = dg.materialize(
            [market_history],
            partition_key=key,
            instance=instance,
            resources={"postgres": PostgresResource(url=settings.postgres_url)},
        )
        meta = result.asset_materializations_for_node("market_history")[0].metadata
        click.echo(
            f"   {key}: {meta['bars'].value:>6} bars for {meta['instruments'].value} instruments"
            f" ({meta['skipped_already_done'].value} already done)"
        )
    _done(t)


def _stream(settings: Settings, urls: services.ServiceUrls, seconds: float) -> None:
    from rrr_platform.ingest.runner import run_shards

    t = _step(f"live stream: all three venues for {seconds:.0f} s into PostgreSQL and Redis")
    summaries = asyncio.run(run_shards(settings, urls.postgres, urls.redis, duration_s=seconds))
    for s in summaries:
        c = s["counters"]
        lat = s["latency_s"]
        p50 = lat.get("receive_to_redis", {}).get("p50", float("nan")) * 1000
        p99 = lat.get("receive_to_committed", {}).get("p99", float("nan")) * 1000
        click.echo(
            f"   {s['shard']:<9} frames {c['frames']:>7}  trades {c['received']:>7}  stored {c['stored']:>7}"
            f"  dead-lettered {c['rejected']:>4}  gaps {c['gaps']:>3}  reconnects {c['reconnects']}"
            f"  receive->redis p50 {p50:.1f} ms  receive->committed p99 {p99:.1f} ms"
        )
    with psycopg.connect(urls.postgres) as conn:
        rows = conn.execute(
            "SELECT venue, count(*), count(DISTINCT symbol), max(ts) FROM market.trades"
            " WHERE ts > now() - interval '1 hour' GROUP BY venue ORDER BY venue"
        ).fetchall()
    click.echo("   PostgreSQL market.trades (last hour):")
    for venue, n, symbols, newest in rows:
        click.echo(f"     {venue:<18} {n:>7} trades  {symbols:>2} symbols  newest {newest:%H:%M:%S.%f}")
    client = redis.Redis.from_url(urls.redis)
    keys = RedisKeys(settings.redis_prefix)
    click.echo("   Redis latest prices:")
    for venue, symbol in (
        ("binance_spot", "BTC-USDT"),
        ("coinbase_exchange", "BTC-USD"),
        ("polygon", "BTC-USD"),
        ("polygon", "AAPL"),
    ):
        latest = client.hgetall(keys.last(venue, symbol))
        if latest:
            click.echo(
                f"     {venue:<18} {symbol:<9} {latest[b'price'].decode():>12}"
                f"  size {latest[b'size'].decode()}"
            )
    client.close()
    _done(t)
