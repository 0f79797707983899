"""Positions from fills: signed quantity, average cost, realised and unrealised PnL, fees."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import OrderFilled, PositionChanged, SymbolRows

# A position smaller than this fraction of the trade that produced it is float dust: flat.
_DUST = 1e-12
UNLABELLED = "UNLABELLED"
ATTRIBUTION_DIMENSIONS = ("strategy", "regime", "cluster")
Labeller = Callable[[str], tuple[str, str, str]]
"""Symbol -> (strategy, regime, cluster) of the position opening in it now."""


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
        # Last marks in arrays, a row per symbol ever marked: a heartbeat's marks of thousands
        # of symbols are one array assignment.
        self._mark_rows = SymbolRows()
        self._mark_values = np.zeros(0)
        self._marked = np.zeros(0, dtype=np.bool_)
        self._open: set[str] = set()  # symbols with a non-zero position
        # Kept as fills and marks come, so net PnL is O(1) for the per-bar kill switches:
        # realised - fees over every symbol, and unrealised over the marked open positions.
        self._closed_net = 0.0
        self._open_pnl = 0.0
        self._open_stale = False  # fills or marks moved it since it was summed
        self.last_fill_seq = 0
        """Seq of the newest fill applied (fills arrive in seq order); the risk manager uses it
        to count fills it has seen that are not yet in a position."""
        # Attribution: each open position's labels, taken when it opened, and the closed PnL
        # (realised - fees) of each label, per dimension.
        self._labeller: Labeller | None = None
        self._labels: dict[str, tuple[str, str, str]] = {}
        self._closed_by: tuple[dict[str, float], ...] = tuple({} for _ in ATTRIBUTION_DIMENSIONS)

    def label_positions(self, labeller: Labeller) -> None:
        """Label each position as it opens (strategy, regime at entry, cluster at entry);
        without a labeller (or for fills restored before one is set): the regime is
        ``UNLABELLED`` and the cluster the symbol."""
        self._labeller = labeller

    def _apply(self, fill: OrderFilled) -> Position:
        before = self.position(fill.symbol)
        position = apply_fill(before, fill.quantity * fill.side.sign, fill.price, fill.fee)
        self._positions[fill.symbol] = position
        if position.quantity:
            self._open.add(fill.symbol)
        else:
            self._open.discard(fill.symbol)
        self._closed_net += position.realized_pnl - before.realized_pnl - fill.fee
        self._attribute(fill.symbol, before, position, fill.quantity, fill.fee)
        self._open_stale = True
        self.last_fill_seq = max(self.last_fill_seq, fill.seq)
        return position

    def _attribute(
        self, symbol: str, before: Position, after: Position, quantity: float, fee: float
    ) -> None:
        """Book a fill's realised PnL and fee to the labels of the position it closes (taken
        at its open) and its fee to the position it opens (a reversal splits the fee by the
        share of the fill that closes)."""
        realized = after.realized_pnl - before.realized_pnl
        q0, q1 = before.quantity, after.quantity
        if q0 == 0.0:
            new = self._label(symbol)
            self._book(new, -fee)
            if q1:
                self._labels[symbol] = new
            return
        old = self._labels.get(symbol) or self._label(symbol)
        if q1 == 0.0:
            self._book(old, realized - fee)
            self._labels.pop(symbol, None)
        elif (q1 > 0) != (q0 > 0):
            share = min(abs(q0) / quantity, 1.0) if quantity > 0 else 1.0
            self._book(old, realized - fee * share)
            new = self._labels[symbol] = self._label(symbol)
            self._book(new, -fee * (1.0 - share))
        else:
            self._book(old, realized - fee)

    def _label(self, symbol: str) -> tuple[str, str, str]:
        if self._labeller is None:
            return (UNLABELLED, UNLABELLED, symbol)
        return self._labeller(symbol)

    def _book(self, labels: tuple[str, str, str], pnl: float) -> None:
        for by, label in zip(self._closed_by, labels, strict=True):
            by[label] = by.get(label, 0.0) + pnl

    def attribution(self) -> dict[str, Any]:
        """Net PnL (realised - fees, unrealised at the last marks, their sum) by strategy,
        symbol, regime at entry and cluster at entry; each breakdown's ``net`` sums to
        ``totals()["net"]``. Closed PnL stays with the labels of the position that made it."""
        by_symbol: dict[str, list[float]] = {}
        by: list[dict[str, list[float]]] = [
            {label: [pnl, 0.0] for label, pnl in closed.items()} for closed in self._closed_by
        ]
        for symbol, p in self._positions.items():
            unrealized = self._unrealized(p)
            by_symbol[symbol] = [p.realized_pnl - p.fees, unrealized]
            if p.quantity:
                labels = self._labels.get(symbol) or self._label(symbol)
                for groups, label in zip(by, labels, strict=True):
                    groups.setdefault(label, [0.0, 0.0])[1] += unrealized

        def table(groups: Mapping[str, list[float]]) -> dict[str, dict[str, float]]:
            return {
                label: {"realized_after_fees": r, "unrealized": u, "net": r + u}
                for label, (r, u) in sorted(groups.items())
            }

        strategy, regime, cluster = (table(groups) for groups in by)
        return {
            "by_strategy": strategy,
            "by_symbol": table(by_symbol),
            "by_regime": regime,
            "by_cluster": cluster,
        }

    def _unrealized(self, p: Position) -> float:
        mark = self.mark_price(p.symbol)
        return p.quantity * (mark - p.avg_price) if mark is not None and p.quantity else 0.0

    async def on_fill(self, fill: OrderFilled) -> None:
        position = self._apply(fill)
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
            self._apply(fill)
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

    def set_mark(self, symbol: str, price: float) -> None:
        """Mark ``symbol`` at ``price`` (its last close): unrealised PnL follows it."""
        self.set_marks((symbol,), np.array([price], dtype=np.float64))

    def set_marks(self, symbols: tuple[str, ...], prices: NDArray[np.float64]) -> bool:
        """Mark each of ``symbols`` (distinct) at its price (a heartbeat's closes). Returns
        whether an open position was marked."""
        rows = self._mark_rows.rows(symbols)
        size = len(self._mark_rows)
        if size > self._mark_values.size:
            grow = max(size, 2 * self._mark_values.size) - self._mark_values.size
            self._mark_values = np.concatenate([self._mark_values, np.zeros(grow)])
            self._marked = np.concatenate([self._marked, np.zeros(grow, dtype=np.bool_)])
        self._mark_values[rows] = prices
        self._marked[rows] = True
        if not self._open:
            return False
        if len(symbols) == 1:
            moved = symbols[0] in self._open
        else:
            moved = not self._open.isdisjoint(symbols)
        self._open_stale |= moved
        return moved

    def mark_price(self, symbol: str) -> float | None:
        """The symbol's last mark (None before its first)."""
        row = self._mark_rows.get(symbol)
        if row is None or not self._marked[row]:
            return None
        return float(self._mark_values[row])

    def net_pnl(self) -> float:
        """Realised - fees + unrealised at the last marks (an unmarked position counts 0): the
        same figure as ``totals()["net"]``. The open part is summed afresh over the open
        positions in symbol order once fills or marks moved it (O(open positions)), not kept
        as a running sum: a running sum depends on the order marks and fills came in, which
        differs between the daemon and replay or a backtest (rows in arrival order, history
        in other batches), and a last-bit difference in equity changes every size after it."""
        if self._open_stale:
            self._open_pnl = math.fsum(
                self._unrealized(self._positions[s]) for s in sorted(self._open)
            )
            self._open_stale = False
        return self._closed_net + self._open_pnl

    def mark(self, prices: Mapping[str, float]) -> dict[str, float]:
        """Remember these marks and return each held symbol's unrealised PnL at them."""
        for symbol, price in prices.items():
            self.set_mark(symbol, price)
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
            p.quantity * (mark - p.avg_price)
            for s, p in self._positions.items()
            if p.quantity and (mark := self.mark_price(s)) is not None
        )
        return {
            "realized": realized,
            "unrealized": unrealized,
            "fees": fees,
            "net": realized + unrealized - fees,
        }
