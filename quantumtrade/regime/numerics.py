"""The regime model's numerics: numba kernels that compute ``model``'s features, forward filter
and stability rule for blocks of symbols in lock-step, and the vectorisable math they need.

The whole computation for one bar is a single function (``_block_step``) over a block of
``LANES`` symbols in lock-step, its state laid out [row][lane]; the full classification loops it
over the bars, the tracker calls it once per new bar, so both give bit-identical labels and
confidences. Each phase of the step is a branch-free loop over the lanes (selects, not ifs: a
bad bar or a lane still in warm-up just keeps its old values), so LLVM vectorises it across
symbols. numba has no vector math library here, so log and exp are our own polynomials (plain
arithmetic and bit moves, ~1e-15 and ~2e-7 relative), and the forward filter and its stability
rule run in float32 (twice the lanes per vector; the features, which need float64 for prices
and their logs, stay float64). A block skips the filter while no lane is past its warm-up. A
full classification reads each bar of a block's symbols down its (symbols, bars) inputs, 64
strided rows, and prefetches them a few bars ahead itself (see ``classify_kernel``).

The kernels take a model's config as one flat float vector (``kernel_params``) and keep each
block's state in one float64 array (``new_state``, ``block_size``; ``place_lanes`` moves
symbols between states): no code outside this module reads either layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from numpy.typing import NDArray

from quantumtrade.regime.model import (
    N_FEATURES,
    N_STATES,
    NO_LABEL,
    RegimeConfig,
    transition_matrix,
)
from quantumtrade.scoring.jit import fma, fma32, helper, inline, kernel, prefetch, serial_twin

Array = NDArray[np.float64]

# Symbols per block: every kernel runs blocks of ``LANES`` symbols in lock-step, one bar at a
# time, over a block array laid out [row][lane] (row: a state variable or a per-bar temporary).
# Each per-bar phase is a loop over the lanes of a block with compile-time row offsets,
# straight-line and branch-free (selects), so LLVM vectorises it across symbols.
LANES = 64
# A block is one float64 array: the feature rows (float64: prices and their logs need it), the
# ring of log closes, then the filter rows as float32 (the forward filter and its rule need
# ~1e-7 relative, and float32 lanes are twice as many per vector).
# Float64 state rows (kept from bar to bar): bars seen, EMAs, running quantiles (value, mean abs
# deviation).
_SEEN, _EMA_FAST, _EMA_SLOW, _EMA_VOL = 0, 1, 2, 3
_Q_RANGE, _Q_VOLUME, _Q_WIDTH = 4, 6, 8  # each: value at k, mean abs deviation at k + 1
# Float64 per-bar rows: the bar's inputs, masks, logs, features, an accumulator.
_IN_C = 10
_IN_H, _IN_L, _IN_V = _IN_C + 1, _IN_C + 2, _IN_C + 3
_VALID = _IN_C + 4  # 1.0: a good bar (the state advances)
_GO = _VALID + 1  # 1.0: a good bar past warm-up (the filter runs)
_LOGC = _GO + 1
_RANGE, _LOG_RANGE, _LOG_QV = _LOGC + 1, _LOGC + 2, _LOGC + 3
_X = _LOGC + 4
_ACC = _X + N_FEATURES
# The ring's head (the newest log close's slot, the same for every lane of a block) and each
# lane's running efficiency-ratio path. Then the ring: ``_ring_size(config)`` rows of log closes
# (slot ``(head + k) % size`` holds the k-th newest), then as many rows of the absolute steps
# between each slot and the next older one.
_HEAD, _PATH = _ACC + 1, _ACC + 2
_RING = _ACC + 3
# Float32 rows, after the ring: the filter's belief per state, the learnt feature offsets, the
# stability rule's counters (floats: exact below 2**24, one vector type), then per-bar rows.
_V_BELIEF = 0
_V_OFFSET = _V_BELIEF + N_STATES
_V_FILTERED = _V_OFFSET + N_FEATURES
_V_CURRENT, _V_CANDIDATE, _V_HELD, _V_AGE = (_V_FILTERED + 1, _V_FILTERED + 2, _V_FILTERED + 3,
                                             _V_FILTERED + 4)  # fmt: skip
_V_GO = _V_AGE + 1
_V_XADJ = _V_GO + 1
_V_LL = _V_XADJ + N_FEATURES
_V_GAIN = _V_LL + N_STATES
_V_OUT_LABEL, _V_OUT_CONF = _V_GAIN + 1, _V_GAIN + 2
_V_ROWS = _V_OUT_CONF + 2  # even: the float32 rows fill whole float64 slots

# The flat float parameter vector (``kernel_params``), read once per block and bar.
(P_FAST1, P_A_FAST, P_A_SLOW, P_ER, P_BB, P_INV_HISTORY, P_WARMUP, P_RING, P_Q, P_MIN_CONF,
 P_OFFSET_RATE, P_HUBER, P_REFRACTORY_CONF, P_MIN_DWELL, P_REFRACTORY_BARS) = range(15)  # fmt: skip
P_NEED = 15
P_WEIGHT = P_NEED + N_FEATURES
P_MEAN = P_WEIGHT + N_FEATURES  # [state * N_FEATURES + feature]
P_INV_STD = P_MEAN + N_STATES * N_FEATURES
P_LOG_NORM = P_INV_STD + N_STATES * N_FEATURES
P_TRANSITION = P_LOG_NORM + N_STATES * N_FEATURES  # [from * N_STATES + to]
N_PARAMS = P_TRANSITION + N_STATES * N_STATES
# A quantile step is this many mean absolute deviations (~1/density at the median).
_QUANTILE_GAIN = 3.0
# exp(d) for d <= this is below float64's epsilon relative to the best state's 1: taken as 0.
_EXP_CUTOFF = -37.0
# How far ahead (bars) a full classification prefetches its inputs: 4 cache lines of a row.
_PREFETCH_BARS = 32


# --- vectorisable log and exp ------------------------------------------------------------------
# numba has no vector math library here: math.log/math.exp are scalar libm calls, which keep a
# lane loop scalar. These are plain arithmetic and bit moves, so the loops vectorise; both the
# full and the incremental path use them, so their results stay bit-identical.


@intrinsic
def _bits_of_intrinsic(typingctx: Any, x: Any) -> Any:
    """The IEEE-754 bits of a float64, as an int64 (a bitcast: no conversion)."""
    sig = types.int64(types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


_bits_of = cast(Callable[[float], int], _bits_of_intrinsic)


@intrinsic
def _float_of_intrinsic(typingctx: Any, b: Any) -> Any:
    """The float64 whose IEEE-754 bits are the int64 ``b``."""
    sig = types.float64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_float_of = cast(Callable[[int], float], _float_of_intrinsic)


_TWO52 = 4503599627370496.0  # 2**52: a float below it, plus it, has its integer in the low bits
_TWO52_BITS = 0x4330000000000000
_MANTISSA = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000
_SQRT2 = 1.4142135623730951
_LN2_HI = 6.93147180369123816490e-01  # ln 2 with its low bits clear: e * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10


@inline
def _log(x: float) -> float:
    """Natural log of a positive, finite, normal ``x`` (relative error ~1e-15).

    x = 2**e · m with m in [sqrt(1/2), sqrt(2)); log m = 2·atanh(s), s = (m-1)/(m+1), |s| <=
    0.172, by its series to s**15 (Horner, fused multiply-adds). Other inputs give a finite
    meaningless value (callers mask them)."""
    b = _bits_of(x)
    # The exponent field as a float without an int-to-float conversion (not vectorisable on
    # AVX2): put it in the low bits of 2**52 and subtract 2**52.
    e = _float_of((b >> 52) | _TWO52_BITS) - (_TWO52 + 1023.0)
    m = _float_of((b & _MANTISSA) | _ONE_BITS)
    big = m > _SQRT2
    m = 0.5 * m if big else m
    e = e + 1.0 if big else e
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    r = fma(z, 2.0 / 15.0, 2.0 / 13.0)
    r = fma(z, r, 2.0 / 11.0)
    r = fma(z, r, 2.0 / 9.0)
    r = fma(z, r, 2.0 / 7.0)
    r = fma(z, r, 2.0 / 5.0)
    r = fma(z, r, 2.0 / 3.0)
    return fma(e, _LN2_HI, fma(s * z, r, fma(e, _LN2_LO, 2.0 * s)))


# --- one bar of one block of symbols -----------------------------------------------------------


@helper
def _init_block(w: Array, prm: Array) -> None:
    """A block with no history: every lane's state as before its first bar."""
    w[:] = 0.0
    v = _filter_rows(w, prm)
    for s in range(N_STATES):
        for lane in range(LANES):
            v[(_V_BELIEF + s) * LANES + lane] = _F_UNIFORM
    for lane in range(LANES):
        v[_V_CURRENT * LANES + lane] = NO_LABEL
        v[_V_CANDIDATE * LANES + lane] = NO_LABEL


