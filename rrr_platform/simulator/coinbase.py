"""Coinbase Exchange (``/coinbase``) and Advanced Trade (``/coinbase-advanced``): WebSocket and REST.

Exchange (exchange-protocols.md 2B): flat messages with ``type``; ``matches`` (``last_match`` first,
then ``match``, side = maker's side), ``ticker`` (side = taker's side), ``heartbeat`` per product each
second; per-product ``sequence`` shared by all channels (so it jumps between matches) and consecutive
``trade_id``; decimal strings, RFC 3339 µs times. Subscribe within ``subscribe_timeout_s`` or the
connection is closed.

Advanced Trade (2A): every frame is an envelope ``{channel, timestamp, sequence_num, events}`` with a
per-connection ``sequence_num`` starting at 0 over all channels; one channel per subscribe message;
acks on channel ``subscriptions``; ``market_trades`` batched every ``at_batch_s`` (side = maker's
side, trades newest first as Coinbase lists them); ``ticker``; ``heartbeats`` with Go-format
``current_time``. Errors are bare ``{"type":"error","message":...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from typing import Any

import orjson
from aiohttp import web

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN, NS_PER_S, format_rfc3339_ns, parse_rfc3339_ns
from rrr_platform.market.types import COINBASE, COINBASE_AT
from rrr_platform.simulator.faults import MalformSyntax
from rrr_platform.simulator.feed import (
    MarketFeed,
    TradeRows,
    fixed_decimal,
    trimmed_decimal,
    window_stats,
)
from rrr_platform.simulator.session import Session

SEQUENCE_BASE = 10_000_000_000  # Exchange sequences exceed 2**32, as the real ones do
SYNTAX = MalformSyntax(
    price_re=re.compile(r'("price":)("[^"]*")'),
    price_is_string=True,
    time_re=re.compile(r'("time":)("[^"]*")'),
    absurd_time='"2999-12-31T23:59:59.999999Z"',
)
EXCHANGE_CHANNELS = ("matches", "ticker", "heartbeat")
AT_CHANNELS = ("market_trades", "ticker", "heartbeats")


def sequence_of(trade_id: int) -> int:
    """Per-product sequence of the match with this trade id (other full-channel messages fill the gaps)."""
    return SEQUENCE_BASE + 4 * trade_id


def order_uuid(trade_id: int, salt: int) -> str:
    """A deterministic version-4-shaped UUID per (trade, maker/taker)."""
    x = hashlib.blake2b(f"{trade_id}:{salt}".encode(), digest_size=16).hexdigest()
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-a{x[17:20]}-{x[20:32]}"


def rfc_us(ts_ns: int) -> str:
    return format_rfc3339_ns(ts_ns, 6)


def rfc_ns_trimmed(ts_ns: int) -> str:
    """Advanced Trade envelope time: up to 9 fraction digits, trailing zeros trimmed."""
    text = format_rfc3339_ns(ts_ns, 9)[:-1].rstrip("0").rstrip(".")
    return text + "Z"


def go_time(ts_ns: int, mono_s: float) -> str:
    """Go's ``time.Time.String()``: ``2026-03-02 15:04:06.000098761 +0000 UTC m=+91717.525857105``."""
    base = format_rfc3339_ns(ts_ns, 9)[:-1].replace("T", " ")
    return f"{base} +0000 UTC m=+{mono_s:.9f}"


