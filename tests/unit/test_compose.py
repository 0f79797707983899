"""docker-compose.yml and .env.example, read as files (no Docker engine here): the six services of
the seed's deployment, mounts that exist in the repository, Prometheus scraping the daemon's
admin port, and a daemon environment that the config loader reads and accepts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantumtrade.config import ENV_PREFIX, SEED_ENV, load_config
from quantumtrade.credentials import EXCHANGES
from quantumtrade.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"quantumtrade", "postgres", "redis", "prometheus", "alertmanager", "grafana"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
_SECRETS = {f"{e.upper()}_{k}" for e in EXCHANGES for k in ("API_KEY", "SECRET_KEY", "PASSPHRASE")}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def dotenv(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as compose reads an .env file."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), line
            values[name] = value
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution for the forms docker-compose.yml uses."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("?") and unset:
            raise KeyError(f"{name}: {arg}")
        if op.endswith("-") and unset:
            return arg
        return "" if value is None else value

    return _VARIABLE.sub(one, text)


def daemon_environment(env: Mapping[str, str]) -> dict[str, str]:
    service = compose()["services"]["quantumtrade"]
    return {k: interpolate(str(v), env) for k, v in service["environment"].items()}


def host_path(service: Mapping[str, Any], container_path: str) -> Path | None:
    """The repository file a container path of ``service`` comes from (None: not bind-mounted)."""
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("./") and (
            container_path == target or container_path.startswith(target.rstrip("/") + "/")
        ):
            return ROOT / source / Path(container_path).relative_to(target)
    return None


def test_the_seeds_six_services_each_with_a_healthcheck() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert services["quantumtrade"]["build"] == "."
    depends = services["quantumtrade"]["depends_on"]
    assert {k: v["condition"] for k, v in depends.items()} == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }


def test_every_bind_mount_exists_in_the_repository() -> None:
    mounts = 0
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
                mounts += 1
    assert mounts == 5  # the daemon's config; prometheus, alertmanager, grafana (2) configs


def test_prometheus_scrapes_the_daemons_admin_port_and_alerts_through_alertmanager() -> None:
    services = compose()["services"]
    flags = dict(arg.split("=", 1) for arg in services["prometheus"]["command"])
    config_file = host_path(services["prometheus"], flags["--config.file"])
    assert config_file is not None and config_file.is_file()
    config = yaml.safe_load(config_file.read_text())
    for rules in config["rule_files"]:
        assert (config_file.parent / rules).is_file()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "quantumtrade"  # the dashboards and rules select this job
    (target,) = job["static_configs"][0]["targets"]

    # The admin port the daemon listens on in its container: the mounted config plus the
    # compose environment, as the daemon itself would load them.
    toml = host_path(services["quantumtrade"], "/etc/quantumtrade/quantumtrade.toml")
    assert toml is not None
    cfg = load_config(toml, daemon_environment(dotenv()))
    assert target == f"quantumtrade:{cfg.admin.port}"
    published = {p.rsplit(":", 1)[1] for p in services["quantumtrade"]["ports"]}
    assert published == {str(cfg.admin.port)}

    (alertmanager,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == "alertmanager:9093"
    assert any(p.endswith(":9093") for p in services["alertmanager"]["ports"])
    am_flags = dict(arg.split("=", 1) for arg in services["alertmanager"]["command"])
    am_config = host_path(services["alertmanager"], am_flags["--config.file"])
    assert am_config is not None and am_config.is_file()


def test_grafana_reads_the_provisioning_and_the_dashboards_where_they_are_mounted() -> None:
    grafana = compose()["services"]["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning/dashboards/dashboards.yml")
    assert provisioning is not None
    (provider,) = yaml.safe_load(provisioning.read_text())["providers"]
    folder = host_path(grafana, provider["options"]["path"])
    assert folder == ROOT / "config/grafana/dashboards"
    assert len(list(folder.glob("*.json"))) == 5
    home = host_path(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home is not None and home.is_file()
    datasources = host_path(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml")
    assert datasources is not None
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in compose()["services"]["prometheus"]["ports"])


def test_env_example_and_compose_name_the_same_variables() -> None:
    used = set(_VARIABLE.findall(COMPOSE.read_text()))
    names = {name for name, _, _ in used}
    assert names == set(dotenv()), (sorted(names - set(dotenv())), sorted(set(dotenv()) - names))


def test_the_daemon_environment_is_read_and_accepted_by_the_config_loader() -> None:
    env = daemon_environment(dotenv())
    for name in env:
        read = name in SEED_ENV or name in _SECRETS or name.startswith(ENV_PREFIX)
        assert read, f"{name} is not a variable quantumtrade.config reads"
    cfg = load_config(ROOT / "quantumtrade.toml", env)
    assert cfg.admin.host == "0.0.0.0" and cfg.admin.token == dotenv()["QT_ADMIN__TOKEN"]
    assert cfg.database.url == (
        f"postgresql://quantumtrade:{dotenv()['POSTGRES_PASSWORD']}@postgres:5432/quantumtrade"
    )
    assert cfg.redis.url == "redis://redis:6379/0"
    assert cfg.data.orchestrator.max_workers == int(dotenv()["MAX_WORKERS"])
    assert cfg.breaker.failure_threshold == int(dotenv()["CIRCUIT_BREAKER_THRESHOLD"])


def test_negative_controls_a_missing_secret_and_a_misspelt_override_are_caught() -> None:
    env = dotenv()
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        daemon_environment(env)
    bad = daemon_environment(dotenv()) | {"QT_ADMIN__TOKN": "x"}
    with pytest.raises(ConfigError, match="tokn"):
        load_config(ROOT / "quantumtrade.toml", bad)
    bad = daemon_environment(dotenv()) | {"MAX_WORKERS": "0"}
    with pytest.raises(ConfigError, match="max_workers"):
        load_config(ROOT / "quantumtrade.toml", bad)
