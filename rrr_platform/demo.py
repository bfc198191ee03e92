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
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
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
        _features(settings, days)
        _models(settings, urls, days)
    click.secho("\n== demo done", bold=True)


def _resources(settings: Settings) -> dict[str, object]:
    from rrr_platform.defs.resources import MlflowResource, PostgresResource, RedisResource

    return {
        "postgres": PostgresResource(url=settings.postgres_url),
        "redis": RedisResource(url=settings.redis_url, prefix=settings.redis_prefix),
        "mlflow": MlflowResource(tracking_uri=settings.mlflow_uri),
    }


def _day_keys(days: int) -> list[str]:
    today = dt.datetime.now(dt.UTC).date()
    return [(today - dt.timedelta(days=d)).isoformat() for d in range(days, 0, -1)]


def _features(settings: Settings, days: int) -> None:
    from rrr_platform.defs.features import features, news_sentiment
    from rrr_platform.defs.instance import platform_instance

    t = _step(f"news sentiment and features for {days} day(s) (Dagster assets)")
    instance = platform_instance(settings)
    for key in _day_keys(days):
        # Two runs: news_sentiment's partitions reach today (hourly refresh), features' end yesterday.
        news = dg.materialize(
            [news_sentiment],
            partition_key=key,
            instance=instance,
            run_config=QUIET,
            resources=_resources(settings),
        )
        feats = dg.materialize(
            [features], partition_key=key, instance=instance, run_config=QUIET, resources=_resources(settings)
        )
        news = news.asset_materializations_for_node("news_sentiment")[0].metadata
        feats = feats.asset_materializations_for_node("features")[0].metadata
        click.echo(
            f"   {key}: {news['headlines'].value if 'headlines' in news else '?':>4} headlines,"
            f" {feats['rows'].value:>6} feature rows for {feats['symbols'].value} symbols"
        )
    _done(t)


def _models(settings: Settings, urls: services.ServiceUrls, days: int) -> None:
    from rrr_platform.defs import models
    from rrr_platform.defs.instance import platform_instance
    from rrr_platform.ml.predictor import predict_symbol

    t = _step("train (purged walk-forward), register in MLflow, promotion gate, batch predictions")
    run_config = {**QUIET, "ops": {"training_set": {"config": {"days": days}}}}
    result = dg.materialize(
        models.ASSETS,
        instance=platform_instance(settings),
        run_config=run_config,
        resources=_resources(settings),
    )
    champion = result.asset_materializations_for_node("champion")[0].metadata
    for model, reason in champion["reasons"].value.items():  # type: ignore[union-attr]
        promoted = champion[f"{model}_promoted"].value
        click.echo(
            f"   {model}: {'PROMOTED' if promoted else 'not promoted'}"
            f" (champion v{champion[f'{model}_champion'].value}): {reason}"
        )
    with psycopg.connect(urls.postgres) as conn:
        moves = conn.execute(
            "SELECT model, alias, version, reason FROM ml.alias_history ORDER BY id"
        ).fetchall()
        preds = conn.execute(
            "SELECT count(*), count(DISTINCT symbol), min(tier), max(tier) FROM ml.predictions"
        ).fetchone()
    for model, alias, version, reason in moves:
        click.echo(f"   alias {model}@{alias} -> v{version}: {reason[:110]}")
    click.echo(f"   ml.predictions: {preds[0]} rows for {preds[1]} symbols (tiers {preds[2]}..{preds[3]})")
    click.echo("   live predictions (rrr predict):")
    for symbol in ("BTC-USDT", "ETH-USDT", "SOL-USDT"):
        prediction, _ = predict_symbol(settings, symbol)
        if prediction is not None:
            click.echo(
                f"     {symbol:<9} P(up)={prediction.value:.4f}  {prediction.model} v{prediction.version}"
                f"  tier={prediction.tier}"
            )
    _done(t)


def _history(settings: Settings, days: int) -> None:
    from rrr_platform.defs.history import market_history
    from rrr_platform.defs.instance import platform_instance

    t = _step(f"history: {days} day(s) of 1-minute candles over each venue's REST API (Dagster asset)")
    instance = platform_instance(settings)
    for key in _day_keys(days):
        result = dg.materialize(
            [market_history],
            partition_key=key,
            instance=instance,
            run_config=QUIET,
            resources=_resources(settings),
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
        if b"price" in latest:  # a hash may so far hold only the quote
            click.echo(
                f"     {venue:<18} {symbol:<9} {latest[b'price'].decode():>12}"
                f"  size {latest[b'size'].decode()}"
            )
    client.close()
    _done(t)
