"""RegimeTracker (one bar at a time) against the full classification, and the detector on it."""

from __future__ import annotations

import numpy as np
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data.market_state import MarketState
from quantumtrade.events import Bar, RegimeChanged
from quantumtrade.regime.detector import MAX_STEPS, RegimeDetector
from quantumtrade.regime.engine import RegimeTracker, classify
from quantumtrade.regime.model import NO_LABEL, REGIME_ORDER, RegimeConfig

CFG = RegimeConfig(warmup=60, history=200)


def regime_market(symbols: int, bars: int, seed: int) -> tuple[np.ndarray, ...]:
    """Rows that switch between calm trends, tight ranges, wild stretches and breakouts (so
    every label and many switches occur), some left-padded with NaN like a late listing."""
    rng = np.random.default_rng(seed)
    shape = (symbols, bars)
    sigma = np.empty(shape)
    drift = np.empty(shape)
    for i in range(symbols):
        j = 0
        while j < bars:
            n = int(rng.integers(15, 80))
            kind = int(rng.integers(4))
            s = (0.01, 0.004, 0.03, 0.02)[kind]
            sigma[i, j : j + n] = s
            drift[i, j : j + n] = (0.004 * rng.choice([-1, 1])) if kind in (0, 3) else 0.0
            j += n
    log_close = np.cumsum(drift + sigma * rng.standard_normal(shape), axis=1)
    close = 50.0 * np.exp(log_close)
    wick = np.abs(rng.standard_normal((2, *shape)))
    high = close * np.exp(0.5 * sigma * wick[0])
    low = close * np.exp(-0.5 * sigma * wick[1])
    volume = 1e4 / close * (sigma / 0.01) * np.exp(0.35 * rng.standard_normal(shape))
    for i in range(0, symbols, 3):
        pad = int(rng.integers(1, 40))
        for a in (close, high, low, volume):
            a[i, :pad] = np.nan
    return close, high, low, volume


def test_incremental_equals_full_classification_at_every_bar() -> None:
    close, high, low, volume = regime_market(9, 700, seed=1)
    full = classify(close, high, low, volume, CFG)
    assert len(np.unique(full.labels[full.labels >= 0])) == 4  # the test sees every regime
    start = 100
    tracker = RegimeTracker(CFG)
    tracker.reset(close[:, :start], high[:, :start], low[:, :start], volume[:, :start])
    np.testing.assert_array_equal(tracker.labels, full.labels[:, start - 1])
    for j in range(start, close.shape[1]):
        labels, conf = tracker.update(close[:, j], high[:, j], low[:, j], volume[:, j])
        np.testing.assert_array_equal(labels, full.labels[:, j])
        np.testing.assert_array_equal(conf, full.confidence[:, j])


def test_inactive_rows_keep_their_state() -> None:
    close, high, low, volume = regime_market(4, 400, seed=2)
    full = classify(close, high, low, volume, CFG)
    tracker = RegimeTracker(CFG)
    tracker.reset(close[:, :300], high[:, :300], low[:, :300], volume[:, :300])
    # Rows 0 and 2 get bar 300 now; rows 1 and 3 skip this update and take it on the next.
    active = np.array([True, False, True, False])
    tracker.update(close[:, 300], high[:, 300], low[:, 300], volume[:, 300], active=active)
    np.testing.assert_array_equal(tracker.labels[[1, 3]], full.labels[[1, 3], 299])
    tracker.update(close[:, 300], high[:, 300], low[:, 300], volume[:, 300], active=~active)
    np.testing.assert_array_equal(tracker.labels, full.labels[:, 300])
    np.testing.assert_array_equal(tracker.confidence, full.confidence[:, 300])


def test_reset_of_some_rows_and_resize() -> None:
    close, high, low, volume = regime_market(5, 300, seed=3)
    full = classify(close, high, low, volume, CFG)
    tracker = RegimeTracker(CFG, symbols=3)
    assert (tracker.labels == NO_LABEL).all()
    tracker.resize(5)
    rows = np.array([4, 1])
    tracker.reset(close[rows], high[rows], low[rows], volume[rows], rows=rows)
    np.testing.assert_array_equal(tracker.labels[rows], full.labels[rows, -1])
    np.testing.assert_array_equal(tracker.confidence[rows], full.confidence[rows, -1])
    assert (tracker.labels[[0, 2, 3]] == NO_LABEL).all()
    with pytest.raises(ValueError, match="shrink"):
        tracker.resize(2)
    with pytest.raises(ValueError, match="rows"):
        tracker.reset(close[:2], high[:2], low[:2], volume[:2], rows=np.array([0, 9]))


