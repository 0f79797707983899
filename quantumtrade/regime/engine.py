"""Per-symbol market regime classifier over (symbols, bars) float64 arrays, full or one bar at
a time.

Each bar gets five features, each measured against the symbol's own running baseline so one set
of parameters serves a BTC and a thin altcoin alike:

0. volatility level: log of a fast EMA of the bar's log high/low range, minus a running
   quantile (the median by default) of the log range;
1. volatility change: log(fast EMA of range / slow EMA of range), expansion > 0;
2. trend persistence: Kaufman efficiency ratio of the closes over ``er_window`` bars;
3. range compression: log Bollinger width (of log closes over ``bb_period``) minus its running
   quantile;
4. volume surge: a fast EMA of log quote volume (volume · close) minus its running quantile.

The running quantiles are stochastic-approximation (Robbins-Monro) estimates: each bar moves the
estimate up by ``q·step`` or down by ``(1-q)·step``, with a step of ~1/density (3x the running
mean absolute deviation) times max(1/n, 1/history). They converge to the rolling quantile of a
window of about ``history`` bars, cost O(1) per bar and need O(1) state, which is what makes
the one-bar update (``RegimeTracker``) possible; a sorted window of ``history`` values would
cost O(history) per bar and per symbol.

A diagonal-Gaussian model of five market states (TRENDING, RANGING, VOLATILE, and BREAKOUT's
two phases: the compressed range, then the expansion), with a Huber penalty so one odd bar
cannot outvote a regime, feeds a forward filter (an HMM with sticky states), whose posterior
summed per regime gives the raw label (the most probable regime) and its confidence. The level
features also carry a per-symbol offset learnt online from the posterior-weighted residuals, which
removes the bias of a short history's baseline. The stability rule then holds the published label
until another one has been the raw label with confidence >= ``min_confidence`` for ``min_dwell``
consecutive bars. Everything is causal: bar ``j``'s label depends only on bars ``<= j``.

The whole computation for one bar is a single function (``_step``) over a per-symbol state
row; the full classification loops it over the bars, the tracker calls it once per new bar, so
both give bit-identical labels and confidences.

Label codes follow ``REGIME_ORDER`` (the synthetic market's order): 0 TRENDING, 1 RANGING,
2 VOLATILE, 3 BREAKOUT; -1 before warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

import msgspec
import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import Regime
from quantumtrade.scoring.kernels import _JIT

F = TypeVar("F", bound=Callable[..., Any])
Array = NDArray[np.float64]

REGIME_ORDER: tuple[Regime, ...] = (
    Regime.TRENDING,
    Regime.RANGING,
    Regime.VOLATILE,
    Regime.BREAKOUT,
)
NO_LABEL = -1
N_FEATURES = 5
# The model's market states and the regime code each one reports (BREAKOUT has two phases).
STATE_REGIME: tuple[int, ...] = (0, 1, 2, 3, 3)
N_STATES = len(STATE_REGIME)

# Class-conditional means and standard deviations of the features, per state (rows: TRENDING,
# RANGING, VOLATILE, BREAKOUT compression, BREAKOUT expansion; columns: the features above),
# fitted on the labelled synthetic market, seeds 1-3 (see regime/evaluate.py: fit_model).
_MEANS: tuple[tuple[float, ...], ...] = (
    (0.0339, -0.1989, 0.3931, 0.063, 0.0743),
    (-0.7231, -0.4303, 0.246, -0.8472, -0.5045),
    (1.0844, 0.036, 0.3224, 1.0005, 0.5481),
    (-1.1003, -0.7843, 0.2579, -1.0702, -0.6836),
    (0.9081, 0.2911, 0.4946, 1.021, 1.1373),
)
# Per-bar state transitions, counted on the same seeds' true regimes (BREAKOUT split into its
# two phases as the means are): see regime/evaluate.py: fit_transitions.
_TRANSITIONS: tuple[tuple[float, ...], ...] = (
    (0.9858, 0.0063, 0.0044, 0.0035, 0.0),
    (0.0049, 0.986, 0.0036, 0.0054, 0.0),
    (0.007, 0.0089, 0.9822, 0.0019, 0.0),
    (0.0, 0.0, 0.0, 0.897, 0.103),
    (0.039, 0.0061, 0.0193, 0.0, 0.9355),
)
_STDS: tuple[tuple[float, ...], ...] = (
    (0.5543, 0.5427, 0.255, 0.509, 0.3698),
    (0.5581, 0.6303, 0.187, 0.4811, 0.3722),
    (0.559, 0.5252, 0.2272, 0.4888, 0.3736),
    (0.5588, 0.7036, 0.2047, 0.618, 0.3745),
    (0.5435, 0.4989, 0.266, 0.552, 0.3802),
)

# Layout of a symbol's float state row: EMAs, running quantiles (value, mean abs deviation),
# the filter's belief per state, the learnt feature offsets, the last confidence, then a ring of
# the newest log closes (its size depends on the config: see ``_ring_size``).
_EMA_FAST, _EMA_SLOW, _EMA_VOL = 0, 1, 2
_Q_RANGE, _Q_VOLUME, _Q_WIDTH = 3, 5, 7  # each: value at k, mean abs deviation at k + 1
_BELIEF = 9
_OFFSET = _BELIEF + N_STATES
_CONF = _OFFSET + N_FEATURES
_RING = _CONF + 1
# Layout of a symbol's int state row.
_SEEN, _CURRENT, _CANDIDATE, _HELD, _FILTERED, _POS, _AGE = 0, 1, 2, 3, 4, 5, 6
_N_ISTATE = 7
# Scratch per symbol: log-likelihoods, priors, per-regime posterior, adjusted features.
_SCRATCH = 2 * N_STATES + 4 + N_FEATURES
# A quantile step is this many mean absolute deviations (~1/density at the median).
_QUANTILE_GAIN = 3.0


class RegimeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fast_span: Annotated[int, msgspec.Meta(ge=1)] = 1
    """EMA span of the fast volatility and volume measures (bars)."""
    slow_span: Annotated[int, msgspec.Meta(ge=2)] = 30
    """EMA span of the slow volatility measure that volatility change compares against."""
    er_window: Annotated[int, msgspec.Meta(ge=2)] = 10
    """Bars of the efficiency ratio."""
    bb_period: Annotated[int, msgspec.Meta(ge=2)] = 10
    """Bars of the Bollinger width (of log closes)."""
    history: Annotated[int, msgspec.Meta(ge=10)] = 1000
    """Bars that the running quantiles of each feature effectively look back over."""
    warmup: Annotated[int, msgspec.Meta(ge=10)] = 150
    """Bars before the first label: the running quantiles need this much history."""
    quantile: Annotated[float, msgspec.Meta(ge=0.05, le=0.95)] = 0.5
    """Which running quantile is a feature's baseline (0.5: the median)."""
    min_confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.72
    """A new label must reach this confidence on each bar of its dwell."""
    min_dwell: Annotated[int, msgspec.Meta(ge=1)] = 1
    """Consecutive bars a new label must hold before it replaces the current one."""
    refractory_bars: Annotated[int, msgspec.Meta(ge=0)] = 30
    """For this many bars after a label change, a new label needs ``refractory_confidence``
    instead of ``min_confidence`` (regimes last a while: a quick flip back is mostly noise)."""
    refractory_confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.93
    """The confidence a new label needs during the refractory bars."""
    transitions: tuple[tuple[float, ...], ...] = _TRANSITIONS
    """The forward filter's per-bar state transition matrix (rows: from, columns: to, states
    as ``means``), fitted on the labelled training seeds; empty: built from
    ``switch_probability``, ``breakout_expansion_probability`` and
    ``compression_entry_factor`` instead."""
    transition_scale: Annotated[float, msgspec.Meta(gt=0.0, le=10.0)] = 1.0
    """Multiplies the off-diagonal transitions (below 1: stickier states)."""
    switch_probability: Annotated[float, msgspec.Meta(gt=0.0, lt=0.5)] = 0.01
    """Per-bar probability that the market state changes (the forward filter's stickiness)."""
    breakout_expansion_probability: Annotated[float, msgspec.Meta(ge=0.0, lt=0.5)] = 0.1
    """Per-bar probability that a compressed BREAKOUT range starts expanding."""
    compression_entry_factor: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.3
    """Scales the probability of entering BREAKOUT's compressed phase."""
    offset_rate: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.015
    """Learning rate of the per-symbol offset of the level features (0: off)."""
    huber_threshold: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    """Beyond this many standard deviations a feature's penalty grows linearly, not squared."""
    weights: tuple[float, ...] = (1.2, 0.0, 0.6, 0.0, 1.2)
    """Weight of each feature in the state log-likelihood (0 drops a feature and skips
    computing it). Volatility change and the Bollinger compression are off by default: on the
    training seeds they lowered accuracy and switch precision."""
    means: tuple[tuple[float, ...], ...] = _MEANS
    """Per-state feature means (states: TRENDING, RANGING, VOLATILE, BREAKOUT x2)."""
    stds: tuple[tuple[float, ...], ...] = _STDS
    """Per-state feature standard deviations."""


