"""The daemon in live mode against the loopback Binance server (signed endpoints, ccxt's real
client): an operator's order goes through the admin API, the risk manager and the router to the
exchange and into the event log; after a restart, reconciliation brings an order of unknown
outcome up to date and records an order the log never knew."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig, load_config
from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource
from quantumtrade.events import ExternalOrderFound, OrderFilled, OrderSubmitted, Side, decode
from quantumtrade.store.eventlog import SqliteEventLog
from tests.integration.test_paper_session import START_NS
from tests.support.loopback_binance import LoopbackBinance, markets_from_source
from tests.support.loopback_binance_private import (
    OrderFault,
    OrderFaultKind,
    PrivateBook,
    add_private_routes,
)

KEY, SECRET, TOKEN = "live-key", "live-secret", "live-token"


def live_config(tmp_path: Path, base_url: str) -> tuple[AppConfig, dict[str, str]]:
    toml = tmp_path / "live.toml"
    toml.write_text(
        f"""
[system]
mode = "live"

[data]
symbols = 4

[data.synthetic]
seed = 3
bar_ms = 60000

[scanner]
min_abs_score = 1000.0      # no signals: the only orders are this test's

[[execution.venues]]
exchange = "binance"
api_url = "{base_url}"
enable_rate_limit = false   # ccxt's throttle would pace this loopback test at ~48 req/s
timeout_ms = 2000
resolve_attempts = 2
resolve_backoff_ms = 0      # the venue sleeps on the manual clock, which nobody advances

[execution.reconcile]
interval_s = 0
"""
    )
    environ = {
        "BINANCE_API_KEY": KEY,
        "BINANCE_SECRET_KEY": SECRET,
        "QT_DATABASE__SQLITE_PATH": str(tmp_path / "events.sqlite"),
        "QT_ADMIN__PORT": "0",
        "QT_ADMIN__TOKEN": TOKEN,
    }
    return load_config(toml, environ=environ), environ


async def logged(tmp_path: Path, type_name: str) -> list[object]:
    log = SqliteEventLog(str(tmp_path / "events.sqlite"))
    await log.open()
    try:
        return [decode(s.payload) async for s in log.read(types=[type_name])]
    finally:
        await log.close()


async def test_live_daemon_routes_to_the_exchange_and_reconciles_after_restart(
    tmp_path: Path,
) -> None:
    clock = ManualClock(START_NS)
    synthetic = SyntheticSource(SyntheticConfig(seed=3, symbols=4, bar_ms=60_000), clock)
    symbols = synthetic.symbols()
    markets = await markets_from_source(synthetic, symbols, START_NS // 1_000_000)
    async with LoopbackBinance(markets, now_ms=lambda: START_NS // 1_000_000) as server:
        book: PrivateBook = add_private_routes(
            server, api_key=KEY, secret=SECRET, balances={"USDT": 1e12}
        )
        cfg, environ = live_config(tmp_path, server.base_url)

        # --- first run: an operator's order, then one whose outcome stays unknown ---------
        daemon = await Daemon.create(cfg, clock=clock, environ=environ)
        assert [v.name for v in daemon.router.venues.values()] == ["binance"]
        async with asyncio.TaskGroup() as tg:
            await daemon.start(tg)
            try:
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
                bar = daemon.state.latest("BTCUSDT")
                assert bar is not None
                # Off the exchange's lot step (0.00001) on purpose: the router sends the
                # quantity rounded down to it, and the order is filled when all of that is.
                quantity = 500.0 / bar.close
                (venue,) = daemon.ccxt_venues
                sent = venue.tradable_quantity("BTCUSDT", quantity)
                assert 0 < sent < quantity and sent == round(sent, 5)
                async with aiohttp.ClientSession() as http:
                    async with http.post(
                        f"{daemon.admin.url}/api/trading/order-router",
                        json={
                            "action": "route",
                            "orderRequest": {
                                "symbol": "BTCUSDT",
                                "side": "BUY",
                                "quantity": quantity,
                                "orderType": "MARKET",
                                "clientOrderId": "op-1",
                            },
                        },
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as resp:
                        answer = await resp.json()
                        assert resp.status == 200, answer
                assert answer["order"]["status"] == "FILLED", answer
                assert answer["order"]["filled_quantity"] == pytest.approx(sent)
                assert answer["order"]["venue"] == "binance"
                assert answer["routing"]["children"][0]["venue"] == "binance"
                assert answer["routing"]["children"][0]["quantity"] == sent

                # Accepted by the exchange, answered 503, and both queries fail: in flight.
                book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
                book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
                await daemon.risk.submit_order(
                    client_order_id="op-2",
                    symbol="BTCUSDT",
                    side=Side.BUY,
                    quantity=quantity,
                    price=bar.close,
                )
                await daemon.bus.drain()
                assert "op-2" in daemon.ledger.open
            finally:
                await daemon.stop()
        position_before = daemon.portfolio.position("BTCUSDT").quantity
        assert position_before == pytest.approx(sent)  # op-2's fill is not known yet

        assert set(book.orders) == {"op-1", "op-2"}
        assert book.orders["op-1"].status == "FILLED"
        assert book.orders["op-1"].orig_qty == book.orders["op-2"].orig_qty == sent
        submitted = await logged(tmp_path, "OrderSubmitted")
        assert {e.client_order_id for e in submitted if isinstance(e, OrderSubmitted)} == {
            "op-1",
            "op-2",
        }

        # While it was down, someone placed an order by hand on the same account.
        manual = book.place(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.001",
                "price": f"{bar.close * 0.5:.2f}",
                "newClientOrderId": "by-hand-1",
            }
        )
        assert getattr(manual, "status", None) == "NEW"

        # --- restart: reconciliation at start ----------------------------------------------
        restarted = await Daemon.create(cfg, clock=clock, environ=environ)
        assert "op-2" in restarted.ledger.open  # rebuilt from the log
        async with asyncio.TaskGroup() as tg:
            await restarted.start(tg)
            try:
                await restarted.bus.drain()
                async with aiohttp.ClientSession() as http:
                    async with http.get(
                        f"{restarted.admin.url}/api/trading/order-router",
                        params={"endpoint": "reconciliation"},
                    ) as resp:
                        status = await resp.json()
                        assert resp.status == 200
            finally:
                await restarted.stop()
        assert not restarted.ledger.open
        assert [e["client_order_id"] for e in status["external_orders"]] == ["by-hand-1"]
        assert status["balances"]["binance"]["BTC"] == pytest.approx(2 * sent, rel=1e-9)
        assert restarted.portfolio.position("BTCUSDT").quantity == pytest.approx(2 * sent)

    fills = [e for e in await logged(tmp_path, "OrderFilled") if isinstance(e, OrderFilled)]
    assert sorted(f.client_order_id for f in fills) == ["op-1", "op-2"]
    externals = await logged(tmp_path, "ExternalOrderFound")
    assert [e.client_order_id for e in externals if isinstance(e, ExternalOrderFound)] == [
        "by-hand-1"
    ]
    assert book.order_posts == 2  # nothing was sent twice
