"""The platform's default shards: one ingest process per venue."""

from __future__ import annotations

from dataclasses import replace

from rrr_platform.ingest.config import FeedConfig, ShardConfig
from rrr_platform.market.types import BINANCE, COINBASE, POLYGON
from rrr_platform.settings import Settings


def default_shards(settings: Settings) -> dict[str, ShardConfig]:
    bases = settings.crypto_base_list
    polygon_feeds = [FeedConfig(POLYGON, tuple(f"{b}-USD" for b in bases))]
    if settings.equity_list:
        polygon_feeds.append(
            FeedConfig(POLYGON, tuple(settings.equity_list), ws_url=settings.polygon_stocks_ws_url)
        )
    shards = [
        ShardConfig("binance", (FeedConfig(BINANCE, tuple(f"{b}-USDT" for b in bases)),)),
        ShardConfig("coinbase", (FeedConfig(COINBASE, tuple(f"{b}-USD" for b in bases)),)),
        ShardConfig("polygon", tuple(polygon_feeds)),
    ]
    return {shard.name: shard for shard in shards}


def shard_by_name(settings: Settings, name: str, **overrides: object) -> ShardConfig:
    shards = default_shards(settings)
    if name not in shards:
        raise ValueError(f"unknown shard {name!r}; expected one of {sorted(shards)}")
    return replace(shards[name], **overrides) if overrides else shards[name]
