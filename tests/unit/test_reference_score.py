"""The trend-score reference kernels against slow, obvious references (and TA-Lib for the
EMA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib
from numpy.typing import NDArray

from quantumtrade.scoring import reference

RTOL = 1e-9
Array = NDArray[np.float64]


def random_closes(seed: int, n_sym: int = 9, n_bar: int = 150) -> Array:
    """Random walks with the shapes MarketState hands out: padded, short, empty and gappy rows."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_sym, n_bar)), axis=1))
    close[1, :40] = np.nan  # padded
    close[2, : n_bar - 5] = np.nan  # shorter than every period used here
    close[3, :] = np.nan  # no bars at all
    close[4, : n_bar - 27] = np.nan  # exactly slow + 1 bars
    close[5, : n_bar - 26] = np.nan  # exactly slow bars: one too few for a score
    close[6, 70] = np.nan  # a gap inside the series
    close[7, : n_bar - 31] = np.nan  # exactly vol_window + 1 bars
    return close


# --- references ---------------------------------------------------------------------------


def ema_ref(row: Array, period: int) -> Array:
    out = np.full(row.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(row))
    if valid.size == 0 or row.size - valid[0] < period:
        return out
    start = int(valid[0])
    seed_at = start + period - 1
    out[seed_at] = sum(row[start : seed_at + 1]) / period
    alpha = 2.0 / (period + 1)
    for j in range(seed_at + 1, row.size):
        out[j] = alpha * row[j] + (1.0 - alpha) * out[j - 1]
    return out


def vol_ref(row: Array, window: int) -> Array:
    out = np.full(row.shape, np.nan)
    returns = np.log(row[1:] / row[:-1])  # returns[j - 1] is the return into bar j
    for j in range(window, row.size):
        chunk = returns[j - window : j]
        if not np.isnan(chunk).any():
            out[j] = np.std(chunk, ddof=1)
    return out


def momentum_ref(row: Array, period: int) -> Array:
    out = np.full(row.shape, np.nan)
    for j in range(period, row.size):
        out[j] = row[j] / row[j - period] - 1.0
    return out


def score_ref(row: Array, fast: int, slow: int, vol_window: int) -> tuple[float, float]:
    n_valid = row.size - int(np.argmax(~np.isnan(row))) if (~np.isnan(row)).any() else 0
    vol = float(vol_ref(row, vol_window)[-1])
    if n_valid < slow + 1 or math.isnan(vol):
        return math.nan, vol
    ema_fast = ema_ref(row, fast)[-1]
    ema_slow = ema_ref(row, slow)[-1]
    return float((ema_fast - ema_slow) / ema_slow / max(vol, 1e-12)), vol


def rows_ref(ref: object, x: Array, *args: int) -> Array:
    return np.vstack([ref(row, *args) for row in x])  # type: ignore[operator]


# --- kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("period", [1, 2, 12, 26])
def test_ema_matches_reference(seed: int, period: int) -> None:
    close = random_closes(seed)
    out = np.empty_like(close)
    reference.ema(close, period, out)
    np.testing.assert_allclose(out, rows_ref(ema_ref, close, period), rtol=RTOL, equal_nan=True)


@pytest.mark.parametrize("period", [2, 5, 12, 26, 50])
def test_ema_matches_talib_bit_for_bit(period: int) -> None:
    rng = np.random.default_rng(period)
    walk = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 500)))
    padded = walk.copy()
    padded[:33] = np.nan
    close = np.vstack([walk, padded])
    out = np.empty_like(close)
    reference.ema(close, period, out)
    for row, got in zip(close, out, strict=True):
        expected = talib.EMA(row, timeperiod=period)
        warm = int(np.argmax(~np.isnan(expected)))
        assert np.isnan(got[:warm]).all()
        # TA-Lib 0.8 steps with fma(x - prev, k, prev); so do we: the same bits.
        np.testing.assert_array_equal(got[warm:], expected[warm:])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("window", [2, 5, 30])
def test_log_return_vol_matches_reference(seed: int, window: int) -> None:
    close = random_closes(seed)
    out = np.empty_like(close)
    reference.log_return_vol(close, window, out)
    np.testing.assert_allclose(out, rows_ref(vol_ref, close, window), rtol=RTOL, equal_nan=True)
    # The gap at bar 70 blanks exactly the windows that contain it, then the row recovers.
    assert np.isnan(out[6, 70 : 70 + window + 1]).all()
    assert not np.isnan(out[6, 71 + window :]).any()


