"""The daemon's PnL is marked at every bar: positions show their mark and unrealised PnL,
``quantumtrade_pnl{kind="unrealized"}`` moves, and /positions and /risk agree on equity."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from tests.integration.test_paper_session import START_NS, session_config


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()


def unrealized_metric(text: str) -> float:
    match = re.search(r'^quantumtrade_pnl\{kind="unrealized"\} (\S+)$', text, re.MULTILINE)
    assert match is not None, "no unrealized pnl metric"
    return float(match.group(1))


async def test_positions_are_marked_and_agree_with_risk_equity(tmp_path: Path) -> None:
    cfg = session_config(tmp_path)
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock)
    seen_unrealized: set[float] = set()
    async with asyncio.TaskGroup() as tg, aiohttp.ClientSession() as http:
        await daemon.start(tg)
        try:
            base = daemon.admin.url
            for second in range(120):
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
                if second < 60 or second % 10:
                    continue
                positions = await get(http, f"{base}/api/trading/positions")
                risk = await get(http, f"{base}/api/trading/risk")
                metrics = await get(http, f"{base}/metrics")
                held = {s: p for s, p in positions["positions"].items() if p["quantity"]}
                assert held, "the session opened no position"
                for symbol, p in held.items():
                    last = daemon.state.latest(symbol)
                    assert last is not None
                    assert p["mark_price"] == last.close
                    assert abs(
                        p["unrealized_pnl"] - p["quantity"] * (last.close - p["avg_price"])
                    ) < 1e-6 * max(1.0, abs(p["unrealized_pnl"]))
                totals = positions["totals"]
                assert (
                    abs(totals["unrealized"] - sum(p["unrealized_pnl"] for p in held.values()))
                    < 1e-6
                )
                assert abs(totals["net"] - risk["equity"]) < 1e-6
                assert abs(unrealized_metric(metrics) - totals["unrealized"]) < 1e-6
                seen_unrealized.add(round(totals["unrealized"], 9))
        finally:
            await daemon.stop()
    assert len(seen_unrealized) > 1, "unrealised PnL never moved"
    assert any(v != 0.0 for v in seen_unrealized)
