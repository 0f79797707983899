"""Numba kernels of the allocator: equal risk contributions and average-linkage clusters.

Both take small dense matrices (the symbols the book holds or wants, rarely more than a few
hundred) and are called at most once per decision, so they run serially.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from quantumtrade.scoring.jit import helper


@helper
def erc_weights(
    cov: NDArray[np.float64], budget: NDArray[np.float64], tol: float, max_sweeps: int
) -> tuple[NDArray[np.float64], int]:
    """Positive weights summing to 1 whose risk contributions ``x_i (Σx)_i / xᵀΣx`` equal
    ``budget`` (which sums to 1), by cyclical coordinate descent (Griveau-Billion, Richard and
    Roncalli, 2013): each ``x_i`` solves its own quadratic with the others held, which keeps
    it positive. ``cov`` must be positive definite. Returns the weights and the sweeps used
    (``max_sweeps + 1``: not converged to ``tol``, the largest |contribution - budget|)."""
    n = cov.shape[0]
    x = np.empty(n)
    for i in range(n):
        x[i] = 1.0 / math.sqrt(cov[i, i])
    # A loop, not ``cov @ x``: numba's matrix product needs SciPy's BLAS, which the daemon
    # does not depend on (a fresh install's warm-up failed on it).
    sx = np.zeros(n)
    for i in range(n):
        for k in range(n):
            sx[i] += cov[i, k] * x[k]
    var = 0.0
    for i in range(n):
        var += x[i] * sx[i]
    for sweep in range(1, max_sweeps + 1):
        for i in range(n):
            sigma = math.sqrt(max(var, 0.0))
            c = sx[i] - cov[i, i] * x[i]
            new = (-c + math.sqrt(c * c + 4.0 * cov[i, i] * budget[i] * sigma)) / (2.0 * cov[i, i])
            d = new - x[i]
            if d != 0.0:
                var += 2.0 * d * sx[i] + d * d * cov[i, i]
                for k in range(n):
                    sx[k] += cov[k, i] * d
                x[i] = new
        # Converged when every share of risk is within tol of its budget.
        var = 0.0
        for i in range(n):
            var += x[i] * sx[i]
        worst = 0.0
        for i in range(n):
            worst = max(worst, abs(x[i] * sx[i] / var - budget[i]))
        if worst <= tol:
            return x / x.sum(), sweep
    return x / x.sum(), max_sweeps + 1


@helper
def average_linkage(corr: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    """Agglomerative clusters of a correlation matrix: merge the two clusters with the highest
    average pairwise correlation while it is at least ``threshold`` (average linkage: unlike
    single linkage it does not chain A~B~C into one cluster when A and C are unrelated).
    Returns each row's cluster as the smallest row index in it."""
    n = corr.shape[0]
    sim = corr.copy()
    size = np.ones(n, dtype=np.int64)
    alive = np.ones(n, dtype=np.bool_)
    parent = np.arange(n)
    for i in range(n):
        sim[i, i] = -np.inf
    for _ in range(n - 1):
        best = -np.inf
        a = -1
        b = -1
        for i in range(n):
            if not alive[i]:
                continue
            for j in range(i + 1, n):
                if alive[j] and sim[i, j] > best:
                    best = sim[i, j]
                    a = i
                    b = j
        if a < 0 or not best >= threshold:
            break
        # Lance-Williams update for average linkage: b merges into a.
        for k in range(n):
            if alive[k] and k != a and k != b:
                s = (size[a] * sim[a, k] + size[b] * sim[b, k]) / (size[a] + size[b])
                sim[a, k] = s
                sim[k, a] = s
        size[a] += size[b]
        alive[b] = False
        for k in range(n):
            if parent[k] == b:
                parent[k] = a
    # Name each cluster by its smallest row.
    smallest = np.full(n, n, dtype=np.int64)
    for k in range(n):
        smallest[parent[k]] = min(smallest[parent[k]], k)
    out = np.empty(n, dtype=np.int64)
    for k in range(n):
        out[k] = smallest[parent[k]]
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) both kernels."""
    cov = np.array([[1.0, 0.5], [0.5, 2.0]])
    erc_weights(cov, np.array([0.5, 0.5]), 1e-10, 10)
    average_linkage(np.array([[1.0, 0.9], [0.9, 1.0]]), 0.5)