class RegimeResult(msgspec.Struct, frozen=True):
    labels: NDArray[np.int8]
    """(symbols, bars) regime codes in REGIME_ORDER; -1 before warm-up."""
    confidence: Array
    """(symbols, bars) posterior of the published label, in [0, 1]; 0 before warm-up."""


def _kernel(fn: F) -> F:
    return cast(F, numba.jit(**_JIT, parallel=True)(fn))


def _helper(fn: F) -> F:
    # Inlined at numba's IR level: a call per bar that passes a dozen arrays would cost more
    # than the bar's arithmetic (argument marshalling and reference counting).
    return cast(F, numba.jit(**_JIT, inline="always")(fn))


# --- one bar of one symbol ---------------------------------------------------------------------


@_helper
def _quantile_update(sf: Array, k: int, x: float, n: int, rate: float, q: float) -> float:
    """Move the running ``q``-quantile at ``sf[k]`` (scale at ``sf[k + 1]``) toward ``x``, the
    ``n``-th value seen (0-based); returns the updated quantile."""
    if n == 0:
        sf[k] = x
        sf[k + 1] = 0.0
        return x
    m = sf[k]
    d = sf[k + 1] + rate * (abs(x - m) - sf[k + 1])
    sf[k + 1] = d
    step = _QUANTILE_GAIN * d * rate
    m = m - step * (1.0 - q) if x < m else m + step * q
    sf[k] = m
    return float(m)


