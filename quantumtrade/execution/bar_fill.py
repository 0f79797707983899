"""Simulated execution on bars: an order decided on bar t's close fills at bar t+1 at the earliest.

Used by ``backtest`` and by a paper daemon with ``[execution] fill_model = "next_bar"``, so both
make the same fills from the same bars. Two parts:

* ``NextBarGate`` stands between the risk manager and the router. It holds every
  ``OrderIntent`` until its symbol's next bar (one newer than the newest bar when the intent
  was made) has arrived, then hands it to the router. A MARKET order goes at that bar's open;
  a LIMIT order waits until a later bar trades through its price (a BUY's limit above the bar's
  low, a SELL's below its high) and is cancelled (``limit_expired``) after ``limit_ttl_bars``.
* ``BarVenue`` is the venue the router sends it to: it quotes and fills at the price the gate
  armed it with, up to ``max_volume_share`` of the bar's volume (the rest is cancelled,
  ``volume_cap``), with the taker fee (maker fee for a limit fill).

Prices (``BarFillConfig``): a MARKET BUY pays open + open * ``slippage_bps`` / 1e4 +
``range_share`` * (high - low); a SELL receives open minus the same. A LIMIT BUY at L fills
at min(open, L) (a gap through the limit fills at the better open), a SELL at max(open, L).

A triggered exit (an intent with ``stop_price``: a stop-loss, trailing stop or take-profit the
bar's high or low crossed, at a level set before the bar) fills on the bar that crossed it, at
``stop_price`` (the level, or the open when the bar opened through it) with a market order's
slippage, so a stop-out costs what a stop-market order costs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.data.source import OrderBook
from quantumtrade.events import (
    Bar,
    BarBlock,
    BarsUpdated,
    OrderCancelled,
    OrderIntent,
    OrderType,
    Side,
    SymbolRows,
    symbol_index,
)
from quantumtrade.execution.venue import (
    Execution,
    Fill,
    OrderStatus,
    is_complete,
    split_symbol,
)


class FillModel(StrEnum):
    """How a paper daemon's orders fill (``[execution] fill_model``)."""

    BOOK = "book"
    """Against the current order book, at once (the default)."""
    NEXT_BAR = "next_bar"
    """At the symbol's next bar, as a backtest does (this module)."""


# Answers a BarVenue keeps for idempotent resubmits.
_ANSWERS = 100_000


class BarFillConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How simulated orders fill on bars (``[execution.bar_fill]``)."""

    slippage_bps: Annotated[float, msgspec.Meta(ge=0, le=1_000)] = 2.0
    """Fixed slippage of a market order against the bar's open, in bps of the open."""
    range_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.05
    """Extra slippage: this share of the bar's high - low range (wide bars cost more)."""
    max_volume_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.05
    """Most of a bar's volume one order may take; the rest is cancelled (``volume_cap``)."""
    taker_fee_bps: Annotated[float, msgspec.Meta(ge=0, le=1_000)] = 10.0
    """Fee on a market fill's notional (Binance spot's 0.1 %)."""
    maker_fee_bps: Annotated[float, msgspec.Meta(ge=0, le=1_000)] = 10.0
    """Fee on a limit fill's notional."""
    limit_ttl_bars: Annotated[int, msgspec.Meta(ge=1)] = 24
    """Bars a limit order waits to be traded through before it is cancelled."""


def market_price(side: Side, bar: Bar, config: BarFillConfig) -> float:
    """What a market order arriving at ``bar``'s open pays (BUY) or receives (SELL)."""
    slip = bar.open * config.slippage_bps / 1e4 + config.range_share * (bar.high - bar.low)
    if side is Side.BUY:
        return bar.open + slip
    # Never at or below zero, however wide the bar: a tenth of the open at worst.
    return max(bar.open - slip, bar.open * 0.1)


def stop_fill_price(side: Side, stop: float, bar: Bar, config: BarFillConfig) -> float:
    """What a triggered exit at ``stop`` pays (BUY) or receives (SELL) on ``bar``."""
    slip = stop * config.slippage_bps / 1e4 + config.range_share * (bar.high - bar.low)
    if side is Side.BUY:
        return stop + slip
    return max(stop - slip, stop * 0.1)


