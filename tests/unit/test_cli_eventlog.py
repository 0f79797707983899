"""``replay`` and ``migrate`` name the event log they use and refuse one that is not there."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from quantumtrade.cli import main
from quantumtrade.store.eventlog import SqliteEventLog


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An operator's shell in some other directory: no config file, no QT_ variables."""
    for name in list(os.environ):
        if name.startswith("QT_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_replay_of_a_missing_log_fails_and_creates_nothing(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = elsewhere / "var" / "quantumtrade.sqlite"
    assert len(err) == 1 and str(expected) in err[0] and "no event log" in err[0]
    assert list(elsewhere.iterdir()) == []


def test_migrate_of_a_missing_log_fails_unless_asked_to_create_it(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = elsewhere / "var" / "quantumtrade.sqlite"
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(expected) in err[0] and "--create" in err[0]
    assert list(elsewhere.iterdir()) == []

    assert main(["migrate", "--create"]) == 0
    assert str(expected) in capsys.readouterr().out
    assert expected.is_file()
    # Now it exists: a plain migrate works and names it too.
    assert main(["migrate"]) == 0
    assert str(expected) in capsys.readouterr().out


def test_replay_names_the_log_it_reads_and_refuses_an_empty_one(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = elsewhere / "events.sqlite"
    monkeypatch.setenv("QT_DATABASE__SQLITE_PATH", str(path))

    async def create_empty() -> None:
        log = SqliteEventLog(path)
        await log.open()
        await log.close()

    asyncio.run(create_empty())
    assert main(["replay"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "no events" in err[0]
