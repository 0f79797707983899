"""Risk manager: sizing, each refusal, in-flight exposure, and the trading states."""

from __future__ import annotations

import itertools

import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import (
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    RiskStateChanged,
    Side,
    SignalGenerated,
    TradingState,
)
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.manager import (
    ProposedOrder,
    RiskLimits,
    RiskManager,
    RiskView,
    check_order_notional,
    check_position_notional,
    order_notional,
)

_ids = itertools.count(1)


class Harness:
    def __init__(self, limits: RiskLimits | None = None) -> None:
        self.clock = ManualClock()
        self.bus = EventBus(clock=self.clock)
        self.portfolio = Portfolio(bus=self.bus, clock=self.clock)
        self.risk = RiskManager(
            bus=self.bus, clock=self.clock, limits=limits or RiskLimits(), portfolio=self.portfolio
        )
        for event_type, handler in self.risk.order_handlers():
            self.bus.subscribe(event_type, handler)
        self.intents: list[OrderIntent] = []
        self.rejects: list[OrderRejected] = []
        self.states: list[RiskStateChanged] = []
        self.bus.subscribe(OrderIntent, self.intents.append)
        self.bus.subscribe(OrderRejected, self.rejects.append)
        self.bus.subscribe(RiskStateChanged, self.states.append)

    async def signal(
        self,
        side: Side = Side.BUY,
        *,
        symbol: str = "BTCUSDT",
        price: float = 100.0,
        volatility: float = 0.02,
        signal_id: str | None = None,
    ) -> None:
        await self.risk.on_signal(
            SignalGenerated(
                ts_ns=self.clock.now_ns(),
                signal_id=signal_id or f"s{next(_ids)}",
                symbol=symbol,
                side=side,
                score=1.0,
                price=price,
                volatility=volatility,
            )
        )

    async def fill(self, intent: OrderIntent, qty: float, leaves: float) -> None:
        await self.bus.publish(
            OrderFilled(
                ts_ns=self.clock.now_ns(),
                client_order_id=intent.client_order_id,
                venue="paper",
                symbol=intent.symbol,
                side=intent.side,
                quantity=qty,
                price=100.0,
                fee=0.0,
                cumulative_quantity=intent.quantity - leaves,
                leaves_quantity=leaves,
            )
        )


@pytest.mark.parametrize(
    ("volatility", "expected"),
    [(0.02, 1_000.0), (0.04, 500.0), (1.0, 250.0), (0.001, 2_000.0), (0.0, 2_000.0)],
)
def test_volatility_targeted_notional(volatility: float, expected: float) -> None:
    assert order_notional(RiskLimits(), volatility) == pytest.approx(expected)


def test_notional_is_capped() -> None:
    limits = RiskLimits(target_order_notional=8_000.0)
    assert order_notional(limits, 0.001) == 10_000.0


def test_checks_are_plain_functions() -> None:
    limits = RiskLimits(max_order_notional=500.0, max_position_notional=1_000.0)
    view = RiskView(limits=limits, state=TradingState.ACTIVE, exposure=-8.0, orders_last_minute=0)
    big = ProposedOrder(symbol="X", side=Side.BUY, quantity=6.0, price=100.0)
    assert check_order_notional(big, view) == "max_order_notional"
    # Buying 6 against a short of 8 shrinks exposure: allowed even though the order is large.
    assert check_position_notional(big, view) is None
    sell = ProposedOrder(symbol="X", side=Side.SELL, quantity=3.0, price=100.0)
    assert check_position_notional(sell, view) == "max_position_notional"


async def test_sizes_and_publishes_intent_with_deterministic_id() -> None:
    h = Harness()
    await h.signal(Side.BUY, price=50.0, volatility=0.04, signal_id="abc")
    (intent,) = h.intents
    assert intent.client_order_id == "qt-abc"
    assert intent.quantity == pytest.approx(10.0)  # 500 notional / 50
    assert intent.reference_price == 50.0 and intent.signal_id == "abc"
    assert h.risk.in_flight() == {"BTCUSDT": pytest.approx(10.0)}


async def test_sell_without_position_opens_a_short() -> None:
    h = Harness()
    await h.signal(Side.SELL)
    (intent,) = h.intents
    assert intent.side is Side.SELL and intent.quantity == pytest.approx(10.0)
    assert h.risk.exposure("BTCUSDT") == pytest.approx(-10.0)


