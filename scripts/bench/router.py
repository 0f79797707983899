"""Order routing latency, each figure beside a baseline from the same run.

* route: ``OrderRouter.route`` ranking 5 paper venues with 50-level books (fee, slippage from
  walking each book, latency penalty, venue record), p50 and p99 over many decisions; beside
  the bare minimum of the same work, ``walk_book`` over the 5 books in a loop.
* e2e: an order the strategy engine would send (``RiskManager.submit_order``: the risk checks)
  → ``OrderIntent`` on the bus → router →
  ``CcxtVenue`` (ccxt's real binance client) → the loopback Binance server on 127.0.0.1 (signed
  endpoints) → fills back on the bus, p50 and p99; beside a bare ccxt ``create_order`` on the
  same server, sent right after each routed order so both see the same machine load (the
  overhead ratio compares the medians).

Last line: a JSON object with the figures.

Run: .venv/bin/python scripts/bench/router.py [--decisions N] [--orders N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import msgspec
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock, WallClock
from quantumtrade.credentials import Credentials
from quantumtrade.data.ccxt_source import new_exchange
from quantumtrade.data.source import OrderBook
from quantumtrade.events import (
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    Side,
)
from quantumtrade.execution.ccxt_venue import CcxtVenue, CcxtVenueConfig
from quantumtrade.execution.paper import PaperVenue, PaperVenueConfig
from quantumtrade.execution.router import OrderRouter
from quantumtrade.execution.tracker import OrderTracker
from quantumtrade.execution.venue import walk_book
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.manager import RiskLimits, RiskManager, subscribe_decision_path
from tests.support.loopback_binance import LoopbackBinance, market
from tests.support.loopback_binance_private import add_private_routes

KEY, SECRET = "bench-key", "bench-secret"
NOW_MS = 1_735_689_600_000


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def book(symbol: str, mid: float, levels: int, step: float, qty: float) -> OrderBook:
    return OrderBook(
        symbol=symbol,
        ts_ms=NOW_MS,
        bids=tuple((mid - (i + 1) * step, qty * (1 + i % 3)) for i in range(levels)),
        asks=tuple((mid + (i + 1) * step, qty * (1 + i % 3)) for i in range(levels)),
    )


async def route_latency(decisions: int) -> tuple[list[float], list[float]]:
    clock = ManualClock(NOW_MS * 1_000_000)
    bus = EventBus(clock=clock)
    books = {
        f"venue{v}": book("BTCUSDT", 60_000.0 + v, 50, 0.5 + v * 0.1, 0.05 + v * 0.01)
        for v in range(5)
    }
    venues = []
    for v, name in enumerate(books):

        async def books_of(symbol: str, name: str = name) -> OrderBook:
            return books[name]

        venues.append(
            PaperVenue(
                name,
                clock=clock,
                books=books_of,
                config=PaperVenueConfig(taker_fee_bps=5.0 + v * 2.5),
            )
        )
    router = OrderRouter(bus=bus, clock=clock, venues=venues)
    intent = OrderIntent(
        ts_ns=0, client_order_id="bench", symbol="BTCUSDT", side=Side.BUY, quantity=1.5
    )
    for _ in range(200):  # warm caches and code paths
        await router.route(intent)
    routed: list[float] = []
    bare: list[float] = []
    levels = [b.asks for b in books.values()]
    for _ in range(decisions):
        t0 = time.perf_counter_ns()
        await router.route(intent)
        routed.append((time.perf_counter_ns() - t0) / 1000)
        t0 = time.perf_counter_ns()
        min(walk_book(asks, 1.5)[1] for asks in levels)
        bare.append((time.perf_counter_ns() - t0) / 1000)
    return routed, bare


async def e2e_latency(orders: int) -> tuple[list[float], list[float]]:
    bars = [(NOW_MS - i * 60_000, 60_000.0, 60_010.0, 59_990.0, 60_000.0, 10.0) for i in range(5)]
    asks = [(60_000.5 + i, 1_000.0) for i in range(50)]
    bids = [(59_999.5 - i, 1_000.0) for i in range(50)]
    markets = {"BTCUSDT": market("BTCUSDT", bars, bids, asks)}
    async with LoopbackBinance(markets) as server:
        add_private_routes(server, api_key=KEY, secret=SECRET, balances={"USDT": 1e15, "BTC": 1e9})
        clock = WallClock()
        config = msgspec.convert(
            {"api_url": server.base_url, "enable_rate_limit": False, "timeout_ms": 5_000},
            CcxtVenueConfig,
        )
        async with CcxtVenue(
            config, credentials=Credentials(api_key=KEY, secret=SECRET), clock=clock
        ) as venue:
            bus = EventBus(clock=clock)
            portfolio = Portfolio(bus=bus, clock=clock)
            limits = RiskLimits(
                max_order_notional=1e12,
                max_position_notional=1e15,
                max_gross_exposure=1e15,
                max_cluster_exposure=1e15,
                max_orders_per_minute=10**9,
                max_drawdown=1e15,
            )
            risk = RiskManager(bus=bus, clock=clock, limits=limits, portfolio=portfolio)
            router = OrderRouter(bus=bus, clock=clock, venues=[venue])
            tracker = OrderTracker()
            subscribe_decision_path(bus, risk=risk, portfolio=portfolio)
            bus.subscribe(OrderIntent, tracker.on_intent)
            bus.subscribe(OrderIntent, router.on_intent)
            bus.subscribe(OrderFilled, tracker.on_filled)
            bus.subscribe(OrderCancelled, tracker.on_cancelled)
            bus.subscribe(OrderRejected, tracker.on_rejected)
            # The bare ccxt client runs against the same server, one order after each routed
            # one, so both samples see the same machine load (a shared 2-core box drifts).
            exchange = new_exchange(
                "binance",
                api_url=server.base_url,
                enable_rate_limit=False,
                credentials=Credentials(api_key=KEY, secret=SECRET),
            )
            e2e: list[float] = []
            bare: list[float] = []
            try:
                await exchange.load_markets()
                async with asyncio.TaskGroup() as tg:
                    bus.start(tg)
                    for i in range(orders + 20):
                        side = Side.BUY if i % 2 == 0 else Side.SELL
                        done = tracker.watch(f"qt-bench-{i}")
                        t0 = time.perf_counter_ns()
                        await risk.submit_order(
                            client_order_id=f"qt-bench-{i}",
                            symbol="BTCUSDT",
                            side=side,
                            quantity=1000.0 / 60_000.0,
                            price=60_000.0,
                            signal_id=f"bench-{i}",
                            reason="bench",
                        )
                        outcome = await done
                        t1 = time.perf_counter_ns()
                        assert outcome.status in ("FILLED", "CANCELLED"), outcome
                        await exchange.create_order(
                            "BTC/USDT",
                            "market",
                            "buy" if i % 2 == 0 else "sell",
                            1000.0 / 60_000.0,
                            params={"newClientOrderId": f"bare-{i}"},
                        )
                        t2 = time.perf_counter_ns()
                        if i >= 20:  # the first ones warm up connections and code paths
                            e2e.append((t1 - t0) / 1e6)
                            bare.append((t2 - t1) / 1e6)
                    await bus.stop()
            finally:
                await exchange.close()
    return e2e, bare


async def main(decisions: int, orders: int) -> dict[str, float]:
    routed, walk = await route_latency(decisions)
    e2e, bare = await e2e_latency(orders)
    return {
        "route_p50_us": round(percentile(routed, 0.50), 1),
        "route_p99_us": round(percentile(routed, 0.99), 1),
        "walk_books_p50_us": round(percentile(walk, 0.50), 1),
        "e2e_p50_ms": round(percentile(e2e, 0.50), 3),
        "e2e_p99_ms": round(percentile(e2e, 0.99), 3),
        "ccxt_create_order_p50_ms": round(percentile(bare, 0.50), 3),
        "ccxt_create_order_p99_ms": round(percentile(bare, 0.99), 3),
        "overhead_ratio_vs_ccxt": round(statistics.median(e2e) / statistics.median(bare), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=5_000)
    parser.add_argument("--orders", type=int, default=300)
    args = parser.parse_args()
    f = uvloop.run(main(args.decisions, args.orders))
    print(
        f"routing decision, 5 venues x 50 levels ({args.decisions:,} decisions): "
        f"p50 {f['route_p50_us']} us, p99 {f['route_p99_us']} us  (goal p99 < 200 us); "
        f"bare book walks p50 {f['walk_books_p50_us']} us"
    )
    print(
        f"signal -> filled order through risk, router, ccxt, loopback exchange "
        f"({args.orders} orders): p50 {f['e2e_p50_ms']} ms, p99 {f['e2e_p99_ms']} ms "
        f"(goal p99 < 20 ms)"
    )
    print(
        f"bare ccxt create_order on the same server: p50 {f['ccxt_create_order_p50_ms']} ms, "
        f"p99 {f['ccxt_create_order_p99_ms']} ms; overhead ratio "
        f"{f['overhead_ratio_vs_ccxt']:.2f} (goal <= 1.2)"
    )
    print(json.dumps(f))
