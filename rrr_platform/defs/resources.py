"""Dagster resources: thin ConfigurableResource wrappers over the plain-Python core."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
import redis

from rrr_platform.services import ensure_services
from rrr_platform.settings import load_settings
from rrr_platform.storage.migrate import migrate


class PostgresResource(dg.ConfigurableResource):
    """PostgreSQL: the configured URL, or the embedded server under RRR_HOME when none is set."""

    url: str | None = None

    def resolved_url(self) -> str:
        return self.url or ensure_services(load_settings()).postgres

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with psycopg.connect(self.resolved_url(), autocommit=True) as conn:
            yield conn

    def migrate(self) -> list[str]:
        return migrate(self.resolved_url())


class RedisResource(dg.ConfigurableResource):
    url: str | None = None
    prefix: str = "rrr:"

    def resolved_url(self) -> str:
        return self.url or ensure_services(load_settings()).redis

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.resolved_url())


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry; our own resource around MlflowClient (dagster-mlflow pins pandas<3)."""

    tracking_uri: str | None = None

    def resolved_uri(self) -> str:
        return self.tracking_uri or load_settings().mlflow_uri

    def client(self):  # -> mlflow.MlflowClient; imported lazily, mlflow is slow to import
        from mlflow import MlflowClient

        uri = self.resolved_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    artifact_root: str | None = None  # default: Settings.mlflow_artifact_root (under RRR_HOME)

    def registry(self):  # -> rrr_platform.ml.registry.Registry (lazy import, as above)
        from rrr_platform.ml.registry import Registry

        root = self.artifact_root or str(load_settings().mlflow_artifact_root)
        return Registry(self.resolved_uri(), root)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "postgres": PostgresResource(url=dg.EnvVar("RRR_POSTGRES_URL").get_value()),
        "redis": RedisResource(
            url=dg.EnvVar("RRR_REDIS_URL").get_value(),
            prefix=dg.EnvVar("RRR_REDIS_PREFIX").get_value() or "rrr:",
        ),
        "mlflow": MlflowResource(tracking_uri=load_settings().mlflow_tracking_uri),
    }
