"""A simulated venue that fills orders against the current order book, with fees and latency."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Annotated

import msgspec

from quantumtrade.clock import Clock
from quantumtrade.data.source import OrderBook
from quantumtrade.events import OrderIntent, OrderType, Side
from quantumtrade.execution.venue import (
    FILL_TOLERANCE,
    Execution,
    Fill,
    OrderStatus,
    is_complete,
    round_to_step,
    split_symbol,
    take_levels,
)


class PaperVenueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    taker_fee_bps: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Fee on each fill's notional, in basis points."""
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Time an order takes to reach the book (slept on the injected clock)."""
    max_book_levels: Annotated[int, msgspec.Meta(ge=1)] = 50
    """Levels a side an order may walk; deeper liquidity is treated as absent."""
    order_memory: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Answers kept for idempotent resubmits; the oldest are forgotten past this."""
    quantity_step: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Lot step: order quantities must be whole multiples of it, as on an exchange (0: any)."""
    balances: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = {}
    """Free balance by asset, spent and credited by fills, checked before each order (a BUY
    needs its cost plus fee in the quote asset, a SELL its quantity in the base asset).
    Empty: unlimited, and the venue reports no balances."""


class PaperVenue:
    """Fills every order immediately against ``books(symbol)``; nothing ever rests on the book.

    MARKET orders walk the opposite side (BUY takes asks, SELL takes bids). LIMIT orders are
    immediate-or-cancel: they take only levels at or better than the limit price and the rest is
    cancelled. An order the book cannot fully fill comes back CANCELLED with its partial fills
    (reason ``insufficient_liquidity``, or ``limit_price`` when the limit cut the walk short).
    A resubmitted ``client_order_id`` returns the first answer and never fills again, even while
    the first submit is still in flight. With ``quantity_step`` a quantity off the lot step is
    REJECTED (``lot_size``); with ``balances`` an order they do not cover is REJECTED
    (``insufficient_balance``) and fills move them.
    """

    def __init__(
        self,
        name: str = "paper",
        *,
        clock: Clock,
        books: Callable[[str], Awaitable[OrderBook | None]],
        config: PaperVenueConfig | None = None,
        symbols: Collection[str] | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.config = config or PaperVenueConfig()
        self.taker_fee_bps = self.config.taker_fee_bps
        self._books = books
        # None: every symbol the book source knows is listed.
        self._symbols = frozenset(symbols) if symbols is not None else None
        self._answers: OrderedDict[str, asyncio.Future[Execution]] = OrderedDict()
        self._next_id = 0
        self._balances: dict[str, float] | None = (
            dict(self.config.balances) if self.config.balances else None
        )

    def listed(self, symbol: str) -> bool:
        return self._symbols is None or symbol in self._symbols

    def tradable_quantity(self, symbol: str, quantity: float) -> float:
        return round_to_step(quantity, self.config.quantity_step)

    def assets(self, symbol: str) -> tuple[str, str] | None:
        return split_symbol(symbol)

    def free_balance(self, asset: str) -> float | None:
        if self._balances is None:
            return None
        return self._balances.get(asset, 0.0)

    def balances(self) -> dict[str, float] | None:
        """Free balance by asset (None: unlimited)."""
        return None if self._balances is None else dict(self._balances)

    async def order_book(self, symbol: str, depth: int = 20) -> OrderBook | None:
        if not self.listed(symbol):
            return None
        book = await self._books(symbol)
        if book is None:
            return None
        depth = min(depth, self.config.max_book_levels)
        return msgspec.structs.replace(book, bids=book.bids[:depth], asks=book.asks[:depth])

    async def cancel(self, client_order_id: str) -> bool:
        """Always False: orders are immediate-or-cancel, so none is ever left to cancel."""
        return False

    async def submit(self, intent: OrderIntent) -> Execution:
        known = self._answers.get(intent.client_order_id)
        if known is not None:
            # shield: a cancelled resubmit must not cancel the first submit's answer.
            return await asyncio.shield(known)
        answer: asyncio.Future[Execution] = asyncio.get_running_loop().create_future()
        self._answers[intent.client_order_id] = answer
        while len(self._answers) > self.config.order_memory:
            self._answers.popitem(last=False)
        try:
            execution = await self._execute(intent)
        except BaseException as exc:
            # A fault is not an answer: forget the id so a retry may go through.
            self._answers.pop(intent.client_order_id, None)
            if isinstance(exc, asyncio.CancelledError):
                answer.cancel()
            elif isinstance(exc, Exception):
                answer.set_exception(exc)
                answer.exception()  # mark retrieved: the raise below reports it
            else:
                answer.cancel()
            raise
        answer.set_result(execution)
        return execution

    async def _execute(self, intent: OrderIntent) -> Execution:
        self._next_id += 1
        venue_order_id = f"{self.name}-{self._next_id}"

        def reject(reason: str) -> Execution:
            return Execution(
                client_order_id=intent.client_order_id,
                venue_order_id=venue_order_id,
                status=OrderStatus.REJECTED,
                reason=reason,
            )

        if not (math.isfinite(intent.quantity) and intent.quantity > 0):
            return reject("invalid_quantity")
        step = self.config.quantity_step
        if step > 0 and not math.isclose(
            round_to_step(intent.quantity, step), intent.quantity, rel_tol=FILL_TOLERANCE
        ):
            return reject("lot_size")
        limit = intent.limit_price
        if intent.order_type is OrderType.LIMIT and not (
            limit is not None and math.isfinite(limit) and limit > 0
        ):
            return reject("invalid_limit_price")
        if not self.listed(intent.symbol):
            return reject("unknown_symbol")
        if self.config.latency_ms > 0:
            await self.clock.sleep(self.config.latency_ms / 1000.0)
        book = await self._books(intent.symbol)
        if book is None:
            return reject("unknown_symbol")
        levels = book.asks if intent.side is Side.BUY else book.bids
        levels = levels[: self.config.max_book_levels]
        if not levels:
            return reject("empty_book")
        limited = False
        if intent.order_type is OrderType.LIMIT and limit is not None:
            if intent.side is Side.BUY:
                marketable = tuple(lv for lv in levels if lv[0] <= limit)
            else:
                marketable = tuple(lv for lv in levels if lv[0] >= limit)
            limited, levels = len(marketable) < len(levels), marketable

        fee_rate = self.config.taker_fee_bps / 1e4
        fills = tuple(
            Fill(quantity=q, price=p, fee=q * p * fee_rate)
            for q, p in take_levels(levels, intent.quantity)
        )
        if self._balances is not None and not self._settle(intent, fills):
            return reject("insufficient_balance")
        filled = sum(f.quantity for f in fills)
        if is_complete(filled, intent.quantity):
            status, reason = OrderStatus.FILLED, ""
        else:
            status = OrderStatus.CANCELLED
            reason = "limit_price" if limited else "insufficient_liquidity"
        return Execution(
            client_order_id=intent.client_order_id,
            venue_order_id=venue_order_id,
            status=status,
            fills=fills,
            reason=reason,
        )

    def _settle(self, intent: OrderIntent, fills: tuple[Fill, ...]) -> bool:
        """Move the fills' assets (False, nothing moved, when the balance does not cover them)."""
        assert self._balances is not None
        pair = split_symbol(intent.symbol)
        if pair is None:
            return False
        base, quote = pair
        qty = sum(f.quantity for f in fills)
        cost = sum(f.quantity * f.price for f in fills)
        fees = sum(f.fee for f in fills)
        balances = self._balances
        if intent.side is Side.BUY:
            if cost + fees > balances.get(quote, 0.0) * (1.0 + FILL_TOLERANCE):
                return False
            balances[quote] = balances.get(quote, 0.0) - cost - fees
            balances[base] = balances.get(base, 0.0) + qty
        else:
            if intent.quantity > balances.get(base, 0.0) * (1.0 + FILL_TOLERANCE):
                return False
            balances[base] = balances.get(base, 0.0) - qty
            balances[quote] = balances.get(quote, 0.0) + cost - fees
        return True
