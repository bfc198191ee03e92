"""Cache counters reach Prometheus per cache and tier."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from rrr_platform.cache.memory import MemoryCache
from rrr_platform.cache.metrics import register_cache_metrics


def test_counters_are_exported_per_cache_and_tier() -> None:
    registry = CollectorRegistry()
    bars = MemoryCache(maxsize=2, ttl=60)
    register_cache_metrics("bars", bars, registry)
    collector = register_cache_metrics("other", MemoryCache(), registry)
    for key in "abc":
        bars.set(key, key)
    bars.get("c")
    bars.get("a")
    text = generate_latest(registry).decode()
    assert 'rrr_cache_hits_total{cache="bars",tier="memory"} 1.0' in text
    assert 'rrr_cache_misses_total{cache="bars",tier="memory"} 1.0' in text
    assert 'rrr_cache_evictions_total{cache="bars",tier="memory"} 1.0' in text
    assert 'rrr_cache_entries{cache="bars",tier="memory"} 2.0' in text
    assert collector.snapshot()["bars"]["memory"]["sets"] == 3
    assert "other" not in collector.snapshot()  # held weakly: the unreferenced cache is gone
