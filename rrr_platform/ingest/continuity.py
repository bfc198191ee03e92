"""Gap detection from sequence numbers (exchange-protocols.md 4.5).

Only gapless sequences can reveal a gap: trade ids per instrument (Binance, Coinbase Exchange) and
Coinbase Advanced Trade's per-connection ``sequence_num``. Instrument scopes survive reconnects and
restarts (the engine seeds them with the last stored id), so trades missed while disconnected show up
as one gap on the first trade after the reconnect. Connection scopes reset with every connection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Gap:
    venue: str
    symbol: str
    scope: str  # "instrument" | "connection"
    first_missing: int
    last_missing: int
    gap_id: int | None = None  # its market.gaps row, once recorded

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1


class ContinuityTracker:
    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self.out_of_order = 0

    def seed(self, venue: str, symbol: str, last_seq: int) -> None:
        """Start from what is already stored, so a restart detects what it missed while down."""
        key = (venue, symbol)
        if last_seq > self._last.get(key, -1):
            self._last[key] = last_seq

    def reset_connection(self, connection_id: str) -> None:
        for key in [k for k in self._last if k[0] == f"conn:{connection_id}"]:
            del self._last[key]

    def observe(self, venue: str, symbol: str, scope: str, seq: int, connection_id: str = "") -> Gap | None:
        """Record ``seq``; return the gap it reveals, if any. Repeats and late arrivals are no gap."""
        key = (venue, symbol) if scope == "instrument" else (f"conn:{connection_id}", "")
        last = self._last.get(key)
        if last is None:
            self._last[key] = seq
            return None
        if seq == last + 1:
            self._last[key] = seq
            return None
        if seq <= last:
            self.out_of_order += 1
            return None
        self._last[key] = seq
        return Gap(venue, symbol, scope, last + 1, seq - 1)

    def last(self, venue: str, symbol: str) -> int | None:
        return self._last.get((venue, symbol))
