"""Fast idempotent writers: binary COPY into a temp staging table, then one INSERT ... ON CONFLICT DO NOTHING.

Why this shape (benchmarks/storage_write.py measures it against a bare binary COPY):

- ``COPY`` cannot skip conflicting rows, so rows go to a per-session temp table first (no index, no
  WAL), and one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` moves them; its row count is the number
  inserted, the rest are duplicates (in the batch or already stored). One duplicate never fails a batch.
- Per-row Python work is what limits the writer, not PostgreSQL: psycopg's binary ``numeric`` dumper
  costs ~0.7 µs per Decimal, ``str(Decimal)`` ~0.1 µs. So prices and sizes travel as text and are cast
  server-side, and the partition key ``ts`` is computed server-side from the integer nanoseconds
  instead of building a ``datetime`` per row. Rows are formatted straight into one buffer with
  psycopg's C row formatter (one ``await`` per batch instead of one per row), falling back to the
  public ``write_row`` where that internal function is missing.
- The same transaction marks the batch's (venue, symbol, minute) in ``market.bars_dirty`` so the
  rollup recomputes exactly the minutes that changed, late and backfilled trades included. It holds
  a shared advisory lock that the rollup takes exclusively while it claims dirty minutes (see
  rollup.py): a minute is never cleared while a write into it is still uncommitted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal

import psycopg
from psycopg import errors as pg_errors

from rrr_platform.market.timeutil import NS_PER_DAY, ns_to_datetime
from rrr_platform.market.types import DeadLetter, Quote, Trade
from rrr_platform.storage.partitions import ensure_partitions_async, known_partitions

try:  # psycopg's C row formatter (psycopg 3.3, pinned); see the module docstring
    from psycopg._copy_base import format_row_binary as _format_row_binary
except ImportError:  # pragma: no cover - only with a different psycopg
    _format_row_binary = None

# Held shared by every trade write, exclusively by the rollup while it claims dirty minutes.
DIRTY_LOCK_KEY = 0x5252_5203
_EPOCH_DAY = dt.date(1970, 1, 1)
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
# ns -> timestamptz with integer arithmetic only (µs < 2**53, so the float8 factor is exact).
_TS_FROM_NS = "(timestamptz '1970-01-01 00:00:00+00' + ({col} / 1000) * interval '1 microsecond')"


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int


# ------------------------------------------------------------------------------------------- trades

_TRADE_COLUMNS = (
    "venue",
    "symbol",
    "trade_id",
    "price",
    "size",
    "aggressor",
    "exchange_ts_ns",
    "receive_ts_ns",
    "seq",
    "is_replay",
    "source_exchange",
)
_TRADE_COPY_TYPES = ["text", "text", "text", "text", "text", "text", "int8", "int8", "int8", "bool", "text"]
_TRADE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS rrr_trades_stage (venue text, symbol text, trade_id text,"
    " price text, size text, aggressor text, exchange_ts_ns bigint, receive_ts_ns bigint, seq bigint,"
    " is_replay boolean, source_exchange text) ON COMMIT DELETE ROWS"
)
_TRADE_INSERT = (
    "INSERT INTO market.trades (ts, venue, symbol, trade_id, price, size, aggressor, exchange_ts_ns,"
    " receive_ts_ns, seq, is_replay, source_exchange)"
    f" SELECT {_TS_FROM_NS.format(col='exchange_ts_ns')}, venue, symbol, trade_id, price::numeric,"
    " size::numeric, aggressor, exchange_ts_ns, receive_ts_ns, seq, is_replay, source_exchange"
    " FROM rrr_trades_stage ON CONFLICT DO NOTHING"
)
_TRADE_MARK_DIRTY = (
    "INSERT INTO market.bars_dirty (venue, symbol, minute)"
    " SELECT DISTINCT venue, symbol,"
    " timestamptz '1970-01-01 00:00:00+00' + (exchange_ts_ns / 60000000000) * interval '1 minute'"
    " FROM rrr_trades_stage ORDER BY 1, 2, 3"  # one lock order for every writer: no deadlocks
    " ON CONFLICT (venue, symbol, minute) DO UPDATE SET claimed_by = NULL, marked_at = now()"
    " WHERE market.bars_dirty.claimed_by IS NOT NULL"
)
_trade_fields = attrgetter(*_TRADE_COLUMNS)


def _trade_rows(trades: Iterable[Trade]) -> Iterator[tuple[Any, ...]]:
    # Decimals as text: see the module docstring. Validation upstream guarantees finite values.
    for v, s, tid, price, size, a, ex, rx, seq, rp, src in map(_trade_fields, trades):
        yield (v, s, tid, str(price), str(size), a, ex, rx, seq, rp, src)


def _days(ts_ns: Iterable[int]) -> list[dt.date]:
    return [_EPOCH_DAY + dt.timedelta(days=d) for d in {ns // NS_PER_DAY for ns in ts_ns}]


async def _copy_rows(
    cur: psycopg.AsyncCursor[Any], statement: str, types: list[str], rows: Iterable[Sequence[Any]]
) -> None:
    async with cur.copy(statement) as copy:
        copy.set_types(types)
        transformer = getattr(getattr(copy, "formatter", None), "transformer", None)
        if _format_row_binary is None or transformer is None:
            for row in rows:
                await copy.write_row(row)
            return
        buffer = bytearray(_COPY_SIGNATURE)
        for row in rows:
            _format_row_binary(row, transformer, buffer)
        buffer += _COPY_TRAILER
        await copy.write(buffer)


_DEADLOCK_RETRIES = 3


def _in_transaction(conn: psycopg.AsyncConnection) -> bool:
    """True inside a transaction the caller opened: ours is then a savepoint, with no commit of its own."""
    return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


async def _with_partitions(
    conn: psycopg.AsyncConnection, table: str, days: list[dt.date], write: Callable[[], Awaitable[int]]
) -> int:
    """Run ``write`` once its day partitions exist.

    Retried (safe: every write is idempotent) when retention dropped a partition this process thought
    existed, and when PostgreSQL broke a deadlock: a backfill and a live writer inserting the same
    trade keys in different orders can each wait on the other's uncommitted row.
    """
    await ensure_partitions_async(conn, table, days)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await write()
        except pg_errors.CheckViolation as exc:  # "no partition of relation ... found for row"
            if "no partition" not in str(exc) or attempt > 1:
                raise
            known_partitions.forget(conn, table)
            await ensure_partitions_async(conn, table, days)
        except pg_errors.DeadlockDetected:
            if attempt > _DEADLOCK_RETRIES:
                raise


async def write_trades(conn: psycopg.AsyncConnection, trades: Sequence[Trade]) -> WriteResult:
    """Store trades idempotently on (venue, symbol, trade_id, ts); duplicates are counted and skipped."""
    if not trades:
        return WriteResult(0, 0)

    async def write() -> int:
        in_callers_transaction = _in_transaction(conn)
        async with conn.transaction(), conn.cursor() as cur:
            # One round trip for both: a parameterless execute may hold several statements.
            await cur.execute(f"{_TRADE_STAGE}; SELECT pg_advisory_xact_lock_shared({DIRTY_LOCK_KEY})")
            await _copy_rows(
                cur,
                f"COPY rrr_trades_stage ({', '.join(_TRADE_COLUMNS)}) FROM STDIN (FORMAT BINARY)",
                _TRADE_COPY_TYPES,
                _trade_rows(trades),
            )
            await cur.execute(_TRADE_INSERT)
            inserted = max(cur.rowcount, 0)
            if inserted:
                await cur.execute(_TRADE_MARK_DIRTY)
            if in_callers_transaction:  # no commit empties the staging table before the next batch
                await cur.execute("DELETE FROM rrr_trades_stage")
            return inserted

    inserted = await _with_partitions(conn, "trades", _days(t.exchange_ts_ns for t in trades), write)
    return WriteResult(inserted, len(trades) - inserted)


# ------------------------------------------------------------------------------------------- quotes

_QUOTE_COLUMNS = (
    "ts_ns",
    "venue",
    "symbol",
    "bid_px",
    "bid_sz",
    "ask_px",
    "ask_sz",
    "exchange_ts_ns",
    "receive_ts_ns",
    "seq",
)
_QUOTE_COPY_TYPES = ["int8", "text", "text", "text", "text", "text", "text", "int8", "int8", "int8"]
_QUOTE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS rrr_quotes_stage (ts_ns bigint, venue text, symbol text, bid_px text,"
    " bid_sz text, ask_px text, ask_sz text, exchange_ts_ns bigint, receive_ts_ns bigint, seq bigint)"
    " ON COMMIT DELETE ROWS"
)
_QUOTE_INSERT = (
    "INSERT INTO market.quotes (ts, venue, symbol, bid_px, bid_sz, ask_px, ask_sz, exchange_ts_ns,"
    " receive_ts_ns, seq)"
    f" SELECT {_TS_FROM_NS.format(col='ts_ns')}, venue, symbol, bid_px::numeric, bid_sz::numeric,"
    " ask_px::numeric, ask_sz::numeric, exchange_ts_ns, receive_ts_ns, seq"
    " FROM rrr_quotes_stage ON CONFLICT DO NOTHING"
)


def _quote_rows(quotes: Iterable[Quote]) -> Iterator[tuple[Any, ...]]:
    for q in quotes:
        yield (
            q.ts_ns,
            q.venue,
            q.symbol,
            None if q.bid_px is None else str(q.bid_px),
            None if q.bid_sz is None else str(q.bid_sz),
            None if q.ask_px is None else str(q.ask_px),
            None if q.ask_sz is None else str(q.ask_sz),
            q.exchange_ts_ns,
            q.receive_ts_ns,
            q.seq,
        )


async def write_quotes(conn: psycopg.AsyncConnection, quotes: Sequence[Quote]) -> WriteResult:
    """Store quotes idempotently on (venue, symbol, ts, receive_ts_ns)."""
    if not quotes:
        return WriteResult(0, 0)

    async def write() -> int:
        in_callers_transaction = _in_transaction(conn)
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(_QUOTE_STAGE)
            await _copy_rows(
                cur,
                f"COPY rrr_quotes_stage ({', '.join(_QUOTE_COLUMNS)}) FROM STDIN (FORMAT BINARY)",
                _QUOTE_COPY_TYPES,
                _quote_rows(quotes),
            )
            await cur.execute(_QUOTE_INSERT)
            inserted = max(cur.rowcount, 0)
            if in_callers_transaction:
                await cur.execute("DELETE FROM rrr_quotes_stage")
            return inserted

    inserted = await _with_partitions(conn, "quotes", _days(q.ts_ns for q in quotes), write)
    return WriteResult(inserted, len(quotes) - inserted)


# ------------------------------------------------------------------------------- dead letters, gaps


async def write_dead_letters(conn: psycopg.AsyncConnection, letters: Sequence[DeadLetter]) -> int:
    """Store rejected frames with their raw bytes and reason; returns the number stored."""
    if not letters:
        return 0
    async with conn.transaction(), conn.cursor() as cur:
        await _copy_rows(
            cur,
            "COPY market.dead_letters (received_at, receive_ts_ns, venue, reason, payload, connection_id)"
            " FROM STDIN (FORMAT BINARY)",
            ["timestamptz", "int8", "text", "text", "bytea", "text"],
            (
                (
                    ns_to_datetime(d.receive_ts_ns),
                    d.receive_ts_ns,
                    d.venue,
                    d.reason,
                    bytes(d.payload),
                    d.connection_id or None,
                )
                for d in letters
            ),
        )
    return len(letters)


GapStatus = Literal["backfilled", "failed"]


async def open_gap(
    conn: psycopg.AsyncConnection,
    venue: str,
    symbol: str,
    scope: str,
    first_missing: int,
    last_missing: int,
    detail: str = "",
) -> int:
    """Record a detected gap (status 'open'); returns its id for ``close_gap``."""
    if last_missing < first_missing:
        raise ValueError(f"gap range reversed: {first_missing}..{last_missing}")
    cur = await conn.execute(
        "INSERT INTO market.gaps (venue, symbol, scope, first_missing, last_missing, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (venue, symbol, scope, first_missing, last_missing, detail or None),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def close_gap(
    conn: psycopg.AsyncConnection,
    gap_id: int,
    backfilled_count: int,
    status: GapStatus = "backfilled",
    detail: str = "",
) -> None:
    if status not in ("backfilled", "failed"):
        raise ValueError(f"gap status must be 'backfilled' or 'failed', not {status!r}")
    cur = await conn.execute(
        "UPDATE market.gaps SET status = %s, backfilled_count = %s, backfilled_at = now(),"
        " detail = coalesce(nullif(%s, ''), detail) WHERE id = %s",
        (status, backfilled_count, detail, gap_id),
    )
    if cur.rowcount != 1:
        raise LookupError(f"no gap with id {gap_id}")
