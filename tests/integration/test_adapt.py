"""``[adapt]`` end to end: the search in a spawned worker process, replay parity of a session
whose log holds a ``ParametersChanged`` (with a negative control), and the daemon running an
adaptation without blocking its heartbeat, visible in ``/metrics`` and the admin API."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from quantumtrade.app import Daemon
from quantumtrade.backtest.adapt import search_recent
from quantumtrade.clock import ManualClock
from quantumtrade.config import load_config
from quantumtrade.events import AdaptEvidence, ParametersChanged
from quantumtrade.replay import replay_log
from quantumtrade.store.eventlog import SqliteEventLog, StoredEvent
from quantumtrade.strategy.adapt import AdaptConfig, AdaptRequest
from tests.integration.test_paper_session import START_NS, session_config
from tests.unit.test_adapt import random_walk

HOUR = 3_600_000


def test_the_search_runs_in_another_process_and_returns_both_test_scores() -> None:
    cfg = load_config(None, environ={"QT_STRATEGY__NAME": "trend", "QT_SCANNER__MIN_BARS": "30"})
    bars, symbols = 300, ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    adapt = AdaptConfig(enabled=True, lookback_bars=300, warmup_bars=60, trials=4, min_trades=1)
    request = AdaptRequest(
        strategy=cfg.strategy, config=adapt, symbols=symbols,
        ts_ms=np.arange(1, bars + 1, dtype=np.int64) * HOUR,
        prices=random_walk(bars, 3, seed=1), have=np.ones((bars, 3), dtype=bool), bar_ms=HOUR,
    )  # fmt: skip
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(functools.partial(search_recent, cfg), request).result()
    assert result.pid != os.getpid()
    assert result.trials == 4
    assert set(result.current) == {
        "min_score",
        "weight",
        "exits.stop_loss_atr",
        "exits.trailing_atr",
        "protections.cooldown_bars",
    }  # fmt: skip  (trend's SPACE)
    assert result.current["min_score"] == 0.0
    assert result.best is not None and set(result.best) == set(result.current)
    assert result.current_score is not None and result.tuned_score is not None
    # The cut: train after the warm-up, the newest third tests.
    assert result.train_from_ms == 61 * HOUR
    assert result.test_from_ms == 201 * HOUR
    assert result.test_to_ms == 301 * HOUR


# --- replay parity ---------------------------------------------------------------------------

CHANGE = ParametersChanged(
    ts_ns=0, strategy="regime_adaptive",
    old={"weight": 0.1, "trend.weight": 0.1}, new={"weight": 0.03, "trend.weight": 0.03},
    evidence=AdaptEvidence(
        objective="sharpe", tuned_score=1.0, current_score=0.0, margin=0.25, tuned_trades=9,
        current_trades=7, trials=30, scored_trials=30, train_from_ms=0, test_from_ms=1,
        test_to_ms=2, seed=0,
    ),
)  # fmt: skip


class WithoutChanges(SqliteEventLog):
    """The same log with its ``ParametersChanged`` left out (the negative control)."""

    async def read(self, **kwargs: Any) -> AsyncIterator[StoredEvent]:  # type: ignore[override]
        async for stored in super().read(**kwargs):
            if stored.type != "ParametersChanged":
                yield stored


async def test_a_logged_parameter_change_replays_with_zero_differences(tmp_path: Path) -> None:
    cfg = session_config(tmp_path)
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for step in range(90):
                if step == 40:  # as the adapter publishes: at the start of a heartbeat
                    await daemon.bus.publish(CHANGE)
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
        finally:
            await daemon.stop()
    assert daemon.strategy.parameter_changes == 1
    assert daemon.strategy.params["trend"]["weight"] == 0.03
    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    try:
        types = [s.type async for s in log.read()]
        assert types.count("ParametersChanged") == 1
        report = await replay_log(log, cfg)
        assert report.differences == []
        assert report.logged.get("TargetPosition", 0) > 0
    finally:
        await log.close()
    # Negative control: without the logged change the replayed targets are sized differently.
    control = WithoutChanges(cfg.database.sqlite_path)
    await control.open()
    try:
        differences = (await replay_log(control, cfg)).differences
        assert any(d.event_type == "TargetPosition" for d in differences)
    finally:
        await control.close()


# --- the daemon ------------------------------------------------------------------------------


async def test_the_daemon_adapts_without_blocking_its_heartbeat(tmp_path: Path) -> None:
    cfg = session_config(
        tmp_path,
        QT_ADAPT__ENABLED="true",
        QT_ADAPT__EVERY_BARS="20",
        QT_ADAPT__LOOKBACK_BARS="240",
        QT_ADAPT__WARMUP_BARS="60",
        QT_ADAPT__TRIALS="2",
        QT_ADAPT__MIN_TRADES="0",
        QT_ADAPT__MARGIN="0",
        QT_DATA__SYMBOLS="4",
    )
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock, search=functools.partial(search_recent, cfg))
    adapter = daemon.adapter
    assert adapter is not None
    steps_while_running = 0
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            # Bounded by wall time, not steps: a search of 2 trials takes a few seconds once
            # the worker's kernels are in numba's cache, a minute or more on a fresh clone
            # whose worker compiles them (the bound is a timeout, not a speed claim).
            deadline = time.monotonic() + 240.0
            while time.monotonic() < deadline:
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
                steps_while_running += adapter.running
                if sum(adapter.runs.values()):
                    break
                await asyncio.sleep(0.01)  # wall time for the worker; the loop stays free
            assert sum(adapter.runs.values()) >= 1, adapter.last
            assert adapter.runs["failed"] == 0, adapter.last
            # The heartbeat went on while the worker searched: the loop was never blocked.
            assert steps_while_running >= 2
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{daemon.admin.url}/metrics") as r:
                    text = await r.text()
                total = sum(
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith("quantumtrade_adapt_runs_total{")
                )
                assert total == sum(adapter.runs.values())
                async with http.get(f"{daemon.admin.url}/api/trading/strategy") as r:
                    assert r.status == 200
                    body = await r.json()
                assert body["strategy"] == "regime_adaptive"
                assert body["adapt"]["enabled"] is True
                assert body["adapt"]["last"]["outcome"] in ("applied", "kept")
                assert body["params"]["trend"] == daemon.strategy.params["trend"]
                async with http.get(f"{daemon.admin.url}/api/trading/strategy/nope") as r:
                    assert r.status == 404 and "error" in await r.json()
        finally:
            await daemon.stop()
    assert not adapter.running
