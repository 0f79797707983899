"""Kernels called once per bar run serially below ``PARALLEL_MIN_ROWS`` symbols: the serial
build must give bit-identical results to the parallel one."""

from __future__ import annotations

import copy

import numpy as np

from quantumtrade.data import market_state as ms
from quantumtrade.data.source import BarBatch
from quantumtrade.regime import numerics
from quantumtrade.regime.engine import RegimeTracker
from quantumtrade.regime.model import RegimeConfig
from quantumtrade.scoring import incremental
from quantumtrade.scoring import indicators as ind
from quantumtrade.scoring.incremental import IncrementalIndicators
from quantumtrade.scoring.jit import PARALLEL_MIN_ROWS, by_rows

N = 300  # above PARALLEL_MIN_ROWS, so the default path is the parallel build


def walks(rng: np.random.Generator, n: int, bars: int) -> tuple[np.ndarray, ...]:
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, bars)), axis=1))
    high = close * (1 + np.abs(rng.normal(0, 0.003, close.shape)))
    low = close * (1 - np.abs(rng.normal(0, 0.003, close.shape)))
    volume = rng.lognormal(0, 0.5, close.shape)
    return high, low, close, volume


def test_by_rows_picks_the_serial_build_below_the_threshold() -> None:
    assert by_rows("p", "s", PARALLEL_MIN_ROWS - 1) == "s"
    assert by_rows("p", "s", PARALLEL_MIN_ROWS) == "p"


def test_regime_update_serial_equals_parallel() -> None:
    rng = np.random.default_rng(3)
    high, low, close, volume = walks(rng, N, 400)
    tracker = RegimeTracker(RegimeConfig(), symbols=N)
    tracker.reset(close[:, :300], high[:, :300], low[:, :300], volume[:, :300])
    twin = copy.deepcopy(tracker)
    active = rng.random(N) > 0.1
    for t in range(300, 400):
        cols = [np.ascontiguousarray(a[:, t]) for a in (close, high, low, volume)]
        numerics.update_kernel(*cols, active, tracker._prm, tracker.labels, tracker.confidence,
                               tracker._state)  # fmt: skip
        numerics.update_kernel_serial(*cols, active, twin._prm, twin.labels, twin.confidence,
                                      twin._state)  # fmt: skip
    assert np.array_equal(tracker.labels, twin.labels)
    assert np.array_equal(tracker.confidence, twin.confidence)
    assert np.array_equal(tracker._state, twin._state, equal_nan=True)
    assert (tracker.labels >= 0).any()


def test_incremental_indicators_serial_equals_parallel() -> None:
    rng = np.random.default_rng(4)
    high, low, close, volume = walks(rng, N, 260)
    a = IncrementalIndicators.from_history(high[:, :200], low[:, :200], close[:, :200],
                                           volume[:, :200])  # fmt: skip
    b = copy.deepcopy(a)
    for t in range(200, 260):
        cols = [np.ascontiguousarray(x[:, t]) for x in (high, low, close, volume)]
        for inc, kernel in ((a, ind.resume_block_kernel), (b, incremental._resume_block_serial)):
            s = inc._scan
            kernel(*cols, inc._params, float(inc.params.bb_nbdev), s.state, s.istate, s.rings,
                   s.values)  # fmt: skip
    assert np.array_equal(a.values, b.values, equal_nan=True)


def test_market_state_append_serial_equals_parallel() -> None:
    rng = np.random.default_rng(5)
    symbols = [f"S{i}USDT" for i in range(N)]
    states = [ms.MarketState(symbols, 64) for _ in range(2)]
    for step in range(100):
        n_bars = rng.integers(0, 3, N)
        ts = np.concatenate([1_000 * (step * 3 + np.arange(k)) + 1 for k in n_bars])
        prices = np.abs(rng.normal(100, 1, (ts.shape[0], 5)))
        prices[:, 1] = prices.max(axis=1) + 1
        prices[:, 2] = prices.min(axis=1) - 1
        offsets = np.concatenate(([0], np.cumsum(n_bars))).astype(np.int64)
        batch = BarBatch(tuple(symbols), ts.astype(np.int64), prices, offsets)
        for state, kernel in zip(states, (ms._append_batch, ms._append_batch_serial), strict=True):
            rows = state.rows(symbols)
            codes = np.empty(batch.total, dtype=np.int8)
            counts = np.zeros(N, dtype=np.int64)
            kernel(state._prices, state._ts, state._lengths, rows, batch.ts_ms, batch.prices,
                   batch.offsets, codes, counts, True)  # fmt: skip
    a, b = states
    assert np.array_equal(a._prices, b._prices, equal_nan=True)
    assert np.array_equal(a._ts, b._ts) and np.array_equal(a._lengths, b._lengths)
    assert int(a._lengths.min()) > 0
