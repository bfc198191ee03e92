"""MemoryCache: expiry, LRU eviction order, counters, and thread safety under contention."""

from __future__ import annotations

import random
import threading

import pytest

from rrr_platform.cache.memory import MISSING, MemoryCache


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_entry_expires_after_its_ttl() -> None:
    clock = ManualClock()
    cache = MemoryCache(maxsize=10, ttl=5.0, timer=clock)
    cache.set("a", 1)
    cache.set("b", 2, ttl=1.0)
    clock.advance(0.999)
    assert cache.get("a") == 1 and cache.get("b") == 2
    clock.advance(0.001)
    assert cache.get("b", MISSING) is MISSING  # per-entry TTL
    assert cache.get("a") == 1
    clock.advance(4.0)
    assert cache.get("a", "gone") == "gone"
    assert len(cache) == 0
    stats = cache.stats()
    assert stats.expirations == 2 and stats.evictions == 0
    assert (stats.hits, stats.misses) == (3, 2)


def test_expiry_with_the_real_clock() -> None:
    import time

    cache = MemoryCache(maxsize=10, ttl=0.05)
    cache.set("k", "v")
    assert cache.get("k") == "v"
    time.sleep(0.08)
    assert cache.get("k") is None


def test_cached_none_is_told_apart_from_a_miss() -> None:
    cache = MemoryCache(maxsize=2, ttl=10)
    cache.set("none", None)
    assert cache.get("none", MISSING) is None
    assert cache.get("absent", MISSING) is MISSING


def test_eviction_is_least_recently_used_first() -> None:
    cache = MemoryCache(maxsize=3, ttl=60)
    for key in "abc":
        cache.set(key, key.upper())
    assert cache.get("a") == "A"  # a is now the most recently used; b the least
    cache.set("d", "D")
    assert "b" not in cache and set(cache.cached_keys()) == {"a", "c", "d"}
    cache.get("c")
    cache.set("e", "E")  # evicts a (c was read after a)
    assert set(cache.cached_keys()) == {"c", "d", "e"}
    assert cache.stats().evictions == 2


def test_expired_entries_go_before_live_ones_are_evicted() -> None:
    clock = ManualClock()
    cache = MemoryCache(maxsize=2, ttl=10, timer=clock)
    cache.set("short", 1, ttl=1)
    cache.set("long", 2)
    cache.get("short")  # most recently used, but about to expire
    clock.advance(2)
    cache.set("new", 3)
    assert set(cache.cached_keys()) == {"long", "new"}
    stats = cache.stats()
    assert (stats.expirations, stats.evictions) == (1, 0)


def test_bulk_get_and_set_and_counters() -> None:
    cache = MemoryCache(maxsize=100, ttl=60)
    cache.set_many({f"k{i}": i for i in range(10)})
    found = cache.get_many(["k1", "k5", "nope"])
    assert found == {"k1": 1, "k5": 5}
    assert cache.delete("k1") is True and cache.delete("k1") is False
    assert cache.invalidate(["k2", "k3", "absent"]) == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.sets, stats.deletes, stats.invalidations, stats.size) == (
        2, 1, 10, 1, 2, 7)
    assert stats.as_dict()["hit_ratio"] == pytest.approx(2 / 3, abs=1e-4)
    assert cache.clear() == 7 and len(cache) == 0


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        MemoryCache(maxsize=0)
    with pytest.raises(ValueError, match="ttl"):
        MemoryCache(ttl=0)
    cache = MemoryCache()
    with pytest.raises(ValueError, match="ttl"):
        cache.set("k", 1, ttl=-1)


def test_thread_safety_under_contention() -> None:
    """Eight threads hammer a small cache (constant eviction); the bookkeeping must stay exact.

    Unlocked, cachetools' LRU links and size counter race: KeyError from popitem, or a size that
    disagrees with the entries. Here every get is a hit or a miss, the size never passes maxsize,
    and the entries left equal new inserts minus deletes, evictions and expirations.
    """
    maxsize, threads, ops = 64, 8, 6000
    cache = MemoryCache(maxsize=maxsize, ttl=60)
    gets = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        rng = random.Random(index)
        try:
            start.wait()
            for _ in range(ops):
                key = rng.randrange(256)
                action = rng.random()
                if action < 0.6:
                    value = cache.get(key, MISSING)
                    assert value is MISSING or value == key * 2
                    gets[index] += 1
                elif action < 0.9:
                    cache.set(key, key * 2)
                elif action < 0.97:
                    cache.delete(key)
                else:
                    cache.get_many([key, key + 1])
                    gets[index] += 2
                assert len(cache) <= maxsize
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert not errors, errors[:3]
    stats = cache.stats()
    assert stats.hits + stats.misses == sum(gets)
    assert stats.evictions > 0 and stats.hits > 0
    assert stats.size == len(cache.cached_keys()) <= maxsize
    for key in cache.cached_keys():
        assert cache.get(key) == key * 2
