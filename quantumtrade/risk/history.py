"""Each symbol's last close and its newest close-to-close returns, kept in arrays.

One row per symbol (in order of first sight): the last close and its bar's open time, and a
ring of the newest ``window`` returns with their bar times. A heartbeat's ``BarsUpdated``
over thousands of symbols is a few array operations here (``update_last``), where a deque of
tuples per symbol cost a Python call per symbol and ~110 bytes per return (275 MB at 5,000
symbols x 500 returns, against 40 MB as arrays).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import SymbolRows
from quantumtrade.risk import var

_NONE = np.iinfo(np.int64).min
"""``last_ms`` of a row with no close yet."""


class PriceHistory:
    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._rows = SymbolRows()
        self._close = np.zeros(0)
        self.last_ms = np.zeros(0, dtype=np.int64)
        """Open time of each row's last close (``_NONE``: none yet)."""
        self._ret = np.zeros((0, window))
        self._ret_ms = np.zeros((0, window), dtype=np.int64)
        self._held = np.zeros(0, dtype=np.int64)  # returns in the ring (<= window)
        self._head = np.zeros(0, dtype=np.int64)  # the ring's next slot

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, symbols: tuple[str, ...]) -> NDArray[np.int64]:
        """The rows of ``symbols`` (new ones are added)."""
        rows = self._rows.rows(symbols)
        self._grow(len(self._rows))
        return rows

    def _grow(self, n: int) -> None:
        size = self._close.shape[0]
        if n <= size:
            return
        cap = max(n, 2 * size, 16)
        extra = cap - size
        self._close = np.concatenate([self._close, np.zeros(extra)])
        self.last_ms = np.concatenate([self.last_ms, np.full(extra, _NONE, dtype=np.int64)])
        self._ret = np.concatenate([self._ret, np.zeros((extra, self.window))])
        self._ret_ms = np.concatenate(
            [self._ret_ms, np.zeros((extra, self.window), dtype=np.int64)]
        )
        self._held = np.concatenate([self._held, np.zeros(extra, dtype=np.int64)])
        self._head = np.concatenate([self._head, np.zeros(extra, dtype=np.int64)])

    def last_close(self, symbol: str) -> float | None:
        r = self._rows.get(symbol)
        if r is None or self.last_ms[r] == _NONE:
            return None
        return float(self._close[r])

    def update_last(
        self, rows: NDArray[np.int64], bar_ms: NDArray[np.int64], close: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """One new bar for each of ``rows`` (distinct): a finite positive close newer than
        the row's last becomes its last close, and its return over the previous close (if
        any) joins the ring. Returns which entries were taken."""
        taken = np.empty(rows.shape[0], dtype=np.bool_)
        _update_last(
            rows, bar_ms, close, self.last_ms, self._close, self._ret, self._ret_ms,
            self._held, self._head, taken,
        )  # fmt: skip
        return taken

    def update_row(self, row: int, bar_ms: NDArray[np.int64], close: NDArray[np.float64]) -> bool:
        """A run of bars of one row, oldest first (a history fetch): the same rules as
        ``update_last`` bar by bar; of a long run only the newest ``window`` returns can stay.
        Returns whether any bar was taken."""
        last = int(self.last_ms[row])
        good = np.flatnonzero(np.isfinite(close) & (close > 0))
        ms, c = bar_ms[good], close[good]
        # A bar is taken when it is newer than every bar before it (the last one taken).
        before = np.maximum.accumulate(np.concatenate([[last], ms[:-1]])) if ms.size else ms
        taken = np.flatnonzero(ms > before)[-(self.window + 1) :]
        if not taken.size:
            return False
        ms, c = ms[taken], c[taken]
        if last != _NONE:
            prev = np.concatenate([[self._close[row]], c[:-1]])
            ret_ms, ret = ms, c / prev - 1.0
        else:
            ret_ms, ret = ms[1:], c[1:] / c[:-1] - 1.0
        ret_ms, ret = ret_ms[-self.window :], ret[-self.window :]
        k = ret.size
        if k:
            head = int(self._head[row])
            slots = (head + np.arange(k)) % self.window
            self._ret[row, slots] = ret
            self._ret_ms[row, slots] = ret_ms
            self._head[row] = (head + k) % self.window
            self._held[row] = min(int(self._held[row]) + k, self.window)
        self._close[row] = c[-1]
        self.last_ms[row] = ms[-1]
        return True

    def returns(self, symbol: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(bar open times, returns), oldest first (empty for an unknown symbol)."""
        r = self._rows.get(symbol)
        if r is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        held, head = int(self._held[r]), int(self._head[r])
        order = (np.arange(head - held, head) + self.window) % self.window
        return self._ret_ms[r, order], self._ret[r, order]

    def book_pnl(
        self, symbols: Sequence[str], values: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
        """(times, Σ value · return) over the newest returns all ``symbols`` hold, when
        those are the same bar times in every row and all finite (the usual case: one bar
        axis, no gaps); else None, and the caller aligns the times itself."""
        rows = np.empty(len(symbols), dtype=np.int64)
        for i, symbol in enumerate(symbols):
            r = self._rows.get(symbol)
            if r is None:
                return None
            rows[i] = r
        ts, pnl = np.empty(self.window, dtype=np.int64), np.empty(self.window)
        n = _book_pnl(rows, values, self._ret, self._ret_ms, self._held, self._head, ts, pnl)
        return (ts[:n], pnl[:n]) if n >= 0 else None


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _book_pnl(
    rows: NDArray[np.int64],
    values: NDArray[np.float64],
    ret: NDArray[np.float64],
    ret_ms: NDArray[np.int64],
    held: NDArray[np.int64],
    head: NDArray[np.int64],
    ts: NDArray[np.int64],
    pnl: NDArray[np.float64],
) -> int:
    # The newest n of each row (n: the fewest any row holds), oldest first, summed symbol by
    # symbol in the order given (the same additions, in the same order, as aligning each row
    # and adding them up). -1: the rows' times differ somewhere, or a return is not finite.
    # Row by row along its ring (contiguous), no modulo per element.
    window = ret.shape[1]
    if rows.shape[0] == 0:
        return 0
    n: int = window
    for i in range(rows.shape[0]):
        n = min(n, int(held[rows[i]]))
    for i in range(rows.shape[0]):
        r = rows[i]
        v = values[i]
        slot = head[r] - n
        if slot < 0:
            slot += window
        for k in range(n):
            x = ret[r, slot]
            if not np.isfinite(x):
                return -1
            if i == 0:
                ts[k] = ret_ms[r, slot]
                pnl[k] = 0.0 + v * x
            elif ret_ms[r, slot] != ts[k]:
                return -1
            else:
                pnl[k] += v * x
            slot += 1
            if slot == window:
                slot = 0
    return n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _update_last(
    rows: NDArray[np.int64],
    bar_ms: NDArray[np.int64],
    close: NDArray[np.float64],
    last_ms: NDArray[np.int64],
    last_close: NDArray[np.float64],
    ret: NDArray[np.float64],
    ret_ms: NDArray[np.int64],
    held: NDArray[np.int64],
    head: NDArray[np.int64],
    taken: NDArray[np.bool_],
) -> None:
    # One pass, no temporaries: a heartbeat of a few symbols costs a call, not 20 array ops.
    window = ret.shape[1]
    for i in range(rows.shape[0]):
        r, c, ms = rows[i], close[i], bar_ms[i]
        ok = np.isfinite(c) and c > 0.0 and ms > last_ms[r]
        taken[i] = ok
        if not ok:
            continue
        if last_ms[r] != _NONE:
            slot = head[r]
            ret[r, slot] = c / last_close[r] - 1.0
            ret_ms[r, slot] = ms
            head[r] = (slot + 1) % window
            held[r] = min(held[r] + 1, window)
        last_close[r] = c
        last_ms[r] = ms


def warm_up() -> None:
    """Compile (or load from numba's cache) the per-heartbeat kernel."""
    history = PriceHistory(2)
    rows = history.rows(("W",))
    for t in (1, 2):
        history.update_last(rows, np.array([t], dtype=np.int64), np.array([1.0]))
    history.book_pnl(("W",), np.ones(1))
    var.warm_up()
