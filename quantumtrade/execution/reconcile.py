"""Reconciliation: make the event log agree with what each venue holds, at start and periodically.

The ``OrderLedger`` is the event log's view of orders: every order that was submitted and has
not ended (no fill completing it, no cancel, no reject), the split parents still waiting for
children, and every client order id the log has seen. It is rebuilt from the log at start and
kept current from the bus (inline handlers), so it always says what the log says.

The ``Reconciler`` then asks each queryable venue (``CcxtVenue``):

* for each open order in the ledger, its state by client order id: fills the log has not got are
  published as ``OrderFilled`` (the difference between the venue's totals and the log's), an
  order the venue ended is published ended (``OrderCancelled`` / ``OrderRejected``), an order the
  venue does not know is ``OrderRejected`` (``not_found_at_venue``: proof it never got there),
  and one still open there is cancelled first (the router does not manage resting orders). A
  split parent whose last child ends without the parent being filled gets its own cancel;
* for the orders open on the account: one whose id the log does not know is recorded as an
  ``ExternalOrderFound`` event (once; it is not ours to cancel);
* for the balances: recorded as ``BalancesReconciled`` when they changed since the last record.

Orders the router is handling right now are left alone (``busy``), so a fill is never published
twice. Paper venues are not queryable: their orders never rest, and an order the log left open
on one is reported as unreconcilable.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Protocol

import msgspec
import structlog

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import (
    BalancesReconciled,
    Event,
    ExternalOrderFound,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    Side,
)
from quantumtrade.execution.venue import (
    FILL_TOLERANCE,
    Execution,
    OrderStatus,
    VenueOrder,
    is_complete,
)

log = structlog.get_logger("quantumtrade.reconcile")

# Event types the ledger is built from (read back from the log at start).
LEDGER_EVENT_TYPES = (
    "OrderIntent",
    "OrderSubmitted",
    "OrderFilled",
    "OrderCancelled",
    "OrderRejected",
    "ExternalOrderFound",
)
_KNOWN_IDS = 1_000_000
_RECENT_EXTERNAL = 100


class ReconcileConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """Seconds between reconciliations while running (0: only at start)."""


class QueryableVenue(Protocol):
    """What reconciliation needs of a venue beyond ``Venue`` (``CcxtVenue`` has it)."""

    name: str

    async def lookup(self, client_order_id: str, symbol: str) -> Execution | None: ...

    async def cancel(self, client_order_id: str) -> bool: ...

    async def open_orders(self) -> list[VenueOrder]: ...

    async def balance(self) -> dict[str, float]: ...


class LedgerOrder(msgspec.Struct, kw_only=True):
    client_order_id: str
    venue: str
    symbol: str
    side: Side
    quantity: float
    parent_id: str = ""
    filled: float = 0.0
    notional: float = 0.0
    fees: float = 0.0


class _Parent(msgspec.Struct, kw_only=True):
    quantity: float | None
    symbol: str
    filled: float = 0.0
    children: set[str] = msgspec.field(default_factory=set)
    venues: list[str] = msgspec.field(default_factory=list)


class OrderLedger:
    """Open orders, split parents and known client order ids, as the event log tells them."""

    def __init__(self) -> None:
        self.open: dict[str, LedgerOrder] = {}
        self.parents: dict[str, _Parent] = {}
        self.known: OrderedDict[str, None] = OrderedDict()
        self.external: OrderedDict[tuple[str, str], ExternalOrderFound] = OrderedDict()
        self._quantities: OrderedDict[str, float] = OrderedDict()

    def handlers(self) -> list[tuple[type[Event], Callable[[Any], None]]]:
        """Inline bus handlers: the ledger changes in the same step the event is published."""
        return [
            (OrderIntent, self.apply),
            (OrderSubmitted, self.apply),
            (OrderFilled, self.apply),
            (OrderCancelled, self.apply),
            (OrderRejected, self.apply),
            (ExternalOrderFound, self.apply),
        ]

    def restore(self, events: Iterable[Event]) -> int:
        """Apply logged events in seq order; returns how many were applied."""
        n = 0
        for event in events:
            self.apply(event)
            n += 1
        return n

    def apply(self, event: Event) -> None:
        if isinstance(event, OrderFilled):
            self._filled(event)
        elif isinstance(event, OrderSubmitted):
            self._know(event.client_order_id)
            self.open[event.client_order_id] = LedgerOrder(
                client_order_id=event.client_order_id,
                venue=event.venue,
                symbol=event.symbol,
                side=event.side,
                quantity=event.quantity,
                parent_id=event.parent_id,
            )
            if event.parent_id:
                parent = self.parents.get(event.parent_id)
                if parent is None:
                    parent = self.parents[event.parent_id] = _Parent(
                        quantity=self._quantities.get(event.parent_id), symbol=event.symbol
                    )
                parent.children.add(event.client_order_id)
                parent.venues.append(event.venue)
        elif isinstance(event, OrderCancelled | OrderRejected):
            self._know(event.client_order_id)
            self._ended(event.client_order_id, event.parent_id)
        elif isinstance(event, OrderIntent):
            self._know(event.client_order_id)
            self._quantities[event.client_order_id] = event.quantity
            while len(self._quantities) > _KNOWN_IDS:
                self._quantities.popitem(last=False)
        elif isinstance(event, ExternalOrderFound):
            self.external[(event.venue, event.client_order_id)] = event
            while len(self.external) > _KNOWN_IDS:
                self.external.popitem(last=False)

    def _know(self, client_order_id: str) -> None:
        self.known[client_order_id] = None
        while len(self.known) > _KNOWN_IDS:
            self.known.popitem(last=False)

    def _filled(self, fill: OrderFilled) -> None:
        order = self.open.get(fill.client_order_id)
        if order is not None:
            order.filled += fill.quantity
            order.notional += fill.quantity * fill.price
            order.fees += fill.fee
            if fill.leaves_quantity <= 0.0:
                self._ended(fill.client_order_id, fill.parent_id)
        parent = self.parents.get(fill.parent_id) if fill.parent_id else None
        if parent is not None:
            parent.filled += fill.quantity
            if parent.quantity is not None and is_complete(parent.filled, parent.quantity):
                del self.parents[fill.parent_id]

    def _ended(self, client_order_id: str, parent_id: str) -> None:
        self.open.pop(client_order_id, None)
        if parent_id:
            parent = self.parents.get(parent_id)
            if parent is not None:
                parent.children.discard(client_order_id)
        else:
            self.parents.pop(client_order_id, None)  # a split parent's own end

    def parent_done_unfilled(self, parent_id: str) -> _Parent | None:
        """The parent, when every child has ended and its fills do not make it filled."""
        parent = self.parents.get(parent_id)
        if parent is None or parent.children:
            return None
        if parent.quantity is not None and is_complete(parent.filled, parent.quantity):
            return None
        return parent


class Reconciler:
    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        ledger: OrderLedger,
        venues: Mapping[str, QueryableVenue],
        busy: Callable[[str], bool] = lambda client_order_id: False,
        config: ReconcileConfig | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.ledger = ledger
        self.venues = dict(venues)
        self.busy = busy
        self.config = config or ReconcileConfig()
        self._lock = asyncio.Lock()
        self.runs = 0
        self.last_run_ns: int | None = None
        self.resolved = 0
        self.balances: dict[str, dict[str, float]] = {}
        self.errors: dict[str, str] = {}
        self.unreconcilable: list[str] = []

    async def run_once(self) -> dict[str, Any]:
        """One pass over every open order, every venue's open orders and balances."""
        async with self._lock:
            self.errors = {}
            self.unreconcilable = []
            for cid, order in list(self.ledger.open.items()):
                if self.busy(cid) or cid not in self.ledger.open:
                    continue
                venue = self.venues.get(order.venue)
                if venue is None:
                    self.unreconcilable.append(cid)
                    continue
                try:
                    await self._resolve(order, venue)
                except Exception as exc:
                    self._error(order.venue, "order", exc)
            for name, venue in self.venues.items():
                await self._externals(name, venue)
                await self._balances(name, venue)
            self.runs += 1
            self.last_run_ns = self.clock.now_ns()
            return self.status()

    async def run_periodically(self) -> None:
        """Reconcile every ``interval_s`` until cancelled (a failed pass is logged, not fatal)."""
        if self.config.interval_s <= 0:
            return
        while True:
            await self.clock.sleep(self.config.interval_s)
            try:
                await self.run_once()
            except Exception:
                log.exception("reconciliation_failed")

    def _error(self, venue: str, what: str, exc: BaseException) -> None:
        self.errors[venue] = f"{what}: {type(exc).__name__}: {exc}"
        log.warning("reconciliation_error", venue=venue, what=what, error=str(exc))

    async def _resolve(self, order: LedgerOrder, venue: QueryableVenue) -> None:
        cid = order.client_order_id
        execution = await venue.lookup(cid, order.symbol)
        if execution is not None and execution.status in (
            OrderStatus.NEW,
            OrderStatus.PARTIALLY_FILLED,
        ):
            await venue.cancel(cid)  # resting orders are not managed: end it, then read it
            execution = await venue.lookup(cid, order.symbol)
        now = self.clock.now_ns()
        if execution is None:
            log.warning("reconciled_order_not_at_venue", client_order_id=cid, venue=order.venue)
            await self.bus.publish(
                OrderRejected(
                    ts_ns=now,
                    client_order_id=cid,
                    symbol=order.symbol,
                    side=order.side,
                    quantity=order.quantity,
                    reason="not_found_at_venue",
                    detail="reconciliation: the venue has no order with this client order id",
                    venue=order.venue,
                    parent_id=order.parent_id,
                )
            )
        else:
            await self._publish_difference(order, execution)
        self.resolved += cid not in self.ledger.open
        if order.parent_id:
            await self._end_parent(order.parent_id, order)

    async def _publish_difference(self, order: LedgerOrder, execution: Execution) -> None:
        """Fills the log lacks, then the order's end if the venue ended it."""
        cid = order.client_order_id
        filled = execution.filled_quantity
        complete = is_complete(filled, order.quantity)
        ended = complete or execution.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED)
        missing = filled - order.filled
        if missing > order.quantity * FILL_TOLERANCE:
            notional = sum(f.quantity * f.price for f in execution.fills) - order.notional
            price = notional / missing if notional > 0 else execution.avg_price
            log.info("reconciled_fill", client_order_id=cid, quantity=missing, price=price)
            await self.bus.publish(
                OrderFilled(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=cid,
                    venue=order.venue,
                    symbol=order.symbol,
                    side=order.side,
                    quantity=missing,
                    price=price,
                    fee=max(execution.fees - order.fees, 0.0),
                    cumulative_quantity=filled,
                    leaves_quantity=0.0 if complete else max(order.quantity - filled, 0.0),
                    parent_id=order.parent_id,
                )
            )
        if not ended or complete:
            return
        if execution.status is OrderStatus.REJECTED and filled <= 0:
            await self.bus.publish(
                OrderRejected(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=cid,
                    symbol=order.symbol,
                    side=order.side,
                    quantity=order.quantity,
                    reason=execution.reason or "rejected_at_venue",
                    detail="reconciliation",
                    venue=order.venue,
                    parent_id=order.parent_id,
                )
            )
            return
        await self.bus.publish(
            OrderCancelled(
                ts_ns=self.clock.now_ns(),
                client_order_id=cid,
                venue=order.venue,
                symbol=order.symbol,
                reason="reconciled",
                filled_quantity=filled,
                parent_id=order.parent_id,
            )
        )

    async def _end_parent(self, parent_id: str, child: LedgerOrder) -> None:
        parent = self.ledger.parent_done_unfilled(parent_id)
        if parent is None:
            return
        await self.bus.publish(
            OrderCancelled(
                ts_ns=self.clock.now_ns(),
                client_order_id=parent_id,
                venue="+".join(parent.venues),
                symbol=parent.symbol,
                reason="reconciled",
                filled_quantity=parent.filled,
            )
        )

    async def _externals(self, name: str, venue: QueryableVenue) -> None:
        try:
            orders = await venue.open_orders()
        except Exception as exc:
            self._error(name, "open_orders", exc)
            return
        for found in orders:
            key = (name, found.client_order_id)
            if found.client_order_id in self.ledger.known or key in self.ledger.external:
                continue
            log.warning(
                "external_order_found",
                venue=name,
                client_order_id=found.client_order_id,
                symbol=found.symbol,
            )
            await self.bus.publish(
                ExternalOrderFound(
                    ts_ns=self.clock.now_ns(),
                    venue=name,
                    symbol=found.symbol,
                    client_order_id=found.client_order_id,
                    venue_order_id=found.venue_order_id,
                    side=found.side,
                    quantity=found.quantity,
                    filled_quantity=found.filled_quantity,
                    price=found.price,
                    status=str(found.status),
                )
            )

    async def _balances(self, name: str, venue: QueryableVenue) -> None:
        try:
            balances = await venue.balance()
        except Exception as exc:
            self._error(name, "balance", exc)
            return
        clean = {a: q for a, q in sorted(balances.items()) if math.isfinite(q)}
        if clean == self.balances.get(name):
            return
        self.balances[name] = clean
        await self.bus.publish(
            BalancesReconciled(ts_ns=self.clock.now_ns(), venue=name, balances=clean)
        )

    def status(self) -> dict[str, Any]:
        """For the admin API: what is open, what was found outside, the last balances."""
        external = list(self.ledger.external.values())[-_RECENT_EXTERNAL:]
        return {
            "runs": self.runs,
            "last_run_ns": self.last_run_ns,
            "interval_s": self.config.interval_s,
            "resolved": self.resolved,
            "open_orders": [msgspec.to_builtins(o) for o in self.ledger.open.values()],
            "unreconcilable": list(self.unreconcilable),
            "external_orders": [msgspec.to_builtins(e) for e in external],
            "balances": self.balances,
            "errors": dict(self.errors),
            "venues": sorted(self.venues),
        }
