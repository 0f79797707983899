"""The Grafana dashboards in config/grafana/dashboards: their panels' PromQL, the metric names
each query uses, and a check of every query against a Prometheus that scrapes a daemon."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "config" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCE_UID = "prometheus"

# What Grafana would put in place of its variables when a test runs the query itself: a
# scrape every second makes a 5 s window hold several samples; every daemon instance.
TEST_VARIABLES = {"$__rate_interval": "5s", "$instance": ".+"}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier not followed by "(" (a function or aggregation) and not part of a number.
_IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)


@dataclass(frozen=True)
class Target:
    """One query of one panel."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel!r} / {self.ref_id}"


@dataclass(frozen=True)
class Problem:
    target: Target
    reason: str

    def __str__(self) -> str:
        return f"{self.target}: {self.reason}\n    {' '.join(self.target.expr.split())}"


class QueryFailed(Exception):
    """Prometheus refused a query (a syntax error, an unknown function)."""


def load_dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """{file name: dashboard JSON} of every ``*.json`` in ``folder``."""
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def targets(dashboard: Mapping[str, Any]) -> list[Target]:
    return [
        Target(str(dashboard["uid"]), str(panel["title"]), str(t["refId"]), str(t["expr"]))
        for panel in panels(dashboard)
        for t in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def substitute(expr: str, variables: Mapping[str, str] = TEST_VARIABLES) -> str:
    """``expr`` with Grafana's variables replaced (longest name first); fails on one left over."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    left = re.findall(r"\$\w+", expr)
    if left:
        raise ValueError(f"no test value for {sorted(set(left))} in {expr!r}")
    return expr


def exported_names(label_values: Iterable[str], metadata: Mapping[str, Any]) -> set[str]:
    """Metric names Prometheus scraped: series names, plus every name a family declared with
    # TYPE (a counter family that has no sample yet, a histogram's _bucket/_sum/_count)."""
    names = set(label_values)
    for family, entries in metadata.items():
        names.add(family)
        if any(entry.get("type") == "histogram" for entry in entries):
            names.update(f"{family}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def check_targets(
    found: Iterable[Target],
    *,
    exported: set[str],
    query: Callable[[str], list[Any]],
    may_be_empty: Callable[[Target], bool] = lambda target: False,
) -> list[Problem]:
    """Problems with each target: a metric the daemon does not export, a query Prometheus
    refuses, or no data (unless ``may_be_empty``: a series that only an event creates)."""
    problems = []
    for target in found:
        names = metric_names(target.expr)
        if not names:
            problems.append(Problem(target, "selects no metric"))
        unknown = sorted(names - exported)
        if unknown:
            problems.append(Problem(target, f"names metrics the daemon does not export: {unknown}"))
        try:
            result = query(substitute(target.expr))
        except (QueryFailed, ValueError) as e:
            problems.append(Problem(target, f"query failed: {e}"))
            continue
        if not result and not may_be_empty(target):
            problems.append(Problem(target, "the query returned no data"))
    return problems
