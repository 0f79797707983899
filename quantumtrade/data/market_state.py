"""The newest bars of every symbol as numpy columns that kernels read without copies.

Layout: one float64 block shaped (5, rows, capacity + slack) for open, high, low, close, volume
and an int64 block (rows, capacity + slack) for ts_ms. Every row's window is the same span of
``capacity`` columns, ending at the shared right edge ``end``: its newest bar sits in column
``end - 1`` and empty cells on the left hold NaN (ts_ms 0). So ``columns()`` is always a plain
slice: views, no copy, whatever the mix of lengths.

An append picks a step: the bar count most rows that hold bars get (a backtest's one bar per
symbol, a refresh whose batch holds most symbols). When that is not 0, ``end`` moves
right by it and the rows that get exactly that many bars have them written in place, in the
slack (no copy of their older bars); a row that gets another count moves its window to the
new edge (one copy of at most ``capacity`` cells, what every append cost before) and an empty
row needs nothing. When the slack is used up, every window is copied back to the start once
(``_compact``): per row, ``capacity`` cells every ``slack`` steps. When the step is 0 (a batch
of a few symbols, most rows get nothing; so too each of the orchestrator's batches when it
splits the symbols into several) the receiving rows shift their live cells left within the
window, as before.

Memory: rows x (capacity + slack) x 6 columns x 8 bytes, e.g. 5,000 symbols x (1,000 + 125)
bars = 270 MB. Rows are allocated ahead (doubling) so ``add_symbols`` is amortised O(1) per
symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.data.source import BarBatch
from quantumtrade.data.validation import NO_BAR, OK, validate_run
from quantumtrade.events import Bar, BarBlock, BarsUpdated
from quantumtrade.scoring.jit import by_rows, serial_twin

_OPEN, _HIGH, _LOW, _CLOSE, _VOLUME = range(5)


@numba.njit(cache=True, nogil=True, inline="always")
def _accepted(
    ts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    row: int,
    last_col: int,
    new_ts: NDArray[np.int64],
    new_prices: NDArray[np.float64],
    a: int,
    b: int,
    codes: NDArray[np.int8],
    validate: bool,
) -> int:
    """How many of batch rows a..b-1 are coded OK; with ``validate`` the codes are computed
    first, against the row's newest bar (column ``last_col``)."""
    if validate:
        last = ts[row, last_col] if lengths[row] > 0 else NO_BAR
        return validate_run(new_ts, new_prices, a, b, last, codes)
    k = 0
    for i in range(a, b):
        if codes[i] == OK:
            k += 1
    return k


@numba.njit(cache=True, nogil=True, inline="always")
def _write_newest(
    prices: NDArray[np.float64],
    ts: NDArray[np.int64],
    row: int,
    stop: int,
    n: int,
    new_ts: NDArray[np.int64],
    new_prices: NDArray[np.float64],
    a: int,
    b: int,
    codes: NDArray[np.int8],
    every_ok: bool,
) -> None:
    """Write the newest ``n`` bars coded OK among batch rows a..b-1 to columns stop-n..stop-1
    of row ``row`` (``every_ok``: each of them is)."""
    if every_ok:
        # The usual case: one sequential stream per column.
        first = b - n
        for t in range(n):
            ts[row, stop - n + t] = new_ts[first + t]
        for f in range(5):
            column = prices[f, row]
            for t in range(n):
                column[stop - n + t] = new_prices[first + t, f]
    else:
        c = stop
        i = b - 1
        while c > stop - n:
            if codes[i] == OK:
                c -= 1
                ts[row, c] = new_ts[i]
                for f in range(5):
                    prices[f, row, c] = new_prices[i, f]
            i -= 1


@numba.njit(cache=True, nogil=True, inline="always")
def _append_run(
    prices: NDArray[np.float64],
    ts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    row: int,
    new_ts: NDArray[np.int64],
    new_prices: NDArray[np.float64],
    a: int,
    b: int,
    codes: NDArray[np.int8],
    k: int,
) -> None:
    """Append the ``k`` bars coded OK among batch rows a..b-1 to MarketState row ``row``."""
    if k == 0:
        return
    cap = ts.shape[1]
    n = min(k, cap)
    keep = min(lengths[row], cap - n)
    # Shift the newest ``keep`` stored bars left by n, then write the newest n accepted.
    for c in range(cap - n - keep, cap - n):
        ts[row, c] = ts[row, c + n]
        for f in range(5):
            prices[f, row, c] = prices[f, row, c + n]
    _write_newest(prices, ts, row, cap, n, new_ts, new_prices, a, b, codes, k == b - a)
    lengths[row] = keep + n


