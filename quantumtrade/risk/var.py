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
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from statistics import NormalDist
from typing import NamedTuple

import msgspec
import numba
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


# --- the book's scenario P&L, for pre-trade limits ---------------------------------------

DAY_MS = 86_400_000
History = Callable[[str], tuple[npt.NDArray[np.int64], FloatArray]]
"""A symbol's (bar open times, close-to-close returns), oldest first."""


class VarMethod(StrEnum):
    HISTORICAL = "historical"
    PARAMETRIC = "parametric"


class TailRisk(NamedTuple):
    """VaR and expected shortfall of one scenario P&L vector (losses positive)."""

    var: float
    expected_shortfall: float


def tail_risks(pnl: FloatArray, confidences: Sequence[float], method: VarMethod) -> list[TailRisk]:
    """VaR and ES of finite scenario P&L at each confidence: historical (the k worst, as
    ``historical_var`` and ``historical_cvar``) or normal with zero mean and the sample stdev
    s (ES = s·φ(z)/(1 - c)); NaN when empty (parametric: fewer than 2)."""
    n = pnl.size
    if method is VarMethod.PARAMETRIC:
        if n < 2:
            return [TailRisk(math.nan, math.nan) for _ in confidences]
        sigma = float(pnl.std(ddof=1))
        out = []
        for c in confidences:
            z = normal_quantile(c)
            out.append(TailRisk(z * sigma, sigma * _STANDARD_NORMAL.pdf(z) / (1.0 - c)))
        return out
    if n == 0:
        return [TailRisk(math.nan, math.nan) for _ in confidences]
    ks = [tail_count(n, c) for c in confidences]
    buffer = np.empty(max(ks))
    _k_worst(pnl, buffer)
    worst = buffer.tolist()  # ascending: the worst first
    return [TailRisk(-worst[k - 1], -sum(worst[:k]) / k) for k in ks]


def tail_risk(pnl: FloatArray, confidence: float, method: VarMethod) -> TailRisk:
    """``tail_risks`` at one confidence."""
    return tail_risks(pnl, (confidence,), method)[0]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _k_worst(x: FloatArray, out: FloatArray) -> None:
    # The out.size smallest of x, ascending, by insertion into a short sorted buffer: one pass
    # over a few hundred scenarios for a tail of a few, where np.partition copies and swaps.
    k = out.shape[0]
    m = 0
    for i in range(x.shape[0]):
        v = x[i]
        if m == k:
            if v >= out[k - 1]:
                continue
            j = k - 1
        else:
            j = m
            m += 1
        while j > 0 and out[j - 1] > v:
            out[j] = out[j - 1]
            j -= 1
        out[j] = v


def warm_up() -> None:
    """Compile (or load from numba's cache) the tail kernel."""
    _k_worst(np.zeros(3), np.empty(2))


class TailChange(NamedTuple):
    """The book's tail risk before and after one order, on the same scenarios."""

    observations: int
    before: TailRisk
    after: TailRisk