async def test_position_limit_counts_in_flight_and_releases_on_fill_and_cancel() -> None:
    h = Harness(RiskLimits(max_position_notional=2_500.0))
    await h.signal()
    await h.signal()
    await h.signal()  # 10 + 10 in flight, +10 more = 3000 > 2500
    assert len(h.intents) == 2
    assert [r.reason for r in h.rejects] == ["max_position_notional"]

    first, second = h.intents
    await h.fill(first, 4.0, leaves=6.0)
    # Filled quantity still counts (as a fill the portfolio has not applied yet).
    assert h.risk.exposure("BTCUSDT") == pytest.approx(20.0)
    await h.fill(first, 6.0, leaves=0.0)
    assert h.risk.in_flight() == {"BTCUSDT": pytest.approx(10.0)}
    await h.bus.publish(
        OrderCancelled(
            ts_ns=1,
            client_order_id=second.client_order_id,
            venue="paper",
            symbol="BTCUSDT",
            reason="insufficient_liquidity",
        )
    )
    assert h.risk.in_flight() == {}
    assert h.risk.exposure("BTCUSDT") == pytest.approx(10.0)
    await h.signal()
    assert len(h.intents) == 3


async def test_rejected_intent_releases_in_flight() -> None:
    h = Harness()
    await h.signal()
    (intent,) = h.intents
    await h.bus.publish(
        OrderRejected(
            ts_ns=1,
            client_order_id=intent.client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            quantity=intent.quantity,
            reason="no_eligible_venue",
        )
    )
    assert h.risk.exposure("BTCUSDT") == 0.0


async def test_duplicate_signal_is_refused_and_keeps_the_original_in_flight() -> None:
    h = Harness()
    await h.signal(signal_id="same")
    await h.signal(signal_id="same")
    assert len(h.intents) == 1
    assert [r.reason for r in h.rejects] == ["duplicate_order"]
    assert h.risk.in_flight() == {"BTCUSDT": pytest.approx(10.0)}


async def test_order_rate_limit_uses_a_sliding_minute() -> None:
    h = Harness(RiskLimits(max_orders_per_minute=2))
    for _ in range(3):
        await h.signal(symbol="ETHUSDT")
    assert [r.reason for r in h.rejects] == ["max_orders_per_minute"]
    h.clock.advance(60.0)
    await h.signal(symbol="ETHUSDT")
    assert len(h.intents) == 3


async def test_invalid_signal_is_refused() -> None:
    h = Harness()
    await h.signal(price=0.0)
    await h.signal(volatility=float("nan"))
    assert [r.reason for r in h.rejects] == ["invalid_signal", "invalid_signal"]


async def test_reducing_allows_only_orders_that_shrink_exposure() -> None:
    h = Harness()
    await h.signal(Side.BUY)  # long 10 in flight
    assert await h.risk.set_state(TradingState.REDUCING, "drawdown")
    await h.signal(Side.BUY)
    await h.signal(Side.SELL, symbol="ETHUSDT")  # flat: nothing to reduce
    assert [r.reason for r in h.rejects] == ["reducing_only", "reducing_only"]
    # A sell that would go 10 → -10 is clamped to flat.
    await h.signal(Side.SELL, volatility=0.01)
    assert h.intents[-1].side is Side.SELL and h.intents[-1].quantity == pytest.approx(10.0)
    assert h.risk.exposure("BTCUSDT") == pytest.approx(0.0)
    assert h.risk.health()["status"] == "degraded"


async def test_halted_refuses_everything_and_state_changes_are_published() -> None:
    h = Harness()
    assert await h.risk.set_state(TradingState.HALTED, "kill switch")
    assert not await h.risk.set_state(TradingState.HALTED, "again")
    await h.signal()
    assert [r.reason for r in h.rejects] == ["halted"]
    assert await h.risk.set_state(TradingState.ACTIVE, "resumed")
    await h.signal()
    assert len(h.intents) == 1
    assert [(s.previous, s.state, s.reason) for s in h.states] == [
        (TradingState.ACTIVE, TradingState.HALTED, "kill switch"),
        (TradingState.HALTED, TradingState.ACTIVE, "resumed"),
    ]
    m = h.risk.metrics()
    assert m["state"] == "ACTIVE" and m["checks_passed"] == 1
    assert m["rejects"] == {"halted": 1}
    assert h.risk.health()["status"] == "ok"
