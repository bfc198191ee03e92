"""Ingest metrics per venue and symbol: counters and latency percentiles.

Counters and latency histograms live in a Prometheus registry of the engine's own (several engines
can run in one process, e.g. in tests), served on an optional HTTP port. Prometheus histograms only
give bucketed quantiles, so each latency also keeps a fixed ring of recent samples from which exact
percentiles are computed for `snapshot()` (Dagster observations, benchmarks, `rrr ingest`).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

COUNTERS = (
    "frames",
    "received",
    "stored",
    "rejected",
    "duplicates",
    "reconnects",
    "gaps",
    "backfilled",
    "quotes_stored",
    "redis_dropped",
    "spilled",
)
LATENCIES = ("exchange_to_receive", "receive_to_redis", "receive_to_committed")
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class LatencyRing:
    """The last ``size`` samples (seconds); enough for stable p99 without unbounded memory."""

    size: int = 65_536
    values: np.ndarray = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        self.values = np.zeros(self.size, dtype=np.float64)

    def add_many(self, samples: np.ndarray) -> None:
        n = len(samples)
        if n >= self.size:
            self.values[:] = samples[-self.size :]
        else:
            start = self.count % self.size
            first = min(n, self.size - start)
            self.values[start : start + first] = samples[:first]
            self.values[: n - first] = samples[first:]
        self.count += n

    def percentiles(self, qs: tuple[float, ...] = (50, 99)) -> dict[str, float]:
        filled = self.values[: min(self.count, self.size)]
        if not len(filled):
            return {}
        return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(filled, qs), strict=True)}


class IngestMetrics:
    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.registry = CollectorRegistry()
        self._counters = {
            name: Counter(
                f"rrr_ingest_{name}", f"ingest {name}", ["shard", "venue", "symbol"], registry=self.registry
            )
            for name in COUNTERS
        }
        self._histograms = {
            name: Histogram(
                f"rrr_ingest_{name}_seconds",
                f"latency {name}",
                ["shard", "venue"],
                buckets=_BUCKETS,
                registry=self.registry,
            )
            for name in LATENCIES
        }
        self._lock = threading.Lock()
        # Plain dict mirrors: cheap to read for snapshots and accounting checks.
        self.totals: dict[str, dict[tuple[str, str], int]] = {name: defaultdict(int) for name in COUNTERS}
        self.rings: dict[str, LatencyRing] = {name: LatencyRing() for name in LATENCIES}

    def inc(self, name: str, venue: str, symbol: str = "", amount: int = 1) -> None:
        if amount <= 0:
            return
        with self._lock:
            self.totals[name][(venue, symbol)] += amount
        self._counters[name].labels(self.shard, venue, symbol).inc(amount)

    def observe_latencies(self, name: str, venue: str, seconds: np.ndarray) -> None:
        if not len(seconds):
            return
        with self._lock:
            self.rings[name].add_many(seconds)
        hist = self._histograms[name].labels(self.shard, venue)
        # Histogram.observe per sample is the cost here; a stride keeps it bounded at high rates
        # while the ring keeps every sample for exact percentiles.
        for value in seconds[:: max(1, len(seconds) // 64)]:
            hist.observe(float(value))

    def total(self, name: str, venue: str | None = None, symbol: str | None = None) -> int:
        with self._lock:
            return sum(
                v
                for (ven, sym), v in self.totals[name].items()
                if (venue is None or ven == venue) and (symbol is None or sym == symbol)
            )

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            counters = {name: sum(per.values()) for name, per in self.totals.items()}
            by_symbol: dict[str, dict[str, int]] = defaultdict(dict)
            for name, per in self.totals.items():
                for (venue, symbol), value in per.items():
                    if symbol:
                        by_symbol[f"{venue}:{symbol}"][name] = value
            latency = {name: ring.percentiles() for name, ring in self.rings.items()}
        return {"shard": self.shard, "counters": counters, "latency_s": latency, "by_symbol": dict(by_symbol)}

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
