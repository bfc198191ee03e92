"""A killed ingest process loses nothing: the next run backfills what the dead one never committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg

from rrr_platform.market.types import BINANCE, COINBASE
from rrr_platform.simulator.model import MarketConfig
from rrr_platform.simulator.server import SimulatorConfig, SimulatorServer


def _ingest(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rrr_platform.cli", "ingest", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_sigkill_mid_stream_then_restart_loses_nothing(
    fresh_pg_url, redis_url, redis_prefix, tmp_path
) -> None:
    sim = SimulatorServer(
        SimulatorConfig(port=0, market=MarketConfig(trade_rate_scale=6.0))
    ).start_in_thread()
    try:
        env = dict(
            os.environ,
            RRR_HOME=str(tmp_path),
            RRR_POSTGRES_URL=fresh_pg_url,
            RRR_REDIS_URL=redis_url,
            RRR_REDIS_PREFIX=f"{redis_prefix}restart:",
            RRR_BINANCE_WS_URL=sim.url("binance"),
            RRR_BINANCE_REST_URL=sim.rest_url("binance"),
            RRR_COINBASE_WS_URL=sim.url("coinbase"),
            RRR_COINBASE_REST_URL=sim.rest_url("coinbase"),
        )
        first = _ingest(env, "--shard", "binance", "--shard", "coinbase")
        time.sleep(8)
        first.send_signal(signal.SIGKILL)  # no flush, no goodbye: whatever was in memory is gone
        first.wait(10)
        with psycopg.connect(fresh_pg_url) as conn:
            before = conn.execute("SELECT count(*) FROM market.trades").fetchone()[0]
        assert before > 0
        time.sleep(3)  # trades happen while nobody listens

        second = _ingest(env, "--shard", "binance", "--shard", "coinbase", "--duration", "8")
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out
        with psycopg.connect(fresh_pg_url) as conn:
            for venue in (BINANCE, COINBASE):
                rows = conn.execute(
                    "SELECT symbol, min(seq), max(seq), count(*), count(DISTINCT trade_id) FROM market.trades"
                    " WHERE venue = %s GROUP BY symbol",
                    (venue,),
                ).fetchall()
                assert rows
                for symbol, first_id, last_id, n, distinct in rows:
                    # Contiguous ids from the first trade ever stored to the last: the killed run's
                    # uncommitted trades and the downtime were backfilled, nothing twice.
                    assert n == distinct == last_id - first_id + 1, (venue, symbol, first_id, last_id, n)
            gaps = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'backfilled') FROM market.gaps"
            ).fetchone()
            assert gaps[0] > 0 and gaps[0] == gaps[1]
    finally:
        sim.stop_thread()
