"""Between signals and the router: sizing, pre-trade checks, in-flight exposure, trading state.

Exposure of a symbol = the portfolio's position + fills already published but not yet applied
by the portfolio (it runs in its own mailbox) + the unfilled quantity of intents in flight. The
in-flight part is kept per client order id: added on ``OrderIntent``, reduced by each
``OrderFilled``, dropped on ``OrderCancelled`` / ``OrderRejected``.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
import structlog

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import (
    Event,
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

log = structlog.get_logger("quantumtrade.risk")

_MINUTE_NS = 60_000_000_000
# Client order ids remembered to refuse a replayed signal (duplicates arrive close together).
_RECENT_ORDERS = 10_000
DUPLICATE_ORDER = "duplicate_order"


class RiskLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_order_notional: Annotated[float, msgspec.Meta(gt=0)] = 10_000.0
    max_position_notional: Annotated[float, msgspec.Meta(gt=0)] = 25_000.0
    """Cap on |position + unfilled in-flight quantity| * price, per symbol."""
    target_order_notional: Annotated[float, msgspec.Meta(gt=0)] = 1_000.0
    """Order notional at ``target_volatility``; scaled by target / signal volatility in
    [0.25, 2] and capped at ``max_order_notional``."""
    target_volatility: Annotated[float, msgspec.Meta(gt=0)] = 0.02
    max_orders_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 120


class ProposedOrder(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: Side
    quantity: float
    price: float

    @property
    def signed_quantity(self) -> float:
        return self.quantity * self.side.sign

    @property
    def notional(self) -> float:
        return self.quantity * self.price


class RiskView(msgspec.Struct, frozen=True, kw_only=True):
    """What the checks see: the limits, the trading state and the symbol's exposure."""

    limits: RiskLimits
    state: TradingState
    exposure: float
    """Signed position + unapplied fills + unfilled in-flight quantity of the symbol."""
    orders_last_minute: int


Check = Callable[[ProposedOrder, RiskView], str | None]


def _increases_exposure(order: ProposedOrder, view: RiskView) -> bool:
    return abs(view.exposure + order.signed_quantity) > abs(view.exposure)


def check_trading_state(order: ProposedOrder, view: RiskView) -> str | None:
    if view.state is TradingState.HALTED:
        return "halted"
    if view.state is TradingState.REDUCING:
        after = view.exposure + order.signed_quantity
        crosses = after != 0.0 and (after > 0) != (view.exposure > 0)
        if view.exposure == 0.0 or _increases_exposure(order, view) or crosses:
            return "reducing_only"
    return None


def check_order_notional(order: ProposedOrder, view: RiskView) -> str | None:
    return "max_order_notional" if order.notional > view.limits.max_order_notional else None


def check_position_notional(order: ProposedOrder, view: RiskView) -> str | None:
    after = abs(view.exposure + order.signed_quantity) * order.price
    # An order that shrinks exposure is always allowed, even above the limit.
    if after > view.limits.max_position_notional and _increases_exposure(order, view):
        return "max_position_notional"
    return None


def check_order_rate(order: ProposedOrder, view: RiskView) -> str | None:
    if view.orders_last_minute >= view.limits.max_orders_per_minute:
        return "max_orders_per_minute"
    return None


DEFAULT_CHECKS: tuple[Check, ...] = (
    check_trading_state,
    check_order_notional,
    check_position_notional,
    check_order_rate,
)


def order_notional(limits: RiskLimits, volatility: float) -> float:
    """Volatility-targeted order notional (a zero volatility takes the largest scale)."""
    scale = limits.target_volatility / volatility if volatility > 0 else 2.0
    return min(limits.target_order_notional * min(max(scale, 0.25), 2.0), limits.max_order_notional)


class _InFlight:
    __slots__ = ("remaining", "symbol")

    def __init__(self, symbol: str, remaining: float) -> None:
        self.symbol = symbol
        self.remaining = remaining  # signed


