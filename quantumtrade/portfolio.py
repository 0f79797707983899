"""Positions from fills: signed quantity, average cost, realised and unrealised PnL, fees."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import msgspec

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import OrderFilled, PositionChanged

# A position smaller than this fraction of the trade that produced it is float dust: flat.
_DUST = 1e-12


class Position(msgspec.Struct, frozen=True):
    symbol: str
    quantity: float = 0.0
    """Signed: positive long, negative short."""
    avg_price: float = 0.0
    """Average entry price of the open quantity (0.0 when flat)."""
    realized_pnl: float = 0.0
    """Closed PnL before fees."""
    fees: float = 0.0


def apply_fill(position: Position, quantity: float, price: float, fee: float = 0.0) -> Position:
    """The position after a fill of signed ``quantity`` at ``price`` (average-cost rules).

    Adding to a position (or opening one) moves the average to the quantity-weighted mean.
    Reducing realises (price - average) * closed quantity, signed by the position's direction,
    and keeps the average. Crossing through zero realises the whole old position and opens the
    rest at the fill price.
    """
    q0, avg0 = position.quantity, position.avg_price
    q1 = q0 + quantity
    realized = position.realized_pnl
    if abs(q1) <= _DUST * max(abs(q0), abs(quantity)):
        q1 = 0.0
    if q0 == 0.0 or (q0 > 0) == (quantity > 0):
        avg1 = (abs(q0) * avg0 + abs(quantity) * price) / abs(q1) if q1 else 0.0
    else:
        closed = min(abs(quantity), abs(q0))
        realized += closed * (price - avg0) * (1.0 if q0 > 0 else -1.0)
        if q1 == 0.0:
            avg1 = 0.0
        elif (q1 > 0) == (q0 > 0):
            avg1 = avg0
        else:
            avg1 = price
    return Position(
        symbol=position.symbol,
        quantity=q1,
        avg_price=avg1,
        realized_pnl=realized,
        fees=position.fees + fee,
    )


class Portfolio:
    """Applies every ``OrderFilled`` to its symbol's position and publishes ``PositionChanged``."""

    def __init__(self, *, bus: EventBus, clock: Clock) -> None:
        self.bus = bus
        self.clock = clock
        self._positions: dict[str, Position] = {}
        self._view = MappingProxyType(self._positions)
        self._marks: dict[str, float] = {}
        self.last_fill_seq = 0
        """Seq of the newest fill applied (fills arrive in seq order); the risk manager uses it
        to count fills it has seen that are not yet in a position."""

    async def on_fill(self, fill: OrderFilled) -> None:
        position = apply_fill(
            self.position(fill.symbol), fill.quantity * fill.side.sign, fill.price, fill.fee
        )
        self._positions[fill.symbol] = position
        self.last_fill_seq = max(self.last_fill_seq, fill.seq)
        await self.bus.publish(
            PositionChanged(
                ts_ns=self.clock.now_ns(),
                symbol=position.symbol,
                quantity=position.quantity,
                avg_price=position.avg_price,
                realized_pnl=position.realized_pnl,
                fees=position.fees,
            )
        )

    def restore(self, fills: Iterable[OrderFilled]) -> int:
        """Rebuild positions from a past session's fills, in seq order, publishing nothing
        (their ``PositionChanged`` events are already in the log); returns how many."""
        n = 0
        for fill in sorted(fills, key=lambda f: f.seq):
            self._positions[fill.symbol] = apply_fill(
                self.position(fill.symbol), fill.quantity * fill.side.sign, fill.price, fill.fee
            )
            self.last_fill_seq = max(self.last_fill_seq, fill.seq)
            n += 1
        return n

    def position(self, symbol: str) -> Position:
        return self._positions.get(symbol) or Position(symbol=symbol)

    def positions(self) -> dict[str, Position]:
        """Every symbol ever traded, flat ones included (they keep realised PnL and fees)."""
        return dict(self._positions)

    def positions_view(self) -> Mapping[str, Position]:
        """The same, read-only and live, without a copy (for per-fill checks such as the
        risk manager's drawdown)."""
        return self._view

    def notional(self, symbol: str, price: float) -> float:
        """Absolute value of the position at ``price``."""
        return abs(self.position(symbol).quantity) * price

    def mark(self, prices: Mapping[str, float]) -> dict[str, float]:
        """Remember these marks and return each held symbol's unrealised PnL at them."""
        self._marks.update(prices)
        return {
            symbol: p.quantity * (prices[symbol] - p.avg_price)
            for symbol, p in self._positions.items()
            if symbol in prices and p.quantity
        }

    def totals(self) -> dict[str, float]:
        """Realised, unrealised (at the last marks), fees and net PnL over all symbols."""
        realized = sum(p.realized_pnl for p in self._positions.values())
        fees = sum(p.fees for p in self._positions.values())
        unrealized = sum(
            p.quantity * (self._marks[s] - p.avg_price)
            for s, p in self._positions.items()
            if p.quantity and s in self._marks
        )
        return {
            "realized": realized,
            "unrealized": unrealized,
            "fees": fees,
            "net": realized + unrealized - fees,
        }
