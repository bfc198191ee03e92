"""The sinks against real servers that go away and come back."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import redis

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.ingest.batch import Batch
from rrr_platform.ingest.metrics import IngestMetrics
from rrr_platform.ingest.sinks.postgres import PostgresSink
from rrr_platform.ingest.sinks.redis import RedisSink
from rrr_platform.market.types import BINANCE, DeadLetter, Trade
from rrr_platform_tests.private_servers import private_servers

BASE_NS = time.time_ns() - 60_000_000_000


def make_trades(start_id: int, n: int, symbol: str = "BTC-USDT") -> list[Trade]:
    """Trades whose every field follows from the id, so a replay is byte-for-byte the same trade."""
    now = time.time_ns()
    return [
        Trade(venue=BINANCE, symbol=symbol, venue_symbol=symbol.replace("-", ""), trade_id=str(i),
              price=Decimal("94210.01") + i, size=Decimal("0.0035"), aggressor="BUY",
              exchange_ts_ns=BASE_NS + i * 1_000_000, receive_ts_ns=now, seq=i, seq_scope="instrument",
              gapless=True)
        for i in range(start_id, start_id + n)
    ]


async def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_postgres_restart_mid_stream_loses_and_duplicates_nothing(tmp_path) -> None:
    with private_servers() as (pg, _):
        metrics = IngestMetrics("t")
        sink = PostgresSink(pg.url, metrics, tmp_path / "spill", max_buffered_records=300)
        await sink.start()
        sink.submit(Batch(trades=make_trades(0, 100)))
        await wait_for(lambda: metrics.total("stored") == 100)

        pg.stop()
        for start in range(100, 1100, 100):  # 1,000 trades while PostgreSQL is down
            sink.submit(Batch(trades=make_trades(start, 100)))
        sink.submit(Batch(trades=make_trades(500, 100)))  # a replayed batch
        sink.submit(Batch(dead_letters=[DeadLetter(venue=BINANCE, reason="bad", payload=b"\xff{",
                                                   receive_ts_ns=time.time_ns())]))
        await asyncio.sleep(0.5)
        assert any((tmp_path / "spill").glob("*.msgpack")), "past the memory bound, batches spill to disk"

        pg.start()
        assert await sink.close(timeout=60)
        count = pg.count("SELECT count(*) FROM market.trades")
        distinct = pg.count("SELECT count(DISTINCT trade_id) FROM market.trades")
        assert count == distinct == 1100
        assert pg.count("SELECT count(*) FROM market.dead_letters WHERE payload = %s", b"\xff{") == 1
        assert metrics.total("stored") == 1100 and metrics.total("duplicates") == 100
        assert not list((tmp_path / "spill").glob("*.msgpack"))


async def test_batches_spilled_by_a_stopped_process_are_written_by_the_next(tmp_path) -> None:
    with private_servers() as (pg, _):
        pg.stop()
        first = PostgresSink(pg.url, IngestMetrics("t"), tmp_path / "spill", max_buffered_records=10_000)
        await first.start()
        first.submit(Batch(trades=make_trades(0, 250)))
        assert not await first.close(timeout=1.0)  # cannot finish: PostgreSQL is down
        assert list((tmp_path / "spill").glob("*.msgpack"))

        pg.start()
        metrics = IngestMetrics("t")
        second = PostgresSink(pg.url, metrics, tmp_path / "spill")
        await second.start()
        assert await second.close(timeout=60)
        assert pg.count("SELECT count(*) FROM market.trades") == 250
        assert metrics.total("stored") == 250


async def test_redis_down_never_blocks_and_latest_value_heals(tmp_path) -> None:
    with private_servers() as (_, rd):
        metrics = IngestMetrics("t")
        keys = RedisKeys("rrr-test:")
        sink = RedisSink(rd.url, "rrr-test:", metrics, max_pending_records=40)
        await sink.start()
        sink.submit(Batch(trades=make_trades(0, 10)))
        client = redis.Redis.from_url(rd.url)
        await wait_for(lambda: client.hget(keys.last(BINANCE, "BTC-USDT"), "trade_id") == b"9")

        rd.stop()
        started = time.perf_counter()
        for start in range(10, 110, 10):
            sink.submit(Batch(trades=make_trades(start, 10)))
        assert time.perf_counter() - started < 1.0  # submit never waits for Redis
        await asyncio.sleep(0.3)
        assert metrics.total("redis_dropped") > 0  # the bounded queue dropped the oldest batches

        rd.start()
        client = redis.Redis.from_url(rd.url)
        await wait_for(lambda: client.hget(keys.last(BINANCE, "BTC-USDT"), "trade_id") == b"109")
        sink.submit(Batch(trades=make_trades(50, 10)))  # older trades (a replay) never move it back
        await sink.close()
        assert client.hget(keys.last(BINANCE, "BTC-USDT"), "trade_id") == b"109"
        assert client.hget(keys.last(BINANCE, "BTC-USDT"), "price") == b"94319.01"
