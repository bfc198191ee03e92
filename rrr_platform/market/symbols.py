"""Canonical symbols (exchange-protocols.md 4.2): crypto ``BASE-QUOTE``, equities as Polygon prints them.

Quote assets are matched longest first, so ``BTCUSDT`` splits as BTC/USDT, not BTCUSD/T. A venue's
``exchangeInfo`` is the authority where available; this table covers what the platform trades.
"""

from __future__ import annotations

from functools import lru_cache

QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "GBP", "USD", "BTC", "ETH", "BNB")


class UnknownSymbol(ValueError):
    pass


@lru_cache(maxsize=4096)
def split_concatenated(venue_symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` -> (``BTC``, ``USDT``); Binance stream and payload symbols have no separator."""
    upper = venue_symbol.upper()
    for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)], quote
    raise UnknownSymbol(f"cannot split {venue_symbol!r} into base and quote")


@lru_cache(maxsize=4096)
def canonical_from_concatenated(venue_symbol: str) -> str:
    base, quote = split_concatenated(venue_symbol)
    return f"{base}-{quote}"


def concatenated(symbol: str) -> str:
    """``BTC-USDT`` -> ``BTCUSDT`` (Binance's form)."""
    return symbol.replace("-", "").upper()


def polygon_rest_ticker(symbol: str) -> str:
    """``BTC-USD`` -> ``X:BTCUSD``; equities are unchanged."""
    return f"X:{concatenated(symbol)}" if "-" in symbol else symbol


def canonical_from_polygon_rest(ticker: str) -> str:
    if ticker.startswith("X:"):
        return canonical_from_concatenated(ticker[2:])
    return ticker
