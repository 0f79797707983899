"""How much of an optimiser's best in-sample result is selection luck: PBO and deflated Sharpe.

Pure functions over NumPy arrays, no I/O; Sharpe ratios here are per bar (mean / std with
ddof=1 of the per-bar returns, risk-free rate 0), not annualised.

* ``pbo_cscv``: the probability of backtest overfitting by combinatorially symmetric cross
  validation (Bailey, Borwein, López de Prado, Zhu, "The probability of backtest overfitting",
  2015). The (bars, trials) matrix of per-bar returns is cut into ``blocks`` (S, even) equal
  runs of bars (the first ``bars mod S`` bars dropped). For each of the C(S, S/2) ways to pick
  half of the blocks as "in-sample" J (the other half J' out-of-sample), the trial with the
  best Sharpe on J is taken, its Sharpe on J' is ranked among all trials' on J' (rank 1 = worst,
  N = best, ties get their average rank), w = rank / (N + 1) and the logit
  l = ln(w / (1 - w)). PBO = the share of combinations with l <= 0: how often the in-sample
  winner is at or below the out-of-sample median.
* ``deflated_sharpe``: the deflated Sharpe ratio (Bailey, López de Prado, "The deflated Sharpe
  ratio", 2014): the probability that the selected Sharpe SR beats the best Sharpe that N
  unskilled trials would show by luck,
  SR0 = sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e))), g = Euler's 0.5772...,
  V = the variance of the N trials' Sharpe ratios,
  DSR = Z((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurtosis - 1) / 4 * SR^2)),
  T, skew and (non-excess) kurtosis of the selected returns, Z the standard normal CDF.
  With one trial SR0 = 0 (the probabilistic Sharpe ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class Pbo:
    pbo: float
    """Share of the combinations whose logit is <= 0."""
    logits: NDArray[np.float64]
    """One logit per combination, in ``itertools.combinations`` order."""
    blocks: int
    trials: int


def _sharpe(
    total: NDArray[np.float64], squares: NDArray[np.float64], n: int
) -> NDArray[np.float64]:
    """Per-column Sharpe from sums and sums of squares over ``n`` rows (0 where std is 0)."""
    mean = total / n
    var = np.maximum(squares - total * mean, 0.0) / (n - 1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 1e-15, mean / std, 0.0)


def pbo_cscv(returns: NDArray[np.float64], blocks: int = 16) -> Pbo:
    """PBO of choosing the best of ``returns``' columns (trials) by Sharpe (module docstring)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be (bars, trials), not {r.shape}")
    bars, trials = r.shape
    if blocks < 2 or blocks % 2:
        raise ValueError(f"blocks must be even and at least 2, not {blocks}")
    if trials < 2:
        raise ValueError("PBO needs at least 2 trials")
    size = bars // blocks
    if size < 2:
        raise ValueError(f"{bars} bars are too few for {blocks} blocks of at least 2")
    if not np.isfinite(r).all():
        raise ValueError("returns must be finite")
    cut = r[bars - size * blocks :].reshape(blocks, size, trials)
    sums = cut.sum(axis=1)  # (blocks, trials)
    squares = (cut * cut).sum(axis=1)
    total, total_sq = sums.sum(axis=0), squares.sum(axis=0)
    half = blocks // 2
    n = half * size
    logits = []
    for chosen in combinations(range(blocks), half):
        pick = list(chosen)
        is_sum, is_sq = sums[pick].sum(axis=0), squares[pick].sum(axis=0)
        in_sample = _sharpe(is_sum, is_sq, n)
        out_of_sample = _sharpe(total - is_sum, total_sq - is_sq, n)
        best = int(np.argmax(in_sample))
        mine = out_of_sample[best]
        rank = 1.0 + np.count_nonzero(out_of_sample < mine)
        rank += (np.count_nonzero(out_of_sample == mine) - 1) / 2.0
        w = rank / (trials + 1.0)
        logits.append(math.log(w / (1.0 - w)))
    values = np.asarray(logits)
    return Pbo(
        pbo=float(np.count_nonzero(values <= 0.0)) / values.size,
        logits=values,
        blocks=blocks,
        trials=trials,
    )


def sharpe_per_bar(returns: NDArray[np.float64]) -> float:
    """mean / std (ddof=1) of per-bar returns; 0.0 when std is 0 or there are fewer than 2."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    std = float(r.std(ddof=1))
    return float(r.mean()) / std if std > 1e-15 else 0.0


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    probability: float
    """DSR: the probability that the true Sharpe exceeds ``benchmark``."""
    sharpe: float
    """The selected returns' per-bar Sharpe."""
    benchmark: float
    """SR0: the expected best per-bar Sharpe of ``trials`` luck-only trials."""
    trials: int
    variance: float
    skew: float
    kurtosis: float
    bars: int


def expected_max_sharpe(trials: int, variance: float) -> float:
    """SR0: the expected largest of ``trials`` Sharpe ratios of variance ``variance`` and mean 0."""
    if trials <= 1 or variance <= 0.0:
        return 0.0
    a = _NORMAL.inv_cdf(1.0 - 1.0 / trials)
    b = _NORMAL.inv_cdf(1.0 - 1.0 / (trials * math.e))
    return math.sqrt(variance) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b)


def deflated_sharpe(
    returns: NDArray[np.float64], *, trials: int, sharpe_variance: float
) -> DeflatedSharpe:
    """DSR of the selected ``returns`` after ``trials`` trials whose per-bar Sharpe ratios had
    variance ``sharpe_variance`` (module docstring)."""
    r = np.asarray(returns, dtype=np.float64)
    t = int(r.size)
    if t < 3:
        raise ValueError("the deflated Sharpe ratio needs at least 3 returns")
    sr = sharpe_per_bar(r)
    centred = r - r.mean()
    m2 = float(np.mean(centred**2))
    if m2 > 1e-30:
        skew = float(np.mean(centred**3)) / m2**1.5
        kurtosis = float(np.mean(centred**4)) / m2**2
    else:
        skew, kurtosis = 0.0, 3.0
    sr0 = expected_max_sharpe(trials, sharpe_variance)
    denominator = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(max(denominator, 1e-12))
    return DeflatedSharpe(
        probability=_NORMAL.cdf(z),
        sharpe=sr,
        benchmark=sr0,
        trials=trials,
        variance=sharpe_variance,
        skew=skew,
        kurtosis=kurtosis,
        bars=t,
    )