@inline
def _quantile(
    m: float, d: float, x: float, rate: float, q: float, first: bool
) -> tuple[float, float]:
    """The running ``q``-quantile ``m`` (scale ``d``) moved toward ``x``; the first value
    starts it. Returns the new (m, d)."""
    d2 = d + rate * (abs(x - m) - d)
    step = _QUANTILE_GAIN * d2 * rate
    m2 = m - step * (1.0 - q) if x < m else m + step * q
    return (x if first else m2), (0.0 if first else d2)


@inline
def _feature_lanes(w: Array, prm: Array, fast1: bool) -> None:
    """Validity, logs, EMAs and the range and volume baselines for every lane; writes the
    volatility level (0) and volume surge (4) features, NaN in the others. ``fast1``
    (``fast_span == 1``, a literal at each call so the loop is specialised) skips the EMA."""
    a_fast, a_slow = prm[P_A_FAST], prm[P_A_SLOW]
    need_slow = prm[P_NEED + 1] != 0.0
    inv_history, warmup, q = prm[P_INV_HISTORY], prm[P_WARMUP], prm[P_Q]
    # The logs first, in short loops of independent work: one long loop body with chained
    # logs is latency-bound (too few iterations in flight to hide it).
    for lane in range(LANES):
        c = w[_IN_C * LANES + lane]
        h = w[_IN_H * LANES + lane]
        lo = w[_IN_L * LANES + lane]
        v = w[_IN_V * LANES + lane]
        w[_RANGE * LANES + lane] = max(_log(h / lo), 1e-12)
        w[_LOG_QV * LANES + lane] = _log(max(v * c, 1e-300))
        w[_LOGC * LANES + lane] = _log(c)
    for lane in range(LANES):
        w[_LOG_RANGE * LANES + lane] = _log(w[_RANGE * LANES + lane])
    for lane in range(LANES):
        c = w[_IN_C * LANES + lane]
        h = w[_IN_H * LANES + lane]
        lo = w[_IN_L * LANES + lane]
        v = w[_IN_V * LANES + lane]
        valid = (c > 0.0) & (h > 0.0) & (lo > 0.0) & (h >= lo) & (v >= 0.0)
        seen = w[_SEEN * LANES + lane]
        first = seen == 0.0
        rng = w[_RANGE * LANES + lane]
        log_rng = w[_LOG_RANGE * LANES + lane]
        qv = w[_LOG_QV * LANES + lane]
        ef = w[_EMA_FAST * LANES + lane]
        ev = w[_EMA_VOL * LANES + lane]
        es = w[_EMA_SLOW * LANES + lane]
        if fast1:
            ef2, ev2 = rng, qv
        else:
            ef2 = rng if first else ef + a_fast * (rng - ef)
            ev2 = qv if first else ev + a_fast * (qv - ev)
        es2 = rng if first else (es + a_slow * (rng - es) if need_slow else es)
        rate = max(1.0 / (seen + 1.0), inv_history)
        mr, dr = _quantile(
            w[_Q_RANGE * LANES + lane], w[(_Q_RANGE + 1) * LANES + lane], log_rng, rate, q, first
        )
        mv, dv = _quantile(
            w[_Q_VOLUME * LANES + lane], w[(_Q_VOLUME + 1) * LANES + lane], qv, rate, q, first
        )
        seen2 = seen + 1.0
        w[_EMA_FAST * LANES + lane] = ef2 if valid else ef
        w[_EMA_VOL * LANES + lane] = ev2 if valid else ev
        w[_EMA_SLOW * LANES + lane] = es2 if valid else es
        w[_Q_RANGE * LANES + lane] = mr if valid else w[_Q_RANGE * LANES + lane]
        w[(_Q_RANGE + 1) * LANES + lane] = dr if valid else w[(_Q_RANGE + 1) * LANES + lane]
        w[_Q_VOLUME * LANES + lane] = mv if valid else w[_Q_VOLUME * LANES + lane]
        w[(_Q_VOLUME + 1) * LANES + lane] = dv if valid else w[(_Q_VOLUME + 1) * LANES + lane]
        w[_SEEN * LANES + lane] = seen2 if valid else seen
        w[_VALID * LANES + lane] = 1.0 if valid else 0.0
        w[_GO * LANES + lane] = 1.0 if (valid & (seen2 >= warmup)) else 0.0
        if fast1:
            w[_X * LANES + lane] = log_rng - mr
            w[(_X + 4) * LANES + lane] = qv - mv
        else:
            w[_X * LANES + lane] = _log(ef2) - mr
            w[(_X + 4) * LANES + lane] = ev2 - mv
        w[(_X + 1) * LANES + lane] = np.nan
        w[(_X + 2) * LANES + lane] = np.nan
        w[(_X + 3) * LANES + lane] = np.nan


