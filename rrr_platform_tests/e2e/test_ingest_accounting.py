"""Every message the simulator sends is either stored or accounted for, through every fault."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import psycopg
import redis

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.ingest.engine import IngestEngine
from rrr_platform.ingest.shards import default_shards
from rrr_platform.market.types import BINANCE, COINBASE, POLYGON
from rrr_platform.simulator.faults import FaultSpec
from rrr_platform.simulator.model import MarketConfig
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer
from rrr_platform_tests.conftest import create_database, drop_database
from rrr_platform_tests.e2e.conftest import simulator_settings

STREAM_FAULTS = dict(malformed_every=9, duplicate_every=6, skip_every=13)


async def test_accounting_through_every_fault(tmp_path, redis_url: str, redis_prefix: str) -> None:
    prefix = f"{redis_prefix}acct:"
    pg_url = create_database("rrr_test_acct")
    faults = [
        FaultSpec(venue=BINANCE, **STREAM_FAULTS),
        FaultSpec(venue=COINBASE, **STREAM_FAULTS),
        FaultSpec(venue=POLYGON, malformed_every=9, duplicate_every=6),  # no ids: nothing to skip-detect
        # The first connection of each venue also drops after some frames (Polygon has two feeds).
        FaultSpec(venue=BINANCE, drop_after=120, apply_to_next=1, **STREAM_FAULTS),
        FaultSpec(venue=COINBASE, drop_after=120, apply_to_next=1, **STREAM_FAULTS),
        FaultSpec(venue=POLYGON, drop_after=25, apply_to_next=2, malformed_every=9, duplicate_every=6),
    ]
    config = SimulatorConfig(port=0, market=MarketConfig(seed=11, trade_rate_scale=8.0), faults=faults)
    try:
        async with SimulatorServer(config) as sim:
            settings = simulator_settings(sim, tmp_path, pg_url, redis_url, prefix)
            shards = [
                dataclasses.replace(s, batch_age_ms=20, idle_timeout_s=5)
                for s in default_shards(settings).values()
            ]
            engines = [IngestEngine(shard, settings, pg_url, redis_url) for shard in shards]
            tasks = [asyncio.create_task(e.run()) for e in engines]
            await asyncio.sleep(12)
            # Silence every live connection, then let the engines read what is already on the wire:
            # a frame still in a socket buffer at stop was sent but never received.
            for connection_id in list(sim.sessions):
                sim.set_faults(FaultSpec(silent_after=1), connection_id=connection_id)
            await asyncio.sleep(1.5)
            for engine in engines:
                engine.stop()
            await asyncio.gather(*tasks)
            stopped_ns = time.time_ns()
            check_accounting(sim, engines, pg_url, redis_url, prefix, stopped_ns)
    finally:
        drop_database(pg_url)


def check_accounting(
    sim: SimulatorServer,
    engines: list[IngestEngine],
    pg_url: str,
    redis_url: str,
    prefix: str,
    stopped_ns: int,
) -> None:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT count(*) FROM market.trades").fetchone()[0]
        stored: dict[tuple[str, str], set[str]] = {}
        for venue, symbol, trade_id in conn.execute("SELECT venue, symbol, trade_id FROM market.trades"):
            stored.setdefault((venue, symbol), set()).add(trade_id)
        dead = conn.execute("SELECT venue, payload FROM market.dead_letters").fetchall()
        gaps = conn.execute(
            "SELECT venue, symbol, scope, first_missing, last_missing, status, backfilled_count,"
            " detail FROM market.gaps"
        ).fetchall()
        open_gaps = [g for g in gaps if g[5] != "backfilled"]
        newest = {
            (venue, symbol): (trade_id, str(price))
            for venue, symbol, trade_id, price in conn.execute(
                "SELECT DISTINCT ON (venue, symbol) venue, symbol, trade_id, price FROM market.trades"
                ' ORDER BY venue, symbol, exchange_ts_ns DESC, seq DESC NULLS LAST, trade_id COLLATE "C" DESC'
            )
        }
    assert stored, "nothing was stored"
    # The key is (venue, symbol, trade_id, ts): a trade must come back with the same ts from every path
    # (stream, REST backfill, reconcile), or it would be stored twice.
    assert rows == sum(len(ids) for ids in stored.values()), "a trade was stored twice"

    model = sim.feed.model
    skipped_total = malformed_total = 0
    for venue in (BINANCE, COINBASE, POLYGON):
        venue_keys = [k for k in stored if k[0] == venue]
        assert venue_keys, f"no trades from {venue}"
        for key in venue_keys:
            acc = sim.accounting.account(*key)
            sent = {int(i) for i in acc.streamed}
            skipped_total += len(acc.skipped)
            if venue in (BINANCE, COINBASE):
                # Gapless ids: everything from the first to the last id streamed, skipped ids and the
                # trades of the disconnection backfilled over REST. (An id skipped after the last
                # streamed trade is invisible to any client until a later trade arrives.)
                expected = {str(i) for i in range(min(sent), max(sent) + 1)}
            else:
                # No ids: what streamed, plus what the reconnect reconciled over REST.
                batch = model.trades(
                    venue, key[1], min_ts(model, venue, key[1], sent), max_ts(model, venue, key[1], sent) + 1
                )
                expected = {str(i) for i in batch.trade_id}
            # Polygon equity trade ids are "exchange:id" (the venue's dedupe key is sym, x, i).
            got = {trade_id.rpartition(":")[2] for trade_id in stored[key]}
            assert len(got) == len(stored[key]), f"{key}: one id stored under two exchanges"
            missing, extra = expected - got, got - expected
            # A skipped id after the last streamed trade may still be found (Coinbase heartbeats carry
            # the last trade id) and backfilled: that one, and only that one, may be "extra".
            extra -= {str(i) for i in acc.skipped if int(i) > max(sent)}
            if venue == POLYGON:
                # At stop, a symbol with no trade since its reconnect is reconciled up to now: real
                # trades after the last streamed one may be fetched, and only real ones.
                later = model.trades(venue, key[1], max_ts(model, venue, key[1], sent) + 1, stopped_ns)
                extra -= {str(i) for i in later.trade_id}
            assert not missing and not extra, (
                f"{key}: missing {len(missing)} {sorted(missing)[:3]}, extra {len(extra)} {sorted(extra)[:3]}"
                f" sent {min(sent)}..{max(sent)}; gaps {[g for g in gaps if g[:2] == key]}"
            )

        malformed = {
            m["raw"].encode() if isinstance(m["raw"], str) else m["raw"]
            for k in venue_keys
            for m in sim.accounting.account(*k).malformed
        }
        malformed_total += len(malformed)
        dead_payloads = [bytes(p) for v, p in dead if v == venue]
        assert malformed, f"the simulator sent no malformed frame to {venue}"
        # A dead letter holds the bad frame, or only the bad event of a batched frame (its good
        # neighbours are stored): every malformed frame is dead-lettered, and nothing else is.
        undetected = [m for m in malformed if not any(d == m or d in m for d in dead_payloads)]
        unexplained = [d for d in dead_payloads if not any(d == m or d in m for m in malformed)]
        assert not undetected, (
            f"{venue}: {len(undetected)} malformed frame(s) stored: {undetected[0][:300]!r}"
        )
        assert not unexplained, f"{venue}: dead letters for good frames: {unexplained[0][:300]!r}"
    assert skipped_total > 0 and not open_gaps, open_gaps

    # Metrics add up: every trade received was stored or counted a duplicate; every stored row is
    # a streamed store or a backfill; every dead letter is a rejection.
    received = sum(e.metrics.total("received") for e in engines)
    stored_n = sum(e.metrics.total("stored") for e in engines)
    duplicates = sum(e.metrics.total("duplicates") for e in engines)
    backfilled = sum(e.metrics.total("backfilled") for e in engines)
    assert received == stored_n + duplicates and duplicates > 0
    assert stored_n + backfilled == sum(len(ids) for ids in stored.values())
    assert sum(e.metrics.total("rejected") for e in engines) == len(dead)
    assert sum(e.metrics.total("reconnects") for e in engines) >= 3

    # Redis' latest values equal PostgreSQL's newest rows.
    client = redis.Redis.from_url(redis_url)
    keys = RedisKeys(prefix)
    for (venue, symbol), (trade_id, price) in newest.items():
        latest = client.hgetall(keys.last(venue, symbol))
        assert latest[b"trade_id"].decode() == trade_id, (venue, symbol)
        assert latest[b"price"].decode() == price, (venue, symbol)
    client.close()


def _ts_of(model, venue: str, symbol: str, ids: set[int]) -> list[int]:
    batch = model.trades_by_id(venue, symbol, min(ids), max(ids))
    return [int(t) for t, i in zip(batch.ts_ns, batch.trade_id, strict=True) if int(i) in ids]


def min_ts(model, venue: str, symbol: str, ids: set[int]) -> int:
    return min(_ts_of(model, venue, symbol, ids))


def max_ts(model, venue: str, symbol: str, ids: set[int]) -> int:
    return max(_ts_of(model, venue, symbol, ids))
