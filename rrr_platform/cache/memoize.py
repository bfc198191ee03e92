"""Async memoization with single-flight: concurrent misses for one key run the computation once.

The first caller of a missing key starts the computation as its own task; later callers for the same
key await that task (through ``asyncio.shield``, so one caller's cancellation cancels neither the
computation nor the other callers). A result is cached; an exception reaches every waiter and is not
cached, so the next call tries again. Written by hand because no maintained library offers
single-flight on asyncio together with a pluggable (memory, Redis, tiered) cache.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ParamSpec, Protocol, TypeVar

from rrr_platform.cache.memory import MISSING

P = ParamSpec("P")
R = TypeVar("R")


class SingleFlight:
    """Deduplicates concurrent computations by key within one event loop."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[Any]] = {}
        self.started = 0  # computations actually run
        self.joined = 0  # callers that waited on someone else's computation

    def in_flight(self) -> int:
        return len(self._running)

    async def do(self, key: Hashable, compute: Callable[[], Awaitable[R]]) -> R:
        task = self._running.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(compute())
            self._running[key] = task
            self.started += 1
            task.add_done_callback(functools.partial(self._finished, key))
        else:
            self.joined += 1
        return await asyncio.shield(task)

    def _finished(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: if every waiter was cancelled, asyncio would log it


class SupportsCache(Protocol):
    def get(self, key: Any, default: Any = None) -> Any: ...
    def set(self, key: Any, value: Any, ttl: float | None = None) -> Any: ...


def _default_key(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    return (func.__qualname__, args, tuple(sorted(kwargs.items())))


def memoize_async(
    cache: SupportsCache,
    *,
    ttl: float | None = None,
    key: Callable[..., Hashable] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Cache an async function's results in ``cache`` (memory, Redis or tiered; sync or async API).

    ``key(*args, **kwargs)`` builds the cache key; by default the function's name with its
    arguments (which must then be hashable, and for Redis-backed caches also ``str()``-able to a
    stable key: pass ``key`` there). The wrapper has ``.flight`` (its ``SingleFlight``) and
    ``.cache``.
    """
    cache_get_is_async = inspect.iscoroutinefunction(cache.get)
    cache_set_is_async = inspect.iscoroutinefunction(cache.set)

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        flight = SingleFlight()

        async def compute_and_store(cache_key: Hashable, args: Any, kwargs: Any) -> R:
            value = await func(*args, **kwargs)
            if cache_set_is_async:
                await cache.set(cache_key, value, ttl)
            else:
                cache.set(cache_key, value, ttl)
            return value

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            cache_key = key(*args, **kwargs) if key is not None else _default_key(func, args, kwargs)
            if cache_get_is_async:
                cached = await cache.get(cache_key, MISSING)
            else:
                cached = cache.get(cache_key, MISSING)
            if cached is not MISSING:
                return cached
            return await flight.do(cache_key, lambda: compute_and_store(cache_key, args, kwargs))

        wrapper.flight = flight  # type: ignore[attr-defined]
        wrapper.cache = cache  # type: ignore[attr-defined]
        return wrapper

    return decorate
