"""The synthetic market's generator as numba kernels over many symbols at once.

Randomness is counter-based: every draw is a hash (SplitMix64 finaliser) of (seed, symbol
index, counter, stream), so bar ``k`` of a symbol depends only on (seed, symbol, k) and on the
path before it, never on how many symbols are generated together, on the thread that ran it or
on how the fetches were chunked. Each symbol's state (price, regime segment, AR level) is one
row of two small arrays, so generation resumes where the last fetch stopped; going back in time
regenerates the row from bar 0 (deterministic, O(bars)).

The statistical model (segment lengths, regime dynamics, wicks, volume) is described in
``quantumtrade.data.synthetic``.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

F = TypeVar("F")
_JIT: dict[str, Any] = dict(nopython=True, cache=True, nogil=True, error_model="numpy")

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

# Regime codes (the order of synthetic.REGIMES).
TRENDING, RANGING, VOLATILE, BREAKOUT = 0, 1, 2, 3
MIN_BARS = np.array([30, 30, 30, 15], dtype=np.int64)
EXTRA_MEAN = np.array([40.0, 40.0, 25.0, 10.0])
EXTRA_CAP = 200
# A breakout is price leaving its range with volatility and volume expanding. A BREAKOUT segment
# is that move: the last few bars of the squeeze (range and volume drying up right before the
# break), then the jump and its expansion. A market can stay compressed for a long time and
# never break out, or break the other way, so a compression that has not broken yet is still a
# range and belongs to the regime before it; labelling a long compression BREAKOUT would label
# bars by their future.
SQUEEZE_BARS = 3
# Next-regime probabilities (rows: from, columns: to); a segment's own length already encodes how
# long a regime persists, so the diagonal is zero.
TRANSITIONS = np.array(
    [
        [0.00, 0.45, 0.30, 0.25],  # TRENDING → mostly consolidates
        [0.35, 0.00, 0.25, 0.40],  # RANGING → often breaks out
        [0.40, 0.50, 0.00, 0.10],  # VOLATILE → calms down
        [0.60, 0.10, 0.30, 0.00],  # BREAKOUT → usually becomes a trend
    ]
)

# Row layout of the state arrays.
# float64: profile (fixed per symbol), then the path.
S_SIGMA, S_LIQ, S_LOG_BASE, S_BASE = 0, 1, 2, 3
S_LOG_PRICE, S_LEVEL, S_X, S_DRIFT, S_JUMP, S_SIDE = 4, 5, 6, 7, 8, 9
N_FLOAT = 10
# int64: the next bar to generate, the segment in progress.
I_NEXT, I_SEG, I_CODE, I_LEN, I_POS, I_FIRST_CODE = 0, 1, 2, 3, 4, 5
N_INT = 6

# Draw counters: bar k draws on counter k (streams 0-3, polar-method retries 4-7, 8-11, ...);
# segment s on _SEGMENT + s; the symbol's profile on _PROFILE and _PROFILE + 1.
_SEGMENT = 1 << 40
_PROFILE = 1 << 41
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11, _S2 = (
    np.uint64(30),
    np.uint64(27),
    np.uint64(31),
    np.uint64(11),
    np.uint64(2),
)
_TWO53 = 1.0 / 9007199254740992.0


def _kernel(fn: F) -> F:
    return cast(F, numba.jit(**_JIT, parallel=True)(fn))


def _helper(fn: F) -> F:
    return cast(F, numba.jit(**_JIT, inline="always")(fn))


@_helper
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@_helper
def symbol_key(seed: int, index: int) -> np.uint64:
    """The per-symbol root of every draw."""
    return _mix(_mix(np.uint64(seed) + _GOLDEN) ^ (np.uint64(index) * _GOLDEN + _M1))


@_helper
def _uniform(key: np.uint64, counter: int, stream: int) -> float:
    """A uniform draw in (0, 1) for (symbol key, counter, stream)."""
    # SplitMix64: the (already mixed) symbol key plus a Weyl step per (counter, stream).
    z = _mix(key + (np.uint64(counter) * np.uint64(32) + np.uint64(stream)) * _GOLDEN)
    return (float(z >> _S11) + 0.5) * _TWO53


@_helper
def _normals(key: np.uint64, counter: int, stream: int) -> tuple[float, float]:
    """Two independent standard normals (Marsaglia's polar method: no trigonometry) from
    streams ``stream``, ``stream + 1``; a rejected pair retries on streams 4 higher."""
    while True:
        u = 2.0 * _uniform(key, counter, stream) - 1.0
        v = 2.0 * _uniform(key, counter, stream + 1) - 1.0
        s = u * u + v * v
        if 0.0 < s < 1.0:
            f = math.sqrt(-2.0 * math.log(s) / s)
            return u * f, v * f
        stream += 4


@_helper
def _toward_base(log_price: float, log_base: float, u: float) -> float:
    """A direction (+1/-1) biased back toward the base price, so prices stay in a sane band."""
    p_up = 1.0 / (1.0 + math.exp(2.0 * (log_price - log_base)))
    return 1.0 if u < p_up else -1.0


@_helper
def _start_segment(key: np.uint64, fs: Array, ints: IntArray) -> None:
    """Draw the next segment's regime, length and parameters from the state's position."""
    seg = ints[I_SEG] + 1
    if seg == 0:
        code = ints[I_FIRST_CODE]
    else:
        u = _uniform(key, _SEGMENT + seg, 8)
        prev = ints[I_CODE]
        code = 3
        acc = 0.0
        for c in range(4):
            acc += TRANSITIONS[prev, c]
            if u < acc:
                code = c
                break
    p = 1.0 / (EXTRA_MEAN[code] + 1.0)
    geometric = math.ceil(math.log(_uniform(key, _SEGMENT + seg, 9)) / math.log1p(-p))  # ≥ 1
    n = MIN_BARS[code] + min(max(int(geometric), 1) - 1, EXTRA_CAP)
    lp = fs[S_LOG_PRICE]
    direction = _toward_base(lp, fs[S_LOG_BASE], _uniform(key, _SEGMENT + seg, 10))
    strength = 0.15 + 0.20 * _uniform(key, _SEGMENT + seg, 11)
    fs[S_LEVEL] = lp
    fs[S_X] = 0.0
    fs[S_DRIFT] = direction * strength * fs[S_SIGMA]
    fs[S_SIDE] = direction
    fs[S_JUMP] = 6.0 + 4.0 * _uniform(key, _SEGMENT + seg, 12)
    ints[I_SEG] = seg
    ints[I_CODE] = code
    ints[I_LEN] = n
    ints[I_POS] = 0


@_helper
def _reset(
    key: np.uint64, index: int, bar_ms: int, real_prices: Array, fs: Array, ints: IntArray
) -> None:
    """Put a symbol's row at bar 0: its profile, then the first segment."""
    n0, n1 = _normals(key, _PROFILE, 0)
    n2, _ = _normals(key, _PROFILE, 2)
    if index < real_prices.shape[0]:
        base = real_prices[index] * math.exp(0.05 * n0)
        per_second = 250_000.0 / float(index + 1) ** 1.2
    else:
        base = 10.0 ** (-1.5 + 4.0 * _uniform(key, _PROFILE + 1, 0))
        per_second = 10.0 ** (2.5 + 1.5 * _uniform(key, _PROFILE + 1, 1))
    fs[S_BASE] = base
    fs[S_LOG_BASE] = math.log(base)
    fs[S_LIQ] = per_second * math.exp(0.2 * n1) * bar_ms / 1000.0
    # Per-bar volatility of log price in a calm trend; smaller pairs move more.
    fs[S_SIGMA] = 0.0012 * math.exp(0.25 * n2) * (1.0 + 0.02 * min(index, 40))
    fs[S_LOG_PRICE] = fs[S_LOG_BASE]
    ints[I_NEXT] = 0
    ints[I_SEG] = -1
    ints[I_FIRST_CODE] = min(int(4.0 * _uniform(key, _PROFILE + 1, 2)), 3)
    _start_segment(key, fs, ints)


@_helper
def _step(key: np.uint64, fs: Array, ints: IntArray, out: Array, o: int) -> int:
    """Generate the next bar: open, high, low, close, volume into row ``o`` of ``out``
    (nothing when o < 0); returns its regime code."""
    if ints[I_POS] == ints[I_LEN]:
        _start_segment(key, fs, ints)
    bar = ints[I_NEXT]
    code = int(ints[I_CODE])
    i = ints[I_POS]
    n = ints[I_LEN]
    sigma = fs[S_SIGMA]
    lp = fs[S_LOG_PRICE]
    eps, noise = _normals(key, bar, 0)
    w0, w1 = _normals(key, bar, 2)
    if code == TRENDING:
        lc = lp + fs[S_DRIFT] + sigma * eps
        vol, mult = sigma, 1.1
    elif code == RANGING:
        x = 0.85 * fs[S_X] + 0.45 * sigma * eps
        fs[S_X] = x
        lc = fs[S_LEVEL] + x
        vol, mult = 0.45 * sigma, 0.6
    elif code == VOLATILE:
        lc = lp + 3.0 * sigma * eps
        vol, mult = 3.0 * sigma, 1.8
    else:  # BREAKOUT: a short squeeze, then a jump out of it with expanding vol and volume
        m = SQUEEZE_BARS
        if i < m:
            x = 0.7 * fs[S_X] + 0.3 * sigma * eps
            fs[S_X] = x
            lc = fs[S_LEVEL] + x
            vol, mult = 0.3 * sigma, 0.5
        else:
            j = i - m
            span = n - m - 1
            frac = j / span if span > 0 else 0.0
            if j == 0:
                lc = lp + fs[S_SIDE] * fs[S_JUMP] * sigma
            else:
                lc = lp + fs[S_SIDE] * 0.5 * sigma + 2.0 * sigma * eps
            vol, mult = sigma * (2.0 + frac), 2.5 + frac
    if o >= 0:
        open_ = math.exp(lp)
        close = math.exp(lc)
        out[o, 0] = open_
        out[o, 1] = max(open_, close) * math.exp(0.5 * vol * abs(w0))
        out[o, 2] = min(open_, close) * math.exp(-0.5 * vol * abs(w1))
        out[o, 3] = close
        out[o, 4] = fs[S_LIQ] / close * mult * math.exp(0.35 * noise - 0.06)
    fs[S_LOG_PRICE] = lc
    ints[I_NEXT] = bar + 1
    ints[I_POS] = i + 1
    return code


@_kernel
def init_rows(
    seed: int, indices: IntArray, bar_ms: int, real_prices: Array, fs: Array, ints: IntArray
) -> None:
    """Reset rows ``indices`` (symbol index == row) to bar 0."""
    for j in numba.prange(indices.shape[0]):
        r = indices[j]
        _reset(symbol_key(seed, r), r, bar_ms, real_prices, fs[r], ints[r])


@_kernel
def generate(
    seed: int,
    bar_ms: int,
    start_ms: int,
    real_prices: Array,
    fs: Array,
    ints: IntArray,
    rows: IntArray,
    first: IntArray,
    offsets: IntArray,
    out_ts: IntArray,
    out: Array,
    out_regime: NDArray[np.int8],
) -> None:
    """Bars [first[j], first[j] + (offsets[j+1] - offsets[j])) of symbol rows[j], for every j.

    Output of symbol j goes to rows offsets[j]:offsets[j+1] of ``out_ts``, ``out`` (open,
    high, low, close, volume; the ``BarBatch`` layout) and ``out_regime`` (true regime
    codes). A row whose
    state is past ``first[j]`` is regenerated from bar 0; rows must be distinct.
    """
    for j in numba.prange(rows.shape[0]):
        r = rows[j]
        key = symbol_key(seed, r)
        fs_r = fs[r]
        ints_r = ints[r]
        if ints_r[I_NEXT] > first[j]:
            _reset(key, r, bar_ms, real_prices, fs_r, ints_r)
        while ints_r[I_NEXT] < first[j]:
            _step(key, fs_r, ints_r, out, -1)
        for o in range(offsets[j], offsets[j + 1]):
            out_ts[o] = start_ms + ints_r[I_NEXT] * bar_ms
            out_regime[o] = _step(key, fs_r, ints_r, out, o)


def new_state(rows: int) -> tuple[Array, IntArray]:
    """Empty state arrays for ``rows`` symbols (call ``init_rows`` before use)."""
    return np.zeros((rows, N_FLOAT)), np.zeros((rows, N_INT), dtype=np.int64)
