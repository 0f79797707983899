"""The anomaly kernel: advance the state rows of a batch of symbols by their new bars.

One serial numba pass over the symbols of a ``BarsUpdated`` (a heartbeat's one bar each, or a
history fetch's runs), O(1) per bar: no window is kept, only exponentially weighted,
Huber-clipped estimates of each feature's location and scale. Arrays and scalars only.

State, one row per symbol (``detector.AnomalyDetector`` owns and grows the arrays):

* ``ints`` (n, 4) int64: bars seen, the last bar's open time, the bar length (the shortest
  step between open times seen; 0: unknown yet), the current run of frozen bars.
* ``floats`` (n, 10): the last close, then (location, mean absolute deviation, updates) for
  each feature: the log return per sqrt of the bars it spans, the log of (high - low) / close,
  the log of volume.
* ``active`` (n, K) bool, ``kind_ints`` (n, K, 2) int64 (since: the bar open time or ticker
  time it became active; quiet: bars since it last triggered), ``score`` (n, K): the largest
  score of the episode.
* ``ticker_hit`` (n,) bool: a divergent ticker came since the last bar (the detector sets it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange
from numpy.typing import NDArray

from quantumtrade.scoring.jit import inline, kernel, serial_twin

# Parameter vector (AnomalyConfig.params).
P_ALPHA, P_WARMUP, P_CLEAR, P_SPIKE, P_RANGE, P_VOLUME, P_GAP, P_FROZEN, P_MISSING = range(9)

# ints columns.
I_BARS, I_LAST_MS, I_BAR_MS, I_FROZEN_RUN = range(4)
N_INTS = 4
# floats columns: the last close, then (location, mad, updates) per feature.
F_CLOSE = 0
FEAT_RETURN, FEAT_RANGE, FEAT_VOLUME = range(3)
N_FLOATS = 1 + 3 * 3
# kind_ints planes.
K_SINCE, K_QUIET = range(2)

# Kind columns (model.KINDS order).
SPIKE, RANGE, VOLUME, FROZEN, MISSING_BARS, PRICE_GAP, TICKER = range(7)
N_KINDS = 7

NORMAL_MAD = 1.2533141373155003
"""sigma / mean absolute deviation of a normal distribution."""
HUBER_C = 3.0
"""Deviations are clipped at this many scales before they update the estimates."""
TRUST_UPDATES = 8.0
"""Updates before the scale is trusted to clip with."""
# Floors of the scales (a constant volume or a flat price must not divide by zero).
FLOOR_RETURN = 1e-4
FLOOR_LOG = 0.05


@inline
def feature_scale(floats: NDArray[np.float64], r: int, feat: int, floor: float) -> float:
    """Sigma-equivalent scale of a feature (at least ``floor``)."""
    s = NORMAL_MAD * floats[r, 2 + 3 * feat]
    return s if s > floor else floor


@inline
def _update(floats: NDArray[np.float64], r: int, feat: int, x: float, alpha: float) -> None:
    """One robust EWMA step of (location, mean absolute deviation) towards ``x``."""
    c = 1 + 3 * feat
    n = floats[r, c + 2]
    if n == 0.0:
        floats[r, c] = x
        floats[r, c + 1] = 0.0
        floats[r, c + 2] = 1.0
        return
    a = 1.0 / (n + 1.0)  # a running mean until the EWMA weight is larger
    if a < alpha:
        a = alpha
    d = x - floats[r, c]
    if n >= TRUST_UPDATES:
        lim = HUBER_C * NORMAL_MAD * floats[r, c + 1]
        if d > lim:
            d = lim
        elif d < -lim:
            d = -lim
    floats[r, c] += a * d
    floats[r, c + 1] += a * (abs(d) - floats[r, c + 1])
    floats[r, c + 2] = n + 1.0


@inline
def _judge(
    j: int,
    r: int,
    k: int,
    hit: bool,
    z: float,
    ts: int,
    clear: int,
    active: NDArray[np.bool_],
    kind_ints: NDArray[np.int64],
    score: NDArray[np.float64],
    trans: NDArray[np.int32],
) -> None:
    """One bar's verdict on one kind: start or extend an episode, or count a quiet bar."""
    if hit:
        if not active[r, k]:
            active[r, k] = True
            kind_ints[r, k, K_SINCE] = ts
            score[r, k] = z
            trans[j, k] += 1
        elif z > score[r, k]:
            score[r, k] = z
        kind_ints[r, k, K_QUIET] = 0
    elif active[r, k]:
        kind_ints[r, k, K_QUIET] += 1
        if kind_ints[r, k, K_QUIET] >= clear:
            active[r, k] = False
            kind_ints[r, k, K_QUIET] = 0
            trans[j, k] += 1


