"""Seeded market model: history and live data as a pure function of (seed, config, venue, symbol, time).

Layers (each deterministic, each cached):

1. ``model_world``: one UTC day of every base asset (fair-value path, volatility, order flow, news),
   chained day to day from ``config.start_ns`` (days before it are drawn backwards, anchored to the
   day after).
2. Venue-day bars (``model_trades.venue_day_bars``): the venue's price is the fair value times a small
   mean-reverting basis, on its tick grid; one vectorised pass gives the day's 1-minute OHLCV, trade
   count and buy volume. Trade ids are the cumulative trade count since the start day.
3. Trades (``model_trades.chunk_trades``), drawn on demand one chunk of minutes at a time (an hour, or
   less for very busy instruments) from those minutes' bars, with the chunk's own seed, so they roll up
   to the bars exactly and any request window gives the same trades.

Live streams replay the same functions at wall-clock time, so REST history and streams agree exactly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import numpy as np
from cachetools import LRUCache

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_MIN, datetime_to_ns
from rrr_platform.market.types import BINANCE, COINBASE, POLYGON
from rrr_platform.simulator import model_world as world_mod
from rrr_platform.simulator.model_trades import VenueDay, chunk_trades, venue_day_bars, venue_day_counts
from rrr_platform.simulator.model_world import (
    CRYPTO_ASSETS,
    EQUITY_ASSETS,
    MINUTES_PER_DAY,
    AssetSpec,
    DayWorld,
    WorldState,
)

Signal = Literal["none", "flow", "news"]
DEFAULT_START_NS = datetime_to_ns(dt.datetime(2026, 9, 1, tzinfo=dt.UTC))
SIM_VENUES = (BINANCE, COINBASE, POLYGON)

_TAG_WORLD, _TAG_WORLD_BACK, _TAG_VENUE_DAY, _TAG_CHUNK, _TAG_QUOTE = 1, 2, 3, 4, 5
_CHUNK_TRADES = 100_000  # trades are generated and cached in chunks of about this many at most
_CHUNK_DIVISORS = (60, 30, 20, 15, 12, 10, 6, 5, 4, 3, 2, 1)  # chunk lengths in minutes, within an hour
_FIRST_TRADE_ID = 1_000_000_000  # id of the first trade at config.start_ns, for every instrument
_MAX_DAYS_FROM_START = 3 * 366  # how far trades_by_id looks for an id


@dataclass(frozen=True)
class VenueSpec:
    quote: str  # quote asset of crypto pairs
    trades_per_second: float  # for an asset of activity 1.0
    mean_trade_usd: float
    spread_bps: float  # quoted spread in normal volatility
    basis_sd: float  # stationary sd of the log basis to the fair value


VENUE_SPECS = {
    BINANCE: VenueSpec("USDT", 4.0, 1_500.0, 0.002, 2e-4),
    COINBASE: VenueSpec("USD", 2.0, 2_500.0, 0.005, 1.5e-4),
    POLYGON: VenueSpec("USD", 1.5, 2_000.0, 0.02, 0.5e-4),
}
EQUITY_TRADES_PER_SECOND = 2.0
EQUITY_MEAN_TRADE_USD = 12_000.0
EQUITY_SPREAD_BPS = 1.0

# (price_decimals, size_decimals) per venue and crypto base: the venues' real tick and lot steps.
_CRYPTO_DECIMALS = {
    BINANCE: {"BTC": (2, 5), "ETH": (2, 4), "SOL": (2, 3), "XRP": (4, 1), "DOGE": (5, 0),
              "ADA": (4, 1), "AVAX": (2, 2), "LINK": (2, 2)},
    COINBASE: {"BTC": (2, 8), "ETH": (2, 8), "SOL": (2, 8), "XRP": (4, 6), "DOGE": (5, 1),
               "ADA": (4, 8), "AVAX": (2, 8), "LINK": (3, 8)},
    POLYGON: {"BTC": (2, 8), "ETH": (2, 8), "SOL": (2, 8), "XRP": (4, 6), "DOGE": (5, 1),
              "ADA": (4, 8), "AVAX": (2, 8), "LINK": (3, 8)},
}


def format_ticks(value: int, decimals: int, pad_to: int | None = None) -> str:
    """Exact decimal string of ``value / 10**decimals``: no exponent, ``pad_to`` fraction digits if given."""
    value = int(value)
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    if decimals == 0:
        text = f"{sign}{whole}"
        return text if not pad_to else f"{text}.{'0' * pad_to}"
    digits = str(frac).zfill(decimals)
    if pad_to is not None:
        digits = digits.ljust(pad_to, "0") if pad_to >= decimals else digits[:pad_to]
        return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"
    return f"{sign}{whole}.{digits}"


@dataclass(frozen=True)
class Instrument:
    venue: str  # "binance_spot" | "coinbase_exchange" | "polygon"
    symbol: str  # canonical: "BTC-USDT" on Binance, "BTC-USD" on Coinbase/Polygon, "AAPL"
    venue_symbol: str  # "BTCUSDT", "BTC-USD", "BTC-USD" (Polygon WS pair) / "AAPL"
    asset_class: str  # "crypto_spot" | "equity"
    price_decimals: int  # price = ticks / 10**price_decimals
    size_decimals: int  # size = lots / 10**size_decimals
    base: str = ""  # base asset ("BTC") or the equity ticker

    def price_str(self, ticks: int, pad_to: int | None = None) -> str:
        return format_ticks(ticks, self.price_decimals, pad_to)

    def size_str(self, lots: int, pad_to: int | None = None) -> str:
        return format_ticks(lots, self.size_decimals, pad_to)

    def price(self, ticks: int) -> Decimal:
        return Decimal(int(ticks)).scaleb(-self.price_decimals)

    def size(self, lots: int) -> Decimal:
        return Decimal(int(lots)).scaleb(-self.size_decimals)


@dataclass(frozen=True)
class MarketConfig:
    seed: int = 7
    # The UTC day containing start_ns begins at the assets' initial prices; days are chained forward
    # from it and backward before it. Any time is allowed, before or after.
    start_ns: int = DEFAULT_START_NS
    signal: Signal = "none"
    # Information coefficient of the planted feature, in units of the minute's volatility:
    # "flow": r[t+1]/sigma = ... + s * g[t], g the standard-normal latent buy imbalance of minute t
    #         (so corr(g[t], r[t+1]/sigma) = s; the observed buy-volume imbalance is tanh(0.7 g) + noise);
    # "news": every minute of the 30 after a headline drifts by s * tone * sigma (tone in -1, 0, +1).
    signal_strength: float = 0.1
    n_crypto: int = 8
    n_equities: int = 6
    trade_rate_scale: float = 1.0  # multiplies every instrument's mean trades per second
    cache_days: int = 32  # LRU of whole-market days (~1.3 MB each)
    cache_venue_days: int = 1024  # LRU of (instrument, day) bar arrays (~0.1 MB each)
    cache_hours: int = 256  # LRU of trade chunks (an instrument-hour; BTCUSDT: ~15k trades, ~0.5 MB)

    def __post_init__(self) -> None:
        if self.signal not in ("none", "flow", "news"):
            raise ValueError(f"signal must be none, flow or news, not {self.signal!r}")
        if not 0.0 <= self.signal_strength <= 0.9:
            raise ValueError(f"signal_strength must be in [0, 0.9], got {self.signal_strength}")
        if not 0 <= self.n_crypto <= len(CRYPTO_ASSETS) or not 0 <= self.n_equities <= len(EQUITY_ASSETS):
            raise ValueError(f"at most {len(CRYPTO_ASSETS)} crypto and {len(EQUITY_ASSETS)} equities")
        if self.n_crypto + self.n_equities == 0:
            raise ValueError("the model needs at least one asset")
        if self.trade_rate_scale <= 0:
            raise ValueError("trade_rate_scale must be positive")
        if min(self.cache_days, self.cache_venue_days, self.cache_hours) < 1:
            raise ValueError("cache sizes must be at least 1")


@dataclass
class TradeBatch:
    """Columnar trades of one instrument, ordered by trade id (and so by time)."""

    instrument: Instrument
    ts_ns: np.ndarray  # int64, multiples of 1000 (µs)
    trade_id: np.ndarray  # int64, consecutive per (venue, symbol)
    price_ticks: np.ndarray  # int64
    size_lots: np.ndarray  # int64
    side: np.ndarray  # int8: +1 buyer-aggressor, -1 seller-aggressor

    def __len__(self) -> int:
        return len(self.trade_id)

    def take(self, index: np.ndarray | slice) -> TradeBatch:
        return TradeBatch(self.instrument, self.ts_ns[index], self.trade_id[index],
                          self.price_ticks[index], self.size_lots[index], self.side[index])

    def price_str(self, i: int, pad_to: int | None = None) -> str:
        return self.instrument.price_str(int(self.price_ticks[i]), pad_to)

    def size_str(self, i: int, pad_to: int | None = None) -> str:
        return self.instrument.size_str(int(self.size_lots[i]), pad_to)

    def price_strs(self, pad_to: int | None = None) -> list[str]:
        d = self.instrument.price_decimals
        return [format_ticks(v, d, pad_to) for v in self.price_ticks.tolist()]

    def size_strs(self, pad_to: int | None = None) -> list[str]:
        d = self.instrument.size_decimals
        return [format_ticks(v, d, pad_to) for v in self.size_lots.tolist()]


@dataclass
class BarBatch:
    """Columnar 1-minute bars of one instrument (ts_ns = start of the minute)."""

    instrument: Instrument
    ts_ns: np.ndarray
    open: np.ndarray  # ticks
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # lots
    trade_count: np.ndarray
    buy_volume: np.ndarray  # lots bought by aggressive buyers
    first_trade_id: np.ndarray  # id of the minute's first trade (last = first + count - 1)
    _notional_fn: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _notional: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ts_ns)

    @property
    def last_trade_id(self) -> np.ndarray:
        return self.first_trade_id + self.trade_count - 1

    @property
    def notional(self) -> np.ndarray:
        """Exact sum of ticks * lots over each minute's trades (quote volume = notional / 10**(pd+sd)).

        Computed from the trades on first access (the trades of every chunk touched are generated):
        the bars themselves are drawn without their trades, which keeps history fast.
        """
        if self._notional is None:
            self._notional = (self._notional_fn() if self._notional_fn is not None
                              else np.zeros(len(self), dtype=np.int64))
        return self._notional

    def quote_volume_str(self, i: int) -> str:
        inst = self.instrument
        return format_ticks(int(self.notional[i]), inst.price_decimals + inst.size_decimals)

    def vwap(self, i: int, extra_digits: int = 4) -> Decimal:
        """VWAP rounded to ``price_decimals + extra_digits`` places (the exact value is notional/volume)."""
        inst = self.instrument
        exact = Decimal(int(self.notional[i])) / Decimal(int(self.volume[i]))
        return exact.scaleb(-inst.price_decimals).quantize(Decimal(1).scaleb(-(inst.price_decimals
                                                                                + extra_digits)))


@dataclass(frozen=True)
class QuoteTick:
    """Best bid/ask in force at a time: set by the last trade at or before it."""

    instrument: Instrument
    ts_ns: int  # when this quote took effect
    bid_ticks: int
    bid_lots: int
    ask_ticks: int
    ask_lots: int

    def bid_str(self, pad_to: int | None = None) -> str:
        return self.instrument.price_str(self.bid_ticks, pad_to)

    def ask_str(self, pad_to: int | None = None) -> str:
        return self.instrument.price_str(self.ask_ticks, pad_to)

    def bid_size_str(self, pad_to: int | None = None) -> str:
        return self.instrument.size_str(self.bid_lots, pad_to)

    def ask_size_str(self, pad_to: int | None = None) -> str:
        return self.instrument.size_str(self.ask_lots, pad_to)


@dataclass(frozen=True)
class NewsItem:
    id: str
    published_ns: int
    title: str
    description: str
    publisher: str
    url: str
    tickers: tuple[str, ...]  # equity tickers ("AAPL") and crypto bases ("BTC")
    tone: int  # the planted tone (-1, 0, +1): ground truth for tests, not something a venue sends


@dataclass(frozen=True)
class _TradeChunk:
    ts_ns: np.ndarray
    trade_id: np.ndarray
    price_ticks: np.ndarray
    size_lots: np.ndarray
    side: np.ndarray
    starts: np.ndarray  # index of each minute's first trade; starts[-1] = number of trades
    notional: np.ndarray  # sum of ticks * lots per minute

    def columns(self) -> tuple[np.ndarray, ...]:
        return self.ts_ns, self.trade_id, self.price_ticks, self.size_lots, self.side


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


class MarketModel:
    """History and live data of every simulated instrument; deterministic for a given config.

    Thread-safe (one lock around generation and caches). The first request far from
    ``config.start_ns`` generates every day in between once (~10 ms a day), e.g. ~1 s for "now" with
    the default start; later requests hit the caches.
    """

    def __init__(self, config: MarketConfig | None = None) -> None:
        self.config = config or MarketConfig()
        cfg = self.config
        self._assets: tuple[AssetSpec, ...] = CRYPTO_ASSETS[: cfg.n_crypto] + EQUITY_ASSETS[: cfg.n_equities]
        self._asset_index = {a.name: i for i, a in enumerate(self._assets)}
        self._instruments: list[Instrument] = []
        self._inst_asset: list[int] = []
        self._lookup: dict[tuple[str, str], int] = {}
        for venue in SIM_VENUES:
            spec = VENUE_SPECS[venue]
            for a_idx, asset in enumerate(self._assets):
                if asset.asset_class == "equity":
                    if venue != POLYGON:
                        continue
                    inst = Instrument(venue, asset.name, asset.name, "equity", 2, 0, asset.name)
                else:
                    symbol = f"{asset.name}-{spec.quote}"
                    venue_symbol = symbol.replace("-", "") if venue == BINANCE else symbol
                    pd_, sd_ = _CRYPTO_DECIMALS[venue][asset.name]
                    inst = Instrument(venue, symbol, venue_symbol, "crypto_spot", pd_, sd_, asset.name)
                index = len(self._instruments)
                self._instruments.append(inst)
                self._inst_asset.append(a_idx)
                aliases = {inst.symbol, inst.venue_symbol, inst.symbol.replace("-", "")}
                if venue == POLYGON and inst.asset_class == "crypto_spot":
                    aliases.add(f"X:{inst.symbol.replace('-', '')}")
                for alias in aliases:
                    self._lookup[(venue, alias.upper())] = index
        self._basis_sd = {v: VENUE_SPECS[v].basis_sd for v in SIM_VENUES}
        self._start_day = cfg.start_ns // NS_PER_DAY
        self._lock = threading.RLock()
        self._end_states: dict[int, WorldState] = {}  # forward days: state at the end of the day
        self._back_start_logp: dict[int, np.ndarray] = {}  # backward days: log price at their start
        self._worlds: LRUCache[int, DayWorld] = LRUCache(maxsize=cfg.cache_days)
        self._venue_days: LRUCache[tuple[int, int], VenueDay] = LRUCache(maxsize=cfg.cache_venue_days)
        self._day_totals: dict[tuple[int, int], int] = {}
        # Trade intensity of every day generated so far (~160 kB a day): day totals, and so trade ids,
        # need every day since the start, and this avoids regenerating evicted worlds for them.
        self._intensity: dict[int, np.ndarray] = {}
        self._day_first_ids: dict[tuple[int, int], int] = {}
        self._chunks: LRUCache[tuple[int, int], _TradeChunk] = LRUCache(maxsize=cfg.cache_hours)
        # Minutes per trade chunk, per instrument: an hour unless its mean rate makes that too big.
        self._chunk_minutes = [
            next((d for d in _CHUNK_DIVISORS if d * self._activity(i)[0] <= _CHUNK_TRADES), 1)
            for i in range(len(self._instruments))
        ]

    # ----------------------------------------------------------------- instruments
    def instruments(self, venue: str | None = None) -> list[Instrument]:
        return [i for i in self._instruments if venue is None or i.venue == venue]

    def instrument(self, venue: str, venue_symbol_or_symbol: str) -> Instrument:
        return self._instruments[self._index(venue, venue_symbol_or_symbol)]

    def _index(self, venue: str, symbol: str) -> int:
        try:
            return self._lookup[(venue, symbol.upper())]
        except KeyError:
            raise KeyError(f"unknown instrument {symbol!r} on {venue!r}") from None

    # ----------------------------------------------------------------- world chain
    def _world(self, day: int) -> DayWorld:
        with self._lock:
            cached = self._worlds.get(day)
            if cached is not None:
                return cached
            if day >= self._start_day:
                return self._forward_world(day)
            return self._backward_world(day)

    def _generate(self, day: int, state: WorldState, tag: int) -> tuple[DayWorld, WorldState]:
        cfg = self.config
        return world_mod.generate_day(_rng(cfg.seed, tag, day), day, self._assets, state, cfg.signal,
                                      cfg.signal_strength, self._basis_sd)

    def _forward_world(self, day: int) -> DayWorld:
        known = [d for d in self._end_states if d < day]
        first = max(known) + 1 if known else self._start_day
        world: DayWorld | None = None
        for d in range(first, day + 1):
            if d == self._start_day:
                state = world_mod.initial_state(self._assets, SIM_VENUES)
            else:
                state = self._end_states[d - 1]
            world, end = self._generate(d, state, _TAG_WORLD)
            self._end_states[d] = end
            self._worlds[d] = world
            self._intensity[d] = world.intensity
        assert world is not None
        return world

    def _backward_world(self, day: int) -> DayWorld:
        """Days before the start: each drawn from a stationary state, its price anchored to the next day."""
        world: DayWorld | None = None
        d = self._start_day - 1
        while d >= day:
            if d in self._back_start_logp and d != day:
                d -= 1
                continue
            if d + 1 == self._start_day:
                target = np.log(np.array([a.initial_price for a in self._assets]))
            else:
                target = self._back_start_logp[d + 1]
            rng = _rng(self.config.seed, _TAG_WORLD_BACK, d)
            state = world_mod.stationary_state(rng, len(self._assets), SIM_VENUES, self._basis_sd)
            world, _ = self._generate(d, state, _TAG_WORLD_BACK)
            world.log_price += (target - world.log_price[:, -1])[:, None]
            self._back_start_logp[d] = world.log_price[:, 0].copy()
            self._worlds[d] = world
            self._intensity[d] = world.intensity
            d -= 1
        assert world is not None
        return world

    # ----------------------------------------------------------------- venue days
    def _venue_day(self, inst_idx: int, day: int) -> VenueDay:
        key = (inst_idx, day)
        with self._lock:
            cached = self._venue_days.get(key)
            if cached is not None:
                return cached
            inst = self._instruments[inst_idx]
            a_idx = self._inst_asset[inst_idx]
            world = self._world(day)
            log_px = world.log_price[a_idx] + world.basis[inst.venue][a_idx]
            price_ticks = np.exp(log_px + inst.price_decimals * math.log(10.0))
            trades_per_minute, trade_usd = self._activity(inst_idx)
            mean_lots = trade_usd / math.exp(log_px[0]) * 10**inst.size_decimals
            vd = venue_day_bars(
                _rng(self.config.seed, _TAG_VENUE_DAY, inst_idx, day), day, price_ticks,
                world.sigma[a_idx], world.sigma_ratio[a_idx], world.flow[a_idx], world.intensity[a_idx],
                trades_per_minute, max(mean_lots, 1.0),
            )
            self._venue_days[key] = vd
            self._day_totals[key] = int(vd.cum_count[-1])
            return vd

    def _activity(self, inst_idx: int) -> tuple[float, float]:
        """(mean trades per minute at intensity 1, mean trade size in USD) of an instrument."""
        inst = self._instruments[inst_idx]
        asset = self._assets[self._inst_asset[inst_idx]]
        if asset.asset_class == "equity":
            per_second, trade_usd = EQUITY_TRADES_PER_SECOND, EQUITY_MEAN_TRADE_USD
        else:
            spec = VENUE_SPECS[inst.venue]
            per_second, trade_usd = spec.trades_per_second, spec.mean_trade_usd
        return 60.0 * per_second * asset.activity * self.config.trade_rate_scale, trade_usd

    def _day_total(self, inst_idx: int, day: int) -> int:
        with self._lock:
            total = self._day_totals.get((inst_idx, day))
            if total is None:
                if day not in self._intensity:
                    self._world(day)
                intensity = self._intensity[day][self._inst_asset[inst_idx]]
                counts = venue_day_counts(_rng(self.config.seed, _TAG_VENUE_DAY, inst_idx, day), intensity,
                                          self._activity(inst_idx)[0])
                total = int(counts.sum())
                self._day_totals[(inst_idx, day)] = total
            return total

    def _first_id(self, inst_idx: int, day: int) -> int:
        """Id of the first trade of the day: ids run consecutively over all days from the start day."""
        with self._lock:
            cached = self._day_first_ids.get((inst_idx, day))
            if cached is not None:
                return cached
            step = 1 if day >= self._start_day else -1
            d = self._start_day if step == 1 else self._start_day - 1
            # Resume from the nearest day already known on the way from the start day.
            while (inst_idx, d + step) in self._day_first_ids and d != day:
                d += step
            if (inst_idx, d) not in self._day_first_ids:
                if step == 1:
                    self._day_first_ids[(inst_idx, d)] = _FIRST_TRADE_ID
                else:
                    self._day_first_ids[(inst_idx, d)] = _FIRST_TRADE_ID - self._day_total(inst_idx, d)
            while d != day:
                if step == 1:
                    nxt = self._day_first_ids[(inst_idx, d)] + self._day_total(inst_idx, d)
                else:
                    nxt = self._day_first_ids[(inst_idx, d)] - self._day_total(inst_idx, d - 1)
                d += step
                self._day_first_ids[(inst_idx, d)] = nxt
            return self._day_first_ids[(inst_idx, day)]

    # ----------------------------------------------------------------- bars
    def bars_1m(self, venue: str, symbol: str, start_ns: int, end_ns: int) -> BarBatch:
        """Bars of the minutes whose start lies in [start_ns, end_ns)."""
        inst_idx = self._index(venue, symbol)
        first_min = -(-start_ns // NS_PER_MIN)
        end_min = -(-end_ns // NS_PER_MIN)
        cols: dict[str, list[np.ndarray]] = {k: [] for k in (
            "ts_ns", "open", "high", "low", "close", "volume", "trade_count", "buy_volume", "first_trade_id")}
        minute = first_min
        while minute < end_min:
            day = minute // MINUTES_PER_DAY
            lo = minute - day * MINUTES_PER_DAY
            hi = min(end_min - day * MINUTES_PER_DAY, MINUTES_PER_DAY)
            vd = self._venue_day(inst_idx, day)
            first_id = self._first_id(inst_idx, day)
            cols["ts_ns"].append((day * MINUTES_PER_DAY + np.arange(lo, hi, dtype=np.int64)) * NS_PER_MIN)
            for name in ("open", "high", "low", "close", "volume", "trade_count", "buy_volume"):
                cols[name].append(getattr(vd, name)[lo:hi])
            cols["first_trade_id"].append(first_id + vd.cum_count[lo:hi])
            minute = day * MINUTES_PER_DAY + hi
        arrays = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in cols.items()}
        minutes = (arrays["ts_ns"] // NS_PER_MIN).tolist()

        def notional() -> np.ndarray:
            out = np.empty(len(minutes), dtype=np.int64)
            for j, m in enumerate(minutes):
                size = self._chunk_minutes[inst_idx]
                out[j] = self._chunk(inst_idx, m // size).notional[m % size]
            return out

        return BarBatch(self._instruments[inst_idx], _notional_fn=notional, **arrays)

    # ----------------------------------------------------------------- trades
    def _chunk(self, inst_idx: int, chunk: int) -> _TradeChunk:
        """All trades of one chunk of minutes of one instrument, cached."""
        key = (inst_idx, chunk)
        size = self._chunk_minutes[inst_idx]
        with self._lock:
            cached = self._chunks.get(key)
            if cached is not None:
                return cached
            day, first_m = divmod(chunk * size, MINUTES_PER_DAY)
            vd = self._venue_day(inst_idx, day)
            sl = slice(first_m, first_m + size)
            ts, px, sz, side, starts = chunk_trades(
                _rng(self.config.seed, _TAG_CHUNK, inst_idx, size, chunk), chunk * size * NS_PER_MIN,
                vd.open[sl], vd.high[sl], vd.low[sl], vd.close[sl], vd.volume[sl], vd.trade_count[sl],
                vd.buy_volume[sl],
            )
            first_id = self._first_id(inst_idx, day) + int(vd.cum_count[first_m])
            ids = first_id + np.arange(len(ts), dtype=np.int64)
            notional = np.add.reduceat(px * sz, starts[:-1])
            result = _TradeChunk(ts, ids, px, sz, side, starts, notional)
            self._chunks[key] = result
            return result

    def _collect(self, inst_idx: int, minutes: range) -> TradeBatch:
        """Trades of the minutes in ``minutes`` (a contiguous range), in id order."""
        inst = self._instruments[inst_idx]
        if len(minutes) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return TradeBatch(inst, empty, empty, empty, empty, np.zeros(0, dtype=np.int8))
        parts: list[tuple[np.ndarray, ...]] = []
        size = self._chunk_minutes[inst_idx]
        minute = minutes.start
        while minute < minutes.stop:
            index, offset = divmod(minute, size)
            upto = min(minutes.stop - index * size, size)
            chunk = self._chunk(inst_idx, index)
            lo, hi = int(chunk.starts[offset]), int(chunk.starts[upto])
            parts.append(tuple(col[lo:hi] for col in chunk.columns()))
            minute = index * size + upto
        if len(parts) == 1:
            return TradeBatch(inst, *parts[0])
        return TradeBatch(inst, *(np.concatenate([p[k] for p in parts]) for k in range(5)))

    def trades(self, venue: str, symbol: str, start_ns: int, end_ns: int) -> TradeBatch:
        """Trades with start_ns <= ts_ns < end_ns, in id order."""
        inst_idx = self._index(venue, symbol)
        if end_ns <= start_ns:
            return self._collect(inst_idx, range(0))
        batch = self._collect(inst_idx, range(start_ns // NS_PER_MIN, -(-end_ns // NS_PER_MIN)))
        mask = (batch.ts_ns >= start_ns) & (batch.ts_ns < end_ns)
        return batch if mask.all() else batch.take(mask)

    def _minute_of_id(self, inst_idx: int, trade_id: int) -> int:
        # Ids map to days by walking the chain from the start day; bound the walk so an absurd id is
        # a clear error instead of years of generation.
        lowest, highest = self._start_day - _MAX_DAYS_FROM_START, self._start_day + _MAX_DAYS_FROM_START
        day = self._start_day
        per_day = max(self._day_total(inst_idx, day), 1)
        if abs(trade_id - self._first_id(inst_idx, day)) > 2 * per_day * _MAX_DAYS_FROM_START:
            where = "before" if trade_id < self._first_id(inst_idx, day) else "after"
            raise ValueError(f"trade id {trade_id} is {where} the simulated range")
        while trade_id < self._first_id(inst_idx, day):
            day -= 1
            if day < lowest:
                raise ValueError(f"trade id {trade_id} is before the simulated range")
        while trade_id >= self._first_id(inst_idx, day) + self._day_total(inst_idx, day):
            day += 1
            if day > highest:
                raise ValueError(f"trade id {trade_id} is after the simulated range")
        cum = self._venue_day(inst_idx, day).cum_count
        m = int(np.searchsorted(cum, trade_id - self._first_id(inst_idx, day), side="right")) - 1
        return day * MINUTES_PER_DAY + m

    def trades_by_id(self, venue: str, symbol: str, first_id: int, last_id: int) -> TradeBatch:
        """Trades with first_id <= trade_id <= last_id (inclusive, like venues' fromId/limit)."""
        inst_idx = self._index(venue, symbol)
        if last_id < first_id:
            return self._collect(inst_idx, range(0))
        lo = self._minute_of_id(inst_idx, first_id)
        hi = self._minute_of_id(inst_idx, last_id)
        batch = self._collect(inst_idx, range(lo, hi + 1))
        mask = (batch.trade_id >= first_id) & (batch.trade_id <= last_id)
        return batch if mask.all() else batch.take(mask)

    def last_trade_before(self, venue: str, symbol: str, ts_ns: int) -> TradeBatch:
        """The last trade with ts_ns strictly before ``ts_ns`` (a batch of one), e.g. for heartbeats."""
        inst_idx = self._index(venue, symbol)
        minute = ts_ns // NS_PER_MIN
        # Every minute has at least one trade, so this looks back at most one minute.
        while True:
            batch = self._collect(inst_idx, range(minute, minute + 1))
            k = int(np.searchsorted(batch.ts_ns, ts_ns, side="left"))
            if k > 0:
                return batch.take(slice(k - 1, k))
            minute -= 1

    # ----------------------------------------------------------------- quotes
    def quote_at(self, venue: str, symbol: str, ts_ns: int) -> QuoteTick:
        """Best bid/ask at ``ts_ns``: the last trade at or before it sits at the touch it hit
        (a buyer lifts the ask, a seller hits the bid); the spread widens with volatility."""
        inst_idx = self._index(venue, symbol)
        inst = self._instruments[inst_idx]
        last = self.last_trade_before(venue, symbol, ts_ns + 1)
        trade_ts = int(last.ts_ns[0])
        price, side, trade_id = int(last.price_ticks[0]), int(last.side[0]), int(last.trade_id[0])
        day, m = divmod(trade_ts // NS_PER_MIN, MINUTES_PER_DAY)
        vd = self._venue_day(inst_idx, day)
        spec = VENUE_SPECS[inst.venue]
        spread_bps = EQUITY_SPREAD_BPS if inst.asset_class == "equity" else spec.spread_bps
        base_ticks = spread_bps * 1e-4 * price
        spread = max(1, round(base_ticks * float(np.clip(vd.sigma_ratio[m], 0.5, 4.0))))
        if side > 0:
            ask, bid = price, max(price - spread, 1)
        else:
            bid, ask = price, price + spread
        mean_lots = max(float(vd.volume[m]) / float(vd.trade_count[m]), 1.0)
        rng = _rng(self.config.seed, _TAG_QUOTE, inst_idx, trade_id)
        bid_lots, ask_lots = (max(1, int(x)) for x in mean_lots * rng.lognormal(0.0, 0.8, 2))
        return QuoteTick(inst, trade_ts, bid, bid_lots, ask, ask_lots)

    # ----------------------------------------------------------------- news
    def news(self, start_ns: int, end_ns: int, ticker: str | None = None) -> list[NewsItem]:
        """Headlines published in [start_ns, end_ns), oldest first; ``ticker`` filters by asset
        (accepts "AAPL", "BTC", "BTC-USD", "BTCUSDT" or "X:BTCUSD")."""
        wanted: int | None = None
        if ticker is not None:
            wanted = self._asset_of_ticker(ticker)
        out: list[NewsItem] = []
        if end_ns <= start_ns:
            return out
        for day in range(start_ns // NS_PER_DAY, (end_ns - 1) // NS_PER_DAY + 1):
            world = self._world(day)
            for draw in world.news:
                if not start_ns <= draw.published_ns < end_ns:
                    continue
                if wanted is not None and wanted not in draw.asset_indices:
                    continue
                out.append(self._news_item(draw))
        return out

    def _asset_of_ticker(self, ticker: str) -> int:
        name = ticker.upper()
        if name.startswith("X:"):
            name = name[2:]
        if name in self._asset_index:
            return self._asset_index[name]
        if "-" in name:
            name = name.split("-", 1)[0]
        else:
            for quote in ("USDT", "USD"):
                if name.endswith(quote) and name[: -len(quote)] in self._asset_index:
                    name = name[: -len(quote)]
                    break
        if name not in self._asset_index:
            raise KeyError(f"unknown ticker {ticker!r}")
        return self._asset_index[name]

    def _news_item(self, draw: world_mod.NewsDraw) -> NewsItem:
        title, description = world_mod.headline_for(draw, self._assets)
        day = draw.published_ns // NS_PER_DAY
        digest = hashlib.sha256(f"{self.config.seed}:{day}:{draw.index_in_day}".encode()).hexdigest()
        publisher = world_mod.news_text.PUBLISHERS[int(digest[:4], 16) % len(world_mod.news_text.PUBLISHERS)]
        return NewsItem(
            id=digest[:40], published_ns=draw.published_ns, title=title, description=description,
            publisher=publisher, url=f"https://news.simulator.local/{digest[:40]}",
            tickers=tuple(self._assets[i].name for i in draw.asset_indices), tone=draw.tone,
        )