@inline
def _row(w: Array, r: int) -> Array:
    """Row ``r`` of a block array, as a view: a lane loop indexing a view by ``lane`` alone has
    provably non-negative indices (no wrap-around selects), so it vectorises even when ``r``
    is only known at run time."""
    return w[r * LANES : (r + 1) * LANES]


@helper
def _ring_lanes(w: Array, prm: Array) -> None:
    """Push each good bar's log close onto its lane's ring and update the efficiency ratio's
    path (a running sum of the newest ``er_window`` absolute steps); the trend feature (2) if
    needed. The head moves for the whole block, so a push is one store per lane; a lane with a
    bad bar (and a history) gets its ring rotated back, lane by lane (rare: a gap in a series).
    """
    er = int(prm[P_ER])
    size = int(prm[P_RING])
    diff = _RING + size
    head = int(w[_HEAD * LANES])
    new_head = head - 1 if head > 0 else size - 1
    leaving = (new_head + er) % size  # the step that leaves the window; the close er bars back
    slot, newest_before = _row(w, _RING + new_head), _row(w, _RING + head)
    step_slot, step_leaving = _row(w, diff + new_head), _row(w, diff + leaving)
    far = _row(w, _RING + leaving)
    valid, logc, seen = _row(w, _VALID), _row(w, _LOGC), _row(w, _SEEN)
    path, x, heads = _row(w, _PATH), _row(w, _X + 2), _row(w, _HEAD)
    need = prm[P_NEED + 2] != 0.0
    stuck = 0
    for lane in range(LANES):
        ok = valid[lane] != 0.0
        c = logc[lane]
        step = abs(c - newest_before[lane])
        old_c, old_step, old_path = slot[lane], step_slot[lane], path[lane]
        total = old_path + step - step_leaving[lane]
        slot[lane] = c if ok else old_c
        step_slot[lane] = step if ok else old_step
        path[lane] = total if ok else old_path
        net = abs(c - far[lane])
        ratio = net / total if total > 0.0 else 0.0
        x[lane] = ratio if (need & (seen[lane] > er)) else np.nan
        heads[lane] = new_head
        stuck += 0 if (ok | (seen[lane] == 0.0)) else 1
    if stuck:
        for lane in range(LANES):
            if valid[lane] == 0.0 and seen[lane] != 0.0:
                _rotate_back(w, _RING, size, new_head, lane)
                _rotate_back(w, diff, size, new_head, lane)


@inline
def _rotate_back(w: Array, base: int, size: int, head: int, lane: int) -> None:
    """Keep one lane's ring as it was although the block's head moved to ``head``: slot
    ``head + k`` takes slot ``head + k + 1`` (all modulo ``size``)."""
    first = w[(base + head) * LANES + lane]
    for k in range(size - 1):
        w[(base + (head + k) % size) * LANES + lane] = w[
            (base + (head + k + 1) % size) * LANES + lane
        ]
    w[(base + (head + size - 1) % size) * LANES + lane] = first


@helper
def _width_lanes(w: Array, prm: Array) -> None:
    """The Bollinger width of the newest ``bb_period`` log closes minus its running quantile
    (feature 3), once a lane has that many bars."""
    bb = int(prm[P_BB])
    inv_history, q = prm[P_INV_HISTORY], prm[P_Q]
    size, head = int(prm[P_RING]), int(w[_HEAD * LANES])
    acc, mean, x = _row(w, _ACC), _row(w, _LOG_RANGE), _row(w, _X + 3)  # _LOG_RANGE: free now
    for lane in range(LANES):
        acc[lane] = 0.0
    for k in range(bb - 1, -1, -1):
        ring = _row(w, _RING + (head + k) % size)
        for lane in range(LANES):
            acc[lane] += ring[lane]
    for lane in range(LANES):
        mean[lane] = acc[lane] / bb
        acc[lane] = 0.0
    for k in range(bb - 1, -1, -1):
        ring = _row(w, _RING + (head + k) % size)
        for lane in range(LANES):
            d = ring[lane] - mean[lane]
            acc[lane] += d * d
    for lane in range(LANES):
        width = _log(max(math.sqrt(acc[lane] / bb), 1e-12))
        seen = w[_SEEN * LANES + lane]
        nb = seen - bb  # widths seen before this one
        m0 = w[_Q_WIDTH * LANES + lane]
        d0 = w[(_Q_WIDTH + 1) * LANES + lane]
        m, d = _quantile(m0, d0, width, max(1.0 / (nb + 1.0), inv_history), q, nb == 0.0)
        ok = (w[_VALID * LANES + lane] != 0.0) & (seen >= bb)
        w[_Q_WIDTH * LANES + lane] = m if ok else m0
        w[(_Q_WIDTH + 1) * LANES + lane] = d if ok else d0
        x[lane] = width - m if ok else np.nan


