import pytest

from rrr_platform.settings import SettingsError, load_settings


def test_defaults_point_at_the_simulator_and_embedded_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RRR_POSTGRES_URL", "RRR_REDIS_URL", "MLFLOW_TRACKING_URI", "RRR_HOME"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert settings.postgres_url is None and settings.redis_url is None
    assert settings.binance_ws_url.startswith("ws://127.0.0.1")
    assert settings.mlflow_uri == f"sqlite:///{settings.home_dir / 'mlflow.db'}"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("RRR_HOME", str(tmp_path))
    monkeypatch.setenv("RRR_POSTGRES_URL", "postgresql://u@h:5432/db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = load_settings()
    assert settings.home_dir == tmp_path.resolve()
    assert settings.postgres_url == "postgresql://u@h:5432/db"
    assert settings.mlflow_uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("var", "value"),
    [("RRR_POSTGRES_URL", "mysql://x"), ("RRR_SIMULATOR_PORT", "seventy"), ("RRR_BINANCE_WS_URL", "http://x"),
     ("RRR_LOG_LEVEL", "LOUD")],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()


def test_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRR_POLYGON_API_KEY", "sekrit-key-123")
    settings = load_settings()
    assert settings.polygon_api_key.get_secret_value() == "sekrit-key-123"
    assert "sekrit" not in repr(settings) and "sekrit" not in str(settings.model_dump())
