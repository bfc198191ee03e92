"""Retention against real PostgreSQL: the dry run says exactly what the real run then drops."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from rrr_platform.storage.partitions import ensure_partitions, list_partitions
from rrr_platform.storage.retention import RetentionPolicy, plan_retention, run_retention

TODAY = dt.date(2026, 11, 20)


def _days(*offsets: int) -> list[dt.date]:
    return [TODAY + dt.timedelta(days=k) for k in offsets]


def _state(conn: psycopg.Connection) -> dict[str, set[dt.date]]:
    return {t: set(list_partitions(conn, t).values()) for t in ("trades", "quotes", "bars_1m")}


def test_dry_run_says_what_the_run_then_drops_and_creates(fresh_pg_url: str) -> None:
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        for table in ("trades", "quotes", "bars_1m"):
            ensure_partitions(conn, table, _days(-40, -31, -30, -29, -2, 0, 1))
        ensure_partitions(conn, "bars_1m", _days(-800, -730, -729))
        conn.execute(
            "INSERT INTO market.trades (ts, venue, symbol, trade_id, price, size, aggressor, exchange_ts_ns,"
            " receive_ts_ns) VALUES (%s, 'polygon', 'X', '1', 1, 1, 'BUY', 0, 0)",
            (dt.datetime(2026, 10, 11, 12, tzinfo=dt.UTC),),
        )
        conn.execute(
            "INSERT INTO market.bars_dirty (venue, symbol, minute) VALUES ('polygon', 'X', %s),"
            " ('polygon', 'X', %s)",
            (dt.datetime(2026, 10, 11, 12, tzinfo=dt.UTC), dt.datetime(2026, 11, 19, 12, tzinfo=dt.UTC)),
        )
        before = _state(conn)
        policy = RetentionPolicy(trades_days=30, quotes_days=3, bars_days=730, ahead_days=2)

        dry = run_retention(conn, policy, today=TODAY, dry_run=True)
        assert _state(conn) == before  # a dry run changes nothing
        assert dry.drop == {
            "trades": _days(-40, -31, -30),  # keeping 30 days keeps TODAY-29 .. TODAY
            "quotes": _days(-40, -31, -30, -29),  # TODAY-2 is within 3 days
            "bars_1m": _days(-800, -730),
        }
        assert dry.create == {t: _days(2) for t in ("trades", "quotes", "bars_1m")}
        assert "drop market.trades_p20261011" in dry.describe()

        done = run_retention(conn, policy, today=TODAY)
        assert done == dry
        after = _state(conn)
        for table in before:
            assert after[table] == (before[table] - set(dry.drop[table])) | set(dry.create[table])
        # Dirty minutes of dropped trade days go with them; others stay.
        dirty = conn.execute("SELECT minute::date FROM market.bars_dirty").fetchall()
        assert [d for (d,) in dirty] == [dt.date(2026, 11, 19)]
        # Nothing left to do.
        again = plan_retention(conn, policy, today=TODAY)
        assert again.dropped_count == 0 and again.created_count == 0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="trades_days"):
        RetentionPolicy(trades_days=0)
    with pytest.raises(ValueError, match="ahead_days"):
        RetentionPolicy(ahead_days=-1)