@_helper
def _init_state(sf: Array, si: NDArray[np.int64]) -> None:
    sf[:] = 0.0
    sf[_BELIEF : _BELIEF + N_STATES] = 1.0 / N_STATES
    si[:] = 0
    si[_CURRENT] = NO_LABEL
    si[_CANDIDATE] = NO_LABEL


@_helper
def _features(
    c: float,
    h: float,
    lo: float,
    v: float,
    sf: Array,
    si: NDArray[np.int64],
    ip: NDArray[np.int64],
    q: float,
    need: NDArray[np.bool_],
    x: Array,
) -> bool:
    """Advance the feature state by one bar and write its features into ``x`` (NaN where not
    available yet, or not needed). Returns False, leaving the state untouched, for a bad or
    padded bar."""
    if not (c > 0.0 and h > 0.0 and lo > 0.0 and h >= lo and v >= 0.0):
        return False
    fast_span, slow_span, er_window, bb_period, history, warmup, ring = (
        ip[0],
        ip[1],
        ip[2],
        ip[3],
        ip[4],
        ip[5],
        ip[7],
    )
    seen = si[_SEEN]
    rng = max(math.log(h / lo), 1e-12)
    log_rng = math.log(rng)
    qv = math.log(max(v * c, 1e-300))
    if seen == 0:
        sf[_EMA_FAST] = rng
        sf[_EMA_SLOW] = rng
        sf[_EMA_VOL] = qv
    elif fast_span == 1:
        sf[_EMA_FAST] = rng
        sf[_EMA_VOL] = qv
    else:
        a_fast = 2.0 / (fast_span + 1.0)
        sf[_EMA_FAST] += a_fast * (rng - sf[_EMA_FAST])
        sf[_EMA_VOL] += a_fast * (qv - sf[_EMA_VOL])
    if seen > 0 and need[1]:
        sf[_EMA_SLOW] += 2.0 / (slow_span + 1.0) * (rng - sf[_EMA_SLOW])
    rate = max(1.0 / (seen + 1.0), 1.0 / history)
    base_r = _quantile_update(sf, _Q_RANGE, log_rng, seen, rate, q)
    base_v = _quantile_update(sf, _Q_VOLUME, qv, seen, rate, q)
    # The ring holds every log close twice (at p and p + ring), so the newest ``ring`` values
    # are always the contiguous slots (top - ring, top]: no modulo per element read.
    p = si[_POS]
    logc = math.log(c)
    sf[_RING + p] = logc
    sf[_RING + p + ring] = logc
    top = _RING + p + ring
    si[_POS] = p + 1 if p + 1 < ring else 0
    seen += 1
    si[_SEEN] = seen
    for k in range(N_FEATURES):
        x[k] = np.nan
    width = np.nan
    if need[3] and seen >= bb_period:
        s = 0.0
        for k in range(top - bb_period + 1, top + 1):
            s += sf[k]
        mean = s / bb_period
        s2 = 0.0
        for k in range(top - bb_period + 1, top + 1):
            d = sf[k] - mean
            s2 += d * d
        width = math.log(max(math.sqrt(s2 / bb_period), 1e-12))
        nb = seen - bb_period
        base_b = _quantile_update(sf, _Q_WIDTH, width, nb, max(1.0 / (nb + 1.0), 1.0 / history), q)
        width -= base_b
    if seen < warmup:
        return True
    x[0] = (log_rng if fast_span == 1 else math.log(sf[_EMA_FAST])) - base_r
    if need[1]:
        x[1] = math.log(sf[_EMA_FAST] / sf[_EMA_SLOW])
    if need[2] and seen > er_window:
        path = 0.0
        for k in range(top - er_window + 1, top + 1):
            path += abs(sf[k] - sf[k - 1])
        net = abs(sf[top] - sf[top - er_window])
        x[2] = net / path if path > 0.0 else 0.0
    x[3] = width
    x[4] = (qv if fast_span == 1 else sf[_EMA_VOL]) - base_v
    return True


