"""MarketState (shared right edge, slack, in-place steps) against a pure-Python model of the
sliding buffer, bit for bit, through random batches: every row one bar (a backtest step),
every row k bars, subsets, symbols in any order, rejected bars, new symbols, tiny capacities
and slacks. Negative controls: an off-by-one model and a broken compaction are caught."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
from msgspec.structs import replace
from numpy.typing import NDArray

from quantumtrade.data.market_state import MarketState
from quantumtrade.data.source import BarBatch
from quantumtrade.data.validation import NO_BAR, OK, REASONS, bar_fault
from quantumtrade.events import Bar, BarBlock

FIELDS = ("open", "high", "low", "close", "volume")


class Reference:
    """The newest ``capacity`` accepted bars per symbol, as lists; columns built on demand."""

    def __init__(self, symbols: list[str], capacity: int) -> None:
        self.capacity = capacity
        self.keep = capacity
        self.bars: dict[str, list[Bar]] = {}
        self.add_symbols(symbols)

    def add_symbols(self, symbols: list[str]) -> list[str]:
        added = [s for s in dict.fromkeys(symbols) if s not in self.bars]
        for s in added:
            self.bars[s] = []
        return added

    def last_ts(self, symbol: str) -> int:
        held = self.bars[symbol]
        return held[-1].ts_ms if held else NO_BAR

    def codes(self, symbol: str, bars: list[Bar]) -> list[int]:
        prev = self.last_ts(symbol)
        out = []
        for bar in bars:
            fault = bar_fault(bar)
            code = OK if fault is None else 1 + REASONS.index(fault)
            if code == OK and bar.ts_ms <= prev:
                code = 5 if bar.ts_ms == prev else 6  # duplicate / out of order
            if code == OK:
                prev = bar.ts_ms
            out.append(code)
        return out

    def append(self, symbol: str, bars: list[Bar], codes: list[int]) -> int:
        accepted = [b for b, c in zip(bars, codes, strict=True) if c == OK]
        self.bars[symbol] = (self.bars[symbol] + accepted)[-self.keep :]
        return len(accepted)

    def columns(self, window: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """(5, symbols, window) prices and (symbols, window) ts, NaN / 0 on the left."""
        n = len(self.bars)
        prices = np.full((5, n, window), np.nan)
        ts = np.zeros((n, window), dtype=np.int64)
        for row, held in enumerate(self.bars.values()):
            tail = held[-window:]
            for c, bar in enumerate(tail, start=window - len(tail)):
                ts[row, c] = bar.ts_ms
                prices[:, row, c] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        return prices, ts


class OffByOne(Reference):
    """Keeps one bar too many: the comparison must notice."""

    def __init__(self, symbols: list[str], capacity: int) -> None:
        super().__init__(symbols, capacity)
        self.keep = capacity + 1


def same_bits(a: NDArray[np.float64] | NDArray[np.int64], b: NDArray[np.generic]) -> bool:
    return a.shape == b.shape and bool(
        np.array_equal(np.ascontiguousarray(a).view(np.uint64), b.view(np.uint64))
    )


def check(state: MarketState, ref: Reference, rng: random.Random) -> None:
    symbols = list(ref.bars)
    assert state.symbols == symbols and len(state) == len(symbols)
    cap = state.capacity
    for window in {cap, 1, rng.randint(1, cap)}:
        cols = state.columns(None if window == cap and rng.random() < 0.5 else window)
        prices, ts = ref.columns(window)
        for f, name in enumerate(FIELDS):
            assert same_bits(getattr(cols, name), prices[f]), (name, window)
        assert same_bits(cols.ts_ms, ts), window
        expected_lengths = [min(len(b), window) for b in ref.bars.values()]
        assert cols.lengths.tolist() == expected_lengths
    last = [ref.last_ts(s) for s in symbols]
    assert state.last_ts_array(symbols).tolist() == last
    assert state.last_ts_rows(list(range(len(symbols)))).tolist() == last
    for symbol, held in ref.bars.items():
        assert state.length(symbol) == len(held)
        assert state.last_ts_ms(symbol) == (held[-1].ts_ms if held else None)
        latest = state.latest(symbol)
        if held:
            assert latest is not None
            got = np.array([getattr(latest, f) for f in FIELDS])
            want = np.array([getattr(held[-1], f) for f in FIELDS])
            assert latest.ts_ms == held[-1].ts_ms and same_bits(got, want)
        else:
            assert latest is None


def make_bars(rng: random.Random, last: int, n: int, bad: float) -> list[Bar]:
    """``n`` bars after open time ``last`` (NO_BAR: none yet), some of them bad."""
    out: list[Bar] = []
    ts = max(last, 0)
    for _ in range(n):
        ts += rng.choice([1, 1, 1, 2, 5])
        o, c = rng.uniform(90, 110), rng.uniform(90, 110)
        bar = Bar(ts, o, max(o, c) + rng.random(), min(o, c) - rng.random(), c, rng.random() * 9)
        if rng.random() < bad:
            kind = rng.randrange(6)
            if kind == 0:
                bar = Bar(bar.ts_ms, bar.open, bar.high, bar.low, float("nan"), bar.volume)
            elif kind == 1:
                bar = Bar(bar.ts_ms, -1.0, bar.high, bar.low, bar.close, bar.volume)
            elif kind == 2:
                bar = Bar(bar.ts_ms, bar.open, bar.low - 1, bar.low, bar.close, bar.volume)
            elif kind == 3:
                bar = Bar(bar.ts_ms, bar.open, bar.high, bar.low, bar.close, -0.5)
            elif kind == 4 and out:
                bar = replace(bar, ts_ms=out[-1].ts_ms)  # duplicate open time
            elif kind == 5:
                bar = replace(bar, ts_ms=max(ts - 3, 1))  # out of order (or duplicate)
        out.append(bar)
    return out


def counts_for(rng: random.Random, n_rows: int, state: MarketState) -> list[int]:
    """Bars per row for one step: mostly what a backtest does (one each), then the rest."""
    cap, slack = state.capacity, state.slack
    if not n_rows:
        return []
    kind = rng.random()
    if kind < 0.45:
        return [1] * n_rows
    if kind < 0.6:
        k = rng.choice([2, 3, slack, slack + 1, cap, cap + 1, max(slack - 1, 1)])
        return [max(k, 0)] * n_rows
    if kind < 0.75:  # all but a few (a symbol missing a bar, a delisted one)
        out = [1] * n_rows
        for r in rng.sample(range(n_rows), rng.randint(1, max(n_rows // 3, 1))):
            out[r] = rng.choice([0, 0, 2])
        return out
    if kind < 0.9:  # a worker's subset
        return [rng.choice([0, 0, 1, 1, 2, 4]) for _ in range(n_rows)]
    return [rng.randint(0, cap + slack + 2) for _ in range(n_rows)]


def run(
    seed: int,
    capacity: int,
    slack: int | None,
    steps: int,
    n_start: int = 3,
    reference: Callable[[list[str], int], Reference] = Reference,
    bad: float = 0.05,
) -> MarketState:
    rng = random.Random(seed)
    symbols = [f"S{i}" for i in range(n_start)]
    state = MarketState(symbols, capacity, slack=slack)
    ref = reference(symbols, capacity)
    check(state, ref, rng)
    for step in range(steps):
        if rng.random() < 0.06:
            new = [f"N{step}_{i}" for i in range(rng.randint(1, 3))]
            if rng.random() < 0.5 and ref.bars:
                new.append(rng.choice(list(ref.bars)))  # already held: ignored
            assert state.add_symbols(new) == ref.add_symbols(new)
        names = list(ref.bars)
        per_row = counts_for(rng, len(names), state)
        chosen = [i for i, k in enumerate(per_row) if k or rng.random() < 0.3]
        rng.shuffle(chosen)  # batch order is not row order
        batch_symbols = [names[i] for i in chosen]
        runs = [
            make_bars(rng, ref.last_ts(names[i]), per_row[i], bad if rng.random() < 0.5 else 0)
            for i in chosen
        ]
        expected_codes = [ref.codes(s, b) for s, b in zip(batch_symbols, runs, strict=True)]
        how = rng.random()
        if how < 0.05 and batch_symbols:
            # One symbol through append / append_block (validated bars only).
            symbol, bars = batch_symbols[0], runs[0]
            good = [b for b, c in zip(bars, expected_codes[0], strict=True) if c == OK]
            if rng.random() < 0.5:
                got = state.append(symbol, good)
            else:
                block = BarBlock.of(
                    np.array([b.ts_ms for b in good], dtype=np.int64),
                    np.array([[getattr(b, f) for b in good] for f in FIELDS]).reshape(5, -1),
                )
                got = state.append_block(symbol, block)
            assert got == ref.append(symbol, good, [OK] * len(good))
        else:
            batch = BarBatch.from_bars(batch_symbols, runs)
            flat = np.array([c for codes in expected_codes for c in codes], dtype=np.int8)
            if how < 0.35:
                counts = state.append_batch(batch, flat)
            else:
                rows = [state.index(s) for s in batch_symbols] if how < 0.7 else None
                codes, counts = state.append_validated(batch, rows)
                assert codes.tolist() == flat.tolist()
            want = [
                ref.append(s, b, c)
                for s, b, c in zip(batch_symbols, runs, expected_codes, strict=True)
            ]
            assert counts.tolist() == want
        check(state, ref, rng)
    return state


def record_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the step ``_step`` picks for every append."""
    seen: list[int] = []
    original = MarketState._step

    def spy(self: MarketState, batch: BarBatch, rows: NDArray[np.int64]) -> int:
        step = original(self, batch, rows)
        seen.append(step)
        return step

    monkeypatch.setattr(MarketState, "_step", spy)
    return seen


