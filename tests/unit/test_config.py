"""Config: strict decoding with the key named, environment overrides, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantumtrade.config import AppConfig, describe, load_config
from quantumtrade.credentials import Secrets
from quantumtrade.errors import ConfigError
from quantumtrade.redaction import redact_url

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qt.toml"
    path.write_text(text)
    return path


def test_shipped_example_is_valid_and_matches_defaults() -> None:
    cfg = load_config(ROOT / "quantumtrade.toml", environ={})
    assert cfg == AppConfig()


def test_defaults_without_a_file() -> None:
    cfg = load_config(None, environ={})
    assert cfg.system.mode == "paper"
    assert cfg.database.url == "" and cfg.redis.url == ""
    assert cfg.admin.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[admin]\nprot = 1\n", "admin.prot", "unknown key"),
        ("[nonsense]\n", "nonsense", "unknown key"),
        ('[admin]\nport = "8080"\n', "admin.port", "Expected int, got str"),
        ("[admin]\nport = 70000\n", "admin.port", "<= 65535"),
        ("[data.orchestrator]\nmax_workers = 0\n", "data.orchestrator.max_workers", ""),
        ('[system]\nmode = "yolo"\n', "system.mode", "Invalid enum value 'yolo'"),
        ('[system]\nmode = "live"\n', "execution.venues", "at least one exchange"),
        ('[system]\nmode = "replay"\n', "system.mode", "quantumtrade replay"),
        ("[scanner]\nema_fast = 30\nema_slow = 10\n", "scanner.ema_fast", "shorter"),
        ('[database]\nurl = "mysql://x"\n', "database.url", "postgresql://"),
        ('[redis]\nurl = "http://x"\n', "redis.url", "redis://"),
        ('[data]\nsymbols = ["btc-usdt"]\n', "data.symbols", "symbol names"),
        ("[anomaly]\nspike_z = 0\n", "anomaly.spike_z", "> 0"),
        ("[anomaly]\nwarmup = 5\n", "anomaly.warmup", "unknown key"),
        ("[anomaly]\nfrozen_bars = 0\n", "anomaly.frozen_bars", ">= 1"),
        ('[anomaly]\npause_entries = "yes"\n', "anomaly.pause_entries", "Expected bool"),
        (
            "[anomaly]\nenabled = false\npause_entries = true\n",
            "anomaly.pause_entries",
            "needs anomaly.enabled",
        ),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    err = info.value
    assert err.where == str(path)
    assert err.key == key
    assert reason in err.reason
    assert str(err).startswith(f"{path}: {key}: ")


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[admin\nport = 1"), environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_env_overrides_file_and_seed_names_are_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, "[admin]\nport = 9000\n")
    cfg = load_config(
        path,
        environ={
            "QT_ADMIN__PORT": "8081",
            "QT_ADMIN__TOKEN": "12345",
            "QT_DATA__SYNTHETIC__SEED": "3",
            "QT_DATA__SYMBOLS": "BTCUSDT,ETHUSDT",
            "DATABASE_URL": "postgresql://u:pw@127.0.0.1/test",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "MAX_WORKERS": "16",
            "CACHE_DURATION": "250",
            "UPDATE_INTERVAL": "500",
            "CIRCUIT_BREAKER_THRESHOLD": "9",
        },
    )
    assert cfg.admin.port == 8081
    assert cfg.admin.token == "12345"  # digits stay text where the key is text
    assert cfg.data.synthetic.seed == 3
    assert cfg.data.symbols == ["BTCUSDT", "ETHUSDT"]
    assert cfg.database.url == "postgresql://u:pw@127.0.0.1/test"
    assert cfg.redis.url == "redis://127.0.0.1:6379/0"
    assert cfg.data.orchestrator.max_workers == 16
    assert cfg.cache.ttl_ms == 250
    assert cfg.data.orchestrator.update_interval_ms == 500
    assert cfg.breaker.failure_threshold == 9


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("QT_ADMIN__PORT", "eighty", "admin.port"),
        ("MAX_WORKERS", "-1", "data.orchestrator.max_workers"),
        ("QT_ADMIN__NOPE", "1", "admin.nope"),
    ],
)
def test_bad_env_value_names_the_variable(name: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={name: value})
    if name == "MAX_WORKERS":
        # Out of range is caught by the semantic checks, which name the key.
        assert info.value.key == key
    else:
        assert info.value.where == f"environment variable {name}"
        assert info.value.key == key


def test_secrets_never_printed() -> None:
    secrets = Secrets.from_env({"BINANCE_API_KEY": "AKIA-very-secret", "BINANCE_SECRET_KEY": "s3"})
    creds = secrets.get("binance")
    assert creds is not None and creds.secret == "s3"
    for text in (repr(secrets), repr(creds), str(creds)):
        assert "very-secret" not in text and "s3" not in text
    cfg = load_config(
        None, environ={"DATABASE_URL": "postgresql://u:hunter2@db/x", "QT_ADMIN__TOKEN": "tok3n"}
    )
    shown = str(describe(cfg))
    assert "hunter2" not in shown and "tok3n" not in shown
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"


LIVE = """
[system]
mode = "live"
[[execution.venues]]
exchange = "binance"
api_url = "http://127.0.0.1:9"
"""


def test_live_mode_names_the_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, LIVE), environ={"BINANCE_API_KEY": "k"})
    assert info.value.key == "execution.venues[0]"
    assert "BINANCE_SECRET_KEY" in info.value.reason


def test_live_mode_with_keys_is_accepted(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, LIVE), environ={"BINANCE_API_KEY": "k", "BINANCE_SECRET_KEY": "s"}
    )
    assert cfg.system.mode == "live"
    (venue,) = cfg.execution.venues
    assert (venue.exchange, venue.api_url) == ("binance", "http://127.0.0.1:9")


def test_venue_config_errors_name_the_key(tmp_path: Path) -> None:
    text = '[[execution.venues]]\nexchange = "nyse"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key.startswith("execution.venues") and "nyse" in info.value.reason
    text = '[[execution.venues]]\nexchange = "okx"\nsandbox = true\napi_url = "http://x"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert "sandbox" in info.value.reason
    text = '[[execution.venues]]\nexchange = "okx"\n[[execution.venues]]\nexchange = "okx"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key == "execution.venues" and "one venue per exchange" in info.value.reason


def test_a_single_value_env_override_fills_a_list_key() -> None:
    cfg = load_config(None, {"QT_DATA__SYMBOLS": "BTCUSDT"})
    assert cfg.data.symbols == ["BTCUSDT"]
    assert load_config(None, {"QT_DATA__SYMBOLS": "BTCUSDT,ETHUSDT"}).data.symbols == [
        "BTCUSDT",
        "ETHUSDT",
    ]
    assert load_config(None, {"QT_DATA__SYMBOLS": "7"}).data.symbols == 7  # a count
    # A value that is not a symbol name is still refused, naming the key.
    with pytest.raises(ConfigError, match=r"data\.symbols: not symbol names"):
        load_config(None, {"QT_DATA__SYMBOLS": "btc usdt"})
