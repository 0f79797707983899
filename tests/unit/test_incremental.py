"""Incremental indicators equal the full recomputation, bar after bar."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from quantumtrade.scoring import indicators
from quantumtrade.scoring.incremental import IncrementalIndicators, IncrementalScores
from quantumtrade.scoring.reference import compute_scores

Array = NDArray[np.float64]


def walks(n: int, bars: int, seed: int = 3) -> Array:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, bars)), axis=1))
    # Shorter histories: leading NaN padding, as MarketState gives them.
    close[1, :40] = np.nan
    close[2, :75] = np.nan
    close[3, :] = 50.0  # flat: zero volatility, the floor applies
    return close


def hlcv(n: int, bars: int, seed: int) -> tuple[Array, Array, Array, Array]:
    """High, low, close, volume with padding, a symbol with no bar at all and inner gaps."""
    rng = np.random.default_rng(seed)
    close = walks(n, bars, seed)
    high = close * (1.0 + rng.uniform(0.0, 0.02, close.shape))
    low = close * (1.0 - rng.uniform(0.0, 0.02, close.shape))
    volume = np.where(np.isnan(close), np.nan, rng.lognormal(3.0, 1.0, close.shape))
    for a in (high, low, close, volume):
        a[4, :] = np.nan  # never a bar
        a[5, 90] = np.nan  # a missing bar inside the series
    volume[6, 30:40] = 0.0  # flat volume: z-score 0
    return high, low, close, volume


PARAMS = [
    indicators.ScanParams(),
    indicators.ScanParams(
        ema_fast=2, ema_slow=3, vol_window=2, rsi=1, atr=2, adx=1, bb_period=1, bb_nbdev=1.0,
        macd_fast=3, macd_slow=2, macd_signal=1, zscore_window=2, roc=1,
    ),
]  # fmt: skip


@pytest.mark.parametrize("params", PARAMS, ids=["default", "short"])
def test_every_indicator_at_every_bar_equals_the_full_recomputation(
    params: indicators.ScanParams,
) -> None:
    high, low, close, volume = hlcv(8, 130, seed=4)
    inc = IncrementalIndicators(close.shape[0], params)
    for t in range(close.shape[1]):
        got = inc.update(high[:, t], low[:, t], close[:, t], volume[:, t])
        full, _ = indicators.compute_scan(
            high[:, : t + 1], low[:, : t + 1], close[:, : t + 1], volume[:, : t + 1], params
        )
        np.testing.assert_array_equal(got, full.values, err_msg=f"bar {t}")
    assert inc.bars_seen == close.shape[1]
    assert not np.isnan(inc.values[0]).any()  # warmed up: every indicator present


def test_resuming_a_full_pass_equals_the_full_pass() -> None:
    high, low, close, volume = hlcv(7, 160, seed=5)
    inc = IncrementalIndicators.from_history(
        high[:, :100], low[:, :100], close[:, :100], volume[:, :100]
    )
    assert inc.bars_seen == 100
    got = inc.replay(high[:, 100:], low[:, 100:], close[:, 100:], volume[:, 100:])
    full, _ = indicators.compute_scan(high, low, close, volume)
    np.testing.assert_array_equal(got, full.values)


def test_update_refuses_bad_input() -> None:
    inc = IncrementalIndicators(2)
    one = np.ones(2)
    with pytest.raises(ValueError, match="expected 2"):
        inc.update(np.ones(3), one, one, one)
    with pytest.raises(TypeError, match="float64"):
        inc.update(one, one, one.astype(np.float32), one)
    with pytest.raises(ValueError):
        IncrementalIndicators(-1)
    assert inc.bars_seen == 0


@pytest.mark.parametrize(("fast", "slow", "window"), [(12, 26, 30), (3, 5, 2), (5, 40, 10)])
def test_scores_at_every_bar_match_the_full_recomputation(
    fast: int, slow: int, window: int
) -> None:
    close = walks(8, 160)
    volume = np.ones_like(close)
    inc = IncrementalScores(close.shape[0], fast=fast, slow=slow, vol_window=window)
    for t in range(close.shape[1]):
        score, vol = inc.update(close[:, t])
        full_score, full_vol = compute_scores(
            close[:, : t + 1], volume[:, : t + 1], fast=fast, slow=slow, vol_window=window
        )
        np.testing.assert_array_equal(vol, full_vol)
        np.testing.assert_array_equal(score, full_score)


def test_replay_then_update_equals_seeing_it_all() -> None:
    close = walks(5, 120, seed=9)
    a = IncrementalScores(5, fast=12, slow=26, vol_window=30)
    a.replay(close[:, :100])
    score, _ = a.update(close[:, 100])
    full, _ = compute_scores(close[:, :101], np.ones((5, 101)), fast=12, slow=26, vol_window=30)
    np.testing.assert_array_equal(score, full)


def test_scores_refuse_bad_input() -> None:
    inc = IncrementalScores(2, fast=2, slow=4, vol_window=3)
    inc.update(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        inc.update(np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="expected 2"):
        inc.update(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        IncrementalScores(2, fast=5, slow=5, vol_window=3)


def test_lane_parallel_blocks_equal_the_full_recomputation() -> None:
    """A first block of symbols all past their warm-up takes the lane-parallel path (a NaN
    bar inside one series included); the second, with padded and empty rows, the per-symbol
    one. Both equal the full recomputation at every bar."""
    n = indicators.LANES + 6
    rng = np.random.default_rng(8)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, 120)), axis=1))
    high = close * (1.0 + rng.uniform(0.0, 0.02, close.shape))
    low = close * (1.0 - rng.uniform(0.0, 0.02, close.shape))
    volume = rng.lognormal(3.0, 1.0, close.shape)
    close[3] = 50.0  # flat prices
    volume[4, 70:95] = 0.0  # flat volume: z-score 0
    for a in (high, low, close, volume):
        a[7, 100] = np.nan  # a missing bar inside a ready block
        a[n - 2, :50] = np.nan  # padding in the second block
        a[n - 1, :] = np.nan  # no bar at all
    inc = IncrementalIndicators.from_history(
        high[:, :60], low[:, :60], close[:, :60], volume[:, :60]
    )
    p = indicators._params(inc.params.as_array())
    for t in range(60, close.shape[1]):
        assert indicators._lanes_ready(p, inc.scan_state.istate, 0, indicators.LANES)
        got = inc.update(high[:, t], low[:, t], close[:, t], volume[:, t])
        full, _ = indicators.compute_scan(
            high[:, : t + 1], low[:, : t + 1], close[:, : t + 1], volume[:, : t + 1]
        )
        np.testing.assert_array_equal(got, full.values, err_msg=f"bar {t}")
        np.testing.assert_array_equal(inc.scan_state.state, full.state, err_msg=f"bar {t}")
    assert not indicators._lanes_ready(p, inc.scan_state.istate, indicators.LANES, 6)
    assert np.isnan(got[7, indicators.OUT_EMA_FAST])  # the NaN bar propagates, as in TA-Lib
