"""The exchange simulator: one aiohttp server on 127.0.0.1 speaking Binance, Coinbase and Polygon.

Paths mirror the venue hosts under a prefix (see ``ENDPOINTS``), HTTP and WebSocket on one port.
Start it in-process (``async with SimulatorServer(cfg) as sim``), in a thread of a synchronous
program (``SimulatorServer(cfg).start_in_thread()``), or as a subprocess (``start_subprocess``,
``rrr simulate``). Control endpoints under ``/_sim``: ``GET stats``, ``GET/POST/DELETE faults``,
``GET connections``, ``POST reset``, ``GET info``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from rrr_platform.market.timeutil import NS_PER_DAY
from rrr_platform.market.types import BINANCE, COINBASE, COINBASE_AT, POLYGON, VENUES
from rrr_platform.simulator import binance, coinbase, polygon
from rrr_platform.simulator.faults import Accounting, FaultSpec
from rrr_platform.simulator.feed import MarketFeed
from rrr_platform.simulator.model import MarketConfig, MarketModel
from rrr_platform.simulator.session import Session
from rrr_platform.simulator.testing import recent_market_config

WS_PATHS = {
    BINANCE: "/binance",
    COINBASE: "/coinbase",
    COINBASE_AT: "/coinbase-advanced",
    POLYGON: "/polygon/crypto",
}
REST_PATHS = {
    BINANCE: "/binance",
    COINBASE: "/coinbase",
    COINBASE_AT: "/coinbase-advanced",
    POLYGON: "/polygon",
}
ALIASES = {
    "binance": BINANCE,
    "coinbase": COINBASE,
    "coinbase_advanced": COINBASE_AT,
    "coinbase-advanced": COINBASE_AT,
    "polygon": POLYGON,
    "polygon_crypto": POLYGON,
}
READY_LINE = "rrr-simulator ready"
log = logging.getLogger(__name__)
SIM_KEY: web.AppKey[SimulatorServer] = web.AppKey("sim")


@dataclass
class ReplaySpec:
    """Stream a raw capture back instead of the model: ``speed`` 1.0 = real time, 0 = as fast as possible."""

    path: str
    speed: float = 1.0
    venue: str | None = None  # only this venue's records (default: the connecting venue's)
    connection_id: str | None = None  # only the frames of this captured connection


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (read it back from ``sim.port``)
    seed: int = 7
    signal: str = "none"
    market: MarketConfig | None = None  # overrides seed/signal when given
    tick_s: float = 0.1  # live pump period: trades of [last tick, now) are sent each tick
    ping_interval_s: float = 20.0  # Binance server pings
    pong_timeout_s: float = 60.0
    kline_interval_s: float = 2.0
    heartbeat_interval_s: float = 1.0
    at_batch_s: float = 0.25  # Advanced Trade market_trades batching
    at_snapshot_trades: int = 50
    subscribe_timeout_s: float = 5.0  # Coinbase: subscribe within 5 s or be disconnected
    auth_timeout_s: float = 10.0  # Polygon: auth within this or auth_timeout + close
    polygon_api_key: str = "simulator"
    polygon_max_events_per_frame: int = 1000
    # Polygon allows one connection per cluster and account by default; None: no limit here.
    polygon_max_connections: int | None = None
    binance_max_incoming_per_s: int | None = 5
    # REST limits per venue: (requests, window seconds). Binance counts each request as weight 1.
    rest_limits: dict[str, tuple[int, float]] = field(
        default_factory=lambda: {
            BINANCE: (6000, 60.0),
            COINBASE: (10, 1.0),
            COINBASE_AT: (10, 1.0),
            POLYGON: (100, 1.0),
        }
    )
    # On subscribe, also send the last completed minute's final kline (Binance x=true) and aggregate
    # (Polygon XA/AM) at the first tick instead of waiting for the next minute boundary (tests, demos).
    catch_up_minute: bool = False
    warm: bool = False  # generate history up to now for every instrument before serving (``rrr simulate``)
    faults: list[FaultSpec] = field(default_factory=list)
    replay: ReplaySpec | None = None

    def market_config(self) -> MarketConfig:
        return self.market or MarketConfig(seed=self.seed, signal=self.signal)  # type: ignore[arg-type]


class _FixedWindow:
    """Requests per fixed window, per client: the shape of Binance's and Coinbase's public limits."""

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str], tuple[float, int]] = {}

    def hit(self, venue: str, client: str, limit: int, window_s: float) -> float | None:
        now = time.monotonic()
        start, count = self.windows.get((venue, client), (now, 0))
        if now - start >= window_s:
            start, count = now, 0
        count += 1
        self.windows[(venue, client)] = (start, count)
        if count > limit:
            return max(0.0, window_s - (now - start))
        return None


class SimulatorServer:
    def __init__(self, config: SimulatorConfig | None = None, model: MarketModel | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.feed = MarketFeed(model=model, config=self.config.market_config())
        self.accounting = Accounting()
        self.faults: list[FaultSpec] = list(self.config.faults)
        self.sessions: dict[str, Session] = {}
        self._conn_ids = itertools.count(1)
        self._rest_counts: dict[str, int] = {}
        self._limits = _FixedWindow()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = self.config.port
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self.app = self._build_app()

    # --- URLs ----------------------------------------------------------------------------------
    @property
    def base_http(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def url(self, venue: str, market: str = "crypto") -> str:
        """WebSocket URL of a venue (``binance``, ``coinbase``, ``coinbase_advanced``, ``polygon``)."""
        v = ALIASES.get(venue, venue)
        path = f"/polygon/{market}" if v == POLYGON else WS_PATHS[v]
        return f"ws://{self.config.host}:{self.port}{path}"

    def rest_url(self, venue: str) -> str:
        return f"{self.base_http}{REST_PATHS[ALIASES.get(venue, venue)]}"

    def endpoints(self) -> dict[str, str]:
        return {
            "binance ws": f"{self.url(BINANCE)}/ws/<stream> | {self.url(BINANCE)}/stream?streams=a/b",
            "binance rest": f"{self.rest_url(BINANCE)}/api/v3/...",
            "coinbase exchange ws": self.url(COINBASE),
            "coinbase exchange rest": f"{self.rest_url(COINBASE)}/products/...",
            "coinbase advanced ws": self.url(COINBASE_AT),
            "coinbase advanced rest": f"{self.rest_url(COINBASE_AT)}/api/v3/brokerage/market/products/...",
            "polygon ws": f"{self.url(POLYGON, 'crypto')} | {self.url(POLYGON, 'stocks')}",
            "polygon rest": f"{self.rest_url(POLYGON)}/v2/aggs/... /v3/trades/... /v2/reference/news",
            "control": f"{self.base_http}/_sim/stats | /_sim/faults | /_sim/connections",
        }

    # --- faults --------------------------------------------------------------------------------
    def set_faults(
        self, spec: FaultSpec | None = None, connection_id: str | None = None, **kwargs: Any
    ) -> FaultSpec:
        """Faults for new connections (of ``spec.venue`` or all), or for one live connection now."""
        spec = spec or FaultSpec(**kwargs)
        if connection_id is not None:
            session = self.sessions.get(connection_id)
            if session is None:
                raise KeyError(f"no live connection {connection_id!r}")
            session.faults = spec
            session.info["faults"] = spec.to_dict()
            return spec
        if spec.venue is not None and spec.venue not in VENUES:
            raise ValueError(f"unknown venue {spec.venue!r}; choose from {VENUES}")
        self.faults.append(spec)
        return spec

    def clear_faults(self) -> None:
        self.faults.clear()

    def _faults_for_connection(self, venue: str) -> FaultSpec:
        for spec in reversed(self.faults):
            if spec.venue not in (None, venue) or not spec.any_stream_fault:
                continue
            if spec.apply_to_next is not None:
                if spec.apply_to_next <= 0:
                    continue
                spec.apply_to_next -= 1
            return spec
        return FaultSpec()

    def _rest_faults(self, venue: str) -> FaultSpec | None:
        for spec in reversed(self.faults):
            if spec.venue in (None, venue) and (spec.rest_delay_s or spec.rest_fail_every):
                return spec
        return None

    def stats(self) -> dict[str, Any]:
        return self.accounting.snapshot()

    # --- app -----------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._rest_middleware])
        app[SIM_KEY] = self
        ws = self._ws_handler
        app.router.add_get("/binance/ws", ws(BINANCE))
        app.router.add_get("/binance/ws/{tail:.*}", ws(BINANCE))
        app.router.add_get("/binance/stream", ws(BINANCE))
        app.router.add_get("/coinbase", ws(COINBASE))
        app.router.add_get("/coinbase-advanced", ws(COINBASE_AT))
        app.router.add_get("/polygon/crypto", ws(POLYGON, "crypto"))
        app.router.add_get("/polygon/stocks", ws(POLYGON, "stocks"))
        binance.add_routes(app, self.feed)
        coinbase.add_routes(app, self.feed)
        polygon.add_routes(app, self.feed, self.config.polygon_api_key)
        app.router.add_get("/_sim/stats", self._h_stats)
        app.router.add_get("/_sim/faults", self._h_faults_get)
        app.router.add_post("/_sim/faults", self._h_faults_post)
        app.router.add_delete("/_sim/faults", self._h_faults_delete)
        app.router.add_get("/_sim/connections", self._h_connections)
        app.router.add_post("/_sim/reset", self._h_reset)
        app.router.add_get("/_sim/info", self._h_info)
        return app

    def _ws_handler(self, venue: str, market: str = "crypto") -> Callable[[web.Request], Awaitable[Any]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return web.json_response({"error": "this path is a WebSocket endpoint"}, status=400)
            kwargs: dict[str, Any] = {}
            if venue == BINANCE and not self.config.replay:
                streams, combined, unit = binance.ws_params(request)
                session_cls: type[Session] = binance.BinanceSession
                kwargs = {"streams": streams, "combined": combined, "unit": unit}
                if not combined and not streams and request.path.rstrip("/") != "/binance/ws":
                    return web.json_response({"code": -1100, "msg": "Invalid stream path"}, status=400)
            elif self.config.replay:
                from rrr_platform.simulator.replay import ReplaySession

                session_cls = ReplaySession
                kwargs = {"venue": venue}
            elif venue == COINBASE:
                session_cls = coinbase.CoinbaseExchangeSession
            elif venue == COINBASE_AT:
                session_cls = coinbase.CoinbaseAdvancedSession
            else:
                session_cls = polygon.PolygonSession
                kwargs = {"market": market}
            rate = _rate_params(request)
            ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, compress=False)
            await ws.prepare(request)
            conn_id = f"{venue}-{next(self._conn_ids)}"
            faults = self._faults_for_connection(venue)
            session = session_cls(self, request, ws, conn_id, faults, **kwargs)
            if binance_error := getattr(session, "_initial", None):
                try:
                    for name in binance_error:
                        session.parse_stream(name)  # type: ignore[attr-defined]
                except ValueError as exc:
                    await ws.send_str(
                        orjson.dumps({"error": {"code": 2, "msg": str(exc)}, "id": None}).decode()
                    )
                    await ws.close()
                    return ws
            session.rate = rate
            self.sessions[conn_id] = session
            try:
                await session.run()
            finally:
                self.sessions.pop(conn_id, None)
                if not ws.closed:
                    with contextlib.suppress(Exception):
                        await ws.close()
            return ws

        return handler

    @web.middleware
    async def _rest_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        venue = _venue_of_path(path)
        if venue is None or request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        module = _module_of(venue)
        self.accounting.rest_requests += 1
        spec = self._rest_faults(venue)
        if spec is not None:
            if spec.rest_delay_s:
                await asyncio.sleep(spec.rest_delay_s)
            if spec.rest_fail_every:
                n = self._rest_counts[venue] = self._rest_counts.get(venue, 0) + 1
                if n % spec.rest_fail_every == 0:
                    self.accounting.rest_failures += 1
                    return module.failure_response(spec.rest_fail_status)
        limit = self.config.rest_limits.get(venue)
        if limit is not None:
            client = request.remote or "?"
            wait = self._limits.hit(venue, client, limit[0], limit[1])
            if wait is not None:
                self.accounting.rate_limited += 1
                return module.rate_limited_response(max(1, math.ceil(wait)))
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:  # a bug must not take the server down: answer as the venue does, and log it
            log.exception("simulator REST handler failed: %s", request.path_qs)
            return module.failure_response(500)

    async def _h_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type="application/json")

    async def _h_faults_get(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps([f.to_dict() for f in self.faults]), content_type="application/json"
        )

    async def _h_faults_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=orjson.loads)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object of FaultSpec fields")
            conn = body.pop("connection_id", None)
            spec = self.set_faults(FaultSpec.from_dict(body), connection_id=conn)
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.Response(
            body=orjson.dumps({"ok": True, "faults": spec.to_dict()}), content_type="application/json"
        )

    async def _h_faults_delete(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"ok": True})

    async def _h_connections(self, request: web.Request) -> web.Response:
        live = {cid: {**s.info, "frames_sent": s.frames_sent} for cid, s in self.sessions.items()}
        return web.Response(body=orjson.dumps(live), content_type="application/json")

    async def _h_reset(self, request: web.Request) -> web.Response:
        self.accounting.reset()
        return web.json_response({"ok": True})

    async def _h_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "endpoints": self.endpoints(),
                "seed": self.feed.model.config.seed,
                "signal": self.feed.model.config.signal,
            }
        )

    # --- life cycle ------------------------------------------------------------------------------
    async def start(self) -> SimulatorServer:
        if self.config.warm:
            # The model chains days from its start: the first request for "now" on an instrument would
            # otherwise stall the event loop while that history is generated.
            await asyncio.to_thread(self.feed.warm)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            await session.on_shutdown()
            await session.close(1001, "server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimulatorServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> SimulatorServer:
        """Run the server on its own event loop in a daemon thread (for synchronous callers)."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="rrr-simulator", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop_thread(self) -> None:
        if self._thread_loop is not None and self._thread is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
            self._thread.join(30)
            self._thread = None


