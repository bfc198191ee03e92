"""Synthetic trades for the storage tests and benchmarks: a seeded random walk with exact decimals.

Timestamps are drawn so that some trades share a nanosecond (ties exercise the open/close order)
and prices have 2 decimals, sizes 6, as on a crypto venue.
"""

from __future__ import annotations

import random
from decimal import Decimal

from rrr_platform.market.types import Trade


def synthetic_trades(
    venue: str,
    symbol: str,
    start_ns: int,
    span_ns: int,
    count: int,
    seed: int = 0,
    first_id: int = 0,
    base_price: int = 50_000,
    is_replay: bool = False,
) -> list[Trade]:
    """``count`` trades spread over [start_ns, start_ns + span_ns), in time order, ids from ``first_id``."""
    rng = random.Random(seed)
    times = sorted(start_ns + rng.randrange(span_ns) for _ in range(count))
    for i in range(1, count, 7):  # every 7th trade shares its neighbour's nanosecond
        times[i] = times[i - 1]
    cents = base_price * 100
    trades = []
    for i, ts in enumerate(times):
        cents = max(1, cents + rng.randint(-50, 50))
        trades.append(
            Trade(
                venue=venue,
                symbol=symbol,
                venue_symbol=symbol.replace("-", ""),
                trade_id=str(first_id + i),
                price=Decimal(cents).scaleb(-2),
                size=Decimal(rng.randint(1, 2_000_000)).scaleb(-6),
                aggressor="BUY" if rng.random() < 0.5 else "SELL",
                exchange_ts_ns=ts,
                receive_ts_ns=ts + 2_000_000,
                is_replay=is_replay,
            )
        )
    return trades