@_helper
def _filter(
    f: Array,
    sf: Array,
    si: NDArray[np.int64],
    active: NDArray[np.int64],
    means: Array,
    inv_stds: Array,
    log_norm: Array,
    weights: Array,
    transition: Array,
    state_regime: NDArray[np.int64],
    fp: Array,
    min_dwell: int,
    refractory_bars: int,
    scratch: Array,
) -> float:
    """One forward-filter step on features ``f``, then the stability rule; returns the
    confidence of the published label (``si[_CURRENT]``).

    The level features (0, 3 and 4) also get a per-symbol offset learnt online (an EM step on
    the posterior-weighted residual): a short history's baseline is biased by whichever regimes
    it happened to hold, and the offset removes that bias as evidence accumulates.
    """
    min_confidence, offset_rate, huber, refractory_confidence = fp[1], fp[2], fp[3], fp[4]
    # scratch: [0, N_STATES) log-likelihoods, then priors, then the 4 regime posteriors, then
    # the offset-adjusted features (indices, not slices: a slice per bar costs).
    _LL, _PRIOR, _POST, _XADJ = 0, N_STATES, 2 * N_STATES, 2 * N_STATES + 4
    for k in range(N_FEATURES):
        scratch[_XADJ + k] = f[k] - sf[_OFFSET + k]
    best = -np.inf
    for s in range(N_STATES):
        ll = 0.0
        for a in range(active.shape[0]):
            k = active[a]
            x = scratch[_XADJ + k]
            if math.isnan(x):
                continue
            z = abs(x - means[s, k]) * inv_stds[s, k]
            # Huber: a single odd bar (a doji's tiny range) must not outvote a regime; the
            # penalty is z²/2 up to ``huber``, then linear (written without a branch).
            zc = min(z, huber)
            ll += weights[k] * (log_norm[s, k] - zc * (z - 0.5 * zc))
        scratch[_LL + s] = ll
        best = max(best, ll)
    total = 0.0
    for s in range(N_STATES):
        acc = 0.0
        for r in range(N_STATES):
            acc += sf[_BELIEF + r] * transition[r, s]
        d = scratch[_LL + s] - best
        # exp(-37) is below float64's epsilon relative to the best state's 1: skip the call.
        pr = acc if d == 0.0 else (acc * math.exp(d) if d > -37.0 else 0.0)
        scratch[_PRIOR + s] = pr
        total += pr
    for r in range(4):
        scratch[_POST + r] = 0.0
    inv_total = 1.0 / total if total > 0.0 else 0.0
    for s in range(N_STATES):
        b = scratch[_PRIOR + s] * inv_total if total > 0.0 else 1.0 / N_STATES
        sf[_BELIEF + s] = b
        scratch[_POST + state_regime[s]] += b
    n_seen = si[_FILTERED]
    gain = max(offset_rate, 1.0 / (n_seen + 20.0))
    for a in range(active.shape[0]):
        k = active[a]
        xk = scratch[_XADJ + k]
        if not (k == 0 or k == 3 or k == 4) or math.isnan(xk):
            continue
        residual = 0.0
        for s in range(N_STATES):
            residual += sf[_BELIEF + s] * (xk - means[s, k])
        # A running mean at first (fast to converge), then an EMA (tracks changes).
        sf[_OFFSET + k] += gain * residual
    si[_FILTERED] = n_seen + 1
    raw = 0
    for r in range(4):
        if scratch[_POST + r] > scratch[_POST + raw]:
            raw = r
    confidence_raw = scratch[_POST + raw]
    current = si[_CURRENT]
    # Right after a switch (the market's regimes last a while) a further switch needs more.
    threshold = refractory_confidence if si[_AGE] < refractory_bars else min_confidence
    si[_AGE] += 1
    if current < 0:
        current = raw
        si[_HELD] = 0
        si[_AGE] = 0
    elif raw != current and confidence_raw >= threshold:
        if raw == si[_CANDIDATE]:
            si[_HELD] += 1
        else:
            si[_CANDIDATE] = raw
            si[_HELD] = 1
        if si[_HELD] >= min_dwell:
            current = raw
            si[_HELD] = 0
            si[_CANDIDATE] = NO_LABEL
            si[_AGE] = 0
    else:
        si[_CANDIDATE] = NO_LABEL
        si[_HELD] = 0
    si[_CURRENT] = current
    conf = float(min(max(scratch[_POST + current], 0.0), 1.0))
    sf[_CONF] = conf
    return conf