def _rate_params(request: web.Request) -> dict[str, float] | None:
    q = request.query
    if "sim_rate" not in q and "sim_count" not in q:
        return None
    try:
        return {
            "rate": float(q.get("sim_rate", "0")),
            "count": float(q.get("sim_count", "100000")),
            "batch": float(q.get("sim_batch", "1")),
            "naive": float(q.get("sim_mode", "") == "naive"),
        }
    except ValueError:
        return None


def _venue_of_path(path: str) -> str | None:
    if path.startswith("/binance/"):
        return BINANCE
    if path.startswith("/coinbase-advanced/"):
        return COINBASE_AT
    if path.startswith("/coinbase/"):
        return COINBASE
    if path.startswith("/polygon/"):
        return POLYGON
    return None


def _module_of(venue: str) -> Any:
    return {BINANCE: binance, COINBASE: coinbase, COINBASE_AT: coinbase, POLYGON: polygon}[venue]


# --- subprocess ------------------------------------------------------------------------------------


class SimulatorProcess:
    """A simulator in a child process (``python -m rrr_platform.simulator.server``)."""

    def __init__(self, proc: subprocess.Popen[str], host: str, port: int, banner: list[str]) -> None:
        self.proc, self.host, self.port, self.banner = proc, host, port, banner

    def url(self, venue: str, market: str = "crypto") -> str:
        v = ALIASES.get(venue, venue)
        path = f"/polygon/{market}" if v == POLYGON else WS_PATHS[v]
        return f"ws://{self.host}:{self.port}{path}"

    def rest_url(self, venue: str) -> str:
        return f"http://{self.host}:{self.port}{REST_PATHS[ALIASES.get(venue, venue)]}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_subprocess(args: list[str] | None = None, port: int = 0, timeout: float = 60.0) -> SimulatorProcess:
    """Start ``rrr simulate`` as a child process and wait until it listens; ``port=0`` picks a free one."""
    cmd = [sys.executable, "-m", "rrr_platform.simulator.server", "--port", str(port), *(args or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    banner: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator exited with {proc.wait()} before it was ready")
        banner.append(line.rstrip("\n"))
        if line.startswith(READY_LINE):
            host, _, port_text = line.split()[-1].rpartition(":")
            # Keep draining stdout in the background so the child never blocks on a full pipe.
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return SimulatorProcess(proc, host, int(port_text), banner)
    proc.kill()
    raise TimeoutError("simulator did not become ready in time")


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


# --- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rrr simulate", description="Local Binance/Coinbase/Polygon simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("RRR_SIMULATOR_PORT", "8765")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("RRR_SIMULATOR_SEED", "7")))
    p.add_argument("--signal", choices=["none", "flow", "news"], default="none")
    p.add_argument(
        "--faults", action="append", default=[], help="e.g. venue=binance_spot,drop_after=100 (repeatable)"
    )
    p.add_argument("--ping-interval", type=float, default=20.0)
    p.add_argument("--tick", type=float, default=0.1)
    p.add_argument("--trade-rate-scale", type=float, default=1.0)
    p.add_argument("--api-key", default=os.environ.get("RRR_POLYGON_API_KEY", "simulator"))
    p.add_argument(
        "--start",
        default=None,
        help="first day of the model's history, YYYY-MM-DD or 'recent' (yesterday: fast start-up; "
        "default: the model's fixed start, the same data whatever the day)",
    )
    p.add_argument("--no-warm", action="store_true", help="do not generate history up to now before serving")
    p.add_argument("--replay", default=None, help="capture directory or file to replay instead of the model")
    p.add_argument(
        "--replay-speed", type=float, default=1.0, help="1 = real time, 10 = ten times faster, 0 = max"
    )
    return p


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    if ns.start == "recent":
        market = recent_market_config(ns.seed, ns.signal, trade_rate_scale=ns.trade_rate_scale)
    elif ns.start:
        day = dt.date.fromisoformat(ns.start)
        market = MarketConfig(
            seed=ns.seed,
            signal=ns.signal,
            trade_rate_scale=ns.trade_rate_scale,
            start_ns=(day - dt.date(1970, 1, 1)).days * NS_PER_DAY,
        )
    else:
        market = MarketConfig(seed=ns.seed, signal=ns.signal, trade_rate_scale=ns.trade_rate_scale)
    return SimulatorConfig(
        host=ns.host,
        port=ns.port,
        seed=ns.seed,
        signal=ns.signal,
        market=market,
        faults=[FaultSpec.parse(f) for f in ns.faults],
        ping_interval_s=ns.ping_interval,
        tick_s=ns.tick,
        polygon_api_key=ns.api_key,
        replay=ReplaySpec(ns.replay, ns.replay_speed) if ns.replay else None,
        warm=not ns.no_warm,
    )


async def serve_forever(config: SimulatorConfig, echo: Callable[[str], None] = print) -> None:
    sim = SimulatorServer(config)
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    echo(
        f"RRR exchange simulator (seed {config.market_config().seed}, signal {config.market_config().signal})"
    )
    for name, url in sim.endpoints().items():
        echo(f"  {name:<24} {url}")
    if config.faults:
        echo("  faults: " + "; ".join(str(f.to_dict()) for f in config.faults))
    if config.replay:
        echo(f"  replaying {config.replay.path} at speed {config.replay.speed}")
    echo(f"{READY_LINE} {config.host}:{sim.port}")
    sys.stdout.flush()
    await stop.wait()
    await sim.stop()


def main(argv: list[str] | None = None) -> None:
    ns = build_parser().parse_args(argv)
    config = config_from_args(ns)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        pass
    asyncio.run(serve_forever(config))


if __name__ == "__main__":
    main()
