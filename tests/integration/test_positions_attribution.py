"""GET /api/trading/positions carries the PnL attribution of a running paper daemon: by
strategy, symbol, regime at entry and cluster, each summing to the totals of the same answer."""

from __future__ import annotations

import math
from pathlib import Path

import aiohttp

from quantumtrade.portfolio import UNLABELLED
from quantumtrade.regime.model import REGIME_ORDER
from tests.support.admin_daemon import running_daemon

DIMENSIONS = ("by_strategy", "by_symbol", "by_regime", "by_cluster")


async def test_positions_attribution_sums_to_the_totals(tmp_path: Path) -> None:
    async with (
        running_daemon(tmp_path, warmup_s=120) as (daemon, _),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{daemon.admin.url}/api/trading/positions") as response:
            assert response.status == 200
            answer = await response.json()
    totals, attribution = answer["totals"], answer["attribution"]
    held = {s: p for s, p in answer["positions"].items() if p["quantity"]}
    assert held, "the session opened no position"
    assert totals["fees"] > 0.0
    tolerance = 1e-9 * max(1.0, sum(abs(v) for v in totals.values()))
    for key in DIMENSIONS:
        groups = attribution[key]
        assert groups, key
        for field, want in (
            ("net", totals["net"]),
            ("unrealized", totals["unrealized"]),
            ("realized_after_fees", totals["realized"] - totals["fees"]),
        ):
            got = math.fsum(g[field] for g in groups.values())
            assert abs(got - want) <= tolerance, (key, field, got, want)
    for symbol, p in answer["positions"].items():
        mine = attribution["by_symbol"][symbol]
        assert abs(mine["net"] - (p["realized_pnl"] - p["fees"] + p["unrealized_pnl"])) < 1e-9
    assert list(attribution["by_strategy"]) == [daemon.strategy.name]
    regimes = {r.value for r in REGIME_ORDER} | {UNLABELLED}
    assert set(attribution["by_regime"]) <= regimes
    # The engine labels its entries: not everything is unlabelled (the wiring is there).
    assert set(attribution["by_regime"]) - {UNLABELLED}
    clusters = set(daemon.risk.clusters.values()) | set(answer["positions"])
    assert set(attribution["by_cluster"]) <= clusters