@_helper
def _step(
    c: float,
    h: float,
    lo: float,
    v: float,
    sf: Array,
    si: NDArray[np.int64],
    ip: NDArray[np.int64],
    fp: Array,
    need: NDArray[np.bool_],
    active: NDArray[np.int64],
    means: Array,
    inv_stds: Array,
    log_norm: Array,
    weights: Array,
    transition: Array,
    state_regime: NDArray[np.int64],
    scratch: Array,
) -> float:
    """One bar of one symbol: features, filter, stability; returns the confidence (0 for a bar
    that carries the previous label: bad, padded or before warm-up)."""
    x = scratch[_SCRATCH:]
    if not _features(c, h, lo, v, sf, si, ip, fp[0], need, x) or math.isnan(x[0]):
        return 0.0
    return _filter(
        x, sf, si, active, means, inv_stds, log_norm, weights, transition, state_regime, fp,
        ip[6], ip[8],
        scratch,
    )  # fmt: skip


# --- kernels over symbols ----------------------------------------------------------------------


@_kernel
def classify_kernel(
    close: Array,
    high: Array,
    low: Array,
    volume: Array,
    ip: NDArray[np.int64],
    fp: Array,
    need: NDArray[np.bool_],
    active: NDArray[np.int64],
    means: Array,
    inv_stds: Array,
    log_norm: Array,
    weights: Array,
    transition: Array,
    state_regime: NDArray[np.int64],
    labels: NDArray[np.int8],
    confidence: Array,
    sf: Array,
    si: NDArray[np.int64],
    scratch: Array,
) -> None:
    """Every bar of every symbol from a fresh state; the newest ``labels.shape[1]`` bars'
    labels and confidences are written (all of them for a full classification, 1 for the
    current regime only), and each symbol's final state is left in ``sf``/``si``."""
    n_sym, n_bar = close.shape
    first_out = n_bar - labels.shape[1]
    for i in numba.prange(n_sym):
        row_f = sf[i]
        row_i = si[i]
        tmp = scratch[i]
        _init_state(row_f, row_i)
        for j in range(n_bar):
            conf = _step(
                close[i, j], high[i, j], low[i, j], volume[i, j], row_f, row_i, ip, fp, need,
                active, means, inv_stds, log_norm, weights, transition, state_regime, tmp,
            )  # fmt: skip
            if j >= first_out:
                labels[i, j - first_out] = row_i[_CURRENT]
                confidence[i, j - first_out] = conf


@_kernel
def update_kernel(
    close: Array,
    high: Array,
    low: Array,
    volume: Array,
    stepping: NDArray[np.bool_],
    ip: NDArray[np.int64],
    fp: Array,
    need: NDArray[np.bool_],
    active: NDArray[np.int64],
    means: Array,
    inv_stds: Array,
    log_norm: Array,
    weights: Array,
    transition: Array,
    state_regime: NDArray[np.int64],
    labels: NDArray[np.int8],
    confidence: Array,
    sf: Array,
    si: NDArray[np.int64],
    scratch: Array,
) -> None:
    """One new bar (``close[i]`` …) for every symbol with ``stepping[i]``: advance its state and
    write its label and confidence; the other symbols are left as they are."""
    for i in numba.prange(close.shape[0]):
        if stepping[i]:
            confidence[i] = _step(
                close[i], high[i], low[i], volume[i], sf[i], si[i], ip, fp, need, active, means,
                inv_stds, log_norm, weights, transition, state_regime, scratch[i],
            )  # fmt: skip
            labels[i] = si[i, _CURRENT]


@_kernel
def features_kernel(
    close: Array,
    high: Array,
    low: Array,
    volume: Array,
    ip: NDArray[np.int64],
    q: float,
    need: NDArray[np.bool_],
    out: Array,
) -> None:
    """Features per bar into ``out`` (symbols, bars, 5); NaN before warm-up or at a bad bar."""
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        sf = np.zeros(_RING + 2 * ip[7])
        si = np.zeros(_N_ISTATE, dtype=np.int64)
        _init_state(sf, si)
        for j in range(n_bar):
            if not _features(close[i, j], high[i, j], low[i, j], volume[i, j], sf, si, ip, q,
                             need, out[i, j]):  # fmt: skip
                out[i, j, :] = np.nan


