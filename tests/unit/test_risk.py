"""Risk manager: each refusal, in-flight exposure, and the trading states."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
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
    OrderRejected,
    RiskStateChanged,
    Side,
    TradingState,
)
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.manager import (
    ProposedOrder,
    RiskLimits,
    RiskManager,
    RiskView,
    check_cluster_exposure,
    check_gross_exposure,
    check_order_notional,
    check_position_notional,
    check_price_band,
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
        self._bar_ms: dict[str, int] = {}

    async def signal(
        self,
        side: Side = Side.BUY,
        *,
        symbol: str = "BTCUSDT",
        price: float = 100.0,
        volatility: float = 0.02,
        signal_id: str | None = None,
    ) -> None:
        """An order as a strategy sizes one: 1,000 of notional at 2 % volatility, scaled by
        0.02 / volatility within [0.25, 2], capped at the order limit."""
        scale = 0.02 / volatility if volatility > 0 else 2.0
        notional = min(1_000.0 * min(max(scale, 0.25), 2.0), self.risk.limits.max_order_notional)
        sid = signal_id or f"s{next(_ids)}"
        await self.risk.submit_order(
            client_order_id=f"qt-{sid}",
            signal_id=sid,
            symbol=symbol,
            side=side,
            quantity=notional / price if price > 0 else float("nan"),
            price=price,
        )

    def state(self) -> TradingState:
        """The current state (a call, so mypy does not narrow it across awaits)."""
        return self.risk.state

    async def bar(self, close: float, *, symbol: str = "BTCUSDT", ts_ms: int | None = None) -> None:
        bar_ms = self._bar_ms[symbol] = ts_ms or self._bar_ms.get(symbol, 0) + 60_000
        await self.bus.publish(
            BarsUpdated(
                ts_ns=self.clock.now_ns(),
                symbol=symbol,
                source="test",
                bars=BarBlock.from_bars([Bar(bar_ms, close, close, close, close, 1.0)]),
            )
        )

    async def venue_reject(self, intent: OrderIntent) -> None:
        await self.bus.publish(
            OrderRejected(
                ts_ns=self.clock.now_ns(),
                client_order_id=intent.client_order_id,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                reason="venue_rejected",
                venue="paper",
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


async def test_invalid_order_is_refused() -> None:
    h = Harness()
    await h.signal(price=0.0)
    await h.signal(price=float("inf"))
    assert [r.reason for r in h.rejects] == ["invalid_order", "invalid_order"]


async def test_reducing_allows_only_orders_that_shrink_exposure() -> None:
    h = Harness()
    await h.signal(Side.BUY)  # long 10 in flight
    assert await h.risk.set_state(TradingState.REDUCING, "drawdown")
    await h.signal(Side.BUY)
    await h.signal(Side.SELL, symbol="ETHUSDT")  # flat: nothing to reduce
    assert [r.reason for r in h.rejects] == ["reducing_only", "reducing_only"]
    # A sell that would go 10 → -10 crosses flat: refused; one of 10 goes.
    await h.signal(Side.SELL, volatility=0.01)
    assert h.rejects[-1].reason == "reducing_only"
    await h.signal(Side.SELL)
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


@asynccontextmanager
async def running(limits: RiskLimits | None = None) -> AsyncIterator[Harness]:
    """A harness whose bus runs its coroutine subscribers (portfolio, kill switches)."""
    async with asyncio.TaskGroup() as tg:
        h = Harness(limits)
        h.bus.subscribe(OrderFilled, h.portfolio.on_fill)
        h.bus.start(tg)
        try:
            yield h
        finally:
            await h.bus.drain()
            await h.bus.stop()


def view(**kw: object) -> RiskView:
    fields: dict[str, object] = {
        "limits": RiskLimits(),
        "state": TradingState.ACTIVE,
        "exposure": 0.0,
        "orders_last_minute": 0,
    }
    return msgspec.convert(fields | kw, RiskView, from_attributes=True)


def buy(qty: float, price: float = 100.0) -> ProposedOrder:
    return ProposedOrder(symbol="X", side=Side.BUY, quantity=qty, price=price)


def sell(qty: float, price: float = 100.0) -> ProposedOrder:
    return ProposedOrder(symbol="X", side=Side.SELL, quantity=qty, price=price)


def test_limits_decode_with_clusters_and_refuse_unknown_keys() -> None:
    limits = msgspec.convert(
        {"clusters": {"BTCUSDT": "majors"}, "max_drawdown": 500, "error_window": 10}, RiskLimits
    )
    assert limits.clusters == {"BTCUSDT": "majors"} and limits.max_drawdown == 500.0
    with pytest.raises(msgspec.ValidationError, match="max_drawdwn"):
        msgspec.convert({"max_drawdwn": 1.0}, RiskLimits)
    with pytest.raises(msgspec.ValidationError, match="error_window"):
        msgspec.convert({"error_window": 0}, RiskLimits)
    with pytest.raises(msgspec.ValidationError, match="max_error_rate"):
        msgspec.convert({"max_error_rate": 1.5}, RiskLimits)


def test_price_band_boundaries() -> None:
    v = view(limits=RiskLimits(price_band_bps=100.0), last_price=100.0)  # ±1.00
    assert check_price_band(buy(1, 101.0), v) is None
    assert check_price_band(sell(1, 99.0), v) is None
    assert check_price_band(buy(1, 101.01), v) == "price_band"
    assert check_price_band(sell(1, 98.99), v) == "price_band"
    # No close seen yet: nothing to compare with.
    assert check_price_band(buy(1, 1e9), view(limits=RiskLimits(price_band_bps=100.0))) is None


def test_gross_exposure_boundaries() -> None:
    v = view(limits=RiskLimits(max_gross_exposure=1_000.0), other_gross_exposure=600.0)
    assert check_gross_exposure(buy(4.0), v) is None  # 600 + 400 = 1000: at the cap
    assert check_gross_exposure(buy(4.01), v) == "max_gross_exposure"
    assert check_gross_exposure(sell(4.01), v) == "max_gross_exposure"  # a short counts too
    # Shrinking a short of 5 is always allowed, however full the book is.
    over = view(
        limits=RiskLimits(max_gross_exposure=1_000.0), other_gross_exposure=5_000.0, exposure=-5.0
    )
    assert check_gross_exposure(buy(3.0), over) is None
    assert check_gross_exposure(sell(0.01), over) == "max_gross_exposure"


def test_cluster_exposure_is_net_within_the_cluster() -> None:
    limits = RiskLimits(max_cluster_exposure=1_000.0)
    long_cluster = view(limits=limits, other_cluster_exposure=700.0)
    assert check_cluster_exposure(buy(3.0), long_cluster) is None  # 700 + 300 = 1000
    assert check_cluster_exposure(buy(3.01), long_cluster) == "max_cluster_exposure"
    assert check_cluster_exposure(sell(10.0), long_cluster) is None  # 700 - 1000 = -300: a hedge
    assert check_cluster_exposure(sell(17.0), long_cluster) is None  # -1000
    assert check_cluster_exposure(sell(17.01), long_cluster) == "max_cluster_exposure"
    # Already over the cap: an order that brings the cluster back toward zero passes.
    over = view(limits=limits, other_cluster_exposure=1_500.0)
    assert check_cluster_exposure(sell(1.0), over) is None
    assert check_cluster_exposure(buy(0.01), over) == "max_cluster_exposure"


async def test_price_band_uses_the_last_close_from_bars() -> None:
    h = Harness(RiskLimits(price_band_bps=1_000.0))  # 10%
    await h.signal(price=250.0)  # no bar yet: any price passes
    await h.bar(100.0)
    await h.signal(price=110.0)
    await h.signal(price=110.01)
    await h.signal(price=89.99)
    assert [r.reason for r in h.rejects] == ["price_band", "price_band"]
    assert len(h.intents) == 2
    assert h.risk.last_close("BTCUSDT") == 100.0


async def test_cluster_cap_groups_listed_symbols_and_leaves_others_alone() -> None:
    clusters = {"BTCUSDT": "majors", "ETHUSDT": "majors"}
    h = Harness(RiskLimits(max_cluster_exposure=1_500.0, clusters=clusters))
    await h.signal(Side.BUY, symbol="BTCUSDT")  # 10 @ 100 = 1000 in flight
    await h.signal(Side.BUY, symbol="ETHUSDT")  # majors would be 2000
    assert [r.reason for r in h.rejects] == ["max_cluster_exposure"]
    await h.signal(Side.SELL, symbol="ETHUSDT")  # majors net 0
    await h.signal(Side.BUY, symbol="SOLUSDT")  # unlisted: its own cluster
    await h.signal(Side.BUY, symbol="ADAUSDT")
    assert len(h.intents) == 4 and len(h.rejects) == 1


async def test_gross_cap_prices_other_symbols_at_their_last_close() -> None:
    h = Harness(RiskLimits(max_gross_exposure=2_500.0))
    await h.signal(symbol="BTCUSDT")  # 1000 at the signal price
    await h.signal(symbol="ETHUSDT")  # 2000
    await h.signal(symbol="SOLUSDT")  # would be 3000
    assert [r.reason for r in h.rejects] == ["max_gross_exposure"]
    # BTC's close halves: its 10 units now count 500, so 500 + 1000 + 1000 = 2500 fits.
    await h.bar(50.0, symbol="BTCUSDT")
    await h.signal(symbol="SOLUSDT")
    assert len(h.intents) == 3
    # A sell that shrinks BTC passes even at the cap (priced at its own signal, in the band).
    await h.signal(Side.SELL, symbol="BTCUSDT", price=50.0)
    assert len(h.intents) == 4


async def test_drawdown_kill_switch_halts_and_only_an_admin_re_arms_it() -> None:
    async with running(RiskLimits(max_drawdown=50.0)) as h:
        await h.signal()  # buy 10 @ 100
        (intent,) = h.intents
        await h.fill(intent, 10.0, leaves=0.0)
        await h.bus.drain()
        assert h.portfolio.position("BTCUSDT").quantity == 10.0
        await h.bar(104.0)  # equity 40: the peak
        await h.bar(99.0)  # equity -10: 50 below the peak, not more
        await h.bus.drain()
        assert h.state() is TradingState.ACTIVE
        assert h.risk.equity() == -10.0 and h.risk.drawdown() == 50.0
        await h.bar(98.99)  # 50.1 below the peak
        await h.bus.drain()
        assert h.state() is TradingState.HALTED
        assert [(s.previous, s.state, s.reason) for s in h.states] == [
            (TradingState.ACTIVE, TradingState.HALTED, "drawdown")
        ]
        await h.bar(90.0)
        await h.signal(Side.SELL, price=90.0)  # HALTED refuses even a reducing order
        await h.bus.drain()
        assert len(h.states) == 1 and h.rejects[-1].reason == "halted"
        m = h.risk.metrics()
        assert m["drawdown"] == pytest.approx(140.0) and m["kill_switch_trips"] == {"drawdown": 1}

        # The admin re-arms: drawdown is measured again from here.
        assert await h.risk.set_state(TradingState.ACTIVE, "admin: resume")
        assert h.risk.drawdown() == 0.0
        await h.bar(86.0)  # 40 below the new peak
        await h.bus.drain()
        assert h.state() is TradingState.ACTIVE
        await h.bar(84.9)  # 51 below
        await h.bus.drain()
        assert [s.reason for s in h.states] == ["drawdown", "admin: resume", "drawdown"]


async def test_a_dip_between_awaits_trips_and_the_next_signal_is_refused() -> None:
    async with running(RiskLimits(max_drawdown=50.0)) as h:
        await h.signal()
        await h.fill(h.intents[0], 10.0, leaves=0.0)
        await h.bus.drain()
        await h.bar(100.0)
        await h.bar(94.0)  # 60 below the peak of 0 ...
        await h.bar(101.0)  # ... and back above it before any mailbox ran
        await h.signal(Side.SELL, price=101.0)
        assert h.rejects[-1].reason == "halted"
        await h.bus.drain()
        assert [s.reason for s in h.states] == ["drawdown"]


async def test_error_rate_kill_switch_judges_only_a_full_window() -> None:
    async with running(RiskLimits(max_error_rate=0.5, error_window=4)) as h:
        # Our own refusals are not venue errors.
        for _ in range(5):
            await h.signal(price=0.0)
        for i in range(3):
            await h.signal(symbol=f"S{i}USDT")
        for intent in h.intents:
            await h.venue_reject(intent)
        await h.bus.drain()
        # Three rejections out of three, but the window of four is not full yet.
        assert h.risk.error_rate() == 1.0 and h.state() is TradingState.ACTIVE
        assert h.states == []


async def test_error_rate_kill_switch_trips_above_the_share_and_re_arms_on_admin() -> None:
    async with running(RiskLimits(max_error_rate=0.5, error_window=4)) as h:
        for i in range(4):
            await h.signal(symbol=f"S{i}USDT")
        first, second, third, fourth = h.intents
        await h.fill(first, 10.0, leaves=0.0)
        await h.venue_reject(second)
        await h.bus.publish(
            OrderCancelled(
                ts_ns=1,
                client_order_id=third.client_order_id,
                venue="paper",
                symbol=third.symbol,
                reason="insufficient_liquidity",
            )
        )
        await h.venue_reject(fourth)  # F R C R: 2 of 4 = 0.5, not above it
        await h.bus.drain()
        assert h.risk.error_rate() == 0.5 and h.state() is TradingState.ACTIVE
        await h.signal(symbol="S4USDT")
        await h.venue_reject(h.intents[-1])  # R C R R: 0.75
        await h.bus.drain()
        assert h.state() is TradingState.HALTED
        assert [(s.state, s.reason) for s in h.states] == [(TradingState.HALTED, "error_rate")]
        await h.signal(symbol="S5USDT")
        assert h.rejects[-1].reason == "halted"
        assert h.risk.metrics()["kill_switch_trips"] == {"error_rate": 1}
        # Re-arming empties the window.
        assert await h.risk.set_state(TradingState.ACTIVE, "admin: venue fixed")
        assert h.risk.error_rate() == 0.0
        await h.signal(symbol="S6USDT")
        assert h.intents[-1].symbol == "S6USDT"


async def test_a_manual_halt_is_not_reported_again_by_the_kill_switches() -> None:
    async with running(RiskLimits(max_drawdown=1.0)) as h:
        await h.signal()
        await h.fill(h.intents[0], 10.0, leaves=0.0)
        await h.bus.drain()
        assert await h.risk.set_state(TradingState.HALTED, "admin: stop")
        await h.bar(50.0)
        await h.bus.drain()
        assert [s.reason for s in h.states] == ["admin: stop"]


async def test_reducing_still_lets_only_reducing_orders_through_the_new_checks() -> None:
    async with running(RiskLimits(max_gross_exposure=500.0, max_cluster_exposure=500.0)) as h:
        await h.risk.set_state(TradingState.REDUCING, "admin")
        await h.signal(Side.BUY)
        assert [r.reason for r in h.rejects] == ["reducing_only"]


async def test_metrics_report_var_and_drawdown_from_held_positions() -> None:
    async with running() as h:
        m = h.risk.metrics()
        assert m["var"]["observations"] == 0 and m["var"]["historical"] == {
            "0.95": 0.0,
            "0.99": 0.0,
        }
        assert m["drawdown"] == 0.0 and m["equity"] == 0.0
        await h.bar(100.0, ts_ms=60_000)
        await h.signal()
        await h.fill(h.intents[0], 10.0, leaves=0.0)  # long 10 @ 100
        await h.bus.drain()
        # Held but only one close: no return yet, VaR unknown (None, not 0).
        assert h.risk.metrics()["var"]["historical"]["0.95"] is None
        await h.bar(110.0, ts_ms=120_000)  # +10%
        await h.bar(99.0, ts_ms=180_000)  # -10%
        await h.bar(99.0, ts_ms=180_000)  # the same bar again: ignored
        await h.bar(99.0, ts_ms=240_000)  # 0%
        await h.bus.drain()
        m = h.risk.metrics()
        # Returns 0.1, -0.1, 0.0 on a notional of 10 · 99 = 990: P&L 99, -99, 0.
        # k = ceil(3 · 0.05) = 1: the worst, -99.
        assert m["var"]["observations"] == 3 and m["var"]["gross_exposure"] == pytest.approx(990.0)
        assert m["var"]["historical"]["0.95"] == pytest.approx(99.0)
        assert m["var"]["expected_shortfall"]["0.99"] == pytest.approx(99.0)
        # Parametric: sample stdev of (0.1, -0.1, 0) is sqrt(0.02 / 2) = 0.1; z95 · 990 · 0.1.
        assert m["var"]["parametric"]["0.95"] == pytest.approx(1.6448536269514722 * 99.0)
        # Equity peaked at +100 (close 110) and is -10 now (close 99).
        assert m["equity"] == pytest.approx(-10.0) and m["drawdown"] == pytest.approx(110.0)

        # A second holding with a shorter history: only bar times both have count.
        await h.bar(200.0, symbol="ETHUSDT", ts_ms=180_000)
        await h.bar(210.0, symbol="ETHUSDT", ts_ms=240_000)  # +5% at 240_000 only
        await h.bus.drain()
        await h.signal(symbol="ETHUSDT", price=210.0)
        await h.fill(h.intents[1], 1.0, leaves=0.0)
        await h.bus.drain()
        report = h.risk.value_at_risk()
        # At 240_000: BTC 0% on 990, ETH +5% on 210 → P&L +10.5: a gain, so VaR is -10.5.
        assert report.observations == 1 and report.at(0.99).historical == pytest.approx(-10.5)