def limit_price(side: Side, limit: float, bar: Bar) -> float | None:
    """The fill price of a limit order on ``bar``, or None when the bar does not trade through."""
    if side is Side.BUY:
        return min(bar.open, limit) if bar.low < limit else None
    return max(bar.open, limit) if bar.high > limit else None


def volume_cap(bar: Bar, config: BarFillConfig) -> float:
    """The most one order may fill on ``bar``."""
    return config.max_volume_share * bar.volume if bar.volume > 0 else 0.0


class BarVenue:
    """A venue that fills at the price ``NextBarGate`` armed it with for the order's bar.

    Nothing rests here: the gate keeps limit orders until they are marketable, so every order
    this venue sees is filled (in full, or up to the volume cap) or rejected.
    """

    def __init__(self, name: str = "sim", *, config: BarFillConfig | None = None) -> None:
        self.name = name
        self.config = config or BarFillConfig()
        self.taker_fee_bps = self.config.taker_fee_bps
        # symbol -> (bar, BUY price, SELL price, fee bps) while the gate routes its order.
        self._armed: dict[str, tuple[Bar, float, float, float]] = {}
        self._next_id = 0
        self._answers: OrderedDict[str, Execution] = OrderedDict()

    def arm(self, symbol: str, bar: Bar, buy: float, sell: float, fee_bps: float) -> None:
        self._armed[symbol] = (bar, buy, sell, fee_bps)

    def disarm(self, symbol: str) -> None:
        self._armed.pop(symbol, None)

    def listed(self, symbol: str) -> bool:
        return True

    def tradable_quantity(self, symbol: str, quantity: float) -> float:
        return quantity

    def assets(self, symbol: str) -> tuple[str, str] | None:
        return split_symbol(symbol)

    def free_balance(self, asset: str) -> float | None:
        return None

    async def order_book(self, symbol: str, depth: int = 20) -> OrderBook | None:
        """One level a side at the armed prices, sized at the volume cap (None: not armed)."""
        armed = self._armed.get(symbol)
        if armed is None:
            return None
        bar, buy, sell, _ = armed
        size = volume_cap(bar, self.config)
        return OrderBook(symbol=symbol, ts_ms=bar.ts_ms, bids=((sell, size),), asks=((buy, size),))

    async def cancel(self, client_order_id: str) -> bool:
        return False

    async def submit(self, intent: OrderIntent) -> Execution:
        known = self._answers.get(intent.client_order_id)
        if known is not None:
            return known
        self._next_id += 1
        venue_order_id = f"{self.name}-{self._next_id}"
        armed = self._armed.get(intent.symbol)
        if armed is None or not (math.isfinite(intent.quantity) and intent.quantity > 0):
            execution = Execution(
                client_order_id=intent.client_order_id,
                venue_order_id=venue_order_id,
                status=OrderStatus.REJECTED,
                reason="no_bar" if armed is None else "invalid_quantity",
            )
        else:
            bar, buy, sell, fee_bps = armed
            price = buy if intent.side is Side.BUY else sell
            quantity = min(intent.quantity, volume_cap(bar, self.config))
            fills = (
                (Fill(quantity=quantity, price=price, fee=quantity * price * fee_bps / 1e4),)
                if quantity > 0
                else ()
            )
            complete = is_complete(quantity, intent.quantity)
            execution = Execution(
                client_order_id=intent.client_order_id,
                venue_order_id=venue_order_id,
                status=OrderStatus.FILLED if complete else OrderStatus.CANCELLED,
                fills=fills,
                reason="" if complete else "volume_cap",
            )
        self._answers[intent.client_order_id] = execution
        if len(self._answers) > _ANSWERS:
            self._answers.popitem(last=False)
        return execution


class _Held:
    __slots__ = ("after_ms", "bars", "intent", "waited")

    def __init__(self, intent: OrderIntent, after_ms: int) -> None:
        self.intent = intent
        self.after_ms = after_ms
        """Only bars opening after this one may fill it (the bar it was decided on)."""
        self.bars: list[Bar] = []
        """Bars of its symbol that arrived since, oldest first, not yet tried."""
        self.waited = 0


