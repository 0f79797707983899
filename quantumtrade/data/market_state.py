"""The newest bars of every symbol as numpy columns that kernels read without copies.

Layout: one float64 block shaped (5, rows, capacity) for open, high, low, close, volume and an
int64 block (rows, capacity) for ts_ms. Every row is right-aligned: its newest bar sits in the
last column and empty cells on the left hold NaN (ts_ms 0). Appending k bars to a row moves
that row's live cells left by k (a memmove of at most ``capacity`` cells per column), so
``columns()`` is always a plain slice: views, no copy, whatever the mix of lengths.

Memory: rows x capacity x 6 columns x 8 bytes, e.g. 5,000 symbols x 1,000 bars = 240 MB.
Rows are allocated ahead (doubling) so ``add_symbols`` is amortised O(1) per symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import Bar

_OPEN, _HIGH, _LOW, _CLOSE, _VOLUME = range(5)


@dataclass(frozen=True, slots=True)
class Columns:
    """Read-only (symbols, window) arrays, oldest bar first, newest bar in the last column.

    Rows with fewer bars are left-padded with NaN (ts_ms with 0); ``lengths`` counts the real
    bars per row. The arrays are views of the live buffer: valid until the next append (copy
    them to keep them). With ``window`` equal to the capacity they are C-contiguous; a shorter
    window is a column slice whose rows are contiguous.
    """

    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    ts_ms: NDArray[np.int64]
    lengths: NDArray[np.int64]


class MarketState:
    """Per symbol, a sliding buffer of the newest ``capacity`` validated bars."""

    def __init__(self, symbols: Sequence[str], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._symbols: list[str] = []
        self._index: dict[str, int] = {}
        self._prices = np.full((5, 0, capacity), np.nan)
        self._ts = np.zeros((0, capacity), dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)
        self.add_symbols(symbols)

    @property
    def symbols(self) -> list[str]:
        """Symbols in row order (a copy)."""
        return list(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._index

    def __len__(self) -> int:
        return len(self._symbols)

    def index(self, symbol: str) -> int:
        """Row of ``symbol`` in ``columns()``; KeyError when unknown."""
        return self._index[symbol]

    def add_symbols(self, symbols: Iterable[str]) -> list[str]:
        """Add rows for the symbols not yet held (in order); returns those added."""
        added: list[str] = []
        for symbol in symbols:
            if symbol not in self._index:
                self._index[symbol] = len(self._symbols)
                self._symbols.append(symbol)
                added.append(symbol)
        rows = self._lengths.shape[0]
        if len(self._symbols) > rows:
            new_rows = max(len(self._symbols), 2 * rows, 8)
            prices = np.full((5, new_rows, self.capacity), np.nan)
            prices[:, :rows] = self._prices
            ts = np.zeros((new_rows, self.capacity), dtype=np.int64)
            ts[:rows] = self._ts
            lengths = np.zeros(new_rows, dtype=np.int64)
            lengths[:rows] = self._lengths
            self._prices, self._ts, self._lengths = prices, ts, lengths
        return added

    def append(self, symbol: str, bars: Sequence[Bar]) -> int:
        """Append validated bars (oldest first, newer than the stored ones); returns how many."""
        k = len(bars)
        if k == 0:
            return 0
        row = self._index[symbol]
        cap = self.capacity
        length = int(self._lengths[row])
        if length and bars[0].ts_ms <= self._ts[row, cap - 1]:
            raise ValueError(
                f"{symbol}: bar at {bars[0].ts_ms} is not newer than the stored "
                f"{int(self._ts[row, cap - 1])} (validate bars before appending)"
            )
        prices = self._prices[:, row]
        ts = self._ts[row]
        if k == 1:
            keep = min(length, cap - 1)
            if keep:
                prices[:, cap - 1 - keep : cap - 1] = prices[:, cap - keep :]
                ts[cap - 1 - keep : cap - 1] = ts[cap - keep :]
            bar = bars[0]
            prices[:, cap - 1] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
            ts[cap - 1] = bar.ts_ms
            self._lengths[row] = keep + 1
            return 1
        take = bars[-cap:] if k > cap else bars
        n = len(take)
        keep = min(length, cap - n)
        if keep:
            prices[:, cap - n - keep : cap - n] = prices[:, cap - keep :]
            ts[cap - n - keep : cap - n] = ts[cap - keep :]
        block = np.array([(b.open, b.high, b.low, b.close, b.volume) for b in take])
        prices[:, cap - n :] = block.T
        ts[cap - n :] = [b.ts_ms for b in take]
        self._lengths[row] = keep + n
        return k

    def length(self, symbol: str) -> int:
        """Bars held for ``symbol``."""
        return int(self._lengths[self._index[symbol]])

    def last_ts_ms(self, symbol: str) -> int | None:
        """Open time of the newest bar held (None when there is none)."""
        row = self._index[symbol]
        if not self._lengths[row]:
            return None
        return int(self._ts[row, self.capacity - 1])

    def latest(self, symbol: str) -> Bar | None:
        """The newest bar held (None when there is none)."""
        row = self._index[symbol]
        if not self._lengths[row]:
            return None
        o, h, lo, c, v = self._prices[:, row, self.capacity - 1].tolist()
        return Bar(int(self._ts[row, self.capacity - 1]), o, h, lo, c, v)

    def columns(self, window: int | None = None) -> Columns:
        """The newest ``window`` bars (default: capacity) of every symbol, as read-only views."""
        cap = self.capacity
        w = cap if window is None else window
        if not 1 <= w <= cap:
            raise ValueError(f"window must be between 1 and {cap}, got {window}")
        n = len(self._symbols)
        start = cap - w
        views = [self._prices[i, :n, start:] for i in range(5)]
        ts = self._ts[:n, start:]
        for view in (*views, ts):
            view.flags.writeable = False
        return Columns(
            open=views[_OPEN],
            high=views[_HIGH],
            low=views[_LOW],
            close=views[_CLOSE],
            volume=views[_VOLUME],
            ts_ms=ts,
            lengths=np.minimum(self._lengths[:n], w),
        )
