"""Polygon.io / Massive: WebSocket ``/polygon/crypto`` and ``/polygon/stocks``, REST v2 aggs, v3 trades, news.

Wire format per exchange-protocols.md section 3: every server frame is a JSON array of events; the
handshake is ``connected`` -> client ``auth`` -> ``auth_success`` / ``auth_failed`` (then close) /
``auth_timeout``; each subscribed topic is acked with a ``success`` status. Prices and sizes are JSON
numbers (written here from the exact decimal text, never through a float, so ``0.00001`` never turns
into ``1e-05``), times are epoch ms on the socket and ns on REST v3.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from rrr_platform.market.symbols import canonical_from_polygon_rest, polygon_rest_ticker
from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN, NS_PER_MS, format_rfc3339_ns
from rrr_platform.market.types import POLYGON
from rrr_platform.simulator.faults import MalformSyntax
from rrr_platform.simulator.feed import BarRow, MarketFeed, QuoteRow, TradeRows, trimmed_decimal
from rrr_platform.simulator.session import Session

SYNTAX = MalformSyntax(
    price_re=re.compile(r'("p":)(-?[0-9.]+)'),
    price_is_string=False,
    time_re=re.compile(r'("t":)(\d+)'),
    absurd_time="99999999999999",
)
CRYPTO_EXCHANGE_ID = 1  # Polygon's id of the source exchange attributed to every simulated crypto tick
STOCK_EXCHANGE_ID = 4
STOCK_TAPE = 3
MARKET_EVENTS = {"crypto": ("XT", "XQ", "XA"), "stocks": ("T", "Q", "AM")}


def status(status_: str, message: str) -> str:
    return orjson.dumps([{"ev": "status", "status": status_, "message": message}]).decode()


def recv_delay_ms(trade_id: int) -> int:
    """Polygon's receive time ``r`` trails the trade time by a few ms (deterministic per trade)."""
    return 3 + (trade_id * 2654435761) % 25


def xt_event(pair: str, rows: TradeRows, i: int, pd: int, sd: int) -> str:
    tid, t_ms = rows.trade_id[i], rows.ts_ns[i] // NS_PER_MS
    cond = 2 if rows.side[i] > 0 else 1
    return (
        f'{{"ev":"XT","pair":"{pair}","p":{trimmed_decimal(rows.price_ticks[i], pd)},"t":{t_ms},'
        f'"s":{trimmed_decimal(rows.size_lots[i], sd)},"c":[{cond}],"i":"{tid}",'
        f'"x":{CRYPTO_EXCHANGE_ID},"r":{t_ms + recv_delay_ms(tid)}}}'
    )


def t_event(sym: str, rows: TradeRows, i: int, pd: int, sd: int) -> str:
    tid, t_ms = rows.trade_id[i], rows.ts_ns[i] // NS_PER_MS
    return (
        f'{{"ev":"T","sym":"{sym}","x":{STOCK_EXCHANGE_ID},"i":"{tid}","z":{STOCK_TAPE},'
        f'"p":{trimmed_decimal(rows.price_ticks[i], pd)},"s":{trimmed_decimal(rows.size_lots[i], sd)},'
        f'"t":{t_ms},"q":{stock_trade_seq(tid)}}}'
    )


def stock_trade_seq(trade_id: int) -> int:
    """Stocks ``q``: increasing per ticker, deliberately not consecutive."""
    return 1_000_000 + trade_id * 3 + trade_id % 2


def xq_event(pair: str, q: QuoteRow, ts_ns: int, pd: int, sd: int) -> str:
    t_ms = ts_ns // NS_PER_MS
    return (
        f'{{"ev":"XQ","pair":"{pair}","bp":{trimmed_decimal(q.bid_ticks, pd)},'
        f'"bs":{trimmed_decimal(q.bid_lots, sd)},"ap":{trimmed_decimal(q.ask_ticks, pd)},'
        f'"as":{trimmed_decimal(q.ask_lots, sd)},"t":{t_ms},"x":{CRYPTO_EXCHANGE_ID},"r":{t_ms + 4}}}'
    )