class NextBarGate:
    """Holds each intent until its symbol's next bar, then routes it at that bar's price."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        venue: BarVenue,
        route: Callable[[OrderIntent], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.venue = venue
        self.config = venue.config
        self._route = route
        self._held: list[_Held] = []
        self._held_symbols: set[str] = set()
        # Each symbol's newest BarsUpdated and its place in it (its newest bar is the last of
        # its block), by row: a heartbeat over thousands of symbols is two array assignments.
        self._rows = SymbolRows()
        self._event_of: NDArray[np.object_] = np.empty(0, dtype=object)
        self._place_in: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.released = 0
        self.expired = 0

    def on_bars(self, event: BarsUpdated) -> None:
        """Remember each symbol's newest bars; give the new bars to their held orders."""
        symbols = event.symbols
        rows = self._rows.rows(symbols)
        if len(self._rows) > self._event_of.size:
            grow = max(len(self._rows), 2 * self._event_of.size) - self._event_of.size
            self._event_of = np.concatenate([self._event_of, np.empty(grow, dtype=object)])
            self._place_in = np.concatenate([self._place_in, np.zeros(grow, dtype=np.int64)])
        self._event_of[rows] = event
        self._place_in[rows] = np.arange(len(symbols))
        if not self._held_symbols:
            return
        index = symbol_index(symbols)
        for held in self._held:
            j = index.get(held.intent.symbol)
            if j is not None:
                held.bars.extend(b for b in event.block(j).bars() if b.ts_ms > held.after_ms)

    def _newest(self, symbol: str) -> BarBlock | None:
        row = self._rows.get(symbol)
        if row is None:
            return None
        event: BarsUpdated = self._event_of[row]
        return event.block(int(self._place_in[row]))

    def on_intent(self, intent: OrderIntent) -> None:
        """Hold the intent until a bar newer than its symbol's newest one arrives (a triggered
        exit: for the ``release`` that follows, on the bar that triggered it)."""
        block = self._newest(intent.symbol)
        last = -1 if block is None else block.ts_ms.cast("q")[len(block) - 1]
        if intent.stop_price is not None and block is not None:
            held = _Held(intent, last - 1)
            held.bars.append(block.bars()[-1])
        else:
            held = _Held(intent, last)
        self._held.append(held)
        self._held_symbols.add(intent.symbol)

    @property
    def pending(self) -> int:
        return len(self._held)

    async def release(self) -> None:
        """Route every held order whose bar has come, in the order they were decided."""
        keep: list[_Held] = []
        for held in self._held:
            if not held.bars:
                keep.append(held)
                continue
            done = await self._try(held)
            if not done:
                keep.append(held)
        self._held = keep
        self._held_symbols = {h.intent.symbol for h in keep}

    async def cancel_all(self, reason: str) -> int:
        """Cancel every held order (``OrderCancelled`` with ``reason``); returns how many.

        At shutdown: an order waiting for a bar that will not come in this process ends in the
        log instead of staying open there."""
        held, self._held, self._held_symbols = self._held, [], set()
        for h in held:
            await self._cancel(h.intent, reason)
        return len(held)

    async def _cancel(self, intent: OrderIntent, reason: str) -> None:
        await self.bus.publish(
            OrderCancelled(
                ts_ns=self.clock.now_ns(),
                client_order_id=intent.client_order_id,
                venue=self.venue.name,
                symbol=intent.symbol,
                reason=reason,
            )
        )

    async def _try(self, held: _Held) -> bool:
        intent, config = held.intent, self.config
        bars, held.bars = held.bars, []
        if intent.stop_price is not None:
            bar = bars[0]
            at = stop_fill_price(intent.side, intent.stop_price, bar, config)
            await self._send(intent, bar, at, at, config.taker_fee_bps)
            return True
        if intent.order_type is OrderType.MARKET or intent.limit_price is None:
            bar = bars[0]
            buy, sell = market_price(Side.BUY, bar, config), market_price(Side.SELL, bar, config)
            await self._send(intent, bar, buy, sell, config.taker_fee_bps)
            return True
        for bar in bars:
            price = limit_price(intent.side, intent.limit_price, bar)
            if price is not None:
                await self._send(intent, bar, price, price, config.maker_fee_bps)
                return True
            held.waited += 1
            if held.waited >= config.limit_ttl_bars:
                self.expired += 1
                await self._cancel(intent, "limit_expired")
                return True
        return False

    async def _send(
        self, intent: OrderIntent, bar: Bar, buy: float, sell: float, fee_bps: float
    ) -> None:
        self.venue.arm(intent.symbol, bar, buy, sell, fee_bps)
        try:
            self.released += 1
            await self._route(intent)
        finally:
            self.venue.disarm(intent.symbol)
