"""Value at risk of a P&L (or return) history: historical quantile, expected shortfall, normal.

Conventions (the tests spell each one out by hand):

* Losses are positive: a VaR of 20 means "lose 20 or more in the worst (1 - c) of periods". A
  negative VaR (even the tail is a gain) is reported as it is, not clipped to zero.
* Historical VaR at confidence ``c`` is ``-x(k)``, where ``x(1) ≤ … ≤ x(n)`` are the sorted
  observations and ``k = ⌈n · (1 - c)⌉`` (at least 1): the smallest observation whose empirical
  CDF reaches 1 - c, with no interpolation (NumPy's ``method="inverted_cdf"``).
* Expected shortfall is ``-mean(x(1) … x(k))``, the mean of those same k worst observations.
* Parametric VaR is ``-(μ - z·sigma)`` with ``z = Φ⁻¹(c)`` (``statistics.NormalDist``).
* No observations: NaN (unknown risk is not zero risk). No position: 0.0 (nothing to lose).
  Non-finite observations are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import msgspec
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

DEFAULT_CONFIDENCES: tuple[float, ...] = (0.95, 0.99)
_STANDARD_NORMAL = NormalDist()


def _confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return confidence


def _observations(values: ArrayLike) -> FloatArray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim > 1:
        raise ValueError(f"expected a 1-D history, got shape {x.shape}")
    x = x.ravel()
    return x[np.isfinite(x)]


def tail_count(n: int, confidence: float) -> int:
    """How many of ``n`` sorted observations form the (1 - confidence) tail: ⌈n(1 - c)⌉, ≥ 1."""
    # round() absorbs the float error of 1 - c: 1 - 0.95 is 0.050000000000000044, and
    # ⌈100 · that⌉ would be 6 instead of 5.
    return max(1, math.ceil(round(n * (1.0 - _confidence(confidence)), 9)))


def historical_var(pnl_or_returns: ArrayLike, confidence: float) -> float:
    """Loss at the empirical (1 - c) quantile, lower observation, no interpolation; NaN if empty."""
    x = _observations(pnl_or_returns)
    if x.size == 0:
        _confidence(confidence)
        return math.nan
    k = tail_count(x.size, confidence)
    return -float(np.partition(x, k - 1)[k - 1])


def historical_cvar(pnl_or_returns: ArrayLike, confidence: float) -> float:
    """Expected shortfall: mean loss of the k worst observations that define the VaR."""
    x = _observations(pnl_or_returns)
    if x.size == 0:
        _confidence(confidence)
        return math.nan
    k = tail_count(x.size, confidence)
    return -float(np.sort(x)[:k].mean())


def normal_quantile(confidence: float) -> float:
    """z = Φ⁻¹(confidence) of the standard normal."""
    return _STANDARD_NORMAL.inv_cdf(_confidence(confidence))


def parametric_var(mean: float, stdev: float, confidence: float) -> float:
    """Normal VaR: -(μ - z·sigma); NaN in, NaN out."""
    if stdev < 0:
        raise ValueError(f"stdev must be >= 0, got {stdev}")
    return -(mean - normal_quantile(confidence) * stdev)


def portfolio_parametric_var(
    exposures: ArrayLike,
    cov: ArrayLike,
    mean: ArrayLike | None = None,
    *,
    confidence: float,
) -> float:
    """Normal VaR of a linear book: σ² = w'Σw, μ = w'm (zero when ``mean`` is None).

    ``exposures`` are weights (VaR as a fraction) or signed notionals (VaR in quote currency);
    ``cov`` is the covariance of the assets' returns over one period.
    """
    w = np.asarray(exposures, dtype=np.float64).ravel()
    sigma = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    if sigma.shape != (w.size, w.size):
        raise ValueError(f"cov must be {w.size}x{w.size}, got {sigma.shape}")
    # A positive semi-definite Σ gives w'Σw ≥ 0; rounding can leave -1e-20 for a hedged book.
    variance = max(float(w @ sigma @ w), 0.0)
    mu = 0.0
    if mean is not None:
        m = np.asarray(mean, dtype=np.float64).ravel()
        if m.size != w.size:
            raise ValueError(f"mean must have {w.size} entries, got {m.size}")
        mu = float(w @ m)
    return parametric_var(mu, math.sqrt(variance), confidence)


class VarLevel(msgspec.Struct, frozen=True, kw_only=True):
    confidence: float
    historical: float
    """Historical VaR of the book's P&L (quote currency)."""
    expected_shortfall: float
    parametric: float
    """Normal VaR with zero mean and the sample covariance of the returns."""


class VarReport(msgspec.Struct, frozen=True, kw_only=True):
    observations: int
    """Periods of aligned returns used (0: no history, every VaR is NaN)."""
    gross_exposure: float
    """Σ |signed notional| of the positions."""
    levels: tuple[VarLevel, ...]

    def at(self, confidence: float) -> VarLevel:
        for level in self.levels:
            if level.confidence == confidence:
                return level
        raise KeyError(confidence)


def portfolio_var(
    positions: Mapping[str, float],
    returns: Mapping[str, ArrayLike],
    confidences: Sequence[float] = DEFAULT_CONFIDENCES,
) -> VarReport:
    """One-period VaR of signed notional ``positions`` from each symbol's return history.

    The histories are aligned on their newest observations (the last ``min(len)`` of each, the
    caller aligns timestamps); a period where any return is not finite is dropped. The book's
    P&L in each period is Σ notional · return. The parametric VaR takes a zero mean: a drift
    estimated from a few hundred bars is mostly noise. A held symbol with no history makes
    every VaR NaN; no position at all gives 0.0.
    """
    held = {s: float(n) for s, n in positions.items() if n != 0.0}
    gross = float(sum(abs(n) for n in held.values()))
    if not held:
        zero = tuple(
            VarLevel(
                confidence=_confidence(c), historical=0.0, expected_shortfall=0.0, parametric=0.0
            )
            for c in confidences
        )
        return VarReport(observations=0, gross_exposure=0.0, levels=zero)
    series = [np.asarray(returns.get(s, ()), dtype=np.float64).ravel() for s in held]
    n = min(x.size for x in series)
    matrix = np.vstack([x[x.size - n :] for x in series]) if n else np.empty((len(held), 0))
    matrix = matrix[:, np.isfinite(matrix).all(axis=0)]
    w = np.fromiter(held.values(), dtype=np.float64, count=len(held))
    pnl = w @ matrix
    cov = np.cov(matrix, ddof=1) if matrix.shape[1] >= 2 else None
    levels = []
    for c in confidences:
        parametric = portfolio_parametric_var(w, cov, confidence=c) if cov is not None else math.nan
        levels.append(
            VarLevel(
                confidence=_confidence(c),
                historical=historical_var(pnl, c),
                expected_shortfall=historical_cvar(pnl, c),
                parametric=parametric,
            )
        )
    return VarReport(observations=int(matrix.shape[1]), gross_exposure=gross, levels=tuple(levels))
