"""The market regime model: what a label is, the features and market states it is computed from,
the fitted parameters and the config. The numba kernels that compute it are in ``numerics``,
the classification and tracking API in ``engine``.

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
two phases: the short squeeze, then the expansion), with a Huber penalty so one odd bar
cannot outvote a regime, feeds a forward filter (an HMM with sticky states), whose posterior
summed per regime gives the raw label (the most probable regime) and its confidence. The level
features also carry a per-symbol offset learnt online from the posterior-weighted residuals, which
removes the bias of a short history's baseline. The stability rule then holds the published label
until another one has been the raw label with confidence >= ``min_confidence`` for ``min_dwell``
consecutive bars. Everything is causal: bar ``j``'s label depends only on bars ``<= j``.

Label codes follow ``REGIME_ORDER`` (the synthetic market's order): 0 TRENDING, 1 RANGING,
2 VOLATILE, 3 BREAKOUT; -1 before warm-up.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import NO_LABEL, REGIME_ORDER

__all__ = ["NO_LABEL", "REGIME_ORDER"]  # defined with Regime, where the scanner reads them
N_FEATURES = 5
# The model's market states and the regime code each one reports (BREAKOUT has two phases).
STATE_REGIME: tuple[int, ...] = (0, 1, 2, 3, 3)
N_STATES = len(STATE_REGIME)

# Class-conditional means and standard deviations of the features, per state (rows: TRENDING,
# RANGING, VOLATILE, BREAKOUT squeeze, BREAKOUT expansion; columns: the features above),
# fitted on the labelled synthetic market, seeds 1-3, 200 symbols x 2,000 bars (see
# regime/evaluate.py: fit_model(seeds=(1, 2, 3)) with the default features).
_MEANS: tuple[tuple[float, ...], ...] = (
    (-0.0235, -0.2113, 0.391, 0.0055, 0.0308),
    (-0.7789, -0.4342, 0.2444, -0.9018, -0.5453),
    (1.0193, 0.0311, 0.3183, 0.9378, 0.5026),
    (-1.1892, -1.0071, 0.3193, -0.4417, -0.7335),
    (0.8211, 0.1711, 0.4593, 0.8592, 1.0624),
)
# Per-bar state transitions, counted on the same seeds' true regimes (BREAKOUT split into its
# two phases as the means are): see regime/evaluate.py: fit_transitions(seeds=(1, 2, 3)).
_TRANSITIONS: tuple[tuple[float, ...], ...] = (
    (0.986, 0.0062, 0.0043, 0.0035, 0.0),
    (0.0049, 0.9859, 0.0036, 0.0056, 0.0),
    (0.0071, 0.009, 0.982, 0.0018, 0.0),
    (0.0, 0.0, 0.0, 0.6667, 0.3333),
    (0.0275, 0.0043, 0.0139, 0.0, 0.9543),
)
_STDS: tuple[tuple[float, ...], ...] = (
    (0.5584, 0.5466, 0.2545, 0.5102, 0.3719),
    (0.5635, 0.633, 0.1861, 0.4835, 0.3755),
    (0.5659, 0.5264, 0.2258, 0.4869, 0.3756),
    (0.5649, 0.7549, 0.2338, 0.7603, 0.3717),
    (0.5492, 0.5119, 0.2656, 0.5552, 0.3825),
)


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
    min_dwell: Annotated[int, msgspec.Meta(ge=1)] = 2
    """Consecutive bars a new label must hold before it replaces the current one (2: a single
    odd bar cannot switch the regime and flip it back; it costs one bar of delay)."""
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


def transition_matrix(config: RegimeConfig) -> NDArray[np.float64]:
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


def _parametric_transition(config: RegimeConfig) -> NDArray[np.float64]:
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
