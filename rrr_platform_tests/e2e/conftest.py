from __future__ import annotations

from pathlib import Path

from rrr_platform.settings import Settings, load_settings
from rrr_platform.simulator.server import SimulatorServer


def simulator_settings(
    sim: SimulatorServer,
    home: Path,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    **overrides: object,
) -> Settings:
    """Settings whose every venue endpoint is the given simulator."""
    return load_settings(
        home=home,
        postgres_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        binance_ws_url=sim.url("binance"),
        binance_rest_url=sim.rest_url("binance"),
        coinbase_ws_url=sim.url("coinbase"),
        coinbase_rest_url=sim.rest_url("coinbase"),
        polygon_ws_url=sim.url("polygon"),
        polygon_stocks_ws_url=sim.url("polygon", "stocks"),
        polygon_rest_url=sim.rest_url("polygon"),
        **overrides,
    )
