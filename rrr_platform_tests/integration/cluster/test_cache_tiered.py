"""Tiered cache (memory in front of Redis) and its cross-process invalidation, on standalone Redis
and on a 3-node Redis Cluster."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rrr_platform.cache.memoize import memoize_async
from rrr_platform.cache.memory import MemoryCache
from rrr_platform.cache.redis import RedisCache, redis_client
from rrr_platform.cache.tiered import AsyncTieredCache, TieredCache
from rrr_platform_tests.integration.cluster.conftest import RedisBackend, _free_ports

REPO = Path(__file__).resolve().parents[3]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def delivered(reader: TieredCache, messages: int) -> None:
    """Wait until ``reader`` has received ``messages`` invalidations: a read that overlaps an
    invalidation is (rightly) not kept in memory, so tests that assert memory state wait first."""
    wait_for(lambda: reader.invalidations_received >= messages, what=f"{messages} invalidation message(s)")


@pytest.fixture
def namespace() -> str:
    return f"tier-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_tiered(redis_backend: RedisBackend, namespace: str) -> Iterator[Callable[..., TieredCache]]:
    made: list[TieredCache] = []

    def make(**kwargs: Any) -> TieredCache:
        kwargs.setdefault("memory_ttl", 60.0)
        cache = TieredCache.connect(redis_backend.url, namespace, prefix=redis_backend.prefix, **kwargs)
        made.append(cache)
        assert cache.memory_active
        return cache

    yield make
    if made:
        made[0].clear()
    for cache in made:
        cache.close()


def test_reads_come_from_memory_after_the_first(make_tiered: Callable[..., TieredCache],
                                                 redis_backend: RedisBackend) -> None:
    cache = make_tiered()
    direct = RedisCache(cache.redis.client, cache.namespace, prefix=redis_backend.prefix)
    direct.set("k", {"px": Decimal("1.5")})
    assert cache.get("k") == {"px": Decimal("1.5")}  # from Redis
    assert cache.get("k") == {"px": Decimal("1.5")}  # from memory
    cache.set("own", [1, 2])
    assert cache.get("own") == [1, 2]  # a write fills memory too
    assert cache.get("absent", "dflt") == "dflt"
    stats = cache.stats()
    assert (stats["memory"].hits, stats["memory"].misses) == (2, 2)
    assert (stats["redis"].hits, stats["redis"].misses) == (1, 1)


def test_memory_entries_do_not_outlive_redis_ttl(make_tiered: Callable[..., TieredCache]) -> None:
    cache = make_tiered()
    cache.set("short", "v", ttl=0.15)
    assert cache.get("short") == "v" and "short" in cache.memory
    time.sleep(0.25)
    assert "short" not in cache.memory  # expired with the Redis TTL, not the 60 s memory TTL
    assert cache.get("short") is None


def test_bulk_operations(make_tiered: Callable[..., TieredCache]) -> None:
    writer, reader = make_tiered(), make_tiered()
    writer.set_many({f"s{i}": i for i in range(50)})
    delivered(reader, 1)
    assert reader.get_many([f"s{i}" for i in range(50)] + ["nope"]) == {f"s{i}": i for i in range(50)}
    assert reader.get_many(["s1", "s2"]) == {"s1": 1, "s2": 2}
    assert reader.stats()["memory"].hits == 2
    writer.set_many({"s1": 100, "s2": 200})
    wait_for(lambda: reader.get_many(["s1", "s2"]) == {"s1": 100, "s2": 200}, what="bulk invalidation")


def test_writes_invalidate_other_caches(make_tiered: Callable[..., TieredCache], redis_backend: RedisBackend,
                                        namespace: str) -> None:
    a, b = make_tiered(), make_tiered()
    bystander = TieredCache.connect(redis_backend.url, namespace + "-other", prefix=redis_backend.prefix)
    try:
        bystander.set("k", "other namespace")
        a.set("k", 1)
        delivered(b, 1)
        assert b.get("k") == 1 and b.get("k") == 1  # b now holds k in memory
        assert "k" in b.memory
        a.set("k", 2)
        wait_for(lambda: "k" not in b.memory, what="b's memory entry to be invalidated")
        assert b.get("k") == 2
        assert b.stats()["memory"].invalidations == 1
        a.delete("k")
        wait_for(lambda: b.get("k", "gone") == "gone", what="delete to reach b")
        a.set_many({"x": 1, "y": 2})
        delivered(b, 4)
        assert b.get("x") == 1 and b.get("y") == 2
        a.clear()
        wait_for(lambda: len(b.memory) == 0, what="clear to reach b")
        assert b.get("x") is None
        assert bystander.get("k") == "other namespace" and "k" in bystander.memory
        assert a.stats()["memory"].invalidations == 0  # a ignores its own messages
    finally:
        bystander.clear()
        bystander.close()


class Worker:
    """A TieredCache in another OS process, driven over pipes."""

    def __init__(self, backend: RedisBackend, namespace: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rrr_platform_tests.integration.cluster.tiered_worker", backend.url,
             backend.prefix, namespace],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.read() == {"ready": True}

    def read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        assert line, f"worker exited with {self.process.poll()}"
        return orjson.loads(line)

    def call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        self.process.stdin.write(orjson.dumps({"op": op, **kwargs}).decode() + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write('{"op": "exit"}\n')
            self.process.stdin.flush()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def test_cross_process_invalidation(make_tiered: Callable[..., TieredCache], redis_backend: RedisBackend,
                                    namespace: str) -> None:
    here = make_tiered()
    worker = Worker(redis_backend, namespace)
    try:
        assert worker.call("stats")["memory_active"] is True
        # this process writes; the other caches the value in its memory tier
        here.set("price", 100)
        wait_for(lambda: worker.call("stats")["received"] == 1, what="the worker to get the first message")
        assert worker.call("get", key="price") == {"value": 100}
        assert worker.call("get", key="price") == {"value": 100}
        assert worker.call("stats")["memory"]["hits"] == 1
        # a new write here must reach the other process's memory tier (its memory TTL is 60 s)
        here.set("price", 101)
        wait_for(lambda: worker.call("get", key="price") == {"value": 101}, what="worker to see 101")
        assert worker.call("stats")["memory"]["invalidations"] == 1
        # and the other way round
        assert here.get("price") == 101
        wait_for(lambda: here.get("price") == 101 and "price" in here.memory, what="101 in memory here")
        worker.call("set", key="price", value=102)
        wait_for(lambda: "price" not in here.memory, what="this process's entry to be invalidated")
        assert here.get("price") == 102
        worker.call("delete", key="price")
        wait_for(lambda: here.get("price", "gone") == "gone", what="delete from the worker")
        here.set("a", 1)
        assert worker.call("get", key="a") == {"value": 1}
        here.clear()
        wait_for(lambda: worker.call("stats")["memory"]["size"] == 0, what="clear to reach the worker")
        assert worker.call("get", key="a") == {"value": None}
    finally:
        worker.close()
    assert worker.process.returncode == 0


def _kill_connections(url: str, client_name: str, cluster: bool) -> int:
    """CLIENT KILL every connection named ``client_name`` on every node (only this test's)."""
    killed = 0
    if cluster:
        admin = redis.cluster.RedisCluster.from_url(url)
        nodes = [node.redis_connection for node in admin.get_primaries()]
    else:
        admin = redis.Redis.from_url(url)
        nodes = [admin]
    for node in nodes:
        for info in node.client_list():
            if info.get("name") == client_name:
                killed += int(node.client_kill_filter(_id=info["id"]))
    admin.close()
    return killed


def test_listener_reconnects_and_clears_memory_after_losing_redis(
    redis_backend: RedisBackend, namespace: str, make_tiered: Callable[..., TieredCache],
) -> None:
    client_name = f"rrr-test-listener-{uuid.uuid4().hex[:8]}"
    client = redis_client(redis_backend.url, client_name=client_name)
    cache = TieredCache(MemoryCache(100, 60.0), RedisCache(client, namespace, prefix=redis_backend.prefix))
    other = make_tiered()
    try:
        assert cache.wait_ready(10)
        cache.set("k", 1)
        assert cache.get("k") == 1 and "k" in cache.memory
        assert _kill_connections(redis_backend.url, client_name, redis_backend.cluster) >= 1
        wait_for(lambda: cache.listener.reconnects >= 1, what="the listener to notice the drop")
        wait_for(lambda: cache.memory_active, what="the listener to resubscribe")
        assert "k" not in cache.memory  # whatever was missed while away is forgotten
        assert cache.get("k") == 1 and "k" in cache.memory
        other.set("k", 2)  # invalidations flow again after the reconnect
        wait_for(lambda: cache.get("k") == 2, what="invalidation after reconnect")
    finally:
        cache.close()


def test_redis_down_degrades_to_misses_without_raising() -> None:
    (port,) = _free_ports(1)  # nothing listens there
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=0.2,
                         retry=Retry(NoBackoff(), 0))
    cache = TieredCache(MemoryCache(10, 60.0), RedisCache(client, "down", prefix="rrr-test-down:"))
    try:
        assert not cache.wait_ready(0.3)
        cache.set("k", 1)  # logged and counted, not raised
        assert cache.get("k", "miss") == "miss"
        assert cache.get_many(["k"]) == {}
        assert "k" not in cache.memory and not cache.memory_active
        assert cache.stats()["redis"].errors == 3
        assert cache.listener.reconnects >= 1
    finally:
        cache.close()


