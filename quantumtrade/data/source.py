"""The market-data contract: an order book snapshot and the ``Source`` protocol every feed meets."""

from __future__ import annotations

import math
from typing import Protocol

import msgspec

from quantumtrade.events import Bar


class OrderBook(msgspec.Struct, frozen=True):
    """One L2 snapshot: (price, quantity) levels, bids best first (descending), asks ascending."""

    symbol: str
    ts_ms: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]

    @property
    def best_bid(self) -> float:
        """Highest bid price (NaN when the bid side is empty)."""
        return self.bids[0][0] if self.bids else math.nan

    @property
    def best_ask(self) -> float:
        """Lowest ask price (NaN when the ask side is empty)."""
        return self.asks[0][0] if self.asks else math.nan

    @property
    def mid(self) -> float:
        """Mid price (NaN unless both sides have a level)."""
        return (self.best_bid + self.best_ask) / 2.0


class Source(Protocol):
    """A market-data feed (synthetic, replay files, an exchange); one circuit breaker each."""

    name: str

    async def fetch_bars(self, symbol: str, since_ms: int | None, until_ms: int) -> list[Bar]:
        """Closed bars, oldest first: those opened after ``since_ms`` (None: the newest
        ``history_bars``) that had closed by ``until_ms``."""
        ...

    async def fetch_order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        """The current book, ``depth`` levels a side."""
        ...

    def symbols(self) -> list[str]:
        """Every symbol this source can serve."""
        ...
