"""Query timings: count, p50 and p99 per query name, merged across processes.

Each process counts its query latencies in log-spaced buckets (4 per doubling, so a percentile is
known to within ~19%) and adds the counts to ``market.query_timings`` from time to time. Sums of
histograms are the histogram of the union, so any process (``rrr status``) reads percentiles over
every process that ran queries. Hand-written rather than a metrics library because the
percentiles must be readable from another process without a metrics server.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from dataclasses import dataclass

import psycopg

BASE_SECONDS = 10e-6
BUCKETS_PER_DOUBLING = 4
MAX_BUCKET = 127  # ~3.7e4 s: everything slower lands here


def bucket_of(seconds: float) -> int:
    if seconds <= BASE_SECONDS:
        return 0
    return min(MAX_BUCKET, math.ceil(BUCKETS_PER_DOUBLING * math.log2(seconds / BASE_SECONDS)))


def bucket_upper_seconds(bucket: int) -> float:
    return BASE_SECONDS * 2 ** (bucket / BUCKETS_PER_DOUBLING)


@dataclass(frozen=True)
class QueryStat:
    name: str
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


class QueryTimings:
    """In-process latency histograms; ``flush`` adds them to PostgreSQL and starts over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = defaultdict(int)
        self._totals: dict[tuple[str, int], float] = defaultdict(float)

    def record(self, name: str, seconds: float) -> None:
        key = (name, bucket_of(seconds))
        with self._lock:
            self._counts[key] += 1
            self._totals[key] += seconds

    def _take(self) -> list[tuple[str, int, int, float]]:
        with self._lock:
            rows = [(name, b, n, self._totals[(name, b)]) for (name, b), n in self._counts.items()]
            self._counts.clear()
            self._totals.clear()
        return rows

    def _put_back(self, rows: list[tuple[str, int, int, float]]) -> None:
        with self._lock:
            for name, b, n, total in rows:
                self._counts[(name, b)] += n
                self._totals[(name, b)] += total

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    async def flush(self, conn: psycopg.AsyncConnection) -> int:
        """Add the counts to ``market.query_timings``; they are kept for the next flush if this fails."""
        rows = self._take()
        if not rows:
            return 0
        try:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_UPSERT, rows)
        except BaseException:
            self._put_back(rows)
            raise
        return sum(r[2] for r in rows)

    def local_stats(self) -> list[QueryStat]:
        """Percentiles of what this process recorded since its last flush."""
        with self._lock:
            rows = [(name, b, n, self._totals[(name, b)]) for (name, b), n in self._counts.items()]
        return _stats(rows)


_UPSERT = (
    "INSERT INTO market.query_timings AS q (name, bucket, count, total_s) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (name, bucket) DO UPDATE SET count = q.count + excluded.count,"
    " total_s = q.total_s + excluded.total_s, updated_at = now()"
)


def _percentile_ms(buckets: list[tuple[int, int]], total: int, q: float) -> float:
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket, n in sorted(buckets):
        seen += n
        if seen >= rank:
            return bucket_upper_seconds(bucket) * 1e3
    return bucket_upper_seconds(buckets[-1][0]) * 1e3 if buckets else 0.0


def _stats(rows: list[tuple[str, int, int, float]]) -> list[QueryStat]:
    by_name: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for name, b, n, total in rows:
        by_name[name].append((b, n, total))
    out = []
    for name, items in sorted(by_name.items()):
        count = sum(n for _, n, _ in items)
        buckets = [(b, n) for b, n, _ in items]
        out.append(
            QueryStat(
                name=name,
                count=count,
                p50_ms=_percentile_ms(buckets, count, 0.50),
                p99_ms=_percentile_ms(buckets, count, 0.99),
                mean_ms=sum(t for _, _, t in items) / count * 1e3 if count else 0.0,
            )
        )
    return out


def query_stats(conn: psycopg.Connection) -> list[QueryStat]:
    """Count, p50, p99 and mean per query name over every process that flushed timings."""
    rows = conn.execute("SELECT name, bucket, count, total_s FROM market.query_timings").fetchall()
    return _stats([(name, int(b), int(n), float(t)) for name, b, n, t in rows])


def query_stats_lines(url: str) -> list[str]:
    """Lines for ``rrr status``; says why when there is nothing to show instead of failing."""
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            stats = query_stats(conn)
    except psycopg.errors.UndefinedTable:
        return ["queries   (schema not migrated: run `rrr migrate`)"]
    except psycopg.Error as exc:
        return [f"queries   (unavailable: {type(exc).__name__})"]
    if not stats:
        return ["queries   none recorded yet"]
    lines = [f"{'query':<22} {'count':>9} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}"]
    lines += [f"{s.name:<22} {s.count:>9} {s.p50_ms:>9.2f} {s.p99_ms:>9.2f} {s.mean_ms:>9.2f}" for s in stats]
    return lines