@numba.njit(cache=True, nogil=True, parallel=True)
def _append_batch(
    prices: NDArray[np.float64],
    ts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    rows: NDArray[np.int64],
    new_ts: NDArray[np.int64],
    new_prices: NDArray[np.float64],
    offsets: NDArray[np.int64],
    codes: NDArray[np.int8],
    counts: NDArray[np.int64],
    validate: bool,
) -> None:
    """Append the bars coded OK of batch symbol j to row rows[j] (rows distinct), shifting
    its stored bars left: ``prices`` and ``ts`` are the window, (5, rows, capacity) and
    (rows, capacity). With ``validate`` the codes are first computed against the row's newest
    bar, in the same pass per symbol while its bars are still in cache."""
    cap = ts.shape[1]
    for j in numba.prange(rows.shape[0]):
        row = rows[j]
        a, b = offsets[j], offsets[j + 1]
        k = _accepted(ts, lengths, row, cap - 1, new_ts, new_prices, a, b, codes, validate)
        counts[j] = k
        _append_run(prices, ts, lengths, row, new_ts, new_prices, a, b, codes, k)


_append_batch_serial = serial_twin(_append_batch)


@numba.njit(cache=True, nogil=True, parallel=True)
def _advance_batch(
    prices: NDArray[np.float64],
    ts: NDArray[np.int64],
    lengths: NDArray[np.int64],
    slots: NDArray[np.int64],
    new_ts: NDArray[np.int64],
    new_prices: NDArray[np.float64],
    offsets: NDArray[np.int64],
    codes: NDArray[np.int8],
    counts: NDArray[np.int64],
    step: int,
    validate: bool,
) -> None:
    """Move every row's window right by ``step`` (1 <= step <= capacity) and append to row r
    the bars coded OK of batch symbol slots[r] (-1: none). ``prices`` and ``ts`` span the
    window and the ``step`` columns after it: (5, rows, capacity + step), (rows, capacity +
    step). A row that gets exactly ``step`` bars has them written in place; another row copies
    its newest bars to the new edge and clears the cells of the new window they left."""
    cap = ts.shape[1] - step
    for row in numba.prange(slots.shape[0]):
        j = slots[row]
        held = lengths[row]
        k = 0
        a = b = 0
        if j >= 0:
            a, b = offsets[j], offsets[j + 1]
            k = _accepted(ts, lengths, row, cap - 1, new_ts, new_prices, a, b, codes, validate)
            counts[j] = k
        if k == step:
            # The common case: the cells on the left leave the window, older bars stay put.
            _write_newest(prices, ts, row, cap + step, k, new_ts, new_prices, a, b, codes,
                          k == b - a)  # fmt: skip
            lengths[row] = min(held + k, cap)
            continue
        if held == 0 and k == 0:
            continue  # an empty row is NaN (ts 0) in every column
        n = min(k, cap)
        keep = min(held, cap - n)
        # The newest ``keep`` stored bars move by d = step - n (right when d > 0).
        d = step - n
        if d > 0:
            for c in range(cap - 1, cap - keep - 1, -1):
                ts[row, c + d] = ts[row, c]
                for f in range(5):
                    prices[f, row, c + d] = prices[f, row, c]
        elif d < 0:
            for c in range(cap - keep, cap):
                ts[row, c + d] = ts[row, c]
                for f in range(5):
                    prices[f, row, c + d] = prices[f, row, c]
        _write_newest(prices, ts, row, cap + step, n, new_ts, new_prices, a, b, codes,
                      k == b - a)  # fmt: skip
        # Padding of the new window: left of the old live cells it was padding already.
        live = cap + step - n - keep
        for c in range(max(step, cap - held), live):
            ts[row, c] = 0
            for f in range(5):
                prices[f, row, c] = np.nan
        lengths[row] = keep + n


_advance_batch_serial = serial_twin(_advance_batch)


@numba.njit(cache=True, nogil=True, parallel=True)
def _compact(
    prices: NDArray[np.float64], ts: NDArray[np.int64], lengths: NDArray[np.int64], start: int
) -> None:
    """Copy the window, columns start..start+capacity-1 (capacity = ``ts.shape[1] - start``)
    of every row that holds a bar to columns 0..capacity-1."""
    cap = ts.shape[1] - start
    for row in numba.prange(ts.shape[0]):
        if lengths[row] == 0:
            continue  # NaN (ts 0) in every column already
        for c in range(cap):
            ts[row, c] = ts[row, start + c]
        for f in range(5):
            column = prices[f, row]
            for c in range(cap):
                column[c] = column[start + c]


_compact_serial = serial_twin(_compact)


