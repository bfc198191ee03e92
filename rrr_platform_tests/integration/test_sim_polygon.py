"""Polygon / Massive conformance (exchange-protocols.md section 3): handshake, arrays of events, REST."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import websockets

from rrr_platform.market.timeutil import NS_PER_MIN
from rrr_platform.market.types import POLYGON
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform.simulator.testing import shared_model

pytestmark = pytest.mark.integration
KEY = "sekrit"


def sim(**overrides: Any) -> SimulatorServer:
    cfg = SimulatorConfig(port=0, tick_s=0.05, polygon_api_key=KEY, **overrides)
    return SimulatorServer(cfg, model=shared_model(7, "none", 5.0))


async def frame(ws: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    parsed = json.loads(raw)
    assert isinstance(parsed, list), "every Polygon frame is a JSON array"
    return parsed


async def events(ws: Any, evs: set[str], n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        out.extend(e for e in await frame(ws, max(0.1, deadline - time.monotonic())) if e["ev"] in evs)
    return out


async def login(ws: Any, key: str = KEY) -> list[dict[str, Any]]:
    hello = await frame(ws)
    await ws.send(json.dumps({"action": "auth", "params": key}))
    return hello + await frame(ws)


async def test_handshake_auth_success_failure_and_timeout() -> None:
    async with sim(auth_timeout_s=0.5) as s:
        async with websockets.connect(s.url("polygon", "crypto")) as ws:
            assert await login(ws) == [
                {"ev": "status", "status": "connected", "message": "Connected Successfully"},
                {"ev": "status", "status": "auth_success", "message": "authenticated"},
            ]
        async with websockets.connect(s.url("polygon", "crypto")) as ws:
            got = await login(ws, "wrong")
            assert got[1]["status"] == "auth_failed"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        async with websockets.connect(s.url("polygon", "stocks")) as ws:
            assert (await frame(ws))[0]["status"] == "connected"
            await ws.send(json.dumps({"action": "subscribe", "params": "T.AAPL"}))
            assert (await frame(ws))[0] == {"ev": "status", "status": "error", "message": "not authorized"}
            assert (await frame(ws))[0]["status"] == "auth_timeout"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)


async def test_crypto_trades_quotes_aggregates_are_numbers() -> None:
    async with sim(catch_up_minute=True) as s, websockets.connect(s.url("polygon", "crypto")) as ws:
        await login(ws)
        await ws.send(json.dumps({"action": "subscribe", "params": "XT.BTC-USD,XQ.BTC-USD,XA.BTC-USD"}))
        acks = [(await frame(ws))[0] for _ in range(3)]
        assert [a["message"] for a in acks] == [
            "subscribed to: XT.BTC-USD",
            "subscribed to: XQ.BTC-USD",
            "subscribed to: XA.BTC-USD",
        ]
        got = await events(ws, {"XT", "XQ", "XA"}, 12)
        trades = [e for e in got if e["ev"] == "XT"]
        quotes = [e for e in got if e["ev"] == "XQ"]
        aggs = [e for e in got if e["ev"] == "XA"]
        await ws.send(json.dumps({"action": "unsubscribe", "params": "XQ.BTC-USD"}))
        assert (await events(ws, {"status"}, 1))[0]["message"] == "unsubscribed to: XQ.BTC-USD"
    assert trades and quotes and aggs
    for t in trades:
        assert set(t) == {"ev", "pair", "p", "t", "s", "c", "i", "x", "r"} and t["pair"] == "BTC-USD"
        assert isinstance(t["p"], float | int) and isinstance(t["s"], float | int) and isinstance(t["i"], str)
        assert (
            isinstance(t["t"], int) and len(str(t["t"])) == 13 and t["r"] >= t["t"] and t["c"] in ([1], [2])
        )
    ids = [int(t["i"]) for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    q = quotes[0]
    assert set(q) == {"ev", "pair", "bp", "bs", "ap", "as", "t", "x", "r"} and q["bp"] < q["ap"]
    a = aggs[0]
    assert (
        set(a) == {"ev", "pair", "o", "c", "h", "l", "v", "vw", "z", "s", "e"} and a["e"] - a["s"] == 60_000
    )
    bar = s.feed.bars(POLYGON, "BTC-USD", a["s"] * 1_000_000, a["s"] * 1_000_000 + 1)[0]
    assert Decimal(str(a["v"])) == Decimal(bar.volume).scaleb(-8) and a["l"] <= a["vw"] <= a["h"]


async def test_stocks_trades_quotes_and_minute_aggregates() -> None:
    async with sim(catch_up_minute=True) as s, websockets.connect(s.url("polygon", "stocks")) as ws:
        await login(ws)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.*,Q.MSFT,AM.MSFT,XT.BTC-USD"}))
        statuses = await events(ws, {"status"}, 4)
        assert [x["status"] for x in statuses] == ["success", "success", "success", "error"]
        got = await events(ws, {"T", "Q", "AM"}, 10)
    trades = [e for e in got if e["ev"] == "T"]
    assert trades and {t["sym"] for t in trades} <= {
        i.venue_symbol for i in s.feed.instruments(POLYGON) if i.asset_class == "equity"
    }
    for t in trades:
        assert {"ev", "sym", "x", "i", "z", "p", "s", "t", "q"} == set(t)
        assert isinstance(t["s"], int) and isinstance(t["i"], str) and isinstance(t["q"], int)
    quotes = [e for e in got if e["ev"] == "Q"]
    if quotes:
        assert (
            isinstance(quotes[0]["bs"], int)
            and isinstance(quotes[0]["i"], list)
            and isinstance(quotes[0]["c"], int)
        )
    am = [e for e in got if e["ev"] == "AM"]
    assert am and {"v", "av", "op", "vw", "o", "c", "h", "l", "a", "z", "s", "e"} <= set(am[0])


async def test_rest_aggregates_trades_news_and_pagination() -> None:
    async with sim(rest_limits={}) as s, aiohttp.ClientSession() as http:
        base = s.rest_url("polygon")
        async with http.get(f"{base}/v3/trades/X:BTCUSD") as r:
            assert r.status == 401 and (await r.json())["status"] == "ERROR"
        async with http.get(f"{base}/v3/trades/X:BTCUSD", params={"apiKey": "nope"}) as r:
            assert r.status == 401
        now = time.time_ns()
        start = now - now % NS_PER_MIN - 3 * NS_PER_MIN
        params = {
            "apiKey": KEY,
            "timestamp.gte": str(start),
            "timestamp.lt": str(start + NS_PER_MIN),
            "order": "asc",
            "limit": "7",
        }
        pages: list[dict[str, Any]] = []
        async with http.get(f"{base}/v3/trades/X:BTCUSD", params=params) as r:
            body = await r.json()
        pages.extend(body["results"])
        while "next_url" in body and len(pages) < 30:
            async with http.get(body["next_url"], params={"apiKey": KEY}) as r:
                body = await r.json()
            pages.extend(body["results"])
        model = s.feed.trades_range(POLYGON, "BTC-USD", start, start + NS_PER_MIN)
        assert [int(p["id"]) for p in pages] == model.trade_id[: len(pages)]
        assert all(
            isinstance(p["participant_timestamp"], int) and len(str(p["participant_timestamp"])) == 19
            for p in pages
        )
        async with http.get(
            f"{base}/v2/aggs/ticker/X:BTCUSD/range/1/minute/{start // 1_000_000}/"
            f"{(start + 2 * NS_PER_MIN) // 1_000_000}",
            params={"apiKey": KEY},
        ) as r:
            aggs = await r.json()
        assert aggs["status"] == "OK" and aggs["ticker"] == "X:BTCUSD"
        assert [a["t"] for a in aggs["results"]] == [start // 1_000_000 + k * 60_000 for k in range(3)]
        bar = s.feed.bars(POLYGON, "BTC-USD", start, start + 1)[0]
        assert aggs["results"][0]["n"] == bar.trade_count and isinstance(aggs["results"][0]["v"], float)
        async with http.get(
            f"{base}/v2/aggs/ticker/AAPL/range/1/minute/{start // 1_000_000}/"
            f"{(start + NS_PER_MIN) // 1_000_000}",
            params={"apiKey": KEY},
        ) as r:
            stock = await r.json()
        assert stock["resultsCount"] >= 1 and isinstance(stock["results"][0]["v"], int)
        async with http.get(f"{base}/v2/reference/news", params={"apiKey": KEY, "limit": "3"}) as r:
            news = await r.json()
        assert news["status"] == "OK" and len(news["results"]) == 3 and "next_url" in news
        item = news["results"][0]
        assert {
            "id",
            "publisher",
            "title",
            "author",
            "published_utc",
            "article_url",
            "tickers",
            "description",
            "keywords",
        } <= set(item)
        assert item["published_utc"].endswith("Z") and item["tickers"]
        assert news["results"][0]["published_utc"] >= news["results"][1]["published_utc"]  # newest first
        async with http.get(news["next_url"], params={"apiKey": KEY}) as r:
            more = await r.json()
        assert {n["id"] for n in more["results"]}.isdisjoint({n["id"] for n in news["results"]})


async def test_max_connections_refuses_the_extra_connection() -> None:
    async with sim(polygon_max_connections=1) as s, websockets.connect(s.url("polygon", "crypto")) as first:
        assert (await frame(first))[0]["status"] == "connected"
        async with websockets.connect(s.url("polygon", "crypto")) as second:
            assert (await frame(second))[0]["status"] == "connected"
            assert (await frame(second))[0]["status"] == "max_connections"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(second.recv(), 5)
        async with websockets.connect(s.url("polygon", "stocks")) as other_cluster:
            await frame(other_cluster)
            await other_cluster.send(json.dumps({"action": "auth", "params": KEY}))
            assert (await frame(other_cluster))[0]["status"] == "auth_success"
