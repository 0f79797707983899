"""MarketState against a naive per-symbol list: append, columns, padding, growth, wrap-around."""

from __future__ import annotations

import random

import numpy as np
import pytest

from quantumtrade.data.market_state import MarketState
from quantumtrade.data.source import BarBatch
from quantumtrade.events import Bar


def bars(start_ts: int, n: int, seed: int = 0) -> list[Bar]:
    rng = random.Random(seed * 1_000_003 + start_ts)
    out = []
    for k in range(n):
        o, c = rng.uniform(90, 110), rng.uniform(90, 110)
        out.append(Bar(start_ts + k, o, max(o, c) + 1, min(o, c) - 1, c, rng.uniform(0, 5)))
    return out


def check_against_reference(
    state: MarketState, ref: dict[str, list[Bar]], window: int | None
) -> None:
    cols = state.columns(window)
    w = state.capacity if window is None else window
    assert state.symbols == list(ref)
    assert cols.close.shape == (len(ref), w) and cols.ts_ms.shape == (len(ref), w)
    assert cols.close.dtype == np.float64 and cols.ts_ms.dtype == np.int64
    for row, (symbol, history) in enumerate(ref.items()):
        assert state.index(symbol) == row
        held = history[-state.capacity :]
        assert state.length(symbol) == len(held)
        assert state.last_ts_ms(symbol) == (held[-1].ts_ms if held else None)
        assert state.latest(symbol) == (held[-1] if held else None)
        tail = held[-w:]
        n = len(tail)
        assert cols.lengths[row] == n
        pad = w - n
        for name in ("open", "high", "low", "close", "volume"):
            column = getattr(cols, name)[row]
            assert np.isnan(column[:pad]).all()
            np.testing.assert_array_equal(column[pad:], [getattr(b, name) for b in tail])
        assert (cols.ts_ms[row, :pad] == 0).all()
        np.testing.assert_array_equal(cols.ts_ms[row, pad:], [b.ts_ms for b in tail])


def test_random_operations_match_a_naive_reference() -> None:
    rng = random.Random(42)
    state = MarketState(["BTCUSDT", "ETHUSDT"], capacity=16)
    ref: dict[str, list[Bar]] = {"BTCUSDT": [], "ETHUSDT": []}
    next_ts = 1
    for step in range(600):
        action = rng.random()
        if action < 0.05:
            new = [f"S{step}", "BTCUSDT"] if rng.random() < 0.5 else [f"S{step}"]
            added = state.add_symbols(new)
            assert added == [f"S{step}"]
            ref[f"S{step}"] = []
        else:
            symbol = rng.choice(list(ref))
            n = rng.choice([1, 1, 1, 2, 3, 7, 15, 16, 17, 40])
            batch = bars(next_ts, n, seed=step)
            next_ts += n + rng.randint(0, 3)
            assert state.append(symbol, batch) == n
            ref[symbol].extend(batch)
        if step % 7 == 0:
            check_against_reference(state, ref, rng.choice([None, 1, 5, 16]))
    check_against_reference(state, ref, None)
    check_against_reference(state, ref, 3)


def test_columns_are_read_only_views_of_the_live_buffer() -> None:
    state = MarketState(["A", "B", "C"], capacity=8)
    state.append("A", bars(1, 3))
    state.append("B", bars(1, 8))
    full = state.columns()
    # Rows are contiguous; rows are capacity + slack apart, so not C-contiguous.
    assert full.close.strides == (8 * (8 + state.slack), 8) and state.slack > 0
    assert not full.close.flags.c_contiguous
    assert not full.close.flags.writeable
    with pytest.raises(ValueError):
        full.close[0, 0] = 1.0
    again = state.columns(4)
    assert np.shares_memory(full.close, again.close)  # no copy
    assert again.close.strides[1] == 8  # rows stay contiguous
    state.append("C", bars(100, 1))
    assert state.columns().close[2, -1] == state.latest("C").close  # type: ignore[union-attr]
    assert np.shares_memory(full.close, state.columns().close)


def test_columns_are_c_contiguous_without_slack() -> None:
    state = MarketState(["A", "B"], capacity=8, slack=0)
    for step in range(12):
        state.append("A", bars(1 + step, 1))
        state.append("B", bars(1 + step, 1))
    full = state.columns()
    assert full.close.flags.c_contiguous and full.ts_ms.flags.c_contiguous
    assert full.ts_ms[:, -1].tolist() == [12, 12] and state.compactions == 0


def test_unknown_symbol_and_misuse() -> None:
    state = MarketState(["A"], capacity=4)
    with pytest.raises(KeyError):
        state.index("Z")
    with pytest.raises(KeyError):
        state.append("Z", bars(1, 1))
    assert state.append("A", []) == 0
    assert state.latest("A") is None and state.last_ts_ms("A") is None and state.length("A") == 0
    state.append("A", bars(5, 2))
    with pytest.raises(ValueError, match="not newer"):
        state.append("A", bars(6, 1))
    with pytest.raises(ValueError, match="window"):
        state.columns(5)
    with pytest.raises(ValueError, match="window"):
        state.columns(0)
    with pytest.raises(ValueError, match="capacity"):
        MarketState([], capacity=0)


