"""Redis cache: TTL, exact serialization, one namespace per cache, bulk get/set; sync and asyncio.

Keys are ``<prefix>cache:{<namespace>}:<key>`` (``keys.RedisKeys.cache``): the namespace is the hash
tag, so every key of one cache lives in one Redis Cluster slot and MGET, multi-key DEL and pipelines
work unchanged on a cluster. The same class takes a ``redis.Redis`` or a ``redis.cluster.RedisCluster``
(``redis_client(url)`` picks the right one by asking the server).

A value that cannot be encoded raises ``CacheSerializationError``. Bytes that cannot be decoded (a
corrupt or foreign entry) are logged, counted as an error, deleted, and read as a miss. Redis errors
propagate: the tiered cache decides how to degrade.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from rrr_platform.cache import codec
from rrr_platform.cache.keys import DEFAULT_PREFIX, RedisKeys
from rrr_platform.cache.memory import CacheStats

log = logging.getLogger(__name__)

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

_GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def is_cluster(url: str) -> bool:
    """Whether the server at ``url`` runs in cluster mode (asked once, at connect time)."""
    with redis.Redis.from_url(url, socket_connect_timeout=5) as probe:
        return bool(probe.info("cluster").get("cluster_enabled"))


def redis_client(url: str, *, cluster: bool | None = None, **kwargs: Any) -> SyncClient:
    """A sync client for ``url``: a ``RedisCluster`` when the server is a cluster node."""
    if cluster if cluster is not None else is_cluster(url):
        return redis.cluster.RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def async_redis_client(url: str, *, cluster: bool | None = None, **kwargs: Any) -> AsyncClient:
    """An asyncio client for ``url``: a ``RedisCluster`` when the server is a cluster node."""
    if cluster if cluster is not None else is_cluster(url):
        return redis.asyncio.cluster.RedisCluster.from_url(url, **kwargs)
    return redis.asyncio.Redis.from_url(url, **kwargs)


def _to_px(ttl: float | None) -> int | None:
    if ttl is None:
        return None
    if not ttl > 0:
        raise ValueError(f"ttl must be positive seconds or None, got {ttl}")
    return max(1, round(ttl * 1000))


class _RedisCacheBase:
    """Key layout, TTL defaults and counters shared by the sync and asyncio caches."""

    def __init__(self, namespace: str, *, prefix: str = DEFAULT_PREFIX, ttl: float | None = 300.0,
                 name: str = "redis") -> None:
        _to_px(ttl)  # validate early
        self.namespace = namespace
        self.prefix = prefix
        self.default_ttl = ttl
        self.name = name
        self._key_prefix = RedisKeys(prefix).cache_namespace(namespace)
        self._counts_lock = threading.Lock()
        self._counts = dict.fromkeys(("hits", "misses", "sets", "deletes", "errors"), 0)

    def redis_key(self, key: Hashable) -> str:
        """The Redis key of cache key ``key`` (str, int or other value with a stable ``str()``)."""
        return self._key_prefix + (key if isinstance(key, str) else str(key))

    def _px(self, ttl: float | None) -> int | None:
        return _to_px(self.default_ttl if ttl is None else ttl)

    def _count(self, name: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += n

    def _decode(self, redis_key: str, raw: bytes) -> tuple[bool, Any]:
        try:
            return True, codec.decode(raw)
        except codec.CacheSerializationError as exc:
            log.warning("dropping undecodable cache entry %s: %s", redis_key, exc)
            self._count("errors")
            return False, None

    def _pattern(self) -> str:
        return self._key_prefix.translate(_GLOB_SPECIAL) + "*"

    def stats(self) -> CacheStats:
        with self._counts_lock:
            return CacheStats(tier=self.name, **self._counts)

    def reset_stats(self) -> None:
        with self._counts_lock:
            self._counts = dict.fromkeys(self._counts, 0)


class RedisCache(_RedisCacheBase):
    """Sync Redis cache of one namespace. ``ttl=None`` stores without expiry."""

    def __init__(self, client: SyncClient, namespace: str, *, prefix: str = DEFAULT_PREFIX,
                 ttl: float | None = 300.0, name: str = "redis") -> None:
        super().__init__(namespace, prefix=prefix, ttl=ttl, name=name)
        self.client = client

    def get(self, key: Hashable, default: Any = None) -> Any:
        redis_key = self.redis_key(key)
        raw = self.client.get(redis_key)
        if raw is None:
            self._count("misses")
            return default
        ok, value = self._decode(redis_key, raw)
        if not ok:
            self.client.delete(redis_key)
            self._count("misses")
            return default
        self._count("hits")
        return value

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        self.client.set(self.redis_key(key), codec.encode(value), px=self._px(ttl))
        self._count("sets")

    def delete(self, *keys: Hashable) -> int:
        if not keys:
            return 0
        removed = int(self.client.delete(*[self.redis_key(k) for k in keys]))
        self._count("deletes", removed)
        return removed

    def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, Any]:
        """The cached subset of ``keys``, in one MGET (one slot: the namespace is the hash tag)."""
        keys = list(keys)
        if not keys:
            return {}
        redis_keys = [self.redis_key(k) for k in keys]
        found: dict[Hashable, Any] = {}
        corrupt: list[str] = []
        for key, redis_key, raw in zip(keys, redis_keys, self.client.mget(redis_keys), strict=True):
            if raw is None:
                continue
            ok, value = self._decode(redis_key, raw)
            if ok:
                found[key] = value
            else:
                corrupt.append(redis_key)
        if corrupt:
            self.client.delete(*corrupt)
        self._count("hits", len(found))
        self._count("misses", len(keys) - len(found))
        return found

    def set_many(self, items: Mapping[Hashable, Any], ttl: float | None = None) -> None:
        """Store every item with one TTL, in one pipelined round trip."""
        if not items:
            return
        px = self._px(ttl)
        encoded = [(self.redis_key(k), codec.encode(v)) for k, v in items.items()]  # all or nothing
        pipe = self.client.pipeline(transaction=False)
        for redis_key, raw in encoded:
            pipe.set(redis_key, raw, px=px)
        pipe.execute()
        self._count("sets", len(items))

    def ttl(self, key: Hashable) -> float | None:
        """Seconds left for ``key``; None if it has no expiry or does not exist."""
        ms = int(self.client.pttl(self.redis_key(key)))
        return ms / 1000 if ms >= 0 else None

    def __contains__(self, key: Hashable) -> bool:
        return bool(self.client.exists(self.redis_key(key)))

    def clear(self) -> int:
        """Delete every key of this namespace; returns how many."""
        removed = 0
        batch: list[bytes] = []
        for redis_key in self.client.scan_iter(match=self._pattern(), count=1000):
            batch.append(redis_key)
            if len(batch) >= 500:
                removed += int(self.client.delete(*batch))
                batch.clear()
        if batch:
            removed += int(self.client.delete(*batch))
        self._count("deletes", removed)
        return removed


class AsyncRedisCache(_RedisCacheBase):
    """The asyncio twin of ``RedisCache`` (``redis.asyncio`` client, standalone or cluster)."""

    def __init__(self, client: AsyncClient, namespace: str, *, prefix: str = DEFAULT_PREFIX,
                 ttl: float | None = 300.0, name: str = "redis") -> None:
        super().__init__(namespace, prefix=prefix, ttl=ttl, name=name)
        self.client = client
        # redis-py's asyncio RedisCluster initializes itself lazily on first use, and concurrent
        # first commands race inside it (AttributeError on a half-made connection, redis 8.1):
        # the first caller initializes it under a lock while the others wait.
        self._ready = not isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._init_lock: asyncio.Lock | None = None

    async def _ensure_ready(self) -> None:
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if not self._ready:
                await self.client.initialize()
                self._ready = True

    async def get(self, key: Hashable, default: Any = None) -> Any:
        if not self._ready:
            await self._ensure_ready()
        redis_key = self.redis_key(key)
        raw = await self.client.get(redis_key)
        if raw is None:
            self._count("misses")
            return default
        ok, value = self._decode(redis_key, raw)
        if not ok:
            await self.client.delete(redis_key)
            self._count("misses")
            return default
        self._count("hits")
        return value

    async def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        if not self._ready:
            await self._ensure_ready()
        await self.client.set(self.redis_key(key), codec.encode(value), px=self._px(ttl))
        self._count("sets")

    async def delete(self, *keys: Hashable) -> int:
        if not self._ready:
            await self._ensure_ready()
        if not keys:
            return 0
        removed = int(await self.client.delete(*[self.redis_key(k) for k in keys]))
        self._count("deletes", removed)
        return removed

    async def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, Any]:
        if not self._ready:
            await self._ensure_ready()
        keys = list(keys)
        if not keys:
            return {}
        redis_keys = [self.redis_key(k) for k in keys]
        found: dict[Hashable, Any] = {}
        corrupt: list[str] = []
        for key, redis_key, raw in zip(keys, redis_keys, await self.client.mget(redis_keys), strict=True):
            if raw is None:
                continue
            ok, value = self._decode(redis_key, raw)
            if ok:
                found[key] = value
            else:
                corrupt.append(redis_key)
        if corrupt:
            await self.client.delete(*corrupt)
        self._count("hits", len(found))
        self._count("misses", len(keys) - len(found))
        return found

    async def set_many(self, items: Mapping[Hashable, Any], ttl: float | None = None) -> None:
        if not self._ready:
            await self._ensure_ready()
        if not items:
            return
        px = self._px(ttl)
        encoded = [(self.redis_key(k), codec.encode(v)) for k, v in items.items()]
        pipe = self.client.pipeline(transaction=False)
        for redis_key, raw in encoded:
            pipe.set(redis_key, raw, px=px)
        await pipe.execute()
        self._count("sets", len(items))

    async def ttl(self, key: Hashable) -> float | None:
        if not self._ready:
            await self._ensure_ready()
        ms = int(await self.client.pttl(self.redis_key(key)))
        return ms / 1000 if ms >= 0 else None

    async def contains(self, key: Hashable) -> bool:
        if not self._ready:
            await self._ensure_ready()
        return bool(await self.client.exists(self.redis_key(key)))

    async def clear(self) -> int:
        if not self._ready:
            await self._ensure_ready()
        removed = 0
        batch: list[bytes] = []
        async for redis_key in self.client.scan_iter(match=self._pattern(), count=1000):
            batch.append(redis_key)
            if len(batch) >= 500:
                removed += int(await self.client.delete(*batch))
                batch.clear()
        if batch:
            removed += int(await self.client.delete(*batch))
        self._count("deletes", removed)
        return removed