async def test_async_tiered_cache_with_single_flight(redis_backend: RedisBackend, namespace: str) -> None:
    cache = AsyncTieredCache.connect(redis_backend.url, namespace, prefix=redis_backend.prefix)
    sync_peer = TieredCache.connect(redis_backend.url, namespace, prefix=redis_backend.prefix)
    try:
        assert await cache.ready(10)
        calls = 0

        @memoize_async(cache, key=lambda model, symbol: f"pred:{model}:{symbol}", ttl=30)
        async def predict(model: str, symbol: str) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return {"model": model, "symbol": symbol, "p_up": Decimal("0.5123")}

        results = await asyncio.gather(*(predict("direction", "BTC-USD") for _ in range(25)))
        assert calls == 1 and all(r["p_up"] == Decimal("0.5123") for r in results)
        assert await predict("direction", "BTC-USD") == results[0] and calls == 1
        assert cache.stats()["memory"].hits >= 1
        assert sync_peer.get("pred:direction:BTC-USD") == results[0]  # shared through Redis
        sync_peer.set("pred:direction:BTC-USD", {"p_up": Decimal("0.9")})
        deadline = time.monotonic() + 5
        while "pred:direction:BTC-USD" in cache.memory and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert await cache.get("pred:direction:BTC-USD") == {"p_up": Decimal("0.9")}
        await cache.set_many({"a": 1, "b": 2})
        assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
        assert await cache.delete("a") == 1
        assert await cache.clear() >= 2
    finally:
        sync_peer.close()
        await cache.aclose()


