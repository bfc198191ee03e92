"""One typed settings object, read from ``RRR_*`` environment variables.

A bad value fails at start with a message naming the variable (``SettingsError``). Secrets are
``SecretStr``: their repr is masked, so logging the settings object never leaks a key.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RRR_"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    home: Path = Field(default=Path(".rrr"), description="Where embedded services and data live")
    postgres_url: str | None = Field(default=None, description="PostgreSQL URL; unset = embedded")
    redis_url: str | None = Field(default=None, description="Redis URL; unset = embedded")
    redis_prefix: str = Field(default="rrr:", description="Prefix of every Redis key")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RRR_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; unset = SQLite under RRR_HOME",
    )

    # Venue endpoints: the local simulator by default, the real venue one setting away.
    binance_ws_url: str = "ws://127.0.0.1:8765/binance"
    binance_rest_url: str = "http://127.0.0.1:8765/binance"
    coinbase_ws_url: str = "ws://127.0.0.1:8765/coinbase"
    coinbase_rest_url: str = "http://127.0.0.1:8765/coinbase"
    polygon_ws_url: str = "ws://127.0.0.1:8765/polygon/crypto"
    polygon_stocks_ws_url: str = "ws://127.0.0.1:8765/polygon/stocks"
    polygon_rest_url: str = "http://127.0.0.1:8765/polygon"
    polygon_api_key: SecretStr = SecretStr("simulator")
    binance_api_key: SecretStr | None = None  # market data needs none; kept for signed endpoints
    coinbase_api_key: SecretStr | None = None

    # What the ingest shards subscribe to (comma-separated): crypto bases are quoted in USDT on
    # Binance and USD on Coinbase and Polygon; equities stream from Polygon.
    crypto_bases: str = "BTC,ETH,SOL,XRP,DOGE,ADA,AVAX,LINK"
    equities: str = "AAPL,MSFT,NVDA,AMZN,GOOGL,TSLA"

    simulator_host: str = "127.0.0.1"
    simulator_port: int = Field(default=8765, ge=1, le=65535)
    simulator_seed: int = 7

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("postgres_url")
    @classmethod
    def _postgres_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("binance_ws_url", "coinbase_ws_url", "polygon_ws_url", "polygon_stocks_ws_url")
    @classmethod
    def _ws_scheme(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/")

    @field_validator("binance_rest_url", "coinbase_rest_url", "polygon_rest_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("crypto_bases", "equities")
    @classmethod
    def _symbol_list(cls, value: str) -> str:
        items = [item.strip().upper() for item in value.split(",") if item.strip()]
        if any(not item.replace(".", "").isalnum() for item in items):
            raise ValueError("must be a comma-separated list of tickers, e.g. BTC,ETH")
        return ",".join(items)

    @property
    def crypto_base_list(self) -> list[str]:
        return [b for b in self.crypto_bases.split(",") if b]

    @property
    def equity_list(self) -> list[str]:
        return [e for e in self.equities.split(",") if e]

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home_dir / "mlflow-artifacts"


def _env_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    if field.isupper():  # an alias such as MLFLOW_TRACKING_URI is already the variable name
        return field
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into named ones."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{_env_name(err['loc'])}={os.environ.get(_env_name(err['loc']), '<unset>')!r}: {err['msg']}"
            if "api_key" not in str(err["loc"])
            else f"{_env_name(err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
