"""Caching: memory (cachetools), Redis, and tiered (memory in front of Redis, invalidated over pub/sub).

The platform's Redis key layout lives in ``keys``.
"""

from rrr_platform.cache.codec import CacheSerializationError, register_struct
from rrr_platform.cache.keys import RedisKeys
from rrr_platform.cache.memoize import SingleFlight, memoize_async
from rrr_platform.cache.memory import MISSING, CacheStats, MemoryCache
from rrr_platform.cache.metrics import register_cache_metrics
from rrr_platform.cache.redis import AsyncRedisCache, RedisCache, async_redis_client, redis_client
from rrr_platform.cache.tiered import AsyncTieredCache, TieredCache

__all__ = [
    "MISSING",
    "AsyncRedisCache",
    "AsyncTieredCache",
    "CacheSerializationError",
    "CacheStats",
    "MemoryCache",
    "RedisCache",
    "RedisKeys",
    "SingleFlight",
    "TieredCache",
    "async_redis_client",
    "memoize_async",
    "redis_client",
    "register_cache_metrics",
    "register_struct",
]
