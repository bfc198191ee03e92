"""The ingest engine: venue WebSockets into PostgreSQL and Redis, for one shard.

Per feed, a connection loop connects, subscribes and reads frames; on any error it reconnects with
capped exponential backoff and jitter and resubscribes. Each frame is stamped with its receive time,
optionally captured raw, parsed by the venue adapter, and validated; every frame ends up as records,
dead letters or control events, and nothing in between is dropped. Records gather into batches that
flush by size or age to the PostgreSQL sink (bounded buffer, spill to disk) and the Redis sink
(never slows the rest). Gapless sequences are checked for continuity; each gap is recorded in
``market.gaps`` and backfilled over the venue's REST API by a separate task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
import psycopg
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from rrr_platform.ingest.backoff import Backoff
from rrr_platform.ingest.batch import Batch
from rrr_platform.ingest.config import FeedConfig, ShardConfig
from rrr_platform.ingest.continuity import ContinuityTracker, Gap
from rrr_platform.ingest.metrics import IngestMetrics
from rrr_platform.ingest.sinks.capture import CaptureWriter
from rrr_platform.ingest.sinks.postgres import PostgresSink
from rrr_platform.ingest.sinks.redis import RedisSink
from rrr_platform.ingest.validation import validate_quote, validate_trade
from rrr_platform.market.types import POLYGON, DeadLetter, Trade
from rrr_platform.settings import Settings
from rrr_platform.storage import writers
from rrr_platform.venues import base as venue_base

log = logging.getLogger(__name__)


class FatalFeedError(RuntimeError):
    """The venue refused us in a way reconnecting cannot fix (bad API key)."""


@dataclass
class _Feed:
    config: FeedConfig
    module: ModuleType
    ws_url: str
    rest_url: str
    symbols: frozenset[str]
    connections: int = 0
    websocket: websockets.ClientConnection | None = None
    last_frame_mono: float = 0.0
    # Newest exchange time seen per symbol: where a venue has no gapless ids (Polygon), what a
    # disconnection missed is reconciled over REST from here to the reconnect.
    last_trade_ns: dict[str, int] = field(default_factory=dict)
    # After a reconnect: symbol -> last time seen before it, until the first trade of the new
    # connection closes the range to reconcile.
    reconcile_from: dict[str, int] = field(default_factory=dict)
    authenticated: bool = False


class IngestEngine:
    def __init__(
        self, shard: ShardConfig, settings: Settings, postgres_url: str, redis_url: str, *, run_id: str = ""
    ) -> None:
        self.shard = shard
        self.settings = settings
        self.postgres_url = postgres_url
        self.run_id = run_id
        self.metrics = IngestMetrics(shard.name)
        home = settings.home_dir
        self.pg_sink = PostgresSink(
            postgres_url,
            self.metrics,
            home / "spill" / shard.name,
            max_buffered_records=shard.max_buffered_records,
            writer_tasks=shard.pg_writer_tasks,
        )
        self.redis_sink = RedisSink(redis_url, settings.redis_prefix, self.metrics)
        self.capture = (
            CaptureWriter(home / "capture" / shard.name, shard=shard.name) if shard.capture else None
        )
        self.continuity = ContinuityTracker()
        self.feeds = []
        for feed in shard.feeds:
            ws_url, rest_url = feed.urls(settings)
            self.feeds.append(_Feed(feed, feed.module(), ws_url, rest_url, frozenset(feed.symbols)))
        self._stop = asyncio.Event()
        self._pending = Batch()
        self._pending_since = 0.0
        self._received: Counter[tuple[str, str]] = Counter()
        self._rejected: Counter[tuple[str, str]] = Counter()
        self._frames: Counter[str] = Counter()
        self._exchange_latency: list[int] = []
        self._gaps: asyncio.Queue[tuple[_Feed, Gap]] = asyncio.Queue()
        self.fatal_error: str | None = None
        self.events: Counter[str] = Counter()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()  # set once run() has flushed everything

    # --------------------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> dict[str, object]:
        """Run until ``stop()``; flush everything; return the final metrics snapshot."""
        if self.shard.metrics_port:
            self.metrics.serve(self.shard.metrics_port)
        await self.pg_sink.start()
        await self.redis_sink.start()
        await self._seed_continuity()
        tasks = [
            asyncio.create_task(self._connection_loop(i, feed), name=f"feed-{i}-{feed.config.venue}")
            for i, feed in enumerate(self.feeds)
        ]
        helpers = [
            asyncio.create_task(self._flush_timer(), name="flush-timer"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._idle_watchdog(), name="idle-watchdog"),
            asyncio.create_task(self._backfill_loop(), name="backfill"),
        ]
        self.started.set()
        try:
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._flush()
            self._reconcile_pending_at_stop()
            # Gaps already being backfilled get a bounded chance to finish; the rest stay `open`
            # in market.gaps and the next run resumes them.
            await self._drain_backfills(timeout=10.0)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.pg_sink.close()
            await self.redis_sink.close()
            if self.capture is not None:
                self.capture.close()
            self.stopped.set()
        if self.fatal_error:
            raise FatalFeedError(self.fatal_error)
        return self.metrics.snapshot()

    # -------------------------------------------------------------------------------- connections

    async def _connection_loop(self, index: int, feed: _Feed) -> None:
        backoff = Backoff(initial=0.1, cap=10.0)
        cfg = feed.config
        url = feed.module.ws_url(feed.ws_url, list(cfg.symbols), cfg.channels)
        if cfg.ws_query:
            url += ("&" if "?" in url else "?") + cfg.ws_query
        api_key = self.settings.polygon_api_key.get_secret_value()
        while not self._stop.is_set():
            feed.connections += 1
            conn_id = f"{self.shard.name}.{index}.{feed.connections}"
            healthy = False
            try:
                async with websockets.connect(
                    url,
                    ping_interval=self.shard.ping_interval_s,
                    ping_timeout=self.shard.ping_interval_s,
                    max_size=2**24,
                    max_queue=1024,
                    compression=None,
                    open_timeout=10,
                    close_timeout=2,
                ) as ws:
                    feed.websocket = ws
                    feed.last_frame_mono = time.monotonic()
                    messages = feed.module.subscribe_messages(
                        list(cfg.symbols), cfg.channels, api_key=api_key
                    )
                    if cfg.venue == POLYGON:
                        # Auth first; Polygon ignores a subscribe sent before its auth_success.
                        await ws.send(messages[0])
                        await self._await_auth(ws, feed, conn_id)
                        messages = messages[1:]
                    for message in messages:
                        await ws.send(message)
                    self._reconcile_after_reconnect(feed)
                    log.info("connected %s (%s)", conn_id, cfg.venue)
                    while True:
                        frame = await ws.recv(decode=False)
                        receive_ts_ns = time.time_ns()
                        receive_mono_ns = time.monotonic_ns()
                        feed.last_frame_mono = receive_mono_ns / 1e9
                        if not healthy:
                            healthy = True
                            backoff.reset()
                        if self._on_frame(feed, frame, receive_ts_ns, receive_mono_ns, conn_id):
                            break  # the venue asked us to reconnect
            except FatalFeedError as exc:
                self.fatal_error = str(exc)
                log.error("%s: %s", conn_id, exc)
                self._stop.set()
                return
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                if self._stop.is_set():
                    return
                log.warning("%s disconnected: %r", conn_id, exc)
            finally:
                feed.websocket = None
                self.continuity.reset_connection(conn_id)
            if self._stop.is_set():
                return
            self.metrics.inc("reconnects", cfg.venue)
            delay = backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _await_auth(
        self, ws: websockets.ClientConnection, feed: _Feed, conn_id: str, timeout_s: float = 10.0
    ) -> None:
        """Read (and account for) frames until the venue confirms our key."""
        feed.authenticated = False
        async with asyncio.timeout(timeout_s):
            while not feed.authenticated:
                frame = await ws.recv(decode=False)
                self._on_frame(feed, frame, time.time_ns(), time.monotonic_ns(), conn_id)

    async def _idle_watchdog(self) -> None:
        """A socket that stays open but goes silent is as dead as a closed one."""
        while True:
            await asyncio.sleep(min(1.0, self.shard.idle_timeout_s / 4))
            now = time.monotonic()
            for feed in self.feeds:
                ws = feed.websocket
                if ws is not None and now - feed.last_frame_mono > self.shard.idle_timeout_s:
                    log.warning(
                        "%s silent for %.1fs; reconnecting", feed.config.venue, now - feed.last_frame_mono
                    )
                    feed.last_frame_mono = now
                    await ws.close(code=4000, reason="idle")

    # ------------------------------------------------------------------------------------ frames

    def _on_frame(
        self, feed: _Feed, frame: bytes, receive_ts_ns: int, receive_mono_ns: int, conn_id: str
    ) -> bool:
        """Account for one frame; True when the venue asked for a reconnect."""
        venue = feed.config.venue
        self._frames[venue] += 1
        if self.capture is not None:
            self.capture.write(receive_ts_ns, venue, conn_id, frame)
        result = feed.module.parse(frame, receive_ts_ns, conn_id, receive_mono_ns)
        pending = self._pending
        if not len(pending):
            self._pending_since = time.monotonic()
        trades_before, quotes_before = len(pending.trades), len(pending.quotes)
        skew_ns = int(self.shard.max_clock_skew_s * 1e9)
        for trade in result.trades:
            reason = validate_trade(
                trade, now_ns=receive_ts_ns, known_symbols=feed.symbols, max_skew_ns=skew_ns
            )
            if reason is not None:
                self._reject(
                    pending,
                    venue,
                    trade.symbol,
                    f"{reason} (trade {trade.trade_id})",
                    frame,
                    receive_ts_ns,
                    conn_id,
                )
                continue
            if trade.gapless and trade.seq is not None and trade.seq_scope == "instrument":
                gap = self.continuity.observe(venue, trade.symbol, "instrument", trade.seq)
                if gap is not None:
                    self._gap_found(feed, gap)
            else:
                if feed.reconcile_from and trade.symbol in feed.reconcile_from:
                    start = feed.reconcile_from.pop(trade.symbol)
                    self._gap_found(feed, Gap(venue, trade.symbol, "time", start, trade.exchange_ts_ns))
                if trade.exchange_ts_ns > feed.last_trade_ns.get(trade.symbol, 0):
                    feed.last_trade_ns[trade.symbol] = trade.exchange_ts_ns
            pending.trades.append(trade)
            self._received[(venue, trade.symbol)] += 1
            self._exchange_latency.append(receive_ts_ns - trade.exchange_ts_ns)
        for quote in result.quotes:
            reason = validate_quote(
                quote, now_ns=receive_ts_ns, known_symbols=feed.symbols, max_skew_ns=skew_ns
            )
            if reason is not None:
                self._reject(pending, venue, quote.symbol, reason, frame, receive_ts_ns, conn_id)
                continue
            pending.quotes.append(quote)
        for letter in result.dead_letters:
            pending.dead_letters.append(letter)
            self._rejected[(venue, "")] += 1
        if len(pending.trades) > trades_before or len(pending.quotes) > quotes_before:
            # Redis gets each frame's records now (it batches on its own); PostgreSQL gets batches.
            self.redis_sink.submit(
                Batch(trades=pending.trades[trades_before:], quotes=pending.quotes[quotes_before:])
            )
        reconnect = False
        for event in result.events:
            reconnect |= self._on_event(feed, event, conn_id)
        if len(pending) >= self.shard.batch_size:
            self._flush()
        elif not len(pending):
            self._flush_counters()  # a frame of control events only: still counted promptly
        return reconnect

    def _reject(
        self,
        pending: Batch,
        venue: str,
        symbol: str,
        reason: str,
        frame: bytes,
        receive_ts_ns: int,
        conn_id: str,
    ) -> None:
        pending.dead_letters.append(
            DeadLetter(
                venue=venue,
                reason=reason,
                payload=bytes(frame),
                receive_ts_ns=receive_ts_ns,
                connection_id=conn_id,
            )
        )
        self._rejected[(venue, symbol)] += 1

    def _on_event(self, feed: _Feed, event: venue_base.Event, conn_id: str) -> bool:
        venue = feed.config.venue
        self.events[type(event).__name__] += 1
        if isinstance(event, venue_base.VenueStatus):
            if event.status == "auth_success":
                feed.authenticated = True
            if event.is_fatal:
                raise FatalFeedError(f"{venue} refused the connection: {event.status} {event.message}")
            if event.status in ("error", "max_connections", "auth_timeout"):
                log.warning("%s status %s: %s", conn_id, event.status, event.message)
        elif isinstance(event, venue_base.ErrorReply):
            log.warning("%s error reply: %s (code %s)", conn_id, event.message, event.code)
        elif isinstance(event, venue_base.ServerShutdown):
            log.info("%s: server shutdown announced; reconnecting", conn_id)
            return True
        elif isinstance(event, venue_base.Heartbeat):
            # Coinbase heartbeats carry the product's last trade id: a gap is visible even when no
            # trade follows it.
            if event.symbol and event.last_trade_id is not None and event.symbol in feed.symbols:
                last = self.continuity.last(venue, event.symbol)
                if last is not None and event.last_trade_id > last:
                    self.continuity.seed(venue, event.symbol, event.last_trade_id)
                    self._gap_found(
                        feed, Gap(venue, event.symbol, "instrument", last + 1, event.last_trade_id)
                    )
        elif isinstance(event, venue_base.ConnectionSequence):
            gap = self.continuity.observe(venue, "", "connection", event.sequence_num, conn_id)
            if gap is not None:
                self._gap_found(feed, gap)
        return False

    def _flush(self) -> None:
        batch = self._pending
        if len(batch):
            self._pending = Batch()
            self.pg_sink.submit(batch)
            if self._exchange_latency and batch.trades:
                self.metrics.observe_latencies(
                    "exchange_to_receive",
                    batch.trades[0].venue,
                    np.asarray(self._exchange_latency, dtype=np.int64) / 1e9,
                )
        self._flush_counters()

    def _flush_counters(self) -> None:
        for (venue, symbol), n in self._received.items():
            self.metrics.inc("received", venue, symbol, n)
        for (venue, symbol), n in self._rejected.items():
            self.metrics.inc("rejected", venue, symbol, n)
        for venue, n in self._frames.items():
            self.metrics.inc("frames", venue, "", n)
        self._frames.clear()
        self._received.clear()
        self._rejected.clear()
        self._exchange_latency.clear()

    async def _flush_timer(self) -> None:
        age = self.shard.batch_age_ms / 1000
        while True:
            await asyncio.sleep(age / 2)
            if len(self._pending) and time.monotonic() - self._pending_since >= age:
                self._flush()

    # ------------------------------------------------------------------------------ continuity

    async def _seed_continuity(self) -> None:
        """Continue trade-id sequences from what is stored, so a restarted run backfills what the
        previous one missed; and resume gaps a previous run left open."""
        try:
            async with await psycopg.AsyncConnection.connect(self.postgres_url, connect_timeout=5) as conn:
                for feed in self.feeds:
                    rows = await conn.execute(
                        "SELECT symbol, max(seq) FROM market.trades WHERE venue = %s AND symbol = ANY(%s)"
                        " AND seq IS NOT NULL AND ts > now() - interval '2 days' GROUP BY symbol",
                        (feed.config.venue, list(feed.symbols)),
                    )
                    for symbol, last in await rows.fetchall():
                        self.continuity.seed(feed.config.venue, symbol, int(last))
                    latest = await conn.execute(
                        "SELECT symbol, max(exchange_ts_ns) FROM market.trades WHERE venue = %s"
                        " AND symbol = ANY(%s) AND seq IS NULL AND ts > now() - %s * interval '1 second'"
                        " GROUP BY symbol",
                        (feed.config.venue, list(feed.symbols), self.shard.max_reconcile_s),
                    )
                    for symbol, last_ns in await latest.fetchall():
                        feed.last_trade_ns[symbol] = int(last_ns)
                    open_gaps = await conn.execute(
                        "SELECT id, symbol, first_missing, last_missing FROM market.gaps"
                        " WHERE venue = %s AND symbol = ANY(%s) AND status = 'open' AND scope = 'instrument'",
                        (feed.config.venue, list(feed.symbols)),
                    )
                    for gap_id, symbol, first, last in await open_gaps.fetchall():
                        self._gaps.put_nowait(
                            (feed, Gap(feed.config.venue, symbol, "instrument", first, last, gap_id=gap_id))
                        )
        except psycopg.Error as exc:
            log.warning("could not read stored sequences (%s); continuity starts fresh", exc)

    def _reconcile_after_reconnect(self, feed: _Feed) -> None:
        """No gapless ids: what a disconnection missed is refetched over REST, from the last trade seen
        to the first trade of the new connection (the range overlaps both ends by design: writes
        are idempotent). The end is the venue's time, not ours: the venue may start streaming a
        little after we subscribed."""
        for symbol, last_ns in feed.last_trade_ns.items():
            feed.reconcile_from.setdefault(symbol, last_ns)

    def _reconcile_pending_at_stop(self) -> None:
        """Symbols with no trade since the reconnect: reconcile up to now."""
        now_ns = time.time_ns()
        for feed in self.feeds:
            for symbol, start in feed.reconcile_from.items():
                self._gap_found(feed, Gap(feed.config.venue, symbol, "time", start, now_ns))
            feed.reconcile_from.clear()

    def _gap_found(self, feed: _Feed, gap: Gap) -> None:
        self.metrics.inc("gaps", gap.venue, gap.symbol)
        log.info(
            "gap %s %s %s..%s (%d)", gap.venue, gap.symbol, gap.first_missing, gap.last_missing, gap.size
        )
        self._gaps.put_nowait((feed, gap))

    async def _backfill_loop(self) -> None:
        backoff = Backoff(initial=0.2, cap=10.0)
        clients: dict[str, object] = {}
        conn: psycopg.AsyncConnection | None = None
        try:
            while True:
                feed, gap = await self._gaps.get()
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(
                                self.postgres_url, autocommit=True, connect_timeout=5
                            )
                        await self._backfill(conn, clients, feed, gap)
                        backoff.reset()
                        break
                    except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                        conn = None
                        delay = backoff.next_delay()
                        log.warning("backfill waiting for PostgreSQL (%s); retry in %.1fs", exc, delay)
                        await asyncio.sleep(delay)
                self._gaps.task_done()
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    await client.close()  # type: ignore[attr-defined]
            if conn is not None:
                await conn.close()

    async def _backfill(
        self, conn: psycopg.AsyncConnection, clients: dict[str, object], feed: _Feed, gap: Gap
    ) -> None:
        gap_id = gap.gap_id
        if gap_id is None:
            gap_id = await writers.open_gap(
                conn, gap.venue, gap.symbol, gap.scope, gap.first_missing, gap.last_missing
            )
            gap.gap_id = gap_id
        if gap.scope == "connection":
            await writers.close_gap(
                conn,
                gap_id,
                0,
                status="failed",
                detail="connection-scoped sequence: no id range to fetch over REST",
            )
            return
        if gap.scope == "instrument" and gap.size > self.shard.max_backfill_ids:
            await writers.close_gap(
                conn,
                gap_id,
                0,
                status="failed",
                detail=f"{gap.size} ids exceed max_backfill_ids={self.shard.max_backfill_ids}",
            )
            return
        client = clients.get(feed.config.venue)
        if client is None:
            client = feed.module.RestClient(feed.rest_url, settings=self.settings)
            clients[feed.config.venue] = client
        try:
            if gap.scope == "instrument":
                trades: list[Trade] = await client.trades_by_id(  # type: ignore[attr-defined]
                    gap.symbol, gap.first_missing, gap.last_missing
                )
            else:  # "time": an exchange-time range [first, last]
                trades = [
                    t
                    async for page in client.trades(  # type: ignore[attr-defined]
                        gap.symbol, gap.first_missing, gap.last_missing + 1
                    )
                    for t in page
                ]
        except (venue_base.VenueHTTPError, OSError, TimeoutError, ValueError) as exc:
            await writers.close_gap(conn, gap_id, 0, status="failed", detail=f"REST backfill failed: {exc}")
            return
        now_ns = time.time_ns()
        valid = [t for t in trades if validate_trade(t, now_ns=now_ns, known_symbols=feed.symbols) is None]
        result = await writers.write_trades(conn, valid) if valid else None
        inserted = result.inserted if result else 0
        if valid:
            self.redis_sink.submit(Batch(trades=valid, backfill=True))
        self.metrics.inc("backfilled", gap.venue, gap.symbol, inserted)
        complete = gap.scope == "time" or len(valid) == gap.size
        status = "backfilled" if complete else "failed"
        await writers.close_gap(
            conn,
            gap_id,
            len(valid),
            status=status,
            detail="" if status == "backfilled" else f"REST returned {len(valid)} of {gap.size}",
        )

    async def _drain_backfills(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._gaps.join(), timeout)

    # -------------------------------------------------------------------------------- heartbeat

    async def _heartbeat_loop(self) -> None:
        while True:
            snapshot = self.metrics.snapshot()
            await self.redis_sink.heartbeat(
                self.shard.name,
                self.shard.heartbeat_ttl_s,
                {
                    "shard": self.shard.name,
                    "pid": os.getpid(),
                    "run_id": self.run_id,
                    "ts_ns": time.time_ns(),
                    "counters": snapshot["counters"],
                },
            )
            await asyncio.sleep(self.shard.heartbeat_interval_s)
