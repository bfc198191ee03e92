"""Venue adapters: subscribe messages, pure ``parse(frame) -> ParseResult``, REST history clients.

Each of ``binance``, ``coinbase`` (Exchange feed; Advanced Trade via ``parse_advanced_trade``) and
``polygon`` exposes ``VENUE``, ``ws_url``, ``subscribe_messages``, ``parse`` and ``RestClient``.
"""

from __future__ import annotations

from types import ModuleType

from rrr_platform.market.types import BINANCE, COINBASE, POLYGON


def module_for(venue: str) -> ModuleType:
    """The adapter module of a venue constant (``market.types.BINANCE`` ...)."""
    from rrr_platform.venues import binance, coinbase, polygon

    modules = {BINANCE: binance, COINBASE: coinbase, POLYGON: polygon}
    try:
        return modules[venue]
    except KeyError:
        raise ValueError(f"no adapter for venue {venue!r}; expected one of {sorted(modules)}") from None