def test_log_return_vol_of_a_flat_series_is_zero() -> None:
    close = np.full((2, 40), 123.25)
    out = np.empty_like(close)
    reference.log_return_vol(close, 10, out)
    assert (out[:, 10:] == 0.0).all() and np.isnan(out[:, :10]).all()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("period", [1, 10, 200])
def test_momentum_matches_reference(seed: int, period: int) -> None:
    close = random_closes(seed)
    out = np.empty_like(close)
    reference.momentum(close, period, out)
    np.testing.assert_allclose(
        out, rows_ref(momentum_ref, close, period), rtol=RTOL, equal_nan=True
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("fast", "slow", "vol_window"), [(12, 26, 30), (3, 8, 5), (5, 40, 2)])
def test_score_last_matches_reference(seed: int, fast: int, slow: int, vol_window: int) -> None:
    close = random_closes(seed)
    score = np.empty(close.shape[0])
    vol = np.empty(close.shape[0])
    reference.score_last(close, np.ones_like(close), fast, slow, vol_window, score, vol)
    expected = [score_ref(row, fast, slow, vol_window) for row in close]
    np.testing.assert_allclose(score, [s for s, _ in expected], rtol=RTOL, equal_nan=True)
    np.testing.assert_allclose(vol, [v for _, v in expected], rtol=RTOL, equal_nan=True)


def test_score_last_needs_slow_plus_one_bars() -> None:
    close = random_closes(5)
    score, vol = reference.compute_scores(
        close, np.ones_like(close), fast=12, slow=26, vol_window=20
    )
    assert not math.isnan(score[4])  # slow + 1 bars
    assert math.isnan(score[5]) and not math.isnan(vol[5])  # slow bars: vol yes, score no
    assert not math.isnan(vol[7]) and math.isnan(vol[2]) and math.isnan(score[3])


def test_score_sign_follows_the_trend() -> None:
    bars = np.arange(100, dtype=np.float64)
    wiggle = 0.001 * np.sin(bars)
    close = np.vstack(
        [100.0 * np.exp(0.002 * bars + wiggle), 100.0 * np.exp(-0.002 * bars + wiggle)]
    )
    score, vol = reference.compute_scores(
        close, np.ones_like(close), fast=12, slow=26, vol_window=30
    )
    assert score[0] > 0 > score[1]
    assert (vol > 0).all()


def test_flat_series_scores_zero_not_nan() -> None:
    close = np.full((1, 60), 50.0)
    score, vol = reference.compute_scores(
        close, np.ones_like(close), fast=12, slow=26, vol_window=30
    )
    assert score[0] == 0.0 and vol[0] == 0.0


# --- the Python layer ---------------------------------------------------------------------


def test_compute_scores_accepts_non_contiguous_input() -> None:
    close = random_closes(7)
    volume = np.ones_like(close)
    expected = reference.compute_scores(close, volume, fast=12, slow=26, vol_window=30)
    strided = np.asfortranarray(close)
    assert not strided.flags.c_contiguous
    got = reference.compute_scores(strided, volume[:, ::1], fast=12, slow=26, vol_window=30)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    wide = np.repeat(close, 2, axis=1)[:, ::2]  # a strided view
    got = reference.compute_scores(wide, volume, fast=12, slow=26, vol_window=30)
    np.testing.assert_array_equal(got[0], expected[0])


def test_compute_scores_refuses_wrong_dtype_and_shape() -> None:
    close = random_closes(0)
    with pytest.raises(TypeError, match="float64"):
        reference.compute_scores(
            close.astype(np.float32), np.ones_like(close), fast=2, slow=3, vol_window=3
        )
    with pytest.raises(ValueError, match="2-D"):
        reference.compute_scores(close[0], np.ones(close.shape[1]), fast=2, slow=3, vol_window=3)
    with pytest.raises(ValueError, match="shape"):
        reference.compute_scores(close, np.ones((2, 2)), fast=2, slow=3, vol_window=3)
    with pytest.raises(ValueError, match="vol_window"):
        reference.compute_scores(close, np.ones_like(close), fast=2, slow=3, vol_window=1)


def test_kernels_accept_empty_arrays() -> None:
    empty = np.empty((0, 200))
    score, vol = reference.compute_scores(empty, empty, fast=12, slow=26, vol_window=30)
    assert score.shape == vol.shape == (0,)
    no_bars = np.empty((3, 0))
    score, vol = reference.compute_scores(no_bars, no_bars, fast=12, slow=26, vol_window=30)
    assert np.isnan(score).all() and np.isnan(vol).all()
    for kernel in (reference.ema, reference.log_return_vol, reference.momentum):
        kernel(no_bars, 5, np.empty_like(no_bars))
