"""docker-compose.yml checked by a real compose, and the Prometheus config it mounts by promtool.

No Docker engine runs on our machines, so nothing is started: ``config -q`` validates the file
against compose's schema and substitutes the variables from .env.example. The docker CLI's
compose plugin is used where it works; Debian 12 does not package it, so ``scripts/monitoring.sh``
installs Debian's ``docker-compose`` (1.29, whose schema is older and stricter: a file it
accepts, the plugin accepts too). Without either the test skips, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.integration.test_monitoring_config import run, tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        plugin = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if plugin.returncode == 0:
            return [docker, "compose"]
    return [tool("docker-compose")]


def compose_config(compose_file: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    # Variables of the test's own environment would win over the env file: leave them out.
    lines = ENV_EXAMPLE.read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    env = {k: v for k, v in os.environ.items() if k not in names}
    return subprocess.run(
        [*compose_command(), "--env-file", str(env_file), "-f", str(compose_file), "config", "-q"],
        cwd=compose_file.parent, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_compose_accepts_the_file_with_env_example() -> None:
    done = compose_config(COMPOSE, ENV_EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_refuses_a_missing_secret_and_a_misspelt_key(tmp_path: Path) -> None:
    """Negative controls: the same compose run fails on each fault, naming it."""
    env = tmp_path / "env"
    env.write_text(
        "".join(
            line + "\n"
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith("POSTGRES_PASSWORD=")
        )
    )
    done = compose_config(COMPOSE, env)
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stdout + done.stderr

    text = COMPOSE.read_text()
    assert text.count("    healthcheck:\n") == 6
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text.replace("    healthcheck:\n", "    healthchek:\n", 1))
    done = compose_config(bad, ENV_EXAMPLE)
    assert done.returncode != 0 and "healthchek" in done.stdout + done.stderr


def test_promtool_checks_the_compose_prometheus_config() -> None:
    promtool = tool("promtool")
    out = run(promtool, "check", "config", str(ROOT / "config" / "prometheus" / "compose.yml"))
    assert "SUCCESS" in out and "1 rule files found" in out
