"""Redis sink: latest value per instrument, a pub/sub channel per instrument, one capped stream.

Backfilled trades (``Batch.backfill``) only ever advance the latest value; they are not published.

Redis is a view of the newest data, not the record (PostgreSQL is), so a slow or absent Redis must
never slow the reader or PostgreSQL: records wait in a bounded queue and, past the bound, the oldest
are dropped and counted (``redis_dropped``). Latest values heal with the next write.

Latency: the engine hands over each frame's records at once, and the writer takes everything queued
while its previous pipeline was in flight: one frame per pipeline at low rates (a Redis round trip
of latency), large pipelines at high rates (throughput). One pipeline per write: one HSET per
instrument (its newest trade only), one PUBLISH per instrument (its trades, as a JSON array), one
XADD per instrument (same payload) to a stream capped with ``MAXLEN ~``: per-write entries keep
Redis' work per trade small at 100k trades/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.ingest.backoff import Backoff
from rrr_platform.ingest.batch import Batch
from rrr_platform.ingest.metrics import IngestMetrics
from rrr_platform.market.types import Quote, Trade

log = logging.getLogger(__name__)


def trade_fields(trade: Trade) -> dict[str, str | int]:
    return {
        "venue": trade.venue,
        "symbol": trade.symbol,
        "trade_id": trade.trade_id,
        "price": str(trade.price),
        "size": str(trade.size),
        "aggressor": trade.aggressor,
        "ts_ns": trade.exchange_ts_ns,
        "receive_ts_ns": trade.receive_ts_ns,
    }


def recency(trade: Trade) -> tuple[int, int, str]:
    """Which of two trades is newer: exchange time, then sequence, then trade id (as PostgreSQL's
    ``ORDER BY exchange_ts_ns, seq, trade_id COLLATE "C"`` sorts them)."""
    return trade.exchange_ts_ns, trade.seq or 0, trade.trade_id


def _text(value: object) -> str:
    return "" if value is None else str(value)


class RedisSink:
    def __init__(
        self,
        url: str,
        prefix: str,
        metrics: IngestMetrics,
        *,
        max_pending_records: int = 200_000,
        stream_maxlen: int = 100_000,
    ) -> None:
        self.url = url
        self.keys = RedisKeys(prefix)
        self.metrics = metrics
        self.max_pending_records = max_pending_records
        self._pending_records = 0
        self.stream_maxlen = stream_maxlen
        self._queue: deque[Batch] = deque()
        self._available = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # Newest (exchange time, seq) written per instrument: out-of-order, replayed and backfilled
        # trades never move the latest value backwards.
        self._latest: dict[tuple[str, str], tuple[int, int, str]] = {}
        self.client: aioredis.Redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.connected = False

    def submit(self, batch: Batch) -> None:
        if not (batch.trades or batch.quotes):
            return
        self._queue.append(batch)
        self._pending_records += len(batch.trades) + len(batch.quotes)
        while self._pending_records > self.max_pending_records and len(self._queue) > 1:
            self._drop(self._queue.popleft())
        self._available.set()

    def _drop(self, batch: Batch) -> None:
        self._pending_records -= len(batch.trades) + len(batch.quotes)
        for trade in batch.trades:
            self.metrics.inc("redis_dropped", trade.venue, trade.symbol)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-sink")

    async def _run(self) -> None:
        backoff = Backoff(initial=0.1, cap=5.0)
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._available.clear()
                await self._available.wait()
                continue
            taken, self._queue = self._queue, deque()
            taken_records = self._pending_records
            self._pending_records = 0
            try:
                await self._write_all(taken)
                self.connected = True
                backoff.reset()
            except (RedisError, OSError) as exc:
                self.connected = False
                # Put the records back in front of anything newer, within the bound.
                self._queue.extendleft(reversed(taken))
                self._pending_records += taken_records
                while self._pending_records > self.max_pending_records and len(self._queue) > 1:
                    self._drop(self._queue.popleft())
                if self._closing:  # Redis is down at shutdown: nothing to wait for
                    return
                delay = backoff.next_delay()
                log.warning("Redis write failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    async def _write_all(self, batches: deque[Batch]) -> None:
        live = Batch(
            trades=[t for b in batches if not b.backfill for t in b.trades],
            quotes=[q for b in batches for q in b.quotes],
        )
        history = [t for b in batches if b.backfill for t in b.trades]
        pipe = self.client.pipeline(transaction=False)
        latest = self._queue_latest(pipe, live.trades + history)
        self._queue_publish(pipe, live)
        await pipe.execute()
        self._latest.update(latest)
        if live.trades:
            done_ns = time.time_ns()
            receive = np.fromiter(
                (t.receive_ts_ns for t in live.trades), dtype=np.int64, count=len(live.trades)
            )
            self.metrics.observe_latencies(
                "receive_to_redis", live.trades[0].venue, (done_ns - receive) / 1e9
            )

    def _queue_latest(self, pipe, trades: list[Trade]) -> dict[tuple[str, str], tuple[int, int, str]]:
        """HSET the newest trade per instrument when it is newer than what Redis holds."""
        newest: dict[tuple[str, str], Trade] = {}
        for trade in trades:
            key = (trade.venue, trade.symbol)
            current = newest.get(key)
            if current is None or recency(trade) > recency(current):
                newest[key] = trade
        updates = {}
        for (venue, symbol), trade in newest.items():
            if recency(trade) > self._latest.get((venue, symbol), (-1, -1, "")):
                pipe.hset(self.keys.last(venue, symbol), mapping=trade_fields(trade))
                updates[(venue, symbol)] = recency(trade)
        return updates

    def _queue_publish(self, pipe, batch: Batch) -> None:
        by_symbol: dict[tuple[str, str], list[Trade]] = {}
        for trade in batch.trades:
            by_symbol.setdefault((trade.venue, trade.symbol), []).append(trade)
        for (venue, symbol), trades in by_symbol.items():
            payload = orjson.dumps([trade_fields(t) for t in trades])
            pipe.publish(self.keys.trades_channel(venue, symbol), payload)
            pipe.xadd(
                self.keys.trades_stream(),
                {"venue": venue, "symbol": symbol, "n": len(trades), "trades": payload},
                maxlen=self.stream_maxlen,
                approximate=True,
            )
        quotes: dict[tuple[str, str], Quote] = {}
        for quote in batch.quotes:
            quotes[(quote.venue, quote.symbol)] = quote
        for (venue, symbol), quote in quotes.items():
            pipe.hset(
                self.keys.last(venue, symbol),
                mapping={
                    "bid_px": _text(quote.bid_px),
                    "ask_px": _text(quote.ask_px),
                    "bid_sz": _text(quote.bid_sz),
                    "ask_sz": _text(quote.ask_sz),
                    "quote_ts_ns": quote.ts_ns,
                },
            )

    async def heartbeat(self, shard: str, ttl_s: float, payload: dict[str, object]) -> bool:
        try:
            await self.client.set(self.keys.heartbeat(shard), orjson.dumps(payload), px=int(ttl_s * 1000))
            return True
        except (RedisError, OSError):
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued, bounded: Redis down at shutdown must not hold up the stop."""
        self._closing = True
        self._available.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        with contextlib.suppress(Exception):
            await self.client.aclose()
