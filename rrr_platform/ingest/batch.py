"""A batch: the unit the engine hands to its sinks, and the unit spilled to disk."""

from __future__ import annotations

import msgspec

from rrr_platform.market.types import DeadLetter, Quote, Trade


class Batch(msgspec.Struct, kw_only=True):
    trades: list[Trade] = msgspec.field(default_factory=list)
    quotes: list[Quote] = msgspec.field(default_factory=list)
    dead_letters: list[DeadLetter] = msgspec.field(default_factory=list)
    # Set for REST backfills: their trades are history, and must not move Redis' latest values.
    backfill: bool = False

    def __len__(self) -> int:
        return len(self.trades) + len(self.quotes) + len(self.dead_letters)


BATCH_ENCODER = msgspec.msgpack.Encoder(decimal_format="string")
BATCH_DECODER = msgspec.msgpack.Decoder(Batch)
