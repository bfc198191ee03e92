"""``market.bars_1m`` from ``market.trades``: incremental (only minutes that changed) and per day.

Incremental design: the trade writer marks each (venue, symbol, minute) it writes in
``market.bars_dirty``, in the same transaction as the trades, so late and backfilled trades mark the
old minutes they land in. (A watermark on insertion time was the alternative; it needs an indexed
insertion column on every trade and still misses rows of transactions that commit out of order.)

A minute must never be cleared while a write into it is uncommitted, or its trades would be missed.
So a rollup runs in two transactions:

1. Claim: take the advisory lock that every trade write holds shared, exclusively. That waits for
   in-flight writes to commit, then stamps the dirty rows with this run's token. Writers wait only
   for this short statement.
2. Compute, with a snapshot that sees every trade written before the claim: stream the claimed
   minutes' trades out (one ``COPY (SELECT ...) TO STDOUT``, one snapshot), compute their bars in
   numpy (``bar_compute``; PostgreSQL over ``numeric`` where int64 cannot keep them exact), stage
   them and write those new or changed, then delete the dirty rows still carrying the token. A
   write after the claim resets the token to null, so its minute stays dirty for the next run; rows
   a writer holds locked are skipped (``SKIP LOCKED``), never waited on, so rollup and writers
   cannot deadlock. If step 2 fails the stamped rows stay dirty and the next run (any token is
   re-claimed) computes them.

Bars: open/close are the first/last trade by (exchange_ts_ns, trade_id in byte order); VWAP is
sum(price*size)/sum(size) rounded half up to ``VWAP_SCALE`` decimals, exactly; buy volume sums
aggressor BUY. Bars computed from trades replace venue-candle bars (``source='rest'``) of the same minute.
"""

from __future__ import annotations

import datetime as dt
import select
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pyarrow as pa
from psycopg import pq, sql
from psycopg.conninfo import make_conninfo

from rrr_platform.storage import bar_compute
from rrr_platform.storage.partitions import (
    CREATE_LOCK_KEY,
    ensure_partitions,
    list_partitions,
    partition_name,
)
from rrr_platform.storage.writers import DIRTY_LOCK_KEY

VWAP_SCALE = bar_compute.VWAP_SCALE


def vwap_sql(notional: str, volume: str) -> str:
    """SQL for round(notional / volume, VWAP_SCALE) half away from zero, exact at any magnitude.

    PostgreSQL's numeric ``/`` keeps only ~16 significant digits (a VWAP of 1e14 would get 2
    decimals), so: integer division (``div`` truncates, exactly) at one more decimal, then ``round``;
    a truncated extra digit rounds half up exactly as the full quotient would.
    """
    extra = 10 ** (VWAP_SCALE + 1)
    return (
        f"round(div(({notional}) * {extra}, nullif({volume}, 0)) * 0.{'0' * VWAP_SCALE}1, {VWAP_SCALE})"
    )

# Open and close without ordered aggregates: each trade gets a sort key "exchange_ts_ns (19 digits),
# \x01, trade_id, \x01, price" compared bytewise, so min(key) is the first trade of the minute and
# max(key) the last, ties on the nanosecond broken by trade_id in byte order; the price is the text
# after the last \x01 (numeric text round-trips exactly, scale included). PostgreSQL 15 sorts every
# group for each ordered aggregate (array_agg(... ORDER BY ...)): ~20 µs per bar, more than the rest
# of the rollup at a few trades per bar. Grouping on the integer minute avoids date_trunc per trade.
_PRICE_OF_KEY = "reverse(split_part(reverse({}), chr(1), 1))::numeric"
_BAR_SELECT = f"""
    SELECT timestamptz '1970-01-01 00:00:00+00' + m * interval '1 minute' AS ts, venue, symbol,
           {_PRICE_OF_KEY.format("min(k)")} AS open, max(price) AS high, min(price) AS low,
           {_PRICE_OF_KEY.format("max(k)")} AS close, sum(size) AS volume,
           {vwap_sql("sum(price * size)", "sum(size)")} AS vwap, count(*) AS trade_count,
           coalesce(sum(size) FILTER (WHERE aggressor = 'BUY'), 0) AS buy_volume,
           sum(price * size) AS notional
    FROM (
        SELECT t.exchange_ts_ns / 60000000000 AS m, t.venue, t.symbol, t.price, t.size, t.aggressor,
               -- 19 digits from 2001 to 2286: padding only where needed saves a call per trade
               (CASE WHEN t.exchange_ts_ns >= 1000000000000000000 THEN t.exchange_ts_ns::text
                     ELSE lpad(t.exchange_ts_ns::text, 19, '0') END
                || chr(1) || t.trade_id || chr(1) || t.price::text) COLLATE "C" AS k
        {{source}}
    ) t
    GROUP BY m, venue, symbol
"""
_BAR_COLUMNS = "ts, venue, symbol, open, high, low, close, volume, vwap, trade_count, buy_volume, notional"
# Bars are computed into a temp table, then only new or changed bars are written: an
# INSERT ... ON CONFLICT DO UPDATE would lock (and so write) every existing bar, even unchanged ones.
_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS rrr_bars_stage (ts timestamptz, venue text, symbol text, open numeric,
        high numeric, low numeric, close numeric, volume numeric, vwap numeric, trade_count integer,
        buy_volume numeric, notional numeric) ON COMMIT DELETE ROWS;
    SET LOCAL work_mem = '256MB';  -- a day's groups aggregate in memory rather than spill (default 4 MB)
    SET LOCAL jit = off;  -- compiling this query costs more than it saves (measured: ~15% slower with JIT)