@_kernel
def labels_kernel(
    features: Array,
    active: NDArray[np.int64],
    means: Array,
    inv_stds: Array,
    log_norm: Array,
    weights: Array,
    transition: Array,
    state_regime: NDArray[np.int64],
    fp: Array,
    min_dwell: int,
    refractory_bars: int,
    labels: NDArray[np.int8],
    confidence: Array,
) -> None:
    """The filter and the stability rule over precomputed features (see ``compute_features``)."""
    n_sym, n_bar, _ = features.shape
    for i in numba.prange(n_sym):
        sf = np.zeros(_RING + 1)
        si = np.zeros(_N_ISTATE, dtype=np.int64)
        scratch = np.zeros(_SCRATCH + N_FEATURES)
        _init_state(sf, si)
        for j in range(n_bar):
            f = features[i, j]
            conf = 0.0
            if not math.isnan(f[0]):
                conf = _filter(
                    f, sf, si, active, means, inv_stds, log_norm, weights, transition, state_regime,
                    fp, min_dwell, refractory_bars, scratch,
                )  # fmt: skip
            labels[i, j] = si[_CURRENT]
            confidence[i, j] = conf


# --- the Python layer ----------------------------------------------------------------------------


def _bars(name: str, a: NDArray[Any]) -> Array:
    if a.ndim != 2:
        raise ValueError(f"{name} must be (symbols, bars), got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)


def _columns(
    close: NDArray[Any], high: NDArray[Any], low: NDArray[Any], volume: NDArray[Any]
) -> tuple[Array, Array, Array, Array]:
    c, h, lo, v = (
        _bars("close", close),
        _bars("high", high),
        _bars("low", low),
        _bars("volume", volume),
    )
    if not (c.shape == h.shape == lo.shape == v.shape):
        raise ValueError("close, high, low and volume must have the same shape")
    return c, h, lo, v


def _run(kernel: Callable[..., None], *args: Any) -> None:
    """Call a kernel with a config's unpacked arrays (typed loosely: the kernels' own
    signatures list each array)."""
    kernel(*args)


def _ring_size(config: RegimeConfig) -> int:
    return max(config.er_window + 1, config.bb_period)


def _int_params(config: RegimeConfig) -> NDArray[np.int64]:
    return np.array(
        [
            config.fast_span,
            config.slow_span,
            config.er_window,
            config.bb_period,
            config.history,
            config.warmup,
            config.min_dwell,
            _ring_size(config),
            config.refractory_bars,
        ],
        dtype=np.int64,
    )


def _float_params(config: RegimeConfig) -> Array:
    return np.array(
        [
            config.quantile,
            config.min_confidence,
            config.offset_rate,
            config.huber_threshold,
            config.refractory_confidence,
        ],
        dtype=np.float64,
    )


def _transition(config: RegimeConfig) -> Array:
    """State transition matrix of the forward filter: ``config.transitions`` (or the
    parametric one) with its off-diagonal scaled by ``transition_scale``."""
    a = (
        np.array(config.transitions, dtype=np.float64)
        if config.transitions
        else _parametric_transition(config)
    )
    if a.shape != (N_STATES, N_STATES) or not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"transitions must be a ({N_STATES}, {N_STATES}) non-negative matrix")
    a = a * config.transition_scale
    for r in range(N_STATES):
        a[r, r] = 0.0
        a[r, r] = 1.0 - a[r].sum()
    if (np.diag(a) <= 0.0).any():
        raise ValueError("each row of transitions must leave a positive probability of staying")
    return a


def _parametric_transition(config: RegimeConfig) -> Array:
    """Sticky states, and BREAKOUT's compressed phase leading to its expansion."""
    n = N_STATES
    p = config.switch_probability
    a = np.full((n, n), p / (n - 1))
    np.fill_diagonal(a, 1.0 - p)
    # A compressed range is hard to tell from RANGING bar by bar, so entering it is made rarer.
    a[:, 3] *= config.compression_entry_factor
    a[3, 3] = 0.0
    a[3, 4] = 0.0
    a[3, 3] = 1.0 - a[3].sum() - config.breakout_expansion_probability
    a[3, 4] = config.breakout_expansion_probability
    for r in (0, 1, 2, 4):
        a[r, r] = 0.0
        a[r, r] = 1.0 - a[r].sum()
    return a


class _Model(msgspec.Struct, frozen=True):
    """A config's arrays, as the kernels take them."""

    ip: NDArray[np.int64]
    fp: Array
    need: NDArray[np.bool_]
    active: NDArray[np.int64]
    means: Array
    inv_stds: Array
    log_norm: Array
    weights: Array
    transition: Array
    state_regime: NDArray[np.int64]

    def args(self) -> tuple[Any, ...]:
        return (
            self.ip,
            self.fp,
            self.need,
            self.active,
            self.means,
            self.inv_stds,
            self.log_norm,
            self.weights,
            self.transition,
            self.state_regime,
        )


