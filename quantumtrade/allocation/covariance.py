"""Returns, a shrunk covariance of them, and correlation clusters, for the allocator and the
risk manager's cluster limits.

The sample covariance of N symbols over T bars is noisy when T is not many times N, and its
inverse (which risk parity leans on) noisier still. Ledoit and Wolf (2004) shrink it towards
``mu * I`` (``mu`` the average variance) by the intensity that minimises the expected squared
error; this is the same estimator as scikit-learn's ``LedoitWolf`` (the tests compare them),
in twenty lines of NumPy rather than a dependency on scikit-learn and SciPy for the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from quantumtrade.allocation.kernels import average_linkage

__all__ = ["Covariance", "correlation_clusters", "ledoit_wolf", "log_returns", "shrunk_covariance"]


def log_returns(close: NDArray[np.float64]) -> NDArray[np.float64]:
    """(symbols, bars) closes to (bars - 1, symbols) log returns; NaN where either close is
    missing or not positive."""
    c = np.asarray(close, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        logc = np.where(c > 0, np.log(np.where(c > 0, c, 1.0)), np.nan)
    return np.diff(logc, axis=1).T


def ledoit_wolf(returns: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """(T, N) returns with no NaN to the Ledoit-Wolf covariance and its shrinkage in [0, 1]
    (the mean is removed; the sample covariance divides by T, as scikit-learn's does)."""
    x = np.asarray(returns, dtype=np.float64)
    t, n = x.shape
    x = x - x.mean(axis=0)
    emp = x.T @ x / t
    mu = float(np.trace(emp)) / n
    x2 = x * x
    beta_sum = float((x2.T @ x2).sum())
    delta_sum = float(((x.T @ x) ** 2).sum()) / (t * t)
    beta = (beta_sum / t - delta_sum) / (n * t)
    delta = (delta_sum - 2.0 * mu * float(x2.sum()) / t + n * mu * mu) / n
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0.0 else beta / delta
    cov = (1.0 - shrinkage) * emp
    cov.flat[:: n + 1] += shrinkage * mu
    return cov, shrinkage


@dataclass(frozen=True, slots=True)
class Covariance:
    """A shrunk covariance of the symbols in ``rows`` and what it was estimated from."""

    rows: NDArray[np.intp]
    """Rows (of the caller's symbols) the matrix covers, in its order."""
    cov: NDArray[np.float64]
    shrinkage: float
    observations: int
    """Bars on which every one of them had a return."""

    @property
    def vol(self) -> NDArray[np.float64]:
        return np.sqrt(np.diag(self.cov))

    def correlation(self) -> NDArray[np.float64]:
        vol = self.vol
        corr = self.cov / np.outer(vol, vol)
        np.fill_diagonal(corr, 1.0)
        return corr


def shrunk_covariance(
    returns: NDArray[np.float64], rows: NDArray[np.intp], min_observations: int
) -> Covariance | None:
    """The Ledoit-Wolf covariance of ``returns[:, rows]`` over the bars where all of them have
    a return; None with fewer than ``min_observations`` such bars or a symbol that never moved
    (a zero variance has no risk share)."""
    sub = returns[:, rows]
    common = np.isfinite(sub).all(axis=1)
    t = int(common.sum())
    if t < max(min_observations, 2) or rows.size == 0:
        return None
    sub = sub[common]
    if (sub.std(axis=0) <= 0).any():
        return None
    cov, shrinkage = ledoit_wolf(sub)
    return Covariance(rows=rows, cov=cov, shrinkage=shrinkage, observations=t)


def correlation_clusters(corr: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    """Each row's cluster (the smallest row in it) by average linkage at ``threshold``."""
    c = np.ascontiguousarray(corr, dtype=np.float64)
    if c.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(average_linkage(c, float(threshold)), dtype=np.int64)
