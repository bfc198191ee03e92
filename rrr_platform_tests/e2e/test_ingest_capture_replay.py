"""The engine's raw capture replays through the simulator into exactly the same stored trades."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request

import psycopg

from rrr_platform.ingest.engine import IngestEngine
from rrr_platform.ingest.shards import shard_by_name
from rrr_platform.ingest.sinks.capture import CaptureReader
from rrr_platform.simulator.model import MarketConfig
from rrr_platform.simulator.server import ReplaySpec, SimulatorConfig, SimulatorServer
from rrr_platform_tests.conftest import create_database, drop_database
from rrr_platform_tests.e2e.conftest import simulator_settings
from rrr_platform_tests.private_servers import free_port


async def _ingest(
    sim: SimulatorServer,
    tmp_path,
    pg_url: str,
    redis_url: str,
    prefix: str,
    seconds: float,
    **shard_overrides,
) -> IngestEngine:
    settings = simulator_settings(sim, tmp_path, pg_url, redis_url, prefix)
    shard = dataclasses.replace(shard_by_name(settings, "binance"), **shard_overrides)
    engine = IngestEngine(shard, settings, pg_url, redis_url)
    task = asyncio.create_task(engine.run())
    await asyncio.sleep(seconds)
    engine.stop()
    await task
    return engine


def _trades(url: str) -> set[tuple]:
    with psycopg.connect(url) as conn:
        return set(
            conn.execute("SELECT venue, symbol, trade_id, ts, price, size, aggressor FROM market.trades")
        )


async def test_capture_then_replay_stores_the_same_trades(
    tmp_path, redis_url: str, redis_prefix: str
) -> None:
    live_db, replay_db = create_database("rrr_test_cap"), create_database("rrr_test_rep")
    try:
        port = free_port()
        live_config = SimulatorConfig(port=0, market=MarketConfig(trade_rate_scale=6.0))
        async with SimulatorServer(live_config) as sim:
            engine = await _ingest(
                sim,
                tmp_path / "live",
                live_db,
                redis_url,
                f"{redis_prefix}cap:",
                6,
                capture=True,
                metrics_port=port,
            )
            # The Prometheus endpoint serves the same counters while the engine runs (checked after).
        captured = list(CaptureReader(tmp_path / "live" / "capture" / "binance"))
        assert len(captured) == engine.metrics.total("frames") > 0
        assert {r.venue for r in captured} == {"binance_spot"}
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert (
            'rrr_ingest_stored_total{shard="binance",symbol="BTC-USDT",venue="binance_spot"}'
            in metrics_text
        )

        replay = SimulatorConfig(
            port=0, replay=ReplaySpec(str(tmp_path / "live" / "capture" / "binance"), speed=0)
        )
        async with SimulatorServer(replay) as sim:
            await _ingest(
                sim,
                tmp_path / "replay",
                replay_db,
                redis_url,
                f"{redis_prefix}rep:",
                4,
                max_clock_skew_s=86400,
            )
        live, replayed = _trades(live_db), _trades(replay_db)
        assert live and replayed == live
    finally:
        drop_database(live_db)
        drop_database(replay_db)
