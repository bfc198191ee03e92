"""The venue REST clients against the simulator's REST endpoints (real formats, real HTTP on 127.0.0.1),
and the simulator's WebSocket frames through the parsers.

Every check cross-examines two endpoints: trades fetched by id or by time must be consecutive and in
range, and the minute bars of the same window must add up to those trades (count, volume, and for
Binance the taker-buy volume, which pins the aggressor mapping).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
import websockets

from rrr_platform.ingest.validation import validate_quote, validate_trade
from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN
from rrr_platform.market.types import BINANCE, COINBASE, POLYGON, Bar, Trade
from rrr_platform.simulator.faults import FaultSpec
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform.venues import binance, coinbase, polygon
from rrr_platform.venues.base import ConnectionSequence, Heartbeat, VenueHTTPError, VenueStatus

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(port=0, polygon_api_key="sim-key-123")) as server:
        yield server


def minute_window(minutes: int, ago_minutes: int) -> tuple[int, int]:
    now = time.time_ns()
    end = now - now % NS_PER_MIN - ago_minutes * NS_PER_MIN
    return end - minutes * NS_PER_MIN, end


def assert_bars_match_trades(bars: list[Bar], trades: list[Trade], start: int, end: int) -> None:
    by_minute: dict[int, list[Trade]] = {}
    for t in trades:
        by_minute.setdefault(t.exchange_ts_ns - t.exchange_ts_ns % NS_PER_MIN, []).append(t)
    traded = {ts: rows for ts, rows in by_minute.items() if rows}
    assert {b.ts_ns for b in bars if b.volume > 0} == set(traded)
    for bar in bars:
        assert start <= bar.ts_ns < end and bar.ts_ns % NS_PER_MIN == 0
        rows = traded.get(bar.ts_ns, [])
        if not rows:
            continue
        assert bar.volume == sum(t.size for t in rows)
        assert bar.high == max(t.price for t in rows) and bar.low == min(t.price for t in rows)
        assert bar.open == rows[0].price and bar.close == rows[-1].price
        if bar.trade_count:
            assert bar.trade_count == len(rows)
        if bar.buy_volume is not None:
            assert bar.buy_volume == sum((t.size for t in rows if t.aggressor == "BUY"), Decimal(0))


def assert_consecutive(trades: list[Trade], *, seq: bool = True) -> None:
    ids = [int(t.trade_id) for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert all(t.seq == (int(t.trade_id) if seq else None) for t in trades)


async def test_binance_trades_by_id_across_pages(sim: SimulatorServer) -> None:
    async with binance.RestClient(sim.rest_url(BINANCE), api_key="not-needed-for-market-data") as client:
        symbols = await client.load_symbols()
        assert symbols["BTCUSDT"] == "BTC-USDT" and symbols["DOGEUSDT"] == "DOGE-USDT"
        assert binance.canonical_symbol("LINKUSDT") == "LINK-USDT"
        start, end = minute_window(5, 10)
        first_id = await client.first_trade_id_at("BTC-USDT", start, end)
        assert first_id is not None
        # a window longer than aggTrades' one-hour limit finds the same first trade
        assert await client.first_trade_id_at("BTC-USDT", start, start + 3 * 3600 * 10**9) == first_id
        trades = await client.trades_by_id("BTC-USDT", first_id, first_id + 1499)  # two pages
    assert [int(t.trade_id) for t in trades] == list(range(first_id, first_id + 1500))
    t = trades[0]
    assert t.venue == BINANCE and t.symbol == "BTC-USDT" and t.venue_symbol == "BTCUSDT"
    assert t.is_replay and t.seq_scope == "instrument" and t.gapless
    assert isinstance(t.price, Decimal) and t.price > 0 and t.size > 0
    assert start <= t.exchange_ts_ns < end


async def test_binance_trades_by_time_and_klines_agree(sim: SimulatorServer) -> None:
    start, end = minute_window(3, 20)
    async with binance.RestClient(sim.rest_url(BINANCE)) as client:
        trades = [t async for page in client.trades("BTC-USDT", start, end) for t in page]
        bars = await client.bars_1m("BTC-USDT", start, end)
    assert trades and all(start <= t.exchange_ts_ns < end for t in trades)
    assert_consecutive(trades)
    assert len(bars) == 3
    assert all(b.vwap is not None and b.low <= b.vwap <= b.high for b in bars)
    assert_bars_match_trades(bars, trades, start, end)


async def test_coinbase_trades_by_id_and_time_and_candles_agree(sim: SimulatorServer) -> None:
    start, end = minute_window(2, 30)
    async with coinbase.RestClient(sim.rest_url(COINBASE)) as client:
        fetched = [t async for page in client.trades("BTC-USD", start, end) for t in page]
        trades = sorted(fetched, key=lambda t: t.seq or 0)
        assert trades and all(start <= t.exchange_ts_ns < end for t in trades)
        assert_consecutive(trades)
        first, last = int(trades[0].trade_id), int(trades[0].trade_id) + 1199  # crosses the 1000 page
        by_id = await client.trades_by_id("BTC-USD", first, last)
        bars = await client.bars_1m("BTC-USD", start, end)
    assert [int(t.trade_id) for t in by_id] == list(range(first, last + 1))
    assert by_id[: len(trades)] == trades  # the same trades, whichever way they were fetched
    assert by_id[0].venue == COINBASE and by_id[0].is_replay and by_id[0].aggressor in ("BUY", "SELL")
    assert_bars_match_trades(bars, trades, start, end)


async def test_coinbase_trades_days_ago_found_by_bisection(sim: SimulatorServer) -> None:
    start, end = minute_window(2, 3 * 24 * 60)
    before = sim.accounting.rest_requests
    async with (
        binance.RestClient(sim.rest_url(BINANCE)) as _,
        coinbase.RestClient(sim.rest_url(COINBASE), base_wait_s=0.01) as client,
    ):
        trades = sorted(
            [t async for page in client.trades("ETH-USD", start, end) for t in page], key=lambda t: t.seq or 0
        )
        bars = await client.bars_1m("ETH-USD", start, end)
    assert trades and all(start <= t.exchange_ts_ns < end for t in trades)
    assert_consecutive(trades)
    assert_bars_match_trades(bars, trades, start, end)
    assert sim.accounting.rest_requests - before < 80  # not one request per 1000 trades for 3 days


async def test_coinbase_candles_over_many_windows(sim: SimulatorServer) -> None:
    start, end = minute_window(700, 60)  # three requests of at most 300 candles
    async with coinbase.RestClient(sim.rest_url(COINBASE)) as client:
        bars = await client.bars_1m("ETH-USD", start, end)
    stamps = [b.ts_ns for b in bars]
    assert stamps == sorted(set(stamps)) and len(bars) > 600
    assert all(start <= ts < end for ts in stamps)


async def test_polygon_crypto_trades_and_aggs_agree(sim: SimulatorServer) -> None:
    start, end = minute_window(2, 15)
    async with polygon.RestClient(sim.rest_url(POLYGON), api_key="sim-key-123") as client:
        trades = [t async for page in client.trades("BTC-USD", start, end) for t in page]
        bars = await client.bars_1m("BTC-USD", start, end)
    assert trades and all(start <= t.exchange_ts_ns < end for t in trades)
    assert all(t.exchange_ts_ns % 1_000_000 == 0 for t in trades)  # ms, like the WebSocket
    assert (
        trades[0].venue == POLYGON and trades[0].symbol == "BTC-USD" and trades[0].venue_symbol == "X:BTCUSD"
    )
    assert all(t.aggressor in ("BUY", "SELL") for t in trades)
    assert_consecutive(trades, seq=False)  # Polygon crypto has no sequence
    assert_bars_match_trades(bars, trades, start, end)
    assert all(b.vwap is not None for b in bars)


async def test_polygon_pagination_follows_next_url(sim: SimulatorServer) -> None:
    start, end = minute_window(1, 30)
    async with polygon.RestClient(sim.rest_url(POLYGON), api_key="sim-key-123") as client:
        whole = [page async for page in client.trades("ETH-USD", start, end)]
        small = [page async for page in client.trades("ETH-USD", start, end, page_size=7)]
    assert len(whole) == 1 and len(small) > 2 and {len(p) for p in small[:-1]} == {7}
    assert [t for p in small for t in p] == whole[0]


async def test_polygon_equity_trades(sim: SimulatorServer) -> None:
    start, end = minute_window(24 * 60, 0)
    async with polygon.RestClient(sim.rest_url(POLYGON), api_key="sim-key-123") as client:
        pages = [p async for p in client.trades("AAPL", start, end, max_pages=1, page_size=100)]
    assert len(pages) == 1 and len(pages[0]) == 100, "the simulator has AAPL trades in the last day"
    page = pages[0]
    assert [t.seq for t in page] == sorted(t.seq for t in page if t.seq is not None)
    t = page[0]
    assert t.asset_class == "equity" and t.aggressor == "UNKNOWN" and t.seq_scope == "instrument"
    exchange, _, trade_id = t.trade_id.partition(":")
    assert exchange == t.source_exchange and trade_id.isdigit()


async def test_polygon_news(sim: SimulatorServer) -> None:
    end = time.time_ns()
    start = end - 3 * NS_PER_DAY
    async with polygon.RestClient(sim.rest_url(POLYGON), api_key="sim-key-123") as client:
        articles = await client.news(start, end)
    assert articles and all({"id", "title", "published_utc"} <= set(a) for a in articles)
    published = [a["published_utc"] for a in articles]
    assert published == sorted(published)


async def test_polygon_bad_key_fails_fast_without_leaking_it(sim: SimulatorServer) -> None:
    before = sim.accounting.rest_requests
    async with polygon.RestClient(sim.rest_url(POLYGON), api_key="wrong-secret-key") as client:
        with pytest.raises(VenueHTTPError) as info:
            await client.bars_1m("BTC-USD", *minute_window(1, 5))
    assert info.value.status == 401 and not info.value.retryable
    assert sim.accounting.rest_requests - before == 1  # a 401 is not retried
    assert "wrong-secret-key" not in str(info.value) and "wrong-secret-key" not in repr(client)


async def test_5xx_is_retried_and_bounded(sim: SimulatorServer) -> None:
    sim.set_faults(FaultSpec(venue=BINANCE, rest_fail_every=2))
    try:
        failures = sim.accounting.rest_failures
        async with binance.RestClient(sim.rest_url(BINANCE), base_wait_s=0.01) as client:
            bars = []
            for ago in (30, 40, 50):  # every second request fails once, then succeeds on retry
                bars += await client.bars_1m("ETH-USDT", *minute_window(1, ago))
        assert len(bars) == 3 and sim.accounting.rest_failures > failures
        sim.clear_faults()
        sim.set_faults(FaultSpec(venue=BINANCE, rest_fail_every=1, rest_fail_status=502))
        async with binance.RestClient(sim.rest_url(BINANCE), base_wait_s=0.01, max_attempts=3) as client:
            before = sim.accounting.rest_requests
            with pytest.raises(VenueHTTPError) as info:
                await client.bars_1m("ETH-USDT", *minute_window(1, 30))
        assert info.value.status == 502 and sim.accounting.rest_requests - before == 3
    finally:
        sim.clear_faults()


async def test_429_waits_for_retry_after(sim: SimulatorServer) -> None:
    saved = dict(sim.config.rest_limits)
    sim.config.rest_limits[COINBASE] = (2, 1.0)
    try:
        limited = sim.accounting.rate_limited
        started = time.monotonic()
        async with coinbase.RestClient(sim.rest_url(COINBASE), base_wait_s=0.01) as client:
            for ago in (100, 110, 120, 130):
                await client.bars_1m("SOL-USD", *minute_window(2, ago))
        elapsed = time.monotonic() - started
        assert sim.accounting.rate_limited > limited
        assert elapsed >= 0.9  # Retry-After (whole seconds) was honoured, not the 10 ms base wait
    finally:
        sim.config.rest_limits.clear()
        sim.config.rest_limits.update(saved)


# --- the simulator's WebSocket frames through the parsers ------------------------------------------


def _rejected(results: list[Any], now: int) -> list[str]:
    reasons = [validate_trade(t, now_ns=now) for r in results for t in r.trades]
    reasons += [validate_quote(q, now_ns=now) for r in results for q in r.quotes]
    return [reason for reason in reasons if reason is not None]


async def _stream(
    url: str, messages: list[str], parse: Any, done: Callable[[list[Any]], bool], timeout: float = 15.0
) -> list[Any]:
    """Parse frames until ``done(results)`` or the timeout: fast when the stream is busy, patient
    when the machine is loaded."""
    results: list[Any] = []
    async with websockets.connect(url, open_timeout=5) as ws:
        for message in messages:
            await ws.send(message)
        deadline = time.monotonic() + timeout
        while not done(results) and (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(ws.recv(decode=False), left)
            except TimeoutError:
                break
            results.append(parse(frame, time.time_ns(), "it-1", time.monotonic_ns()))
    return results


def _count(results: list[Any], what: str) -> int:
    return sum(len(getattr(r, what)) for r in results)


def _has_event(results: list[Any], kind: type) -> bool:
    return any(isinstance(e, kind) for r in results for e in r.events)


# Polygon's simulated trades are sparse per symbol: several symbols make a short stream busy enough.
POLYGON_PAIRS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD"]
POLYGON_STOCKS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA"]

STREAMS = {
    "binance": lambda sim: (
        binance.ws_url(sim.url("binance"), ["BTC-USDT", "ETH-USDT"], ["trades", "quotes"]),
        [],
        binance.parse,
    ),
    "binance-us": lambda sim: (
        binance.ws_url(sim.url("binance"), ["BTC-USDT"], ["trades"], time_unit="MICROSECOND"),
        [],
        binance.parse,
    ),
    "coinbase": lambda sim: (
        sim.url("coinbase"),
        coinbase.subscribe_messages(["BTC-USD", "ETH-USD"], ["trades", "quotes"]),
        coinbase.parse,
    ),
    "coinbase-at": lambda sim: (
        sim.url("coinbase_advanced"),
        coinbase.at_subscribe_messages(["BTC-USD"], ["trades", "quotes"]),
        coinbase.parse_advanced_trade,
    ),
    "polygon-crypto": lambda sim: (
        polygon.ws_url(sim.url("polygon"), POLYGON_PAIRS, ["trades", "quotes"]),
        polygon.subscribe_messages(POLYGON_PAIRS, ["trades", "quotes"], "sim-key-123"),
        polygon.parse,
    ),
    "polygon-stocks": lambda sim: (
        polygon.ws_url(sim.url("polygon", "stocks"), POLYGON_STOCKS, ["trades", "quotes"]),
        polygon.subscribe_messages(POLYGON_STOCKS, ["trades", "quotes"], "sim-key-123"),
        polygon.parse,
    ),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
async def test_simulator_stream_parses_cleanly(sim: SimulatorServer, name: str) -> None:
    url, messages, parse = STREAMS[name](sim)

    def done(results: list[Any]) -> bool:
        if _count(results, "trades") < 5:
            return False
        if name == "coinbase":
            return _has_event(results, Heartbeat) and _count(results, "quotes") > 0
        return _count(results, "quotes") > 0 or name == "binance-us"

    results = await _stream(url, messages, parse, done)
    trades = [t for r in results for t in r.trades]
    assert trades and not [d.reason for r in results for d in r.dead_letters]
    now = time.time_ns()
    assert all(validate_trade(t, now_ns=now) is None for t in trades)
    assert all(t.connection_id == "it-1" and t.receive_mono_ns > 0 for t in trades)
    if name == "binance-us":  # µs times read as µs: within seconds of now, not 1000x in the future
        assert all(abs(t.exchange_ts_ns - now) < 60 * 10**9 for t in trades)
        assert any(t.exchange_ts_ns % 1_000_000 for t in trades)  # sub-millisecond digits kept
    if name.startswith(("binance", "coinbase")) and name != "coinbase-at":
        by_symbol: dict[str, list[int]] = {}
        for t in trades:
            by_symbol.setdefault(t.symbol, []).append(int(t.trade_id))
        for ids in by_symbol.values():  # no faults: trade ids are consecutive per symbol
            assert ids == list(range(ids[0], ids[0] + len(ids)))
    events = {type(e).__name__ for r in results for e in r.events}
    if name.startswith("polygon"):
        statuses = [e.status for r in results for e in r.events if isinstance(e, VenueStatus)]
        assert statuses[:2] == ["connected", "auth_success"] and "SubscriptionAck" in events
    if name == "coinbase":
        assert {"SubscriptionAck", "Heartbeat"} <= events
    if name == "coinbase-at":
        seqs = [e.sequence_num for r in results for e in r.events if isinstance(e, ConnectionSequence)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one counter for the connection


@pytest.mark.parametrize("name", ["binance", "coinbase", "polygon-crypto"])
async def test_simulator_malformed_frames_are_dead_letters_or_rejected(
    sim: SimulatorServer, name: str
) -> None:
    venue = {"binance": BINANCE, "coinbase": COINBASE, "polygon-crypto": POLYGON}[name]
    kinds = ("bad_json", "negative_price", "wrong_type", "absurd_timestamp", "missing_field", "nan_price")
    sim.set_faults(FaultSpec(venue=venue, malformed_every=1, malformed_kinds=kinds, apply_to_next=1))
    try:
        url, messages, parse = STREAMS[name](sim)
        now = time.time_ns()
        results = await _stream(
            url,
            messages,
            parse,
            lambda rs: (
                _count(rs, "dead_letters") > 1 and len(_rejected(rs, now)) > 1 and _count(rs, "trades") > 3
            ),
            timeout=20.0,
        )
    finally:
        sim.clear_faults()
    now = time.time_ns()
    dead = [d for r in results for d in r.dead_letters]
    rejected = _rejected(results, now)
    good = [t for r in results for t in r.trades if validate_trade(t, now_ns=now) is None]
    assert good, "the valid copies still arrive"
    assert dead and all(d.reason and d.payload and d.venue == venue for d in dead)
    assert rejected, "implausible values (negative, NaN, absurd times) are caught by validation"
