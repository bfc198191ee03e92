"""The platform's Redis key layout, in one place, as functions of the key prefix.

Every key starts with the settings' ``redis_prefix`` (``rrr:`` by default). The part in braces is the
Redis Cluster hash tag: only it decides the slot, so keys that one multi-key command touches share it.

==============================  =====================================  ==============================
what                            key                                    slot grouping
==============================  =====================================  ==============================
latest trade/quote (hash)       ``rrr:last:{venue:symbol}``            one instrument
trades pub/sub channel          ``rrr:trades:{venue:symbol}``          one instrument
capped trade stream             ``rrr:stream:trades``                  one key
prediction (TTL)                ``rrr:pred:{model}:symbol``            one model: MGET all symbols
live predictions channel        ``rrr:predictions:{model}``            one model
ingest heartbeat (TTL)          ``rrr:heartbeat:ingest:{shard}``       one shard
cache entry                     ``rrr:cache:{namespace}:key``          one namespace: MGET/pipelines
cache invalidation channel      ``rrr:cache:invalidate``               (pub/sub reaches every node)
==============================  =====================================  ==============================
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "rrr:"


def _part(name: str, value: str) -> str:
    # A brace inside a component would move or break the hash tag, and a colon inside a tag-less
    # part would make two layouts collide; reject them with a clear error rather than mis-slot.
    if not value:
        raise ValueError(f"Redis key part {name!r} must not be empty")
    if "{" in value or "}" in value:
        raise ValueError(f"Redis key part {name!r} must not contain braces: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Key builder for one prefix: ``RedisKeys(settings.redis_prefix).last("binance_spot", "BTC-USDT")``."""

    prefix: str = DEFAULT_PREFIX

    def last(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}last:{{{_part('venue', venue)}:{_part('symbol', symbol)}}}"

    def trades_channel(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}trades:{{{_part('venue', venue)}:{_part('symbol', symbol)}}}"

    def trades_channel_pattern(self) -> str:
        """PSUBSCRIBE pattern matching every instrument's trades channel."""
        return f"{self.prefix}trades:*"

    def trades_stream(self) -> str:
        return f"{self.prefix}stream:trades"

    def prediction(self, model: str, symbol: str) -> str:
        return f"{self.prefix}pred:{{{_part('model', model)}}}:{_part('symbol', symbol)}"

    def predictions_channel(self, model: str) -> str:
        """Pub/sub channel of the live scorer: every closed bar's predictions of ``model``."""
        return f"{self.prefix}predictions:{{{_part('model', model)}}}"

    def heartbeat(self, shard: str) -> str:
        return f"{self.prefix}heartbeat:ingest:{{{_part('shard', shard)}}}"

    def cache(self, namespace: str, key: str) -> str:
        return f"{self.cache_namespace(namespace)}{key}"

    def cache_namespace(self, namespace: str) -> str:
        """The common start of every cache key of ``namespace`` (for SCAN MATCH ``...*``)."""
        return f"{self.prefix}cache:{{{_part('namespace', namespace)}}}:"

    def cache_invalidation_channel(self) -> str:
        return f"{self.prefix}cache:invalidate"


def hash_tag(key: str) -> str:
    """The part of ``key`` that Redis Cluster hashes (the first non-empty ``{...}``, else the key)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key
