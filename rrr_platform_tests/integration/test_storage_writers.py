"""Writers against real PostgreSQL: idempotency, exact decimals, partitions on demand, dead letters, gaps."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import psycopg
import pytest

from rrr_platform.market.timeutil import NS_PER_DAY, NS_PER_S, datetime_to_ns
from rrr_platform.market.types import DeadLetter, Quote, Trade
from rrr_platform.storage import partitions, writers

DAY0 = datetime_to_ns(dt.datetime(2026, 11, 2, tzinfo=dt.UTC))


@pytest.fixture
async def aconn(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    yield conn
    await conn.close()


def _symbol() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}-USD"


def _trade(
    symbol: str,
    trade_id: int,
    ts_ns: int,
    price: str = "100.5",
    size: str = "0.25",
    venue: str = "coinbase_exchange",
    **extra: object,
) -> Trade:
    return Trade(
        venue=venue,
        symbol=symbol,
        venue_symbol=symbol,
        trade_id=str(trade_id),
        price=Decimal(price),
        size=Decimal(size),
        aggressor="BUY",
        exchange_ts_ns=ts_ns,
        receive_ts_ns=ts_ns + 1_000,
        **extra,
    )  # type: ignore[arg-type]


def _stored(conn: psycopg.Connection, symbol: str) -> list[tuple]:
    return conn.execute(
        "SELECT trade_id, price, size, ts, exchange_ts_ns, receive_ts_ns, seq, is_replay, source_exchange"
        " FROM market.trades WHERE symbol = %s ORDER BY exchange_ts_ns, trade_id",
        (symbol,),
    ).fetchall()


async def test_replays_and_in_batch_duplicates_are_counted_and_skipped(aconn, pg_conn) -> None:
    sym = _symbol()
    batch = [_trade(sym, i, DAY0 + i * NS_PER_S) for i in range(50)]
    first = await writers.write_trades(aconn, batch)
    assert first == writers.WriteResult(inserted=50, duplicates=0)

    replay = await writers.write_trades(aconn, batch)
    assert replay == writers.WriteResult(inserted=0, duplicates=50)

    # New rows mixed with stored ones and repeated inside the batch: the batch is never dropped.
    mixed = batch[:10] + [_trade(sym, 100 + i, DAY0 + i * NS_PER_S) for i in range(5)] * 2
    result = await writers.write_trades(aconn, mixed)
    assert result == writers.WriteResult(inserted=5, duplicates=15)
    assert len(_stored(pg_conn, sym)) == 55


async def test_same_trade_id_at_another_time_is_another_trade(aconn, pg_conn) -> None:
    sym = _symbol()
    result = await writers.write_trades(aconn, [_trade(sym, 1, DAY0), _trade(sym, 1, DAY0 + 1_000)])
    assert result.inserted == 2


async def test_decimals_timestamps_and_optional_fields_round_trip_exactly(aconn, pg_conn) -> None:
    sym = _symbol()
    prices = ["0.00000001", "123456789.123456789", "1.50", "1E-8", "99999.99999999999999", "7"]
    ts = DAY0 + 123_456_789  # sub-µs part kept in exchange_ts_ns; ts holds the µs
    trades = [
        _trade(
            sym,
            i,
            ts + i,
            price=p,
            size=p,
            seq=i * 10 if i % 2 else None,
            is_replay=bool(i % 2),
            source_exchange="X" if i == 3 else None,
        )
        for i, p in enumerate(prices)
    ]
    await writers.write_trades(aconn, trades)
    rows = _stored(pg_conn, sym)
    assert len(rows) == len(prices)
    for trade, row in zip(trades, rows, strict=True):
        trade_id, price, size, ts_col, ex_ns, rx_ns, seq, replay, src = row
        assert trade_id == trade.trade_id
        assert price == trade.price and size == trade.size
        assert ex_ns == trade.exchange_ts_ns and rx_ns == trade.receive_ts_ns
        assert datetime_to_ns(ts_col) == trade.exchange_ts_ns // 1000 * 1000
        assert (seq, replay, src) == (trade.seq, trade.is_replay, trade.source_exchange)
    # The scale written is the scale stored: "1.50" stays 1.50, not 1.5.
    assert str(rows[2][1]) == "1.50"


async def test_partitions_are_created_on_demand_for_old_and_new_days(aconn, pg_conn) -> None:
    sym = _symbol()
    old_day = dt.date(2024, 2, 29)
    old_ns = datetime_to_ns(dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.UTC))
    trades = [
        _trade(sym, 1, old_ns),
        _trade(sym, 2, old_ns + NS_PER_S),
        _trade(sym, 3, DAY0 + 5 * NS_PER_DAY),
    ]
    result = await writers.write_trades(aconn, trades)
    assert result.inserted == 3
    existing = partitions.list_partitions(pg_conn, "trades")
    assert {old_day, dt.date(2024, 3, 1), dt.date(2026, 11, 7)} <= set(existing.values())


async def test_write_recovers_when_a_known_partition_was_dropped(aconn, pg_conn) -> None:
    sym = _symbol()
    ns = datetime_to_ns(dt.datetime(2023, 5, 5, 12, tzinfo=dt.UTC))
    assert (await writers.write_trades(aconn, [_trade(sym, 1, ns)])).inserted == 1
    pg_conn.execute("DROP TABLE market.trades_p20230505")  # behind the writer's partition cache
    assert (await writers.write_trades(aconn, [_trade(sym, 1, ns)])).inserted == 1


async def test_written_minutes_are_marked_dirty_for_the_rollup(aconn, pg_conn) -> None:
    sym = _symbol()
    minute = 60 * NS_PER_S
    await writers.write_trades(
        aconn, [_trade(sym, i, DAY0 + i * 20 * NS_PER_S) for i in range(6)]
    )  # 2 minutes
    marked = pg_conn.execute(
        "SELECT minute FROM market.bars_dirty WHERE symbol = %s ORDER BY minute", (sym,)
    ).fetchall()
    assert [datetime_to_ns(m) for (m,) in marked] == [DAY0, DAY0 + minute]


async def test_quotes_are_idempotent_and_keep_missing_sides(aconn, pg_conn) -> None:
    sym = _symbol()
    quotes = [
        Quote(
            venue="polygon",
            symbol=sym,
            venue_symbol=sym,
            bid_px=Decimal("10.01"),
            bid_sz=Decimal("3"),
            ask_px=None,
            ask_sz=None,
            receive_ts_ns=DAY0 + 5,
            exchange_ts_ns=DAY0 + 1,
        ),
        Quote(
            venue="polygon",
            symbol=sym,
            venue_symbol=sym,
            bid_px=None,
            bid_sz=None,
            ask_px=Decimal("10.02"),
            ask_sz=Decimal("0.5"),
            receive_ts_ns=DAY0 + 2_000_000,
        ),
    ]
    assert await writers.write_quotes(aconn, quotes) == writers.WriteResult(2, 0)
    assert await writers.write_quotes(aconn, quotes) == writers.WriteResult(0, 2)
    rows = pg_conn.execute(
        "SELECT bid_px, bid_sz, ask_px, ask_sz, exchange_ts_ns, ts FROM market.quotes WHERE symbol = %s"
        " ORDER BY receive_ts_ns",
        (sym,),
    ).fetchall()
    assert rows[0][:5] == (Decimal("10.01"), Decimal("3"), None, None, DAY0 + 1)
    assert rows[1][:5] == (None, None, Decimal("10.02"), Decimal("0.5"), None)
    assert datetime_to_ns(rows[1][5]) == DAY0 + 2_000_000  # no exchange time: receive time


async def test_dead_letters_keep_raw_bytes_and_reason(aconn, pg_conn) -> None:
    tag = uuid.uuid4().hex
    payloads = [b'{"broken": ', b"\x00\xff\xfe binary \r\n\t\\", "ümlaut".encode()]
    letters = [
        DeadLetter(
            venue="binance_spot",
            reason=f"{tag}:{i}",
            payload=p,
            receive_ts_ns=DAY0 + i,
            connection_id="c1" if i else "",
        )
        for i, p in enumerate(payloads)
    ]
    assert await writers.write_dead_letters(aconn, letters) == 3
    rows = pg_conn.execute(
        "SELECT reason, payload, receive_ts_ns, connection_id FROM market.dead_letters WHERE reason LIKE %s"
        " ORDER BY reason",
        (f"{tag}:%",),
    ).fetchall()
    assert [bytes(r[1]) for r in rows] == payloads
    assert [r[2] for r in rows] == [DAY0, DAY0 + 1, DAY0 + 2]
    assert [r[3] for r in rows] == [None, "c1", "c1"]


async def test_gaps_open_and_close(aconn, pg_conn) -> None:
    sym = _symbol()
    gap_id = await writers.open_gap(aconn, "binance_spot", sym, "instrument", 101, 105, "ids skipped")
    row = pg_conn.execute(
        "SELECT status, first_missing, last_missing FROM market.gaps WHERE id = %s", (gap_id,)
    ).fetchone()
    assert row == ("open", 101, 105)
    await writers.close_gap(aconn, gap_id, 5)
    row = pg_conn.execute(
        "SELECT status, backfilled_count, backfilled_at IS NOT NULL, detail FROM market.gaps WHERE id = %s",
        (gap_id,),
    ).fetchone()
    assert row == ("backfilled", 5, True, "ids skipped")
    with pytest.raises(ValueError, match="status"):
        await writers.close_gap(aconn, gap_id, 0, status="done")  # type: ignore[arg-type]
    with pytest.raises(LookupError):
        await writers.close_gap(aconn, 10**12, 0)
    with pytest.raises(ValueError, match="reversed"):
        await writers.open_gap(aconn, "binance_spot", sym, "instrument", 9, 3)


async def test_writers_work_inside_a_callers_transaction(pg_url: str, pg_conn) -> None:
    sym = _symbol()
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:  # not autocommit
        await conn.execute("SELECT 1")  # the caller's transaction is open
        first = await writers.write_trades(conn, [_trade(sym, 1, DAY0)])
        second = await writers.write_trades(conn, [_trade(sym, 2, DAY0), _trade(sym, 1, DAY0)])
        await conn.commit()
    assert (first.inserted, second.inserted, second.duplicates) == (1, 1, 1)
    assert len(_stored(pg_conn, sym)) == 2
