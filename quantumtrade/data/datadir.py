"""Where the real market data lives: ``QT_DATA_DIR``, else ``../shared/data`` beside the repo."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "QT_DATA_DIR"


def repo_root() -> Path:
    """The checkout this package was imported from (``quantumtrade/`` sits directly in it)."""
    return Path(__file__).resolve().parents[2]


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$QT_DATA_DIR`` when set (and not empty), else ``<repo root>/../shared/data``."""
    env = os.environ if environ is None else environ
    configured = env.get(ENV_VAR, "")
    if configured:
        return Path(configured).expanduser()
    return (repo_root() / ".." / "shared" / "data").resolve()


def missing_data_reason(path: str | Path) -> str | None:
    """Why the data at ``path`` cannot be used (None: it is there), for a skip or fail message."""
    p = Path(path)
    if not p.exists():
        return f"market data not found at {p} (set {ENV_VAR} to the shared data directory)"
    if p.is_dir() and not any(p.iterdir()):
        return f"market data directory {p} is empty (set {ENV_VAR} to the shared data directory)"
    return None
