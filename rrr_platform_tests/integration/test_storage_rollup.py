"""Incremental rollup against real PostgreSQL: dirty minutes, the claim protocol, in-flight writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import pytest

from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_S, datetime_to_ns
from rrr_platform.market.types import Trade
from rrr_platform.storage import bar_compute, rollup, writers
from rrr_platform.storage.synthetic import synthetic_trades

DAY = dt.date(2031, 5, 6)
DAY_NS = datetime_to_ns(dt.datetime(2031, 5, 6, tzinfo=dt.UTC))
LO = dt.datetime(2031, 5, 6, tzinfo=dt.UTC)
HI = LO + dt.timedelta(days=1)


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        rollup.rollup_dirty(c, LO, HI)  # start from a clean slate for this day
        yield c


def _symbol() -> str:
    return f"R{uuid.uuid4().hex[:6].upper()}-USD"


def _bars(conn: psycopg.Connection, symbol: str) -> dict[int, tuple]:
    rows = conn.execute(
        "SELECT ts, trade_count, volume, close, updated_at, source FROM market.bars_1m"
        " WHERE symbol = %s ORDER BY ts",
        (symbol,),
    ).fetchall()
    return {datetime_to_ns(r[0]): r[1:] for r in rows}


async def _write(url: str, trades) -> writers.WriteResult:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        return await writers.write_trades(c, trades)


async def test_nothing_dirty_means_nothing_recomputed(pg_url: str, conn: psycopg.Connection) -> None:
    sym = _symbol()
    await _write(pg_url, synthetic_trades("polygon", sym, DAY_NS, 5 * NS_PER_MIN, 50, seed=1))
    first = rollup.rollup_dirty(conn, LO, HI)
    assert first.minutes == 5 and first.bars == 5 and first.trades == 50
    before = _bars(conn, sym)
    assert rollup.rollup_dirty(conn, LO, HI) == rollup.RollupResult(0, 0, 0)
    assert _bars(conn, sym) == before  # updated_at unchanged: not rewritten


async def test_late_trade_updates_only_its_minute(pg_url: str, conn: psycopg.Connection) -> None:
    sym = _symbol()
    await _write(pg_url, synthetic_trades("polygon", sym, DAY_NS, 5 * NS_PER_MIN, 50, seed=2))
    rollup.rollup_dirty(conn, LO, HI)
    before = _bars(conn, sym)
    late = synthetic_trades("polygon", sym, DAY_NS + 2 * NS_PER_MIN, 10 * NS_PER_S, 3, seed=3, first_id=900)
    await _write(pg_url, late)
    result = rollup.rollup_dirty(conn, LO, HI)
    assert (result.minutes, result.bars) == (1, 1)
    after = _bars(conn, sym)
    minute = DAY_NS + 2 * NS_PER_MIN
    assert after[minute][0] == before[minute][0] + 3
    assert after[minute][1] == before[minute][1] + sum(t.size for t in late)
    assert {k: v for k, v in after.items() if k != minute} == {k: v for k, v in before.items() if k != minute}


async def test_rest_bar_is_replaced_by_the_bar_from_trades(pg_url: str, conn: psycopg.Connection) -> None:
    sym = _symbol()
    rollup._ensure_bar_partitions(conn, [DAY])
    conn.execute(
        "INSERT INTO market.bars_1m (ts, venue, symbol, open, high, low, close, volume, vwap, trade_count,"
        " source) VALUES (%s, 'polygon', %s, 1, 1, 1, 1, 99, 1, 7, 'rest')",
        (LO, sym),
    )
    trades = synthetic_trades("polygon", sym, DAY_NS, NS_PER_MIN, 4, seed=4)
    await _write(pg_url, trades)
    rollup.rollup_dirty(conn, LO, HI)
    count, volume, close, _, source = _bars(conn, sym)[DAY_NS]
    assert (count, volume, close, source) == (4, sum(t.size for t in trades), trades[-1].price, "trades")


async def test_claim_waits_for_a_write_in_flight_and_includes_it(
    pg_url: str, conn: psycopg.Connection
) -> None:
    sym = _symbol()
    trades = synthetic_trades("polygon", sym, DAY_NS + 30 * NS_PER_MIN, NS_PER_MIN, 10, seed=5)
    done = threading.Event()
    results: list[rollup.RollupResult] = []

    def run_rollup() -> None:
        with psycopg.connect(pg_url, autocommit=True) as other:
            results.append(rollup.rollup_dirty(other, LO, HI))
        done.set()

    thread = threading.Thread(target=run_rollup)
    async with (
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as writer,
        writer.transaction(),  # the write stays uncommitted until this block ends
    ):
        await writers.write_trades(writer, trades)
        thread.start()
        await asyncio.sleep(0.5)
        assert not done.is_set()  # the claim waits for the uncommitted write
    await asyncio.to_thread(thread.join, 30)
    assert done.is_set()
    assert results[0].trades >= 10
    assert _bars(conn, sym)[DAY_NS + 30 * NS_PER_MIN][0] == 10


async def test_write_after_the_claim_keeps_its_minute_dirty(pg_url: str, conn: psycopg.Connection) -> None:
    sym = _symbol()
    await _write(pg_url, synthetic_trades("polygon", sym, DAY_NS + 40 * NS_PER_MIN, NS_PER_MIN, 5, seed=6))
    token, claimed = rollup._claim(conn, LO, HI)
    assert claimed >= 1
    # Arrives after the claim: the compute's snapshot may miss it, so its mark must survive the release.
    await _write(
        pg_url, synthetic_trades("polygon", sym, DAY_NS + 40 * NS_PER_MIN, NS_PER_MIN, 2, seed=7, first_id=50)
    )
    rollup._release(conn, token)
    left = conn.execute("SELECT claimed_by FROM market.bars_dirty WHERE symbol = %s", (sym,)).fetchall()
    assert left == [(None,)]
    rollup.rollup_dirty(conn, LO, HI)
    assert _bars(conn, sym)[DAY_NS + 40 * NS_PER_MIN][0] == 7


def test_rollup_needs_autocommit(pg_url: str) -> None:
    with psycopg.connect(pg_url) as c, pytest.raises(ValueError, match="autocommit"):
        rollup.rollup_dirty(c)


async def test_buy_volume_and_vwap_of_a_minute(pg_url: str, conn: psycopg.Connection) -> None:
    sym = _symbol()
    trades = synthetic_trades("polygon", sym, DAY_NS + 50 * NS_PER_MIN, NS_PER_MIN, 30, seed=8)
    await _write(pg_url, trades)
    rollup.rollup_dirty(conn, LO, HI)
    vwap, buy, notional = conn.execute(
        "SELECT vwap, buy_volume, notional FROM market.bars_1m WHERE symbol = %s", (sym,)
    ).fetchone()
    assert notional == sum(t.price * t.size for t in trades)
    assert buy == sum((t.size for t in trades if t.aggressor == "BUY"), Decimal(0))
    assert abs(vwap - notional / sum(t.size for t in trades)) < Decimal("1e-12")


async def test_open_and_close_before_2001_when_nanoseconds_have_18_digits(pg_url: str) -> None:
    sym = _symbol()
    minute_ns = datetime_to_ns(dt.datetime(1999, 12, 31, 23, 59, tzinfo=dt.UTC))
    assert minute_ns < 10**18
    trades = synthetic_trades("polygon", sym, minute_ns, NS_PER_MIN, 12, seed=9)
    await _write(pg_url, trades)
    with psycopg.connect(pg_url, autocommit=True) as c:
        rollup.rollup_dirty(
            c, dt.datetime(1999, 12, 31, tzinfo=dt.UTC), dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        )
        row = c.execute(
            "SELECT open, close, trade_count FROM market.bars_1m WHERE symbol = %s", (sym,)
        ).fetchone()
    ordered = sorted(trades, key=lambda t: (t.exchange_ts_ns, t.trade_id))
    assert row == (ordered[0].price, ordered[-1].price, 12)


# ------------------------------------------------------------------ the vectorised path (bar_compute)


def _trade(sym: str, tid: str, ts_ns: int, price: str, size: str, aggressor: str = "BUY") -> Trade:
    return Trade(
        venue="polygon",
        symbol=sym,
        venue_symbol=sym,
        trade_id=tid,
        price=Decimal(price),
        size=Decimal(size),
        aggressor=aggressor,
        exchange_ts_ns=ts_ns,
        receive_ts_ns=ts_ns,
    )


def _stored_bars(conn: psycopg.Connection, symbol: str) -> list[tuple]:
    return conn.execute(
        "SELECT ts, open, high, low, close, volume, vwap, trade_count, buy_volume, notional"
        " FROM market.bars_1m WHERE symbol = %s ORDER BY ts",
        (symbol,),
    ).fetchall()


async def test_vectorised_bars_equal_the_sql_bars(pg_url: str, conn: psycopg.Connection) -> None:
    sym = _symbol()
    m0, m1, m2 = (DAY_NS + k * NS_PER_MIN for k in (60, 61, 62))
    trades = [
        # First and last nanosecond shared: trade ids decide bytewise ("10" < "9"), not by arrival.
        _trade(sym, "9", m0 + 5, "100.5", "1"),
        _trade(sym, "10", m0 + 5, "100.25", "2.5", "SELL"),
        _trade(sym, "11", m0 + 30, "101", "0.000001", "UNKNOWN"),
        _trade(sym, "b", m0 + 59 * NS_PER_S, "99.125", "3"),
        _trade(sym, "a", m0 + 59 * NS_PER_S, "99.5", "4"),
        # Zero-size trades only: no VWAP.
        _trade(sym, "20", m1 + 1, "7", "0"),
        _trade(sym, "21", m1 + 2, "8", "0"),
        # Mixed scales and a 12-decimal VWAP that is rounded half up.
        _trade(sym, "30", m2 + 1, "0.000000000001", "1"),
        _trade(sym, "31", m2 + 2, "0.000000000002", "1"),
    ]
    await _write(pg_url, trades)
    rollup.rollup_dirty(conn, LO, HI)
    vectorised = _stored_bars(conn, sym)
    assert [row[1:5] for row in vectorised] == [
        (Decimal("100.25"), Decimal("101"), Decimal("99.125"), Decimal("99.125")),
        (Decimal(7), Decimal(8), Decimal(7), Decimal(8)),
        (Decimal("1e-12"), Decimal("2e-12"), Decimal("1e-12"), Decimal("2e-12")),
    ]
    assert [row[5:] for row in vectorised] == [
        (
            Decimal("10.500001"),
            (Decimal("1046.500101") / Decimal("10.500001")).quantize(Decimal("1e-12"), ROUND_HALF_UP),
            5,
            Decimal("8"),
            sum(t.price * t.size for t in trades[:5]),
        ),
        (Decimal(0), None, 2, Decimal(0), Decimal(0)),
        (Decimal(2), Decimal("2e-12"), 2, Decimal(2), Decimal("3e-12")),
    ]
    # The SQL path over the same day finds nothing to change: every bar of the day is equal.
    assert rollup.rollup_day(conn, DAY, vectorised=False).bars == 0
    assert _stored_bars(conn, sym) == vectorised


async def test_values_beyond_int64_fall_back_to_sql_and_stay_exact(
    pg_url: str, conn: psycopg.Connection
) -> None:
    sym = _symbol()
    minute = DAY_NS + 70 * NS_PER_MIN
    # price x size = 1e22 at scale 3: more than int64 holds, so PostgreSQL computes this day's bars.
    trades = [
        _trade(sym, "1", minute + 1, "123456789012345.6", "99999999.01"),
        _trade(sym, "2", minute + 2, "0.1", "1"),
    ]
    table = bar_compute.read_trades_csv(
        b"".join(
            f"{t.exchange_ts_ns},polygon,{sym},{t.trade_id},{t.price},{t.size},t\n".encode() for t in trades
        )
    )
    assert bar_compute.compute_bars(table) is None
    await _write(pg_url, trades)
    result = rollup.rollup_dirty(conn, LO, HI)
    assert result.trades == 2
    (row,) = _stored_bars(conn, sym)
    notional = sum(t.price * t.size for t in trades)
    assert row[1:] == (
        Decimal("123456789012345.6"),
        Decimal("123456789012345.6"),
        Decimal("0.1"),
        Decimal("0.1"),
        Decimal("100000000.01"),
        (notional / Decimal("100000000.01")).quantize(Decimal("1e-12")),
        2,
        Decimal("100000000.01"),
        notional,
    )


def test_compute_bars_rejects_what_is_not_a_plain_decimal() -> None:
    for price in ("NaN", "Infinity", "1.0000000000000000001"):  # the last: 19 decimals
        table = bar_compute.read_trades_csv(f"1,polygon,X-USD,1,{price},1,t\n".encode())
        assert bar_compute.compute_bars(table) is None, price
    table = bar_compute.read_trades_csv(
        b"60000000001,polygon,X-USD,1,2.5,4,t\n60000000002,polygon,X-USD,2,3,1,f\n"
    )
    bars = bar_compute.compute_bars(table)
    assert bars is not None and bars.to_pylist() == [
        {
            "ts": dt.datetime(1970, 1, 1, 0, 1, tzinfo=dt.UTC),
            "venue": "polygon",
            "symbol": "X-USD",
            "open": Decimal("2.5"),
            "high": Decimal("3.0"),
            "low": Decimal("2.5"),
            "close": Decimal("3.0"),
            "volume": Decimal(5),
            "vwap": Decimal("2.600000000000"),
            "trade_count": 2,
            "buy_volume": Decimal(4),
            "notional": Decimal("13.0"),
        }
    ]


def test_copy_out_raises_the_server_error_and_leaves_the_connection_usable(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        rollup._copy_out(conn, "SELECT g / (g - 3) FROM generate_series(1, 5) g", {})
    with pytest.raises(psycopg.errors.UndefinedTable):
        rollup._copy_out(conn, "SELECT * FROM market.no_such_table", {})
    assert rollup._copy_out(conn, "SELECT %(x)s::int, 'a,b'", {"x": 7}) == bytearray(b'7,"a,b"\n')
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_day_without_trades_rolls_up_to_nothing(conn: psycopg.Connection) -> None:
    assert rollup.rollup_day(conn, dt.date(2031, 5, 9)) == rollup.RollupResult(0, 0, 0)


async def test_a_day_streamed_in_halves_and_chunks_equals_the_sql_bars(
    pg_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = dt.date(2031, 5, 7)
    day_ns = datetime_to_ns(dt.datetime(2031, 5, 7, tzinfo=dt.UTC))
    a, b, late = _symbol(), _symbol(), _symbol()
    trades = synthetic_trades("polygon", a, day_ns, 86_400 * NS_PER_S, 400, seed=20)
    trades += synthetic_trades("coinbase_exchange", b, day_ns, 86_400 * NS_PER_S, 300, seed=21)
    trades += synthetic_trades("polygon", late, day_ns + 13 * 3600 * NS_PER_S, 3600 * NS_PER_S, 199, seed=22)
    # The second half's prices have 4 decimals, the first half's 2: the halves' bars differ in scale.
    trades.append(_trade(late, "x", day_ns + 20 * 3600 * NS_PER_S, "123.4567", "0.5"))
    await _write(pg_url, trades)
    monkeypatch.setattr(rollup, "COPY_CHUNK_BYTES", 2_000)  # dozens of chunks per half
    result = rollup.rollup_day(conn, day)
    assert result.trades == 900
    assert result.bars == len({(t.venue, t.symbol, t.exchange_ts_ns // NS_PER_MIN) for t in trades})
    # Second half only: its dictionary of symbols differs from the first half's.
    assert conn.execute(
        "SELECT sum(trade_count) FROM market.bars_1m WHERE symbol = %s", (late,)
    ).fetchone() == (200,)
    assert rollup.rollup_day(conn, day, vectorised=False).bars == 0
