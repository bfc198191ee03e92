"""Helpers for tests, demos and benchmarks: a market model whose history starts yesterday.

The default model chains its days from ``MarketConfig.start_ns`` (months ago), so the first request
for "now" generates every day since then (tens of seconds for all instruments). Starting the chain
at yesterday's UTC midnight makes a fresh model answer for "now" in well under a second while
keeping every property (same seed, same data; consecutive trade ids; REST = streams).
"""

from __future__ import annotations

import time
from functools import lru_cache

from rrr_platform.market.timeutil import NS_PER_DAY
from rrr_platform.simulator.model import MarketConfig, MarketModel


def recent_market_config(seed: int = 7, signal: str = "none", **kwargs: object) -> MarketConfig:
    today = time.time_ns() // NS_PER_DAY * NS_PER_DAY
    return MarketConfig(seed=seed, signal=signal, start_ns=today - NS_PER_DAY, **kwargs)  # type: ignore[arg-type]


@lru_cache(maxsize=8)
def shared_model(seed: int = 7, signal: str = "none", trade_rate_scale: float = 1.0) -> MarketModel:
    """One model per (seed, signal, rate) per process: its caches are shared by every server using it."""
    return MarketModel(recent_market_config(seed, signal, trade_rate_scale=trade_rate_scale))