@helper
def _change_lanes(w: Array) -> None:
    """Volatility change (feature 1): log(fast EMA / slow EMA of the range)."""
    for lane in range(LANES):
        w[(_X + 1) * LANES + lane] = _log(w[_EMA_FAST * LANES + lane] / w[_EMA_SLOW * LANES + lane])


@helper
def _block_features(w: Array, prm: Array) -> None:
    """One bar's features for every lane of a block (inputs in the ``_IN_*`` rows), the
    feature state advanced where the bar is good; features in the ``_X`` rows."""
    if prm[P_FAST1] != 0.0:
        _feature_lanes(w, prm, True)
    else:
        _feature_lanes(w, prm, False)
    _ring_lanes(w, prm)
    if prm[P_NEED + 3] != 0.0:
        _width_lanes(w, prm)
    if prm[P_NEED + 1] != 0.0:
        _change_lanes(w)


# --- the float32 forward filter ------------------------------------------------------------------
# Every constant of these loops is a float32 (a float64 literal would promote the arithmetic).

_F0, _F1, _F2, _F3 = np.float32(0.0), np.float32(1.0), np.float32(2.0), np.float32(3.0)
_F_HALF, _F_MINUS1, _F_20 = np.float32(0.5), np.float32(-1.0), np.float32(20.0)
_F_UNIFORM = np.float32(1.0 / N_STATES)
_F_EXP_CUTOFF = np.float32(_EXP_CUTOFF)
_F_LOG2E = np.float32(1.4426950408889634)
_F_ROUND = np.float32(12582912.0)  # 1.5 * 2**23: adding it rounds a float32 to an integer
_F_LN2_HI = np.float32(0.693359375)  # ln 2 = _F_LN2_HI + _F_LN2_LO (k * _F_LN2_HI is exact)
_F_LN2_LO = np.float32(-2.12194440e-4)
_F_C2, _F_C3, _F_C4 = np.float32(1.0 / 2.0), np.float32(1.0 / 6.0), np.float32(1.0 / 24.0)
_F_C5, _F_C6, _F_C7 = np.float32(1.0 / 120.0), np.float32(1.0 / 720.0), np.float32(1.0 / 5040.0)


@intrinsic
def _pow2_of_rounded_intrinsic(typingctx: Any, t: Any) -> Any:
    """2**k as a float32, for ``t = k + _F_ROUND`` (k an integer in [-126, 127]): k sits in
    the low bits of t's mantissa; shifted into the exponent field and biased, it is 2**k."""
    sig = types.float32(types.float32)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        scaled = builder.add(builder.shl(bits, ir.Constant(i32, 23)), ir.Constant(i32, 0x3F800000))
        return builder.bitcast(scaled, ir.FloatType())

    return sig, codegen


_pow2_of_rounded = cast(Callable[[np.float32], np.float32], _pow2_of_rounded_intrinsic)


@inline
def _exp32(d: np.float32) -> np.float32:
    """exp(d) in float32 for ``_EXP_CUTOFF`` <= d <= 0 (relative error ~2e-7): d = k·ln 2 + r,
    |r| <= ln 2 / 2, exp(r) by its Taylor series to degree 7; exp(0) is exactly 1."""
    t = fma32(d, _F_LOG2E, _F_ROUND)
    k = t - _F_ROUND
    r = fma32(-k, _F_LN2_HI, d)
    r = fma32(-k, _F_LN2_LO, r)
    p = fma32(r, _F_C7, _F_C6)
    p = fma32(r, p, _F_C5)
    p = fma32(r, p, _F_C4)
    p = fma32(r, p, _F_C3)
    p = fma32(r, p, _F_C2)
    p = fma32(r, p, _F1)
    p = fma32(r, p, _F1)
    return p * _pow2_of_rounded(t)


@inline
def _filter_rows(w: Array, prm: Array) -> NDArray[np.float32]:
    """A block's float32 filter rows: a view of its tail, after the ring."""
    return w[(_RING + 2 * int(prm[P_RING])) * LANES :].view(np.float32)


@inline
def _block_len(prm: Array) -> int:
    """Float64 slots of a block: the float64 rows, the ring, then the float32 rows."""
    return (_RING + 2 * int(prm[P_RING])) * LANES + _V_ROWS * LANES // 2


@inline
def _huber_term(
    x: np.float32, mu: np.float32, inv_std: np.float32, log_norm: np.float32,
    weight: np.float32, huber: np.float32,
) -> np.float32:  # fmt: skip
    """A feature's weighted log-density under one state. Huber: a single odd bar (a doji's
    tiny range) must not outvote a regime; the penalty is z²/2 up to ``huber``, then linear."""
    z = abs(x - mu) * inv_std
    zc = min(z, huber)
    return weight * fma32(-zc, fma32(-_F_HALF, zc, z), log_norm)


