"""Coinbase Exchange and Advanced Trade conformance (exchange-protocols.md section 2)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import pytest
import websockets

from rrr_platform.market.timeutil import parse_rfc3339_ns
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform.simulator.testing import shared_model

pytestmark = pytest.mark.integration
DEC = re.compile(r"^\d+(\.\d+)?$")
RFC_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
RFC_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def sim(**overrides: Any) -> SimulatorServer:
    return SimulatorServer(
        SimulatorConfig(port=0, tick_s=0.05, **overrides), model=shared_model(7, "none", 5.0)
    )


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


def check_match(m: dict[str, Any]) -> None:
    assert set(m) == {
        "type",
        "trade_id",
        "sequence",
        "maker_order_id",
        "taker_order_id",
        "time",
        "product_id",
        "size",
        "price",
        "side",
    }
    assert m["type"] in ("match", "last_match") and m["product_id"] == "BTC-USD"
    assert isinstance(m["trade_id"], int) and isinstance(m["sequence"], int) and m["sequence"] > 2**32
    assert UUID.match(m["maker_order_id"]) and UUID.match(m["taker_order_id"])
    assert RFC_US.match(m["time"]) and DEC.match(m["price"]) and DEC.match(m["size"])
    assert m["side"] in ("buy", "sell")


async def test_exchange_subscribe_matches_ticker_heartbeat_unsubscribe() -> None:
    async with sim() as s, websockets.connect(s.url("coinbase")) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "product_ids": ["BTC-USD"],
                    "channels": ["matches", "heartbeat", {"name": "ticker", "product_ids": ["BTC-USD"]}],
                }
            )
        )
        ack = await recv_json(ws)
        assert ack == {
            "type": "subscriptions",
            "channels": [
                {"name": "matches", "product_ids": ["BTC-USD"]},
                {"name": "ticker", "product_ids": ["BTC-USD"]},
                {"name": "heartbeat", "product_ids": ["BTC-USD"]},
            ],
        }
        first = await recv_json(ws)
        assert first["type"] == "last_match"
        check_match(first)
        matches = await collect(ws, lambda m: m["type"] == "match", 3)
        tickers = await collect(ws, lambda m: m["type"] == "ticker", 1)
        beats = await collect(ws, lambda m: m["type"] == "heartbeat", 2)
        for m in matches:
            check_match(m)
        ids = [first["trade_id"]] + [m["trade_id"] for m in matches]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        seqs = [m["sequence"] for m in matches]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        t = tickers[0]
        assert {
            "type",
            "sequence",
            "product_id",
            "price",
            "open_24h",
            "volume_24h",
            "low_24h",
            "high_24h",
            "volume_30d",
            "best_bid",
            "best_bid_size",
            "best_ask",
            "best_ask_size",
            "side",
            "time",
            "trade_id",
            "last_size",
        } == set(t)
        assert isinstance(t["trade_id"], int) and RFC_US.match(t["time"]) and DEC.match(t["best_ask"])
        hb = beats[-1]
        assert set(hb) == {"type", "sequence", "last_trade_id", "product_id", "time"}
        assert isinstance(hb["last_trade_id"], int) and hb["last_trade_id"] >= ids[-1]
        await ws.send(json.dumps({"type": "unsubscribe", "channels": ["heartbeat", "ticker"]}))
        ack = await collect(ws, lambda m: m["type"] == "subscriptions", 1)
        assert ack[0]["channels"] == [{"name": "matches", "product_ids": ["BTC-USD"]}]


async def test_exchange_sides_match_maker_and_ticker_taker() -> None:
    async with sim() as s, websockets.connect(s.url("coinbase")) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["matches", "ticker"]})
        )
        msgs = await collect(ws, lambda m: m["type"] in ("match", "ticker"), 8)
    by_id: dict[int, dict[str, str]] = {}
    for m in msgs:
        by_id.setdefault(m["trade_id"], {})[m["type"]] = m["side"]
    pairs = [v for v in by_id.values() if len(v) == 2]
    assert pairs and all(v["match"] != v["ticker"] for v in pairs)
    for m in msgs:
        trade = s.feed.trades_by_id("coinbase_exchange", "ETH-USD", m["trade_id"], m["trade_id"])
        aggressor_buy = trade.side[0] > 0
        side = m["side"]
        assert (side == "sell") == aggressor_buy if m["type"] == "match" else (side == "buy") == aggressor_buy


async def test_exchange_errors_and_subscribe_timeout() -> None:
    async with sim(subscribe_timeout_s=0.5) as s:
        async with websockets.connect(s.url("coinbase")) as ws:
            await ws.send("{oops")
            assert (await recv_json(ws)) == {"type": "error", "message": "Malformed JSON"}
            await ws.send(
                json.dumps({"type": "subscribe", "product_ids": ["BTC-XYZ"], "channels": ["matches"]})
            )
            err = await recv_json(ws)
            assert err["type"] == "error" and "BTC-XYZ" in err["reason"]
            await ws.send(
                json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full2"]})
            )
            assert "full2" in (await recv_json(ws))["reason"]
            await ws.send(json.dumps({"type": "hello"}))
            assert (await recv_json(ws))["type"] == "error"
        async with websockets.connect(s.url("coinbase")) as ws:
            started = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                for _ in range(5):
                    await asyncio.wait_for(ws.recv(), 5)
            assert time.monotonic() - started < 3


async def test_exchange_rest_trades_pagination_and_candles_agree_with_stream() -> None:
    async with sim(rest_limits={}) as s, websockets.connect(s.url("coinbase")) as ws:
        await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches"]}))
        matches = await collect(ws, lambda m: m.get("type") in ("match", "last_match"), 4)
        last = matches[-1]["trade_id"]
        async with aiohttp.ClientSession() as http:
            base = f"{s.rest_url('coinbase')}/products/BTC-USD"
            async with http.get(f"{base}/trades", params={"after": last + 1, "limit": 4}) as r:
                page = await r.json()
                assert r.headers["CB-BEFORE"] == str(last) and r.headers["CB-AFTER"] == str(last - 3)
            async with http.get(f"{base}/trades", params={"after": r.headers["CB-AFTER"], "limit": 2}) as r2:
                older = await r2.json()
            async with http.get(f"{base}/trades", params={"before": last - 4, "limit": 2}) as r3:
                newer = await r3.json()
            async with http.get(f"{base}/candles", params={"granularity": 60}) as r4:
                candles = await r4.json()
            async with http.get(f"{s.rest_url('coinbase')}/products/NOPE-USD/trades") as r5:
                assert r5.status == 404 and (await r5.json()) == {"message": "NotFound"}
    assert [t["trade_id"] for t in page] == [last, last - 1, last - 2, last - 3]
    assert [t["trade_id"] for t in older] == [last - 4, last - 5]
    assert [t["trade_id"] for t in newer] == [last - 2, last - 3]
    streamed = {m["trade_id"]: m for m in matches}
    for t in page:
        if t["trade_id"] in streamed:
            m = streamed[t["trade_id"]]
            assert (t["price"], t["size"], t["side"], t["time"]) == (
                m["price"],
                m["size"],
                m["side"],
                m["time"],
            )
    assert candles and all(len(c) == 6 and isinstance(c[0], int) and isinstance(c[1], float) for c in candles)
    assert candles[0][0] > candles[-1][0]  # newest first


async def test_advanced_trade_envelopes_sequence_and_channels() -> None:
    async with (
        sim(at_batch_s=0.1, heartbeat_interval_s=0.3) as s,
        websockets.connect(s.url("coinbase_advanced")) as ws,
    ):
        await ws.send(
            json.dumps(
                {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"}
            )
        )
        await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
        await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker"}))
        await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level9"}))
        msgs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = await recv_json(ws)
            (errors if m.get("type") == "error" else msgs).append(m)
            channels = {x["channel"] for x in msgs}
            updates = [
                x for x in msgs if x["channel"] == "market_trades" and x["events"][0]["type"] == "update"
            ]
            if (
                {"subscriptions", "market_trades", "heartbeats", "ticker"} <= channels
                and updates
                and len([x for x in msgs if x["channel"] == "heartbeats"]) >= 2
            ):
                break
    assert errors and errors[0]["message"].startswith("Failed to subscribe")
    assert set(errors[0]) == {"type", "message"}
    assert [m["sequence_num"] for m in msgs] == list(range(len(msgs)))
    for m in msgs:
        assert set(m) == {"channel", "timestamp", "sequence_num", "events"} and RFC_NS.match(m["timestamp"])
    subs = [m for m in msgs if m["channel"] == "subscriptions"][-1]["events"][0]["subscriptions"]
    assert subs["market_trades"] == ["BTC-USD", "ETH-USD"] and subs["ticker"] == ["BTC-USD"]
    snap = next(m for m in msgs if m["channel"] == "market_trades")["events"][0]
    assert snap["type"] == "snapshot" and snap["trades"]
    for m in [x for x in msgs if x["channel"] == "market_trades"]:
        for t in m["events"][0]["trades"]:
            assert set(t) == {"trade_id", "product_id", "price", "size", "side", "time"}
            assert isinstance(t["trade_id"], str) and t["side"] in ("BUY", "SELL") and DEC.match(t["price"])
            parse_rfc3339_ns(t["time"])
    beats = [m["events"][0] for m in msgs if m["channel"] == "heartbeats"]
    assert isinstance(beats[0]["heartbeat_counter"], int)
    assert beats[1]["heartbeat_counter"] == beats[0]["heartbeat_counter"] + 1
    assert re.match(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} \+0000 UTC m=\+\d+\.\d{9}$", beats[0]["current_time"]
    )
    tick = next(m for m in msgs if m["channel"] == "ticker")["events"][0]["tickers"][0]
    assert {"best_bid", "best_bid_quantity", "best_ask", "best_ask_quantity", "price", "volume_24_h"} <= set(
        tick
    )
    assert all(isinstance(v, str) for v in tick.values())


async def test_advanced_trade_unsubscribe_and_rest_candles() -> None:
    async with sim(rest_limits={}) as s, websockets.connect(s.url("coinbase_advanced")) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
        )
        await collect(ws, lambda m: m["channel"] == "market_trades", 1)
        await ws.send(
            json.dumps({"type": "unsubscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
        )
        ack = await collect(ws, lambda m: m["channel"] == "subscriptions", 1)
        assert ack[-1]["events"][0]["subscriptions"] == {}
        async with aiohttp.ClientSession() as http:
            url = f"{s.rest_url('coinbase_advanced')}/api/v3/brokerage/market/products/BTC-USD/candles"
            async with http.get(url, params={"granularity": "ONE_MINUTE"}) as r:
                body = await r.json()
    candles = body["candles"]
    assert candles and all(isinstance(c["start"], str) and c["start"].isdigit() for c in candles)
    assert int(candles[0]["start"]) > int(candles[-1]["start"])
