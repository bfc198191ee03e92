"""Tiered cache: a process's memory cache in front of Redis, kept coherent across processes.

Reads try memory, then Redis (filling memory). Writes go to Redis, then memory, then a message on the
invalidation channel (``<prefix>cache:invalidate``: origin id, namespace, keys) that makes every other
process drop those keys from its memory tier; a process ignores its own messages. A background thread
listens (a thread, not an asyncio task, so the sync and asyncio caches share one mechanism).

Coherence rules, because pub/sub delivers at most once:
- memory is used only while the listener is subscribed; when the subscription drops, memory is
  cleared and bypassed until the listener has resubscribed (it reconnects with capped backoff);
- a value read from Redis enters memory only if no invalidation arrived while it was being read
  (a generation counter), so a slow read cannot resurrect a value another process just replaced;
- memory entries never outlive the Redis entry (memory TTL = min(memory_ttl, Redis TTL)).
Redis errors do not escape reads: they count as errors and read as misses; a failed write is logged
and counted, and the memory tier does not keep what others could not be told about.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import redis

from rrr_platform.cache import codec
from rrr_platform.cache.keys import DEFAULT_PREFIX, RedisKeys
from rrr_platform.cache.memory import MISSING, CacheStats, MemoryCache
from rrr_platform.cache.redis import (
    AsyncRedisCache,
    RedisCache,
    SyncClient,
    async_redis_client,
    is_cluster,
    redis_client,
)
from rrr_platform.settings import Settings

log = logging.getLogger(__name__)


def redis_url_for(settings: Settings) -> str:
    """``RRR_REDIS_URL``, or the embedded Redis under ``RRR_HOME`` (started if needed)."""
    if settings.redis_url:
        return settings.redis_url
    from rrr_platform.services import start_embedded_redis  # deferred: only without RRR_REDIS_URL

    return start_embedded_redis(settings)


_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0


class InvalidationListener:
    """Background thread subscribed to the invalidation channel; calls back on messages and on
    (re)subscription and disconnection. Reconnects with capped exponential backoff."""

    def __init__(self, client: SyncClient, channel: str, *, on_message: Any, on_subscribed: Any,
                 on_disconnected: Any, name: str = "rrr-cache-invalidation") -> None:
        self.client = client
        self.channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_disconnected = on_disconnected
        self._stop = threading.Event()
        self.subscribed = threading.Event()
        self.reconnects = 0
        self.messages = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        return self.subscribed.wait(timeout)

    def _run(self) -> None:
        backoff = _BACKOFF_START
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        backoff = _BACKOFF_START
                        self._on_subscribed()
                        self.subscribed.set()
                    elif message["type"] == "message":
                        self.messages += 1
                        self._on_message(message["data"])
            except (redis.RedisError, OSError) as exc:
                if self.subscribed.is_set():
                    log.warning("cache invalidation listener lost Redis (%s); reconnecting", exc)
                self.subscribed.clear()
                self._on_disconnected()
                self.reconnects += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            except Exception:  # a bug in a callback must not kill invalidation for the process
                log.exception("cache invalidation listener failed; restarting it")
                self.subscribed.clear()
                self._on_disconnected()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub.close()
        self.subscribed.clear()


class _TieredBase:
    """Memory tier, invalidation listener and counters shared by the sync and asyncio caches."""

    def __init__(self, memory: MemoryCache, namespace: str, prefix: str, redis_ttl: float | None,
                 listen_client: SyncClient, start: bool) -> None:
        self.memory = memory
        self.namespace = namespace
        self.origin = uuid.uuid4().hex
        self._redis_ttl = redis_ttl
        self.channel = RedisKeys(prefix).cache_invalidation_channel()
        # _generation moves on every invalidation and every (re)subscription; _trusted says whether
        # memory may be used. Both are read without a lock: an int/bool read is atomic under the GIL,
        # and a stale read only makes a value skip memory or memory be bypassed once.
        self._generation = 0
        self._trusted = False
        self._errors = 0
        self.invalidations_received = 0  # messages from other processes for this namespace
        self.listener = InvalidationListener(
            listen_client, self.channel, on_message=self._handle_message,
            on_subscribed=self._handle_subscribed, on_disconnected=self._handle_disconnected,
            name=f"rrr-cache-invalidation-{namespace}",
        )
        if start:
            self.listener.start()

    # -- invalidation ---------------------------------------------------------------------------
    def _handle_message(self, data: bytes) -> None:
        try:
            origin, namespace, keys = codec.decode(data)
        except (codec.CacheSerializationError, TypeError, ValueError) as exc:
            log.warning("ignoring malformed cache invalidation message: %s", exc)
            return
        if origin == self.origin or namespace != self.namespace:
            return
        self._generation += 1
        self.invalidations_received += 1
        if keys is None:
            self.memory.clear()
        else:
            self.memory.invalidate(keys)

    def _handle_subscribed(self) -> None:
        # Messages sent while we were not subscribed are lost: forget everything memory holds.
        self._generation += 1
        self.memory.clear()
        self._trusted = True

    def _handle_disconnected(self) -> None:
        self._trusted = False
        self._generation += 1
        self.memory.clear()

    def _message(self, keys: list[Hashable] | None) -> bytes:
        return codec.encode([self.origin, self.namespace, keys])

    def _memory_ttl(self, ttl: float | None) -> float:
        redis_ttl = self._redis_ttl if ttl is None else ttl
        return self.memory.default_ttl if redis_ttl is None else min(self.memory.default_ttl, redis_ttl)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until the listener is subscribed (memory tier in use); False on timeout."""
        return self.listener.wait_subscribed(timeout)

    @property
    def memory_active(self) -> bool:
        return self._trusted

    def _error(self, what: str, exc: Exception) -> None:
        self._errors += 1
        log.warning("tiered cache %s: Redis %s failed: %s", self.namespace, what, exc)