"""
_STAGE_DAY = f"INSERT INTO rrr_bars_stage ({_BAR_COLUMNS}) " + _BAR_SELECT.format(
    source="FROM market.trades t WHERE t.ts >= %(lo)s AND t.ts < %(hi)s"
)
# The claimed minutes' trades: one index probe per minute. OFFSET 0 keeps PostgreSQL from flattening
# the LATERAL subquery into a join, which it planned as a hash join over the whole trades partition
# (bars_dirty is small and rarely analysed): 0.8 s instead of ~20 ms for 200 minutes of 2M trades.
_CLAIMED_TRADES = """
    FROM market.bars_dirty d
    CROSS JOIN LATERAL (
        SELECT * FROM market.trades t
        WHERE t.venue = d.venue AND t.symbol = d.symbol
          AND t.ts >= d.minute AND t.ts < d.minute + interval '1 minute'
        OFFSET 0
    ) t
    WHERE d.claimed_by = %(token)s
"""
_STAGE_CLAIMED = f"INSERT INTO rrr_bars_stage ({_BAR_COLUMNS}) " + _BAR_SELECT.format(source=_CLAIMED_TRADES)
# The vectorised path (bar_compute): the same trades streamed out as CSV, bars computed in numpy.
_TRADES_DAY = f"SELECT {bar_compute.TRADE_SELECT} FROM market.trades t WHERE t.ts >= %(lo)s AND t.ts < %(hi)s"
_TRADES_CLAIMED = f"SELECT {bar_compute.TRADE_SELECT} {_CLAIMED_TRADES}"
COPY_CHUNK_BYTES = 1 << 24  # ~200k trades: parsed while the next chunk streams
_COPY_BARS_IN = f"COPY rrr_bars_stage ({_BAR_COLUMNS}) FROM STDIN (FORMAT csv)"
_SAME_KEY = "b.venue = s.venue AND b.symbol = s.symbol AND b.ts = s.ts AND b.ts >= %(lo)s AND b.ts <= %(hi)s"
_UPDATE_CHANGED = f"""
    UPDATE market.bars_1m b SET open = s.open, high = s.high, low = s.low, close = s.close, volume = s.volume,
        vwap = s.vwap, trade_count = s.trade_count, buy_volume = s.buy_volume, notional = s.notional,
        source = 'trades', updated_at = now()
    FROM rrr_bars_stage s
    WHERE {_SAME_KEY}
      AND (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count, b.buy_volume, b.notional,
           b.source)
          IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume, s.vwap, s.trade_count, s.buy_volume,
                            s.notional, 'trades')
"""
# ON CONFLICT only for a bar another rollup inserted since the NOT EXISTS looked.
_INSERT_NEW = f"""
    INSERT INTO market.bars_1m AS b ({_BAR_COLUMNS})
    SELECT {_BAR_COLUMNS} FROM rrr_bars_stage s
    WHERE NOT EXISTS (SELECT 1 FROM market.bars_1m b WHERE {_SAME_KEY})
    ON CONFLICT (venue, symbol, ts) DO UPDATE SET
        open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
        volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count,
        buy_volume = excluded.buy_volume, notional = excluded.notional, source = 'trades', updated_at = now()
