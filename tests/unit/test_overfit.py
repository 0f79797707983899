"""PBO by CSCV and the deflated Sharpe ratio against values worked out by hand."""

from __future__ import annotations

import math
import statistics
from statistics import NormalDist

import numpy as np
import pytest

from quantumtrade.backtest.overfit import (
    deflated_sharpe,
    expected_max_sharpe,
    pbo_cscv,
    sharpe_per_bar,
)

NOISE = np.array([0.004, -0.003, 0.002, -0.001, 0.003, -0.002])


def _two_halves(good_first: bool) -> np.ndarray:
    good, bad = 0.01 + NOISE, -0.01 + NOISE
    return np.concatenate((good, bad)) if good_first else np.concatenate((bad, good))


def test_pbo_is_one_when_the_in_sample_best_is_always_the_out_of_sample_worst() -> None:
    # Trial 0 wins the first half and loses the second, trial 1 the reverse: whichever half is
    # in-sample, its winner is the other half's loser.
    returns = np.column_stack((_two_halves(True), _two_halves(False)))
    result = pbo_cscv(returns, blocks=2)
    assert result.pbo == 1.0
    # Two trials: rank 1 of 2 -> w = 1/3 -> logit ln(1/2).
    np.testing.assert_allclose(result.logits, [math.log(0.5)] * 2)


def test_pbo_is_zero_when_the_in_sample_best_is_always_the_out_of_sample_best() -> None:
    base = np.tile(NOISE, 4)
    returns = np.column_stack((base + 0.002, base, base - 0.001))  # column 0 best everywhere
    result = pbo_cscv(returns, blocks=4)
    assert result.logits.size == math.comb(4, 2)
    assert result.pbo == 0.0
    np.testing.assert_allclose(result.logits, math.log(3.0))  # rank 3 of 3: w = 3/4


def test_pbo_counts_a_median_rank_as_overfit_and_averages_ties() -> None:
    # Three trials, S = 2. Half A: trial 0 best, trial 1 middle, trial 2 worst; half B: trial 1
    # best, trial 0 middle, trial 2 worst. Picking on A: trial 0 ranks 2 of 3 on B (w = 1/2,
    # logit 0: overfit); picking on B: trial 1 ranks 2 on A (logit 0). PBO = 1.
    a = np.column_stack((0.010 + NOISE, 0.005 + NOISE, -0.010 + NOISE))
    b = np.column_stack((0.005 + NOISE, 0.010 + NOISE, -0.010 + NOISE))
    result = pbo_cscv(np.vstack((a, b)), blocks=2)
    np.testing.assert_allclose(result.logits, [0.0, 0.0], atol=1e-12)
    assert result.pbo == 1.0
    # Identical trials tie everywhere: average rank (1 + 2) / 2 = 1.5 of 2, w = 1/2.
    same = np.column_stack((np.tile(NOISE, 2), np.tile(NOISE, 2)))
    assert pbo_cscv(same, blocks=2).pbo == 1.0


def test_pbo_rejects_odd_blocks_and_too_few_bars() -> None:
    returns = np.zeros((10, 3))
    with pytest.raises(ValueError, match="even"):
        pbo_cscv(returns, blocks=3)
    with pytest.raises(ValueError, match="too few"):
        pbo_cscv(returns, blocks=8)
    with pytest.raises(ValueError, match="2 trials"):
        pbo_cscv(np.zeros((10, 1)), blocks=2)


def test_expected_max_sharpe_matches_the_papers_figure() -> None:
    # Bailey & López de Prado (2014): 100 trials of unit-variance Sharpe ratios -> about 2.53.
    assert expected_max_sharpe(100, 1.0) == pytest.approx(2.5306, abs=1e-3)
    assert expected_max_sharpe(1, 1.0) == 0.0
    # Scales with the standard deviation of the trials' Sharpe ratios.
    assert expected_max_sharpe(100, 0.25) == pytest.approx(2.5306 / 2, abs=1e-3)


def test_deflated_sharpe_by_hand() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.015, -0.005, 0.02])
    n = len(r)
    mean = sum(r) / n
    sd = statistics.stdev(r)
    sr = mean / sd
    m2 = sum((x - mean) ** 2 for x in r) / n
    skew = sum((x - mean) ** 3 for x in r) / n / m2**1.5
    kurt = sum((x - mean) ** 4 for x in r) / n / m2**2
    z = NormalDist().inv_cdf
    sr0 = math.sqrt(0.01) * (
        (1 - 0.5772156649) * z(1 - 1 / 20) + 0.5772156649 * z(1 - 1 / (20 * math.e))
    )
    expected = NormalDist().cdf(
        (sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    )
    got = deflated_sharpe(r, trials=20, sharpe_variance=0.01)
    assert got.sharpe == pytest.approx(sr)
    assert got.benchmark == pytest.approx(sr0)
    assert got.skew == pytest.approx(skew)
    assert got.kurtosis == pytest.approx(kurt)
    assert got.probability == pytest.approx(expected, rel=1e-9)
    # More trials raise the bar: the same returns are less convincing.
    assert deflated_sharpe(r, trials=200, sharpe_variance=0.01).probability < got.probability


def test_one_trial_is_the_probabilistic_sharpe_ratio() -> None:
    r = np.array([0.01, 0.02, 0.0, 0.015, 0.005])
    sr = sharpe_per_bar(r)
    got = deflated_sharpe(r, trials=1, sharpe_variance=0.5)
    assert got.benchmark == 0.0
    assert got.probability > 0.95  # a steady positive series: clearly better than 0
    assert deflated_sharpe(-r, trials=1, sharpe_variance=0.5).probability < 0.05
    assert sr > 0