CASES = [
    # capacity, slack (None: the default), steps, symbols at start
    (1, 0, 150, 3),
    (1, 1, 150, 3),
    (1, None, 150, 4),
    (2, 1, 200, 3),
    (3, 2, 200, 5),
    (4, 0, 200, 4),
    (5, 5, 250, 6),
    (8, 3, 250, 5),
    (8, None, 250, 5),
    (16, 4, 300, 6),
    (16, 40, 300, 6),
    (13, 1, 300, 2),
    (6, 2, 150, 0),
]


@pytest.mark.parametrize(("capacity", "slack", "steps", "n_start"), CASES)
@pytest.mark.parametrize("seed", [1, 2])
def test_random_batches_match_the_reference_bit_for_bit(
    seed: int,
    capacity: int,
    slack: int | None,
    steps: int,
    n_start: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = record_steps(monkeypatch)
    state = run(seed * 7919 + capacity, capacity, slack, steps, n_start)
    if state.slack >= 1:
        # Both paths ran: in place (step >= 1), shifting within the window (step 0).
        assert 0 in seen and 1 in seen
        assert state.compactions > 0


def test_many_rows_take_the_parallel_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """300 rows: the parallel builds (``by_rows``) of the step, shift and compaction."""
    seen = record_steps(monkeypatch)
    state = run(11, 6, 3, 40, n_start=300)
    assert len(state) >= 300 and state.compactions > 0 and 0 in seen and 1 in seen


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_any_step_gives_the_same_bars(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_step`` picks the cheap step; any step within the slack must store the same bars
    (rows that get another count move to the new edge), so force random ones."""
    rng = random.Random(seed)
    original = MarketState._step

    def random_step(self: MarketState, batch: BarBatch, rows: NDArray[np.int64]) -> int:
        original(self, batch, rows)
        return rng.randint(0, min(self.slack, self.capacity))

    monkeypatch.setattr(MarketState, "_step", random_step)
    state = run(seed, 7, 5, 300, 6)
    assert state.compactions > 0


def test_an_off_by_one_reference_is_caught() -> None:
    with pytest.raises(AssertionError):
        run(1, 8, 3, 100, 4, reference=OffByOne)


def test_a_compaction_that_drops_the_copy_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: MarketState) -> None:
        self._end = self.capacity  # forgets to copy the windows back

    monkeypatch.setattr(MarketState, "_compact", broken)
    with pytest.raises(AssertionError):
        run(1, 8, 3, 100, 4)