def test_update_rejects_wrong_shapes() -> None:
    tracker = RegimeTracker(CFG, symbols=3)
    ok = np.ones(3)
    with pytest.raises(ValueError, match="close must be shaped"):
        tracker.update(np.ones(4), ok, ok, ok)
    with pytest.raises(ValueError, match="active must be shaped"):
        tracker.update(ok, ok, ok, ok, active=np.ones(2, dtype=bool))


def _bars(close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray, row: int,
          a: int, b: int) -> list[Bar]:  # fmt: skip
    return [
        Bar(60_000 * (k + 1), float(close[row, k]), float(high[row, k]), float(low[row, k]),
            float(close[row, k]), float(volume[row, k]))
        for k in range(a, b)
        if np.isfinite(close[row, k])
    ]  # fmt: skip


def _expected_events(labels: np.ndarray) -> list[tuple[str, int]]:
    """(symbol, code) per change of a row's newest label, in update order."""
    out: list[tuple[str, int]] = []
    last: dict[int, int] = {}
    for j in range(labels.shape[1]):
        for i in range(labels.shape[0]):
            code = int(labels[i, j])
            if code != NO_LABEL and last.get(i) != code:
                out.append((f"S{i}", code))
                last[i] = code
    return out


async def test_detector_publishes_the_full_classification_changes() -> None:
    """Heartbeats with one new bar per symbol (the incremental path), after a first load of 150
    bars (a full classification), give the RegimeChanged events of the whole-series labels."""
    close, high, low, volume = regime_market(4, 450, seed=4)
    full = classify(close, high, low, volume, CFG)
    clock = ManualClock()
    bus = EventBus(clock=clock)
    seen: list[RegimeChanged] = []
    bus.subscribe(RegimeChanged, seen.append)
    names = [f"S{i}" for i in range(4)]
    state = MarketState(names, capacity=1000)
    detector = RegimeDetector(bus=bus, clock=clock, state=state, config=CFG)
    start = 150
    for i, name in enumerate(names):
        state.append(name, _bars(close, high, low, volume, i, 0, start))
    await detector.update()
    for j in range(start, close.shape[1]):
        for i, name in enumerate(names):
            state.append(name, _bars(close, high, low, volume, i, j, j + 1))
        await detector.update()
    await bus.stop()
    got = [(e.symbol, REGIME_ORDER.index(e.regime)) for e in seen]
    assert got == _expected_events(full.labels[:, start - 1 :])
    assert detector.incremental_rows == 4 * (close.shape[1] - start)
    assert detector.reclassified_rows == 4
    for i, name in enumerate(names):
        regime, conf = detector.regime(name)
        assert regime is REGIME_ORDER[int(full.labels[i, -1])]
        assert conf == full.confidence[i, -1]
    codes = detector.regime_codes(names)
    assert codes.tolist() == [REGIME_ORDER.index(detector.regime(n)[0]) for n in names]
    # Any other list of symbols is looked up one by one (unknown: NO_LABEL).
    assert detector.regime_codes(["S2", "NEWUSDT", "S0"]).tolist() == [
        codes[2], NO_LABEL, codes[0]
    ]  # fmt: skip
    assert sum(detector.current()["symbols"].values()) == 4
    assert sorted(detector.confidences()) == names


async def test_detector_steps_over_a_few_new_bars_and_reclassifies_after_a_long_gap() -> None:
    """A symbol with a few new bars (a slower cadence) is advanced by each of them, so its
    labels stay those of its whole history; one whose last seen bar has left the newest
    MAX_STEPS + 1 (a long gap), and a new symbol, are classified over their window."""
    close, high, low, volume = regime_market(4, 500, seed=5)
    clock = ManualClock()
    bus = EventBus(clock=clock)
    state = MarketState(["S0", "S1", "S2"], capacity=250)
    detector = RegimeDetector(bus=bus, clock=clock, state=state, config=CFG)
    for i in range(3):
        state.append(f"S{i}", _bars(close, high, low, volume, i, 0, 300))
    await detector.update()
    assert detector.reclassified_rows == 3
    gap = MAX_STEPS + 10
    state.append("S0", _bars(close, high, low, volume, 0, 300, 301))
    state.append("S1", _bars(close, high, low, volume, 1, 300, 303))
    state.append("S2", _bars(close, high, low, volume, 2, 300, 300 + gap))
    state.add_symbols(["S3"])
    state.append("S3", _bars(close, high, low, volume, 3, 0, 200))
    await detector.update()
    await bus.stop()
    assert detector.incremental_rows == 2
    assert detector.reclassified_rows == 3 + 2
    # S0 and S1 carried on from their first 250-bar window (bars 50..299) bar by bar.
    for i, end in ((0, 301), (1, 303)):
        whole = classify(
            close[i : i + 1, 50:end], high[i : i + 1, 50:end], low[i : i + 1, 50:end],
            volume[i : i + 1, 50:end], CFG,
        )  # fmt: skip
        assert detector.regime(f"S{i}") == (
            REGIME_ORDER[int(whole.labels[0, -1])],
            float(whole.confidence[0, -1]),
        )
    cols = state.columns()
    window = classify(cols.close, cols.high, cols.low, cols.volume, CFG)
    for i in (2, 3):
        assert detector.regime(f"S{i}") == (
            REGIME_ORDER[int(window.labels[i, -1])],
            float(window.confidence[i, -1]),
        )