def _model(config: RegimeConfig) -> _Model:
    means = np.asarray(config.means, dtype=np.float64)
    stds = np.asarray(config.stds, dtype=np.float64)
    weights = np.asarray(config.weights, dtype=np.float64)
    shape = (N_STATES, N_FEATURES)
    if means.shape != shape or stds.shape != shape or weights.shape != (N_FEATURES,):
        raise ValueError(f"means and stds must be {shape}, weights ({N_FEATURES},)")
    if not (stds > 0).all():
        raise ValueError("stds must be positive")
    return _Model(
        ip=_int_params(config),
        fp=_float_params(config),
        need=np.ascontiguousarray(weights != 0.0),
        active=np.flatnonzero(weights != 0.0).astype(np.int64),
        means=means,
        inv_stds=1.0 / stds,
        log_norm=-np.log(stds),
        weights=weights,
        transition=_transition(config),
        state_regime=np.asarray(STATE_REGIME, dtype=np.int64),
    )


def _new_state(n: int, config: RegimeConfig) -> tuple[Array, NDArray[np.int64], Array]:
    return (
        np.zeros((n, _RING + 2 * _ring_size(config))),
        np.zeros((n, _N_ISTATE), dtype=np.int64),
        np.zeros((n, _SCRATCH + N_FEATURES)),
    )


def compute_features(
    close: NDArray[Any],
    high: NDArray[Any],
    low: NDArray[Any],
    volume: NDArray[Any],
    config: RegimeConfig,
) -> Array:
    """The (symbols, bars, 5) feature array (all five, whatever the weights); NaN before
    warm-up."""
    c, h, lo, v = _columns(close, high, low, volume)
    out = np.empty((c.shape[0], c.shape[1], N_FEATURES))
    need = np.ones(N_FEATURES, dtype=np.bool_)
    features_kernel(c, h, lo, v, _int_params(config), config.quantile, need, out)
    return out


def label_features(features: Array, config: RegimeConfig) -> RegimeResult:
    """Labels and confidence from precomputed features (see ``compute_features``)."""
    m = _model(config)
    n_sym, n_bar, _ = features.shape
    labels = np.empty((n_sym, n_bar), dtype=np.int8)
    confidence = np.empty((n_sym, n_bar))
    labels_kernel(
        np.ascontiguousarray(features, dtype=np.float64),
        m.active,
        m.means,
        m.inv_stds,
        m.log_norm,
        m.weights,
        m.transition,
        m.state_regime,
        m.fp,
        config.min_dwell,
        config.refractory_bars,
        labels,
        confidence,
    )
    return RegimeResult(labels=labels, confidence=confidence)


def classify(
    close: NDArray[Any],
    high: NDArray[Any],
    low: NDArray[Any],
    volume: NDArray[Any],
    config: RegimeConfig | None = None,
) -> RegimeResult:
    """Regime label and confidence for every bar of every symbol."""
    cfg = config if config is not None else RegimeConfig()
    c, h, lo, v = _columns(close, high, low, volume)
    labels = np.empty(c.shape, dtype=np.int8)
    confidence = np.empty(c.shape)
    sf, si, scratch = _new_state(c.shape[0], cfg)
    _run(classify_kernel, c, h, lo, v, *_model(cfg).args(), labels, confidence, sf, si, scratch)
    return RegimeResult(labels=labels, confidence=confidence)