class ScenarioBook:
    """Scenario P&L of a book of signed position values: one row per bar time every held
    symbol has a finite return, P&L = Σ value · return. Built once (per bar, by the caller)
    and then updated per order, ``pnl + column(symbol) · Δvalue``, with no recompute of the
    rest of the book. A symbol with no return at some of the book's times judges an order on
    the times it has (the book's P&L restricted to them).

    ``horizon_scale`` turns a one-bar figure into a ``horizon_ms`` one: √(horizon / bar),
    the bar being the median spacing of the scenario times (a day of 1 h bars: √24). Exact for
    the parametric VaR of i.i.d. normal returns; for the historical one it is the usual
    square-root-of-time approximation (overlapping k-bar sums from a 500-bar window would leave
    about 20 independent days, too few for a 99 % tail)."""

    def __init__(
        self,
        values: Mapping[str, float],
        history: History,
        *,
        common: tuple[npt.NDArray[np.int64], FloatArray] | None = None,
        horizon_ms: int = DAY_MS,
    ) -> None:
        """``common``: the (times, P&L) of ``values`` already summed by the caller (the
        price history's one-pass ``book_pnl``); without it the times are intersected and
        each symbol's returns aligned here."""
        self._history = history
        self.horizon_ms = horizon_ms
        self.values = {s: float(v) for s, v in values.items() if v != 0.0}
        self._columns: dict[str, FloatArray] = {}
        self._base: dict[tuple[float, VarMethod], TailRisk] = {}  # the book's own, one bar
        self._bar_scale: float | None = None  # horizon scale of the axis, once
        self.axis: npt.NDArray[np.int64] | None = None
        """Scenario bar times (None: an empty book, which has no times of its own)."""
        self.pnl = np.zeros(0)
        if not self.values:
            return
        if common is not None:
            self.axis, self.pnl = common
            return
        axis: npt.NDArray[np.int64] | None = None
        for s in self.values:
            ts, r = history(s)
            ts = ts[np.isfinite(r)]
            axis = ts if axis is None else np.intersect1d(axis, ts, assume_unique=True)
        self.axis = axis
        pnl = np.zeros(axis.size if axis is not None else 0)
        for s, v in self.values.items():
            pnl += self.column(s) * v
        self.pnl = pnl

    @property
    def observations(self) -> int:
        return int(self.pnl.size)

    def column(self, symbol: str) -> FloatArray:
        """The symbol's returns on the book's times (NaN where it has none)."""
        col = self._columns.get(symbol)
        if col is None:
            assert self.axis is not None
            col = aligned(self.axis, *self._history(symbol))
            self._columns[symbol] = col
        return col

    def _scenarios(self, symbol: str, delta_value: float) -> tuple[FloatArray, FloatArray]:
        """(P&L before, P&L after adding ``delta_value`` of ``symbol``), same rows."""
        if self.axis is None:
            _, r = self._history(symbol)
            r = r[np.isfinite(r)]
            return np.zeros(r.size), r * delta_value
        col = self.column(symbol)
        ok = np.isfinite(col)
        if ok.all():
            return self.pnl, self.pnl + col * delta_value
        before = self.pnl[ok]
        return before, before + col[ok] * delta_value

    def change(
        self, symbol: str, delta_value: float, confidence: float, method: VarMethod
    ) -> TailChange:
        """Horizon VaR/ES of the book before and after ``delta_value`` more of ``symbol``."""
        before, after = self._scenarios(symbol, delta_value)
        scale = self._scale(symbol)
        if before is self.pnl:  # every row: the book's own figure, the same for every order
            key = (confidence, method)
            base = self._base.get(key)
            if base is None:
                base = self._base[key] = tail_risk(before, confidence, method)
        else:
            base = tail_risk(before, confidence, method)
        return TailChange(
            observations=int(after.size),
            before=_scaled(base, scale),
            after=_scaled(tail_risk(after, confidence, method), scale),
        )

    def add(self, symbol: str, delta_value: float) -> None:
        """Take an accepted order into the book (rows where the symbol has no return go)."""
        if delta_value == 0.0:
            return
        self._base.clear()
        if self.axis is None:
            self._bar_scale = None
            ts, r = self._history(symbol)
            ok = np.isfinite(r)
            self.axis, self.pnl = ts[ok], r[ok] * delta_value
            self._columns = {symbol: r[ok]}
        else:
            col = self.column(symbol)
            ok = np.isfinite(col)
            if ok.all():
                self.pnl = self.pnl + col * delta_value
            else:
                self.axis = self.axis[ok]
                self._bar_scale = None
                self.pnl = self.pnl[ok] + col[ok] * delta_value
                self._columns = {s: c[ok] for s, c in self._columns.items()}
        self.values[symbol] = self.values.get(symbol, 0.0) + delta_value

    def risk(self, confidence: float, method: VarMethod, *, horizon: bool = True) -> TailRisk:
        """The book's VaR/ES now: over ``horizon_ms`` (else one bar); 0 for an empty book."""
        if self.axis is None:
            return TailRisk(0.0, 0.0)
        return self.risks((confidence,), method, horizon=horizon)[0]

    def risks(
        self, confidences: Sequence[float], method: VarMethod, *, horizon: bool = True
    ) -> list[TailRisk]:
        """``risk`` at each confidence, from one pass over the scenarios."""
        if self.axis is None:
            return [TailRisk(0.0, 0.0) for _ in confidences]
        scale = self._scale(None) if horizon else 1.0
        return [_scaled(r, scale) for r in tail_risks(self.pnl, confidences, method)]

    def _scale(self, symbol: str | None) -> float:
        if self.axis is not None:
            if self._bar_scale is None:
                self._bar_scale = _horizon_scale(self.axis, self.horizon_ms)
            return self._bar_scale
        if symbol is None:
            return math.nan
        ts, r = self._history(symbol)
        return _horizon_scale(ts[np.isfinite(r)], self.horizon_ms)


def _horizon_scale(axis: npt.NDArray[np.int64], horizon_ms: int) -> float:
    """√(horizon / bar), the bar the median spacing of ``axis``; NaN with fewer than 2."""
    if axis.size < 2:
        return math.nan
    bar_ms = float(np.median(np.diff(axis)))
    return math.sqrt(horizon_ms / bar_ms) if bar_ms > 0 else math.nan


def _scaled(risk: TailRisk, scale: float) -> TailRisk:
    return TailRisk(risk.var * scale, risk.expected_shortfall * scale)


def aligned(
    axis: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], returns: FloatArray
) -> FloatArray:
    """``returns`` (at ascending times ``ts``) on ``axis``: NaN where ``ts`` lacks a time."""
    if ts.size == 0:
        return np.full(axis.size, math.nan)
    at = np.minimum(np.searchsorted(ts, axis), ts.size - 1)
    hit = ts[at] == axis
    return np.where(hit, returns[at], math.nan)