def q_event(sym: str, q: QuoteRow, ts_ns: int, pd: int, sd: int) -> str:
    t_ms = ts_ns // NS_PER_MS
    # Stock quote sizes are in round lots of 100 shares; the model's lots are shares (sd=0).
    lot = 100 * 10**sd
    return (
        f'{{"ev":"Q","sym":"{sym}","bx":{STOCK_EXCHANGE_ID},"bp":{trimmed_decimal(q.bid_ticks, pd)},'
        f'"bs":{max(1, q.bid_lots // lot)},"ax":{STOCK_EXCHANGE_ID + 8},'
        f'"ap":{trimmed_decimal(q.ask_ticks, pd)},"as":{max(1, q.ask_lots // lot)},"c":1,"i":[],'
        f'"t":{t_ms},"q":{ts_ns // 1000},"z":{STOCK_TAPE}}}'
    )


def vwap_text(bar: BarRow, pd: int, sd: int) -> str:
    if bar.volume <= 0:
        return trimmed_decimal(bar.close, pd)
    # quote_volume / volume, in ticks, rounded to 4 extra digits: an exact decimal, no float
    scaled = (bar.quote_volume * 10**4 * 2 + bar.volume) // (2 * bar.volume)
    return trimmed_decimal(scaled, pd + 4)


def xa_event(pair: str, bar: BarRow, pd: int, sd: int) -> str:
    avg = bar.volume // bar.trade_count if bar.trade_count else 0
    return (
        f'{{"ev":"XA","pair":"{pair}","o":{trimmed_decimal(bar.open, pd)},'
        f'"c":{trimmed_decimal(bar.close, pd)},"h":{trimmed_decimal(bar.high, pd)},'
        f'"l":{trimmed_decimal(bar.low, pd)},"v":{trimmed_decimal(bar.volume, sd)},'
        f'"vw":{vwap_text(bar, pd, sd)},"z":{avg // 10**sd},"s":{bar.ts_ns // NS_PER_MS},'
        f'"e":{(bar.ts_ns + NS_PER_MIN) // NS_PER_MS}}}'
    )


