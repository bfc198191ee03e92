"""Queries and rollup against real PostgreSQL, checked against pandas over the same trades.

The data set has late trades (written after a rollup, into old minutes), backfilled trades
(``is_replay``) and replayed duplicate batches, on three venues.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pandas as pd
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_S, datetime_to_ns
from rrr_platform.market.types import Trade
from rrr_platform.storage import rollup, writers
from rrr_platform.storage.queries import FRAME_COLUMNS, MarketQueries, open_pool
from rrr_platform.storage.query_stats import query_stats
from rrr_platform.storage.synthetic import synthetic_trades

pytestmark = pytest.mark.asyncio(loop_scope="session")

DAY = dt.date(2031, 3, 4)
DAY_NS = datetime_to_ns(dt.datetime(2031, 3, 4, tzinfo=dt.UTC))
HOUR = 3600 * NS_PER_S


@dataclass
class Dataset:
    base: str
    trades: pd.DataFrame  # every unique trade stored
    late_minutes: set[tuple[str, str, int]]  # marked dirty after the first rollup
    changed_minutes: set[tuple[str, str, int]]  # of those, the ones with new trades
    second_rollup: rollup.RollupResult


def _frame(trades: list[Trade]) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "venue": [t.venue for t in trades],
            "symbol": [t.symbol for t in trades],
            "trade_id": [t.trade_id for t in trades],
            "price": [t.price for t in trades],
            "size": [t.size for t in trades],
            "aggressor": [t.aggressor for t in trades],
            "exchange_ts_ns": [t.exchange_ts_ns for t in trades],
        }
    )
    df = df.drop_duplicates(["venue", "symbol", "trade_id", "exchange_ts_ns"])
    return df.sort_values(["exchange_ts_ns", "trade_id"], kind="stable").reset_index(drop=True)


def expected_bars(trades: pd.DataFrame, venue: str, symbol: str, width_ns: int) -> list[tuple]:
    df = trades[(trades.venue == venue) & (trades.symbol == symbol)].copy()
    df["bucket"] = df.exchange_ts_ns // width_ns * width_ns
    df["notional"] = [p * s for p, s in zip(df.price, df["size"], strict=True)]
    df["buy"] = [s if a == "BUY" else Decimal(0) for s, a in zip(df["size"], df.aggressor, strict=True)]
    out = []
    with localcontext() as ctx:
        ctx.prec = 60
        for bucket, g in df.groupby("bucket", sort=True):
            volume = sum(g["size"], Decimal(0))
            vwap = (sum(g.notional, Decimal(0)) / volume).quantize(Decimal("1e-12"), rounding=ROUND_HALF_UP)
            out.append(
                (
                    int(bucket),
                    g.price.iloc[0],
                    max(g.price),
                    min(g.price),
                    g.price.iloc[-1],
                    volume,
                    vwap,
                    len(g),
                    sum(g.buy, Decimal(0)),
                )
            )
    return out


def _bar_tuples(bars) -> list[tuple]:
    return [
        (b.ts_ns, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count, b.buy_volume) for b in bars
    ]


@pytest.fixture(scope="module")
def sync_conn(pg_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
async def pool(pg_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(pg_url, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def dataset(pg_url: str, sync_conn: psycopg.Connection) -> Dataset:
    base = "Q" + uuid.uuid4().hex[:6].upper()
    specs = [
        ("coinbase_exchange", f"{base}-USD", 3000),
        ("binance_spot", f"{base}-USDT", 2000),
        ("polygon", f"{base}-USD", 1500),
    ]
    first = []
    for i, (venue, symbol, n) in enumerate(specs):
        first += synthetic_trades(venue, symbol, DAY_NS, 3 * HOUR, n, seed=i)
    # Late: ids beyond the first set, times inside already rolled-up minutes. Backfill: older hour.
    late = synthetic_trades(
        "coinbase_exchange",
        f"{base}-USD",
        DAY_NS + 10 * NS_PER_MIN,
        20 * NS_PER_MIN,
        150,
        seed=10,
        first_id=100_000,
    )
    backfill = synthetic_trades(
        "binance_spot", f"{base}-USDT", DAY_NS - HOUR, HOUR, 120, seed=11, first_id=200_000, is_replay=True
    )
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for k in range(0, len(first), 700):
            await writers.write_trades(conn, first[k : k + 700])
        await writers.write_trades(conn, first[:700])  # a replayed batch
        lo = dt.datetime.combine(DAY - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        hi = lo + dt.timedelta(days=2)
        rollup.rollup_dirty(sync_conn, lo, hi)
        replayed = random.Random(3).sample(first, 40)  # duplicates in the late batch
        await writers.write_trades(conn, late + replayed)
        await writers.write_trades(conn, backfill)
    late_minutes = {(t.venue, t.symbol, t.exchange_ts_ns // NS_PER_MIN) for t in late + replayed + backfill}
    changed = {(t.venue, t.symbol, t.exchange_ts_ns // NS_PER_MIN) for t in late + backfill}
    second = rollup.rollup_dirty(sync_conn, lo, hi)
    return Dataset(base, _frame(first + late + backfill), late_minutes, changed, second)


async def test_second_rollup_recomputes_only_the_minutes_that_changed(dataset: Dataset) -> None:
    assert dataset.second_rollup.minutes == len(dataset.late_minutes)
    # Minutes that only received replayed duplicates are recomputed but unchanged, so not rewritten.
    assert len(dataset.changed_minutes) < len(dataset.late_minutes)
    assert dataset.second_rollup.bars == len(dataset.changed_minutes)


@pytest.mark.parametrize(
    "venue,quote", [("coinbase_exchange", "USD"), ("binance_spot", "USDT"), ("polygon", "USD")]
)
async def test_one_minute_bars_equal_pandas(dataset: Dataset, pool, venue: str, quote: str) -> None:
    symbol = f"{dataset.base}-{quote}"
    queries = MarketQueries(pool)
    bars = await queries.bars(symbol, DAY_NS - 2 * HOUR, DAY_NS + 4 * HOUR, venue=venue)
    expected = expected_bars(dataset.trades, venue, symbol, NS_PER_MIN)
    assert len(expected) > 100
    assert _bar_tuples(bars) == expected
    assert all(b.venue == venue and b.symbol == symbol for b in bars)


@pytest.mark.parametrize(
    "interval,width", [("5m", 5 * NS_PER_MIN), ("1h", 60 * NS_PER_MIN), ("1d", 1440 * NS_PER_MIN)]
)
async def test_coarser_bars_rolled_up_from_minutes_equal_pandas(
    dataset: Dataset, pool, interval: str, width: int
) -> None:
    symbol = f"{dataset.base}-USDT"
    bars = await MarketQueries(pool).bars(
        symbol, DAY_NS - 2 * HOUR, DAY_NS + 4 * HOUR, "binance_spot", interval
    )
    assert _bar_tuples(bars) == expected_bars(dataset.trades, "binance_spot", symbol, width)


async def test_bars_of_every_venue_and_a_subrange(dataset: Dataset, pool) -> None:
    symbol = f"{dataset.base}-USD"
    start, end = DAY_NS + 17 * NS_PER_MIN, DAY_NS + 43 * NS_PER_MIN
    bars = await MarketQueries(pool).bars(symbol, start, end)
    for venue in ("coinbase_exchange", "polygon"):
        expected = [
            b for b in expected_bars(dataset.trades, venue, symbol, NS_PER_MIN) if start <= b[0] < end
        ]
        assert _bar_tuples(b for b in bars if b.venue == venue) == expected
    assert {b.venue for b in bars} == {"coinbase_exchange", "polygon"}


async def test_last_price_as_of_equals_pandas(dataset: Dataset, pool) -> None:
    queries = MarketQueries(pool)
    df = dataset.trades
    rng = random.Random(5)
    probes = [int(t) for t in rng.sample(list(df.exchange_ts_ns), 15)]  # exact trade times (ties included)
    probes += [DAY_NS + rng.randrange(3 * HOUR) for _ in range(10)] + [DAY_NS - 2 * HOUR]
    for at in probes:
        for venue, symbol in (
            ("coinbase_exchange", f"{dataset.base}-USD"),
            ("polygon", f"{dataset.base}-USD"),
        ):
            past = df[(df.venue == venue) & (df.symbol == symbol) & (df.exchange_ts_ns <= at)]
            got = await queries.last_price(symbol, at, venue=venue)
            if past.empty:
                assert got is None
            else:
                last = past.iloc[-1]
                assert got is not None
                assert (got.price, got.trade_id, got.exchange_ts_ns) == (
                    last.price,
                    last.trade_id,
                    last.exchange_ts_ns,
                )
        anyv = await queries.last_price(f"{dataset.base}-USD", at)
        past = df[(df.symbol == f"{dataset.base}-USD") & (df.exchange_ts_ns <= at)]
        assert (anyv is None) == past.empty
        if anyv is not None:
            assert anyv.exchange_ts_ns == past.exchange_ts_ns.max()


async def test_stream_trades_yields_the_range_in_order_in_batches(dataset: Dataset, pool) -> None:
    symbol = f"{dataset.base}-USDT"
    start, end = DAY_NS - 30 * NS_PER_MIN, DAY_NS + 70 * NS_PER_MIN + 123
    streamed = [t async for t in MarketQueries(pool).stream_trades(symbol, start, end, batch_size=97)]
    df = dataset.trades
    want = df[(df.symbol == symbol) & (df.exchange_ts_ns >= start) & (df.exchange_ts_ns < end)]
    assert len(want) > 500
    assert [(t.trade_id, t.price, t.size, t.exchange_ts_ns) for t in streamed] == list(
        zip(want.trade_id, want.price, want["size"], want.exchange_ts_ns, strict=True)
    )
    assert {t.is_replay for t in streamed} == {True, False}  # backfilled and live trades


async def test_compare_venues_lines_up_one_instrument(dataset: Dataset, pool) -> None:
    rows = await MarketQueries(pool).compare_venues(dataset.base, DAY_NS, DAY_NS + 3 * HOUR, "1h")
    assert {(r.venue, r.symbol) for r in rows} == {
        ("coinbase_exchange", f"{dataset.base}-USD"),
        ("binance_spot", f"{dataset.base}-USDT"),
        ("polygon", f"{dataset.base}-USD"),
    }
    df = dataset.trades
    for r in rows:
        g = df[
            (df.venue == r.venue)
            & (df.symbol == r.symbol)
            & (df.exchange_ts_ns >= r.ts_ns)
            & (df.exchange_ts_ns < r.ts_ns + HOUR)
        ]
        assert r.close == g.price.iloc[-1]
        assert r.volume == sum(g["size"], Decimal(0))
    for ts in {r.ts_ns for r in rows}:
        closes = sorted(r.close for r in rows if r.ts_ns == ts)
        median = closes[len(closes) // 2]
        for r in (r for r in rows if r.ts_ns == ts):
            assert r.deviation_bps == pytest.approx(float((r.close - median) / median * 10_000))


async def test_rolled_up_day_reconciles_with_its_trades(dataset: Dataset, sync_conn) -> None:
    checked, mismatches = rollup.reconcile_day(sync_conn, DAY)
    assert checked >= 3 * 170 and mismatches == []
    # A trade slipped in behind the rollup's back (no dirty mark) is caught.
    sync_conn.execute(
        "INSERT INTO market.trades (ts, venue, symbol, trade_id, price, size, aggressor, exchange_ts_ns,"
        " receive_ts_ns) VALUES (%s, 'polygon', %s, 'sneaky', 1, 2, 'BUY', %s, 0)",
        (dt.datetime(2031, 3, 4, 0, 5, tzinfo=dt.UTC), f"{dataset.base}-USD", DAY_NS + 5 * NS_PER_MIN),
    )
    _, mismatches = rollup.reconcile_day(sync_conn, DAY)
    assert [(m.venue, m.trade_count - m.bar_count, m.trade_volume - m.bar_volume) for m in mismatches] == [
        ("polygon", 1, Decimal(2))
    ]
    result = rollup.rollup_day(sync_conn, DAY)
    assert result.trades == len(dataset.trades[dataset.trades.exchange_ts_ns >= DAY_NS]) + 1
    assert rollup.reconcile_day(sync_conn, DAY)[1] == []


async def test_gaps_report_and_query_timings(pg_url: str, pool, sync_conn, tmp_path) -> None:
    symbol = f"G{uuid.uuid4().hex[:6].upper()}-USD"
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        g1 = await writers.open_gap(conn, "binance_spot", symbol, "instrument", 10, 19)
        await writers.open_gap(conn, "binance_spot", symbol, "instrument", 30, 30)
        g3 = await writers.open_gap(conn, "binance_spot", symbol, "instrument", 40, 44)
        await writers.close_gap(conn, g1, 10)
        await writers.close_gap(conn, g3, 2, status="failed")
    queries = MarketQueries(pool)
    report = [r for r in await queries.gaps_report(venue="binance_spot") if r.symbol == symbol]
    assert [(r.gaps, r.open, r.backfilled, r.failed, r.missing, r.backfilled_trades) for r in report] == [
        (3, 1, 1, 1, 16, 12)
    ]
    for _ in range(5):
        await queries.bars(symbol, DAY_NS, DAY_NS + HOUR, venue="binance_spot")
    await queries.aclose()
    stats = {s.name: s for s in query_stats(sync_conn)}
    assert stats["bars_1m"].count >= 5 and stats["gaps_report"].count >= 1
    assert 0 < stats["bars_1m"].p50_ms <= stats["bars_1m"].p99_ms
    # `rrr status` prints them, from another process's point of view (a fresh connection).
    from click.testing import CliRunner

    from rrr_platform.cli import main

    env = {"RRR_POSTGRES_URL": pg_url, "RRR_REDIS_URL": "redis://127.0.0.1:6379/0", "RRR_HOME": str(tmp_path)}
    out = CliRunner().invoke(main, ["status"], env=env)
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if ln.startswith("bars_1m "))
    assert int(line.split()[1]) == stats["bars_1m"].count


@pytest.mark.parametrize("interval", ["1m", "15m"])
async def test_bars_frame_is_the_bars_as_floats(dataset: Dataset, pool, interval: str) -> None:
    symbol = f"{dataset.base}-USD"
    queries = MarketQueries(pool)
    bars = await queries.bars(symbol, DAY_NS, DAY_NS + 3 * HOUR, interval=interval)
    frame = await queries.bars_frame(symbol, DAY_NS, DAY_NS + 3 * HOUR, interval=interval)
    assert list(frame.columns) == FRAME_COLUMNS and len(frame) == len(bars) > 0
    assert list(frame.ts_ns) == [b.ts_ns for b in bars] and list(frame.venue) == [b.venue for b in bars]
    for col in ("open", "high", "low", "close", "volume", "vwap", "buy_volume"):
        assert frame[col].dtype == "float64"
        assert list(frame[col]) == [float(getattr(b, col)) for b in bars]
    assert list(frame.trade_count) == [b.trade_count for b in bars]


async def test_bars_arrow_is_the_frame_and_empty_ranges_keep_the_schema(dataset: Dataset, pool) -> None:
    symbol = f"{dataset.base}-USDT"
    queries = MarketQueries(pool)
    table = await queries.bars_arrow(symbol, DAY_NS - HOUR, DAY_NS + HOUR, venue="binance_spot")
    bars = await queries.bars(symbol, DAY_NS - HOUR, DAY_NS + HOUR, venue="binance_spot")
    assert table.column_names == FRAME_COLUMNS and table.num_rows == len(bars) > 60
    assert table["vwap"].to_pylist() == [float(b.vwap) for b in bars]
    assert table["ts_ns"].to_pylist() == [b.ts_ns for b in bars]
    empty = await queries.bars_frame(symbol, DAY_NS + 30 * HOUR, DAY_NS + 31 * HOUR)
    assert list(empty.columns) == FRAME_COLUMNS and len(empty) == 0
    assert empty["close"].dtype == "float64" and empty["ts_ns"].dtype == "int64"
