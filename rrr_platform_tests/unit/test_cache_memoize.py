"""Async memoization with single-flight."""

from __future__ import annotations

import asyncio

import pytest

from rrr_platform.cache.memoize import SingleFlight, memoize_async
from rrr_platform.cache.memory import MemoryCache


async def test_concurrent_misses_for_one_key_compute_once() -> None:
    calls: list[int] = []
    gate = asyncio.Event()

    @memoize_async(MemoryCache(maxsize=10, ttl=60))
    async def slow_square(x: int) -> int:
        calls.append(x)
        await gate.wait()
        return x * x

    waiters = [asyncio.create_task(slow_square(7)) for _ in range(50)]
    other = asyncio.create_task(slow_square(3))
    await asyncio.sleep(0.01)
    assert slow_square.flight.in_flight() == 2
    gate.set()
    assert await asyncio.gather(*waiters) == [49] * 50
    assert await other == 9
    assert sorted(calls) == [3, 7]
    assert (slow_square.flight.started, slow_square.flight.joined) == (2, 49)
    assert await slow_square(7) == 49  # now a cache hit
    assert calls.count(7) == 1 and slow_square.flight.in_flight() == 0


async def test_an_exception_reaches_every_waiter_and_is_not_cached() -> None:
    attempts = 0
    gate = asyncio.Event()

    @memoize_async(MemoryCache(maxsize=10, ttl=60), key=lambda symbol: f"px:{symbol}")
    async def price(symbol: str) -> float:
        nonlocal attempts
        attempts += 1
        await gate.wait()
        if attempts == 1:
            raise ConnectionError(f"venue down for {symbol}")
        return 101.5

    waiters = [asyncio.create_task(price("BTC-USD")) for _ in range(10)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) and "venue down" in str(r) for r in results)
    assert attempts == 1
    assert price.cache.get("px:BTC-USD") is None
    assert await price("BTC-USD") == 101.5  # retried, not the cached failure
    assert attempts == 2 and price.cache.get("px:BTC-USD") == 101.5


async def test_cancelling_one_waiter_cancels_neither_the_computation_nor_the_others() -> None:
    flight = SingleFlight()
    gate = asyncio.Event()
    runs = 0

    async def compute() -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        return "done"

    first = asyncio.create_task(flight.do("k", compute))
    second = asyncio.create_task(flight.do("k", compute))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert runs == 1


async def test_memoized_values_expire_with_the_cache_ttl() -> None:
    calls = 0

    @memoize_async(MemoryCache(maxsize=10, ttl=60), ttl=0.05)
    async def value() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await value() == 1 and await value() == 1
    await asyncio.sleep(0.08)
    assert await value() == 2