"""


def _write_staged(conn: psycopg.Connection) -> int:
    """Write the staged bars that are new or changed; returns how many."""
    lo, hi = conn.execute("SELECT min(ts), max(ts) FROM rrr_bars_stage").fetchone() or (None, None)
    if lo is None:
        return 0
    # The range lets PostgreSQL touch only the bars partitions of these days.
    changed = conn.execute(_UPDATE_CHANGED, {"lo": lo, "hi": hi}).rowcount
    return changed + conn.execute(_INSERT_NEW, {"lo": lo, "hi": hi}).rowcount


def _wait(fd: int, event: int) -> None:
    """Block (GIL released) until ``fd`` is ready; poll, not select: select fails on fds >= 1024."""
    poller = select.poll()
    poller.register(fd, event)
    poller.poll()


def _copy_out(
    conn: psycopg.Connection,
    query: str,
    params: dict[str, object],
    on_chunk: Callable[[bytearray], None] | None = None,
    chunk_bytes: int | None = None,
) -> bytearray:
    """``COPY (query) TO STDOUT (FORMAT csv)`` into one buffer; or, with ``on_chunk``, handed over in
    chunks of whole rows (about ``chunk_bytes`` each) as they arrive, and the rest returned.

    Straight on libpq (psycopg's ``pgconn``): psycopg's ``Copy`` iterator costs several µs per row in
    Python (one CopyData message per row), this loop ~0.3 µs; over a day of trades that is seconds.
    Non-blocking reads with ``select`` waits, so another thread runs (GIL released) while this one
    waits for the server.
    """
    statement = psycopg.ClientCursor(conn).mogrify(f"COPY ({query}) TO STDOUT (FORMAT csv)", params)
    pgconn = conn.pgconn
    socket = pgconn.socket
    chunk_bytes = chunk_bytes or COPY_CHUNK_BYTES
    out = bytearray()
    with conn.lock:
        pgconn.send_query(statement.encode(conn.info.encoding))
        while pgconn.flush():  # psycopg runs libpq non-blocking: push the whole query out
            _wait(socket, select.POLLOUT)
        while pgconn.is_busy():
            _wait(socket, select.POLLIN)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is not None and result.status == pq.ExecStatus.COPY_OUT:
            get = pgconn.get_copy_data
            while True:
                nbytes, data = get(1)
                if nbytes > 0:
                    out += data
                    if on_chunk is not None and len(out) >= chunk_bytes:
                        on_chunk(out)
                        out = bytearray()
                elif nbytes == 0:  # no complete row buffered: wait for the server
                    _wait(socket, select.POLLIN)
                    pgconn.consume_input()
                else:  # -1: done, -2: failed (the error follows as a result)
                    break
            while pgconn.is_busy():
                _wait(socket, select.POLLIN)
                pgconn.consume_input()
            result = pgconn.get_result()
        error = None
        while result is not None:  # drain every result: the connection must end idle
            if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.COPY_OUT) and error is None:
                error = result
            result = pgconn.get_result()
    if error is not None:
        sqlstate = (error.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        message = (error.error_message or b"COPY failed").decode(errors="replace").strip()
        try:
            error_class = psycopg.errors.lookup(sqlstate)
        except KeyError:
            error_class = psycopg.DatabaseError
        raise error_class(message)
    return out


def _read_trades(
    conn: psycopg.Connection, query: str, params: dict[str, object], parser: Executor | None = None
) -> pa.Table:
    """The trades ``query`` selects, parsed; with ``parser``, each chunk parsed while the next streams."""
    if parser is None:
        return bar_compute.read_trades_csv(_copy_out(conn, query, params))
    parts: list[Future[pa.Table]] = []
    rest = _copy_out(
        conn, query, params, lambda chunk: parts.append(parser.submit(bar_compute.read_trades_csv, chunk))
    )
    tables = [part.result() for part in parts] + [bar_compute.read_trades_csv(rest)]
    return pa.concat_tables(tables).unify_dictionaries().combine_chunks()


# Bars of some trades: one table per part (None if any part cannot be kept exact in int64) and
# how many trades they came from.
_Bars = tuple[list[pa.Table] | None, int]


def _bars_of(
    conn: psycopg.Connection, query: str, params: dict[str, object], parser: Executor | None = None
) -> _Bars:
    trades = _read_trades(conn, query, params, parser)
    bars = bar_compute.compute_bars(trades)
    return (None if bars is None else [bars]), trades.num_rows


def _day_bars(conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> _Bars:
    """The bars of a day's trades, its two halves streamed and computed at once.

    The server's COPY output (~0.5 µs per trade) is the largest single cost: two backends share it
    over two connections; chunks are parsed while the next ones stream, and one half's bars are
    computed while the other streams. Each half is one statement after the claim, so it sees every
    trade the claim covers; a minute never spans the halves. Single stream when a second connection
    cannot be opened.
    """
    mid = lo + (hi - lo) / 2
    password = conn.info.password
    conninfo = make_conninfo(conn.info.dsn, password=password) if password else conn.info.dsn
    try:
        other = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError:
        return _bars_of(conn, _TRADES_DAY, {"lo": lo, "hi": hi})
    with other, ThreadPoolExecutor(1) as streamer, ThreadPoolExecutor(2) as parser:
        later = streamer.submit(_bars_of, other, _TRADES_DAY, {"lo": mid, "hi": hi}, parser)
        first, n_first = _bars_of(conn, _TRADES_DAY, {"lo": lo, "hi": mid}, parser)
        second, n_second = later.result()
    return (None if first is None or second is None else first + second), n_first + n_second


def _stage_bars(
    conn: psycopg.Connection,
    compute: Callable[[], _Bars],
    stage_sql: str,
    params: dict[str, object],
    vectorised: bool,
) -> int:
    """Stage the bars ``compute`` returns; returns how many trades they came from.

    Vectorised (bar_compute) unless asked not to or the values cannot stay exact in int64, then
    ``stage_sql`` (the same bars computed by PostgreSQL over ``numeric``).
    """
    conn.execute(_STAGE)
    if vectorised:
        parts, trades = compute()
        if parts is not None:
            with conn.cursor().copy(_COPY_BARS_IN) as copy:
                for bars in parts:  # parts may differ in decimal scales: each is its own CSV
                    if bars.num_rows:
                        copy.write(bar_compute.bars_csv(bars))
            return trades
    conn.execute(stage_sql, params)
    row = conn.execute("SELECT coalesce(sum(trade_count), 0) FROM rrr_bars_stage").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class RollupResult:
    minutes: int  # dirty minutes claimed (incremental), or bars from trades in the day (day)
    bars: int  # bars written: new or changed (an unchanged bar is left as it is)
    trades: int  # trades those bars were computed from


def _day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    lo = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return lo, lo + dt.timedelta(days=1)


def _claim(conn: psycopg.Connection, lo: dt.datetime | None, hi: dt.datetime | None) -> tuple[uuid.UUID, int]:
    if not conn.autocommit:
        # The claim must commit (and drop its lock) before the compute starts; see the module docstring.
        raise ValueError("the rollup needs an autocommit connection")
    token = uuid.uuid4()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DIRTY_LOCK_KEY,))
        cur = conn.execute(
            "UPDATE market.bars_dirty SET claimed_by = %(token)s"
            " WHERE (%(lo)s::timestamptz IS NULL OR minute >= %(lo)s)"
            " AND (%(hi)s::timestamptz IS NULL OR minute < %(hi)s)",
            {"token": token, "lo": lo, "hi": hi},
        )
        claimed = cur.rowcount
    return token, claimed


def _release(conn: psycopg.Connection, token: uuid.UUID) -> None:
    conn.execute(
        "DELETE FROM market.bars_dirty WHERE ctid IN"
        " (SELECT ctid FROM market.bars_dirty WHERE claimed_by = %s FOR UPDATE SKIP LOCKED)",
        (token,),
    )


def _ensure_bar_partitions(conn: psycopg.Connection, days: Iterable[dt.date]) -> None:
    days = sorted(set(days))
    if not days:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
        ensure_partitions(conn, "bars_1m", days)


def rollup_dirty(
    conn: psycopg.Connection,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    *,
    vectorised: bool = True,
) -> RollupResult:
    """Recompute the bars of every minute written since the last rollup (optionally: in [since, until)).

    ``vectorised=False`` computes the bars in SQL (the reference the vectorised path is tested against).
    """
    token, claimed = _claim(conn, since, until)
    if not claimed:
        return RollupResult(0, 0, 0)
    with conn.transaction():
        days = conn.execute(
            "SELECT DISTINCT (minute AT TIME ZONE 'UTC')::date FROM market.bars_dirty WHERE claimed_by = %s",
            (token,),
        ).fetchall()
        _ensure_bar_partitions(conn, (d for (d,) in days))
        trades = _stage_bars(
            conn,
            lambda: _bars_of(conn, _TRADES_CLAIMED, {"token": token}),
            _STAGE_CLAIMED,
            {"token": token},
            vectorised,
        )
        bars = _write_staged(conn)
        _release(conn, token)
    return RollupResult(claimed, bars, trades)


def rollup_day(conn: psycopg.Connection, day: dt.date, *, vectorised: bool = True) -> RollupResult:
    """Recompute every bar of ``day`` from its trades (the daily asset), clearing the day's dirty minutes."""
    lo, hi = _day_bounds(day)
    token, _ = _claim(conn, lo, hi)
    _ensure_bar_partitions(conn, [day])
    with conn.transaction():
        trades = _stage_bars(
            conn, lambda: _day_bars(conn, lo, hi), _STAGE_DAY, {"lo": lo, "hi": hi}, vectorised
        )
        bars = _write_staged(conn)
        _release(conn, token)
        minutes = conn.execute(
            "SELECT count(*) FROM market.bars_1m WHERE ts >= %s AND ts < %s AND source = 'trades'", (lo, hi)
        ).fetchone()
    return RollupResult(int(minutes[0]) if minutes else 0, bars, trades)


@dataclass(frozen=True)
class ReconcileMismatch:
    venue: str
    symbol: str
    minute: dt.datetime
    bar_volume: Decimal | None
    trade_volume: Decimal | None
    bar_count: int | None
    trade_count: int | None


def reconcile_day(
    conn: psycopg.Connection, day: dt.date, limit: int = 100
) -> tuple[int, list[ReconcileMismatch]]:
    """Compare each trade-derived bar of ``day`` with the trades of its minute: (minutes checked, mismatches).

    A minute mismatches when its volume or trade count differ, when trades have no bar, or when a
    bar from trades has no trades. A day whose trades partition retention dropped has nothing to
    reconcile: (0, []).
    """
    lo, hi = _day_bounds(day)
    if day not in list_partitions(conn, "trades").values():
        return 0, []
    rows = conn.execute(
        """
        WITH t AS (
            SELECT venue, symbol, date_trunc('minute', ts) AS minute, sum(size) AS volume, count(*) AS n
            FROM market.trades WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2, 3
        ), b AS (
            SELECT venue, symbol, ts AS minute, volume, trade_count AS n
            FROM market.bars_1m WHERE ts >= %(lo)s AND ts < %(hi)s AND source = 'trades'
        )
        SELECT coalesce(t.venue, b.venue), coalesce(t.symbol, b.symbol), coalesce(t.minute, b.minute),
               b.volume, t.volume, b.n, t.n
        FROM t FULL JOIN b ON t.venue = b.venue AND t.symbol = b.symbol AND t.minute = b.minute
        """,
        {"lo": lo, "hi": hi},
    ).fetchall()
    mismatches = [ReconcileMismatch(*row) for row in rows if row[3] != row[4] or row[5] != row[6]]
    return len(rows), mismatches[:limit]


def compact_bars_day(conn: psycopg.Connection, day: dt.date) -> bool:
    """Rewrite a finished day's bars partition in (venue, symbol, ts) order; False if it has no partition.

    Bars are written minute by minute for every instrument at once, so one instrument's day is spread
    over ~one heap page per bar; clustered, the 1,440 bars of a symbol-day sit on a few dozen pages and
    the bars query reads ~20x fewer (benchmarks/queries.py). CLUSTER locks the partition while it
    runs (about a second for a day): meant for days that are complete.
    """
    if day not in list_partitions(conn, "bars_1m").values():
        return False
    name = partition_name("bars_1m", day)
    conn.execute(
        sql.SQL("CLUSTER market.{} USING {}").format(sql.Identifier(name), sql.Identifier(f"{name}_pkey"))
    )
    conn.execute(sql.SQL("ANALYZE market.{}").format(sql.Identifier(name)))
    return True