class Stats24h:
    """24 h / 30 d ticker statistics, recomputed once a minute per product."""

    def __init__(self, feed: MarketFeed, venue: str) -> None:
        self.feed, self.venue = feed, venue
        self._cache: dict[tuple[str, int], dict[str, str]] = {}

    def get(self, inst: Any, now_ns: int) -> dict[str, str]:
        minute = now_ns - now_ns % NS_PER_MIN
        key = (inst.symbol, minute)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        pd, sd = inst.price_decimals, inst.size_decimals
        day = window_stats(self.feed, self.venue, inst.symbol, minute - NS_PER_DAY, minute)
        # 30 days of minute bars once a minute is cheap enough for a handful of products; the
        # 52-week figures of Advanced Trade come from the same 30-day window (labelled as such).
        month = window_stats(self.feed, self.venue, inst.symbol, minute - 30 * NS_PER_DAY, minute)
        out = {
            "open_24h": "0",
            "high_24h": "0",
            "low_24h": "0",
            "volume_24h": "0",
            "volume_30d": "0",
            "low_52_w": "0",
            "high_52_w": "0",
            "price_percent_chg_24_h": "0",
        }
        if day is not None:
            chg = (day.close - day.open) * 100 / day.open if day.open else 0.0
            out.update(
                open_24h=trimmed_decimal(day.open, pd),
                high_24h=trimmed_decimal(day.high, pd),
                low_24h=trimmed_decimal(day.low, pd),
                volume_24h=trimmed_decimal(day.volume, sd),
                price_percent_chg_24_h=f"{chg:.8f}".rstrip("0").rstrip(".") or "0",
            )
        if month is not None:
            out.update(
                volume_30d=trimmed_decimal(month.volume, sd),
                low_52_w=trimmed_decimal(month.low, pd),
                high_52_w=trimmed_decimal(month.high, pd),
            )
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = out
        return out


# --- Coinbase Exchange WebSocket -------------------------------------------------------------------


