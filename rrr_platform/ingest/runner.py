"""Run one or more shards in this process until a signal or a deadline (``rrr ingest``, the demo)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import replace

from rrr_platform.ingest.engine import IngestEngine
from rrr_platform.ingest.shards import default_shards
from rrr_platform.settings import Settings


async def run_shards(
    settings: Settings,
    postgres_url: str,
    redis_url: str,
    names: list[str] | None = None,
    *,
    duration_s: float | None = None,
    capture: bool = False,
    metrics_port: int | None = None,
) -> list[dict[str, object]]:
    shards = default_shards(settings)
    unknown = set(names or []) - set(shards)
    if unknown:
        raise ValueError(f"unknown shard(s) {sorted(unknown)}; expected {sorted(shards)}")
    engines = []
    for i, name in enumerate(names or list(shards)):
        shard = replace(
            shards[name], capture=capture, metrics_port=metrics_port + i if metrics_port else None
        )
        engines.append(IngestEngine(shard, settings, postgres_url, redis_url))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: [e.stop() for e in engines])
    tasks = [asyncio.create_task(engine.run()) for engine in engines]
    if duration_s is not None:
        done, _ = await asyncio.wait(tasks, timeout=duration_s)
        if len(done) < len(tasks):
            for engine in engines:
                engine.stop()
    return list(await asyncio.gather(*tasks))
