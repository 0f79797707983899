"""The end-to-end path, in process: synthetic market → orchestrator → MarketState → numba scan
→ signals → risk → router → paper fills → portfolio, every event in the SQLite log once.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import aiohttp
import msgspec

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig, load_config
from quantumtrade.events import OrderFilled, SignalGenerated, decode

START_NS = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z


def session_config(tmp_path: Path, **env: str) -> AppConfig:
    environ = {
        "QT_DATABASE__SQLITE_PATH": str(tmp_path / "events.sqlite"),
        "QT_ADMIN__PORT": "0",
        "QT_ADMIN__TOKEN": "test-token",
        "QT_DATA__SYMBOLS": "12",
        "QT_SCANNER__MIN_ABS_SCORE": "0.05",
        "QT_SCANNER__MIN_BARS": "40",
        **env,
    }
    return load_config(None, environ=environ)


async def run_session(cfg: AppConfig, seconds: int) -> tuple[Daemon, list[OrderFilled], list]:
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock)
    fills: list[OrderFilled] = []
    signals: list[SignalGenerated] = []
    daemon.bus.subscribe(OrderFilled, fills.append)
    daemon.bus.subscribe(SignalGenerated, signals.append)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for _ in range(seconds):
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
        finally:
            await daemon.stop()
    return daemon, fills, signals


async def test_paper_session_fills_orders_and_logs_every_event_once(tmp_path: Path) -> None:
    cfg = session_config(tmp_path)
    daemon, fills, signals = await run_session(cfg, seconds=90)

    assert signals, "the scanner produced no signal in 90 simulated seconds"
    assert all(sig.regime is not None and 0.0 < sig.confidence <= 1.0 for sig in signals)
    assert daemon.bus.counts().get("RegimeChanged", 0) >= 12  # every symbol got a first label
    assert fills, "no order was filled"

    # Positions equal the signed sum of the fills, symbol by symbol.
    expected: dict[str, float] = defaultdict(float)
    for f in fills:
        expected[f.symbol] += f.quantity * f.side.sign
    positions = daemon.portfolio.positions()
    for symbol, qty in expected.items():
        assert abs(positions[symbol].quantity - qty) < 1e-9 * max(1.0, abs(qty))
    fees = sum(f.fee for f in fills)
    assert fees > 0
    assert abs(daemon.portfolio.totals()["fees"] - fees) < 1e-6

    # The log holds every published event exactly once, seq 1..N with no gap, same types.
    from quantumtrade.store.eventlog import SqliteEventLog

    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    rows = [r async for r in log.read()]
    await log.close()
    assert [r.seq for r in rows] == list(range(1, daemon.bus.last_seq + 1))
    by_type: dict[str, int] = defaultdict(int)
    for r in rows:
        by_type[r.type] += 1
        assert decode(r.payload).seq == r.seq
    assert dict(by_type) == daemon.bus.counts()
    logged_fills = [decode(r.payload) for r in rows if r.type == "OrderFilled"]
    assert logged_fills == fills


async def test_restart_continues_seq_and_keeps_the_log(tmp_path: Path) -> None:
    cfg = session_config(tmp_path)
    first, _, _ = await run_session(cfg, seconds=20)
    second, _, _ = await run_session(cfg, seconds=20)
    from quantumtrade.store.eventlog import SqliteEventLog

    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    seqs = [r.seq async for r in log.read()]
    await log.close()
    assert seqs == list(range(1, second.bus.last_seq + 1))
    assert second.bus.last_seq > first.bus.last_seq


async def test_admin_api_health_metrics_and_bad_requests(tmp_path: Path) -> None:
    cfg = session_config(tmp_path)
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for _ in range(5):
                clock.advance(1.0)
                await daemon.step()
            await daemon.bus.drain()
            base = daemon.admin.url
            auth = {"Authorization": "Bearer test-token"}
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/health") as r:
                    assert r.status == 200
                    health = await r.json()
                assert health["status"] in ("ok", "degraded")
                assert {
                    "event_bus",
                    "event_log",
                    "orchestrator",
                    "scanner",
                    "strategy",
                    "risk",
                    "router",
                } <= set(health["components"])

                async with http.get(f"{base}/metrics") as r:
                    assert r.status == 200
                    text = await r.text()
                assert "quantumtrade_system_health " in text
                assert 'quantumtrade_cache_hits_total{cache="books",tier="l1"}' in text
                assert 'quantumtrade_cache_hit_rate{cache="bars"}' in text
                assert "quantumtrade_data_orchestrator_processing_time_bucket" in text
                assert 'quantumtrade_event_bus_events_total{type="BarsUpdated"}' in text

                async with http.get(f"{base}/api/openapi.json") as r:
                    assert r.status == 200 and "paths" in await r.json()

                url = f"{base}/api/trading/data-orchestrator"
                async with http.get(
                    url, params={"endpoint": "market-data", "symbols": "BTCUSDT,ETHUSDT"}
                ) as r:
                    assert r.status == 200
                    data = await r.json()
                    assert data["symbols"]["BTCUSDT"]["bar"]["close"] > 0
                    assert data["symbols"]["ETHUSDT"]["stale"] is False
                    ticker = data["symbols"]["BTCUSDT"]["ticker"]
                    assert ticker is None or ticker["bid"] < ticker["ask"]

                bad_requests = [
                    ("GET", f"{base}/nope", None, {}, 404),
                    ("GET", url, {"endpoint": "bogus"}, {}, 400),
                    ("GET", url, {"endpoint": "market-data", "symbols": "NOPEUSDT"}, {}, 404),
                    ("GET", url, {"endpoint": "market-data"}, {}, 400),
                    ("POST", url, None, {}, 401),
                    ("POST", url, None, {"Authorization": "Bearer wrong"}, 401),
                    ("DELETE", f"{base}/health", None, {}, 405),
                ]
                for method, u, params, headers, status in bad_requests:
                    async with http.request(
                        method,
                        u,
                        params=params,
                        headers=headers,
                        json={"action": "start-flow", "symbols": ["BTCUSDT"]},
                    ) as r:
                        assert r.status == status, (method, u, params, await r.text())
                        assert "error" in await r.json()

                for body, status in [
                    (b"{not json", 400),
                    (b"[1, 2]", 400),
                    (json.dumps({"action": "explode", "symbols": ["BTCUSDT"]}).encode(), 400),
                    (json.dumps({"action": "stop-flow", "symbols": []}).encode(), 400),
                    (json.dumps({"action": "stop-flow", "symbols": [1]}).encode(), 400),
                    (json.dumps({"action": "stop-flow", "symbols": ["ZZZUSDT"]}).encode(), 404),
                ]:
                    json_body = auth | {"Content-Type": "application/json"}
                    async with http.post(url, data=body, headers=json_body) as r:
                        assert r.status == status, (body, await r.text())
                        assert "error" in await r.json()

                async with http.post(
                    url, json={"action": "stop-flow", "symbols": ["ETHUSDT"]}, headers=auth
                ) as r:
                    assert r.status == 200, await r.text()
                async with http.post(f"{url}/reset-circuit-breaker", headers=auth) as r:
                    assert r.status == 200

                regime_url = f"{base}/api/trading/market-regime"
                async with http.get(regime_url, params={"endpoint": "current-regime"}) as r:
                    assert r.status == 200
                    current = await r.json()
                assert current["regime"] in ("TRENDING", "RANGING", "VOLATILE", "BREAKOUT")
                assert 0.0 < current["confidence"] <= 1.0
                assert sum(current["symbols"].values()) == 12 - current["unlabelled"]
                async with http.get(regime_url, params={"endpoint": "regime-confidence"}) as r:
                    assert "BTCUSDT" in (await r.json())["symbols"]
                async with http.get(regime_url, params={"endpoint": "nope"}) as r:
                    assert r.status == 400
                async with http.post(
                    regime_url, json={"symbols": ["BTCUSDT", "ETHUSDT"]}, headers=auth
                ) as r:
                    assert r.status == 200
                    assert (await r.json())["symbols"]["BTCUSDT"]["regime"] is not None
                for body, status in [({"symbols": []}, 400), ({"symbols": ["ZZZUSDT"]}, 404)]:
                    async with http.post(regime_url, json=body, headers=auth) as r:
                        assert r.status == status
                async with http.post(regime_url, json={"symbols": ["BTCUSDT"]}) as r:
                    assert r.status == 401
                async with http.get(f"{base}/metrics") as r:
                    assert "quantumtrade_market_regime_confidence{" in await r.text()

                risk_url = f"{base}/api/trading/risk/state"
                for body, status in [
                    ({"state": "PANIC"}, 400),
                    ({"state": "HALTED", "reason": ""}, 400),
                    ({"reason": "x"}, 400),
                ]:
                    async with http.post(risk_url, json=body, headers=auth) as r:
                        assert r.status == status, (body, await r.text())
                async with http.post(risk_url, json={"state": "HALTED"}) as r:
                    assert r.status == 401
                async with http.post(
                    risk_url, json={"state": "halted", "reason": "drill"}, headers=auth
                ) as r:
                    assert r.status == 200
                    assert (await r.json())["state"] == "HALTED"
                async with http.get(f"{base}/health") as r:
                    assert (await r.json())["components"]["risk"]["state"] == "HALTED"
        finally:
            await daemon.stop()


def test_events_round_trip_through_json() -> None:
    from quantumtrade.events import Side, encode

    s = SignalGenerated(
        ts_ns=1,
        signal_id="x",
        symbol="BTCUSDT",
        side=Side.BUY,
        score=1.0,
        price=2.0,
        volatility=0.1,
    )
    assert decode(encode(s)) == s
    assert msgspec.json.decode(encode(s))["type"] == "SignalGenerated"


async def test_paper_session_on_postgres_and_redis(
    tmp_path: Path, pg_schema: tuple[str, str], redis_prefix: tuple[str, str]
) -> None:
    pg_url, schema = pg_schema
    redis_url, prefix = redis_prefix
    cfg = session_config(
        tmp_path,
        DATABASE_URL=pg_url,
        QT_DATABASE__SCHEMA=schema,
        REDIS_URL=redis_url,
        QT_REDIS__KEY_PREFIX=prefix,
    )
    daemon, fills, _ = await run_session(cfg, seconds=60)
    assert fills
    from quantumtrade.store.postgres import PostgresEventLog

    log = PostgresEventLog(pg_url, schema=schema)
    await log.open()
    seqs = [r.seq async for r in log.read()]
    await log.close()
    assert seqs == list(range(1, daemon.bus.last_seq + 1))
    stats = daemon.book_cache.stats()
    assert stats["l2"]["enabled"] and stats["l2"]["errors"] == 0
    assert stats["l2"]["misses"] > 0  # books were looked up in Redis, then written there
    bars = daemon.bars_cache.stats()
    assert bars["l2"]["enabled"] and bars["l2"]["errors"] == 0 and bars["l2"]["misses"] > 0


async def test_restart_restores_positions_from_the_log(tmp_path: Path) -> None:
    cfg = session_config(tmp_path)
    first, fills, _ = await run_session(cfg, seconds=60)
    assert fills
    before = first.portfolio.positions()
    assert any(p.quantity for p in before.values())
    second = await Daemon.create(cfg, clock=ManualClock(START_NS + 10**12))
    try:
        assert second.portfolio.positions() == before
        assert second.risk.state == "ACTIVE"
    finally:
        await second.eventlog.close()


async def test_unreadable_log_at_start_halts_trading(tmp_path: Path) -> None:
    from quantumtrade.errors import StoreUnavailable
    from quantumtrade.store.eventlog import SqliteEventLog

    class UnreadableLog(SqliteEventLog):
        async def read(self, **kwargs):  # type: ignore[no-untyped-def, override]
            raise StoreUnavailable("database went away")
            yield  # pragma: no cover

    cfg = session_config(tmp_path)
    log = UnreadableLog(cfg.database.sqlite_path)
    await log.open()
    from quantumtrade.data.factory import build_source

    daemon = Daemon(
        cfg,
        clock=ManualClock(START_NS),
        eventlog=log,
        source=await build_source(cfg, ManualClock(START_NS)),
    )
    await daemon.restore_positions()
    assert daemon.risk.state == "HALTED"
    assert daemon.health()["components"]["risk"]["state"] == "HALTED"
    await log.close()


async def test_admin_route_goes_through_risk_and_router(tmp_path: Path) -> None:
    cfg = session_config(tmp_path, QT_RISK__MAX_ORDER_NOTIONAL="50000")
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(cfg, clock=clock)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for _ in range(3):
                clock.advance(1.0)
                await daemon.step()
            await daemon.bus.drain()
            url = f"{daemon.admin.url}/api/trading/order-router"
            auth = {"Authorization": "Bearer test-token"}
            price = daemon.state.latest("ETHUSDT").close  # type: ignore[union-attr]
            qty = 1_000.0 / price
            async with aiohttp.ClientSession() as http:
                order = {
                    "symbol": "ETHUSDT",
                    "side": "BUY",
                    "quantity": qty,
                    "orderType": "MARKET",
                    "clientOrderId": "api-test-1",
                }
                async with http.post(
                    url, json={"action": "route", "orderRequest": order}, headers=auth
                ) as r:
                    assert r.status == 200, await r.text()
                    answer = await r.json()
                assert answer["routing"]["ranking"][0]["venue"] == "paper"
                assert answer["order"]["status"] in ("FILLED", "CANCELLED")
                assert answer["order"]["filled_quantity"] > 0
                assert daemon.portfolio.position("ETHUSDT").quantity > 0

                # The same client order id again: refused, never a second order.
                async with http.post(
                    url, json={"action": "route", "orderRequest": order}, headers=auth
                ) as r:
                    assert r.status == 422
                    assert (await r.json())["order"]["reason"] == "duplicate_order"

                big = dict(order, clientOrderId="api-test-2", quantity=qty * 1_000)
                async with http.post(
                    url, json={"action": "route", "orderRequest": big}, headers=auth
                ) as r:
                    assert r.status == 422
                    assert (await r.json())["order"]["reason"] == "max_order_notional"

                for request, status in [
                    ({"action": "route"}, 400),
                    ({"action": "fly", "orderRequest": order}, 400),
                    ({"action": "route", "orderRequest": dict(order, symbol="NOPEUSDT")}, 404),
                    ({"action": "route", "orderRequest": dict(order, side="HOLD")}, 400),
                    ({"action": "route", "orderRequest": dict(order, quantity=0)}, 400),
                    ({"action": "route", "orderRequest": dict(order, quantity=-1)}, 400),
                    ({"action": "route", "orderRequest": dict(order, quantity="1")}, 400),
                    ({"action": "route", "orderRequest": dict(order, orderType="STOP")}, 400),
                    ({"action": "route", "orderRequest": dict(order, orderType="LIMIT")}, 400),
                ]:
                    async with http.post(url, json=request, headers=auth) as r:
                        assert r.status == status, (request, await r.text())
                        assert "error" in await r.json()
                async with http.post(url, json={"action": "route", "orderRequest": order}) as r:
                    assert r.status == 401
        finally:
            await daemon.stop()
