"""Each fault mode happens as configured, is accounted, and the same seed gives the same data."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import pytest
import websockets

from rrr_platform.market.types import BINANCE, COINBASE_AT, POLYGON
from rrr_platform.simulator.faults import MALFORMED_KINDS, FaultSpec, IdRanges
from rrr_platform.simulator.model import MarketModel
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform.simulator.testing import recent_market_config, shared_model

pytestmark = pytest.mark.integration
TRADES = "/ws/btcusdt@trade"


def sim(faults: list[FaultSpec] | None = None, **overrides: Any) -> SimulatorServer:
    cfg = SimulatorConfig(port=0, tick_s=0.05, faults=faults or [], **overrides)
    return SimulatorServer(cfg, model=shared_model(7, "none", 5.0))


async def raw_frames(ws: Any, n: int, timeout: float = 20.0) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        out.append(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
    return out


def classify(frame: str) -> str:
    try:
        ev = json.loads(frame)
    except json.JSONDecodeError:
        return "bad_json"
    if "p" not in ev:
        return "missing_field"
    if not isinstance(ev["p"], str):
        return "wrong_type"
    if ev["p"] == "NaN":
        return "nan_price"
    if ev["p"].startswith("-"):
        return "negative_price"
    if ev["T"] > time.time() * 1000 + 86_400_000:
        return "absurd_timestamp"
    return "ok"


async def test_drop_after_n_frames_closes_without_close_frame() -> None:
    async with (
        sim([FaultSpec(venue=BINANCE, drop_after=5)]) as s,
        websockets.connect(s.url("binance") + TRADES) as ws,
    ):
        got = []
        with pytest.raises(websockets.ConnectionClosedError):
            while True:
                got.append(await asyncio.wait_for(ws.recv(), 10))
        assert len(got) == 5
        conn = next(iter(s.stats()["connections"].values()))
        assert conn["close_reason"] == "fault: drop_after=5"


async def test_ignore_pings_withholds_pongs() -> None:
    async with sim([FaultSpec(venue=BINANCE, ignore_pings=True, apply_to_next=1)]) as s:
        # max_queue=None: frames keep arriving while the test waits; a bounded queue would stop the
        # client reading the socket, and its close handshake would then wait for its timeout.
        async with websockets.connect(s.url("binance") + TRADES, ping_interval=None, max_queue=None) as ws:
            waiter = await ws.ping()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(waiter, 1.0)
        async with websockets.connect(s.url("binance") + TRADES, ping_interval=None, max_queue=None) as ws:
            await asyncio.wait_for(await ws.ping(), 2.0)  # the fault applied to one connection only


async def test_silent_after_keeps_the_socket_open() -> None:
    async with (
        sim([FaultSpec(venue=BINANCE, silent_after=3)]) as s,
        websockets.connect(s.url("binance") + TRADES, ping_interval=None) as ws,
    ):
        await raw_frames(ws, 3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.5)
        await asyncio.wait_for(await ws.ping(), 2.0)  # still answers pings: a zombie feed


async def test_malformed_frames_of_every_kind_are_sent_and_accounted() -> None:
    async with (
        sim([FaultSpec(venue=BINANCE, malformed_every=2)]) as s,
        websockets.connect(s.url("binance") + TRADES) as ws,
    ):
        frames = await raw_frames(ws, 3 * len(MALFORMED_KINDS))
        await asyncio.sleep(0.1)
        acc = s.accounting.account(BINANCE, "BTC-USDT")
    kinds = [classify(f) for f in frames]
    bad = [f for f, k in zip(frames, kinds, strict=True) if k != "ok"]
    assert set(kinds) - {"ok"} == set(MALFORMED_KINDS)
    accounted = [m["raw"] for m in acc.malformed]
    assert bad == accounted[: len(bad)]
    assert [m["kind"] for m in acc.malformed[: len(bad)]] == [k for k in kinds if k != "ok"]
    good_ids = [json.loads(f)["t"] for f, k in zip(frames, kinds, strict=True) if k == "ok"]
    assert good_ids == list(range(good_ids[0], good_ids[0] + len(good_ids)))  # nothing lost


async def test_polygon_malformed_number_fields() -> None:
    spec = FaultSpec(venue=POLYGON, malformed_every=1, malformed_kinds=("wrong_type", "nan_price"))
    async with sim([spec], polygon_api_key="k") as s, websockets.connect(s.url("polygon")) as ws:
        await ws.recv()
        await ws.send(json.dumps({"action": "auth", "params": "k"}))
        await ws.recv()
        await ws.send(json.dumps({"action": "subscribe", "params": "XT.BTC-USD"}))
        await ws.recv()
        frames = await raw_frames(ws, 4)
    assert any('"p":"' in f for f in frames) and any('"p":NaN' in f for f in frames)
    raws = {m["raw"] for m in s.accounting.account(POLYGON, "BTC-USD").malformed}
    assert {f for f in frames if '"p":"' in f or '"p":NaN' in f} <= raws


async def test_duplicates_are_sent_twice_and_accounted() -> None:
    async with (
        sim([FaultSpec(venue=BINANCE, duplicate_every=3)]) as s,
        websockets.connect(s.url("binance") + TRADES) as ws,
    ):
        frames = await raw_frames(ws, 12)
    ids = [json.loads(f)["t"] for f in frames]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    assert len(dups) >= 2
    assert set(dups) <= set(s.accounting.account(BINANCE, "BTC-USDT").duplicated)
    assert sorted(set(ids)) == list(range(min(ids), max(ids) + 1))


async def test_skipped_trade_ids_leave_gaps_that_rest_backfills() -> None:
    async with (
        sim([FaultSpec(venue=BINANCE, skip_every=4)]) as s,
        websockets.connect(s.url("binance") + TRADES) as ws,
    ):
        ids = [json.loads(f)["t"] for f in await raw_frames(ws, 9)]
        missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
        assert missing and set(missing) <= set(s.accounting.account(BINANCE, "BTC-USDT").skipped)
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{s.rest_url('binance')}/api/v3/historicalTrades",
                params={"symbol": "BTCUSDT", "fromId": ids[0], "limit": ids[-1] - ids[0] + 1},
            ) as r,
        ):
            backfill = await r.json()
    assert [t["id"] for t in backfill] == list(range(ids[0], ids[-1] + 1))


async def test_skipped_advanced_trade_messages_leave_sequence_gaps() -> None:
    async with (
        sim([FaultSpec(venue=COINBASE_AT, skip_every=3)], at_batch_s=0.05) as s,
        websockets.connect(s.url("coinbase_advanced")) as ws,
    ):
        await ws.send(
            json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
        )
        seqs = [json.loads(f)["sequence_num"] for f in await raw_frames(ws, 10)]
    assert seqs[0] == 0 and seqs != list(range(len(seqs)))
    assert seqs == sorted(seqs) and s.accounting.account(COINBASE_AT, "BTC-USD").skipped


async def test_burst_releases_held_frames_at_the_given_rate() -> None:
    spec = FaultSpec(venue=BINANCE, burst_interval_s=0.8, burst_rate=500.0)
    async with sim([spec]) as s, websockets.connect(s.url("binance") + TRADES) as ws:
        await asyncio.wait_for(ws.recv(), 10)
        arrivals = [time.monotonic()]
        while time.monotonic() - arrivals[0] < 1.8:  # spans at least one held-back period
            try:
                await asyncio.wait_for(ws.recv(), 0.3)
                arrivals.append(time.monotonic())
            except TimeoutError:
                continue
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) > 0.5  # the held-back period
    assert sum(1 for g in gaps if g < 0.02) >= 10  # frames in a burst come back to back


async def test_slow_and_failing_rest() -> None:
    spec = FaultSpec(venue=BINANCE, rest_delay_s=0.3, rest_fail_every=2)
    async with sim([spec], rest_limits={}) as s, aiohttp.ClientSession() as http:
        statuses = []
        started = time.monotonic()
        for _ in range(4):
            async with http.get(f"{s.rest_url('binance')}/api/v3/time") as r:
                statuses.append(r.status)
        assert time.monotonic() - started >= 1.2
        assert statuses == [200, 503, 200, 503]
        assert s.stats()["rest"]["failures"] == 2


async def test_faults_set_at_run_time_over_http_and_for_a_live_connection() -> None:
    async with sim() as s, aiohttp.ClientSession() as http:
        async with http.post(f"{s.base_http}/_sim/faults", json={"venue": "nowhere", "drop_after": 1}) as r:
            assert r.status == 400
        async with http.post(f"{s.base_http}/_sim/faults", json={"bogus": 1}) as r:
            assert r.status == 400 and "bogus" in (await r.json())["error"]
        async with http.post(
            f"{s.base_http}/_sim/faults", json={"venue": BINANCE, "drop_after": 2, "apply_to_next": 1}
        ) as r:
            assert r.status == 200
        async with websockets.connect(s.url("binance") + TRADES) as ws:
            with pytest.raises(websockets.ConnectionClosedError):
                for _ in range(10):
                    await asyncio.wait_for(ws.recv(), 10)
        async with websockets.connect(s.url("binance") + TRADES) as ws:
            await raw_frames(ws, 4)  # the next connection is healthy
            async with http.get(f"{s.base_http}/_sim/connections") as r:
                (conn_id,) = (await r.json()).keys()
            async with http.post(
                f"{s.base_http}/_sim/faults", json={"connection_id": conn_id, "silent_after": 1}
            ) as r:
                assert r.status == 200
            await asyncio.sleep(0.3)
            while True:  # drain what was in flight
                try:
                    await asyncio.wait_for(ws.recv(), 0.3)
                except TimeoutError:
                    break
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.0)
        async with http.get(f"{s.base_http}/_sim/stats") as r:
            stats = await r.json()
        assert stats["venues"][BINANCE]["BTC-USDT"]["streamed_count"] >= 6


def test_same_seed_same_data_different_seed_different_data() -> None:
    a, b, c = (MarketModel(recent_market_config(seed)) for seed in (11, 11, 12))
    now = time.time_ns()
    window = (now - 120 * 1_000_000_000, now - 60 * 1_000_000_000)
    ta, tb, tc = (m.trades(BINANCE, "BTC-USDT", *window) for m in (a, b, c))
    assert len(ta) > 0 and ta.trade_id.tolist() == tb.trade_id.tolist()
    assert ta.price_ticks.tolist() == tb.price_ticks.tolist() and ta.ts_ns.tolist() == tb.ts_ns.tolist()
    assert ta.price_ticks.tolist() != tc.price_ticks.tolist()


def test_fault_spec_parsing() -> None:
    spec = FaultSpec.parse("venue=polygon,drop_after=10,ignore_pings,malformed_kinds=bad_json+nan_price")
    assert (spec.venue, spec.drop_after, spec.ignore_pings, spec.malformed_kinds) == (
        "polygon",
        10,
        True,
        ("bad_json", "nan_price"),
    )
    with pytest.raises(ValueError, match="unknown fault"):
        FaultSpec.parse("explode=1")
    with pytest.raises(ValueError, match="positive"):
        FaultSpec(drop_after=0)
    with pytest.raises(ValueError, match="malformed kinds"):
        FaultSpec(malformed_kinds=("gibberish",))


def test_id_ranges_accept_ids_in_any_order() -> None:
    ids = IdRanges()
    for v in [5, 3, 4, 10, 1, 2, 12, 11, 4]:
        ids.add(v)
    assert ids.ranges() == [[1, 5], [10, 12]] and len(ids) == 8 and 11 in ids and 7 not in ids