class CoinbaseExchangeSession(Session):
    venue = COINBASE
    syntax = SYNTAX

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subs: dict[str, list[str]] = {c: [] for c in EXCHANGE_CHANNELS}
        self.cursor: dict[str, int] = {}
        self.last_trade_id: dict[str, int] = {}
        self.instruments: dict[str, Any] = {}
        self.last_heartbeat = 0.0
        self.ever_subscribed = False
        self.stats = server_stats(self.server, COINBASE)

    async def on_open(self) -> None:
        self._tasks.append(asyncio.create_task(self._subscribe_deadline()))

    async def _subscribe_deadline(self) -> None:
        await asyncio.sleep(self.config.subscribe_timeout_s)
        if not self.ever_subscribed and not self.closed:
            await self.send_control(
                orjson.dumps(
                    {
                        "type": "error",
                        "message": "Failed to subscribe",
                        "reason": "no subscribe message received",
                    }
                ).decode()
            )
            await self.close(1000, "subscribe timeout")

    async def error(self, message: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "message": message}
        if reason is not None:
            body["reason"] = reason
        await self.send_control(orjson.dumps(body).decode())

    def _parse_channels(self, req: dict[str, Any]) -> dict[str, list[str]]:
        top = req.get("product_ids", [])
        if not isinstance(top, list) or not all(isinstance(p, str) for p in top):
            raise ValueError("product_ids must be an array of strings")
        channels = req.get("channels")
        if channels is None:
            channels = list(EXCHANGE_CHANNELS) if req.get("type") == "unsubscribe" and top else []
        if not isinstance(channels, list) or not channels:
            raise ValueError("channels must be a non-empty array")
        out: dict[str, list[str]] = {}
        for ch in channels:
            if isinstance(ch, str):
                name, products = ch, top
            elif isinstance(ch, dict) and isinstance(ch.get("name"), str):
                name, products = ch["name"], ch.get("product_ids", top)
            else:
                raise ValueError(f"invalid channel {ch!r}")
            if name not in EXCHANGE_CHANNELS:
                raise ValueError(f"{name} is not a valid channel")
            if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
                raise ValueError("product_ids must be an array of strings")
            for p in products:
                try:
                    self.instruments[p] = self.feed.instrument(COINBASE, p)
                except KeyError:
                    raise ValueError(f"{p} is not a valid product") from None
            out.setdefault(name, []).extend(products)
        return out

    async def on_text(self, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.error("Malformed JSON")
            return
        if not isinstance(req, dict) or req.get("type") not in ("subscribe", "unsubscribe"):
            await self.error("Failed to subscribe", "Type has to be either subscribe or unsubscribe")
            return
        try:
            wanted = self._parse_channels(req)
        except ValueError as exc:
            await self.error("Failed to subscribe", str(exc))
            return
        if req["type"] == "subscribe":
            if not any(wanted.values()):
                await self.error("Failed to subscribe", "No product ids provided")
                return
            self.ever_subscribed = True
            now = time.time_ns()
            new_matches = [p for p in wanted.get("matches", []) if p not in self.subs["matches"]]
            for name, products in wanted.items():
                for p in products:
                    if p not in self.subs[name]:
                        self.subs[name].append(p)
                    if name in ("matches", "ticker"):
                        self.cursor.setdefault(p, now)
                    self.last_trade_id.setdefault(p, self._last_id_before(p, now))
            await self._send_subscriptions()
            for p in new_matches:
                await self._send_last_match(p, now)
        else:
            for name, products in wanted.items():  # a channel named without products goes entirely
                self.subs[name] = [p for p in self.subs[name] if products and p not in products]
            live = set(self.subs["matches"]) | set(self.subs["ticker"])
            for p in list(self.cursor):
                if p not in live:
                    del self.cursor[p]
            await self._send_subscriptions()

    def _last_id_before(self, product: str, ts_ns: int) -> int:
        last = self.feed.last_trade_before(COINBASE, self.instruments[product].symbol, ts_ns)
        return last.trade_id[0] if last.trade_id else -1

    async def _send_subscriptions(self) -> None:
        channels = [{"name": n, "product_ids": list(ps)} for n, ps in self.subs.items() if ps]
        await self.send_control(orjson.dumps({"type": "subscriptions", "channels": channels}).decode())

    async def _send_last_match(self, product: str, now: int) -> None:
        inst = self.instruments[product]
        rows = self.feed.last_trade_before(COINBASE, inst.symbol, now)
        if rows.trade_id:
            await self.send_data(self.match(inst, rows, 0, "last_match"), [(inst.symbol, [rows.trade_id[0]])])

    def match(self, inst: Any, rows: TradeRows, i: int, kind: str = "match") -> str:
        tid = rows.trade_id[i]
        maker_side = "sell" if rows.side[i] > 0 else "buy"
        return (
            f'{{"type":"{kind}","trade_id":{tid},"sequence":{sequence_of(tid)},'
            f'"maker_order_id":"{order_uuid(tid, 1)}","taker_order_id":"{order_uuid(tid, 2)}",'
            f'"time":"{rfc_us(rows.ts_ns[i])}","product_id":"{inst.venue_symbol}",'
            f'"size":"{fixed_decimal(rows.size_lots[i], inst.size_decimals)}",'
            f'"price":"{fixed_decimal(rows.price_ticks[i], inst.price_decimals)}","side":"{maker_side}"}}'
        )

    def ticker(self, inst: Any, rows: TradeRows, i: int, now_ns: int) -> str:
        pd, sd = inst.price_decimals, inst.size_decimals
        tid = rows.trade_id[i]
        q = self.feed.quote_at(COINBASE, inst.symbol, rows.ts_ns[i])
        st = self.stats.get(inst, now_ns)
        return orjson.dumps(
            {
                "type": "ticker",
                "sequence": sequence_of(tid),
                "product_id": inst.venue_symbol,
                "price": fixed_decimal(rows.price_ticks[i], pd),
                "open_24h": st["open_24h"],
                "volume_24h": st["volume_24h"],
                "low_24h": st["low_24h"],
                "high_24h": st["high_24h"],
                "volume_30d": st["volume_30d"],
                "best_bid": fixed_decimal(q.bid_ticks, pd),
                "best_bid_size": fixed_decimal(q.bid_lots, sd),
                "best_ask": fixed_decimal(q.ask_ticks, pd),
                "best_ask_size": fixed_decimal(q.ask_lots, sd),
                "side": "buy" if rows.side[i] > 0 else "sell",
                "time": rfc_us(rows.ts_ns[i]),
                "trade_id": tid,
                "last_size": fixed_decimal(rows.size_lots[i], sd),
            }
        ).decode()

    def rate_instruments(self) -> list[Any]:
        return [self.instruments[p] for p in self.subs["matches"]]

    def encode_rate(self, trades: list[tuple[Any, TradeRows, int]], batch: int) -> list[str]:
        return [self.match(inst, rows, i) for inst, rows, i in trades]

    async def pump(self, now_ns: int) -> None:
        matches, tickers = set(self.subs["matches"]), set(self.subs["ticker"])
        for product, start in list(self.cursor.items()):
            inst = self.instruments[product]
            rows = self.feed.trades_between(COINBASE, inst.symbol, start, now_ns)
            self.cursor[product] = now_ns
            if rows.trade_id:
                self.last_trade_id[product] = rows.trade_id[-1]
            for i in range(len(rows)):
                tid = rows.trade_id[i]
                if not self.take_trade(inst.symbol, tid):
                    continue
                if product in matches:
                    await self.send_data(self.match(inst, rows, i), [(inst.symbol, [tid])])
                if product in tickers:
                    await self.send_data(self.ticker(inst, rows, i, now_ns), [(inst.symbol, [tid])])
        if (
            self.subs["heartbeat"]
            and time.monotonic() - self.last_heartbeat >= self.config.heartbeat_interval_s
        ):
            self.last_heartbeat = time.monotonic()
            for product in self.subs["heartbeat"]:
                last = self.last_trade_id.get(product, -1)
                if product not in self.cursor:  # heartbeat-only: still report the venue's last trade
                    last = self._last_id_before(product, now_ns)
                    self.last_trade_id[product] = last
                await self.send_data(
                    orjson.dumps(
                        {
                            "type": "heartbeat",
                            "sequence": sequence_of(last) + 2,
                            "last_trade_id": last,
                            "product_id": product,
                            "time": rfc_us(now_ns),
                        }
                    ).decode()
                )


# --- Coinbase Advanced Trade WebSocket -------------------------------------------------------------


class CoinbaseAdvancedSession(Session):
    venue = COINBASE_AT
    syntax = SYNTAX

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subs: dict[str, list[str]] = {c: [] for c in AT_CHANNELS}
        self.cursor: dict[str, int] = {}
        self.instruments: dict[str, Any] = {}
        self.sequence_num = 0
        self.heartbeat_counter = 0
        self.last_heartbeat = 0.0
        self.ever_subscribed = False
        self.heartbeats_on = False
        self.started_mono = time.monotonic()
        self.stats = server_stats(self.server, COINBASE_AT)

    def tick_interval(self) -> float:
        return self.config.at_batch_s

    async def on_open(self) -> None:
        self._tasks.append(asyncio.create_task(self._subscribe_deadline()))

    async def _subscribe_deadline(self) -> None:
        await asyncio.sleep(self.config.subscribe_timeout_s)
        if not self.ever_subscribed and not self.closed:
            await self.close(1000, "subscribe timeout")

    def envelope(self, channel: str, events: list[Any], now_ns: int) -> str:
        seq = self.sequence_num
        self.sequence_num += 1
        body = orjson.dumps(
            {"channel": channel, "timestamp": rfc_ns_trimmed(now_ns), "sequence_num": seq, "events": events}
        )
        return body.decode()

    async def error(self, message: str) -> None:
        await self.send_control(orjson.dumps({"type": "error", "message": message}).decode())

    async def on_text(self, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.error("failure to parse message: malformed JSON")
            return
        if not isinstance(req, dict) or req.get("type") not in ("subscribe", "unsubscribe"):
            await self.error("message type must be subscribe or unsubscribe")
            return
        channel = req.get("channel")
        if not isinstance(channel, str):
            await self.error("channel is required: one channel per subscribe message")
            return
        if channel not in AT_CHANNELS:
            await self.error(f"Failed to subscribe: unsupported channel {channel}")
            return
        products = req.get("product_ids", [])
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            await self.error("product_ids must be an array of strings")
            return
        for p in products:
            try:
                self.instruments[p] = self.feed.instrument(COINBASE_AT, p)
            except KeyError:
                await self.error(f"Failed to subscribe: invalid product_id {p}")
                return
        now = time.time_ns()
        if req["type"] == "subscribe":
            if channel != "heartbeats" and not products:
                await self.error(f"Failed to subscribe: product_ids required for channel {channel}")
                return
            self.ever_subscribed = True
            if channel == "heartbeats":
                self.heartbeats_on = True
            new = [p for p in products if p not in self.subs[channel]]
            self.subs[channel].extend(new)
            for p in new:
                self.cursor.setdefault(p, now)
            await self._send_subscriptions(now)
            if new and channel == "market_trades":
                await self._trades_snapshot(new, now)
            elif new and channel == "ticker":
                await self._ticker_message(new, now, "snapshot")
        else:
            if channel == "heartbeats":
                self.heartbeats_on = False
            self.subs[channel] = [p for p in self.subs[channel] if products and p not in products]
            live = set(self.subs["market_trades"]) | set(self.subs["ticker"])
            for p in list(self.cursor):
                if p not in live:
                    del self.cursor[p]
            await self._send_subscriptions(now)

    async def _send_subscriptions(self, now: int) -> None:
        subs = {ch: list(ps) for ch, ps in self.subs.items() if ps}
        if self.heartbeats_on:
            subs.setdefault("heartbeats", [])
        await self.send_control(self.envelope("subscriptions", [{"subscriptions": subs}], now))

    def trade_obj(self, inst: Any, rows: TradeRows, i: int) -> dict[str, str]:
        return {
            "trade_id": str(rows.trade_id[i]),
            "product_id": inst.venue_symbol,
            "price": trimmed_decimal(rows.price_ticks[i], inst.price_decimals),
            "size": trimmed_decimal(rows.size_lots[i], inst.size_decimals),
            "side": "SELL" if rows.side[i] > 0 else "BUY",
            "time": rfc_us(rows.ts_ns[i]),
        }

    async def _trades_snapshot(self, products: list[str], now: int) -> None:
        trades: list[dict[str, str]] = []
        refs: list[tuple[str, list[int]]] = []
        for p in products:
            inst = self.instruments[p]
            rows = self.feed.recent_trades(COINBASE_AT, inst.symbol, now, self.config.at_snapshot_trades)
            trades.extend(self.trade_obj(inst, rows, i) for i in reversed(range(len(rows))))
            refs.append((inst.symbol, list(rows.trade_id)))
        await self.send_data(
            self.envelope("market_trades", [{"type": "snapshot", "trades": trades}], now), refs
        )

    async def _ticker_message(
        self, products: list[str], now: int, kind: str, last: dict[str, tuple[TradeRows, int]] | None = None
    ) -> None:
        tickers = []
        for p in products:
            inst = self.instruments[p]
            pd, sd = inst.price_decimals, inst.size_decimals
            if last and p in last:
                rows, i = last[p]
                price = rows.price_ticks[i]
            else:
                prev = self.feed.last_trade_before(COINBASE_AT, inst.symbol, now)
                price = (
                    prev.price_ticks[0]
                    if prev.trade_id
                    else self.feed.quote_at(COINBASE_AT, inst.symbol, now).bid_ticks
                )
            q = self.feed.quote_at(COINBASE_AT, inst.symbol, now)
            st = self.stats.get(inst, now)
            tickers.append(
                {
                    "type": "ticker",
                    "product_id": inst.venue_symbol,
                    "price": trimmed_decimal(price, pd),
                    "volume_24_h": st["volume_24h"],
                    "low_24_h": st["low_24h"],
                    "high_24_h": st["high_24h"],
                    "low_52_w": st["low_52_w"],
                    "high_52_w": st["high_52_w"],
                    "price_percent_chg_24_h": st["price_percent_chg_24_h"],
                    "best_bid": trimmed_decimal(q.bid_ticks, pd),
                    "best_bid_quantity": trimmed_decimal(q.bid_lots, sd),
                    "best_ask": trimmed_decimal(q.ask_ticks, pd),
                    "best_ask_quantity": trimmed_decimal(q.ask_lots, sd),
                }
            )
        if tickers:
            await self.send_data(self.envelope("ticker", [{"type": kind, "tickers": tickers}], now))

    def rate_instruments(self) -> list[Any]:
        return [self.instruments[p] for p in self.subs["market_trades"]]

    def encode_rate(self, trades: list[tuple[Any, TradeRows, int]], batch: int) -> list[str]:
        out = []
        for k in range(0, len(trades), batch):
            chunk = trades[k : k + batch]
            objs = [self.trade_obj(inst, rows, i) for inst, rows, i in reversed(chunk)]
            out.append(
                self.envelope(
                    "market_trades",
                    [{"type": "update", "trades": objs}],
                    chunk[-1][1].ts_ns[chunk[-1][2]] + 250_000_000,
                )
            )
        return out

    async def pump(self, now_ns: int) -> None:
        trades: list[dict[str, str]] = []
        refs: list[tuple[str, list[int]]] = []
        last: dict[str, tuple[TradeRows, int]] = {}
        lost = False
        trade_products = set(self.subs["market_trades"])
        for product, start in list(self.cursor.items()):
            inst = self.instruments[product]
            rows = self.feed.trades_between(COINBASE_AT, inst.symbol, start, now_ns)
            self.cursor[product] = now_ns
            kept = []
            for i in range(len(rows)):
                if self.take_trade(inst.symbol, rows.trade_id[i]):
                    kept.append(i)
                else:
                    lost = True
            if kept:
                last[product] = (rows, kept[-1])
            if product in trade_products and kept:
                trades.extend(self.trade_obj(inst, rows, i) for i in reversed(kept))
                refs.append((inst.symbol, [rows.trade_id[i] for i in kept]))
        if lost:  # a withheld trade is a lost message: its sequence_num is consumed, leaving a gap
            self.sequence_num += 1
        if trades:
            await self.send_data(
                self.envelope("market_trades", [{"type": "update", "trades": trades}], now_ns), refs
            )
        ticker_products = [p for p in self.subs["ticker"] if p in last]
        if ticker_products:
            await self._ticker_message(ticker_products, now_ns, "update", last)
        if self.heartbeats_on and time.monotonic() - self.last_heartbeat >= self.config.heartbeat_interval_s:
            self.last_heartbeat = time.monotonic()
            self.heartbeat_counter += 1
            event = {
                "current_time": go_time(now_ns, time.monotonic() - self.started_mono),
                "heartbeat_counter": self.heartbeat_counter,
            }
            await self.send_data(self.envelope("heartbeats", [event], now_ns))


def server_stats(server: Any, venue: str) -> Stats24h:
    cache = server.__dict__.setdefault("_stats24h", {})
    if venue not in cache:
        cache[venue] = Stats24h(server.feed, venue)
    return cache[venue]


# --- REST ------------------------------------------------------------------------------------------


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def _time_param(raw: str | None) -> int | None:
    """Coinbase accepts ISO 8601 or Unix seconds."""
    if not raw:
        return None
    with contextlib.suppress(ValueError):
        return (
            int(float(raw) * NS_PER_S)
            if raw.replace(".", "", 1).isdigit()
            else parse_rfc3339_ns(raw if raw.endswith("Z") or "+" in raw[10:] else raw + "Z")
        )
    raise web.HTTPBadRequest(
        text=orjson.dumps({"message": f"Invalid time {raw!r}"}).decode(), content_type="application/json"
    )


def _num(units: int, decimals: int) -> float:
    # Exchange candles are JSON numbers: the value is exact to the instrument's decimals.
    return float(trimmed_decimal(units, decimals))


def add_routes(
    app: web.Application, feed: MarketFeed, prefix: str = "/coinbase", at_prefix: str = "/coinbase-advanced"
) -> None:
    stats = Stats24h(feed, COINBASE)

    def stats_for(venue: str) -> Stats24h:
        return stats

    def product(request: web.Request) -> Any:
        pid = request.match_info["product_id"]
        try:
            return feed.instrument(COINBASE, pid)
        except KeyError:
            raise web.HTTPNotFound(
                text=orjson.dumps({"message": "NotFound"}).decode(), content_type="application/json"
            ) from None

    async def products(request: web.Request) -> web.Response:
        out = []
        for inst in feed.instruments(COINBASE):
            base, _, quote = inst.symbol.partition("-")
            out.append(
                {
                    "id": inst.venue_symbol,
                    "base_currency": base,
                    "quote_currency": quote,
                    "quote_increment": trimmed_decimal(1, inst.price_decimals),
                    "base_increment": trimmed_decimal(1, inst.size_decimals),
                    "display_name": f"{base}/{quote}",
                    "status": "online",
                    "status_message": "",
                    "trading_disabled": False,
                }
            )
        return _json(out)

    async def candles(request: web.Request) -> web.Response:
        inst = product(request)
        granularity = request.query.get("granularity", "60")
        if granularity != "60":
            return _json({"message": "Unsupported granularity: the simulator serves 60 (one minute)"}, 400)
        now = time.time_ns()
        current = now - now % NS_PER_MIN
        start, end = _time_param(request.query.get("start")), _time_param(request.query.get("end"))
        if start is None or end is None:
            end = current + NS_PER_MIN
            start = end - 300 * NS_PER_MIN
        start -= start % NS_PER_MIN
        if (end - start) // NS_PER_MIN > 300:
            return _json(
                {
                    "message": "granularity too small for the requested time range. Count of "
                    "aggregations requested exceeds 300"
                },
                400,
            )
        bars = feed.bars(COINBASE, inst.symbol, start, min(end, current)) if start < current else []
        if start <= current < end:
            bar = feed.bar_from_trades(COINBASE, inst.symbol, current, now)
            if bar is not None:
                bars.append(bar)
        pd, sd = inst.price_decimals, inst.size_decimals
        out = [
            [
                b.ts_ns // NS_PER_S,
                _num(b.low, pd),
                _num(b.high, pd),
                _num(b.open, pd),
                _num(b.close, pd),
                _num(b.volume, sd),
            ]
            for b in reversed(bars)
            if b.trade_count > 0
        ]
        return _json(out)

    async def trades(request: web.Request) -> web.Response:
        inst = product(request)
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), 1000))
            before = int(request.query["before"]) if request.query.get("before") else None
            after = int(request.query["after"]) if request.query.get("after") else None
        except ValueError:
            return _json({"message": "Invalid limit, before or after"}, 400)
        now = time.time_ns()
        if after is not None:
            rows = feed.trades_by_id(COINBASE, inst.symbol, max(0, after - limit), after - 1)
        elif before is not None:
            rows = feed.trades_by_id(COINBASE, inst.symbol, before + 1, before + limit)
        else:
            rows = feed.recent_trades(COINBASE, inst.symbol, now, limit)
        pd, sd = inst.price_decimals, inst.size_decimals
        out = [
            {
                "time": rfc_us(rows.ts_ns[i]),
                "trade_id": rows.trade_id[i],
                "price": fixed_decimal(rows.price_ticks[i], pd),
                "size": fixed_decimal(rows.size_lots[i], sd),
                "side": "sell" if rows.side[i] > 0 else "buy",
            }
            for i in reversed(range(len(rows)))
            if rows.ts_ns[i] < now
        ]
        headers = {}
        if out:
            headers = {"CB-BEFORE": str(out[0]["trade_id"]), "CB-AFTER": str(out[-1]["trade_id"])}
        return _json(out, headers=headers)

    async def ticker(request: web.Request) -> web.Response:
        inst = product(request)
        now = time.time_ns()
        q = feed.quote_at(COINBASE, inst.symbol, now)
        last = feed.last_trade_before(COINBASE, inst.symbol, now)
        pd, sd = inst.price_decimals, inst.size_decimals
        body = {
            "ask": fixed_decimal(q.ask_ticks, pd),
            "bid": fixed_decimal(q.bid_ticks, pd),
            "volume": stats_for(COINBASE).get(inst, now)["volume_24h"],
            "trade_id": last.trade_id[0] if last.trade_id else None,
            "price": fixed_decimal(last.price_ticks[0], pd) if last.trade_id else None,
            "size": fixed_decimal(last.size_lots[0], sd) if last.trade_id else None,
            "time": rfc_us(last.ts_ns[0]) if last.trade_id else None,
        }
        return _json(body)

    app.router.add_get(f"{prefix}/products", products)
    app.router.add_get(f"{prefix}/products/{{product_id}}/candles", candles)
    app.router.add_get(f"{prefix}/products/{{product_id}}/trades", trades)
    app.router.add_get(f"{prefix}/products/{{product_id}}/ticker", ticker)

    # Advanced Trade public market endpoints.
    async def at_candles(request: web.Request) -> web.Response:
        inst = product(request)
        if request.query.get("granularity", "ONE_MINUTE") != "ONE_MINUTE":
            return _json({"error": "INVALID_ARGUMENT", "message": "simulator serves ONE_MINUTE only"}, 400)
        now = time.time_ns()
        current = now - now % NS_PER_MIN
        start, end = _time_param(request.query.get("start")), _time_param(request.query.get("end"))
        if start is None or end is None:
            end, start = current + NS_PER_MIN, current - 349 * NS_PER_MIN
        start -= start % NS_PER_MIN
        if (end - start) // NS_PER_MIN > 350:
            return _json(
                {
                    "error": "INVALID_ARGUMENT",
                    "message": "number of candles requested should be less than 350",
                },
                400,
            )
        bars = feed.bars(COINBASE, inst.symbol, start, min(end, current)) if start < current else []
        if start <= current < end:
            bar = feed.bar_from_trades(COINBASE, inst.symbol, current, now)
            if bar is not None:
                bars.append(bar)
        pd, sd = inst.price_decimals, inst.size_decimals
        return _json(
            {
                "candles": [
                    {
                        "start": str(b.ts_ns // NS_PER_S),
                        "low": trimmed_decimal(b.low, pd),
                        "high": trimmed_decimal(b.high, pd),
                        "open": trimmed_decimal(b.open, pd),
                        "close": trimmed_decimal(b.close, pd),
                        "volume": trimmed_decimal(b.volume, sd),
                    }
                    for b in reversed(bars)
                    if b.trade_count > 0
                ]
            }
        )

    async def at_ticker(request: web.Request) -> web.Response:
        inst = product(request)
        try:
            limit = max(1, min(int(request.query.get("limit", "100") or 100), 1000))
        except ValueError:
            return _json({"error": "INVALID_ARGUMENT", "message": "limit must be an integer"}, 400)
        now = time.time_ns()
        rows = feed.recent_trades(COINBASE, inst.symbol, now, limit)
        q = feed.quote_at(COINBASE, inst.symbol, now)
        pd, sd = inst.price_decimals, inst.size_decimals
        return _json(
            {
                "trades": [
                    {
                        "trade_id": str(rows.trade_id[i]),
                        "product_id": inst.venue_symbol,
                        "price": trimmed_decimal(rows.price_ticks[i], pd),
                        "size": trimmed_decimal(rows.size_lots[i], sd),
                        "time": rfc_us(rows.ts_ns[i]),
                        "side": "SELL" if rows.side[i] > 0 else "BUY",
                        "bid": "",
                        "ask": "",
                    }
                    for i in reversed(range(len(rows)))
                ],
                "best_bid": trimmed_decimal(q.bid_ticks, pd),
                "best_ask": trimmed_decimal(q.ask_ticks, pd),
            }
        )

    base = f"{at_prefix}/api/v3/brokerage/market/products/{{product_id}}"
    app.router.add_get(f"{base}/candles", at_candles)
    app.router.add_get(f"{base}/ticker", at_ticker)


def rate_limited_response(retry_after: int) -> web.Response:
    return _json({"message": "Public rate limit exceeded"}, 429, {"Retry-After": str(retry_after)})


def failure_response(status: int) -> web.Response:
    return _json({"message": "Internal server error"}, status)
