"""The embedded default really starts a PostgreSQL and a Redis, accepts writes, and stops."""

import os
import subprocess
import sys

import psycopg
import redis

from rrr_platform import services
from rrr_platform.settings import load_settings
from rrr_platform.storage.migrate import migrate


def test_embedded_postgres_and_redis_start_accept_writes_and_stop(tmp_path) -> None:
    settings = load_settings(home=tmp_path / "home", postgres_url=None, redis_url=None)
    try:
        urls = services.ensure_services(settings)
        assert "host=" in urls.postgres and str(settings.home_dir) in urls.postgres
        assert migrate(urls.postgres)  # fresh server: every migration applies
        with psycopg.connect(urls.postgres) as conn:
            conn.execute("INSERT INTO market.news (id, published_at, title) VALUES ('n1', now(), 'hello')")
            conn.commit()
        with psycopg.connect(urls.postgres) as conn:
            assert conn.execute("SELECT title FROM market.news").fetchone() == ("hello",)
        client = redis.Redis.from_url(urls.redis)
        client.set("rrr:probe", "1")
        assert client.get("rrr:probe") == b"1"
        client.close()

        # A second process finds the running servers instead of starting new ones.
        again = services.ensure_services(settings)
        assert again == urls
        status = {s.name: s for s in services.service_status(settings)}
        assert status["postgres"].running and status["redis"].running
    finally:
        stopped = services.stop_services(settings)
    assert stopped == ["postgres", "redis"]
    status = {s.name: s for s in services.service_status(settings)}
    assert not status["postgres"].running and not status["redis"].running


def test_two_homes_never_share_an_embedded_redis(tmp_path) -> None:
    first, second = (load_settings(home=tmp_path / name, redis_url=None) for name in ("a", "b"))
    try:
        url_a = services.start_embedded_redis(first)
        url_b = services.start_embedded_redis(second)
        assert url_a != url_b
        redis.Redis.from_url(url_a).set("home", "a")
        assert redis.Redis.from_url(url_b).get("home") is None
        assert services.stop_embedded_redis(first)
        assert redis.Redis.from_url(url_b).ping()  # stopping one home leaves the other running
    finally:
        services.stop_embedded_redis(first)
        services.stop_embedded_redis(second)


def test_configured_urls_are_used_and_never_stopped(pg_url: str, redis_url: str, tmp_path) -> None:
    settings = load_settings(home=tmp_path, postgres_url=pg_url, redis_url=redis_url)
    urls = services.ensure_services(settings)
    assert (urls.postgres, urls.redis) == (pg_url, redis_url)
    assert services.stop_services(settings) == []
    assert not (tmp_path / "postgres").exists()


def test_cli_status_and_migrate_against_configured_servers(pg_url: str, redis_url: str, tmp_path) -> None:
    env = dict(os.environ, RRR_HOME=str(tmp_path), RRR_POSTGRES_URL=pg_url, RRR_REDIS_URL=redis_url)
    rrr = [sys.executable, "-m", "rrr_platform.cli"]
    out = subprocess.run([*rrr, "migrate"], env=env, capture_output=True, text=True, check=True).stdout
    assert "up to date" in out
    out = subprocess.run([*rrr, "status"], env=env, capture_output=True, text=True, check=True).stdout
    assert "postgres  running  external" in out and "redis     running  external" in out
    bad = subprocess.run([*rrr, "status"], env=dict(env, RRR_REDIS_URL="http://nope"), capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "RRR_REDIS_URL" in bad.stderr
