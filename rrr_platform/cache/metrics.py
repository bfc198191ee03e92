"""Cache counters for Prometheus: hits, misses, evictions... per cache and tier, read at scrape time.

A custom collector asks each registered cache for ``stats()`` when Prometheus scrapes, so the hot
path pays nothing beyond the counters the caches already keep.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rrr_platform.cache.memory import CacheStats

COUNTERS = ("hits", "misses", "sets", "deletes", "evictions", "expirations", "invalidations", "errors")


def tier_stats(cache: Any) -> dict[str, CacheStats]:
    """``{tier: CacheStats}`` of a memory, Redis or tiered cache."""
    stats = cache.stats()
    return stats if isinstance(stats, dict) else {stats.tier: stats}


class CacheCollector:
    """Prometheus collector over named caches (held weakly: a dropped cache stops being reported)."""

    def __init__(self) -> None:
        self._caches: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def add(self, name: str, cache: Any) -> None:
        with self._lock:
            self._caches[name] = cache

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{cache: {tier: counters}}``, for logs, Dagster metadata or a status command."""
        with self._lock:
            caches = dict(self._caches)
        return {name: {tier: stats.as_dict() for tier, stats in tier_stats(cache).items()}
                for name, cache in caches.items()}

    def collect(self) -> Iterator[Metric]:
        families = {
            counter: CounterMetricFamily(f"rrr_cache_{counter}", f"Cache {counter} per cache and tier",
                                         labels=["cache", "tier"])
            for counter in COUNTERS
        }
        size = GaugeMetricFamily("rrr_cache_entries", "Entries held in the memory tier",
                                 labels=["cache", "tier"])
        for name, tiers in self.snapshot().items():
            for tier, counters in tiers.items():
                for counter in COUNTERS:
                    families[counter].add_metric([name, tier], counters[counter])
                if counters["size"] is not None:
                    size.add_metric([name, tier], counters["size"])
        yield from families.values()
        yield size


_collectors: dict[int, CacheCollector] = {}
_collectors_lock = threading.Lock()


def register_cache_metrics(name: str, cache: Any, registry: CollectorRegistry = REGISTRY) -> CacheCollector:
    """Report ``cache`` under ``name`` in ``registry`` (one collector per registry, made on first use)."""
    with _collectors_lock:
        collector = _collectors.get(id(registry))
        if collector is None:
            collector = _collectors[id(registry)] = CacheCollector()
            registry.register(collector)
    collector.add(name, cache)
    return collector
