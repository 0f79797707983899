"""The market-data contract: an order book snapshot and the ``Source`` protocol every feed meets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import msgspec
import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import Bar, TickerUpdated


class Ticker(msgspec.Struct, frozen=True):
    """The best bid/ask and last trade of one symbol, as the source reported it."""

    symbol: str
    source: str
    ts_ms: int
    bid: float
    ask: float
    last: float
    base_volume: float = math.nan
    """24 h volume in the base asset (NaN when the source does not say)."""

    def to_event(self, ts_ns: int) -> TickerUpdated:
        return TickerUpdated(
            ts_ns=ts_ns,
            symbol=self.symbol,
            source=self.source,
            bid=self.bid,
            ask=self.ask,
            last=self.last,
        )


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


@numba.njit(cache=True, nogil=True)
def _copy_tails(
    ts: NDArray[np.int64],
    prices: NDArray[np.float64],
    offsets: NDArray[np.int64],
    new_offsets: NDArray[np.int64],
    out_ts: NDArray[np.int64],
    out_prices: NDArray[np.float64],
) -> None:
    """Copy the last new_offsets[j+1] - new_offsets[j] rows of each symbol's run (contiguous
    row copies; numpy's fancy indexing of the (n, 5) rows cost ~25 ns a row)."""
    for j in range(offsets.shape[0] - 1):
        c = new_offsets[j + 1] - new_offsets[j]
        src = offsets[j + 1] - c
        dst = new_offsets[j]
        out_ts[dst : dst + c] = ts[src : src + c]
        out_prices[dst : dst + c] = prices[src : src + c]


@dataclass(frozen=True, slots=True)
class BarBatch:
    """Bars of several symbols, packed: symbol ``j`` owns rows ``offsets[j]:offsets[j + 1]``
    of ``ts_ms`` (open times, oldest first) and of ``prices``, whose rows are (open, high,
    low, close, volume). Each symbol's bars, and every run of its newest bars, are one
    contiguous block, so a batch travels from a source through validation into
    ``MarketState``, onto the bus and into the cache (``BarBlock`` views) without one Python
    object per bar and without copies.
    """

    symbols: tuple[str, ...]
    ts_ms: NDArray[np.int64]  # (total,)
    prices: NDArray[np.float64]  # (total, 5)
    offsets: NDArray[np.int64]  # (len(symbols) + 1,)

    def freeze(self) -> None:
        """Make the arrays read-only, so views of them can be shared (events, caches)."""
        self.ts_ms.flags.writeable = False
        self.prices.flags.writeable = False

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def total(self) -> int:
        """Bars over every symbol."""
        return int(self.offsets[-1])

    def count(self, j: int) -> int:
        return int(self.offsets[j + 1] - self.offsets[j])

    def tail(self, window: int) -> BarBatch:
        """A new, packed batch of each symbol's newest ``window`` bars (a copy, so the
        whole batch need not stay alive for them)."""
        counts = np.minimum(np.diff(self.offsets), window)
        offsets = np.zeros_like(self.offsets)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        ts = np.empty(total, dtype=np.int64)
        prices = np.empty((total, 5))
        _copy_tails(self.ts_ms, self.prices, self.offsets, offsets, ts, prices)
        return BarBatch(self.symbols, ts, prices, offsets)

    def columns(self, j: int) -> NDArray[np.float64]:
        """Symbol ``j``'s (5, k) open/high/low/close/volume rows (a view)."""
        a, b = int(self.offsets[j]), int(self.offsets[j + 1])
        return self.prices[a:b].T

    def bars(self, j: int) -> list[Bar]:
        """Symbol ``j``'s bars as ``Bar`` objects (for callers that want records)."""
        a, b = int(self.offsets[j]), int(self.offsets[j + 1])
        return [
            Bar(ts, *row)
            for ts, row in zip(self.ts_ms[a:b].tolist(), self.prices[a:b].tolist(), strict=True)
        ]

    @classmethod
    def from_blocks(
        cls,
        symbols: Sequence[str],
        blocks: Sequence[tuple[NDArray[np.int64], NDArray[np.float64]]],
    ) -> BarBatch:
        """Pack per-symbol (ts (k,), prices (5, k)) blocks (copies them)."""
        offsets = np.zeros(len(blocks) + 1, dtype=np.int64)
        np.cumsum([len(ts) for ts, _ in blocks], out=offsets[1:])
        if not blocks:
            return cls(tuple(symbols), np.zeros(0, dtype=np.int64), np.zeros((0, 5)), offsets)
        ts = np.concatenate([ts for ts, _ in blocks]).astype(np.int64, copy=False)
        prices = np.concatenate([p.T for _, p in blocks]).astype(np.float64, copy=False)
        return cls(tuple(symbols), ts, prices, offsets)

    @classmethod
    def from_bars(cls, symbols: Sequence[str], bars: Sequence[Sequence[Bar]]) -> BarBatch:
        """Pack per-symbol bar lists (the adapter for sources that return records)."""
        counts = [len(b) for b in bars]
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = [bar for rows in bars for bar in rows]
        ts = np.array([bar.ts_ms for bar in flat], dtype=np.int64).reshape(-1)
        prices = np.array(
            [(b.open, b.high, b.low, b.close, b.volume) for b in flat], dtype=np.float64
        ).reshape(-1, 5)
        return cls(tuple(symbols), ts, prices, offsets)


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

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        """Best bid/ask and last price of each of ``symbols`` (those the source has)."""
        ...

    def symbols(self) -> list[str]:
        """Every symbol this source can serve."""
        ...


async def tickers_from_books(source: Source, symbols: Sequence[str]) -> dict[str, Ticker]:
    """Tickers read off the top of each symbol's book, for sources that have no ticker feed
    of their own (the synthetic market, replayed candles): last = the book's mid, which those
    sources centre on the last close."""
    tickers: dict[str, Ticker] = {}
    for symbol in symbols:
        book = await source.fetch_order_book(symbol, depth=1)
        tickers[symbol] = Ticker(
            symbol=symbol,
            source=source.name,
            ts_ms=book.ts_ms,
            bid=book.best_bid,
            ask=book.best_ask,
            last=book.mid,
        )
    return tickers


@runtime_checkable
class BatchSource(Protocol):
    """A source that can also fetch many symbols' bars in one call (columnar)."""

    async def fetch_bar_batch(
        self, symbols: Sequence[str], since_ms: Sequence[int | None], until_ms: int
    ) -> BarBatch:
        """For each symbol, what ``fetch_bars(symbol, since_ms[j], until_ms)`` would return."""
        ...
