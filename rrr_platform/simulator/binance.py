"""Binance Spot: WebSocket market streams (raw ``/ws`` and combined ``/stream``) and REST history.

Wire format per exchange-protocols.md section 1: prices/quantities are decimal strings with 8
decimals, ids and times JSON integers, times in ms (µs with ``timeUnit=MICROSECOND``), combined
frames wrapped as ``{"stream","data"}``, control replies ``{"result":...,"id":...}`` and errors
``{"error":{"code","msg"},"id"}``. The server pings every ``ping_interval_s`` and closes a
connection that does not pong within ``pong_timeout_s``; more than 5 client messages a second
closes the connection.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web

from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_MS
from rrr_platform.market.types import BINANCE
from rrr_platform.simulator.faults import MalformSyntax
from rrr_platform.simulator.feed import BarRow, MarketFeed, QuoteRow, TradeRows, fixed_decimal
from rrr_platform.simulator.session import Session

DECIMALS = 8  # Binance prints every price and quantity with 8 decimals
STREAM_RE = re.compile(r"^([a-z0-9]+)@(trade|aggTrade|bookTicker|kline_1m)$")
SYNTAX = MalformSyntax(
    price_re=re.compile(r'("p":)("[^"]*")'),
    price_is_string=True,
    time_re=re.compile(r'("T":)(\d+)'),
    absurd_time="99999999999999",
)


def px8(units: int, decimals: int) -> str:
    return (
        fixed_decimal(units * 10 ** (DECIMALS - decimals), DECIMALS)
        if decimals <= DECIMALS
        else fixed_decimal(units // 10 ** (decimals - DECIMALS), DECIMALS)
    )


def trade_event(vs: str, t: int, px: str, qty: str, ts_ns: int, side: int, event_ns: int, unit: int) -> str:
    buyer_maker = "true" if side < 0 else "false"
    return (
        f'{{"e":"trade","E":{event_ns // unit},"s":"{vs}","t":{t},"p":"{px}","q":"{qty}",'
        f'"T":{ts_ns // unit},"m":{buyer_maker},"M":true}}'
    )


def agg_trade_event(
    vs: str, t: int, px: str, qty: str, ts_ns: int, side: int, event_ns: int, unit: int
) -> str:
    buyer_maker = "true" if side < 0 else "false"
    return (
        f'{{"e":"aggTrade","E":{event_ns // unit},"s":"{vs}","a":{t},"p":"{px}","q":"{qty}",'
        f'"f":{t},"l":{t},"T":{ts_ns // unit},"m":{buyer_maker},"M":true}}'
    )


def book_ticker_event(vs: str, update_id: int, q: QuoteRow, pd: int, sd: int) -> str:
    return (
        f'{{"u":{update_id},"s":"{vs}","b":"{px8(q.bid_ticks, pd)}","B":"{px8(q.bid_lots, sd)}",'
        f'"a":"{px8(q.ask_ticks, pd)}","A":"{px8(q.ask_lots, sd)}"}}'
    )


def quote_volume8(units: int, pd: int, sd: int) -> str:
    scale = pd + sd
    value = units * 10 ** (DECIMALS - scale) if scale <= DECIMALS else units // 10 ** (scale - DECIMALS)
    return fixed_decimal(value, DECIMALS)


def kline_event(vs: str, bar: BarRow, final: bool, event_ns: int, unit: int, pd: int, sd: int) -> str:
    k = {
        "t": bar.ts_ns // unit,
        "T": (bar.ts_ns + NS_PER_MIN) // unit - 1,
        "s": vs,
        "i": "1m",
        "f": bar.first_id,
        "L": bar.last_id,
        "o": px8(bar.open, pd),
        "c": px8(bar.close, pd),
        "h": px8(bar.high, pd),
        "l": px8(bar.low, pd),
        "v": px8(bar.volume, sd),
        "n": bar.trade_count,
        "x": final,
        "q": quote_volume8(bar.quote_volume, pd, sd),
        "V": px8(bar.buy_volume, sd),
        "Q": quote_volume8(_buy_quote_volume(bar), pd, sd),
        "B": "0",
    }
    return orjson.dumps({"e": "kline", "E": event_ns // unit, "s": vs, "k": k}).decode()


def _buy_quote_volume(bar: BarRow) -> int:
    # The model's bars give buy volume in lots but not buy notional; estimate it at the bar's VWAP.
    if bar.volume <= 0:
        return 0
    return bar.quote_volume * bar.buy_volume // bar.volume


def empty_bar(minute_ns: int, price_ticks: int) -> BarRow:
    return BarRow(minute_ns, price_ticks, price_ticks, price_ticks, price_ticks, 0, 0, 0, 0, -1, -1)


class BinanceSession(Session):
    venue = BINANCE
    syntax = SYNTAX
    server_pings = True

    def __init__(self, *args: Any, streams: list[str], combined: bool, unit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.combined = combined
        self.unit = unit
        self.streams: dict[str, tuple[Any, str]] = {}  # name -> (instrument, kind)
        self.trade_cursor: dict[str, int] = {}  # venue symbol -> next trade time to send
        self.last_quote: dict[str, QuoteRow] = {}
        self.kline_minute: dict[str, int] = {}
        self.last_kline_push = 0.0
        self._initial = streams

    async def on_shutdown(self) -> None:
        event = f'{{"e":"serverShutdown","E":{time.time_ns() // self.unit}}}'
        await self.send_control(self.wrap("!serverShutdown", event))

    def incoming_limit(self) -> int | None:
        return self.config.binance_max_incoming_per_s

    async def on_open(self) -> None:
        now = time.time_ns()
        for name in self._initial:
            self._add_stream(name, now)

    def parse_stream(self, name: str) -> tuple[Any, str]:
        m = STREAM_RE.match(name)
        if not m:
            raise ValueError(f"Invalid request: unknown stream '{name}'")
        try:
            inst = self.feed.instrument(BINANCE, m.group(1).upper())
        except KeyError:
            raise ValueError(f"Invalid request: unknown symbol in stream '{name}'") from None
        return inst, m.group(2)

    def _add_stream(self, name: str, now: int) -> None:
        inst, kind = self.parse_stream(name)
        self.streams[name] = (inst, kind)
        vs = inst.venue_symbol
        if kind in ("trade", "aggTrade"):
            self.trade_cursor.setdefault(vs, now)
        elif kind == "kline_1m":
            minute = now - now % NS_PER_MIN
            self.kline_minute.setdefault(vs, minute - NS_PER_MIN if self.config.catch_up_minute else minute)

    async def reply(self, obj: dict[str, Any]) -> None:
        await self.send_control(orjson.dumps(obj).decode())

    async def error(self, code: int, msg: str, req_id: Any) -> None:
        await self.reply({"error": {"code": code, "msg": msg}, "id": req_id})

    async def on_text(self, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            await self.error(3, f"Invalid JSON: {exc}", None)
            return
        if not isinstance(req, dict):
            await self.error(2, "Invalid request: request must be a JSON object", None)
            return
        req_id = req.get("id")
        if req_id is not None and not isinstance(req_id, int | str):
            await self.error(2, "Invalid request: 'id' must be an integer, a string or null", None)
            return
        method = req.get("method")
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                await self.error(2, "Invalid request: 'params' must be an array of stream names", req_id)
                return
            try:
                for name in params:
                    self.parse_stream(name)
            except ValueError as exc:
                await self.error(2, str(exc), req_id)
                return
            now = time.time_ns()
            for name in params:
                if method == "SUBSCRIBE":
                    self._add_stream(name, now)
                else:
                    self._remove_stream(name)
            await self.reply({"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await self.reply({"result": sorted(self.streams), "id": req_id})
        elif method == "SET_PROPERTY":
            if not (isinstance(params, list) and len(params) == 2 and params[0] == "combined"):
                await self.error(0, "Unknown property", req_id)
            elif not isinstance(params[1], bool):
                await self.error(1, f"Invalid value type: expected Boolean, got {params[1]!r}", req_id)
            else:
                self.combined = params[1]
                await self.reply({"result": None, "id": req_id})
        elif method == "GET_PROPERTY":
            if params != ["combined"]:
                await self.error(0, "Unknown property", req_id)
            else:
                await self.reply({"result": self.combined, "id": req_id})
        else:
            await self.error(2, f"Invalid request: unknown method {method!r}", req_id)

    def _remove_stream(self, name: str) -> None:
        entry = self.streams.pop(name, None)
        if entry is None:
            return
        vs = entry[0].venue_symbol
        kinds = {k for i, k in self.streams.values() if i.venue_symbol == vs}
        if not kinds & {"trade", "aggTrade"}:
            self.trade_cursor.pop(vs, None)
        if "kline_1m" not in kinds:
            self.kline_minute.pop(vs, None)
        if "bookTicker" not in kinds:
            self.last_quote.pop(vs, None)

    def rate_instruments(self) -> list[Any]:
        seen: dict[str, Any] = {}
        for inst, kind in self.streams.values():
            if kind in ("trade", "aggTrade"):
                seen[inst.symbol] = inst
        return list(seen.values())

    def encode_rate(self, trades: list[tuple[Any, TradeRows, int]], batch: int) -> list[str]:
        out = []
        unit = self.unit
        for inst, rows, i in trades:
            vs = inst.venue_symbol
            event = trade_event(
                vs,
                rows.trade_id[i],
                px8(rows.price_ticks[i], inst.price_decimals),
                px8(rows.size_lots[i], inst.size_decimals),
                rows.ts_ns[i],
                rows.side[i],
                rows.ts_ns[i] + 2 * NS_PER_MS,
                unit,
            )
            out.append(self.wrap(f"{vs.lower()}@trade", event))
        return out

    def wrap(self, name: str, event: str) -> str:
        return f'{{"stream":"{name}","data":{event}}}' if self.combined else event

    async def pump(self, now_ns: int) -> None:
        by_symbol: dict[str, list[tuple[str, str, Any]]] = {}
        for name, (inst, kind) in list(self.streams.items()):
            by_symbol.setdefault(inst.venue_symbol, []).append((name, kind, inst))
        for vs, subs in by_symbol.items():
            inst = subs[0][2]
            pd, sd = inst.price_decimals, inst.size_decimals
            if vs in self.trade_cursor:
                start = self.trade_cursor[vs]
                rows = self.feed.trades_between(BINANCE, inst.symbol, start, now_ns)
                self.trade_cursor[vs] = now_ns
                await self._send_trades(inst, rows, subs, now_ns, pd, sd)
            for name, kind, _ in subs:
                if kind == "bookTicker":
                    q = self.feed.quote_at(BINANCE, inst.symbol, now_ns)
                    if self.last_quote.get(vs) != q:
                        self.last_quote[vs] = q
                        await self.send_data(
                            self.wrap(name, book_ticker_event(vs, now_ns // 1000, q, pd, sd))
                        )
        if time.monotonic() - self.last_kline_push >= self.config.kline_interval_s:
            self.last_kline_push = time.monotonic()
            for subs in by_symbol.values():
                for name, kind, inst in subs:
                    if kind == "kline_1m":
                        await self._send_kline(name, inst, now_ns)

    async def _send_trades(
        self, inst: Any, rows: TradeRows, subs: list[tuple[str, str, Any]], now_ns: int, pd: int, sd: int
    ) -> None:
        names = [(n, k) for n, k, _ in subs if k in ("trade", "aggTrade")]
        vs, unit = inst.venue_symbol, self.unit
        for i in range(len(rows)):
            tid = rows.trade_id[i]
            if not self.take_trade(inst.symbol, tid):
                continue
            px, qty = px8(rows.price_ticks[i], pd), px8(rows.size_lots[i], sd)
            for name, kind in names:
                build = trade_event if kind == "trade" else agg_trade_event
                event = build(vs, tid, px, qty, rows.ts_ns[i], rows.side[i], now_ns, unit)
                await self.send_data(self.wrap(name, event), [(inst.symbol, [tid])])

    async def _send_kline(self, name: str, inst: Any, now_ns: int) -> None:
        vs = inst.venue_symbol
        minute = now_ns - now_ns % NS_PER_MIN
        prev = self.kline_minute.get(vs, minute)
        pd, sd = inst.price_decimals, inst.size_decimals
        if prev < minute:  # the previous candle closed: its final update, x=true
            bar = self.feed.bar_from_trades(BINANCE, inst.symbol, prev, prev + NS_PER_MIN) or self._empty(
                inst, prev
            )
            await self.send_data(self.wrap(name, kline_event(vs, bar, True, now_ns, self.unit, pd, sd)))
        self.kline_minute[vs] = minute
        bar = self.feed.bar_from_trades(BINANCE, inst.symbol, minute, now_ns) or self._empty(inst, minute)
        await self.send_data(self.wrap(name, kline_event(vs, bar, False, now_ns, self.unit, pd, sd)))

    def _empty(self, inst: Any, minute: int) -> BarRow:
        last = self.feed.last_trade_before(BINANCE, inst.symbol, minute)
        price = (
            last.price_ticks[0]
            if last.trade_id
            else self.feed.quote_at(BINANCE, inst.symbol, minute).bid_ticks
        )
        return empty_bar(minute, price)


# --- REST ------------------------------------------------------------------------------------------


def _err(status: int, code: int, msg: str) -> web.Response:
    return web.json_response(
        {"code": code, "msg": msg}, status=status, dumps=lambda o: orjson.dumps(o).decode()
    )


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=orjson.dumps(
                {
                    "code": -1100,
                    "msg": f"Illegal characters found in parameter '{name}'; "
                    f"legal range is '^[0-9]{{1,20}}$'.",
                }
            ).decode(),
            content_type="application/json",
        ) from None


def _instrument(feed: MarketFeed, request: web.Request) -> Any:
    symbol = request.query.get("symbol")
    if not symbol:
        raise web.HTTPBadRequest(
            text=orjson.dumps(
                {
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                }
            ).decode(),
            content_type="application/json",
        )
    try:
        return feed.instrument(BINANCE, symbol)
    except KeyError:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"code": -1121, "msg": "Invalid symbol."}).decode(),
            content_type="application/json",
        ) from None


def _limit(request: web.Request, default: int, maximum: int) -> int:
    limit = _int_param(request, "limit", default) or default
    return max(1, min(limit, maximum))


def rest_trade(inst: Any, rows: TradeRows, i: int) -> dict[str, Any]:
    pd, sd = inst.price_decimals, inst.size_decimals
    return {
        "id": rows.trade_id[i],
        "price": px8(rows.price_ticks[i], pd),
        "qty": px8(rows.size_lots[i], sd),
        "quoteQty": quote_volume8(rows.price_ticks[i] * rows.size_lots[i], pd, sd),
        "time": rows.ts_ns[i] // NS_PER_MS,
        "isBuyerMaker": rows.side[i] < 0,
        "isBestMatch": True,
    }


def add_routes(app: web.Application, feed: MarketFeed, prefix: str = "/binance") -> None:
    async def ping(request: web.Request) -> web.Response:
        return _json({})

    async def server_time(request: web.Request) -> web.Response:
        return _json({"serverTime": time.time_ns() // NS_PER_MS})

    async def exchange_info(request: web.Request) -> web.Response:
        symbols = []
        for inst in feed.instruments(BINANCE):
            base, _, quote = inst.symbol.partition("-")
            symbols.append(
                {
                    "symbol": inst.venue_symbol,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": px8(1, inst.price_decimals),
                            "maxPrice": "1000000.00000000",
                            "tickSize": px8(1, inst.price_decimals),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": px8(1, inst.size_decimals),
                            "maxQty": "9000.00000000",
                            "stepSize": px8(1, inst.size_decimals),
                        },
                    ],
                }
            )
        return _json(
            {
                "timezone": "UTC",
                "serverTime": time.time_ns() // NS_PER_MS,
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
                ],
                "exchangeFilters": [],
                "symbols": symbols,
            }
        )

    async def klines(request: web.Request) -> web.Response:
        inst = _instrument(feed, request)
        if request.query.get("interval") != "1m":
            return _err(400, -1120, "Invalid interval.")
        limit = _limit(request, 500, 1000)
        now = time.time_ns()
        current = now - now % NS_PER_MIN
        start_ms, end_ms = _int_param(request, "startTime"), _int_param(request, "endTime")
        end_ns = min(now, (end_ms + 1) * NS_PER_MS if end_ms is not None else now)
        if start_ms is not None:
            start_ns = feed.clip(start_ms * NS_PER_MS)
            start_ns += (-start_ns) % NS_PER_MIN  # first candle opening at or after startTime
        else:
            start_ns = current - (limit - 1) * NS_PER_MIN
            start_ns = max(start_ns, (end_ns - end_ns % NS_PER_MIN) - (limit - 1) * NS_PER_MIN)
        stop_ns = min(end_ns, start_ns + limit * NS_PER_MIN)
        bars = feed.bars(BINANCE, inst.symbol, start_ns, min(stop_ns, current)) if start_ns < current else []
        if start_ns <= current < stop_ns:  # the open candle: trades so far only, never the future
            bar = feed.bar_from_trades(BINANCE, inst.symbol, current, now)
            if bar is not None:
                bars.append(bar)
        pd, sd = inst.price_decimals, inst.size_decimals
        out = [
            [
                b.ts_ns // NS_PER_MS,
                px8(b.open, pd),
                px8(b.high, pd),
                px8(b.low, pd),
                px8(b.close, pd),
                px8(b.volume, sd),
                (b.ts_ns + NS_PER_MIN) // NS_PER_MS - 1,
                quote_volume8(b.quote_volume, pd, sd),
                b.trade_count,
                px8(b.buy_volume, sd),
                quote_volume8(_buy_quote_volume(b), pd, sd),
                "0",
            ]
            for b in bars[:limit]
        ]
        return _json(out)

    async def recent_trades(request: web.Request) -> web.Response:
        inst = _instrument(feed, request)
        limit = _limit(request, 500, 1000)
        rows = feed.recent_trades(BINANCE, inst.symbol, time.time_ns(), limit)
        return _json([rest_trade(inst, rows, i) for i in range(len(rows))])

    async def historical_trades(request: web.Request) -> web.Response:
        inst = _instrument(feed, request)
        limit = _limit(request, 500, 1000)
        from_id = _int_param(request, "fromId")
        now = time.time_ns()
        if from_id is None:
            rows = feed.recent_trades(BINANCE, inst.symbol, now, limit)
        else:
            rows = feed.trades_by_id(BINANCE, inst.symbol, max(0, from_id), max(0, from_id) + limit - 1)
        return _json([rest_trade(inst, rows, i) for i in range(len(rows)) if rows.ts_ns[i] < now])

    async def agg_trades(request: web.Request) -> web.Response:
        inst = _instrument(feed, request)
        limit = _limit(request, 500, 1000)
        now = time.time_ns()
        from_id = _int_param(request, "fromId")
        start_ms, end_ms = _int_param(request, "startTime"), _int_param(request, "endTime")
        if from_id is not None:
            rows = feed.trades_by_id(BINANCE, inst.symbol, max(0, from_id), max(0, from_id) + limit - 1)
        elif start_ms is not None:
            end_ns = min(now, ((end_ms if end_ms is not None else start_ms + 3_600_000) + 1) * NS_PER_MS)
            rows = feed.trades_range(BINANCE, inst.symbol, start_ms * NS_PER_MS, end_ns)
        else:
            rows = feed.recent_trades(BINANCE, inst.symbol, now, limit)
        pd, sd = inst.price_decimals, inst.size_decimals
        out = [
            {
                "a": rows.trade_id[i],
                "p": px8(rows.price_ticks[i], pd),
                "q": px8(rows.size_lots[i], sd),
                "f": rows.trade_id[i],
                "l": rows.trade_id[i],
                "T": rows.ts_ns[i] // NS_PER_MS,
                "m": rows.side[i] < 0,
                "M": True,
            }
            for i in range(len(rows))
            if rows.ts_ns[i] < now
        ][:limit]
        return _json(out)

    async def book_ticker(request: web.Request) -> web.Response:
        inst = _instrument(feed, request)
        q = feed.quote_at(BINANCE, inst.symbol, time.time_ns())
        pd, sd = inst.price_decimals, inst.size_decimals
        return _json(
            {
                "symbol": inst.venue_symbol,
                "bidPrice": px8(q.bid_ticks, pd),
                "bidQty": px8(q.bid_lots, sd),
                "askPrice": px8(q.ask_ticks, pd),
                "askQty": px8(q.ask_lots, sd),
            }
        )

    api = f"{prefix}/api/v3"
    app.router.add_get(f"{api}/ping", ping)
    app.router.add_get(f"{api}/time", server_time)
    app.router.add_get(f"{api}/exchangeInfo", exchange_info)
    app.router.add_get(f"{api}/klines", klines)
    app.router.add_get(f"{api}/trades", recent_trades)
    app.router.add_get(f"{api}/historicalTrades", historical_trades)
    app.router.add_get(f"{api}/aggTrades", agg_trades)
    app.router.add_get(f"{api}/ticker/bookTicker", book_ticker)


def rate_limited_response(retry_after: int) -> web.Response:
    resp = _err(
        429,
        -1003,
        "Too much request weight used; current limit is exceeded. Please use WebSocket "
        "Streams for live updates to avoid polling the API.",
    )
    resp.headers["Retry-After"] = str(retry_after)
    return resp


def failure_response(status: int) -> web.Response:
    return _err(status, -1001, "Internal error; unable to process your request. Please try again.")


def ws_params(request: web.Request) -> tuple[list[str], bool, int]:
    """Streams, combined flag and time unit from a ``/ws/...`` or ``/stream?streams=`` URL."""
    unit = 1000 if request.query.get("timeUnit", "").upper() == "MICROSECOND" else NS_PER_MS
    tail = request.match_info.get("tail", "")
    if request.path.rstrip("/").endswith("/stream"):
        names = [s for s in request.query.get("streams", "").split("/") if s]
        return names, True, unit
    return [s for s in tail.split("/") if s], False, unit
