"""Venue-level bars (vectorised over a day) and the trades behind them (vectorised over a chunk of minutes).

All prices are integer ticks and all sizes integer lots, so rolling a minute's trades up gives its
bar exactly: first trade at the open, last at the close, one trade at the high and one at the low,
sizes summing to the volume, buyer-aggressor sizes summing to the buy volume. Every minute has at
least one trade (no empty bars), in every instrument, around the clock (equities included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrr_platform.simulator.model_world import FLOW_SQUASH, MINUTES_PER_DAY

NS_PER_MIN = 60_000_000_000
US_PER_MIN = 60_000_000


@dataclass
class VenueDay:
    """One (venue, symbol, UTC day) of 1-minute bars in ticks and lots, plus what trades need."""

    day: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trade_count: np.ndarray
    buy_volume: np.ndarray
    sigma_ratio: np.ndarray  # volatility relative to normal, for spreads
    cum_count: np.ndarray  # (1441,) trades before each minute, within the day


def venue_day_counts(rng: np.random.Generator, intensity: np.ndarray, trades_per_minute: float) -> np.ndarray:
    """Trades per minute: 1 + Poisson with gamma noise (negative binomial) around the clustered intensity.

    The first draws of a venue day's generator, so the day's trade total (which fixes every later
    trade id) is known without drawing the rest of the day.
    """
    rate = np.maximum(trades_per_minute - 1.0, 0.0) * intensity * rng.gamma(4.0, 0.25, len(intensity))
    return 1 + rng.poisson(rate).astype(np.int64)


def venue_day_bars(
    rng: np.random.Generator,
    day: int,
    price_ticks: np.ndarray,  # (1441,) exact fair-plus-basis price in ticks (float)
    sigma: np.ndarray,  # (1440,)
    sigma_ratio: np.ndarray,
    flow: np.ndarray,  # (1440,) latent imbalance g
    intensity: np.ndarray,  # (1440,)
    trades_per_minute: float,
    mean_trade_lots: float,
) -> VenueDay:
    m = MINUTES_PER_DAY
    count = venue_day_counts(rng, intensity, trades_per_minute)
    closes = np.maximum(np.rint(price_ticks), 1).astype(np.int64)
    close = closes[1:]
    prev_close = closes[:-1]
    sigma_ticks = sigma * price_ticks[1:]

    open_ = np.maximum(prev_close + np.rint(rng.normal(0.0, 0.25, m) * sigma_ticks).astype(np.int64), 1)
    open_ = np.where(count == 1, close, open_)
    reach = 0.5 * sigma_ticks * np.minimum(1.0, np.sqrt(count / 20.0))
    ext_up = np.floor(np.abs(rng.normal(0.0, 1.0, m)) * reach).astype(np.int64)
    ext_dn = np.floor(np.abs(rng.normal(0.0, 1.0, m)) * reach).astype(np.int64)
    # Two trades can only be open and close; three leave one trade for one extreme.
    ext_up = np.where(count <= 2, 0, ext_up)
    ext_dn = np.where(count <= 2, 0, ext_dn)
    three = count == 3
    ext_up = np.where(three & (ext_up < ext_dn), 0, ext_up)
    ext_dn = np.where(three & (ext_dn <= ext_up), 0, ext_dn)
    high = np.maximum(open_, close) + ext_up
    low = np.maximum(np.minimum(open_, close) - ext_dn, 1)

    size_noise = rng.lognormal(-0.5 * 0.35**2, 0.35, m)
    volume = count + np.rint(count * mean_trade_lots * size_noise).astype(np.int64)
    buy_fraction = np.clip(0.5 + 0.5 * np.tanh(FLOW_SQUASH * flow) + rng.normal(0.0, 0.03, m), 0.0, 1.0)
    buy_volume = np.rint(volume * buy_fraction).astype(np.int64)
    # A single trade is all buy or all sell.
    buy_volume = np.where(count == 1, np.where(buy_fraction >= 0.5, volume, 0), buy_volume)
    cum = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
    return VenueDay(
        day=day, open=open_, high=high, low=low, close=close, volume=volume, trade_count=count,
        buy_volume=buy_volume, sigma_ratio=sigma_ratio.astype(np.float64), cum_count=cum,
    )


def chunk_trades(
    rng: np.random.Generator,
    first_minute_ns: int,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    count: np.ndarray,
    buy_volume: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Trades of consecutive minutes, each minute exactly matching its bar, vectorised over the chunk.

    Returns (ts_ns, price_ticks, size_lots, side, starts): ``starts[j]`` is the index of minute j's first
    trade and ``starts[-1]`` the total. Every bar has ``count >= 1`` and ``volume >= count``; two-trade
    minutes have no extension beyond open/close and three-trade minutes at most one (``venue_day_bars``).
    """
    n_min = len(count)
    total = int(count.sum())
    starts = np.zeros(n_min + 1, dtype=np.int64)
    np.cumsum(count, out=starts[1:])
    seg = np.repeat(np.arange(n_min), count)
    pos = np.arange(total, dtype=np.int64) - starts[seg]
    n_of = count[seg]

    # Timestamps: clustered gaps (squared exponentials: more short and more long gaps than a Poisson
    # process), n+1 per minute, scaled into the minute, µs resolution.
    ext = count + 1
    ext_starts = np.zeros(n_min + 1, dtype=np.int64)
    np.cumsum(ext, out=ext_starts[1:])
    gaps = rng.standard_exponential(int(ext_starts[-1])) ** 2
    cum_gaps = np.concatenate([[0.0], np.cumsum(gaps)])
    seg_base = cum_gaps[ext_starts[:-1]]
    seg_span = cum_gaps[ext_starts[:-1] + ext] - seg_base
    elapsed = cum_gaps[ext_starts[seg] + pos + 1] - seg_base[seg]
    offsets_us = np.floor(elapsed / seg_span[seg] * (US_PER_MIN - 1)).astype(np.int64)
    ts = first_minute_ns + seg * NS_PER_MIN + offsets_us * 1000

    # Sides: the number of buyer-aggressor trades follows the buy-volume share, within what the lot
    # totals allow; which trades are buys is a random permutation within the minute.
    sell_volume = volume - buy_volume
    lo = np.maximum(count - sell_volume, (buy_volume > 0).astype(np.int64))
    hi = np.minimum(buy_volume, count - (sell_volume > 0).astype(np.int64))
    n_buys = np.clip(np.rint(count * buy_volume / volume).astype(np.int64), lo, hi)
    # Random order within each minute by a two-pass LSD radix sort (numpy radix-sorts 16-bit keys, far
    # faster than lexsort): by a random key, then stably by minute.
    by_key = np.argsort(rng.integers(0, 1 << 15, total, dtype=np.int16), kind="stable")
    order = by_key[np.argsort(seg[by_key].astype(np.int16), kind="stable")]
    rank = np.empty(total, dtype=np.int64)
    rank[order] = np.arange(total) - starts[seg[order]]
    side = np.where(rank < n_buys[seg], 1, -1).astype(np.int8)

    # Sizes: one lot each, plus the rest of the side's volume split by Pareto weights (heavy tails).
    # Exact split: cumulative floor of the weight share, so each group's extras sum to its total.
    group = seg * 2 + (side > 0)
    n_groups = 2 * n_min
    group_count = np.bincount(group, minlength=n_groups)
    group_total = np.stack([sell_volume, buy_volume], axis=1).ravel()
    group_extra = group_total - group_count
    weights = (1.0 - rng.random(total)) ** (-1.0 / 1.3)
    by_group = np.argsort(group.astype(np.int16), kind="stable")
    g_sorted = group[by_group]
    group_start = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(group_count, out=group_start[1:])
    cum_w = np.concatenate([[0.0], np.cumsum(weights[by_group])])
    within = cum_w[1:] - cum_w[group_start[g_sorted]]
    group_w = cum_w[group_start[1:]] - cum_w[group_start[:-1]]
    cum_extra = np.floor(group_extra[g_sorted] * (within / group_w[g_sorted])).astype(np.int64)
    is_last = np.arange(total) == group_start[g_sorted + 1] - 1
    cum_extra = np.where(is_last, group_extra[g_sorted], np.minimum(cum_extra, group_extra[g_sorted]))
    is_first = np.arange(total) == group_start[g_sorted]
    prev_extra = np.where(is_first, 0, np.concatenate([[0], cum_extra[:-1]]))
    size = np.empty(total, dtype=np.int64)
    size[by_group] = 1 + cum_extra - prev_extra

    # Prices: a Brownian bridge from open to close, clipped to [low, high]; the high and the low are
    # then placed where the bridge is highest and lowest inside the minute.
    walk = np.cumsum(rng.random(total) - 0.5)  # unit-free: only the bridge's shape matters
    walk = walk - walk[starts[seg]]
    walk_end = walk[starts[1:] - 1]
    frac = np.where(n_of > 1, pos / np.maximum(n_of - 1, 1), 0.0)
    o, c, h, lo_px = (a.astype(np.float64)[seg] for a in (open_, close, high, low))
    scale = np.maximum(h - lo_px, 1.0) * 1.7 / np.sqrt(n_of)
    path = np.clip(o + (c - o) * frac + scale * (walk - frac * walk_end[seg]), lo_px, h)
    price = np.rint(path).astype(np.int64)
    interior = (pos > 0) & (pos < n_of - 1)
    need_high = high > np.maximum(open_, close)
    need_low = low < np.minimum(open_, close)
    high_at = _first_extreme(np.where(interior, path, -np.inf), starts, seg, np.maximum)
    low_path = np.where(interior, path, np.inf)
    low_path[high_at[need_high]] = np.inf  # a three-trade minute never needs both
    low_at = _first_extreme(low_path, starts, seg, np.minimum)
    price[high_at[need_high]] = high[need_high]
    price[low_at[need_low]] = low[need_low]
    price[starts[:-1]] = open_
    price[starts[1:] - 1] = close
    return ts, price, size, side, starts


def _first_extreme(values: np.ndarray, starts: np.ndarray, seg: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """Index of the first maximum (or minimum) of ``values`` within each segment."""
    extreme = reduce.reduceat(values, starts[:-1])
    hits = np.flatnonzero(values == extreme[seg])
    out = starts[:-1].copy()  # segments without a finite interior value point at their first trade
    found_seg, first = np.unique(seg[hits], return_index=True)
    out[found_seg] = hits[first]
    return out
