"""PostgreSQL restarted and Redis stopped in the middle of a live stream: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import dataclasses

import psycopg
import redis

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.ingest.engine import IngestEngine
from rrr_platform.ingest.shards import default_shards
from rrr_platform.market.types import BINANCE, COINBASE
from rrr_platform.simulator.faults import FaultSpec
from rrr_platform.simulator.model import MarketConfig
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform_tests.e2e.conftest import simulator_settings
from rrr_platform_tests.private_servers import private_servers


async def test_postgres_restart_and_redis_outage_mid_stream(tmp_path) -> None:
    with private_servers() as (pg, rd):
        config = SimulatorConfig(port=0, market=MarketConfig(seed=5, trade_rate_scale=8.0))
        async with SimulatorServer(config) as sim:
            settings = simulator_settings(sim, tmp_path, pg.url, rd.url, "rrr-outage:")
            shards = [
                dataclasses.replace(default_shards(settings)[name], max_buffered_records=500)
                for name in ("binance", "coinbase")
            ]
            engines = [IngestEngine(shard, settings, pg.url, rd.url) for shard in shards]
            tasks = [asyncio.create_task(e.run()) for e in engines]
            await asyncio.sleep(4)
            stored_before = pg.count("SELECT count(*) FROM market.trades")
            pg.stop()  # PostgreSQL goes away mid-stream...
            await asyncio.sleep(4)
            pg.start()  # ...and comes back
            rd.stop()  # then Redis goes away
            await asyncio.sleep(3)
            rd.start()
            await asyncio.sleep(4)
            for connection_id in list(sim.sessions):  # silence, then let what is on the wire arrive
                sim.set_faults(FaultSpec(silent_after=1), connection_id=connection_id)
            await asyncio.sleep(1.5)
            for engine in engines:
                engine.stop()
            await asyncio.gather(*tasks)

            assert stored_before > 0
            assert sum(e.metrics.total("spilled") for e in engines) > 0, (
                "the outage outlasted the memory bound"
            )
            with psycopg.connect(pg.url) as conn:
                rows = conn.execute(
                    "SELECT count(*), count(DISTINCT (venue, symbol, trade_id)) FROM market.trades"
                ).fetchone()
                stored = {
                    (v, s): {
                        int(t)
                        for (t,) in conn.execute(
                            "SELECT trade_id FROM market.trades WHERE venue = %s AND symbol = %s", (v, s)
                        )
                    }
                    for v, s in conn.execute("SELECT DISTINCT venue, symbol FROM market.trades")
                }
            assert rows[0] == rows[1], "a trade was stored twice"
            for venue in (BINANCE, COINBASE):
                keys = [k for k in stored if k[0] == venue]
                assert keys
                for key in keys:
                    streamed = {int(i) for i in sim.accounting.account(*key).streamed}
                    assert streamed <= stored[key], f"{key}: streamed trades lost"
                    assert stored[key] == set(range(min(stored[key]), max(stored[key]) + 1)), f"{key}: hole"
            assert not list((tmp_path / "spill").rglob("*.msgpack")), "spilled batches were all written"

            client = redis.Redis.from_url(rd.url)
            keys = RedisKeys("rrr-outage:")
            with psycopg.connect(pg.url) as conn:
                newest = conn.execute(
                    "SELECT DISTINCT ON (venue, symbol) venue, symbol, trade_id FROM market.trades ORDER BY"
                    ' venue, symbol, exchange_ts_ns DESC, seq DESC NULLS LAST, trade_id COLLATE "C" DESC'
                ).fetchall()
            for venue, symbol, trade_id in newest:
                assert client.hget(keys.last(venue, symbol), "trade_id") == trade_id.encode(), (venue, symbol)
            client.close()