@inline
def _likelihood_lanes(w: Array, v: NDArray[np.float32], prm: Array, k: int) -> None:
    """Add feature ``k``'s weighted Huber log-density, per state, to the ``_V_LL`` rows, using
    the offset-adjusted feature (also kept in ``_V_XADJ`` for the offset update)."""
    huber, weight = np.float32(prm[P_HUBER]), np.float32(prm[P_WEIGHT + k])
    mu, inv, norm = P_MEAN + k, P_INV_STD + k, P_LOG_NORM + k
    m0, m1, m2 = np.float32(prm[mu]), np.float32(prm[mu + 5]), np.float32(prm[mu + 10])
    m3, m4 = np.float32(prm[mu + 15]), np.float32(prm[mu + 20])
    i0, i1, i2 = np.float32(prm[inv]), np.float32(prm[inv + 5]), np.float32(prm[inv + 10])
    i3, i4 = np.float32(prm[inv + 15]), np.float32(prm[inv + 20])
    n0, n1, n2 = np.float32(prm[norm]), np.float32(prm[norm + 5]), np.float32(prm[norm + 10])
    n3, n4 = np.float32(prm[norm + 15]), np.float32(prm[norm + 20])
    # The feature to float32 in a loop of its own: mixed with float64 loads, the whole loop
    # would run at float64's 8 lanes per vector instead of 16.
    for lane in range(LANES):
        v[(_V_XADJ + k) * LANES + lane] = np.float32(w[(_X + k) * LANES + lane])
    for lane in range(LANES):
        x = v[(_V_XADJ + k) * LANES + lane] - v[(_V_OFFSET + k) * LANES + lane]
        v[(_V_XADJ + k) * LANES + lane] = x
        nan = x != x
        t0 = _huber_term(x, m0, i0, n0, weight, huber)
        t1 = _huber_term(x, m1, i1, n1, weight, huber)
        t2 = _huber_term(x, m2, i2, n2, weight, huber)
        t3 = _huber_term(x, m3, i3, n3, weight, huber)
        t4 = _huber_term(x, m4, i4, n4, weight, huber)
        v[_V_LL * LANES + lane] += _F0 if nan else t0
        v[(_V_LL + 1) * LANES + lane] += _F0 if nan else t1
        v[(_V_LL + 2) * LANES + lane] += _F0 if nan else t2
        v[(_V_LL + 3) * LANES + lane] += _F0 if nan else t3
        v[(_V_LL + 4) * LANES + lane] += _F0 if nan else t4


@helper
def _posterior_lanes(v: NDArray[np.float32], prm: Array) -> None:
    """The forward filter's step from the ``_V_LL`` rows, then the stability rule; the
    published label and its confidence into the output rows. Lanes without ``_V_GO`` keep
    their state."""
    t = P_TRANSITION
    t00, t01, t02 = np.float32(prm[t]), np.float32(prm[t + 1]), np.float32(prm[t + 2])
    t03, t04 = np.float32(prm[t + 3]), np.float32(prm[t + 4])
    t10, t11, t12 = np.float32(prm[t + 5]), np.float32(prm[t + 6]), np.float32(prm[t + 7])
    t13, t14 = np.float32(prm[t + 8]), np.float32(prm[t + 9])
    t20, t21, t22 = np.float32(prm[t + 10]), np.float32(prm[t + 11]), np.float32(prm[t + 12])
    t23, t24 = np.float32(prm[t + 13]), np.float32(prm[t + 14])
    t30, t31, t32 = np.float32(prm[t + 15]), np.float32(prm[t + 16]), np.float32(prm[t + 17])
    t33, t34 = np.float32(prm[t + 18]), np.float32(prm[t + 19])
    t40, t41, t42 = np.float32(prm[t + 20]), np.float32(prm[t + 21]), np.float32(prm[t + 22])
    t43, t44 = np.float32(prm[t + 23]), np.float32(prm[t + 24])
    min_conf, offset_rate = np.float32(prm[P_MIN_CONF]), np.float32(prm[P_OFFSET_RATE])
    refractory_conf = np.float32(prm[P_REFRACTORY_CONF])
    refractory_bars = np.float32(prm[P_REFRACTORY_BARS])
    min_dwell = np.float32(prm[P_MIN_DWELL])
    for lane in range(LANES):
        go = v[_V_GO * LANES + lane] != _F0
        ll0 = v[_V_LL * LANES + lane]
        ll1 = v[(_V_LL + 1) * LANES + lane]
        ll2 = v[(_V_LL + 2) * LANES + lane]
        ll3 = v[(_V_LL + 3) * LANES + lane]
        ll4 = v[(_V_LL + 4) * LANES + lane]
        best = max(max(max(max(ll0, ll1), ll2), ll3), ll4)
        b0 = v[_V_BELIEF * LANES + lane]
        b1 = v[(_V_BELIEF + 1) * LANES + lane]
        b2 = v[(_V_BELIEF + 2) * LANES + lane]
        b3 = v[(_V_BELIEF + 3) * LANES + lane]
        b4 = v[(_V_BELIEF + 4) * LANES + lane]
        a0 = fma32(b4, t40, fma32(b3, t30, fma32(b2, t20, fma32(b1, t10, b0 * t00))))
        a1 = fma32(b4, t41, fma32(b3, t31, fma32(b2, t21, fma32(b1, t11, b0 * t01))))
        a2 = fma32(b4, t42, fma32(b3, t32, fma32(b2, t22, fma32(b1, t12, b0 * t02))))
        a3 = fma32(b4, t43, fma32(b3, t33, fma32(b2, t23, fma32(b1, t13, b0 * t03))))
        a4 = fma32(b4, t44, fma32(b3, t34, fma32(b2, t24, fma32(b1, t14, b0 * t04))))
        d0, d1, d2, d3, d4 = ll0 - best, ll1 - best, ll2 - best, ll3 - best, ll4 - best
        p0 = a0 * _exp32(max(d0, _F_EXP_CUTOFF)) if d0 > _F_EXP_CUTOFF else _F0
        p1 = a1 * _exp32(max(d1, _F_EXP_CUTOFF)) if d1 > _F_EXP_CUTOFF else _F0
        p2 = a2 * _exp32(max(d2, _F_EXP_CUTOFF)) if d2 > _F_EXP_CUTOFF else _F0
        p3 = a3 * _exp32(max(d3, _F_EXP_CUTOFF)) if d3 > _F_EXP_CUTOFF else _F0
        p4 = a4 * _exp32(max(d4, _F_EXP_CUTOFF)) if d4 > _F_EXP_CUTOFF else _F0
        total = p0 + p1 + p2 + p3 + p4
        pos = total > _F0
        inv = _F1 / total if pos else _F0
        n0 = p0 * inv if pos else _F_UNIFORM
        n1 = p1 * inv if pos else _F_UNIFORM
        n2 = p2 * inv if pos else _F_UNIFORM
        n3 = p3 * inv if pos else _F_UNIFORM
        n4 = p4 * inv if pos else _F_UNIFORM
        v[_V_BELIEF * LANES + lane] = n0 if go else b0
        v[(_V_BELIEF + 1) * LANES + lane] = n1 if go else b1
        v[(_V_BELIEF + 2) * LANES + lane] = n2 if go else b2
        v[(_V_BELIEF + 3) * LANES + lane] = n3 if go else b3
        v[(_V_BELIEF + 4) * LANES + lane] = n4 if go else b4
        # Per regime (BREAKOUT's two phases summed), and the most probable one (first wins).
        q3 = n3 + n4
        raw, top = _F0, n0
        raw, top = (_F1, n1) if n1 > top else (raw, top)
        raw, top = (_F2, n2) if n2 > top else (raw, top)
        raw, top = (_F3, q3) if q3 > top else (raw, top)
        # The offsets' gain: a running mean at first (fast to converge), then an EMA.
        filtered = v[_V_FILTERED * LANES + lane]
        v[_V_GAIN * LANES + lane] = max(offset_rate, _F1 / (filtered + _F_20))
        v[_V_FILTERED * LANES + lane] = filtered + _F1 if go else filtered
        # The stability rule. Right after a switch (the market's regimes last a while) a
        # further switch needs more confidence.
        current = v[_V_CURRENT * LANES + lane]
        candidate = v[_V_CANDIDATE * LANES + lane]
        held = v[_V_HELD * LANES + lane]
        age = v[_V_AGE * LANES + lane]
        threshold = refractory_conf if age < refractory_bars else min_conf
        first = current < _F0
        switching = (not first) & (raw != current) & (top >= threshold)
        held_sw = held + _F1 if raw == candidate else _F1
        commit = switching & (held_sw >= min_dwell)
        take = first | commit
        pending = switching & (not commit)
        current2 = raw if take else current
        held2 = held_sw if pending else _F0
        candidate2 = candidate if first else (raw if pending else _F_MINUS1)
        age2 = _F0 if take else age + _F1
        current = current2 if go else current
        v[_V_CURRENT * LANES + lane] = current
        v[_V_CANDIDATE * LANES + lane] = candidate2 if go else candidate
        v[_V_HELD * LANES + lane] = held2 if go else held
        v[_V_AGE * LANES + lane] = age2 if go else age
        pc = n0 if current == _F0 else (n1 if current == _F1 else (n2 if current == _F2 else q3))
        v[_V_OUT_LABEL * LANES + lane] = current
        v[_V_OUT_CONF * LANES + lane] = min(max(pc, _F0), _F1) if go else _F0


