"""Next-bar fills: prices, the volume cap, limit orders that wait for a bar to trade through."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import (
    Bar,
    BarBlock,
    BarsUpdated,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderType,
    Side,
)
from quantumtrade.execution.bar_fill import (
    BarFillConfig,
    BarVenue,
    NextBarGate,
    limit_price,
    market_price,
)
from quantumtrade.execution.router import OrderRouter

CFG = BarFillConfig(
    slippage_bps=10.0, range_share=0.1, max_volume_share=0.5, taker_fee_bps=10, maker_fee_bps=2
)
BAR = Bar(0, open=100.0, high=110.0, low=95.0, close=105.0, volume=40.0)


def test_market_price_is_the_open_plus_bps_and_a_share_of_the_range() -> None:
    # 100 * 10 / 1e4 = 0.1; 0.1 * (110 - 95) = 1.5
    assert market_price(Side.BUY, BAR, CFG) == pytest.approx(101.6)
    assert market_price(Side.SELL, BAR, CFG) == pytest.approx(98.4)


def test_limit_fills_only_when_the_bar_trades_through_and_at_the_better_open_on_a_gap() -> None:
    assert limit_price(Side.BUY, 96.0, BAR) == 96.0
    assert limit_price(Side.BUY, 95.0, BAR) is None  # touched, not traded through
    assert limit_price(Side.BUY, 120.0, BAR) == 100.0  # gap: the open is better
    assert limit_price(Side.SELL, 109.0, BAR) == 109.0
    assert limit_price(Side.SELL, 110.0, BAR) is None
    assert limit_price(Side.SELL, 90.0, BAR) == 100.0


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock(0)
        self.bus = EventBus(clock=self.clock)
        self.venue = BarVenue("sim", config=CFG)
        self.router = OrderRouter(bus=self.bus, clock=self.clock, venues=[self.venue])
        self.gate = NextBarGate(
            bus=self.bus, clock=self.clock, venue=self.venue, route=self.router.on_intent
        )
        self.fills: list[OrderFilled] = []
        self.cancels: list[OrderCancelled] = []
        self.bus.subscribe(BarsUpdated, self.gate.on_bars)
        self.bus.subscribe(OrderIntent, self.gate.on_intent)
        self.bus.subscribe(OrderFilled, self.fills.append)
        self.bus.subscribe(OrderCancelled, self.cancels.append)

    async def bar(self, ts: int, bar: Bar) -> None:
        block = BarBlock.from_bars([Bar(ts, bar.open, bar.high, bar.low, bar.close, bar.volume)])
        await self.bus.publish(BarsUpdated(ts_ns=0, symbol="BTCUSDT", source="t", bars=block))
        await self.gate.release()
        await self.bus.drain()

    async def order(self, qty: float, *, side: Side = Side.BUY, limit: float | None = None) -> None:
        await self.bus.publish(
            OrderIntent(
                ts_ns=0,
                client_order_id=f"o{len(self.fills)}-{qty}-{limit}",
                symbol="BTCUSDT",
                side=side,
                quantity=qty,
                order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
                limit_price=limit,
            )
        )


async def run(scenario) -> Harness:  # type: ignore[no-untyped-def]
    h = Harness()
    async with asyncio.TaskGroup() as tg:
        h.bus.start(tg)
        await scenario(h)
        await h.bus.stop()
    return h


async def test_a_market_order_waits_for_the_next_bar_and_is_capped_by_its_volume() -> None:
    async def scenario(h: Harness) -> None:
        await h.bar(1, BAR)
        await h.order(30.0)
        await h.gate.release()  # no new bar yet: nothing may fill
        await h.bus.drain()
        assert h.fills == [] and h.gate.pending == 1
        await h.bar(2, Bar(0, 200.0, 200.0, 200.0, 200.0, 40.0))

    h = await run(scenario)
    (fill,) = h.fills
    assert fill.price == pytest.approx(200.0 * 1.001)  # the next bar's open, not 105
    assert fill.quantity == pytest.approx(20.0)  # half of the bar's 40
    assert fill.fee == pytest.approx(20.0 * 200.2 * 10 / 1e4)
    (cancel,) = h.cancels
    assert cancel.reason == "volume_cap" and cancel.filled_quantity == pytest.approx(20.0)


async def test_a_limit_order_rests_until_a_bar_trades_through_then_pays_the_maker_fee() -> None:
    async def scenario(h: Harness) -> None:
        await h.bar(1, BAR)
        await h.order(1.0, limit=90.0)
        await h.bar(2, Bar(0, 100.0, 101.0, 91.0, 95.0, 40.0))  # low 91: not through 90
        assert h.fills == []
        await h.bar(3, Bar(0, 94.0, 95.0, 89.0, 93.0, 40.0))

    h = await run(scenario)
    (fill,) = h.fills
    assert fill.price == 90.0
    assert fill.fee == pytest.approx(90.0 * 2 / 1e4)


async def test_an_untouched_limit_order_expires_after_its_ttl() -> None:
    config = BarFillConfig(limit_ttl_bars=3)

    async def scenario(h: Harness) -> None:
        h.venue.config = h.gate.config = config
        await h.bar(1, BAR)
        await h.order(1.0, side=Side.SELL, limit=150.0)
        for ts in (2, 3):
            await h.bar(ts, BAR)
        assert h.cancels == []
        await h.bar(4, BAR)

    h = await run(scenario)
    assert h.fills == []
    (cancel,) = h.cancels
    assert cancel.reason == "limit_expired"


async def test_orders_still_held_at_shutdown_are_cancelled_not_left_open() -> None:
    async def scenario(h: Harness) -> None:
        await h.bar(1, BAR)
        await h.order(1.0)
        await h.order(2.0, limit=50.0)
        assert await h.gate.cancel_all("shutdown") == 2
        await h.bus.drain()
        await h.bar(2, BAR)  # nothing is left to fill

    h = await run(scenario)
    assert h.fills == []
    assert [c.reason for c in h.cancels] == ["shutdown", "shutdown"]
    assert h.gate.pending == 0


async def test_one_batch_of_many_symbols_fills_each_order_at_its_own_symbols_bar() -> None:
    def batch(ts: int, bars: dict[str, Bar]) -> BarsUpdated:
        return BarsUpdated.of(
            0,
            "t",
            tuple(bars),
            np.arange(len(bars) + 1, dtype=np.int64),
            BarBlock.from_bars(
                [Bar(ts, b.open, b.high, b.low, b.close, b.volume) for b in bars.values()]
            ),
        )

    async def scenario(h: Harness) -> None:
        first = {s: Bar(0, p, p, p, p, 1e6) for s, p in (("AUSDT", 10.0), ("BTCUSDT", 100.0))}
        await h.bus.publish(batch(1, first))
        await h.order(1.0)  # BTCUSDT, held until BTCUSDT's next bar
        await h.bus.publish(batch(2, {"AUSDT": Bar(0, 11.0, 11.0, 11.0, 11.0, 1e6)}))
        await h.gate.release()
        await h.bus.drain()
        assert h.fills == []  # another symbol's bar is not this order's
        nxt = {"AUSDT": Bar(0, 12.0, 12, 12, 12, 1e6), "BTCUSDT": Bar(0, 200.0, 200, 200, 200, 1e6)}
        await h.bus.publish(batch(3, nxt))
        await h.gate.release()
        await h.bus.drain()

    h = await run(scenario)
    (fill,) = h.fills
    assert fill.symbol == "BTCUSDT" and fill.price == pytest.approx(200.0 * 1.001)
