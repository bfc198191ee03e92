"""What one ingest process (a shard) reads, and how it batches, buffers and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

from rrr_platform.market.types import BINANCE, COINBASE, POLYGON
from rrr_platform.settings import Settings

CHANNELS = ("trades", "quotes")


@dataclass(frozen=True)
class FeedConfig:
    """One WebSocket connection: a venue and the canonical symbols it carries."""

    venue: str
    symbols: tuple[str, ...]
    channels: tuple[str, ...] = CHANNELS
    ws_url: str | None = None  # None: the venue's URL from settings
    rest_url: str | None = None
    ws_query: str = ""  # extra query parameters for the socket URL (e.g. the simulator's rate mode)

    def __post_init__(self) -> None:
        if self.venue not in VENUE_SETTINGS:
            raise ValueError(f"unknown venue {self.venue!r}; expected one of {sorted(VENUE_SETTINGS)}")
        if not self.symbols:
            raise ValueError(f"feed {self.venue} has no symbols")
        bad = set(self.channels) - set(CHANNELS)
        if bad:
            raise ValueError(f"unknown channel(s) {sorted(bad)}; expected {CHANNELS}")

    def urls(self, settings: Settings) -> tuple[str, str]:
        ws_attr, rest_attr = VENUE_SETTINGS[self.venue]
        return self.ws_url or getattr(settings, ws_attr), self.rest_url or getattr(settings, rest_attr)

    def module(self) -> ModuleType:
        from rrr_platform.venues import binance, coinbase, polygon

        return {BINANCE: binance, COINBASE: coinbase, POLYGON: polygon}[self.venue]


VENUE_SETTINGS = {
    BINANCE: ("binance_ws_url", "binance_rest_url"),
    COINBASE: ("coinbase_ws_url", "coinbase_rest_url"),
    POLYGON: ("polygon_ws_url", "polygon_rest_url"),
}


@dataclass(frozen=True)
class ShardConfig:
    name: str
    feeds: tuple[FeedConfig, ...]
    batch_size: int = 5_000  # records; a batch flushes at this size...
    batch_age_ms: float = 50.0  # ...or this age, whichever comes first (bounded latency)
    max_buffered_records: int = 500_000  # in memory while PostgreSQL is slow, then spilled to disk
    idle_timeout_s: float = 30.0  # no frame for this long on an open socket: reconnect
    ping_interval_s: float | None = 10.0  # our pings; an unanswered one drops the connection
    heartbeat_interval_s: float = 1.0
    heartbeat_ttl_s: float = 10.0
    max_clock_skew_s: float = 300.0  # exchange time this far from receive time is implausible
    max_backfill_ids: int = 200_000  # a larger gap is recorded, not backfilled
    max_reconcile_s: float = 3600.0  # venues without ids: a restart refetches at most this far back
    capture: bool = False
    metrics_port: int | None = None
    pg_writer_tasks: int = 2
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "-" in self.name or "/" in self.name:
            raise ValueError(f"shard name {self.name!r}: use letters, digits and underscores")
        if not self.feeds:
            raise ValueError("a shard needs at least one feed")