def test_a_bad_bar_inside_a_series_leaves_the_state_untouched() -> None:
    """Bad bars (NaN, or a high below its low) inserted into a series change nothing: every
    other bar gets the label and confidence of the series without them, and a bad bar carries
    the previous label with confidence 0. (Each block's ring has one head for all its lanes, so
    this is the path that keeps a lane's ring as it was while the others move on.)"""
    close, high, low, volume = regime_market(7, 500, seed=6)
    base = classify(close, high, low, volume, CFG)
    at = [90, 200, 200, 333]  # insert before these columns (two bad bars in a row at 200)
    gapped = [np.insert(a, at, np.nan, axis=1) for a in (close, high, low, volume)]
    bad = np.zeros(gapped[0].shape[1], dtype=bool)
    bad[np.asarray(at) + np.arange(len(at))] = True
    # Row 1's bad bar at 333 is a finite bar with its high below its low.
    j = 333 + 3
    gapped[0][1, j], gapped[1][1, j], gapped[2][1, j], gapped[3][1, j] = 10.0, 9.0, 11.0, 5.0
    got = classify(gapped[0], gapped[1], gapped[2], gapped[3], CFG)
    np.testing.assert_array_equal(got.labels[:, ~bad], base.labels)
    np.testing.assert_array_equal(got.confidence[:, ~bad], base.confidence)
    np.testing.assert_array_equal(got.labels[:, bad], got.labels[:, np.flatnonzero(bad) - 1])
    assert (got.confidence[:, bad] == 0.0).all()


def test_rows_reset_from_other_windows_then_updated_follow_their_own_history() -> None:
    """Rows re-classified over windows of another length (so their blocks' ring heads differ
    from the tracker's) and then updated bar by bar equal the full classification of those
    windows; the rows around them (two blocks here) are unaffected."""
    close, high, low, volume = regime_market(70, 400, seed=7)
    full = classify(close, high, low, volume, CFG)
    tracker = RegimeTracker(CFG)
    tracker.reset(close[:, :300], high[:, :300], low[:, :300], volume[:, :300])
    rows = np.array([66, 3, 10])
    tracker.reset(close[rows, 7:300], high[rows, 7:300], low[rows, 7:300], volume[rows, 7:300],
                  rows=rows)  # fmt: skip
    own = classify(close[rows, 7:], high[rows, 7:], low[rows, 7:], volume[rows, 7:], CFG)
    others = np.setdiff1d(np.arange(70), rows)
    for j in range(300, 400):
        labels, conf = tracker.update(close[:, j], high[:, j], low[:, j], volume[:, j])
        np.testing.assert_array_equal(labels[rows], own.labels[:, j - 7])
        np.testing.assert_array_equal(conf[rows], own.confidence[:, j - 7])
        np.testing.assert_array_equal(labels[others], full.labels[others, j])
        np.testing.assert_array_equal(conf[others], full.confidence[others, j])


def test_leading_empty_bars_change_nothing() -> None:
    """A window's leading all-NaN columns (bars no row holds yet) leave the reset as it is
    without them: the detector classifies only the columns its rows hold."""
    close, high, low, volume = regime_market(7, 260, seed=4)
    pad = np.full((7, 90), np.nan)
    wide = [np.concatenate([pad, a], axis=1) for a in (close, high, low, volume)]
    a, b = RegimeTracker(CFG, symbols=7), RegimeTracker(CFG, symbols=7)
    a.reset(*wide)
    b.reset(close, high, low, volume)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    for j in range(40):  # and the kept state goes on the same
        bar = [x[:, -1] * (1 + 0.001 * j) for x in (close, high, low, volume)]
        np.testing.assert_array_equal(a.update(*bar)[0], b.update(*bar)[0])
        np.testing.assert_array_equal(a.confidence, b.confidence)