class PolygonSession(Session):
    venue = POLYGON
    syntax = SYNTAX

    def __init__(self, *args: Any, market: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.market = market
        self.authed = False
        self.topics: set[str] = set()
        self.cursor: dict[str, int] = {}
        self.last_quote: dict[str, QuoteRow] = {}
        self.agg_minute: dict[str, int] = {}
        self.day_stats: dict[tuple[str, int], tuple[int, int, int, int]] = {}
        asset = "crypto_spot" if market == "crypto" else "equity"
        self.instruments = {
            i.venue_symbol: i for i in self.feed.instruments(POLYGON) if i.asset_class == asset
        }

    async def on_open(self) -> None:
        await self.send_control(status("connected", "Connected Successfully"))
        limit = self.config.polygon_max_connections
        if limit is not None:
            same = [
                s
                for s in self.server.sessions.values()
                if isinstance(s, PolygonSession) and s.market == self.market and not s.closed
            ]
            if len(same) > limit:  # the new connection is the one refused
                await self.send_control(
                    status(
                        "max_connections",
                        "Maximum number of websocket connections "
                        "exceeded. You have reached the connection "
                        "limit for your account.",
                    )
                )
                await self.close(1008, "max_connections")
                return
        self._tasks.append(asyncio.create_task(self._auth_deadline()))

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(self.config.auth_timeout_s)
        if not self.authed and not self.closed:
            await self.send_control(status("auth_timeout", "No authentication request received."))
            await self.close(1008, "auth timeout")

    async def on_text(self, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.send_control(status("error", "invalid JSON"))
            return
        if not isinstance(req, dict) or not isinstance(req.get("action"), str):
            await self.send_control(status("error", 'invalid message: expected {"action":...,"params":...}'))
            return
        action, params = req["action"], req.get("params", "")
        if action == "auth":
            if params == self.config.polygon_api_key:
                self.authed = True
                await self.send_control(status("auth_success", "authenticated"))
            else:
                await self.send_control(status("auth_failed", "authentication failed"))
                await self.close(1008, "authentication failed")
            return
        if action not in ("subscribe", "unsubscribe"):
            await self.send_control(status("error", f"unknown action: {action}"))
            return
        if not self.authed:
            await self.send_control(status("error", "not authorized"))
            return
        if not isinstance(params, str):
            await self.send_control(status("error", "params must be a comma-separated string"))
            return
        now = time.time_ns()
        acks = []
        for topic in filter(None, (t.strip() for t in params.split(","))):
            ev, _, ticker = topic.partition(".")
            if ev not in MARKET_EVENTS[self.market] or not ticker:
                acks.append({"ev": "status", "status": "error", "message": f"invalid subscription: {topic}"})
                continue
            if action == "subscribe":
                self.topics.add(topic)
                for vs in self._tickers(ticker):
                    self.cursor.setdefault(vs, now)
                    minute = now - now % NS_PER_MIN
                    self.agg_minute.setdefault(
                        vs, minute - NS_PER_MIN if self.config.catch_up_minute else minute
                    )
                acks.append({"ev": "status", "status": "success", "message": f"subscribed to: {topic}"})
            else:
                self.topics.discard(topic)
                acks.append({"ev": "status", "status": "success", "message": f"unsubscribed to: {topic}"})
        for ack in acks:  # one frame per topic, as the real feed does
            await self.send_control(orjson.dumps([ack]).decode())

    def _tickers(self, ticker: str) -> list[str]:
        if ticker == "*":
            return list(self.instruments)
        return [ticker] if ticker in self.instruments else []

    def _wanted(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for topic in self.topics:
            ev, _, ticker = topic.partition(".")
            for vs in self._tickers(ticker):
                out.setdefault(vs, set()).add(ev)
        return out

    def rate_instruments(self) -> list[Any]:
        trade_ev = MARKET_EVENTS[self.market][0]
        return [self.instruments[vs] for vs, evs in self._wanted().items() if trade_ev in evs]

    def encode_rate(self, trades: list[tuple[Any, TradeRows, int]], batch: int) -> list[str]:
        build = xt_event if self.market == "crypto" else t_event
        events = [
            build(inst.venue_symbol, rows, i, inst.price_decimals, inst.size_decimals)
            for inst, rows, i in trades
        ]
        return ["[" + ",".join(events[k : k + batch]) + "]" for k in range(0, len(events), batch)]

    async def pump(self, now_ns: int) -> None:
        wanted = self._wanted()
        events: list[str] = []
        refs: list[tuple[str, list[int]]] = []
        trade_ev, quote_ev, agg_ev = MARKET_EVENTS[self.market]
        for vs, evs in wanted.items():
            inst = self.instruments[vs]
            pd, sd = inst.price_decimals, inst.size_decimals
            start = self.cursor.get(vs, now_ns)
            self.cursor[vs] = now_ns
            if trade_ev in evs:
                rows = self.feed.trades_between(POLYGON, inst.symbol, start, now_ns)
                build = xt_event if trade_ev == "XT" else t_event
                ids = []
                for i in range(len(rows)):
                    if self.take_trade(inst.symbol, rows.trade_id[i]):
                        events.append(build(vs, rows, i, pd, sd))
                        ids.append(rows.trade_id[i])
                if ids:
                    refs.append((inst.symbol, ids))
            if quote_ev in evs:
                q = self.feed.quote_at(POLYGON, inst.symbol, now_ns)
                if self.last_quote.get(vs) != q:
                    self.last_quote[vs] = q
                    events.append((xq_event if quote_ev == "XQ" else q_event)(vs, q, now_ns, pd, sd))
            minute = now_ns - now_ns % NS_PER_MIN
            prev = self.agg_minute.get(vs, minute)
            if prev < minute:
                self.agg_minute[vs] = minute
                if agg_ev in evs:
                    bars = self.feed.bars(POLYGON, inst.symbol, prev, minute)
                    for bar in bars:
                        if bar.trade_count:
                            events.append(
                                xa_event(vs, bar, pd, sd) if agg_ev == "XA" else self._am_event(vs, inst, bar)
                            )
        limit = self.config.polygon_max_events_per_frame
        for k in range(0, len(events), limit):
            chunk = events[k : k + limit]
            await self.send_data("[" + ",".join(chunk) + "]", refs if k == 0 else [])

    def _am_event(self, sym: str, inst: Any, bar: BarRow) -> str:
        pd, sd = inst.price_decimals, inst.size_decimals
        day_start = bar.ts_ns - bar.ts_ns % NS_PER_DAY
        day_bars = self.feed.bars(POLYGON, inst.symbol, day_start, bar.ts_ns + NS_PER_MIN)
        traded = [b for b in day_bars if b.trade_count]
        acc_volume = sum(b.volume for b in traded)
        acc_notional = sum(b.quote_volume for b in traded)
        day_open = traded[0].open if traded else bar.open
        day_vwap = BarRow(0, 0, 0, 0, bar.close, acc_volume, 1, 0, acc_notional, 0, 0)
        avg = bar.volume // bar.trade_count if bar.trade_count else 0
        return (
            f'{{"ev":"AM","sym":"{sym}","v":{trimmed_decimal(bar.volume, sd)},'
            f'"av":{trimmed_decimal(acc_volume, sd)},"op":{trimmed_decimal(day_open, pd)},'
            f'"vw":{vwap_text(bar, pd, sd)},"o":{trimmed_decimal(bar.open, pd)},'
            f'"c":{trimmed_decimal(bar.close, pd)},"h":{trimmed_decimal(bar.high, pd)},'
            f'"l":{trimmed_decimal(bar.low, pd)},"a":{vwap_text(day_vwap, pd, sd)},'
            f'"z":{avg // 10**sd},"s":{bar.ts_ns // NS_PER_MS},"e":{(bar.ts_ns + NS_PER_MIN) // NS_PER_MS}}}'
        )


# --- REST ------------------------------------------------------------------------------------------


def _request_id() -> str:
    return uuid.uuid4().hex


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, status_text: str = "ERROR") -> web.Response:
    return _json({"status": status_text, "request_id": _request_id(), "error": message}, status)


def _raw_number(text: str) -> orjson.Fragment:
    return orjson.Fragment(text.encode())


def _bound(raw: str, end_of_day: bool) -> int:
    """Aggregates' from/to: a ms timestamp or ``YYYY-MM-DD`` (``to`` covers that whole day)."""
    if raw.isdigit():
        return int(raw) * NS_PER_MS
    day = dt.date.fromisoformat(raw)
    start = (day - dt.date(1970, 1, 1)).days * NS_PER_DAY
    return start + NS_PER_DAY if end_of_day else start


def _ts_filter(value: str) -> int:
    """v3 timestamp filters: ns integer, or an RFC 3339 / date string."""
    if value.isdigit():
        return int(value)
    if len(value) == 10:
        return _bound(value, False)
    from rrr_platform.market.timeutil import parse_rfc3339_ns

    return parse_rfc3339_ns(value)


def _encode_cursor(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")


def _decode_cursor(text: str) -> dict[str, Any]:
    return orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def add_routes(app: web.Application, feed: MarketFeed, api_key: str, prefix: str = "/polygon") -> None:
    def check_key(request: web.Request) -> None:
        key = request.query.get("apiKey")
        auth = request.headers.get("Authorization", "")
        if key is None and auth.startswith("Bearer "):
            key = auth[7:]
        if not key:
            raise web.HTTPUnauthorized(
                text=orjson.dumps(
                    {"status": "ERROR", "request_id": _request_id(), "error": "API Key was not provided"}
                ).decode(),
                content_type="application/json",
            )
        if key != api_key:
            raise web.HTTPUnauthorized(
                text=orjson.dumps(
                    {"status": "ERROR", "request_id": _request_id(), "error": "Unknown API Key"}
                ).decode(),
                content_type="application/json",
            )

    def instrument(ticker: str) -> Any:
        try:
            return feed.instrument(POLYGON, canonical_from_polygon_rest(ticker))
        except (KeyError, ValueError):
            return None

    def base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{prefix}"

    async def aggs(request: web.Request) -> web.Response:
        check_key(request)
        m = request.match_info
        ticker = m["ticker"]
        if m["multiplier"] != "1" or m["timespan"] != "minute":
            return _error(400, "the simulator serves 1/minute aggregates only")
        inst = instrument(ticker)
        try:
            start, end = _bound(m["from"], False), _bound(m["to"], True)
            limit = max(1, min(int(request.query.get("limit", "5000")), 50000))
        except ValueError as exc:
            return _error(400, f"invalid parameter: {exc}")
        if m["to"].isdigit():
            end += NS_PER_MS  # a ms ``to`` is inclusive
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": 0,
            "resultsCount": 0,
            "adjusted": request.query.get("adjusted", "true") != "false",
            "status": "OK",
            "request_id": _request_id(),
        }
        if inst is None:
            return _json(body)
        now = time.time_ns()
        current = now - now % NS_PER_MIN
        start = feed.clip(start)
        start += (-start) % NS_PER_MIN
        stop = min(end, current, start + limit * NS_PER_MIN)  # complete minutes only, never the future
        bars = (
            [b for b in feed.bars(POLYGON, inst.symbol, start, stop) if b.trade_count] if start < stop else []
        )
        pd, sd = inst.price_decimals, inst.size_decimals
        results = [
            {
                "v": _raw_number(trimmed_decimal(b.volume, sd)),
                "vw": _raw_number(vwap_text(b, pd, sd)),
                "o": _raw_number(trimmed_decimal(b.open, pd)),
                "c": _raw_number(trimmed_decimal(b.close, pd)),
                "h": _raw_number(trimmed_decimal(b.high, pd)),
                "l": _raw_number(trimmed_decimal(b.low, pd)),
                "t": b.ts_ns // NS_PER_MS,
                "n": b.trade_count,
            }
            for b in bars
        ]
        if request.query.get("sort") == "desc":
            results.reverse()
        body.update(queryCount=len(results), resultsCount=len(results), count=len(results), results=results)
        if stop < min(end, current) and request.query.get("sort") != "desc":
            body["next_url"] = (
                f"{base_url(request)}/v2/aggs/ticker/{ticker}/range/1/minute/"
                f"{stop // NS_PER_MS}/{m['to']}?limit={limit}&sort=asc"
            )
        return _json(body)

    async def trades(request: web.Request) -> web.Response:
        check_key(request)
        ticker = request.match_info["ticker"]
        inst = instrument(ticker)
        q = request.query
        now = time.time_ns()
        try:
            if "cursor" in q:
                cur = _decode_cursor(q["cursor"])
                lo, hi, order, limit, next_id = cur["lo"], cur["hi"], cur["order"], cur["limit"], cur["id"]
            else:
                limit = max(1, min(int(q.get("limit", "1000")), 50000))
                order = q.get("order", "desc")
                if order not in ("asc", "desc"):
                    return _error(400, "order must be asc or desc")
                lo, hi = now - NS_PER_DAY, now
                if "timestamp" in q:
                    lo = _ts_filter(q["timestamp"])
                    hi = lo + (NS_PER_DAY if len(q["timestamp"]) == 10 else 1)
                if "timestamp.gte" in q:
                    lo = _ts_filter(q["timestamp.gte"])
                if "timestamp.gt" in q:
                    lo = _ts_filter(q["timestamp.gt"]) + 1
                if "timestamp.lt" in q:
                    hi = _ts_filter(q["timestamp.lt"])
                if "timestamp.lte" in q:
                    hi = _ts_filter(q["timestamp.lte"]) + 1
                next_id = None
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"invalid parameter: {exc}")
        hi, lo = min(hi, now), feed.clip(lo)
        body: dict[str, Any] = {"status": "OK", "request_id": _request_id(), "results": []}
        if inst is None or hi <= lo:
            return _json(body)
        rows = _page(feed, inst.symbol, lo, hi, order, limit, next_id)
        pd, sd = inst.price_decimals, inst.size_decimals
        crypto = inst.asset_class == "crypto_spot"
        results = []
        for i in range(len(rows)):
            r: dict[str, Any] = {
                "conditions": [2 if rows.side[i] > 0 else 1] if crypto else [],
                "exchange": CRYPTO_EXCHANGE_ID if crypto else STOCK_EXCHANGE_ID,
                "id": str(rows.trade_id[i]),
                "participant_timestamp": rows.ts_ns[i],
                "price": _raw_number(trimmed_decimal(rows.price_ticks[i], pd)),
                "size": _raw_number(trimmed_decimal(rows.size_lots[i], sd)),
            }
            if not crypto:
                r.update(
                    sequence_number=stock_trade_seq(rows.trade_id[i]),
                    sip_timestamp=rows.ts_ns[i] + 1000 * (1 + rows.trade_id[i] % 50),
                    tape=STOCK_TAPE,
                )
            results.append(r)
        body["results"] = results
        if len(rows) == limit:
            nid = rows.trade_id[-1] + 1 if order == "asc" else rows.trade_id[-1] - 1
            cursor = _encode_cursor({"lo": lo, "hi": hi, "order": order, "limit": limit, "id": nid})
            body["next_url"] = f"{base_url(request)}/v3/trades/{ticker}?cursor={cursor}"
        return _json(body)

    async def news(request: web.Request) -> web.Response:
        check_key(request)
        q = request.query
        now = time.time_ns()
        try:
            limit = max(1, min(int(q.get("limit", "10")), 1000))
            order = q.get("order", "desc")
            lo = _ts_filter(q["published_utc.gte"]) if "published_utc.gte" in q else now - 7 * NS_PER_DAY
            if "published_utc.gt" in q:
                lo = _ts_filter(q["published_utc.gt"]) + 1
            hi = _ts_filter(q["published_utc.lt"]) if "published_utc.lt" in q else now
            if "published_utc.lte" in q:
                hi = _ts_filter(q["published_utc.lte"]) + 1
            offset = int(_decode_cursor(q["cursor"])["offset"]) if "cursor" in q else 0
            if "cursor" in q:
                cur = _decode_cursor(q["cursor"])
                lo, hi, order, limit = cur["lo"], cur["hi"], cur["order"], cur["limit"]
        except (ValueError, KeyError) as exc:
            return _error(400, f"invalid parameter: {exc}")
        hi, lo = min(hi, now), feed.clip(lo)
        ticker = q.get("ticker")
        try:
            items = feed.model.news(lo, hi, ticker=ticker) if hi > lo else []
        except KeyError:
            items = []
        items = sorted(items, key=lambda n: n.published_ns, reverse=(order == "desc"))
        page = items[offset : offset + limit]
        equities = {i.venue_symbol for i in feed.instruments(POLYGON) if i.asset_class == "equity"}
        body: dict[str, Any] = {
            "results": [news_json(n, equities) for n in page],
            "status": "OK",
            "request_id": _request_id(),
            "count": len(page),
        }
        if offset + limit < len(items):
            cursor = _encode_cursor(
                {"lo": lo, "hi": hi, "order": order, "limit": limit, "offset": offset + limit}
            )
            body["next_url"] = f"{base_url(request)}/v2/reference/news?cursor={cursor}"
        return _json(body)

    app.router.add_get(
        f"{prefix}/v2/aggs/ticker/{{ticker}}/range/{{multiplier}}/{{timespan}}/{{from}}/{{to}}", aggs
    )
    app.router.add_get(f"{prefix}/v3/trades/{{ticker}}", trades)
    app.router.add_get(f"{prefix}/v2/reference/news", news)


def _page(
    feed: MarketFeed, symbol: str, lo: int, hi: int, order: str, limit: int, next_id: int | None
) -> TradeRows:
    """One page of trades in [lo, hi) by id order, from ``next_id`` (a cursor) or from the window edge."""
    if next_id is not None:
        if order == "asc":
            rows = feed.trades_by_id(POLYGON, symbol, next_id, next_id + limit - 1)
            keep = [i for i in range(len(rows)) if lo <= rows.ts_ns[i] < hi]
        else:
            rows = feed.trades_by_id(POLYGON, symbol, max(0, next_id - limit + 1), next_id)
            keep = [i for i in reversed(range(len(rows))) if lo <= rows.ts_ns[i] < hi]
        return _select(rows, keep)
    # First page: walk minutes from the window edge until ``limit`` trades are found.
    collected = TradeRows.empty()
    if order == "asc":
        minute = lo - lo % NS_PER_MIN
        while minute < hi and len(collected) < limit:
            part = feed.trades_between(POLYGON, symbol, max(lo, minute), min(hi, minute + NS_PER_MIN))
            collected = collected.concat(part)
            minute += NS_PER_MIN
        return _select(collected, list(range(min(limit, len(collected)))))
    minute = (hi - 1) - (hi - 1) % NS_PER_MIN
    while minute + NS_PER_MIN > lo and len(collected) < limit:
        part = feed.trades_between(POLYGON, symbol, max(lo, minute), min(hi, minute + NS_PER_MIN))
        collected = part.concat(collected)
        minute -= NS_PER_MIN
    n = len(collected)
    return _select(collected, list(reversed(range(max(0, n - limit), n))))


def _select(rows: TradeRows, idx: list[int]) -> TradeRows:
    return TradeRows(
        [rows.ts_ns[i] for i in idx],
        [rows.trade_id[i] for i in idx],
        [rows.price_ticks[i] for i in idx],
        [rows.size_lots[i] for i in idx],
        [rows.side[i] for i in idx],
    )


def news_json(item: Any, equities: set[str]) -> dict[str, Any]:
    """Polygon's news shape; crypto bases are printed as Polygon crypto tickers (``X:BTCUSD``)."""
    return {
        "id": item.id,
        "publisher": {
            "name": item.publisher,
            "homepage_url": "https://news.simulator.local/",
            "logo_url": "https://news.simulator.local/logo.png",
            "favicon_url": "https://news.simulator.local/favicon.ico",
        },
        "title": item.title,
        "author": item.publisher,
        "published_utc": format_rfc3339_ns(item.published_ns, 0),
        "article_url": item.url,
        "tickers": [t if t in equities else polygon_rest_ticker(f"{t}-USD") for t in item.tickers],
        "description": item.description,
        "keywords": [],
    }


def rate_limited_response(retry_after: int) -> web.Response:
    return _json(
        {
            "status": "ERROR",
            "request_id": _request_id(),
            "error": "You've exceeded the maximum requests per minute, please wait or upgrade your "
            "subscription to continue.",
        },
        429,
        {"Retry-After": str(retry_after)},
    )


def failure_response(status: int) -> web.Response:
    return _error(status, "Internal server error")
