"""What a trading venue is to the router: the ``Venue`` protocol, its answers, and book walking."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

import msgspec

from quantumtrade.data.source import OrderBook
from quantumtrade.errors import VenueError
from quantumtrade.events import OrderIntent, Side

# A remainder below this fraction of the order counts as filled (float dust from level sums).
FILL_TOLERANCE = 1e-9
# Quote assets a symbol name may end with, longest match first (BTCUSDT → BTC, USDT).
QUOTE_ASSETS: tuple[str, ...] = ("FDUSD", "USDT", "USDC", "BUSD", "EUR", "USD", "BTC", "ETH", "BNB")


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

    def tradable_quantity(self, symbol: str, quantity: float) -> float:
        """``quantity`` rounded down to the venue's lot step (0.0 when below one step).

        An exchange trades whole lot steps only (ccxt truncates to them silently), so the
        router sends this and counts an order filled when the venue filled all of it.
        """
        ...

    def assets(self, symbol: str) -> tuple[str, str] | None:
        """(base, quote) of a listed symbol; None when the venue cannot tell."""
        ...

    def free_balance(self, asset: str) -> float | None:
        """What the venue last reported free of ``asset``; None when it reports no balances
        (the router then does not check balances for it)."""
        ...


def split_symbol(symbol: str) -> tuple[str, str] | None:
    """(base, quote) of an exchange-style symbol name, or None when no known quote ends it."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return None


def round_to_step(quantity: float, step: float) -> float:
    """``quantity`` rounded down to a multiple of ``step`` (``step`` <= 0: unchanged).

    A quantity within a millionth of a step below the next multiple counts as that multiple
    (float division dust), and the result is the float nearest the decimal multiple, so it
    prints as that multiple and ccxt's own truncation keeps it.
    """
    if step <= 0 or not math.isfinite(quantity):
        return quantity
    steps = math.floor(quantity / step + 1e-6)
    if steps <= 0:
        return 0.0
    per_unit = 1.0 / step
    whole = round(per_unit)
    if whole >= 1 and abs(per_unit - whole) <= 1e-9 * whole:
        return steps / whole  # 1/step is whole (10^-k, 0.25, …): one correctly rounded division
    return float(Decimal(steps) * Decimal(repr(step)))


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
    if levels and quantity > 0:
        price, size = levels[0]
        if size >= quantity:  # the common small order: the best level holds all of it
            return quantity, price
    taken = take_levels(levels, quantity)
    filled = sum(q for q, _ in taken)
    if filled <= 0:
        return 0.0, 0.0
    return filled, sum(q * p for q, p in taken) / filled


def is_complete(filled: float, quantity: float) -> bool:
    return filled >= quantity * (1.0 - FILL_TOLERANCE)
