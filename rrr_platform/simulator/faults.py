"""Fault injection and accounting of what the simulator sent.

A ``FaultSpec`` describes what goes wrong on a connection (or on REST). It is set at start
(``SimulatorConfig.faults`` / ``rrr simulate --faults``), or at run time for new connections of a
venue (``SimulatorServer.set_faults``, ``POST /_sim/faults``) or for one live connection.

``Accounting`` records per venue and symbol every trade id streamed, skipped by a fault, duplicated,
and every malformed frame with its raw text, so a test can compute exactly what a correct client
must end up with: streamed ids + skipped ids backfilled over REST, malformed frames dead-lettered.
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MALFORMED_KINDS = (
    "bad_json",
    "wrong_type",
    "missing_field",
    "negative_price",
    "nan_price",
    "absurd_timestamp",
)


@dataclass
class FaultSpec:
    venue: str | None = None  # None: every venue
    apply_to_next: int | None = None  # only the next N new connections (None: all of them)
    drop_after: int | None = None  # close the socket (no close frame) after N data frames
    ignore_pings: bool = False  # neither answer client pings nor send server pings
    silent_after: int | None = None  # after N data frames send nothing more, keep the socket open
    malformed_every: int | None = None  # every Nth trade frame is preceded by a malformed copy
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS  # cycled through in this order
    duplicate_every: int | None = None  # every Nth data frame is sent twice
    skip_every: int | None = None  # every Nth trade is not sent (stays available over REST)
    burst_interval_s: float | None = None  # hold data back this long, then release it...
    burst_rate: float | None = None  # ...at this many frames per second (None: all at once)
    rest_delay_s: float = 0.0  # every REST answer waits this long
    rest_fail_every: int | None = None  # every Nth REST request fails
    rest_fail_status: int = 503

    def __post_init__(self) -> None:
        bad = [k for k in self.malformed_kinds if k not in MALFORMED_KINDS]
        if bad:
            raise ValueError(f"unknown malformed kinds {bad}; choose from {MALFORMED_KINDS}")
        self.malformed_kinds = tuple(self.malformed_kinds)
        for name in (
            "drop_after",
            "silent_after",
            "malformed_every",
            "duplicate_every",
            "skip_every",
            "rest_fail_every",
            "apply_to_next",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def any_stream_fault(self) -> bool:
        return any(
            getattr(self, n)
            for n in (
                "drop_after",
                "ignore_pings",
                "silent_after",
                "malformed_every",
                "duplicate_every",
                "skip_every",
                "burst_interval_s",
            )
        )

    @staticmethod
    def from_dict(data: dict[str, Any]) -> FaultSpec:
        known = {f.name for f in fields(FaultSpec)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        if "malformed_kinds" in values:
            kinds = values["malformed_kinds"]
            values["malformed_kinds"] = tuple(kinds.split("+") if isinstance(kinds, str) else kinds)
        return FaultSpec(**values)

    @staticmethod
    def parse(text: str) -> FaultSpec:
        """CLI form: ``venue=binance_spot,drop_after=100,malformed_kinds=bad_json+nan_price``."""
        data: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            if not sep:
                data[key] = True
                continue
            data[key] = _parse_scalar(raw)
        return FaultSpec.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["malformed_kinds"] = list(self.malformed_kinds)
        return out


def _parse_scalar(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null", ""):
        return None
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw


@dataclass(frozen=True)
class MalformSyntax:
    """Where a venue's trade frame keeps its price and time, to corrupt them by text substitution."""

    price_re: re.Pattern[str]
    price_is_string: bool
    time_re: re.Pattern[str]
    absurd_time: str


