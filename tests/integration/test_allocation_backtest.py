"""The allocator in the trading core: the daemon, the backtest and replay make the same
allocations, hedge and rebalances; the hedge's orders go through risk and the router like any
other; the allocator changes decisions (negative control); clusters reach the risk manager."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from quantumtrade.allocation.allocator import AllocationMethod
from quantumtrade.backtest.data import load_candles
from quantumtrade.backtest.runner import run_backtest
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import load_config
from quantumtrade.core import TradingCore
from quantumtrade.errors import ConfigError
from quantumtrade.portfolio import Portfolio
from quantumtrade.replay import replay_log
from quantumtrade.risk.manager import RiskLimits, RiskManager
from quantumtrade.store.eventlog import SqliteEventLog
from tests.integration.test_backtest import (
    SYMBOLS,
    config_file,
    make_prices,
    run_backtest_events,
    run_daemon_one_bar_per_heartbeat,
    write_candles,
)

ALLOCATION = """
[strategy]
allow_short = true
max_weight = 0.4
[allocation]
method = "risk_parity"
lookback = 120
min_observations = 40
rebalance_every = 24
hedge_symbol = "DDDUSDT"
"""


def correlated_prices(n_bars: int, seed: int) -> np.ndarray:
    """The test's random walks, the first three sharing a common factor (one cluster)."""
    prices = make_prices(n_bars, len(SYMBOLS), seed)
    rng = np.random.default_rng(seed + 1)
    common = np.exp(np.cumsum(rng.normal(0, 0.02, n_bars)))
    prices[:, :3, :4] *= common[:, None, None]
    return prices


@pytest.fixture
def allocated(tmp_path: Path) -> tuple[Path, Path]:
    data = write_candles(tmp_path / "candles", correlated_prices(360, seed=11), SYMBOLS)
    return data, config_file(tmp_path, data, ALLOCATION)


async def test_daemon_backtest_and_replay_allocate_alike(allocated: tuple[Path, Path]) -> None:
    data, path = allocated
    cfg = load_config(path)
    live = await run_daemon_one_bar_per_heartbeat(cfg, 360)
    backtest = await run_backtest_events(cfg, data)
    assert live == backtest
    reasons = {e["reason"] for e in backtest if e["type"] == "TargetPosition"}
    assert {"hedge", "rebalance"} <= reasons, reasons
    hedge_fills = [
        e
        for e in backtest
        if e["type"] == "OrderFilled" and e["symbol"] == "DDDUSDT" and e["side"] == "SELL"
    ]
    assert hedge_fills, "the hedge's short went through risk and the router to a fill"
    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    try:
        report = await replay_log(log, cfg)
    finally:
        await log.close()
    assert report.differences == []
    assert report.replayed == report.logged


async def test_the_allocator_changes_decisions(allocated: tuple[Path, Path]) -> None:
    data, path = allocated
    cfg = load_config(path)
    plain = msgspec.structs.replace(
        cfg,
        allocation=msgspec.structs.replace(
            cfg.allocation, method=AllocationMethod.NONE, hedge_symbol=""
        ),
    )
    with_alloc = await run_backtest_events(cfg, data)
    without = await run_backtest_events(plain, data)
    assert with_alloc != without
    assert not any(
        e["type"] == "TargetPosition" and e["reason"] in ("hedge", "rebalance") for e in without
    )


async def test_clusters_from_correlations_reach_the_risk_manager(
    allocated: tuple[Path, Path],
) -> None:
    data, path = allocated
    cfg = load_config(path)
    seen: list[dict[str, str]] = []

    def observe(bar: int, core: TradingCore, ledger: object, equity: float) -> None:
        if core.risk.clusters and (not seen or seen[-1] != core.risk.clusters):
            seen.append(dict(core.risk.clusters))

    await run_backtest(cfg, load_candles([str(data)], symbols=SYMBOLS), observe=observe)
    assert seen, "no cluster ever reached the risk manager"
    for clusters in seen:
        # Only the three walks on a common factor cluster; the independent one never joins.
        assert set(clusters) <= {"AAAUSDT", "BBBUSDT", "CCCUSDT"}, clusters
        assert len(set(clusters.values())) == 1
    assert max(len(c) for c in seen) >= 2


async def test_risk_manager_caps_a_computed_cluster() -> None:
    bus = EventBus(clock=ManualClock(0))
    risk = RiskManager(
        bus=bus,
        clock=ManualClock(0),
        limits=RiskLimits(max_cluster_exposure=1_000.0, clusters={"CCC": "own"}),
        portfolio=Portfolio(bus=bus, clock=ManualClock(0)),
    )
    risk.set_clusters({"AAA": "corr:AAA", "BBB": "corr:AAA", "CCC": "corr:AAA"})
    assert risk.clusters == {"AAA": "corr:AAA", "BBB": "corr:AAA", "CCC": "own"}


def test_a_hedge_without_shorts_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "candles"
    data.mkdir()
    path = config_file(tmp_path, data, '[allocation]\nhedge_symbol = "DDDUSDT"\n')
    with pytest.raises(ConfigError, match=r"allocation\.hedge_symbol.*allow_short"):
        load_config(path)
    path = config_file(
        tmp_path, data, '[strategy]\nallow_short = true\n[allocation]\nhedge_symbol = "ZZZUSDT"\n'
    )
    with pytest.raises(ConfigError, match=r"allocation\.hedge_symbol.*not in data\.symbols"):
        load_config(path)
