"""Configurations that can never work stop with exit 2 and the key named; check-config too."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from quantumtrade.cli import _start_failure
from quantumtrade.clock import ManualClock
from quantumtrade.config import (
    AppConfig,
    DatabaseConfig,
    check_startable,
    load_config,
    open_admin_warning,
)
from quantumtrade.data.factory import build_source
from quantumtrade.data.replay_source import ReplayConfig, ReplaySource
from quantumtrade.errors import ConfigError
from quantumtrade.store.factory import open_event_log

CANDLES = "timestamp,open,high,low,close,volume\n1700000000000,1,2,0.5,1.5,10\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def key_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        cfg = load_config(write(tmp_path, text), environ=environ or {})
        check_startable(cfg, "c.toml")
    return info.value.key


def startable(tmp_path: Path, text: str) -> AppConfig:
    cfg = load_config(write(tmp_path, text), environ={})
    check_startable(cfg, "c.toml")
    return cfg


# --- sizes and hosts (load_config) -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[data]\nsymbols = 1000000",
        "[data]\nsymbols = 9000\ncapacity = 100000",  # under the count cap, not the memory cap
    ],
)
def test_symbols_beyond_memory_is_a_config_error(tmp_path: Path, text: str) -> None:
    assert key_of(tmp_path, text) == "data.symbols"


def test_symbols_that_fit_load(tmp_path: Path) -> None:
    cfg = startable(tmp_path, f'[data]\nsymbols = 500\n[database]\nsqlite_path = "{tmp_path}/e"')
    assert cfg.data.symbols == 500


@pytest.mark.parametrize("host", ["not a host", "", "bad_host!", "a..b"])
def test_admin_host_that_is_no_host_is_a_config_error(tmp_path: Path, host: str) -> None:
    assert key_of(tmp_path, f'[admin]\nhost = "{host}"') == "admin.host"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "localhost", "api.example.com"])
def test_admin_host_literals_and_names_load(tmp_path: Path, host: str) -> None:
    assert load_config(write(tmp_path, f'[admin]\nhost = "{host}"'), environ={}).admin.host == host


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [("0.0.0.0", "", True), ("10.1.2.3", "", True), ("0.0.0.0", "s3cret", False),
     ("127.0.0.1", "", False), ("::1", "", False), ("localhost", "", False)],
)  # fmt: skip
def test_open_admin_api_without_token_warns(
    tmp_path: Path, host: str, token: str, warned: bool
) -> None:
    cfg = load_config(write(tmp_path, f'[admin]\nhost = "{host}"\ntoken = "{token}"'), environ={})
    warning = open_admin_warning(cfg)
    assert (warning is not None) is warned
    if warning is not None:
        assert host in warning and "token" in warning


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("BTCUSDT", ["BTCUSDT"]), ("BTCUSDT,ETHUSDT", ["BTCUSDT", "ETHUSDT"]), ("7", 7)],
)
def test_env_symbols_one_name_is_a_list(raw: str, expected: object) -> None:
    assert load_config(None, environ={"QT_DATA__SYMBOLS": raw}).data.symbols == expected


# --- files a start needs (check_startable) ---------------------------------------------


def replay_toml(path: Path, db: Path) -> str:
    return f'[data]\nsource = "replay"\nreplay.path = "{path}"\n[database]\nsqlite_path = "{db}"'


def test_replay_paths_that_can_never_work(tmp_path: Path) -> None:
    db = tmp_path / "ev.sqlite"
    assert key_of(tmp_path, replay_toml(tmp_path / "missing", db)) == "data.replay.path"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert key_of(tmp_path, replay_toml(empty, db)) == "data.replay.path"
    header_only = tmp_path / "hdr"
    header_only.mkdir()
    (header_only / "BTCUSDT.csv").write_text("timestamp,open,high,low,close,volume\n")
    assert key_of(tmp_path, replay_toml(header_only, db)) == "data.replay.path"
    good = tmp_path / "good"
    good.mkdir()
    (good / "BTCUSDT.csv").write_text(CANDLES)
    assert startable(tmp_path, replay_toml(good, db)).data.replay.path == str(good)


@pytest.mark.parametrize(
    "content", [b"\xf5\x8a\x00\xff" * 500, b"\x00\x01\x02garbage\x7f\n1,2,3\n", b"PK\x03\x04" * 9]
)
def test_binary_replay_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "BTCUSDT.csv").write_bytes(content)
    with pytest.raises(ValueError) as info:
        ReplaySource(ReplayConfig(path=str(tmp_path)), ManualClock())
    message = str(info.value)
    assert "BTCUSDT.csv" in message
    assert "\\x" not in message and "\x00" not in message and "garbage" not in message
    # The daemon's factory turns it into a configuration error naming the key (exit 2).
    cfg = load_config(write(tmp_path, replay_toml(tmp_path, tmp_path / "e")), environ={})
    with pytest.raises(ConfigError) as cfg_info:
        import asyncio

        asyncio.run(build_source(cfg, ManualClock()))
    assert cfg_info.value.key == "data.replay.path"


def test_sqlite_paths_that_can_never_work(tmp_path: Path) -> None:
    def toml(path: Path) -> str:
        return f'[database]\nsqlite_path = "{path}"'

    assert key_of(tmp_path, toml(tmp_path)) == "database.sqlite_path"  # a directory
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"\x13\x37not a database" * 300)
    assert key_of(tmp_path, toml(corrupt)) == "database.sqlite_path"
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert key_of(tmp_path, toml(a_file / "sub" / "ev.sqlite")) == "database.sqlite_path"
    startable(tmp_path, toml(tmp_path / "new" / "ev.sqlite"))  # created at start: fine


async def test_corrupt_sqlite_log_at_start_is_a_config_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "ev.sqlite"
    corrupt.write_bytes(b"\x13\x37" * 3000)
    with pytest.raises(ConfigError) as info:
        await open_event_log(DatabaseConfig(sqlite_path=str(corrupt)))
    assert info.value.key == "database.sqlite_path" and str(corrupt) in str(info.value)
    # A valid header with garbage pages: found only by opening it.
    half = tmp_path / "half.sqlite"
    half.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    with pytest.raises(ConfigError):
        await open_event_log(DatabaseConfig(sqlite_path=str(half)))
    eventlog, _, first = await open_event_log(DatabaseConfig(sqlite_path=str(tmp_path / "ok")))
    await eventlog.close()
    assert first == 1


# --- exit codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (OSError(errno.EADDRINUSE, "Address already in use"), 1, "already in use"),
        (socket.gaierror(-2, "Name or service not known"), 2, "admin.host"),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), 2, "admin.host"),
        (FileNotFoundError(2, "No such file"), 1, "cannot start"),
        (ExceptionGroup("g", [ConfigError("x", "data.replay.path", "gone")]), 2, "data.replay"),
    ],
)
def test_start_failures_map_to_exit_codes(
    exc: BaseException, code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _start_failure(exc, AppConfig(), "c.toml") == code
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert ("already in use" in err) is (says == "already in use")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantumtrade", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_check_config_and_run_refuse_a_corrupt_log_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "ev.sqlite").write_bytes(b"\x13\x37" * 3000)
    config = write(tmp_path, '[admin]\nport = 0\n[database]\nsqlite_path = "ev.sqlite"')
    for args in (("check-config", str(config)), ("run", "--config", str(config))):
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert "database.sqlite_path" in out.stderr and "ev.sqlite" in out.stderr
