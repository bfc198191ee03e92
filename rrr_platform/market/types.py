"""Normalized market records (exchange-protocols.md section 4).

``msgspec.Struct`` with ``gc=False``: creating one costs about as much as a tuple, which matters at
hundreds of thousands of records a second. Prices and sizes are exact ``Decimal``; every timestamp
is int nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Aggressor = Literal["BUY", "SELL", "UNKNOWN"]
SeqScope = Literal["instrument", "connection", "none"]

BINANCE = "binance_spot"
COINBASE = "coinbase_exchange"
COINBASE_AT = "coinbase_at"
POLYGON = "polygon"
VENUES = (BINANCE, COINBASE, COINBASE_AT, POLYGON)


class Trade(msgspec.Struct, gc=False, kw_only=True):
    venue: str
    symbol: str  # canonical BASE-QUOTE, or the equity ticker
    venue_symbol: str
    trade_id: str
    price: Decimal
    size: Decimal
    aggressor: Aggressor
    exchange_ts_ns: int
    receive_ts_ns: int
    receive_mono_ns: int = 0
    venue_send_ts_ns: int | None = None
    vendor_recv_ts_ns: int | None = None
    seq: int | None = None
    seq_scope: SeqScope = "none"
    gapless: bool = False
    asset_class: str = "crypto_spot"
    source_exchange: str | None = None
    trade_id_kind: Literal["trade", "aggregate"] = "trade"
    venue_side_raw: str | None = None
    conditions: tuple[int, ...] | None = None
    is_replay: bool = False
    connection_id: str = ""


class Quote(msgspec.Struct, gc=False, kw_only=True):
    venue: str
    symbol: str
    venue_symbol: str
    bid_px: Decimal | None
    bid_sz: Decimal | None
    ask_px: Decimal | None
    ask_sz: Decimal | None
    receive_ts_ns: int
    exchange_ts_ns: int | None = None
    receive_mono_ns: int = 0
    venue_send_ts_ns: int | None = None
    vendor_recv_ts_ns: int | None = None
    seq: int | None = None
    seq_scope: SeqScope = "none"
    gapless: bool = False
    asset_class: str = "crypto_spot"
    source_exchange: str | None = None
    bid_exchange: str | None = None
    ask_exchange: str | None = None
    conditions: tuple[int, ...] | None = None
    book_update_id: int | None = None
    connection_id: str = ""

    @property
    def ts_ns(self) -> int:
        return self.exchange_ts_ns if self.exchange_ts_ns is not None else self.receive_ts_ns


class Bar(msgspec.Struct, gc=False, kw_only=True):
    venue: str
    symbol: str
    ts_ns: int  # start of the interval
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    vwap: Decimal | None
    trade_count: int
    buy_volume: Decimal | None = None


# The value columns of a bar, in the order every bar table and frame uses (after its time and key).
BAR_VALUES: tuple[str, ...] = Bar.__struct_fields__[3:]


class DeadLetter(msgspec.Struct, gc=False, kw_only=True):
    """A frame (or one event of it) that could not become a record, kept with the reason."""

    venue: str
    reason: str
    payload: bytes
    receive_ts_ns: int
    connection_id: str = ""


Record = Trade | Quote
