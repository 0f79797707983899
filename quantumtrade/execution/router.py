"""Smart order routing: rank venues by expected all-in cost, submit, publish the outcome.

Cost of a venue, in bps of its mid: taker fee + slippage of walking its book for the whole
quantity + a latency penalty (EWMA of measured submit latency * ``latency_penalty_bps_per_ms``)
+ its record of realised minus expected slippage (EWMA). Venues that can fill the whole
quantity rank before those that cannot. Each order goes to one venue: splitting an order across
venues is not implemented yet, and neither is managing resting orders: an order a venue leaves
open (NEW / PARTIALLY_FILLED) is cancelled at once and its remainder reported cancelled.

Latency is measured on the injected clock, so a replay makes the same routing decisions.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
import structlog

from quantumtrade.breaker import BreakerConfig, CircuitBreaker
from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import (
    BreakerState,
    CircuitBreakerChanged,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderType,
    Side,
)
from quantumtrade.execution.venue import Execution, OrderStatus, Venue, is_complete, walk_book

log = structlog.get_logger("quantumtrade.router")

# Intent ids remembered so a redelivered intent is never sent (and its fills published) twice.
_RECENT_INTENTS = 10_000
# Consecutive venue errors after which the router reports itself degraded.
_DEGRADED_AFTER_ERRORS = 3


class RouterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    latency_penalty_bps_per_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.01
    book_depth: Annotated[int, msgspec.Meta(ge=1)] = 20
    """Book levels a side fetched to estimate slippage."""
    ewma_alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    """Weight of the newest sample in the latency and slippage-error averages."""
    latency_samples: Annotated[int, msgspec.Meta(ge=1)] = 1_000
    """Newest submit latencies kept per venue for p50 / p99."""


class VenueQuote(msgspec.Struct, frozen=True, kw_only=True):
    """One venue's expected cost for an order, in bps of its mid."""

    venue: str
    mid: float
    expected_price: float
    fillable_quantity: float
    fee_bps: float
    slippage_bps: float
    latency_penalty_bps: float
    slippage_correction_bps: float
    total_bps: float
    complete: bool
    """True when the book holds the whole quantity."""