def test_from_settings_uses_the_configured_url_and_prefix(redis_url: str, redis_prefix: str,
                                                          tmp_path: Path) -> None:
    from rrr_platform.settings import load_settings

    settings = load_settings(home=tmp_path, redis_url=redis_url, redis_prefix=redis_prefix)
    with TieredCache.from_settings(settings, "from-settings") as cache:
        cache.set("k", 1)
        assert cache.redis.redis_key("k") == f"{redis_prefix}cache:{{from-settings}}:k"
        assert cache.redis.client.exists(f"{redis_prefix}cache:{{from-settings}}:k") == 1
        cache.clear()


def test_a_read_overtaken_by_a_write_elsewhere_is_not_kept_in_memory(
    make_tiered: Callable[..., TieredCache], redis_backend: RedisBackend, namespace: str,
) -> None:
    """The race the generation counter closes: this process reads v1 from Redis, another process
    writes v2 and its invalidation arrives before this read finishes. Keeping v1 in memory would
    serve a stale value for the whole memory TTL."""
    writer = make_tiered()
    writer.set("k", "v1")

    class SlowRead(RedisCache):
        def get(self, key: Any, default: Any = None) -> Any:
            value = super().get(key, default)  # v1, read for real
            received = reader.invalidations_received
            writer.set("k", "v2")
            wait_for(lambda: reader.invalidations_received > received, what="the invalidation")
            return value

    client = redis_client(redis_backend.url)
    reader = TieredCache(MemoryCache(10, 60.0), SlowRead(client, namespace, prefix=redis_backend.prefix))
    try:
        assert reader.wait_ready(10)
        assert reader.get("k") == "v1"  # the answer of a read that began before the write
        assert "k" not in reader.memory
        assert RedisCache.get(reader.redis, "k") == "v2"
    finally:
        reader.close()
