"""The Redis key layout: prefixes, hash tags, and which keys share a Redis Cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from rrr_platform.cache.keys import RedisKeys, hash_tag


def test_layout_matches_the_design() -> None:
    keys = RedisKeys("rrr:")
    assert keys.last("binance_spot", "BTC-USDT") == "rrr:last:{binance_spot:BTC-USDT}"
    assert keys.trades_channel("polygon", "AAPL") == "rrr:trades:{polygon:AAPL}"
    assert keys.trades_stream() == "rrr:stream:trades"
    assert keys.prediction("direction", "ETH-USD") == "rrr:pred:{direction}:ETH-USD"
    assert keys.heartbeat("binance-0") == "rrr:heartbeat:ingest:{binance-0}"
    assert keys.cache("bars", "BTC-USD:2024-01-01") == "rrr:cache:{bars}:BTC-USD:2024-01-01"
    assert keys.cache_invalidation_channel() == "rrr:cache:invalidate"
    assert RedisKeys("test-1:").last("v", "s").startswith("test-1:last:")


def test_keys_that_multi_key_commands_combine_share_a_slot() -> None:
    keys = RedisKeys("rrr:")
    cache_slots = {key_slot(keys.cache("bars", f"k{i}").encode()) for i in range(200)}
    assert len(cache_slots) == 1
    symbols = ("BTC-USD", "ETH-USD", "AAPL")
    prediction_slots = {key_slot(keys.prediction("direction", s).encode()) for s in symbols}
    assert len(prediction_slots) == 1
    assert key_slot(keys.last("binance_spot", "BTC-USDT").encode()) == key_slot(
        keys.trades_channel("binance_spot", "BTC-USDT").encode())
    # different namespaces spread over the cluster rather than all landing on one node
    assert len({key_slot(keys.cache(f"ns{i}", "k").encode()) for i in range(50)}) > 40


def test_hash_tag_extraction_follows_redis_rules() -> None:
    assert hash_tag("rrr:cache:{bars}:a{b}") == "bars"
    assert hash_tag("rrr:stream:trades") == "rrr:stream:trades"
    assert hash_tag("a{}b{c}") == "a{}b{c}"


@pytest.mark.parametrize("bad", ["", "a{b", "c}d"])
def test_parts_that_would_break_the_hash_tag_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="Redis key part"):
        RedisKeys().last("binance_spot", bad)
