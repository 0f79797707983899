"""What a trading venue is to the router: the ``Venue`` protocol, its answers, and book walking."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

import msgspec

from quantumtrade.data.source import OrderBook
from quantumtrade.errors import VenueError
from quantumtrade.events import OrderIntent, Side

# A remainder below this fraction of the order counts as filled (float dust from level sums).
FILL_TOLERANCE = 1e-9


class OutcomeUnknown(VenueError):
    """A submit whose outcome the venue could not tell: the order may exist there.

    The router keeps such an order in flight (published as submitted, no fills) and
    reconciliation resolves it by querying the venue with its client order id; it is never
    resubmitted blindly and never reported rejected without proof.
    """


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


class Fill(msgspec.Struct, frozen=True):
    quantity: float
    price: float
    fee: float


class Execution(msgspec.Struct, frozen=True, kw_only=True):
    """A venue's answer to one order: its status and every fill it got."""

    client_order_id: str
    venue_order_id: str
    status: OrderStatus
    fills: tuple[Fill, ...] = ()
    reason: str = ""
    detail: str = ""

    @property
    def filled_quantity(self) -> float:
        return sum(f.quantity for f in self.fills)

    @property
    def avg_price(self) -> float:
        """Quantity-weighted fill price (0.0 when nothing filled)."""
        qty = self.filled_quantity
        return sum(f.quantity * f.price for f in self.fills) / qty if qty > 0 else 0.0

    @property
    def fees(self) -> float:
        return sum(f.fee for f in self.fills)


class VenueOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as a venue lists it (reconciliation's view of what is open there)."""

    client_order_id: str
    venue_order_id: str
    symbol: str
    side: Side
    quantity: float
    filled_quantity: float
    price: float | None
    status: OrderStatus


class Venue(Protocol):
    name: str
    taker_fee_bps: float

    async def submit(self, intent: OrderIntent) -> Execution:
        """Send an order; the same ``client_order_id`` twice returns the first answer."""
        ...

    async def cancel(self, client_order_id: str) -> bool:
        """Cancel a resting order; False when there was nothing to cancel."""
        ...

    async def order_book(self, symbol: str, depth: int = 20) -> OrderBook | None:
        """The current book, at most ``depth`` levels a side; None when the symbol has none."""
        ...

    def listed(self, symbol: str) -> bool: ...


def take_levels(
    levels: Sequence[tuple[float, float]], quantity: float
) -> list[tuple[float, float]]:
    """The (quantity, price) taken from each level, best first, until ``quantity`` is done."""
    taken: list[tuple[float, float]] = []
    remaining = quantity
    for price, size in levels:
        if remaining <= quantity * FILL_TOLERANCE:
            break
        if size <= 0:
            continue
        qty = min(size, remaining)
        taken.append((qty, price))
        remaining -= qty
    return taken


def walk_book(levels: Sequence[tuple[float, float]], quantity: float) -> tuple[float, float]:
    """(filled quantity, average price) of taking ``quantity`` from ``levels``; (0, 0) if empty."""
    taken = take_levels(levels, quantity)
    filled = sum(q for q, _ in taken)
    if filled <= 0:
        return 0.0, 0.0
    return filled, sum(q * p for q, p in taken) / filled


def is_complete(filled: float, quantity: float) -> bool:
    return filled >= quantity * (1.0 - FILL_TOLERANCE)