def default_slack(capacity: int) -> int:
    """Spare columns per row by default: an eighth of the capacity (at least 16), so a
    window is copied once per ``slack`` steps for 12.5% more memory."""
    return max(capacity // 8, 16)


def peak_bytes(symbols: int, capacity: int) -> int:
    """The most a MarketState of ``symbols`` x ``capacity`` holds at once: 6 float64/int64
    columns over ``capacity`` + the default slack, and while rows grow (by doubling) the old
    arrays beside the new ones, so up to twice the rows."""
    return 2 * symbols * (capacity + default_slack(capacity)) * 6 * 8


@dataclass(frozen=True, slots=True)
class Columns:
    """Read-only (symbols, window) arrays, oldest bar first, newest bar in the last column.

    Rows with fewer bars are left-padded with NaN (ts_ms with 0); ``lengths`` counts the real
    bars per row. The arrays are views of the live buffer, valid until the next append (copy
    them to keep them): after it they may show the old bars or the new ones. Each row is
    contiguous, rows are ``capacity + slack`` cells apart, so the arrays are C-contiguous
    only when ``slack`` is 0 (kernels that need C order copy them: ``np.ascontiguousarray``).
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

    def __init__(self, symbols: Sequence[str], capacity: int, *, slack: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        slack = default_slack(capacity) if slack is None else slack
        if slack < 0:
            raise ValueError(f"slack must be at least 0, got {slack}")
        self.capacity = capacity
        self.slack = slack
        self._width = capacity + slack
        # Every row's window is columns end - capacity .. end - 1.
        self._end = capacity
        self._symbols: list[str] = []
        self._index: dict[str, int] = {}
        self._prices = np.full((5, 0, self._width), np.nan)
        self._ts = np.zeros((0, self._width), dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)
        self.compactions = 0  # times the windows were copied back to the first columns
        self._changes = 0  # appends, rows added, compactions: what a cached Columns depends on
        self._columns: dict[int, Columns] = {}  # by window, built since the last change
        self._columns_at = -1  # the _changes they were built at
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
            prices = np.full((5, new_rows, self._width), np.nan)
            prices[:, :rows] = self._prices
            # Filled, not np.zeros: the pages are touched here, at allocation, as the prices'
            # NaN fill touches theirs, not by the first refresh's appends.
            ts = np.full((new_rows, self._width), 0, dtype=np.int64)
            ts[:rows] = self._ts
            lengths = np.zeros(new_rows, dtype=np.int64)
            lengths[:rows] = self._lengths
            self._prices, self._ts, self._lengths = prices, ts, lengths
        self._changes += 1
        return added

    def append(self, symbol: str, bars: Sequence[Bar]) -> int:
        """Append validated bars (oldest first, newer than the stored ones); returns how many."""
        if not bars:
            return 0
        batch = BarBatch.from_bars((symbol,), (bars,))
        return int(self.append_batch(batch, np.zeros(batch.total, dtype=np.int8))[0])

    def append_block(self, symbol: str, block: BarBlock) -> int:
        """Append one symbol's validated ``BarBlock``; returns how many."""
        n = len(block)
        if n == 0:
            return 0
        batch = BarBatch((symbol,), block.ts(), block.rows(), np.array([0, n], dtype=np.int64))
        return int(self.append_batch(batch, np.zeros(n, dtype=np.int8))[0])

    def append_event(self, event: BarsUpdated) -> int:
        """Append a logged ``BarsUpdated`` (validated bars), adding rows for symbols not yet
        held; returns how many bars."""
        self.add_symbols(event.symbols)
        bars = event.bars
        batch = BarBatch(event.symbols, bars.ts(), bars.rows(), event.offsets_array())
        return int(self.append_batch(batch, np.zeros(len(bars), dtype=np.int8)).sum())

    def overlapping(self, event: BarsUpdated) -> list[str]:
        """Symbols of ``event`` whose first bar is not newer than the newest one held (a
        restarted daemon fetching its history again)."""
        held = [j for j, s in enumerate(event.symbols) if s in self._index]
        if not held:
            return []
        symbols = [event.symbols[j] for j in held]
        first = event.bars.ts()[event.offsets_array()[held]]
        last = self.last_ts_array(symbols)
        return [
            s for s, hit in zip(symbols, (last != NO_BAR) & (first <= last), strict=True) if hit
        ]

    def append_batch(self, batch: BarBatch, codes: NDArray[np.int8]) -> NDArray[np.int64]:
        """Append every bar of ``batch`` whose validation code is ``OK`` to its symbol's row;
        returns the count appended per symbol. Symbols must be distinct and held; the bars
        must be validated against ``last_ts_array`` (newer than the stored ones, increasing)."""
        if codes.shape != batch.ts_ms.shape:
            raise ValueError(f"need one code per bar ({batch.total}), got {codes.shape}")
        rows = self._distinct_rows(batch, "append_batch")
        if batch.total:
            last = self._last_ts(rows)
            first = batch.offsets[:-1]
            nonempty = batch.offsets[1:] > first
            # Cheap guard against appending unvalidated bars: each symbol's first bar kept.
            heads = np.flatnonzero(nonempty & (codes[np.minimum(first, batch.total - 1)] == OK))
            stale = heads[batch.ts_ms[first[heads]] <= last[heads]]
            if stale.size:
                j = int(stale[0])
                raise ValueError(
                    f"{batch.symbols[j]}: bar at {int(batch.ts_ms[first[j]])} is not newer "
                    f"than the stored {int(last[j])} (validate bars before appending)"
                )
        return self._append(batch, rows, codes, validate=False)

    def append_validated(
        self, batch: BarBatch, rows: Sequence[int] | NDArray[np.int64] | None = None
    ) -> tuple[NDArray[np.int8], NDArray[np.int64]]:
        """Validate ``batch`` against each symbol's newest stored bar (the rules of
        ``validate_batch``) and append what passes, in one pass. Returns the code of every
        bar and the count appended per symbol. Symbols must be distinct and held; ``rows``
        (their ``index``, when the caller keeps them) saves looking them up."""
        found = self._distinct_rows(batch, "append_validated", rows)
        codes = np.empty(batch.total, dtype=np.int8)
        return codes, self._append(batch, found, codes, validate=True)

    def _distinct_rows(
        self, batch: BarBatch, caller: str, rows: Sequence[int] | NDArray[np.int64] | None = None
    ) -> NDArray[np.int64]:
        if rows is None:
            found = self.rows(batch.symbols)
        else:
            found = np.asarray(rows, dtype=np.int64)
            if found.shape != (len(batch.symbols),):
                raise ValueError(f"{caller}: {len(found)} rows for {len(batch.symbols)} symbols")
            if found.size and not 0 <= int(found.min()) <= int(found.max()) < len(self._symbols):
                raise ValueError(f"{caller}: a row is out of range")
        # Marks instead of np.unique: no sort (1 ms for 5,000 rows, more than a step's append).
        seen = np.zeros(len(self._symbols), dtype=np.bool_)
        seen[found] = True
        if np.count_nonzero(seen) != len(found):
            raise ValueError(f"{caller}: symbols must be distinct")
        return found

    def _append(
        self, batch: BarBatch, rows: NDArray[np.int64], codes: NDArray[np.int8], *, validate: bool
    ) -> NDArray[np.int64]:
        counts = np.zeros(len(rows), dtype=np.int64)
        if not batch.total:
            return counts
        self._changes += 1
        step = self._step(batch, rows)
        if step == 0:
            start = self._end - self.capacity
            by_rows(_append_batch, _append_batch_serial, len(rows))(
                self._prices[:, :, start : self._end],
                self._ts[:, start : self._end],
                self._lengths,
                rows,
                batch.ts_ms,
                batch.prices,
                batch.offsets,
                codes,
                counts,
                validate,
            )
            return counts
        if self._end + step > self._width:
            self._compact()
        n = len(self._symbols)
        slots = np.full(n, -1, dtype=np.int64)
        slots[rows] = np.arange(len(rows), dtype=np.int64)
        start, stop = self._end - self.capacity, self._end + step
        by_rows(_advance_batch, _advance_batch_serial, n)(
            self._prices[:, :, start:stop],
            self._ts[:, start:stop],
            self._lengths,
            slots,
            batch.ts_ms,
            batch.prices,
            batch.offsets,
            codes,
            counts,
            step,
            validate,
        )
        self._end = stop
        return counts

    def _step(self, batch: BarBatch, rows: NDArray[np.int64]) -> int:
        """How far ``end`` moves for ``batch``: the bar count most rows that hold bars get
        (rows outside the batch get 0), or 0 (shift the receiving rows) when that is 0, when
        it does not fit the slack, or when no row holds a bar yet."""
        n = len(self._symbols)
        # Rows outside the batch that hold bars get 0: when they are at least as many as the
        # batch's rows, 0 is the answer, without counting (one symbol's append, a replay's).
        holding = np.count_nonzero(self._lengths[:n])
        if not holding or 2 * len(rows) <= holding:
            return 0
        held = self._lengths[:n] > 0
        bars = np.zeros(n, dtype=np.int64)
        bars[rows] = np.diff(batch.offsets)
        # Ties go to the smaller count, so to 0 (no move) first.
        step = int(np.bincount(bars[held]).argmax())
        return step if step <= min(self.slack, self.capacity) else 0

    def _compact(self) -> None:
        """Copy every row's window back to the first columns (the slack is used up)."""
        n = len(self._symbols)
        by_rows(_compact, _compact_serial, n)(
            self._prices[:, :n, : self._end],
            self._ts[:n, : self._end],
            self._lengths,
            self._end - self.capacity,
        )
        self._end = self.capacity
        self.compactions += 1
        self._changes += 1

    def rows(self, symbols: Sequence[str]) -> NDArray[np.int64]:
        """Rows of ``symbols`` (KeyError when one is unknown)."""
        index = self._index
        return np.fromiter((index[s] for s in symbols), dtype=np.int64, count=len(symbols))

    def _last_ts(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.where(self._lengths[rows] > 0, self._ts[rows, self._end - 1], NO_BAR)

    def last_ts_array(self, symbols: Sequence[str]) -> NDArray[np.int64]:
        """Open time of each symbol's newest bar (``NO_BAR`` where none is held)."""
        return self._last_ts(self.rows(symbols))

    def last_ts_rows(self, rows: Sequence[int]) -> NDArray[np.int64]:
        """``last_ts_array`` by row (``index``) instead of by symbol."""
        return self._last_ts(np.asarray(rows, dtype=np.int64))

    def length(self, symbol: str) -> int:
        """Bars held for ``symbol``."""
        return int(self._lengths[self._index[symbol]])

    def last_ts_ms(self, symbol: str) -> int | None:
        """Open time of the newest bar held (None when there is none)."""
        row = self._index[symbol]
        if not self._lengths[row]:
            return None
        return int(self._ts[row, self._end - 1])

    def latest(self, symbol: str) -> Bar | None:
        """The newest bar held (None when there is none)."""
        row = self._index[symbol]
        if not self._lengths[row]:
            return None
        o, h, lo, c, v = self._prices[:, row, self._end - 1].tolist()
        return Bar(int(self._ts[row, self._end - 1]), o, h, lo, c, v)

    def columns(self, window: int | None = None) -> Columns:
        """The newest ``window`` bars (default: capacity) of every symbol, as read-only views."""
        cap = self.capacity
        w = cap if window is None else window
        if not 1 <= w <= cap:
            raise ValueError(f"window must be between 1 and {cap}, got {window}")
        if self._columns_at != self._changes:
            self._columns.clear()
            self._columns_at = self._changes
        cached = self._columns.get(w)
        if cached is not None:
            return cached  # the decision path asks several times between two appends
        n = len(self._symbols)
        start, end = self._end - w, self._end
        views = [self._prices[i, :n, start:end] for i in range(5)]
        ts = self._ts[:n, start:end]
        lengths = np.minimum(self._lengths[:n], w)
        for view in (*views, ts, lengths):
            view.flags.writeable = False
        columns = Columns(
            open=views[_OPEN],
            high=views[_HIGH],
            low=views[_LOW],
            close=views[_CLOSE],
            volume=views[_VOLUME],
            ts_ms=ts,
            lengths=lengths,
        )
        self._columns[w] = columns
        return columns


def warm_up() -> None:
    """Compile (or load from numba's cache) every append kernel, serial and parallel builds:
    the in-place step, the per-row shift, the window move and the compaction."""
    from quantumtrade.scoring.jit import PARALLEL_MIN_ROWS

    for n in (1, PARALLEL_MIN_ROWS):
        symbols = [f"W{i}USDT" for i in range(n)]
        state = MarketState(symbols, 4, slack=2)
        frozen_state = MarketState(symbols, 4, slack=2)
        bar = np.array([[1.0, 2.0, 0.5, 1.5, 10.0]])
        for t in range(1, 5):  # one bar for every row: in place, then a compaction
            batch = BarBatch(
                tuple(symbols),
                np.full(n, t, dtype=np.int64),
                np.repeat(bar, n, axis=0),
                np.arange(n + 1, dtype=np.int64),
            )
            state.append_validated(batch)
            # The orchestrator's batches are frozen (shared with events and the bar cache):
            # read-only arrays are separate specialisations, compiled here too.
            frozen = BarBatch(batch.symbols, batch.ts_ms + 10, batch.prices.copy(), batch.offsets)
            frozen.freeze()
            frozen.tail(2)
            frozen_state.append_validated(frozen)
        # One row alone: the shift within the window.
        state.append_validated(
            BarBatch((symbols[0],), np.array([9], np.int64), bar, np.array([0, 1], np.int64))
        )
