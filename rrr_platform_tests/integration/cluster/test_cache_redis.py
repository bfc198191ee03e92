"""RedisCache and AsyncRedisCache against standalone Redis and a 3-node Redis Cluster."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from redis.crc import key_slot

from rrr_platform.cache.codec import CacheSerializationError
from rrr_platform.cache.memoize import memoize_async
from rrr_platform.cache.redis import AsyncRedisCache, RedisCache, async_redis_client, redis_client
from rrr_platform_tests.integration.cluster.conftest import RedisBackend


@pytest.fixture
def cache(redis_backend: RedisBackend) -> Iterator[RedisCache]:
    client = redis_client(redis_backend.url)
    yield RedisCache(client, f"t-{uuid.uuid4().hex[:8]}", prefix=redis_backend.prefix, ttl=30)
    client.close()


@pytest_asyncio.fixture(loop_scope="function")  # the tests' loop: a client belongs to one loop
async def async_cache(redis_backend: RedisBackend) -> AsyncIterator[AsyncRedisCache]:
    client = async_redis_client(redis_backend.url)
    yield AsyncRedisCache(client, f"t-{uuid.uuid4().hex[:8]}", prefix=redis_backend.prefix, ttl=30)
    await client.aclose()


def test_client_kind_matches_the_server(cache: RedisCache, redis_backend: RedisBackend) -> None:
    from redis.cluster import RedisCluster

    assert isinstance(cache.client, RedisCluster) is redis_backend.cluster


def test_values_round_trip_under_the_namespace(cache: RedisCache, redis_backend: RedisBackend) -> None:
    frame = pd.DataFrame({"close": [Decimal("65000.10"), Decimal("65001.00")], "n": [1, 2]},
                         index=pd.date_range("2024-01-01", periods=2, freq="min", tz="UTC"))
    cache.set("bars", frame)
    cache.set("arr", np.arange(6, dtype=np.float32).reshape(2, 3))
    cache.set("px", Decimal("0.00012300"))
    cache.set("none", None)
    pd.testing.assert_frame_equal(cache.get("bars"), frame, check_exact=True, check_freq=True)
    assert np.array_equal(cache.get("arr"), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert str(cache.get("px")) == "0.00012300"
    assert cache.get("none", "default") is None and cache.get("absent", "default") == "default"
    raw_key = cache.redis_key("px")
    assert raw_key == f"{redis_backend.prefix}cache:{{{cache.namespace}}}:px"
    assert cache.client.exists(raw_key) == 1
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.sets) == (4, 1, 4)


def test_entries_expire(cache: RedisCache) -> None:
    cache.set("short", "x", ttl=0.15)
    cache.set("default", "y")
    assert cache.get("short") == "x"
    assert 0 < cache.ttl("short") <= 0.15
    assert 29 < cache.ttl("default") <= 30
    time.sleep(0.25)
    assert cache.get("short") is None
    assert "short" not in cache and "default" in cache
    with pytest.raises(ValueError, match="ttl"):
        cache.set("bad", 1, ttl=0)


def test_bulk_get_set_delete_and_clear(cache: RedisCache, redis_backend: RedisBackend) -> None:
    items = {f"sym{i}": {"px": Decimal(f"{i}.50"), "i": i} for i in range(200)}
    cache.set_many(items, ttl=5)
    assert {key_slot(cache.redis_key(k).encode()) for k in items} == {key_slot(cache.redis_key("x").encode())}
    found = cache.get_many([*items, "missing-1", "missing-2"])
    assert found == items
    assert 4 < cache.ttl("sym7") <= 5
    assert cache.delete("sym1", "sym2", "missing-1") == 2
    other = RedisCache(cache.client, cache.namespace + "-other", prefix=redis_backend.prefix)
    other.set("keep", 1)
    assert cache.clear() == 198
    assert cache.get_many(list(items)) == {}
    assert other.get("keep") == 1  # clear touched only its own namespace
    other.clear()


def test_unencodable_values_raise_and_corrupt_entries_read_as_misses(cache: RedisCache) -> None:
    with pytest.raises(CacheSerializationError, match="cannot cache"):
        cache.set("bad", object())
    with pytest.raises(CacheSerializationError):
        cache.set_many({"good": 1, "bad": object()})
    assert cache.get("good") is None  # all or nothing
    cache.client.set(cache.redis_key("corrupt"), b"\xc1\xc1")
    assert cache.get("corrupt", "miss") == "miss"
    assert cache.stats().errors == 1
    assert cache.client.exists(cache.redis_key("corrupt")) == 0


async def test_async_cache_round_trips_bulk_and_expires(async_cache: AsyncRedisCache) -> None:
    await async_cache.set("a", {"px": Decimal("1.10")})
    await async_cache.set_many({"b": (1, 2), "c": np.int64(3)}, ttl=0.15)
    assert await async_cache.get("a") == {"px": Decimal("1.10")}
    assert await async_cache.get_many(["a", "b", "c", "z"]) == {"a": {"px": Decimal("1.10")}, "b": (1, 2),
                                                               "c": np.int64(3)}
    assert await async_cache.contains("b")
    await asyncio.sleep(0.25)
    assert await async_cache.get_many(["b", "c"]) == {}
    assert await async_cache.delete("a") == 1
    await async_cache.set("d", 1)
    assert await async_cache.clear() == 1


async def test_single_flight_over_redis(async_cache: AsyncRedisCache) -> None:
    calls = 0

    @memoize_async(async_cache, key=lambda symbol: f"vol:{symbol}", ttl=10)
    async def volatility(symbol: str) -> Decimal:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return Decimal("0.0125")

    results = await asyncio.gather(*(volatility("BTC-USD") for _ in range(20)))
    assert results == [Decimal("0.0125")] * 20 and calls == 1
    assert await async_cache.get("vol:BTC-USD") == Decimal("0.0125")
    assert await volatility("BTC-USD") == Decimal("0.0125") and calls == 1
