import datetime as dt

import psycopg
import pytest

from rrr_platform.storage.migrate import available_migrations, migrate
from rrr_platform.storage.partitions import ensure_partitions, list_partitions


def test_migrations_create_the_schemas_and_are_safe_to_run_twice(fresh_pg_url: str) -> None:
    assert migrate(fresh_pg_url) == []  # the fixture already migrated it
    with psycopg.connect(fresh_pg_url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_schema IN ('market', 'ml')"
            )
        }
        recorded = [r[0] for r in conn.execute("SELECT name FROM rrr_schema_migrations ORDER BY version")]
    assert {"market.trades", "market.quotes", "market.bars_1m", "market.dead_letters", "market.gaps",
            "market.news", "ml.predictions", "ml.alias_history"} <= tables
    assert recorded == [m.name for m in available_migrations()]


def test_trades_are_idempotent_on_their_key(pg_conn: psycopg.Connection) -> None:
    day = dt.date(2026, 1, 5)
    ensure_partitions(pg_conn, "trades", [day])
    row = (dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC), "binance_spot", "BTC-USDT", "42", "94210.01", "0.0035",
           "SELL", 1767614400000000000, 1767614400000100000)
    insert = ("INSERT INTO market.trades (ts, venue, symbol, trade_id, price, size, aggressor,"
              " exchange_ts_ns, receive_ts_ns) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING")
    pg_conn.execute(insert, row)
    pg_conn.execute(insert, row)
    count, price = pg_conn.execute(
        "SELECT count(*), max(price)::text FROM market.trades WHERE trade_id = '42'").fetchone()
    assert count == 1 and price == "94210.01"  # exact decimal, not a float


def test_partitions_are_created_once_and_reject_rows_outside(pg_conn: psycopg.Connection) -> None:
    days = [dt.date(2026, 2, 1), dt.date(2026, 2, 2)]
    assert ensure_partitions(pg_conn, "quotes", days) == ["quotes_p20260201", "quotes_p20260202"]
    assert ensure_partitions(pg_conn, "quotes", days) == []
    assert set(list_partitions(pg_conn, "quotes").values()) >= set(days)
    with pytest.raises(psycopg.errors.CheckViolation):  # no partition for that day
        pg_conn.execute(
            "INSERT INTO market.quotes (ts, venue, symbol, receive_ts_ns) VALUES (%s, 'x', 'y', 1)",
            (dt.datetime(2030, 1, 1, tzinfo=dt.UTC),),
        )