@inline
def _offset_lanes(v: NDArray[np.float32], prm: Array, k: int) -> None:
    """Level feature ``k``'s offset: an EM step on the posterior-weighted residual of the
    offset-adjusted feature (a short history's baseline is biased by whichever regimes it
    happened to hold; the offset removes that bias as evidence accumulates)."""
    mu = P_MEAN + k
    m0, m1, m2 = np.float32(prm[mu]), np.float32(prm[mu + 5]), np.float32(prm[mu + 10])
    m3, m4 = np.float32(prm[mu + 15]), np.float32(prm[mu + 20])
    for lane in range(LANES):
        x = v[(_V_XADJ + k) * LANES + lane]
        residual = v[_V_BELIEF * LANES + lane] * (x - m0)
        residual = fma32(v[(_V_BELIEF + 1) * LANES + lane], x - m1, residual)
        residual = fma32(v[(_V_BELIEF + 2) * LANES + lane], x - m2, residual)
        residual = fma32(v[(_V_BELIEF + 3) * LANES + lane], x - m3, residual)
        residual = fma32(v[(_V_BELIEF + 4) * LANES + lane], x - m4, residual)
        off = v[(_V_OFFSET + k) * LANES + lane]
        ok = (v[_V_GO * LANES + lane] != _F0) & (x == x)
        v[(_V_OFFSET + k) * LANES + lane] = (
            fma32(v[_V_GAIN * LANES + lane], residual, off) if ok else off
        )


@helper
def _block_filter(w: Array, prm: Array) -> None:
    """Filter and stability rule for every lane of a block on the ``_X`` rows (lanes with
    ``_GO``); the published label and confidence in ``_V_OUT_LABEL``/``_V_OUT_CONF``."""
    v = _filter_rows(w, prm)
    for lane in range(LANES):
        v[_V_GO * LANES + lane] = np.float32(w[_GO * LANES + lane])
    for s in range(N_STATES):
        for lane in range(LANES):
            v[(_V_LL + s) * LANES + lane] = _F0
    # Literal feature indices: each inlined lane loop gets constant row offsets.
    if prm[P_WEIGHT] != 0.0:
        _likelihood_lanes(w, v, prm, 0)
    if prm[P_WEIGHT + 1] != 0.0:
        _likelihood_lanes(w, v, prm, 1)
    if prm[P_WEIGHT + 2] != 0.0:
        _likelihood_lanes(w, v, prm, 2)
    if prm[P_WEIGHT + 3] != 0.0:
        _likelihood_lanes(w, v, prm, 3)
    if prm[P_WEIGHT + 4] != 0.0:
        _likelihood_lanes(w, v, prm, 4)
    _posterior_lanes(v, prm)
    # The level features' offsets.
    if prm[P_WEIGHT] != 0.0:
        _offset_lanes(v, prm, 0)
    if prm[P_WEIGHT + 3] != 0.0:
        _offset_lanes(v, prm, 3)
    if prm[P_WEIGHT + 4] != 0.0:
        _offset_lanes(v, prm, 4)


@helper
def _block_step(w: Array, prm: Array) -> None:
    """One bar of every lane of a block: features, filter, stability. The one step of both
    the full classification and the tracker's update (so they agree to the bit)."""
    _block_features(w, prm)
    # An integer count: a float sum would be one serial chain of 64 additions (LLVM may not
    # reorder float adds), ~200 cycles of latency on every bar of every block.
    go = 0
    for lane in range(LANES):
        go += 1 if w[_GO * LANES + lane] != 0.0 else 0
    if go != 0:
        _block_filter(w, prm)
    else:
        # No lane past its warm-up with a good bar (a block's first ``warmup`` bars): the
        # filter would change nothing; each lane keeps its label, with confidence 0.
        v = _filter_rows(w, prm)
        for lane in range(LANES):
            v[_V_OUT_LABEL * LANES + lane] = v[_V_CURRENT * LANES + lane]
            v[_V_OUT_CONF * LANES + lane] = _F0


