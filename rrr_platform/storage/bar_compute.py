"""Exact 1-minute bars from trades streamed out of PostgreSQL as CSV, aggregated with numpy/pyarrow.

Why not SQL: PostgreSQL aggregates ``numeric`` at ~3 µs per trade (sums of price x size, min/max,
the open/close sort key), so a day of trades took seconds per million. Here prices and sizes arrive
as their exact numeric text and become scaled int64 (``50000.25`` at scale 2 -> ``5000025``), so
every sum is an exact integer sum; the bars go back as decimal text with those scales. Exactness is
checked, never assumed: a value that is not a plain decimal (NaN, Infinity), more than 18 decimals,
or totals that could overflow int64 make ``compute_bars`` return None and the caller uses the SQL
path instead.

Grouping is by (venue, symbol, minute) with ``ufunc.at`` over dense group ids (no sort of the
trades). Open/close are the first/last trade by (exchange_ts_ns, trade_id in byte order), as in the
SQL path; trade ids are compared only where two trades share a group's first or last nanosecond.
VWAP is notional / volume rounded half away from zero to ``VWAP_SCALE`` decimals, as PostgreSQL's
``round`` does, computed with integers (exact, no intermediate rounding).
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rrr_platform.market.timeutil import NS_PER_MIN
from rrr_platform.market.types import BAR_VALUES

VWAP_SCALE = 12
MAX_SCALE = 18  # int64 holds 18 full decimal digits
_INT64_LIMIT = 2**63
# The columns ``TRADE_SELECT`` returns, in order (the CSV has no header).
TRADE_COLUMNS = ["exchange_ts_ns", "venue", "symbol", "trade_id", "price", "size", "buy"]
TRADE_SELECT = "t.exchange_ts_ns, t.venue, t.symbol, t.trade_id, t.price, t.size, t.aggressor = 'BUY'"
BAR_COLUMNS = ["ts", "venue", "symbol", *BAR_VALUES, "notional"]
_DICT = pa.dictionary(pa.int32(), pa.string())
_CONVERT = pacsv.ConvertOptions(
    column_types={
        "exchange_ts_ns": pa.int64(),
        "venue": _DICT,
        "symbol": _DICT,
        "trade_id": pa.string(),
        "price": pa.string(),
        "size": pa.string(),
        "buy": pa.bool_(),
    },
    true_values=["t"],
    false_values=["f"],
    strings_can_be_null=False,
    quoted_strings_can_be_null=False,
)


def read_trades_csv(data: bytes | bytearray | memoryview, use_threads: bool = False) -> pa.Table:
    """The CSV of ``COPY (SELECT TRADE_SELECT ...) TO STDOUT (FORMAT csv)`` as one-chunk columns.

    Single-threaded by default: on a shared 2-core machine the threaded reader measured slower.
    """
    if not data:  # pyarrow rejects an empty file
        return pa.schema([(name, _CONVERT.column_types[name]) for name in TRADE_COLUMNS]).empty_table()
    table = pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(
            column_names=TRADE_COLUMNS, block_size=1 << 26, use_threads=use_threads
        ),
        convert_options=_CONVERT,
    )
    return table.unify_dictionaries().combine_chunks()


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _numpy(values: pa.Array) -> np.ndarray:
    """A view of a fixed-width Arrow array without nulls. (``Array.to_numpy`` imports pandas, ~1 s on a
    process's first rollup.)"""
    dtype = np.dtype(str(values.type))  # int8 ... uint64: Arrow and numpy share these names
    data = values.buffers()[1]
    return np.frombuffer(data, dtype=dtype, count=len(values), offset=values.offset * dtype.itemsize)


def _arrow(values: np.ndarray) -> pa.Array:
    """The Arrow array of a numeric numpy array (``pa.array`` on numpy imports pandas too)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def scaled_integers(values: pa.Array | pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], int] | None:
    """Decimal text -> (int64 values at the largest scale present, that scale); None if not exact."""
    values = _array(values)
    if len(values) == 0:
        return np.empty(0, np.int64), 0
    dot = _numpy(pc.find_substring(values, "."))
    length = _numpy(pc.binary_length(values))
    scale = int(np.where(dot >= 0, length - dot - 1, 0).max())
    if scale > MAX_SCALE:
        return None
    try:  # rejects NaN, Infinity and anything that is not plain decimal text
        decimals = pc.cast(values, pa.decimal128(38, scale))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # decimal128 is two little-endian int64 words; it fits int64 where the high word is the sign.
    words = np.frombuffer(decimals.buffers()[1], dtype=np.int64)
    words = words[2 * decimals.offset : 2 * (decimals.offset + len(decimals))].reshape(-1, 2)
    low, high = words[:, 0], words[:, 1]
    if not np.array_equal(high, low >> 63):
        return None
    return low, scale


def _decimal_array(
    values: npt.NDArray[np.int64], scale: int, null: npt.NDArray[np.bool_] | None = None
) -> pa.Array:
    words = np.empty((len(values), 2), np.int64)
    words[:, 0] = values
    words[:, 1] = values >> 63
    validity = None
    if null is not None and null.any():
        validity = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(values), [validity, pa.py_buffer(words)])


def _fits(*bounds: int) -> bool:
    return all(abs(b) < _INT64_LIMIT for b in bounds)


def _vwap(
    notional: npt.NDArray[np.int64], volume: npt.NDArray[np.int64], price_scale: int
) -> pa.Array | None:
    """round(notional / volume, VWAP_SCALE), half away from zero; null where volume is 0.

    notional has scale price_scale + size_scale and volume size_scale, so
    vwap * 10^VWAP_SCALE = notional * 10^(VWAP_SCALE - price_scale) / volume. None if that does not
    fit int64 (a VWAP of 9.2 million or more).
    """
    up, down = max(0, VWAP_SCALE - price_scale), max(0, price_scale - VWAP_SCALE)
    zero = volume == 0
    if _fits(int(np.abs(notional).max()) * 10**up, int(np.abs(volume).max()) * 10**down):
        num = np.abs(notional) * 10**up
        den = np.where(zero, 1, np.abs(volume) * 10**down)
        quotient, remainder = np.divmod(num, den)
        quotient += remainder >= den - remainder  # half up, without 2 * remainder overflowing
        values = np.where((notional < 0) != (volume < 0), -quotient, quotient)
    else:  # the usual case (notional * 10^10 passes int64): Python integers, bar by bar
        out = []
        for n, v in zip(notional.tolist(), volume.tolist(), strict=True):
            den = abs(v) * 10**down or 1
            q, r = divmod(abs(n) * 10**up, den)
            q += r >= den - r
            out.append(-q if (n < 0) != (v < 0) else q)
        if out and not _fits(max(map(abs, out))):
            return None
        values = np.array(out, dtype=np.int64)
    return _decimal_array(values, VWAP_SCALE, null=zero)


def _first_rows(
    group: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], trade_id: pa.Array, groups: int, last: bool
) -> npt.NDArray[np.int64]:
    """Per group, the row of its first (or last) trade by (ts, trade_id bytewise)."""
    edge = np.full(groups, np.iinfo(np.int64).min if last else np.iinfo(np.int64).max)
    (np.maximum if last else np.minimum).at(edge, group, ts)
    candidates = np.flatnonzero(ts == edge[group])
    rows = np.full(groups, -1, np.int64)
    rows[group[candidates]] = candidates
    per_group = np.bincount(group[candidates], minlength=groups)
    tied = candidates[per_group[group[candidates]] > 1]
    if len(tied):  # several trades on the group's edge nanosecond: the trade id decides, bytewise
        order = pc.sort_indices(
            pa.table({"g": _arrow(group[tied]), "id": trade_id.take(_arrow(tied))}),
            sort_keys=[("g", "ascending"), ("id", "descending" if last else "ascending")],
        )
        ranked = tied[_numpy(order)]
        first_of_group = np.concatenate(([True], group[ranked][1:] != group[ranked][:-1]))
        rows[group[ranked[first_of_group]]] = ranked[first_of_group]
    return rows


def compute_bars(trades: pa.Table) -> pa.Table | None:
    """Bars (``BAR_COLUMNS``) from ``read_trades_csv`` output; None where int64 cannot keep them exact."""
    n = trades.num_rows
    prices = scaled_integers(trades["price"])
    sizes = scaled_integers(trades["size"])
    if prices is None or sizes is None:
        return None
    (price, price_scale), (size, size_scale) = prices, sizes
    if n == 0:
        return pa.table({name: pa.array([], pa.null()) for name in BAR_COLUMNS}).slice(0, 0)
    if not _fits(int(np.abs(price).max()) * int(np.abs(size).max())):
        return None
    notional_per_trade = price * size

    ts = _numpy(_array(trades["exchange_ts_ns"]))
    venue, symbol = _array(trades["venue"]), _array(trades["symbol"])
    n_symbols = len(symbol.dictionary)
    instrument = _numpy(venue.indices).astype(np.int64) * n_symbols + _numpy(symbol.indices)
    minute = ts // NS_PER_MIN
    first_minute = int(minute.min())
    span = int(minute.max()) - first_minute + 1
    key = instrument * span + (minute - first_minute)
    dense = len(venue.dictionary) * n_symbols * span
    if dense <= 4 * n + (1 << 20):  # small key space: the key is the group index
        groups, group = dense, key
        group_key = np.arange(dense, dtype=np.int64)
    else:  # e.g. many instruments over many days: number only the groups present
        group_key, group = np.unique(key, return_inverse=True)
        groups = len(group_key)

    # Every per-group sum must fit int64: bounded with float64 sums of magnitudes (2^62 leaves room
    # for their rounding error).
    for values in (size, notional_per_trade):
        if np.bincount(group, weights=np.abs(values), minlength=groups).max() >= 2**62:
            return None
    count = np.bincount(group, minlength=groups)
    present = np.flatnonzero(count)
    high = np.full(groups, np.iinfo(np.int64).min)
    np.maximum.at(high, group, price)
    low = np.full(groups, np.iinfo(np.int64).max)
    np.minimum.at(low, group, price)
    volume = np.zeros(groups, np.int64)
    np.add.at(volume, group, size)
    notional = np.zeros(groups, np.int64)
    np.add.at(notional, group, notional_per_trade)
    buy_volume = np.zeros(groups, np.int64)
    np.add.at(buy_volume, group, np.where(_numpy(pc.cast(_array(trades["buy"]), pa.int8())) != 0, size, 0))
    trade_id = _array(trades["trade_id"])
    open_row = _first_rows(group, ts, trade_id, groups, last=False)[present]
    close_row = _first_rows(group, ts, trade_id, groups, last=True)[present]

    vwap = _vwap(notional[present], volume[present], price_scale)
    if vwap is None:
        return None
    key_present = group_key[present]
    bar_instrument, bar_minute = key_present // span, key_present % span + first_minute
    bar_venue = venue.dictionary.take(_arrow(bar_instrument // n_symbols))
    bar_symbol = symbol.dictionary.take(_arrow(bar_instrument % n_symbols))
    return pa.table(
        {
            "ts": _arrow(bar_minute * (NS_PER_MIN // 1000)).cast(pa.timestamp("us", tz="UTC")),
            "venue": bar_venue,
            "symbol": bar_symbol,
            "open": _decimal_array(price[open_row], price_scale),
            "high": _decimal_array(high[present], price_scale),
            "low": _decimal_array(low[present], price_scale),
            "close": _decimal_array(price[close_row], price_scale),
            "volume": _decimal_array(volume[present], size_scale),
            "vwap": vwap,
            "trade_count": _arrow(count[present].astype(np.int32)),
            "buy_volume": _decimal_array(buy_volume[present], size_scale),
            "notional": _decimal_array(notional[present], price_scale + size_scale),
        }
    )


def bars_csv(bars: pa.Table) -> bytes:
    """``compute_bars`` output as CSV for ``COPY ... FROM STDIN (FORMAT csv)`` (null = empty field)."""
    sink = io.BytesIO()
    pacsv.write_csv(bars, sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue()
