"""A running paper daemon exports the book's 1-day VaR and expected shortfall in /metrics.

Oracle: the book (the risk manager's exposures at its marks) times each symbol's returns on
the bar times all of them have, its quantiles by ``historical_var`` / ``historical_cvar``,
times √(bars per day); recomputed in the test from the price history, not from the scenarios
the risk manager keeps.
"""

from __future__ import annotations

import asyncio
import math
import re
from functools import reduce
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from quantumtrade.risk.var import historical_cvar, historical_var, normal_quantile
from tests.integration.test_paper_session import START_NS, session_config

DAY_MS = 86_400_000


def gauge(text: str, name: str, method: str, level: str) -> float | None:
    pattern = rf'^quantumtrade_{name}\{{level="{level}",method="{method}"\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


def oracle_pnl(daemon: Daemon) -> tuple[np.ndarray, float]:
    """(the book's P&L per common bar time, √(bars per day))."""
    risk = daemon.risk
    values = {s: q * risk.mark(s) for s, q in risk.exposures().items() if q}
    series = {s: risk.returns(s) for s in values}
    times = reduce(np.intersect1d, [ts for ts, _ in series.values()])
    pnl = np.zeros(times.size)
    for s, v in values.items():
        ts, r = series[s]
        pnl += v * r[np.isin(ts, times)]
    scale = math.sqrt(DAY_MS / float(np.median(np.diff(times))))
    return pnl, scale


async def test_the_daemon_exports_var_and_es_of_its_book(tmp_path: Path) -> None:
    cfg = session_config(tmp_path, QT_RISK__VAR_MIN_OBSERVATIONS="20")
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock)
    checked = 0
    async with asyncio.TaskGroup() as tg, aiohttp.ClientSession() as http:
        await daemon.start(tg)
        try:
            for second in range(90):
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
                if second < 40 or second % 10 or not daemon.risk.exposures():
                    continue
                async with http.get(f"{daemon.admin.url}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                pnl, scale = oracle_pnl(daemon)
                if pnl.size < 20:
                    assert gauge(text, "var", "historical", "0.99") is None
                    continue
                for level in (0.95, 0.99):
                    key = f"{level:g}"
                    var = gauge(text, "var", "historical", key)
                    es = gauge(text, "expected_shortfall", "historical", key)
                    normal = gauge(text, "var", "parametric", key)
                    assert var == pytest.approx(historical_var(pnl, level) * scale, rel=1e-9)
                    assert es == pytest.approx(historical_cvar(pnl, level) * scale, rel=1e-9)
                    sigma = float(pnl.std(ddof=1))
                    assert normal == pytest.approx(normal_quantile(level) * sigma * scale)
                checked += 1
        finally:
            await daemon.stop()
    assert checked >= 2, "the session held no book with enough history to check"
