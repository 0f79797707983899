"""The Grafana provisioning and dashboards in config/grafana, and the checker that
tests/integration/test_dashboards.py runs against a real Prometheus (here on synthetic
dashboards, with negative controls)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support.dashboards import (
    DATASOURCE_UID,
    GRAFANA,
    Problem,
    QueryFailed,
    check_targets,
    exported_names,
    load_dashboards,
    metric_names,
    panels,
    substitute,
    targets,
)

SEED_TITLES = {
    "Enterprise System Overview",
    "Data Orchestrator Performance",
    "Market Regime Analysis",
    "Order Router Metrics",
    "Trading Performance",
}


def test_metric_names_finds_metrics_not_functions_labels_or_keywords() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (venue, le) (rate(quantumtrade_order_router_latency_bucket"
        '{job="quantumtrade", instance=~"$instance"}[$__rate_interval])))'
        " / ignoring (venue) group_left sum(up offset 5m) * 1e3"
        " and on (instance) process_open_fds > bool 2^30 or vector(1)"
        ' unless label_replace(x_total, "a", "$1", "b", "(.*)")'
    )
    assert metric_names(expr) == {
        "quantumtrade_order_router_latency_bucket",
        "up",
        "process_open_fds",
        "x_total",
    }
    assert metric_names("sum(rate(foo:bar_total[5m])) by (le)") == {"foo:bar_total"}
    assert metric_names("vector(0)") == set()


def test_substitute_replaces_grafanas_variables_and_refuses_unknown_ones() -> None:
    assert substitute('rate(x{i=~"$instance"}[$__rate_interval])') == 'rate(x{i=~".+"}[5s])'
    with pytest.raises(ValueError, match=r"\$__interval"):
        substitute("rate(x[$__interval])")


def test_exported_names_include_declared_families_and_histogram_series() -> None:
    metadata = {
        "a_seconds": [{"type": "histogram", "help": "", "unit": ""}],
        "b_total": [{"type": "counter", "help": "", "unit": ""}],
    }
    assert exported_names(["up"], metadata) == {
        "up", "a_seconds", "a_seconds_bucket", "a_seconds_sum", "a_seconds_count", "b_total",
    }  # fmt: skip


def _board(*exprs: str) -> dict[str, Any]:
    return {
        "uid": "synthetic",
        "panels": [
            {"title": f"panel {i}", "targets": [{"refId": "A", "expr": expr}]}
            for i, expr in enumerate(exprs)
        ],
    }


def test_checker_reports_a_misspelt_metric_an_empty_panel_and_a_refused_query() -> None:
    """Negative controls: each fault is reported for its own panel, and good panels pass."""
    row = {"metric": {}, "value": [0, "1"]}
    # The misspelt panel "has data" here, so only the name check can catch it.
    answers = {'quantumtrade_pnl{kind="net"}': [row], 'quantumtrade_pnll{kind="net"}': [row]}
    answers["vector(1)"] = [row]

    def query(expr: str) -> list[Any]:
        if "((" in expr:
            raise QueryFailed("parse error: unexpected left parenthesis")
        return answers.get(expr, [])

    board = _board(
        'quantumtrade_pnl{kind="net"}',  # good
        'quantumtrade_pnll{kind="net"}',  # misspelt: not exported, no data
        'up{job="nobody"} and quantumtrade_risk_state',  # exported but empty here
        "sum((up)",  # refused by Prometheus
        "vector(1)",  # names no metric: a panel must show the daemon's data
    )
    exported = {"quantumtrade_pnl", "up", "quantumtrade_risk_state"}
    problems = check_targets(targets(board), exported=exported, query=query)
    by_panel: dict[str, list[str]] = {}
    for problem in problems:
        by_panel.setdefault(problem.target.panel, []).append(problem.reason)
    assert by_panel == {
        "panel 1": ["names metrics the daemon does not export: ['quantumtrade_pnll']"],
        "panel 2": ["the query returned no data"],
        "panel 3": ["query failed: parse error: unexpected left parenthesis"],
        "panel 4": ["selects no metric"],
    }
    # Exempting a panel from data does not exempt it from the name check.
    exempt = check_targets(
        targets(board), exported=exported, query=query, may_be_empty=lambda t: True
    )
    assert {p.target.panel for p in exempt} == {"panel 1", "panel 3", "panel 4"}
    assert "quantumtrade_pnll" in str(exempt[0]) and isinstance(exempt[0], Problem)


def test_provisioning_points_grafana_at_the_dashboards_and_the_datasource_uid() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/quantumtrade"


def test_the_five_seed_dashboards_are_well_formed() -> None:
    boards = load_dashboards()
    assert {board["title"].split(" — ", 1)[1] for board in boards.values()} == SEED_TITLES
    assert len({board["uid"] for board in boards.values()}) == 5
    for name, board in boards.items():
        found = panels(board)
        assert len(found) >= 6, name
        assert len({p["id"] for p in found}) == len(found), name
        for panel in found:
            where = f"{name}: {panel['title']}"
            assert panel["type"] in {"timeseries", "stat", "gauge"}, where
            assert panel["datasource"]["uid"] == DATASOURCE_UID, where
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, where
                expr = target["expr"]
                # Every selector is scoped to the daemon's job and the chosen instances; short
                # windows follow the scrape interval as Grafana computes it.
                selectors = re.findall(r"\b(?:quantumtrade_\w+|process_\w+|up)(\{[^}]*\}|)", expr)
                assert selectors, where
                for selector in selectors:
                    assert selector.startswith('{job="quantumtrade", instance=~"$instance"'), where
                windows = set(re.findall(r"\[([^\]]*)\]", expr))
                assert windows <= {"$__rate_interval", "1m", "5m", "1h"}, where
