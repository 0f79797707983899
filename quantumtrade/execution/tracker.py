"""Follow an order to its end: the fills, cancel or rejection that the bus reports for it."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from quantumtrade.events import OrderCancelled, OrderFilled, OrderIntent, OrderRejected
from quantumtrade.execution.venue import is_complete


class OrderOutcome(msgspec.Struct, kw_only=True):
    client_order_id: str
    status: str = "PENDING"
    venue: str | None = None
    filled_quantity: float = 0.0
    avg_price: float = 0.0
    fees: float = 0.0
    reason: str = ""
    fills: list[dict[str, Any]] = msgspec.field(default_factory=list)
    children: list[str] = msgspec.field(default_factory=list)
    """Client order ids of a split order's children (empty: the order went to one venue)."""


class OrderTracker:
    """Inline subscriber that resolves a watcher's future when its order is done.

    A split order is followed through its children's events (``parent_id``): it is filled
    when their fills add up to the quantity of its ``OrderIntent``.
    """

    def __init__(self) -> None:
        self._watched: dict[str, tuple[OrderOutcome, asyncio.Future[OrderOutcome]]] = {}
        self._quantity: dict[str, float] = {}

    def watch(self, client_order_id: str) -> asyncio.Future[OrderOutcome]:
        """A future for the order's final outcome (call before the order is published)."""
        fut: asyncio.Future[OrderOutcome] = asyncio.get_running_loop().create_future()
        self._watched[client_order_id] = (OrderOutcome(client_order_id=client_order_id), fut)
        return fut

    def forget(self, client_order_id: str) -> None:
        self._watched.pop(client_order_id, None)
        self._quantity.pop(client_order_id, None)

    def on_intent(self, intent: OrderIntent) -> None:
        if intent.client_order_id in self._watched:
            self._quantity[intent.client_order_id] = intent.quantity

    def _done(self, client_order_id: str, status: str) -> None:
        outcome, fut = self._watched.pop(client_order_id)
        self._quantity.pop(client_order_id, None)
        outcome.status = status
        if not fut.done():
            fut.set_result(outcome)

    def on_filled(self, fill: OrderFilled) -> None:
        order_id = fill.parent_id or fill.client_order_id
        watched = self._watched.get(order_id)
        if watched is None:
            return
        outcome = watched[0]
        if fill.parent_id and fill.client_order_id not in outcome.children:
            outcome.children.append(fill.client_order_id)
        notional = outcome.avg_price * outcome.filled_quantity + fill.price * fill.quantity
        outcome.filled_quantity += fill.quantity
        outcome.avg_price = notional / outcome.filled_quantity if outcome.filled_quantity else 0.0
        outcome.fees += fill.fee
        outcome.venue = fill.venue
        outcome.fills.append(
            {"quantity": fill.quantity, "price": fill.price, "fee": fill.fee, "venue": fill.venue}
        )
        if fill.parent_id:
            quantity = self._quantity.get(order_id)
            if quantity is not None and is_complete(outcome.filled_quantity, quantity):
                self._done(order_id, "FILLED")
        elif fill.leaves_quantity <= 0:
            self._done(order_id, "FILLED")

    def on_cancelled(self, event: OrderCancelled) -> None:
        if event.parent_id:
            return  # a child's end; the parent's own event follows
        watched = self._watched.get(event.client_order_id)
        if watched is not None:
            watched[0].venue = event.venue
            watched[0].reason = event.reason
            self._done(event.client_order_id, "CANCELLED")

    def on_rejected(self, event: OrderRejected) -> None:
        if event.parent_id:
            return
        watched = self._watched.get(event.client_order_id)
        if watched is not None:
            watched[0].venue = event.venue
            watched[0].reason = event.reason
            self._done(event.client_order_id, "REJECTED")