class RiskManager:
    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        limits: RiskLimits | None = None,
        portfolio: Portfolio,
        checks: Sequence[Check] = DEFAULT_CHECKS,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.limits = limits or RiskLimits()
        self.portfolio = portfolio
        self.checks = tuple(checks)
        self.state = TradingState.ACTIVE
        self.state_reason = ""
        self._in_flight: dict[str, _InFlight] = {}
        # Fills seen here but maybe not yet applied by the portfolio: (seq, symbol, signed qty).
        self._unapplied: deque[tuple[int, str, float]] = deque()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._order_times: deque[int] = deque()
        self.signals = 0
        self.intents = 0
        self.checks_passed = 0
        self.rejects: dict[str, int] = {}

    def order_handlers(self) -> list[tuple[type[Event], Callable[[Any], None]]]:
        """The (event type, inline handler) pairs that keep in-flight exposure current."""
        return [
            (OrderFilled, self.on_order_filled),
            (OrderCancelled, self.on_order_cancelled),
            (OrderRejected, self.on_order_rejected),
        ]

    # --- exposure ---------------------------------------------------------------------

    def exposure(self, symbol: str) -> float:
        """Signed position + fills not yet in the portfolio + unfilled in-flight quantity."""
        applied = self.portfolio.last_fill_seq
        while self._unapplied and self._unapplied[0][0] <= applied:
            self._unapplied.popleft()
        qty = self.portfolio.position(symbol).quantity
        qty += sum(q for _, s, q in self._unapplied if s == symbol)
        qty += sum(f.remaining for f in self._in_flight.values() if f.symbol == symbol)
        return qty

    def in_flight(self) -> dict[str, float]:
        """Unfilled signed quantity of open intents, by symbol."""
        out: dict[str, float] = {}
        for f in self._in_flight.values():
            out[f.symbol] = out.get(f.symbol, 0.0) + f.remaining
        return out

    def on_order_filled(self, fill: OrderFilled) -> None:
        self._unapplied.append((fill.seq, fill.symbol, fill.quantity * fill.side.sign))
        pending = self._in_flight.get(fill.client_order_id)
        if pending is None:
            return
        if fill.leaves_quantity <= 0.0:
            del self._in_flight[fill.client_order_id]
        else:
            pending.remaining = fill.leaves_quantity * fill.side.sign

    def on_order_cancelled(self, event: OrderCancelled) -> None:
        self._in_flight.pop(event.client_order_id, None)

    def on_order_rejected(self, event: OrderRejected) -> None:
        # Our own duplicate refusal names an order that is (maybe) still in flight: keep it.
        if event.reason == DUPLICATE_ORDER and event.venue is None:
            return
        self._in_flight.pop(event.client_order_id, None)

    # --- signals ----------------------------------------------------------------------

    def _orders_last_minute(self, now_ns: int) -> int:
        times = self._order_times
        while times and times[0] <= now_ns - _MINUTE_NS:
            times.popleft()
        return len(times)

    def _size(self, signal: SignalGenerated, exposure: float) -> float:
        quantity = order_notional(self.limits, signal.volatility) / signal.price
        if self.state is TradingState.REDUCING and exposure * signal.side.sign < 0:
            # Reduce-only: never trade past flat.
            quantity = min(quantity, abs(exposure))
        return quantity

    async def on_signal(self, signal: SignalGenerated) -> None:
        self.signals += 1
        client_order_id = f"qt-{signal.signal_id}"
        now = self.clock.now_ns()
        if client_order_id in self._recent:
            await self._refuse(signal, client_order_id, 0.0, DUPLICATE_ORDER)
            return
        if not (math.isfinite(signal.price) and signal.price > 0) or math.isnan(signal.volatility):
            await self._refuse(signal, client_order_id, 0.0, "invalid_signal")
            return
        exposure = self.exposure(signal.symbol)
        order = ProposedOrder(
            symbol=signal.symbol,
            side=signal.side,
            quantity=self._size(signal, exposure),
            price=signal.price,
        )
        view = RiskView(
            limits=self.limits,
            state=self.state,
            exposure=exposure,
            orders_last_minute=self._orders_last_minute(now),
        )
        for check in self.checks:
            reason = check(order, view)
            if reason is not None:
                await self._refuse(signal, client_order_id, order.quantity, reason)
                return
        self.checks_passed += 1
        self.intents += 1
        self._remember(client_order_id)
        self._order_times.append(now)
        self._in_flight[client_order_id] = _InFlight(signal.symbol, order.signed_quantity)
        await self.bus.publish(
            OrderIntent(
                ts_ns=now,
                client_order_id=client_order_id,
                symbol=signal.symbol,
                side=signal.side,
                quantity=order.quantity,
                reference_price=signal.price,
                signal_id=signal.signal_id,
            )
        )

    def _remember(self, client_order_id: str) -> None:
        self._recent[client_order_id] = None
        while len(self._recent) > _RECENT_ORDERS:
            self._recent.popitem(last=False)

    async def _refuse(
        self, signal: SignalGenerated, client_order_id: str, quantity: float, reason: str
    ) -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        log.info(
            "order_refused",
            reason=reason,
            symbol=signal.symbol,
            signal_id=signal.signal_id,
            state=self.state,
        )
        await self.bus.publish(
            OrderRejected(
                ts_ns=self.clock.now_ns(),
                client_order_id=client_order_id,
                symbol=signal.symbol,
                side=signal.side,
                quantity=quantity,
                reason=reason,
            )
        )

    # --- state ------------------------------------------------------------------------

    async def set_state(self, state: TradingState, reason: str) -> bool:
        """Move to ``state`` and publish ``RiskStateChanged``; False when already there."""
        if state is self.state:
            return False
        previous, self.state, self.state_reason = self.state, state, reason
        log.warning("risk_state_changed", state=state, previous=previous, reason=reason)
        await self.bus.publish(
            RiskStateChanged(
                ts_ns=self.clock.now_ns(), state=state, previous=previous, reason=reason
            )
        )
        return True

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.state is TradingState.ACTIVE else "degraded",
            "state": str(self.state),
            "reason": self.state_reason,
        }

    def metrics(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "state_reason": self.state_reason,
            "signals": self.signals,
            "intents": self.intents,
            "checks_passed": self.checks_passed,
            "rejects": dict(self.rejects),
            "in_flight": self.in_flight(),
            "orders_last_minute": self._orders_last_minute(self.clock.now_ns()),
            "limits": msgspec.structs.asdict(self.limits),
        }
