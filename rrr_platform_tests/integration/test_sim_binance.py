"""Binance conformance: the simulator's streams and REST checked against exchange-protocols.md section 1."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import pytest
import websockets

from rrr_platform.market.types import BINANCE
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform.simulator.testing import shared_model

pytestmark = pytest.mark.integration
DEC8 = re.compile(r"^\d+\.\d{8}$")


def sim(**overrides: Any) -> SimulatorServer:
    cfg = SimulatorConfig(port=0, tick_s=0.05, **overrides)
    return SimulatorServer(cfg, model=shared_model(7, "none", 5.0))


async def recv_json(ws: Any, timeout: float = 10.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect(ws: Any, pred: Any, n: int, timeout: float = 20.0) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = await recv_json(ws, max(0.1, deadline - time.monotonic()))
        if pred(msg):
            out.append(msg)
    return out


def check_trade(ev: dict[str, Any], unit_digits: int = 13) -> None:
    assert set(ev) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
    assert ev["e"] == "trade" and ev["s"] == "BTCUSDT"
    assert isinstance(ev["t"], int) and isinstance(ev["E"], int) and isinstance(ev["T"], int)
    assert DEC8.match(ev["p"]) and DEC8.match(ev["q"]), ev
    assert isinstance(ev["m"], bool) and ev["M"] is True
    assert len(str(ev["T"])) == unit_digits and ev["E"] >= ev["T"]


async def test_raw_trade_stream_fields_and_consecutive_ids() -> None:
    async with sim() as s, websockets.connect(f"{s.url('binance')}/ws/btcusdt@trade") as ws:
        trades = await collect(ws, lambda m: True, 6)
    for ev in trades:
        check_trade(ev)
        assert abs(ev["T"] - time.time() * 1000) < 60_000
    ids = [ev["t"] for ev in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


async def test_combined_stream_book_ticker_and_kline() -> None:
    async with (
        sim(catch_up_minute=True, kline_interval_s=0.2) as s,
        websockets.connect(f"{s.url('binance')}/stream?streams=ethusdt@bookTicker/ethusdt@kline_1m") as ws,
    ):
        msgs = await collect(ws, lambda m: True, 4)
        streams = {m["stream"] for m in msgs}
        book = next(m["data"] for m in msgs if m["stream"] == "ethusdt@bookTicker")
        klines = [m["data"] for m in msgs if m["stream"] == "ethusdt@kline_1m"]
    assert streams <= {"ethusdt@bookTicker", "ethusdt@kline_1m"} and set(msgs[0]) == {"stream", "data"}
    assert set(book) == {"u", "s", "b", "B", "a", "A"} and book["s"] == "ETHUSDT"
    assert isinstance(book["u"], int) and all(DEC8.match(book[k]) for k in "bBaA")
    assert float(book["b"]) < float(book["a"])
    assert klines, "kline stream sent nothing"
    final = [k for k in klines if k["k"]["x"]]
    assert final, "catch_up_minute should send the previous candle's final update"
    k = final[0]["k"]
    assert k["T"] == k["t"] + 59_999 and k["i"] == "1m" and k["s"] == "ETHUSDT"
    assert all(DEC8.match(k[f]) for f in "ochlvqVQ") and isinstance(k["n"], int)
    bars = s.feed.bars(BINANCE, "ETH-USDT", k["t"] * 1_000_000, k["t"] * 1_000_000 + 1)
    assert bars[0].trade_count == k["n"] and bars[0].first_id == k["f"] and bars[0].last_id == k["L"]


async def test_subscribe_list_unsubscribe_properties_and_errors() -> None:
    async with sim(binance_max_incoming_per_s=None) as s, websockets.connect(f"{s.url('binance')}/ws") as ws:
        await ws.send(
            json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@aggTrade"], "id": 1})
        )
        assert await collect(ws, lambda m: "id" in m, 1) == [{"result": None, "id": 1}]
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "q2"}))
        assert (await collect(ws, lambda m: m.get("id") == "q2", 1))[0]["result"] == [
            "btcusdt@trade",
            "ethusdt@aggTrade",
        ]
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 3}))
        assert (await collect(ws, lambda m: m.get("id") == 3, 1))[0] == {"result": False, "id": 3}
        await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 4}))
        assert (await collect(ws, lambda m: m.get("id") == 4, 1))[0] == {"result": None, "id": 4}
        wrapped = await collect(ws, lambda m: "stream" in m, 1)
        assert set(wrapped[0]) == {"stream", "data"}
    async with sim(binance_max_incoming_per_s=None) as s, websockets.connect(f"{s.url('binance')}/ws") as ws:
        await ws.send("{not json")
        err = await recv_json(ws)
        assert err["id"] is None and err["error"]["code"] == 3
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 5}))
        err = await recv_json(ws)
        assert err["id"] == 5 and err["error"]["code"] == 2 and "nosuch" in err["error"]["msg"]
        await ws.send(json.dumps({"method": "FLY", "id": 6}))
        assert (await recv_json(ws))["error"]["code"] == 2
        await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 7}))
        assert (await recv_json(ws))["error"]["code"] == 1
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 8}))
        await collect(ws, lambda m: m.get("id") == 8, 1)
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 9}))
        await collect(ws, lambda m: m.get("id") == 9, 1)
        await asyncio.sleep(0.2)  # frames already in flight before the unsubscribe
        while True:
            try:
                await asyncio.wait_for(ws.recv(), 0.05)
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.5)


async def test_microsecond_time_unit() -> None:
    async with (
        sim() as s,
        websockets.connect(f"{s.url('binance')}/stream?streams=btcusdt@trade&timeUnit=MICROSECOND") as ws,
    ):
        msg = (await collect(ws, lambda m: True, 1))[0]
    check_trade(msg["data"], unit_digits=16)


async def test_server_pings_and_closes_without_pong() -> None:
    async with sim(ping_interval_s=0.2, pong_timeout_s=0.3) as s, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{s.url('binance')}/ws/btcusdt@bookTicker", autoping=False) as ws:
            pings, closed_after = 0, None
            started = time.monotonic()
            while time.monotonic() - started < 5:
                msg = await ws.receive(timeout=5)
                if msg.type == aiohttp.WSMsgType.PING:
                    pings += 1  # never answered
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    closed_after = time.monotonic() - started
                    break
        assert pings >= 1 and closed_after is not None and closed_after < 3
        async with http.ws_connect(f"{s.url('binance')}/ws/btcusdt@bookTicker", autoping=True) as ws:
            await asyncio.sleep(1.2)  # several ping intervals, answered by aiohttp
            assert not ws.closed


async def test_more_than_five_messages_a_second_closes_the_connection() -> None:
    async with sim() as s, websockets.connect(f"{s.url('binance')}/ws") as ws:
        for i in range(8):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(20):
                await asyncio.wait_for(ws.recv(), 5)


async def test_rest_history_agrees_with_the_stream() -> None:
    async with sim() as s, websockets.connect(f"{s.url('binance')}/ws/btcusdt@trade") as ws:
        streamed = await collect(ws, lambda m: True, 5)
        async with aiohttp.ClientSession() as http:
            first = streamed[0]["t"]
            async with http.get(
                f"{s.rest_url('binance')}/api/v3/historicalTrades",
                params={"symbol": "BTCUSDT", "fromId": first, "limit": 5},
            ) as r:
                assert r.status == 200
                rest = await r.json()
            async with http.get(
                f"{s.rest_url('binance')}/api/v3/klines",
                params={"symbol": "BTCUSDT", "interval": "1m", "limit": 3},
            ) as r:
                klines = await r.json()
            async with http.get(
                f"{s.rest_url('binance')}/api/v3/klines", params={"symbol": "NOPE", "interval": "1m"}
            ) as r:
                assert r.status == 400 and (await r.json())["code"] == -1121
    assert [t["id"] for t in rest] == [m["t"] for m in streamed]
    for t, m in zip(rest, streamed, strict=True):
        assert (t["price"], t["qty"], t["time"], t["isBuyerMaker"]) == (m["p"], m["q"], m["T"], m["m"])
    assert len(klines) == 3 and all(
        len(k) == 12 and isinstance(k[0], int) and DEC8.match(k[1]) for k in klines
    )
    assert klines[1][0] - klines[0][0] == 60_000 and klines[-1][0] <= time.time() * 1000


async def test_rest_rate_limit_answers_429_with_retry_after() -> None:
    async with sim(rest_limits={BINANCE: (3, 60.0)}) as s, aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(5):
            async with http.get(f"{s.rest_url('binance')}/api/v3/ping") as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert (await r.json())["code"] == -1003
        assert statuses == [200, 200, 200, 429, 429]
        assert s.stats()["rest"]["rate_limited"] == 2


async def test_server_shutdown_is_announced() -> None:
    s = sim()
    await s.start()
    async with websockets.connect(f"{s.url('binance')}/stream?streams=btcusdt@bookTicker") as ws:
        await recv_json(ws)
        await s.stop()
        msgs = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                msgs.append(await recv_json(ws, 5))
    last = msgs[-1]
    assert last["stream"] == "!serverShutdown" and last["data"]["e"] == "serverShutdown"
    assert isinstance(last["data"]["E"], int)