# --- kernels over symbols ----------------------------------------------------------------------


@inline
def _load_bar(
    w: Array, close: Array, high: Array, low: Array, volume: Array, i0: int, nb: int, j: int
) -> None:
    """Bar ``j`` of the block's symbols ``i0 .. i0 + nb`` into the input rows."""
    for lane in range(nb):
        w[_IN_C * LANES + lane] = close[i0 + lane, j]
        w[_IN_H * LANES + lane] = high[i0 + lane, j]
        w[_IN_L * LANES + lane] = low[i0 + lane, j]
        w[_IN_V * LANES + lane] = volume[i0 + lane, j]


@inline
def _pad_inputs(w: Array, nb: int) -> None:
    """Lanes from ``nb`` on (past the last symbol, or not stepping) get a bad bar: their
    state does not move."""
    for lane in range(nb, LANES):
        w[_IN_C * LANES + lane] = np.nan
        w[_IN_H * LANES + lane] = np.nan
        w[_IN_L * LANES + lane] = np.nan
        w[_IN_V * LANES + lane] = np.nan


@kernel
def classify_kernel(
    close: Array,
    high: Array,
    low: Array,
    volume: Array,
    prm: Array,
    labels: NDArray[np.int8],
    confidence: NDArray[np.float32],
    state: Array,
) -> None:
    """Every bar of every symbol from a fresh state, ``LANES`` symbols at a time; the newest
    ``labels.shape[1]`` bars' labels and confidences are written (all of them for a full
    classification, 1 for the current regime only), and each block's final state is left in
    ``state`` (blocks, block size).

    A bar's inputs are read straight down the block's rows (flat indices with a stride of one
    row; they compile to one load per lane), the outputs written the same way. Each bar
    also prefetches the inputs ``_PREFETCH_BARS`` bars ahead for every 8th lane, in turn: a
    cache line holds 8 bars of a row, so each line is asked for once, and the block's 4 x 64
    lines arrive spread over the bars instead of all missing on the same bar (as they do when
    the row length is a multiple of 8 bars: every row of the block then starts at the same
    offset in its line); the hardware prefetcher does not follow 256 strided streams
    (measured at 5,000 x 1,000: classify ~5 % faster)."""
    n_sym, n_bar = close.shape
    n_out = labels.shape[1]
    first_out = n_bar - n_out
    cf, hf, lf, vf = close.ravel(), high.ravel(), low.ravel(), volume.ravel()
    label_f, conf_f = labels.ravel(), confidence.ravel()
    for blk in numba.prange((n_sym + LANES - 1) // LANES):
        i0 = blk * LANES
        nb = min(LANES, n_sym - i0)
        w = state[blk]
        _init_block(w, prm)
        v = _filter_rows(w, prm)
        _pad_inputs(w, nb)
        for j in range(n_bar):
            at = i0 * n_bar + j
            for lane in range(j % 8, nb, 8):
                k = at + lane * n_bar + _PREFETCH_BARS
                prefetch(cf, k)
                prefetch(hf, k)
                prefetch(lf, k)
                prefetch(vf, k)
            if nb == LANES:
                for lane in range(LANES):
                    k = at + lane * n_bar
                    w[_IN_C * LANES + lane] = cf[k]
                    w[_IN_H * LANES + lane] = hf[k]
                    w[_IN_L * LANES + lane] = lf[k]
                    w[_IN_V * LANES + lane] = vf[k]
            else:
                for lane in range(nb):
                    k = at + lane * n_bar
                    w[_IN_C * LANES + lane] = cf[k]
                    w[_IN_H * LANES + lane] = hf[k]
                    w[_IN_L * LANES + lane] = lf[k]
                    w[_IN_V * LANES + lane] = vf[k]
            _block_step(w, prm)
            if j >= first_out:
                out = i0 * n_out + j - first_out
                for lane in range(nb):
                    k = out + lane * n_out
                    label_f[k] = np.int8(v[_V_OUT_LABEL * LANES + lane])
                    conf_f[k] = v[_V_OUT_CONF * LANES + lane]


@kernel
def update_kernel(
    close: Array,
    high: Array,
    low: Array,
    volume: Array,
    stepping: NDArray[np.bool_],
    prm: Array,
    labels: NDArray[np.int8],
    confidence: Array,
    state: Array,
) -> None:
    """One new bar (``close[i]`` …) for every symbol with ``stepping[i]``: advance its state and
    write its label and confidence; the other symbols are left as they are."""
    n_sym = close.shape[0]
    for blk in numba.prange((n_sym + LANES - 1) // LANES):
        i0 = blk * LANES
        nb = min(LANES, n_sym - i0)
        w = state[blk]
        v = _filter_rows(w, prm)
        _pad_inputs(w, 0)
        moving = 0
        for lane in range(nb):
            if stepping[i0 + lane]:
                moving += 1
                w[_IN_C * LANES + lane] = close[i0 + lane]
                w[_IN_H * LANES + lane] = high[i0 + lane]
                w[_IN_L * LANES + lane] = low[i0 + lane]
                w[_IN_V * LANES + lane] = volume[i0 + lane]
        if moving:  # a block without a new bar is left as it is
            _block_step(w, prm)
            for lane in range(nb):
                if stepping[i0 + lane]:
                    labels[i0 + lane] = np.int8(v[_V_OUT_LABEL * LANES + lane])
                    confidence[i0 + lane] = v[_V_OUT_CONF * LANES + lane]


update_kernel_serial = serial_twin(update_kernel)


@kernel
def features_kernel(
    close: Array, high: Array, low: Array, volume: Array, prm: Array, out: Array
) -> None:
    """Features per bar into ``out`` (symbols, bars, 5); NaN before warm-up or at a bad bar."""
    n_sym, n_bar = close.shape
    for blk in numba.prange((n_sym + LANES - 1) // LANES):
        i0 = blk * LANES
        nb = min(LANES, n_sym - i0)
        w = np.empty(_block_len(prm))
        _init_block(w, prm)
        _pad_inputs(w, nb)
        for j in range(n_bar):
            _load_bar(w, close, high, low, volume, i0, nb, j)
            _block_features(w, prm)
            for lane in range(nb):
                go = w[_GO * LANES + lane] != 0.0
                for k in range(N_FEATURES):
                    out[i0 + lane, j, k] = w[(_X + k) * LANES + lane] if go else np.nan


@kernel
def labels_kernel(
    features: Array, prm: Array, labels: NDArray[np.int8], confidence: NDArray[np.float32]
) -> None:
    """The filter and the stability rule over precomputed features (see ``compute_features``):
    a bar whose first feature is NaN carries the previous label, with confidence 0."""
    n_sym, n_bar, _ = features.shape
    for blk in numba.prange((n_sym + LANES - 1) // LANES):
        i0 = blk * LANES
        nb = min(LANES, n_sym - i0)
        w = np.empty(_block_len(prm))
        _init_block(w, prm)
        v = _filter_rows(w, prm)
        for k in range(N_FEATURES):
            for lane in range(nb, LANES):
                w[(_X + k) * LANES + lane] = np.nan
        for j in range(n_bar):
            for lane in range(nb):
                for k in range(N_FEATURES):
                    w[(_X + k) * LANES + lane] = features[i0 + lane, j, k]
            for lane in range(LANES):
                w[_GO * LANES + lane] = 0.0 if math.isnan(w[_X * LANES + lane]) else 1.0
            _block_filter(w, prm)
            for lane in range(nb):
                labels[i0 + lane, j] = np.int8(v[_V_OUT_LABEL * LANES + lane])
                confidence[i0 + lane, j] = v[_V_OUT_CONF * LANES + lane]


# --- the parameter vector and the block layout, for the Python layer ------------------------------


def _ring_size(config: RegimeConfig) -> int:
    return max(config.er_window + 1, config.bb_period)


def kernel_params(config: RegimeConfig, need_all: bool = False) -> Array:
    """A config as the kernels take it: one flat float vector (see the ``P_*`` offsets).
    ``need_all``: compute every feature whatever the weights (``compute_features``)."""
    means = np.asarray(config.means, dtype=np.float64)
    stds = np.asarray(config.stds, dtype=np.float64)
    weights = np.asarray(config.weights, dtype=np.float64)
    shape = (N_STATES, N_FEATURES)
    if means.shape != shape or stds.shape != shape or weights.shape != (N_FEATURES,):
        raise ValueError(f"means and stds must be {shape}, weights ({N_FEATURES},)")
    if not (stds > 0).all():
        raise ValueError("stds must be positive")
    transition = transition_matrix(config)
    need = np.ones(N_FEATURES) if need_all else (weights != 0.0).astype(np.float64)
    head = [
        1.0 if config.fast_span == 1 else 0.0,
        2.0 / (config.fast_span + 1.0),
        2.0 / (config.slow_span + 1.0),
        config.er_window,
        config.bb_period,
        1.0 / config.history,
        config.warmup,
        _ring_size(config),
        config.quantile,
        config.min_confidence,
        config.offset_rate,
        config.huber_threshold,
        config.refractory_confidence,
        config.min_dwell,
        config.refractory_bars,
    ]
    prm = np.concatenate(
        [
            np.asarray(head, dtype=np.float64),
            need,
            weights,
            means.ravel(),
            (1.0 / stds).ravel(),
            (-np.log(stds)).ravel(),
            transition.ravel(),
        ]
    )
    assert prm.shape == (N_PARAMS,)
    return prm


def block_size(config: RegimeConfig) -> int:
    """Float64 slots of a block (see ``_block_len``)."""
    return (_RING + 2 * _ring_size(config)) * LANES + _V_ROWS * LANES // 2


def _filter_view(state: Array, config: RegimeConfig) -> NDArray[np.float32]:
    """The float32 filter rows of every block of a state: (blocks, rows, lanes)."""
    start = (_RING + 2 * _ring_size(config)) * LANES
    return state[:, start:].view(np.float32).reshape(state.shape[0], _V_ROWS, LANES)


def _feature_view(state: Array, config: RegimeConfig) -> Array:
    """The float64 rows (with the ring) of every block of a state: (blocks, rows, lanes)."""
    rows = _RING + 2 * _ring_size(config)
    return state[:, : rows * LANES].reshape(state.shape[0], rows, LANES)


def new_state(n: int, config: RegimeConfig) -> Array:
    """Fresh state for ``n`` symbols: (blocks, block size), every lane before its first bar."""
    blocks = (n + LANES - 1) // LANES
    state = np.zeros((blocks, block_size(config)))
    v = _filter_view(state, config)
    v[:, _V_BELIEF : _V_BELIEF + N_STATES, :] = 1.0 / N_STATES
    v[:, _V_CURRENT, :] = NO_LABEL
    v[:, _V_CANDIDATE, :] = NO_LABEL
    return state


def place_lanes(into: Array, took: Array, rows: NDArray[np.int64], config: RegimeConfig) -> None:
    """Lane ``i`` of state ``took`` (a fresh classification's) becomes row ``rows[i]`` of state
    ``into``: every row of the lane, the ring re-based from the source block's head to the
    target block's (each block keeps its own head)."""
    src = np.arange(rows.shape[0])
    bd, ld, bs, ls = rows // LANES, rows % LANES, src // LANES, src % LANES
    into_x, took_x = _feature_view(into, config), _feature_view(took, config)
    head_d = into_x[bd, _HEAD, 0].astype(np.int64)
    head_s = took_x[bs, _HEAD, 0].astype(np.int64)
    into_x[bd, :_RING, ld] = took_x[bs, :_RING, ls]
    into_x[bd, _HEAD, ld] = head_d
    size = _ring_size(config)
    k = np.arange(size)
    slot_d = (head_d[:, None] + k) % size
    slot_s = (head_s[:, None] + k) % size
    for base in (_RING, _RING + size):
        into_x[bd[:, None], base + slot_d, ld[:, None]] = took_x[
            bs[:, None], base + slot_s, ls[:, None]
        ]
    into_f, took_f = _filter_view(into, config), _filter_view(took, config)
    into_f[bd, :, ld] = took_f[bs, :, ls]
