"""The incremental trend score equals the full recomputation, bar after bar."""

from __future__ import annotations

import numpy as np
import pytest

from quantumtrade.scoring.incremental import IncrementalScores
from quantumtrade.scoring.kernels import compute_scores


def walks(n: int, bars: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, bars)), axis=1))
    # Shorter histories: leading NaN padding, as MarketState gives them.
    close[1, :40] = np.nan
    close[2, :75] = np.nan
    close[3, :] = 50.0  # flat: zero volatility, the floor applies
    return close


@pytest.mark.parametrize(("fast", "slow", "window"), [(12, 26, 30), (3, 5, 2), (5, 40, 10)])
def test_every_bar_matches_the_full_recomputation(fast: int, slow: int, window: int) -> None:
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


def test_bad_input_is_refused() -> None:
    inc = IncrementalScores(2, fast=2, slow=4, vol_window=3)
    inc.update(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        inc.update(np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="expected 2"):
        inc.update(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        IncrementalScores(2, fast=5, slow=5, vol_window=3)
