"""The Grafana dashboards against a real Prometheus scraping a real daemon: every panel's query
names only metrics the daemon exports, Prometheus accepts it, and it returns data.

The daemon runs as an operator runs it (``quantumtrade run``: paper mode, synthetic market, admin
API on a free port); Prometheus is Debian's ``prometheus`` (``scripts/monitoring.sh`` installs
it), scraping every second. The test skips without it, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import signal
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.integration.test_daemon_process import STARTUP_LIMIT_S, STOP_LIMIT_S, env_for
from tests.integration.test_monitoring_config import tool
from tests.support.dashboards import (
    Problem,
    QueryFailed,
    Target,
    check_targets,
    exported_names,
    load_dashboards,
    targets,
)

ROOT = Path(__file__).resolve().parents[2]
DATA_LIMIT_S = 120  # the first order of a synthetic session comes ~15 s after start when idle

# Panels whose series only an event creates, which this paper session on the synthetic market
# does not produce: they may be empty here, but the metrics they name must still be declared by
# the daemon (# TYPE in /metrics), which the checker verifies for every panel.
EVENT_ONLY = {
    ("qt-data-orchestrator", "Market data rejected per second, by reason"): (
        "quantumtrade_data_rejected_total{reason} gets a sample at the first rejected bar; "
        "the synthetic source makes no bad bars"
    ),
    ("qt-trading-performance", "Re-tuning runs ([adapt]) per hour, by outcome"): (
        "quantumtrade_adapt_runs_total{outcome} gets a sample at the first [adapt] run; "
        "[adapt] is off in the default config"
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def daemon(tmp_path: Path) -> AsyncIterator[str]:
    """``quantumtrade run`` with the repository's config; yields host:port of its admin API."""
    log = tmp_path / "daemon.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quantumtrade", "run",
            "--config", str(ROOT / "quantumtrade.toml"),
            cwd=tmp_path, env=env_for(tmp_path), stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        async with asyncio.timeout(STARTUP_LIMIT_S):
            while not (found := re.search(r"admin API on http://([\w.:\[\]-]+)", log.read_text())):
                assert proc.returncode is None, f"daemon exited: {log.read_text()[-2000:]}"
                await asyncio.sleep(0.1)
        yield found.group(1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_LIMIT_S):
            await proc.wait()


@asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[str]:
    """Debian's Prometheus scraping ``target`` every second as job quantumtrade; yields its URL."""
    exe = tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: quantumtrade\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        proc = await asyncio.create_subprocess_exec(
            exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=output, stderr=output, cwd=tmp_path,
        )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(STOP_LIMIT_S):
            await proc.wait()


def api(base: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus API answer; QueryFailed if Prometheus refused."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:  # 400/422: a bad query, with Prometheus's reason
        body = json.load(e)
    if body.get("status") != "success":
        raise QueryFailed(body.get("error", body))
    return body["data"]


def instant_query(base: str) -> Callable[[str], list[Any]]:
    return lambda expr: list(api(base, "/api/v1/query", query=expr)["result"])


def check_against(
    base: str, found: list[Target], may_be_empty: Callable[[Target], bool] = lambda t: False
) -> list[Problem]:
    """check_targets with the names Prometheus scraped (series and # TYPE metadata)."""
    exported = exported_names(
        api(base, "/api/v1/label/__name__/values"), api(base, "/api/v1/metadata")
    )
    return check_targets(
        found, exported=exported, query=instant_query(base), may_be_empty=may_be_empty
    )


async def wait_for_scrapes(base: str, count: int) -> None:
    """Until Prometheus holds ``count`` successful scrapes of the daemon (polls its API)."""
    query = 'sum_over_time(up{job="quantumtrade"}[5m])'
    async with asyncio.timeout(STARTUP_LIMIT_S):
        while True:
            try:
                result = await asyncio.to_thread(api, base, "/api/v1/query", query=query)
                if result["result"] and float(result["result"][0]["value"][1]) >= count:
                    return
            except (OSError, QueryFailed):
                pass  # not listening yet
            await asyncio.sleep(0.2)


def every_target() -> list[Target]:
    return [t for board in load_dashboards().values() for t in targets(board)]


def event_only(target: Target) -> bool:
    return (target.dashboard, target.panel) in EVENT_ONLY


def test_event_only_panels_exist() -> None:
    """The exemption list names real panels (a renamed panel must not keep an exemption)."""
    panels = {(t.dashboard, t.panel) for t in every_target()}
    assert set(EVENT_ONLY) <= panels


async def test_every_panel_query_returns_data_from_a_scraped_daemon(tmp_path: Path) -> None:
    found = every_target()
    assert len({t.dashboard for t in found}) == 5 and len(found) >= 60
    async with daemon(tmp_path) as admin, prometheus(tmp_path, admin) as base:
        await wait_for_scrapes(base, 3)
        # Series that an event creates (the first order's router latency) come a little later:
        # poll the check until it passes or the limit is reached, then report what is left.
        # A wrong name or a refused query does not heal by waiting: stop at once on one.
        give_up = asyncio.get_running_loop().time() + DATA_LIMIT_S
        while problems := await asyncio.to_thread(check_against, base, found, event_only):
            waiting = all(p.reason == "the query returned no data" for p in problems)
            if not waiting or asyncio.get_running_loop().time() > give_up:
                break
            await asyncio.sleep(1.0)
        assert not problems, "\n".join(map(str, problems))

        # Each dashboard's $instance variable lists the scraped daemon.
        for board in load_dashboards().values():
            (variable,) = board["templating"]["list"]
            found_query = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert found_query is not None, variable["definition"]
            selector, label = found_query.groups()
            rows = await asyncio.to_thread(instant_query(base), selector)
            assert [row["metric"][label] for row in rows] == [admin], board["uid"]

        # Negative controls, same Prometheus: a misspelt metric, a label-value typo that
        # selects nothing, and PromQL Prometheus refuses are each reported for that panel only.
        board = copy.deepcopy(load_dashboards()["order-router.json"])
        for index, old, new in (
            (0, "order_router_latency_bucket", "order_routing_latency_bucket"),
            (2, "rate(", "rate(("),
            (5, 'name=~"venue:.*"', 'name=~"venue:papr"'),
        ):
            target = board["panels"][index]["targets"][0]
            assert old in target["expr"]
            target["expr"] = target["expr"].replace(old, new)
        bad = await asyncio.to_thread(check_against, base, targets(board))
        reasons: dict[tuple[str, str], list[str]] = {}
        for problem in bad:
            reasons.setdefault((problem.target.panel, problem.target.ref_id), []).append(
                problem.reason
            )
        titles = [panel["title"] for panel in board["panels"]]
        assert reasons == {
            (titles[0], "A"): [
                "names metrics the daemon does not export: "
                "['quantumtrade_order_routing_latency_bucket']",
                "the query returned no data",
            ],
            (titles[2], "A"): [reasons[(titles[2], "A")][0]],
            (titles[5], "A"): ["the query returned no data"],
        }, reasons
        assert reasons[(titles[2], "A")][0].startswith("query failed: ")
