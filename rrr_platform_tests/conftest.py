"""Shared fixtures: every test session gets its own PostgreSQL database and Redis key prefix.

The servers are the real ones at RRR_TEST_POSTGRES_URL / RRR_TEST_REDIS_URL (defaults: the local
servers on 127.0.0.1). The database is created and migrated once per session and dropped at the end;
every key under the session's Redis prefix is deleted at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg.conninfo import conninfo_to_dict

from rrr_platform.settings import Settings, load_settings
from rrr_platform.storage.migrate import migrate

TEST_POSTGRES_URL = os.environ.get("RRR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("RRR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SESSION_TAG = uuid.uuid4().hex[:10]


def _url_with_db(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def create_database(prefix: str = "rrr_test") -> str:
    """A fresh, migrated database on the test server; returns its URL (drop with drop_database)."""
    name = f"{prefix}_{SESSION_TAG}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(TEST_POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _url_with_db(TEST_POSTGRES_URL, name)
    migrate(url)
    return url


def drop_database(url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(TEST_POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture
def pg_conn(pg_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A database of the test's own, for tests that need an empty schema."""
    url = create_database("rrr_test_fresh")
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"rrr-test-{SESSION_TAG}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str) -> Settings:
    """Settings pointing at this session's database and key prefix, with RRR_HOME in a temp dir."""
    return load_settings(home=tmp_path / "rrr", postgres_url=pg_url, redis_url=redis_url,
                         redis_prefix=redis_prefix)


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, made once (creating one takes ~8 s)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}", registry_uri=f"sqlite:///{path}").search_registered_models()
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template_db: Path) -> str:
    """A real MLflow tracking/registry store of the test's own (a copy of the template)."""
    import shutil

    target = tmp_path / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_template_db, target)
    return f"sqlite:///{target}"
