"""Anomalies through the daemon: ``GET /api/trading/anomalies`` and ``/metrics`` (real
aiohttp), and replay parity of the entries the pause refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import msgspec

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from quantumtrade.events import AnomalyDetected, OrderRejected, TickerUpdated, decode
from quantumtrade.replay import replay_log
from quantumtrade.risk.manager import ANOMALY_PAUSE
from quantumtrade.store.eventlog import SqliteEventLog
from tests.integration.test_paper_session import START_NS, run_session, session_config


async def test_an_anomaly_shows_in_the_api_and_the_metrics(tmp_path: Path) -> None:
    cfg = session_config(tmp_path, QT_ANOMALY__PAUSE_ENTRIES="true")
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock)
    seen: list[AnomalyDetected] = []
    daemon.bus.subscribe(AnomalyDetected, seen.append)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for _ in range(3):
                clock.advance(1.0)
                await daemon.step()
            await daemon.bus.drain()
            detector = daemon.core.anomaly
            assert detector is not None
            symbol = daemon.state.symbols[0]
            close = daemon.state.latest(symbol).close  # type: ignore[union-attr]
            base = daemon.admin.url
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/api/trading/anomalies?symbols={symbol}") as r:
                    assert r.status == 200
                    assert (await r.json())["symbols"] == {}  # the negative control
                # A ticker at twice the last close: far beyond any volatility.
                detector.on_ticker(
                    TickerUpdated(
                        ts_ns=clock.now_ns(), symbol=symbol, source="synthetic",
                        bid=2 * close, ask=2 * close, last=2 * close,
                    )
                )  # fmt: skip
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
                assert any(e.symbol == symbol and e.kind == "ticker" for e in seen)
                async with http.get(f"{base}/api/trading/anomalies") as r:
                    assert r.status == 200
                    body = await r.json()
                assert body["enabled"] is True and body["pause_entries"] is True
                ticker = [a for a in body["symbols"][symbol] if a["kind"] == "ticker"]
                assert len(ticker) == 1 and ticker[0]["score"] > cfg.anomaly.ticker_z
                assert ticker[0]["since_ms"] > 0
                async with http.get(f"{base}/api/trading/anomalies?symbols=NOPEUSDT") as r:
                    assert r.status == 404
                    assert "NOPEUSDT" in (await r.json())["error"]
                async with http.get(f"{base}/api/trading/anomalies?symbols=,") as r:
                    assert r.status == 400
                    assert "error" in await r.json()
                async with http.get(f"{base}/api/trading/risk") as r:
                    assert symbol in (await r.json())["anomaly_pause"]["symbols"]
                async with http.get(f"{base}/metrics") as r:
                    text = await r.text()
                assert 'quantumtrade_anomalies_total{kind="ticker"}' in text
                active = [
                    line
                    for line in text.splitlines()
                    if line.startswith('quantumtrade_anomalies_active{kind="ticker"}')
                ]
                assert active and float(active[0].split()[-1]) >= 1.0
                async with http.get(f"{base}/api/openapi.json") as r:
                    assert "/api/trading/anomalies" in (await r.json())["paths"]
        finally:
            await daemon.stop()


async def test_paused_entries_replay_with_zero_differences(tmp_path: Path) -> None:
    # Low thresholds, so that the synthetic market trips anomalies and the pause refuses
    # entries; replay must re-derive those refusals from the logged bars alone.
    cfg = session_config(
        tmp_path,
        QT_ANOMALY__PAUSE_ENTRIES="true",
        QT_ANOMALY__VOLUME_Z="1.0",
        QT_ANOMALY__RANGE_Z="1.0",
        QT_ANOMALY__CLEAR_BARS="20",
    )
    await run_session(cfg, seconds=90)
    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    try:
        report = await replay_log(log, cfg)
        assert report.differences == []
        assert report.logged.get("OrderRejected", 0) > 0
        refused = [
            e
            async for stored in log.read()
            if isinstance(e := decode(stored.payload), OrderRejected) and e.reason == ANOMALY_PAUSE
        ]
        assert refused
        # Negative control: the same log replayed without the pause decides differently.
        unpaused = msgspec.structs.replace(
            cfg, anomaly=msgspec.structs.replace(cfg.anomaly, pause_entries=False)
        )
        assert (await replay_log(log, unpaused)).differences
    finally:
        await log.close()
