"""One WebSocket connection of any venue: receive loop, keepalive, live pump, fault-aware sending.

Venue modules subclass ``Session`` and implement ``on_open``, ``on_text`` and ``pump`` (called every
``tick_s`` with the wall-clock time; it sends the model's trades/quotes in ``[cursor, now)``).
aiohttp's automatic ping answering is off so that the ``ignore_pings`` fault can withhold pongs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from rrr_platform.simulator.faults import FaultSpec, MalformSyntax, malform
from rrr_platform.simulator.feed import MarketFeed, TradeRows

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rrr_platform.simulator.server import SimulatorServer


class Session:
    venue: str = ""
    syntax: MalformSyntax
    server_pings = False  # Binance pings its clients; Coinbase and Polygon do not

    def __init__(
        self,
        server: SimulatorServer,
        request: web.Request,
        ws: web.WebSocketResponse,
        conn_id: str,
        faults: FaultSpec,
    ) -> None:
        self.server = server
        self.feed: MarketFeed = server.feed
        self.config = server.config
        self.request = request
        self.ws = ws
        self.conn_id = conn_id
        self.faults = faults
        self.closed = False
        self.silenced = False
        self.data_frames = 0
        self.trade_frames = 0
        self.trades_seen = 0
        self.frames_sent = 0
        self.last_pong = time.monotonic()
        self._incoming: list[float] = []
        self._burst_queue: list[tuple[str, list[tuple[str, list[int]]]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.rate: dict[str, float] | None = None  # rate mode (benchmarks), from the URL
        self.info: dict[str, Any] = {
            "venue": self.venue,
            "path": request.path_qs,
            "opened_ns": time.time_ns(),
            "closed_ns": None,
            "frames_sent": 0,
            "faults": faults.to_dict() if faults.any_stream_fault else None,
            "close_reason": None,
        }

    # --- to implement ----------------------------------------------------------------------------
    async def on_open(self) -> None:
        """Handshake frames, subscriptions from the URL."""

    async def on_text(self, text: str) -> None:
        raise NotImplementedError

    async def pump(self, now_ns: int) -> None:
        """Send what the model produced since the last call."""

    async def on_shutdown(self) -> None:
        """Called before the server closes the connection on shutdown (Binance announces it)."""

    def tick_interval(self) -> float:
        return self.config.tick_s

    # --- life cycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        self.server.accounting.connections[self.conn_id] = self.info
        try:
            await self.on_open()
            self._tasks.append(asyncio.create_task(self._pump_loop()))
            if self.server_pings and self.config.ping_interval_s:
                self._tasks.append(asyncio.create_task(self._ping_loop()))
            if self.faults.burst_interval_s:
                self._tasks.append(asyncio.create_task(self._burst_loop()))
            await self._receive_loop()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.closed = True
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(BaseException):
                    await task
            self.info["closed_ns"] = time.time_ns()
            self.info["frames_sent"] = self.frames_sent

    async def _receive_loop(self) -> None:
        while not self.closed:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.TEXT:
                if not self._count_incoming():
                    await self.close(1008, "Too many requests")
                    return
                await self.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                if not self._count_incoming():
                    await self.close(1008, "Too many requests")
                    return
                await self.on_binary(msg.data)
            elif msg.type == WSMsgType.PING:
                if not self._count_incoming():
                    await self.close(1008, "Too many requests")
                    return
                if not self.faults.ignore_pings and not self.closed:
                    with contextlib.suppress(ConnectionResetError):
                        await self.ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                self.last_pong = time.monotonic()
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                self.info["close_reason"] = self.info["close_reason"] or f"client {msg.type.name.lower()}"
                return

    async def on_binary(self, data: bytes) -> None:
        await self.on_text(data.decode("utf-8", errors="replace"))

    def _count_incoming(self) -> bool:
        """Venue limit on client messages per second (Binance: 5; pings and pongs count)."""
        limit = self.incoming_limit()
        if not limit:
            return True
        now = time.monotonic()
        self._incoming = [t for t in self._incoming if now - t < 1.0]
        self._incoming.append(now)
        return len(self._incoming) <= limit

    def incoming_limit(self) -> int | None:
        return None

    # --- rate mode (benchmarks) -------------------------------------------------------------------
    def rate_instruments(self) -> list[Any]:
        """Instruments whose trades this connection subscribed to (rate mode sends only those)."""
        return []

    def encode_rate(self, trades: list[tuple[Any, TradeRows, int]], batch: int) -> list[str]:
        raise NotImplementedError

    def rate_trades(self, count: int) -> list[tuple[Any, TradeRows, int]]:
        """``count`` real model trades of the subscribed instruments, the latest before now, by time."""
        insts = self.rate_instruments()
        if not insts:
            return []
        per = -(-count // len(insts))
        now = time.time_ns()
        merged: list[tuple[int, int, Any, TradeRows, int]] = []
        for k, inst in enumerate(insts):
            last = self.feed.last_trade_before(self.venue, inst.symbol, now)
            if not last.trade_id:
                continue
            rows = self.feed.trades_by_id(
                self.venue, inst.symbol, last.trade_id[0] - per + 1, last.trade_id[0]
            )
            merged.extend((rows.ts_ns[i], k, inst, rows, i) for i in range(len(rows)))
        merged.sort(key=lambda e: (e[0], e[1]))
        return [(inst, rows, i) for _, _, inst, rows, i in merged[:count]]

    async def _rate_mode(self, spec: dict[str, float]) -> None:
        from rrr_platform.simulator import rate

        while not self.closed and not self.rate_instruments():
            await asyncio.sleep(0.01)
        if self.closed:
            return
        trades = self.rate_trades(int(spec["count"]))
        texts = self.encode_rate(trades, max(1, int(spec["batch"])))
        for inst, rows, i in trades:
            self.server.accounting.account(self.venue, inst.symbol).streamed.add(rows.trade_id[i])
        if spec.get("naive"):  # the baseline of the benchmark: one ws.send_str per frame
            self.info["rate"] = {"events": len(trades), "frames": len(texts), "mode": "send_str"}
            result = await rate.push_naive(self, texts)
        else:
            frames = rate.encode_frames(texts)
            self.info["rate"] = {
                "events": len(trades),
                "frames": len(frames),
                "bytes": sum(map(len, frames)),
                "mode": "pre-encoded",
            }
            result = await rate.push(self, frames, spec["rate"])
        self.info["rate"].update(result)

    async def _pump_loop(self) -> None:
        if self.rate:
            await self._rate_mode(self.rate)
            return
        interval = self.tick_interval()
        while not self.closed:
            await asyncio.sleep(interval)
            if self.closed:
                return
            try:
                await self.pump(time.time_ns())
            except Exception:  # a bug in one connection's pump ends that connection, loudly
                log.exception("simulator %s pump failed", self.conn_id)
                await self.close(1011, "internal error")
                return

    async def _ping_loop(self) -> None:
        interval = self.config.ping_interval_s
        while not self.closed:
            await asyncio.sleep(interval)
            if self.closed or self.faults.ignore_pings or self.silenced:
                continue
            if time.monotonic() - self.last_pong > self.config.pong_timeout_s + interval:
                self.info["close_reason"] = "no pong"
                await self.close(1008, "Pong timeout")
                return
            with contextlib.suppress(ConnectionResetError):
                await self.ws.ping(os.urandom(4).hex().encode())

    async def close(self, code: int = 1000, message: str = "") -> None:
        self.closed = True
        self.info["close_reason"] = self.info["close_reason"] or message or "server close"
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode())

    def abort(self, reason: str) -> None:
        """Drop the TCP connection without a close frame, as a crashed gateway would."""
        self.closed = True
        self.info["close_reason"] = reason
        transport = self.request.transport
        if transport is not None:
            transport.abort() if hasattr(transport, "abort") else transport.close()

    # --- sending ---------------------------------------------------------------------------------
    async def send_control(self, text: str) -> None:
        """Acks, errors, status: not counted as data, but a silenced connection sends nothing."""
        if self.closed or self.silenced:
            return
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_str(text)
            self.frames_sent += 1

    def take_trade(self, account_symbol: str, trade_id: int) -> bool:
        """False when ``skip_every`` withholds this trade (accounted as skipped)."""
        every = self.faults.skip_every
        if not every:
            return True
        self.trades_seen += 1
        if self.trades_seen % every == 0:
            self.server.accounting.skipped(self.venue, account_symbol, trade_id)
            return False
        return True

    async def send_data(self, text: str, refs: list[tuple[str, list[int]]] | None = None) -> None:
        """A market-data frame; ``refs`` lists (symbol, trade ids) it carries, for accounting."""
        if self.faults.burst_interval_s:
            self._burst_queue.append((text, refs or []))
            return
        await self._deliver(text, refs or [])

    async def _deliver(self, text: str, refs: list[tuple[str, list[int]]]) -> None:
        if self.closed or self.silenced:
            return
        f = self.faults
        if f.drop_after is not None and self.data_frames >= f.drop_after:
            self.abort(f"fault: drop_after={f.drop_after}")
            return
        if f.silent_after is not None and self.data_frames >= f.silent_after:
            self.silenced = True
            self.info["close_reason"] = f"fault: silent_after={f.silent_after} (socket kept open)"
            return
        self.data_frames += 1
        acc = self.server.accounting
        has_trades = any(ids for _, ids in refs)
        try:
            if has_trades and f.malformed_every:
                self.trade_frames += 1
                if self.trade_frames % f.malformed_every == 0:
                    kinds = f.malformed_kinds
                    kind = kinds[(self.trade_frames // f.malformed_every - 1) % len(kinds)]
                    raw = malform(text, kind, self.syntax)
                    await self.ws.send_str(raw)
                    self.frames_sent += 1
                    for symbol, ids in refs:
                        acc.malformed(self.venue, symbol, kind, raw, ids, self.conn_id)
            await self.ws.send_str(text)
            self.frames_sent += 1
            for symbol, ids in refs:
                acc.streamed(self.venue, symbol, ids)
            if f.duplicate_every and self.data_frames % f.duplicate_every == 0:
                await self.ws.send_str(text)
                self.frames_sent += 1
                for symbol, ids in refs:
                    acc.duplicated(self.venue, symbol, ids)
        except ConnectionResetError:
            self.closed = True

    async def _burst_loop(self) -> None:
        interval = float(self.faults.burst_interval_s or 1.0)
        while not self.closed:
            await asyncio.sleep(interval)
            pending, self._burst_queue = self._burst_queue, []
            rate = self.faults.burst_rate
            started = time.monotonic()
            for i, (text, refs) in enumerate(pending):
                if rate:
                    lag = started + i / rate - time.monotonic()
                    if lag > 0:
                        await asyncio.sleep(lag)
                await self._deliver(text, refs)
