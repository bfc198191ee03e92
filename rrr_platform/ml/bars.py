"""1-minute bars from trades in columnar numpy form, vectorised.

Input: ``ts_ns`` (int64 ns), ``price`` (float64, or int64 scaled integers for exact prices), ``size``
(float64 or scaled int64), ``side`` (int8: +1 buy aggressor, -1 sell, 0 unknown). Trades are grouped
by minute with ``np.*.reduceat`` over the run boundaries, so the cost is a few passes over the arrays.
Input already in time order (the normal case) is used as is; otherwise it is stably sorted first.

With integer (exact) prices, open/high/low/close stay exact integers in the caller's scale; VWAP is
a float (a ratio). Bad input (mismatched lengths, NaN or non-positive prices, negative sizes, unknown
side codes) raises ``BarInputError`` naming the problem and the first offending index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rrr_platform.market.timeutil import NS_PER_MIN

SIDE_BUY = 1
SIDE_SELL = -1
SIDE_UNKNOWN = 0
SIDE_CODES = {"BUY": SIDE_BUY, "SELL": SIDE_SELL, "UNKNOWN": SIDE_UNKNOWN}


class BarInputError(ValueError):
    """The trade arrays cannot be turned into bars; the message says why and where."""


@dataclass(frozen=True)
class Bars:
    """Columnar 1-minute bars, one row per minute that had at least one trade, in time order."""

    ts_ns: npt.NDArray[np.int64]  # start of the minute
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: npt.NDArray[np.float64]
    trade_count: npt.NDArray[np.int64]
    buy_volume: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_ns)

    def to_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def side_codes(aggressors: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """``['BUY', 'SELL', 'UNKNOWN', ...]`` -> int8 codes (+1, -1, 0)."""
    values = np.asarray(aggressors)
    out = np.zeros(len(values), dtype=np.int8)
    out[values == "BUY"] = SIDE_BUY
    out[values == "SELL"] = SIDE_SELL
    known = (values == "BUY") | (values == "SELL") | (values == "UNKNOWN")
    if not known.all():
        bad = int(np.flatnonzero(~known)[0])
        raise BarInputError(f"unknown aggressor {values[bad].item()!r} at index {bad}")
    return out


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _validate(ts_ns: np.ndarray, price: np.ndarray, size: np.ndarray, side: np.ndarray) -> None:
    n = len(ts_ns)
    if not (len(price) == len(size) == len(side) == n):
        raise BarInputError(
            f"arrays differ in length: ts_ns={n}, price={len(price)}, size={len(size)}, side={len(side)}"
        )
    if ts_ns.dtype.kind not in "iu":
        raise BarInputError(f"ts_ns must be integer nanoseconds, got dtype {ts_ns.dtype}")
    for name, values in (("price", price), ("size", size)):
        if values.dtype.kind not in "iuf":
            raise BarInputError(f"{name} must be float or scaled integer, got dtype {values.dtype}")
    bad_price = ~(price > 0)  # also catches NaN
    if bad_price.any():
        i = _first_bad(bad_price)
        raise BarInputError(f"price must be positive and finite: {price[i].item()!r} at index {i}")
    if price.dtype.kind == "f" and not np.isfinite(price).all():
        i = _first_bad(~np.isfinite(price))
        raise BarInputError(f"price must be positive and finite: {price[i].item()!r} at index {i}")
    bad_size = ~(size >= 0)
    if size.dtype.kind == "f":
        bad_size |= ~np.isfinite(size)
    if bad_size.any():
        i = _first_bad(bad_size)
        raise BarInputError(f"size must be finite and >= 0: {size[i].item()!r} at index {i}")
    bad_side = (side != SIDE_BUY) & (side != SIDE_SELL) & (side != SIDE_UNKNOWN)
    if bad_side.any():
        i = _first_bad(bad_side)
        raise BarInputError(f"side must be +1, -1 or 0: {side[i].item()!r} at index {i}")


def build_bars_1m(
    ts_ns: npt.ArrayLike,
    price: npt.ArrayLike,
    size: npt.ArrayLike,
    side: npt.ArrayLike,
    *,
    validate: bool = True,
) -> Bars:
    """1-minute OHLCV bars with VWAP, trade count and buy (aggressor) volume, for one instrument."""
    ts = np.asarray(ts_ns)
    px = np.asarray(price)
    sz = np.asarray(size)
    sd = np.asarray(side)
    if validate:
        _validate(ts, px, sz, sd)
    if len(ts) == 0:
        empty_f = np.empty(0, dtype=np.float64)
        return Bars(
            np.empty(0, np.int64),
            px[:0],
            px[:0],
            px[:0],
            px[:0],
            sz[:0],
            empty_f,
            np.empty(0, np.int64),
            sz[:0],
        )
    ts = ts.astype(np.int64, copy=False)
    if not (ts[1:] >= ts[:-1]).all():
        order = np.argsort(ts, kind="stable")  # stable: same-time trades keep their arrival order
        ts, px, sz, sd = ts[order], px[order], sz[order], sd[order]
    minute = ts // NS_PER_MIN
    starts = np.concatenate(([0], np.flatnonzero(minute[1:] != minute[:-1]) + 1))
    ends = np.concatenate((starts[1:], [len(ts)]))
    volume = np.add.reduceat(sz, starts)
    # Notional in float64: an int64 price*size product in a fine scale can overflow.
    notional = np.add.reduceat(px.astype(np.float64) * sz.astype(np.float64), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = notional / volume.astype(np.float64)
    vwap = np.where(volume == 0, px[ends - 1].astype(np.float64), vwap)
    buy_volume = np.add.reduceat(np.where(sd == SIDE_BUY, sz, np.zeros_like(sz)), starts)
    return Bars(
        ts_ns=minute[starts] * NS_PER_MIN,
        open=px[starts],
        high=np.maximum.reduceat(px, starts),
        low=np.minimum.reduceat(px, starts),
        close=px[ends - 1],
        volume=volume,
        vwap=vwap,
        trade_count=(ends - starts).astype(np.int64),
        buy_volume=buy_volume,
    )