class RegimeTracker:
    """Each symbol's regime kept up to date one bar at a time, in O(symbols) per bar.

    ``reset`` classifies a window (like ``classify``) and keeps every symbol's final state;
    ``update`` then takes one new bar per symbol, shaped (symbols,), and returns the labels and
    confidences of that bar, equal to what ``classify`` over the whole series would give for it.
    """

    def __init__(self, config: RegimeConfig | None = None, symbols: int = 0) -> None:
        self.config = config if config is not None else RegimeConfig()
        self._model = _model(self.config)
        self._args = self._model.args()
        self._sf, self._si, self._scratch = _new_state(symbols, self.config)
        self.labels = np.full(symbols, NO_LABEL, dtype=np.int8)
        """Each symbol's current label (-1: none yet)."""
        self.confidence = np.zeros(symbols)
        """Each symbol's confidence on its newest bar (0 when that bar carried the label)."""

    @property
    def symbols(self) -> int:
        return int(self.labels.shape[0])

    def resize(self, symbols: int) -> None:
        """Grow to ``symbols`` rows; the new rows start from an empty history."""
        n = self.symbols
        if symbols < n:
            raise ValueError(f"cannot shrink a tracker from {n} to {symbols} symbols")
        if symbols == n:
            return
        sf, si, scratch = _new_state(symbols, self.config)
        sf[:n], si[:n] = self._sf, self._si
        si[n:, _CURRENT] = NO_LABEL
        si[n:, _CANDIDATE] = NO_LABEL
        self._sf, self._si, self._scratch = sf, si, scratch
        self.labels = np.concatenate([self.labels, np.full(symbols - n, NO_LABEL, np.int8)])
        self.confidence = np.concatenate([self.confidence, np.zeros(symbols - n)])

    def reset(
        self,
        close: NDArray[Any],
        high: NDArray[Any],
        low: NDArray[Any],
        volume: NDArray[Any],
        rows: NDArray[np.int64] | None = None,
    ) -> None:
        """Classify (symbols, bars) windows from scratch and keep the state: of every symbol
        (``rows`` None; the tracker takes the arrays' symbol count) or of the given rows only,
        whose windows the arrays hold in that order."""
        c, h, lo, v = _columns(close, high, low, volume)
        n = c.shape[0]
        if rows is None:
            self._sf, self._si, self._scratch = _new_state(n, self.config)
            self.labels = np.full(n, NO_LABEL, dtype=np.int8)
            self.confidence = np.zeros(n)
        idx = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        if idx.shape != (n,) or (n and (idx.min() < 0 or idx.max() >= self.symbols)):
            raise ValueError("rows must name one existing tracker row per window")
        labels = np.empty((n, 1), dtype=np.int8)
        confidence = np.empty((n, 1))
        sf, si, scratch = _new_state(n, self.config)
        if c.shape[1]:
            _run(classify_kernel, c, h, lo, v, *self._args, labels, confidence, sf, si, scratch)
        else:
            labels[:] = NO_LABEL
            confidence[:] = 0.0
        self._sf[idx], self._si[idx] = sf, si
        self.labels[idx] = labels[:, 0]
        self.confidence[idx] = confidence[:, 0]

    def update(
        self,
        close: NDArray[Any],
        high: NDArray[Any],
        low: NDArray[Any],
        volume: NDArray[Any],
        active: NDArray[np.bool_] | None = None,
    ) -> tuple[NDArray[np.int8], Array]:
        """One new bar per symbol (arrays shaped (symbols,)); symbols with ``active`` False (if
        given) have no new bar and keep their state. Returns (labels, confidence), the
        tracker's own arrays (copy them to keep them)."""
        n = self.symbols
        cols = []
        for name, a in (("close", close), ("high", high), ("low", low), ("volume", volume)):
            arr = np.ascontiguousarray(a, dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"{name} must be shaped ({n},), got {arr.shape}")
            cols.append(arr)
        act = (
            np.ones(n, dtype=np.bool_)
            if active is None
            else np.ascontiguousarray(active, dtype=np.bool_)
        )
        if act.shape != (n,):
            raise ValueError(f"active must be shaped ({n},), got {act.shape}")
        _run(
            update_kernel,
            *cols, act, *self._args, self.labels, self.confidence, self._sf, self._si,
            self._scratch,
        )  # fmt: skip
        return self.labels, self.confidence


def market_regime(
    labels_last: NDArray[Any], confidence_last: NDArray[Any]
) -> tuple[Regime | None, float]:
    """Market-wide regime: the confidence-weighted mode of the symbols' current labels.

    The confidence is the winner's share of the total weight; (None, 0.0) when no symbol has a
    label yet.
    """
    labels = np.asarray(labels_last).ravel()
    conf = np.asarray(confidence_last, dtype=np.float64).ravel()
    if labels.shape != conf.shape:
        raise ValueError("labels_last and confidence_last must have the same length")
    valid = (labels >= 0) & (labels < len(REGIME_ORDER)) & np.isfinite(conf)
    weights = np.bincount(
        labels[valid].astype(np.int64), weights=np.clip(conf[valid], 0.0, 1.0), minlength=4
    )
    total = float(weights.sum())
    if total <= 0.0:
        return None, 0.0
    winner = int(np.argmax(weights))
    return REGIME_ORDER[winner], float(weights[winner]) / total


def warm_up() -> None:
    """Compile the kernels on a tiny input."""
    rng = np.random.default_rng(0)
    close = np.exp(np.cumsum(0.01 * rng.standard_normal((1, 40)), axis=1))
    cfg = RegimeConfig(warmup=20, history=20)
    classify(close, close * 1.01, close * 0.99, np.ones_like(close), cfg)
    tracker = RegimeTracker(cfg)
    tracker.reset(close, close * 1.01, close * 0.99, np.ones_like(close))
    one = close[:, -1]
    tracker.update(one, one * 1.01, one * 0.99, np.ones_like(one))