def test_growth_keeps_data_and_empty_state_has_empty_columns() -> None:
    state = MarketState([], capacity=4)
    cols = state.columns()
    assert cols.close.shape == (0, 4) and cols.lengths.shape == (0,)
    names = [f"S{i}" for i in range(50)]
    for i, name in enumerate(names):
        state.add_symbols([name])
        state.append(name, bars(1, i % 6 + 1, seed=i))
    cols = state.columns()
    assert cols.close.shape == (50, 4)
    assert list(cols.lengths) == [min(i % 6 + 1, 4) for i in range(50)]
    assert state.latest("S0") == bars(1, 1, seed=0)[0]
    assert "S49" in state and len(state) == 50


def test_append_validated_equals_validating_then_appending() -> None:
    """The one-pass path (the orchestrator's) and the two-step path agree, bad bars included."""
    from quantumtrade.data.source import BarBatch
    from quantumtrade.data.validation import REASONS, validate_batch

    rng = random.Random(5)
    symbols = [f"S{i}" for i in range(40)]
    one, two = MarketState(symbols, 64), MarketState(symbols, 64)
    for round_ in range(6):
        rows: list[list[Bar]] = []
        for i, symbol in enumerate(symbols):
            last = one.last_ts_ms(symbol) or 0
            batch = bars(last + 1, rng.randint(0, 90), seed=round_ * 100 + i)
            for k in rng.sample(range(len(batch)), min(len(batch), rng.randint(0, 4))):
                b = batch[k]
                batch[k] = rng.choice(
                    [
                        Bar(b.ts_ms, b.open, b.high, b.low, float("nan"), b.volume),
                        Bar(b.ts_ms, -1.0, b.high, b.low, b.close, b.volume),
                        Bar(b.ts_ms, b.open, b.high, b.low, b.close, -2.0),
                        Bar(last, b.open, b.high, b.low, b.close, b.volume),  # not newer
                    ]
                )
            rows.append(batch)
        packed = BarBatch.from_bars(symbols, rows)
        # Odd rounds pass the rows, as the orchestrator does (it keeps each symbol's row).
        known = [one.index(s) for s in symbols] if round_ % 2 else None
        if known is not None:
            assert one.last_ts_rows(known).tolist() == one.last_ts_array(symbols).tolist()
        codes, counts = one.append_validated(packed, known)
        expected = validate_batch(packed, two.last_ts_array(symbols))
        assert codes.tolist() == expected.tolist()
        assert counts.tolist() == two.append_batch(packed, expected).tolist()
        assert set(codes.tolist()) <= set(range(len(REASONS) + 1))
    x, y = one.columns(), two.columns()
    assert np.array_equal(x.ts_ms, y.ts_ms) and np.array_equal(x.lengths, y.lengths)
    assert np.array_equal(x.close, y.close, equal_nan=True)
    assert np.array_equal(x.volume, y.volume, equal_nan=True)


@pytest.mark.parametrize(
    ("rows", "message"),
    [([0], "1 rows for 2 symbols"), ([0, 0], "must be distinct"), ([0, 7], "out of range")],
)
def test_append_validated_refuses_rows_that_do_not_fit_the_batch(
    rows: list[int], message: str
) -> None:
    from quantumtrade.data.source import BarBatch

    state = MarketState(["A", "B"], 8)
    batch = BarBatch.from_bars(["A", "B"], [bars(1, 2, seed=1), bars(1, 2, seed=2)])
    with pytest.raises(ValueError, match=message):
        state.append_validated(batch, rows)
    assert state.length("A") == state.length("B") == 0


def test_columns_are_kept_between_appends_and_follow_every_change() -> None:
    state = MarketState(["AUSDT", "BUSDT"], 4, slack=2)
    bar = [Bar(60_000, 1.0, 2.0, 0.5, 1.5, 10.0)]
    state.append("AUSDT", bar)
    first = state.columns()
    assert state.columns() is first  # asked again before an append: the same views
    assert first.lengths.tolist() == [1, 0] and not first.lengths.flags.writeable
    assert state.columns(2) is not first and state.columns(2).lengths.tolist() == [1, 0]
    state.append("BUSDT", bar)
    assert state.columns().lengths.tolist() == [1, 1]
    state.add_symbols(["CUSDT"])
    assert state.columns().close.shape == (3, 4)
    for t in range(2, 9):  # moves the window and compacts it
        state.append_batch(
            BarBatch(
                ("AUSDT", "BUSDT", "CUSDT"),
                np.full(3, 60_000 * t, dtype=np.int64),
                np.tile([1.0, 2.0, 0.5, float(t), 10.0], (3, 1)),
                np.arange(4, dtype=np.int64),
            ),
            np.zeros(3, dtype=np.int8),
        )
        columns = state.columns()
        assert columns.close[:, -1].tolist() == [float(t)] * 3
        assert columns.lengths.tolist() == [min(t, 4), min(t, 4), min(t - 1, 4)]
    assert state.compactions > 0
