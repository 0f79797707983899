"""``quantumtrade --version`` prints the installed package's version and exits 0."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from quantumtrade.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert out == f"quantumtrade {project['version']}"
    assert out == f"quantumtrade {importlib.metadata.version('quantumtrade')}"


def test_version_from_the_entry_point() -> None:
    exe = Path(sys.executable).parent / "quantumtrade"
    if not exe.exists():
        pytest.skip(f"no console script at {exe}")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"quantumtrade \d+\.\d+\.\d+\S*", done.stdout.strip())


def test_a_command_is_still_required() -> None:
    """Negative control: --version is an option, not a default command."""
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