class TieredCache(_TieredBase):
    """Sync tiered cache of one namespace (memory in front of ``RedisCache``)."""

    def __init__(self, memory: MemoryCache, redis_cache: RedisCache, *, start: bool = True) -> None:
        self.redis = redis_cache
        super().__init__(memory, redis_cache.namespace, redis_cache.prefix, redis_cache.default_ttl,
                         redis_cache.client, start)

    @classmethod
    def connect(cls, url: str, namespace: str, *, prefix: str = DEFAULT_PREFIX, memory_maxsize: int = 10_000,
                memory_ttl: float = 60.0, redis_ttl: float | None = 300.0, cluster: bool | None = None,
                wait: float | None = 10.0) -> TieredCache:
        """Connect to ``url`` (standalone or cluster, detected) and, by default, wait until subscribed."""
        client = redis_client(url, cluster=cluster)
        cache = cls(MemoryCache(memory_maxsize, memory_ttl, name="memory"),
                    RedisCache(client, namespace, prefix=prefix, ttl=redis_ttl))
        if wait is not None and not cache.wait_ready(wait):
            log.warning("tiered cache %s: not subscribed after %.1fs; memory tier bypassed", namespace, wait)
        return cache

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str, **kwargs: Any) -> TieredCache:
        """The configured Redis (or the embedded one under RRR_HOME) with the settings' key prefix."""
        return cls.connect(redis_url_for(settings), namespace, prefix=settings.redis_prefix, **kwargs)

    def get(self, key: Hashable, default: Any = None) -> Any:
        if self._trusted:
            value = self.memory.get(key, MISSING)
            if value is not MISSING:
                return value
        generation = self._generation
        try:
            value = self.redis.get(key, MISSING)
        except redis.RedisError as exc:
            self._error("get", exc)
            return default
        if value is MISSING:
            return default
        if self._trusted and generation == self._generation:
            self.memory.set(key, value, self._memory_ttl(None))
        return value

    def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, Any]:
        keys = list(keys)
        found = self.memory.get_many(keys) if self._trusted else {}
        missing = [k for k in keys if k not in found]
        if missing:
            generation = self._generation
            try:
                from_redis = self.redis.get_many(missing)
            except redis.RedisError as exc:
                self._error("get_many", exc)
                return found
            if from_redis and self._trusted and generation == self._generation:
                self.memory.set_many(from_redis, self._memory_ttl(None))
            found.update(from_redis)
        return found

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        self.set_many({key: value}, ttl)

    def set_many(self, items: Mapping[Hashable, Any], ttl: float | None = None) -> None:
        if not items:
            return
        generation = self._generation
        try:
            if len(items) == 1:
                ((key, value),) = items.items()
                self.redis.set(key, value, ttl)
            else:
                self.redis.set_many(items, ttl)
            self.redis.client.publish(self.channel, self._message(list(items)))
        except redis.RedisError as exc:
            self._error("set", exc)
            for key in items:
                self.memory.delete(key)
            return
        # Another process may have written these keys between our write and now (its invalidation
        # moved the generation): then Redis, not our value, is the truth, and memory stays empty.
        if self._trusted and generation == self._generation:
            self.memory.set_many(items, self._memory_ttl(ttl))

    def delete(self, *keys: Hashable) -> int:
        for key in keys:
            self.memory.delete(key)
        try:
            removed = self.redis.delete(*keys)
            self.redis.client.publish(self.channel, self._message(list(keys)))
        except redis.RedisError as exc:
            self._error("delete", exc)
            return 0
        return removed

    def clear(self) -> int:
        self.memory.clear()
        try:
            removed = self.redis.clear()
            self.redis.client.publish(self.channel, self._message(None))
        except redis.RedisError as exc:
            self._error("clear", exc)
            return 0
        return removed

    def stats(self) -> dict[str, CacheStats]:
        redis_stats = self.redis.stats()
        return {"memory": self.memory.stats(),
                "redis": CacheStats(tier="redis", hits=redis_stats.hits, misses=redis_stats.misses,
                                    sets=redis_stats.sets, deletes=redis_stats.deletes,
                                    errors=redis_stats.errors + self._errors)}

    def close(self) -> None:
        self.listener.stop()
        self.redis.client.close()

    def __enter__(self) -> TieredCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTieredCache(_TieredBase):
    """Asyncio tiered cache: memory in front of ``AsyncRedisCache``; the listener is a sync thread on
    its own client (``listen_client``), so a blocked event loop never delays invalidations."""

    def __init__(self, memory: MemoryCache, redis_cache: AsyncRedisCache, listen_client: SyncClient, *,
                 start: bool = True) -> None:
        self.redis = redis_cache
        super().__init__(memory, redis_cache.namespace, redis_cache.prefix, redis_cache.default_ttl,
                         listen_client, start)

    @classmethod
    def connect(cls, url: str, namespace: str, *, prefix: str = DEFAULT_PREFIX, memory_maxsize: int = 10_000,
                memory_ttl: float = 60.0, redis_ttl: float | None = 300.0,
                cluster: bool | None = None) -> AsyncTieredCache:
        """Build the cache; ``await cache.ready()`` before relying on the memory tier."""
        cluster = is_cluster(url) if cluster is None else cluster
        return cls(MemoryCache(memory_maxsize, memory_ttl, name="memory"),
                   AsyncRedisCache(async_redis_client(url, cluster=cluster), namespace, prefix=prefix,
                                   ttl=redis_ttl),
                   redis_client(url, cluster=cluster))

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str, **kwargs: Any) -> AsyncTieredCache:
        """The configured Redis (or the embedded one under RRR_HOME) with the settings' key prefix."""
        return cls.connect(redis_url_for(settings), namespace, prefix=settings.redis_prefix, **kwargs)

    async def ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.listener.subscribed.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def get(self, key: Hashable, default: Any = None) -> Any:
        if self._trusted:
            value = self.memory.get(key, MISSING)
            if value is not MISSING:
                return value
        generation = self._generation
        try:
            value = await self.redis.get(key, MISSING)
        except redis.RedisError as exc:
            self._error("get", exc)
            return default
        if value is MISSING:
            return default
        if self._trusted and generation == self._generation:
            self.memory.set(key, value, self._memory_ttl(None))
        return value

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, Any]:
        keys = list(keys)
        found = self.memory.get_many(keys) if self._trusted else {}
        missing = [k for k in keys if k not in found]
        if missing:
            generation = self._generation
            try:
                from_redis = await self.redis.get_many(missing)
            except redis.RedisError as exc:
                self._error("get_many", exc)
                return found
            if from_redis and self._trusted and generation == self._generation:
                self.memory.set_many(from_redis, self._memory_ttl(None))
            found.update(from_redis)
        return found

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        await self.set_many({key: value}, ttl)

    async def set_many(self, items: Mapping[Hashable, Any], ttl: float | None = None) -> None:
        if not items:
            return
        generation = self._generation
        try:
            if len(items) == 1:
                ((key, value),) = items.items()
                await self.redis.set(key, value, ttl)
            else:
                await self.redis.set_many(items, ttl)
            await self.redis.client.publish(self.channel, self._message(list(items)))
        except redis.RedisError as exc:
            self._error("set", exc)
            for key in items:
                self.memory.delete(key)
            return
        # Another process may have written these keys between our write and now (its invalidation
        # moved the generation): then Redis, not our value, is the truth, and memory stays empty.
        if self._trusted and generation == self._generation:
            self.memory.set_many(items, self._memory_ttl(ttl))

    async def delete(self, *keys: Hashable) -> int:
        for key in keys:
            self.memory.delete(key)
        try:
            removed = await self.redis.delete(*keys)
            await self.redis.client.publish(self.channel, self._message(list(keys)))
        except redis.RedisError as exc:
            self._error("delete", exc)
            return 0
        return removed

    async def clear(self) -> int:
        self.memory.clear()
        try:
            removed = await self.redis.clear()
            await self.redis.client.publish(self.channel, self._message(None))
        except redis.RedisError as exc:
            self._error("clear", exc)
            return 0
        return removed

    def stats(self) -> dict[str, CacheStats]:
        redis_stats = self.redis.stats()
        return {"memory": self.memory.stats(),
                "redis": CacheStats(tier="redis", hits=redis_stats.hits, misses=redis_stats.misses,
                                    sets=redis_stats.sets, deletes=redis_stats.deletes,
                                    errors=redis_stats.errors + self._errors)}

    async def aclose(self) -> None:
        self.listener.stop()
        self.listener.client.close()
        await self.redis.client.aclose()
