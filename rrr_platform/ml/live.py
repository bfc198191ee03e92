"""Live scoring on each closed bar, alongside the stream.

Just after every minute boundary (plus a grace for the last trades to be committed) the scorer rolls
up the minutes written before the boundary, then scores every symbol whose bar closed at that boundary
through the predictor's tier chain, stores each prediction under ``pred:{model}:symbol`` (the format
the predictor's own cache reads) and publishes them together on ``predictions:{model}``. Symbols with
no trade in the closed minute have no bar and are not scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import orjson
import psycopg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.market.timeutil import NS_PER_MIN, ns_to_datetime
from rrr_platform.ml.predictor import PostgresFeatureSource, Prediction, Predictor
from rrr_platform.storage.rollup import rollup_dirty

log = logging.getLogger(__name__)


class LiveScorer:
    def __init__(
        self,
        predictor: Predictor,
        features: PostgresFeatureSource,
        postgres_url: str,
        redis_url: str,
        prefix: str,
        symbols: Sequence[str],
        *,
        grace_s: float = 2.0,
        ttl_s: float = 120.0,
    ) -> None:
        self.predictor = predictor
        self.features = features
        self.postgres_url = postgres_url
        self.symbols = list(symbols)
        self.keys = RedisKeys(prefix)
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=2)
        self.grace_s = grace_s
        self.ttl_s = ttl_s
        self.scored_minutes = 0

    def _rollup_before(self, boundary_ns: int) -> None:
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            rollup_dirty(conn, until=ns_to_datetime(boundary_ns))

    async def score_closed_minute(self, boundary_ns: int) -> list[Prediction]:
        """Score the bars of the minute that ended at ``boundary_ns`` and publish them."""
        await asyncio.to_thread(self._rollup_before, boundary_ns)
        closed_bar_ns = boundary_ns - NS_PER_MIN
        out = []
        for symbol in self.symbols:
            live = await asyncio.to_thread(self.features.latest, symbol, boundary_ns)
            if live is None or live.bar_ts_ns != closed_bar_ns:
                continue  # no trade in that minute: no bar to score
            out.append(self.predictor.score(symbol, live))
        if out:
            try:
                pipe = self.redis.pipeline(transaction=False)
                for p in out:
                    pipe.set(
                        self.keys.prediction(p.model, p.symbol),
                        orjson.dumps(p.as_dict()),
                        px=int(self.ttl_s * 1000),
                    )
                pipe.publish(
                    self.keys.predictions_channel(out[0].model), orjson.dumps([p.as_dict() for p in out])
                )
                await pipe.execute()
            except (RedisError, OSError) as exc:  # Redis down: predictions are still returned and logged
                log.warning("could not publish %d live predictions: %s", len(out), exc)
        self.scored_minutes += 1
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Score every minute until ``stop`` is set."""
        while not stop.is_set():
            now_ns = time.time_ns()
            boundary_ns = (now_ns // NS_PER_MIN + 1) * NS_PER_MIN
            wait_s = (boundary_ns - now_ns) / 1e9 + self.grace_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
                return
            try:
                predictions = await self.score_closed_minute(boundary_ns)
            except (psycopg.Error, OSError) as exc:  # PostgreSQL away: try again next minute
                log.warning(
                    "live scoring of the minute before %s failed: %s", ns_to_datetime(boundary_ns), exc
                )
                continue
            log.info(
                "scored %d symbol(s) on the bar closed at %s", len(predictions), ns_to_datetime(boundary_ns)
            )

    async def close(self) -> None:
        await self.redis.aclose()