def malform(frame: str, kind: str, syntax: MalformSyntax) -> str:
    """A corrupted copy of a trade frame. Text-level edits keep every other byte as the venue sends it."""
    if kind == "bad_json":
        return frame[: max(1, len(frame) // 2)]
    m = syntax.price_re.search(frame)
    if m is None:
        return frame[: max(1, len(frame) // 2)]
    key, value = m.group(1), m.group(2)
    bare = value.strip('"')
    if kind == "wrong_type":
        new = f"{key}{bare}" if syntax.price_is_string else f'{key}"{bare}"'
    elif kind == "missing_field":
        start, end = m.span()
        if frame[end : end + 1] == ",":
            return frame[:start] + frame[end + 1 :]
        return frame[:start].rstrip(",") + frame[end:]
    elif kind == "negative_price":
        new = f'{key}"-{bare}"' if syntax.price_is_string else f"{key}-{bare}"
    elif kind == "nan_price":
        new = f'{key}"NaN"' if syntax.price_is_string else f"{key}NaN"
    elif kind == "absurd_timestamp":
        return syntax.time_re.sub(lambda t: t.group(1) + syntax.absurd_time, frame, count=1)
    else:
        raise ValueError(kind)
    return frame[: m.start()] + new + frame[m.end() :]


class IdRanges:
    """A set of integer ids kept as sorted disjoint [first, last] ranges (streams are mostly runs)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, value: int) -> None:
        starts, ends = self._starts, self._ends
        if ends and ends[-1] + 1 == value:  # the common case: the next id of a run
            ends[-1] = value
            return
        i = bisect.bisect_right(starts, value) - 1
        if i >= 0 and value <= ends[i]:
            return
        joins_left = i >= 0 and ends[i] + 1 == value
        joins_right = i + 1 < len(starts) and starts[i + 1] - 1 == value
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = value
        elif joins_right:
            starts[i + 1] = value
        else:
            starts.insert(i + 1, value)
            ends.insert(i + 1, value)

    def __iter__(self) -> Any:
        for a, b in zip(self._starts, self._ends, strict=True):
            yield from range(a, b + 1)

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in zip(self._starts, self._ends, strict=True))

    def ranges(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self._starts, self._ends, strict=True)]


@dataclass
class SymbolAccount:
    streamed: IdRanges = field(default_factory=IdRanges)  # trade ids sent at least once, well formed
    skipped: IdRanges = field(default_factory=IdRanges)  # trade ids withheld by skip_every
    duplicated: list[int] = field(default_factory=list)  # trade ids of frames sent twice (one per extra)
    malformed: list[dict[str, Any]] = field(default_factory=list)  # {"kind", "raw", "trade_ids", "conn"}
    frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "streamed": self.streamed.ranges(),
            "streamed_count": len(self.streamed),
            "skipped": list(self.skipped),
            "duplicated": list(self.duplicated),
            "malformed": list(self.malformed),
            "frames": self.frames,
        }


class Accounting:
    """Thread-safe (the server may run in a thread of a test process while the test reads stats)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], SymbolAccount] = {}
        self.connections: dict[str, dict[str, Any]] = {}
        self.rest_requests = 0
        self.rest_failures = 0
        self.rate_limited = 0

    def _acc(self, venue: str, symbol: str) -> SymbolAccount:
        key = (venue, symbol)
        acc = self._by_key.get(key)
        if acc is None:
            acc = self._by_key[key] = SymbolAccount()
        return acc

    def streamed(self, venue: str, symbol: str, trade_ids: list[int]) -> None:
        with self._lock:
            acc = self._acc(venue, symbol)
            acc.frames += 1
            for t in trade_ids:
                acc.streamed.add(t)

    def skipped(self, venue: str, symbol: str, trade_id: int) -> None:
        with self._lock:
            self._acc(venue, symbol).skipped.add(trade_id)

    def duplicated(self, venue: str, symbol: str, trade_ids: list[int]) -> None:
        with self._lock:
            self._acc(venue, symbol).duplicated.extend(trade_ids)

    def malformed(
        self, venue: str, symbol: str, kind: str, raw: str, trade_ids: list[int], conn: str
    ) -> None:
        with self._lock:
            self._acc(venue, symbol).malformed.append(
                {"kind": kind, "raw": raw, "trade_ids": list(trade_ids), "conn": conn}
            )

    def account(self, venue: str, symbol: str) -> SymbolAccount:
        with self._lock:
            return self._acc(venue, symbol)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            venues: dict[str, dict[str, Any]] = {}
            for (venue, symbol), acc in self._by_key.items():
                venues.setdefault(venue, {})[symbol] = acc.to_dict()
            return {
                "venues": venues,
                "connections": {k: dict(v) for k, v in self.connections.items()},
                "rest": {
                    "requests": self.rest_requests,
                    "failures": self.rest_failures,
                    "rate_limited": self.rate_limited,
                },
            }

    def reset(self) -> None:
        with self._lock:
            self._by_key.clear()
            self.connections.clear()
            self.rest_requests = self.rest_failures = self.rate_limited = 0