class RoutingDecision(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    ranking: tuple[VenueQuote, ...]
    """Eligible venues, cheapest first."""
    excluded: dict[str, str]
    """Ineligible venue → why (not_listed, breaker_open, no_book, book_error)."""

    @property
    def best(self) -> VenueQuote | None:
        return self.ranking[0] if self.ranking else None


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


class _VenueRecord:
    """What the router has measured about one venue."""

    def __init__(self, samples: int) -> None:
        self.orders = 0
        self.fills = 0
        self.rejects = 0
        self.errors = 0
        self.consecutive_errors = 0
        self.requested_quantity = 0.0
        self.filled_quantity = 0.0
        self.latency_ewma_ms: float | None = None
        self.latencies_ms: deque[float] = deque(maxlen=samples)
        self.slippage_samples = 0
        self.expected_slippage_bps_sum = 0.0
        self.realized_slippage_bps_sum = 0.0
        self.slippage_error_ewma_bps = 0.0

    def metrics(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        n = self.slippage_samples
        return {
            "orders": self.orders,
            "fills": self.fills,
            "rejects": self.rejects,
            "errors": self.errors,
            "fill_ratio": self.filled_quantity / self.requested_quantity
            if self.requested_quantity
            else 0.0,
            "latency_ewma_ms": self.latency_ewma_ms or 0.0,
            "latency_p50_ms": _percentile(lat, 0.50),
            "latency_p99_ms": _percentile(lat, 0.99),
            "expected_slippage_bps": self.expected_slippage_bps_sum / n if n else 0.0,
            "realized_slippage_bps": self.realized_slippage_bps_sum / n if n else 0.0,
        }


def _slippage_bps(side: Side, price: float, mid: float) -> float:
    """Cost of paying ``price`` against ``mid``, in bps (positive is worse)."""
    return (price - mid) / mid * 1e4 * side.sign


class OrderRouter:
    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        venues: Sequence[Venue],
        config: RouterConfig | None = None,
        breaker_config: BreakerConfig | None = None,
        on_latency: Callable[[str, float], None] | None = None,
        on_breaker_change: Callable[[CircuitBreakerChanged], None] | None = None,
    ) -> None:
        names = [v.name for v in venues]
        if len(set(names)) != len(names):
            raise ValueError(f"venue names must be unique: {names}")
        self.bus = bus
        self.clock = clock
        self.config = config or RouterConfig()
        self.venues = {v.name: v for v in venues}
        self.breakers = {
            v.name: CircuitBreaker(
                f"venue:{v.name}", clock=clock, config=breaker_config, on_change=on_breaker_change
            )
            for v in venues
        }
        self._records = {v.name: _VenueRecord(self.config.latency_samples) for v in venues}
        self._on_latency = on_latency
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.routed = 0
        self.unroutable = 0
        self.duplicates = 0

    # --- ranking ----------------------------------------------------------------------

    async def route(self, intent: OrderIntent) -> RoutingDecision:
        """Rank the eligible venues for ``intent`` by expected all-in cost (no side effects)."""
        quotes: list[VenueQuote] = []
        excluded: dict[str, str] = {}
        for name, venue in self.venues.items():
            if not venue.listed(intent.symbol):
                excluded[name] = "not_listed"
                continue
            if self.breakers[name].state is BreakerState.OPEN:
                excluded[name] = "breaker_open"
                continue
            try:
                book = await venue.order_book(intent.symbol, self.config.book_depth)
            except Exception:
                log.warning("order_book_failed", venue=name, symbol=intent.symbol, exc_info=True)
                excluded[name] = "book_error"
                continue
            levels = () if book is None else (book.asks if intent.side is Side.BUY else book.bids)
            if book is None or not levels or not (math.isfinite(book.mid) and book.mid > 0):
                excluded[name] = "no_book"
                continue
            quotes.append(self._quote(venue, intent, book.mid, levels))
        quotes.sort(key=lambda q: (not q.complete, q.total_bps))
        return RoutingDecision(
            client_order_id=intent.client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            quantity=intent.quantity,
            ranking=tuple(quotes),
            excluded=excluded,
        )

    def _quote(
        self,
        venue: Venue,
        intent: OrderIntent,
        mid: float,
        levels: Sequence[tuple[float, float]],
    ) -> VenueQuote:
        filled, avg = walk_book(levels, intent.quantity)
        slippage = _slippage_bps(intent.side, avg, mid)
        record = self._records[venue.name]
        latency_penalty = (record.latency_ewma_ms or 0.0) * self.config.latency_penalty_bps_per_ms
        correction = record.slippage_error_ewma_bps
        return VenueQuote(
            venue=venue.name,
            mid=mid,
            expected_price=avg,
            fillable_quantity=filled,
            fee_bps=venue.taker_fee_bps,
            slippage_bps=slippage,
            latency_penalty_bps=latency_penalty,
            slippage_correction_bps=correction,
            total_bps=venue.taker_fee_bps + slippage + latency_penalty + correction,
            complete=is_complete(filled, intent.quantity),
        )

    # --- execution --------------------------------------------------------------------

    async def on_intent(self, intent: OrderIntent) -> None:
        """Route, submit, and publish Submitted → Filled… → Cancelled, or Rejected."""
        if intent.client_order_id in self._recent:
            self.duplicates += 1
            log.warning("duplicate_intent_ignored", client_order_id=intent.client_order_id)
            return
        self._recent[intent.client_order_id] = None
        while len(self._recent) > _RECENT_INTENTS:
            self._recent.popitem(last=False)

        decision = await self.route(intent)
        quote = next((q for q in decision.ranking if self.breakers[q.venue].allow()), None)
        if quote is None:
            self.unroutable += 1
            detail = ", ".join(f"{v}: {why}" for v, why in decision.excluded.items())
            await self._reject(intent, "no_eligible_venue", detail or "no venues", None)
            return
        self.routed += 1
        venue = self.venues[quote.venue]
        record = self._records[venue.name]
        record.orders += 1
        record.requested_quantity += intent.quantity
        bound = log.bind(
            client_order_id=intent.client_order_id, venue=venue.name, symbol=intent.symbol
        )
        t0 = self.clock.now_ns()
        try:
            execution = await venue.submit(intent)
        except Exception as exc:
            self._observe_latency(venue.name, record, t0)
            record.errors += 1
            record.rejects += 1
            record.consecutive_errors += 1
            self.breakers[venue.name].record_failure()
            bound.exception("venue_submit_failed")
            await self._reject(intent, "venue_error", f"{type(exc).__name__}: {exc}", venue.name)
            return
        self._observe_latency(venue.name, record, t0)
        record.consecutive_errors = 0
        self.breakers[venue.name].record_success()
        if execution.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
            # Resting orders are not tracked yet: cancel the rest so every order ends here.
            try:
                await venue.cancel(intent.client_order_id)
            except Exception:
                bound.exception("venue_cancel_failed")
            execution = msgspec.structs.replace(
                execution, status=OrderStatus.CANCELLED, reason="resting_not_supported"
            )
        await self._publish_execution(intent, venue.name, quote, execution, record)

    def _observe_latency(self, venue: str, record: _VenueRecord, t0_ns: int) -> None:
        ms = (self.clock.now_ns() - t0_ns) / 1e6
        record.latencies_ms.append(ms)
        alpha = self.config.ewma_alpha
        prev = record.latency_ewma_ms
        record.latency_ewma_ms = ms if prev is None else prev + alpha * (ms - prev)
        if self._on_latency is not None:
            self._on_latency(venue, ms / 1000.0)

    async def _publish_execution(
        self,
        intent: OrderIntent,
        venue: str,
        quote: VenueQuote,
        execution: Execution,
        record: _VenueRecord,
    ) -> None:
        if execution.status is OrderStatus.REJECTED:
            record.rejects += 1
            await self._reject(intent, execution.reason or "venue_rejected", "", venue)
            return
        await self.bus.publish(
            OrderSubmitted(
                ts_ns=self.clock.now_ns(),
                client_order_id=intent.client_order_id,
                venue=venue,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                order_type=intent.order_type,
                venue_order_id=execution.venue_order_id,
            )
        )
        cumulative = 0.0
        for i, fill in enumerate(execution.fills):
            cumulative += fill.quantity
            last = i == len(execution.fills) - 1
            complete = last and is_complete(cumulative, intent.quantity)
            record.fills += 1
            await self.bus.publish(
                OrderFilled(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=intent.client_order_id,
                    venue=venue,
                    symbol=intent.symbol,
                    side=intent.side,
                    quantity=fill.quantity,
                    price=fill.price,
                    fee=fill.fee,
                    cumulative_quantity=cumulative,
                    leaves_quantity=0.0 if complete else max(intent.quantity - cumulative, 0.0),
                )
            )
        record.filled_quantity += cumulative
        if cumulative > 0 and intent.order_type is OrderType.MARKET:
            # A limit's IOC cut-off is not slippage, so only market orders feed the record.
            realized = _slippage_bps(intent.side, execution.avg_price, quote.mid)
            record.slippage_samples += 1
            record.expected_slippage_bps_sum += quote.slippage_bps
            record.realized_slippage_bps_sum += realized
            error = realized - quote.slippage_bps
            record.slippage_error_ewma_bps += self.config.ewma_alpha * (
                error - record.slippage_error_ewma_bps
            )
        if not is_complete(cumulative, intent.quantity):
            await self.bus.publish(
                OrderCancelled(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=intent.client_order_id,
                    venue=venue,
                    symbol=intent.symbol,
                    reason=execution.reason or "unfilled_remainder",
                    filled_quantity=cumulative,
                )
            )

    async def _reject(
        self, intent: OrderIntent, reason: str, detail: str, venue: str | None
    ) -> None:
        await self.bus.publish(
            OrderRejected(
                ts_ns=self.clock.now_ns(),
                client_order_id=intent.client_order_id,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                reason=reason,
                detail=detail[:500],
                venue=venue,
            )
        )

    # --- introspection ----------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        venues = {}
        for name, record in self._records.items():
            venues[name] = record.metrics() | {
                "taker_fee_bps": self.venues[name].taker_fee_bps,
                "breaker": str(self.breakers[name].state),
            }
        return {
            "routed": self.routed,
            "unroutable": self.unroutable,
            "duplicates": self.duplicates,
            "venues": venues,
        }

    def health(self) -> dict[str, Any]:
        failing = sorted(
            name
            for name, record in self._records.items()
            if record.consecutive_errors >= _DEGRADED_AFTER_ERRORS
            or self.breakers[name].state is not BreakerState.CLOSED
        )
        if not self.venues:
            status = "down"
        elif len(failing) == len(self.venues):
            status = "down"
        elif failing:
            status = "degraded"
        else:
            status = "ok"
        return {"status": status, "venues": len(self.venues), "failing": failing}