@kernel
def advance(
    rows: NDArray[np.int64],
    offsets: NDArray[np.int64],
    ts: NDArray[np.int64],
    prices: NDArray[np.float64],
    params: NDArray[np.float64],
    ints: NDArray[np.int64],
    floats: NDArray[np.float64],
    active: NDArray[np.bool_],
    kind_ints: NDArray[np.int64],
    score: NDArray[np.float64],
    ticker_hit: NDArray[np.bool_],
    trans: NDArray[np.int32],
) -> int:
    """Advance row ``rows[j]`` by bars ``offsets[j]:offsets[j + 1]`` of ``ts``/``prices``
    ((bars, 5) open, high, low, close, volume) for every j (in parallel: a batch's rows are
    distinct). ``trans[j, k]`` gets the number of times kind k switched on or off; returns how
    many (j, k) switched."""
    alpha = params[P_ALPHA]
    warmup = params[P_WARMUP]
    clear = int(params[P_CLEAR])
    frozen_bars = params[P_FROZEN]
    missing_ratio = params[P_MISSING]
    for j in prange(rows.shape[0]):
        r = rows[j]
        for k in range(N_KINDS):
            trans[j, k] = 0
        for b in range(offsets[j], offsets[j + 1]):
            t = ts[b]
            o, h, lo, c, v = prices[b, 0], prices[b, 1], prices[b, 2], prices[b, 3], prices[b, 4]
            if not (c > 0.0 and o > 0.0 and lo > 0.0 and h >= lo and v >= 0.0):
                continue  # not finite or not a bar (validation keeps these out)
            n = ints[r, I_BARS]
            if n > 0 and t <= ints[r, I_LAST_MS]:
                continue  # not newer than the last bar
            ln_range = math.log((h - lo) / c) if h > lo else math.nan
            ln_volume = math.log(v) if v > 0.0 else math.nan
            if n == 0:
                floats[r, F_CLOSE] = c
                ints[r, I_LAST_MS] = t
                ints[r, I_BARS] = 1
                if h > lo:
                    _update(floats, r, FEAT_RANGE, ln_range, alpha)
                if v > 0.0:
                    _update(floats, r, FEAT_VOLUME, ln_volume, alpha)
                continue
            step = t - ints[r, I_LAST_MS]
            if ints[r, I_BAR_MS] == 0 or step < ints[r, I_BAR_MS]:
                ints[r, I_BAR_MS] = step
            spans = step / ints[r, I_BAR_MS]  # >= 1
            prev = floats[r, F_CLOSE]
            frozen = v <= 0.0 or (h == lo and c == prev)
            ints[r, I_FROZEN_RUN] = ints[r, I_FROZEN_RUN] + 1 if frozen else 0
            ret = math.log(c / prev) / math.sqrt(spans)
            gap = math.log(o / prev) / math.sqrt(max(spans - 1.0, 1.0))
            s_ret = feature_scale(floats, r, FEAT_RETURN, FLOOR_RETURN)
            # Scores against the estimates before this bar: the bar is judged by its past.
            z_spike = z_gap = z_range = z_volume = 0.0
            if floats[r, 3 + 3 * FEAT_RETURN] > 0.0:
                z_spike = abs(ret - floats[r, 1 + 3 * FEAT_RETURN]) / s_ret
                z_gap = abs(gap) / s_ret
            if h > lo and floats[r, 3 + 3 * FEAT_RANGE] > 0.0:
                sc = feature_scale(floats, r, FEAT_RANGE, FLOOR_LOG)
                z_range = (ln_range - floats[r, 1 + 3 * FEAT_RANGE]) / sc
            if v > 0.0 and floats[r, 3 + 3 * FEAT_VOLUME] > 0.0:
                sc = feature_scale(floats, r, FEAT_VOLUME, FLOOR_LOG)
                z_volume = (ln_volume - floats[r, 1 + 3 * FEAT_VOLUME]) / sc
            z_frozen = float(ints[r, I_FROZEN_RUN])
            warm = n >= warmup
            ticker = ticker_hit[r]
            ticker_hit[r] = False
            hit = warm and z_spike > params[P_SPIKE]
            _judge(j, r, SPIKE, hit, z_spike, t, clear, active, kind_ints, score, trans)
            hit = warm and z_range > params[P_RANGE]
            _judge(j, r, RANGE, hit, z_range, t, clear, active, kind_ints, score, trans)
            hit = warm and z_volume > params[P_VOLUME]
            _judge(j, r, VOLUME, hit, z_volume, t, clear, active, kind_ints, score, trans)
            hit = warm and z_frozen >= frozen_bars
            _judge(j, r, FROZEN, hit, z_frozen, t, clear, active, kind_ints, score, trans)
            hit = warm and spans > missing_ratio
            _judge(j, r, MISSING_BARS, hit, spans - 1.0, t, clear, active, kind_ints, score, trans)
            hit = warm and z_gap > params[P_GAP]
            _judge(j, r, PRICE_GAP, hit, z_gap, t, clear, active, kind_ints, score, trans)
            _judge(j, r, TICKER, ticker, 0.0, t, clear, active, kind_ints, score, trans)
            # A frozen bar says nothing about the market: it updates no estimate.
            if not frozen:
                _update(floats, r, FEAT_RETURN, ret, alpha)
                if h > lo:
                    _update(floats, r, FEAT_RANGE, ln_range, alpha)
                if v > 0.0:
                    _update(floats, r, FEAT_VOLUME, ln_volume, alpha)
            floats[r, F_CLOSE] = c
            ints[r, I_LAST_MS] = t
            ints[r, I_BARS] = n + 1
    switched = 0
    for j in range(rows.shape[0]):
        for k in range(N_KINDS):
            if trans[j, k] > 0:
                switched += 1
    return switched


advance_serial = serial_twin(advance)
