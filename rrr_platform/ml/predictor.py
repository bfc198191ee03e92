"""The async predictor: live features -> the best model that can answer -> a cached prediction.

Tiers, best first:

1. ``champion``: the version the registry's ``champion`` alias points at;
2. ``previous``: the champion before it, from ``ml.alias_history`` (PostgreSQL), loaded from the
   registry or, when the registry is down, from this machine's model cache;
3. ``baseline``: the best baseline of the latest promotion decision (its parameters are in
   ``ml.alias_history``), or the 50/50 prior when there is none.

A corrupt artifact, a missing version, a registry that is down, or a model whose inputs differ from
the live feature columns (schema change) each knock out one tier: logged, counted in ``stats``,
never raised to the caller. Models load once (compiled trees, ``inference.FastModel``) and reload
when the promotion publishes an alias move on Redis (and on a slow poll, as pub/sub may drop).

Predictions are cached in memory (``cache.MemoryCache``) and in Redis (``pred:{model}:symbol``) with
a TTL. Live features are ``features.live_features`` over the latest bars of the symbol, computed
once per new bar (the bar closes once a minute; computing them costs tens of ms in pandas, so each
bar's row is kept until the next bar arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import psycopg
import redis
import redis.asyncio as aioredis

from rrr_platform.cache.keys import RedisKeys
from rrr_platform.cache.memory import MemoryCache
from rrr_platform.market.timeutil import NS_PER_MIN, ns_to_datetime
from rrr_platform.ml import promotion
from rrr_platform.ml.baselines import DirectionBaseline
from rrr_platform.ml.inference import FastModel
from rrr_platform.ml.registry import (
    DIRECTION_MODEL,
    MODEL_FILE,
    LoadedModel,
    Registry,
    RegistryError,
    load_model_file,
)

log = logging.getLogger(__name__)

TIERS = ("champion", "previous", "baseline")
SENTIMENT_WINDOW_NS = 240 * NS_PER_MIN  # the longest news window of the features (sent_decay_240)
PRIOR_BASELINE = DirectionBaseline("prior", None, 0.5, 0.5)


@dataclass(frozen=True, slots=True)
class Prediction:
    symbol: str
    value: float
    model: str
    version: str
    tier: str
    bar_ts_ns: int  # start of the latest bar the features came from
    made_at_ns: int

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(frozen=True, slots=True)
class LiveRow:
    bar_ts_ns: int
    features: np.ndarray  # float32, in ``columns`` order
    baseline_inputs: dict[str, float]


class FeatureSource(Protocol):
    columns: list[str]

    def latest(self, symbol: str) -> LiveRow | None: ...


class PostgresFeatureSource:
    """Live features of the latest bar of ``venue:symbol`` from ``market.bars_1m`` and ``market.news``.

    Synchronous (called in a worker thread): one connection guarded by a lock. A feature row is kept
    per symbol until a newer bar shows up.
    """

    def __init__(self, postgres_url: str, venue: str = "binance_spot", horizon: int = 1) -> None:
        from rrr_platform.ml import features as feat

        self._feat = feat
        self.columns: list[str] = list(feat.FEATURE_COLUMNS)
        self.venue = venue
        self.horizon = horizon
        self._url = postgres_url
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._rows: dict[str, LiveRow] = {}
        self._instruments: list[tuple[str, str]] | None = None
        self.computed = 0

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def latest(self, symbol: str, before_ns: int | None = None) -> LiveRow | None:
        """Features of the newest bar (starting before ``before_ns`` when given: live scoring of a
        just-closed minute must not see the next minute's partial bar)."""
        with self._lock:
            conn = self._connection()
            row = conn.execute(
                "SELECT (extract(epoch FROM ts) * 1000000)::bigint * 1000 FROM market.bars_1m "
                "WHERE venue = %s AND symbol = %s AND ts < coalesce(%s, 'infinity'::timestamptz)"
                " ORDER BY ts DESC LIMIT 1",
                (self.venue, symbol, None if before_ns is None else ns_to_datetime(before_ns)),
            ).fetchone()
            if row is None:
                return None
            last_ns = int(row[0])
            cached = self._rows.get(symbol)
            if cached is not None and cached.bar_ts_ns == last_ns:
                return cached
            from rrr_platform.ml.sentiment import load_news, news_key

            # the same base asset on other venues feeds cross_venue_spread, as in training
            if self._instruments is None:
                self._instruments = [
                    (str(v), str(s))
                    for v, s in conn.execute(
                        "SELECT DISTINCT venue, symbol FROM market.bars_1m "
                        "WHERE ts > now() - interval '7 days' "
                        "OR ts > (SELECT max(ts) - interval '7 days' FROM market.bars_1m)"
                    ).fetchall()
                ]
            key = news_key(symbol)
            related = sorted({s for _, s in self._instruments if news_key(s) == key} | {symbol})
            window = self._feat.LIVE_WINDOW_MINUTES * NS_PER_MIN
            bars = self._feat.load_bars(conn, last_ns - window + NS_PER_MIN, last_ns + NS_PER_MIN, related)
            news = load_news(
                conn, ns_to_datetime(last_ns - SENTIMENT_WINDOW_NS), ns_to_datetime(last_ns + NS_PER_MIN)
            )
            live = self._feat.live_features(bars, news)
            self.computed += 1
            live = live[(live["venue"] == self.venue) & (live["symbol"] == symbol)]
            if live.empty:
                return None
            record = live.iloc[-1]
            values = record[self.columns].to_numpy(dtype=np.float32)
            ret_1 = float(record.get("ret_1", np.nan))
            mom_column = f"ret_{self.horizon}"
            mom = float(record[mom_column]) if mom_column in record.index else ret_1
            out = LiveRow(
                last_ns, values, {"ret_1": ret_1, "mom": mom, "rv_60": float(record.get("rv_60", np.nan))}
            )
            self._rows[symbol] = out
            return out


@dataclass
class _Tier:
    name: str
    version: str
    fast: FastModel | None = None
    baseline: DirectionBaseline | None = None

    def predict(self, live: LiveRow, kind: str, horizon: int) -> float:
        if self.fast is not None:
            value = self.fast.predict_one(live.features)
            # the volatility model predicts variance (see train.training_label)
            return value if kind == "direction" else float(np.sqrt(max(value, 0.0)))
        assert self.baseline is not None
        if kind == "volatility":  # last-hour realised volatility per minute, scaled to the horizon
            return float(live.baseline_inputs["rv_60"] * np.sqrt(horizon / 60))
        signal = live.baseline_inputs.get(self.baseline.column or "", None)
        return float(self.baseline.predict(signal if signal is not None and np.isfinite(signal) else 0.0))


class Predictor:
    def __init__(
        self,
        *,
        tracking_uri: str,
        postgres_url: str,
        feature_source: FeatureSource,
        model: str = DIRECTION_MODEL,
        redis_url: str | None = None,
        redis_prefix: str = "rrr:",
        cache_dir: Path,
        compiled_dir: Path | None = None,
        ttl_s: float = 30.0,
        poll_s: float = 60.0,
        compile_trees: bool = True,
        horizon: int | None = None,
        kind: str | None = None,
    ) -> None:
        self.model = model
        self.kind = kind or ("direction" if model == DIRECTION_MODEL else "volatility")
        self.tracking_uri = tracking_uri
        self.postgres_url = postgres_url
        self.features = feature_source
        self.redis_url = redis_url
        self.keys = RedisKeys(redis_prefix)
        self.prefix = redis_prefix
        self.cache_dir = Path(cache_dir)
        self.compiled_dir = Path(compiled_dir) if compiled_dir else self.cache_dir / "compiled"
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.compile_trees = compile_trees
        # label horizon in bars: the volatility baseline scales to it
        self.horizon = horizon or (1 if self.kind == "direction" else 15)
        self.memory = MemoryCache(maxsize=10_000, ttl=ttl_s, name=f"pred-{model}")
        self.stats: Counter[str] = Counter()
        self.last_errors: dict[str, str] = {}
        self._tiers: list[_Tier] = []
        self._redis: aioredis.Redis | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Predictor:
        if self.redis_url:
            self._redis = aioredis.Redis.from_url(
                self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        await self.reload("start")
        if self._redis is not None:
            self._watch_task = asyncio.create_task(
                self._watch_aliases(), name=f"predictor-watch-{self.model}"
            )
        return self

    async def close(self) -> None:
        # redis-py's pubsub.get_message(timeout=...) can swallow a cancellation, so the watcher also
        # checks a flag, and close() waits for it only a bounded time.
        self._closing = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.wait({self._watch_task}, timeout=5.0)
        if self._redis is not None:
            await self._redis.aclose()
        close = getattr(self.features, "close", None)
        if close is not None:
            await asyncio.to_thread(close)

    async def __aenter__(self) -> Predictor:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def tier(self) -> str:
        return self._tiers[0].name if self._tiers else "baseline"

    @property
    def version(self) -> str:
        return self._tiers[0].version if self._tiers else "prior"

    # ------------------------------------------------------------------ loading
    def _fault(self, tier: str, kind: str, exc: BaseException | str) -> None:
        self.stats[f"fallback.{tier}.{kind}"] += 1
        self.last_errors[tier] = str(exc)
        log.warning("%s %s tier unavailable (%s): %s", self.model, tier, kind, exc)

    def _classify(self, exc: BaseException) -> str:
        text = str(exc).lower()
        if "signature mismatch" in text:
            return "signature_mismatch"
        if "corrupt" in text:
            return "corrupt_artifact"
        if any(s in text for s in ("not found", "does not exist", "resource_does_not_exist", "no such")):
            return "missing_version"
        return "registry_down"

    def _fast(self, loaded: LoadedModel, tier: str) -> _Tier:
        if loaded.feature_columns != list(self.features.columns):
            raise RegistryError(
                f"signature mismatch: v{loaded.version} takes {loaded.feature_columns}, "
                f"live features are {self.features.columns}"
            )
        fast = FastModel(loaded.booster, self.compiled_dir, compile_trees=self.compile_trees, nthread=1)
        return _Tier(tier, loaded.version, fast=fast)

    def _local(self, version: str) -> LoadedModel:
        """A version already downloaded to this machine (used when the registry cannot be reached)."""
        folder = self.cache_dir / "models" / self.model / version
        path = next(folder.rglob(MODEL_FILE), None) if folder.exists() else None
        features_file = folder / "features.txt"
        if path is None or not features_file.exists():
            raise RegistryError(f"registry unreachable and v{version} is not in the local model cache")
        return load_model_file(self.model, version, path, features_file.read_text().split())

    def _load_tiers(self) -> list[_Tier]:
        tiers: list[_Tier] = []
        recorded = previous = baseline_params = None
        try:
            with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=3) as conn:
                recorded = promotion.recorded_champion(conn, self.model)
                previous = promotion.previous_champion(conn, self.model)
                baseline_params = promotion.latest_best_baseline(conn, self.model)
        except psycopg.Error as exc:
            self._fault("previous", "postgres_down", exc)
        registry: Registry | None = None
        champion_version: str | None = None
        try:
            registry = Registry(self.tracking_uri)
            champion_version = registry.alias_version(self.model, promotion.CHAMPION)
        except Exception as exc:  # registry down: unreachable, refused, broken store
            registry = None
            self._fault("champion", "registry_down", exc)
        if registry is not None and champion_version is None:
            # the history names a champion the registry no longer has: its version was deleted
            kind = "missing_version" if recorded is not None else "no_champion"
            self._fault("champion", kind, f"no version has the champion alias (history: v{recorded})")
        if registry is not None and champion_version is not None:
            try:
                loaded = registry.load(self.model, champion_version, self.cache_dir / "models")
                tiers.append(self._fast(loaded, "champion"))
            except Exception as exc:
                self._fault("champion", self._classify(exc), exc)
        if previous is not None and previous != champion_version:
            try:
                loaded = (
                    registry.load(self.model, previous, self.cache_dir / "models")
                    if registry is not None
                    else self._local(previous)
                )
                tiers.append(self._fast(loaded, "previous"))
            except Exception as exc:
                self._fault("previous", self._classify(exc), exc)
        elif previous is None:
            self.stats["fallback.previous.none_recorded"] += 1
        baseline = PRIOR_BASELINE
        if baseline_params and self.kind == "direction" and "p_pos" in baseline_params:
            baseline = DirectionBaseline.from_params(baseline_params)
        tiers.append(_Tier("baseline", f"baseline:{baseline.name}", baseline=baseline))
        return tiers

    async def reload(self, reason: str = "") -> str:
        """(Re)load every tier; returns the tier that now answers first."""
        async with self._reload_lock:
            tiers = await asyncio.to_thread(self._load_tiers)
            self._tiers = tiers
            self.stats["reloads"] += 1
            self.memory.clear()
            if self._redis is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    keys = [
                        k async for k in self._redis.scan_iter(match=self.keys.prediction(self.model, "*"))
                    ]
                    if keys:
                        await self._redis.delete(*keys)
            log.info("%s serving from %s v%s (%s)", self.model, self.tier, self.version, reason or "reload")
            return self.tier

    async def _watch_aliases(self) -> None:
        """Reload on every alias move published by the promotion; poll the alias too (pub/sub can drop)."""
        assert self._redis is not None
        channel = promotion.alias_channel(self.prefix, self.model)
        while not self._closing:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                next_poll = time.monotonic() + self.poll_s
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        moved = orjson.loads(message["data"])
                        if moved.get("alias") == promotion.CHAMPION:
                            self.stats["alias_moves"] += 1
                            await self.reload(f"champion moved to v{moved.get('version')}")
                    elif time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + self.poll_s
                        await self._poll_alias()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: keep serving, retry the subscription
                self.stats["watch_errors"] += 1
                log.warning("alias watch for %s failed (%s); retrying", self.model, exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _poll_alias(self) -> None:
        def current() -> str | None:
            return Registry(self.tracking_uri).alias_version(self.model, promotion.CHAMPION)

        with contextlib.suppress(Exception):
            version = await asyncio.to_thread(current)
            if version is not None and (self.tier != "champion" or version != self.version):
                await self.reload(f"poll: champion is v{version}")

    # ------------------------------------------------------------------ predicting
    async def predict(self, symbol: str) -> Prediction | None:
        """The prediction for ``symbol``'s latest bar; None only when the symbol has no bars at all."""
        hit = self.memory.get(symbol)
        if hit is not None:
            return hit
        return await self._predict_uncached(symbol)

    async def _predict_uncached(self, symbol: str) -> Prediction | None:
        key = self.keys.prediction(self.model, symbol)
        if self._redis is not None:
            try:
                raw = await self._redis.get(key)
                if raw is not None:
                    cached = Prediction(**orjson.loads(raw))
                    if cached.version == self.version:
                        self.memory.set(symbol, cached)
                        self.stats["redis_hits"] += 1
                        return cached
            except (redis.RedisError, OSError, TypeError, ValueError) as exc:
                self.stats["redis_errors"] += 1
                log.debug("prediction cache read failed: %s", exc)
        prediction = await self.predict_fresh(symbol)
        if prediction is None:
            return None
        self.memory.set(symbol, prediction)
        if self._redis is not None:
            try:
                await self._redis.set(key, orjson.dumps(prediction.as_dict()), px=int(self.ttl_s * 1000))
            except (redis.RedisError, OSError) as exc:
                self.stats["redis_errors"] += 1
                log.debug("prediction cache write failed: %s", exc)
        return prediction

    async def predict_fresh(self, symbol: str) -> Prediction | None:
        """No cache: live features of the latest bar, then the first tier that answers."""
        try:
            live = await asyncio.to_thread(self.features.latest, symbol)
        except Exception as exc:  # features unavailable: nothing to score, say so once per call
            self.stats["feature_errors"] += 1
            log.warning("no live features for %s: %s", symbol, exc)
            return None
        if live is None:
            return None
        return self.score(symbol, live)

    def score(self, symbol: str, live: LiveRow) -> Prediction:
        """Score one prepared row down the tier chain; the baseline tier always answers."""
        for tier in self._tiers or [_Tier("baseline", "baseline:prior", baseline=PRIOR_BASELINE)]:
            try:
                value = tier.predict(live, self.kind, self.horizon)
            except Exception as exc:
                self._fault(tier.name, "predict_failed", exc)
                continue
            if not np.isfinite(value):
                self._fault(tier.name, "non_finite", f"{value}")
                continue
            self.stats[f"served.{tier.name}"] += 1
            return Prediction(
                symbol, value, self.model, tier.version, tier.name, live.bar_ts_ns, time.time_ns()
            )
        value = float(PRIOR_BASELINE.p_pos)
        return Prediction(
            symbol, value, self.model, "baseline:prior", "baseline", live.bar_ts_ns, time.time_ns()
        )

    async def predict_many(self, symbols: Sequence[str]) -> list[Prediction]:
        results = await asyncio.gather(*(self.predict(s) for s in symbols))
        return [p for p in results if p is not None]


def write_predictions(conn: psycopg.Connection, predictions: Sequence[Prediction]) -> int:
    """Upsert into ``ml.predictions`` (one row per model, symbol and bar time)."""
    rows = [(ns_to_datetime(p.bar_ts_ns), p.symbol, p.model, p.version, p.tier, p.value) for p in predictions]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ml.predictions (ts, symbol, model, version, tier, value) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (model, symbol, ts) DO UPDATE SET "
                "version = EXCLUDED.version, tier = EXCLUDED.tier, "
                "value = EXCLUDED.value",
                rows,
            )
    return len(rows)


def recent_symbols(conn: psycopg.Connection, venue: str, minutes: int = 60) -> list[str]:
    """Symbols of ``venue`` with a bar in the last ``minutes`` before the venue's latest bar."""
    rows = conn.execute(
        "SELECT DISTINCT symbol FROM market.bars_1m WHERE venue = %s AND ts > "
        "(SELECT max(ts) FROM market.bars_1m WHERE venue = %s) - make_interval(mins => %s) ORDER BY 1",
        (venue, venue, minutes),
    ).fetchall()
    return [r[0] for r in rows]


async def score_all(predictor: Predictor, symbols: Sequence[str]) -> list[Prediction]:
    """Fresh (uncached) predictions for every symbol, each from the best tier that answers."""
    results = [await predictor.predict_fresh(s) for s in symbols]
    return [p for p in results if p is not None]


def predict_symbol(
    settings: Any, symbol: str, venue: str = "binance_spot", model: str = DIRECTION_MODEL
) -> tuple[Prediction | None, dict[str, int]]:
    """One prediction through the full predictor (services from ``settings``), for ``rrr predict``."""
    from rrr_platform.services import ensure_services

    urls = ensure_services(settings)

    async def run() -> tuple[Prediction | None, dict[str, int]]:
        predictor = Predictor(
            tracking_uri=settings.mlflow_uri,
            postgres_url=urls.postgres,
            feature_source=PostgresFeatureSource(urls.postgres, venue),
            model=model,
            redis_url=urls.redis,
            redis_prefix=settings.redis_prefix,
            cache_dir=settings.home_dir / "model-cache",
        )
        async with predictor:
            return await predictor.predict(symbol), dict(predictor.stats)

    return asyncio.run(run())
