"""The scan's indicators at each symbol's newest bar, in one fused pass: the production path.

``compute_scan`` computes every indicator the scan uses (``OUTPUTS``) at each row's newest bar
in one pass per symbol (``scan_block_kernel``), as a state machine that
``incremental.IncrementalIndicators`` resumes one bar at a time (``resume_block_kernel``);
``scan_kernel`` is the plain bar-by-bar form of the same machine (it also gives every bar's
values: ``compute_scan(series=True)``).

Inputs follow the conventions of ``reference.py``, whose per-indicator kernels (TA-Lib's
operation order, checked against TA-Lib) the fused step repeats, except that RSI, ATR and ADX
multiply by 1/n where the reference kernels divide by n (a multiply is cheaper than a division
on every bar) and ADX's DX skips the DIs' common factor 100/TR: those three agree with the
reference kernels to < 1e-12 relative and with TA-Lib to < 1e-9 (tested); every other output
is bit-identical to its reference kernel.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.scoring.checks import at_least, bars, hlc, same_shape
from quantumtrade.scoring.jit import fma, helper, kernel, prefetch

Array = NDArray[np.float64]


# --- the fused scan: every indicator in one pass per symbol, as a resumable state machine -----
#
# ``_step`` advances one symbol's state by one bar and ``_finish`` reads the indicators at the
# newest bar from that state; ``_steady_tile`` is ``_step`` past every warm-up, for a block of
# symbols at once. The full pass runs the steps over every bar and ``_finish`` once; the
# incremental update loads the state the full pass left, runs one step and ``_finish`` and
# stores it back. All paths execute the same arithmetic in the same order, so they agree to the
# last bit (tested), and each step repeats the operation order of the reference kernels
# (``reference.py``). Windowed statistics (Bollinger stdev, realised vol, volume z-score) are
# two-pass over rings of their window, evaluated only where they are read.

# Integer parameters, in this order, in the ``params`` array the fused kernels take.
P_FAST, P_SLOW, P_VOLW, P_RSI, P_ATR, P_ADX, P_BB, P_MF, P_MS, P_MSIG, P_ZW, P_ROC = range(12)
N_PARAMS = 12
# Float state per symbol.
(
    F_LAST_C, F_LAST_H, F_LAST_L, F_EF_TOT, F_EF, F_ES_TOT, F_ES, F_MF_TOT, F_MF, F_MS_TOT,
    F_MS, F_SIG_TOT, F_SIG, F_GAIN, F_LOSS, F_ATR, F_DMP, F_DMM, F_TR, F_SUM_DX, F_ADX,
    F_BB_TOT, F_BB_PRE,
) = range(23)  # fmt: skip
N_FSTATE = 23
# Integer state per symbol: bars since each series started (0: not started), non-NaN closes,
# and the ring heads (index of the newest entry of the close, return and volume rings).
I_KC, I_KH, I_KV, I_NVALID, I_HC, I_HR, I_HV = range(7)
N_ISTATE = 7
# Output columns: the indicators at the newest bar.
(
    OUT_SCORE, OUT_VOL, OUT_EMA_FAST, OUT_EMA_SLOW, OUT_SMA, OUT_RSI, OUT_ATR, OUT_ADX,
    OUT_BB_WIDTH, OUT_MACD, OUT_MACD_SIGNAL, OUT_MACD_HIST, OUT_VOLUME_Z, OUT_ROC, OUT_BARS,
) = range(15)  # fmt: skip
OUTPUTS = (
    "score", "vol", "ema_fast", "ema_slow", "sma", "rsi", "atr", "adx", "bb_width", "macd",
    "macd_signal", "macd_hist", "volume_z", "roc", "bars",
)  # fmt: skip
# Floor on volatility so a flat series scores a finite (huge) value instead of dividing by 0.
VOL_FLOOR = 1e-12


@helper
def _params(p: NDArray[np.int64]) -> tuple[int, ...]:
    """The parameter array as a tuple (kept in registers by the kernels)."""
    return (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11])


@helper
def _ring_sizes(p: tuple[int, ...]) -> tuple[int, int, int]:
    """Sizes of the close ring (Bollinger window and ROC lag), return ring, volume ring."""
    return max(p[P_BB], p[P_ROC] + 1), p[P_VOLW], p[P_ZW]


@helper
def _back(head: int, lag: int, size: int) -> int:
    """Ring index ``lag`` entries before ``head`` (0 <= lag < size)."""
    k = head - lag
    return k + size if k < 0 else k


@helper
def _advance(head: int, size: int) -> int:
    return head + 1 if head + 1 < size else 0


@helper
def _ema_upd(k: int, x: float, period: int, tot: float, val: float) -> tuple[float, float]:
    """TA-Lib 0.8 EMA: the mean of the first ``period`` values, then fma(x - prev, a, prev)."""
    if k < period:
        tot += x
        if k == period - 1:
            val = tot / period
    else:
        val = fma(x - val, 2.0 / (period + 1.0), val)
    return tot, val


@helper
def _true_range_of(h: float, lo: float, prev_c: float) -> float:
    """TA-Lib's true range (as ``reference._true_range``), without branches."""
    greatest = h - lo
    val = abs(prev_c - h)
    greatest = val if val > greatest else greatest
    val = abs(prev_c - lo)
    return val if val > greatest else greatest


@helper
def _windows(
    ring: Array,
    rc: int,
    rr: int,
    rv: int,
    heads: tuple[int, int, int],
    sizes: tuple[int, int, int],
    middle: float,
) -> tuple[float, float, float, float]:
    """The three windowed statistics at once: (sum of squared deviations of the last
    ``sizes[0]`` log returns from their mean, mean and sum of squared deviations of the last
    ``sizes[1]`` volumes, sum of squared deviations of the last ``sizes[2]`` closes from
    ``middle``). A size of 0 skips that statistic. Each sum runs oldest first, as the
    reference kernels' two-pass sums do; interleaving the three independent chains is what
    makes it faster."""
    hc, hr, hv = heads
    w_ret, w_vol, w_bb = sizes
    j_ret = _back(hr, w_ret - 1, rr) if w_ret else 0
    j_vol = _back(hv, w_vol - 1, rv) if w_vol else 0
    mean_ret = 0.0
    mean_vol = 0.0
    for t in range(max(w_ret, w_vol)):
        if t < w_ret:
            mean_ret += ring[rc + j_ret]
            j_ret = _advance(j_ret, rr)
        if t < w_vol:
            mean_vol += ring[rc + rr + j_vol]
            j_vol = _advance(j_vol, rv)
    if w_ret:
        mean_ret /= w_ret
    if w_vol:
        mean_vol /= w_vol
    j_ret = _back(hr, w_ret - 1, rr) if w_ret else 0
    j_vol = _back(hv, w_vol - 1, rv) if w_vol else 0
    j_bb = _back(hc, w_bb - 1, rc) if w_bb else 0
    ss_ret = 0.0
    ss_vol = 0.0
    ss_bb = 0.0
    for t in range(max(w_ret, w_vol, w_bb)):
        if t < w_ret:
            d = ring[rc + j_ret] - mean_ret
            ss_ret += d * d
            j_ret = _advance(j_ret, rr)
        if t < w_vol:
            d = ring[rc + rr + j_vol] - mean_vol
            ss_vol += d * d
            j_vol = _advance(j_vol, rv)
        if t < w_bb:
            d = ring[j_bb] - middle
            ss_bb += d * d
            j_bb = _advance(j_bb, rc)
    return ss_ret, mean_vol, ss_vol, ss_bb


@helper
def _finish(
    p: tuple[int, ...],
    nbdev: float,
    s: tuple[float, ...],
    ks: tuple[int, ...],
    ring: Array,
    out: Array,
) -> None:
    """The indicators at the newest bar the state has seen (NaN where not warmed up)."""
    rc, rr, rv = _ring_sizes(p)
    heads = (ks[I_HC], ks[I_HR], ks[I_HV])
    ss_ret, mean_z, ss_z, ss_bb = _windows(
        ring, rc, rr, rv, heads, _window_sizes(p, ks), s[F_BB_PRE] / p[P_BB]
    )
    _finish_from(p, nbdev, s, ks, ring, out, ss_ret, mean_z, ss_z, ss_bb)


@helper
def _window_sizes(p: tuple[int, ...], ks: tuple[int, ...]) -> tuple[int, int, int]:
    """The windows ``_windows`` sums for this state (0: not warmed up, skipped)."""
    k = ks[I_KC] - 1
    w = p[P_VOLW]
    w_z = p[P_ZW]
    n_bb = p[P_BB]
    return (w if k >= w else 0, w_z if ks[I_KV] - 1 >= w_z - 1 else 0, n_bb if k >= n_bb - 1 else 0)


@helper
def _finish_from(
    p: tuple[int, ...],
    nbdev: float,
    s: tuple[float, ...],
    ks: tuple[int, ...],
    ring: Array,
    out: Array,
    ss_ret: float,
    mean_z: float,
    ss_z: float,
    ss_bb: float,
) -> None:
    """``_finish`` given the windowed sums (see ``_windows``)."""
    rc, rr, _ = _ring_sizes(p)
    kc, kh, kv, nvalid, hc, _, hv = ks
    for q in range(OUT_BARS):
        out[q] = np.nan
    out[OUT_BARS] = nvalid
    k = kc - 1  # index of the newest bar since the close series started
    kz = kv - 1
    w = p[P_VOLW]
    n_bb = p[P_BB]
    w_z = p[P_ZW]
    middle = s[F_BB_PRE] / n_bb
    vol = np.nan
    if k >= w:
        vol = math.sqrt(ss_ret / (w - 1))
    out[OUT_VOL] = vol
    if k >= p[P_FAST] - 1:
        out[OUT_EMA_FAST] = s[F_EF]
    if k >= p[P_SLOW] - 1:
        out[OUT_EMA_SLOW] = s[F_ES]
    if kc >= p[P_SLOW] + 1 and kc >= p[P_FAST] and not math.isnan(vol):
        trend = (s[F_EF] - s[F_ES]) / s[F_ES]
        out[OUT_SCORE] = trend / max(vol, VOL_FLOOR)
    n = p[P_RSI]
    if k >= n:
        total = s[F_GAIN] + s[F_LOSS]
        out[OUT_RSI] = 100.0 * (s[F_GAIN] / total) if total > 0.0 else 0.0
    if k >= n_bb - 1:
        # Two-pass around TA-Lib's SMA (not the window's own mean), as ``bbands_width``.
        var = ss_bb / n_bb
        std = math.sqrt(var) if var > 0.0 else 0.0
        band = std * nbdev if nbdev != 1.0 else std
        out[OUT_SMA] = middle
        out[OUT_BB_WIDTH] = ((middle + band) - (middle - band)) / middle
    if k >= p[P_MS] + p[P_MSIG] - 2:
        value = s[F_MF] - s[F_MS]
        out[OUT_MACD] = value
        out[OUT_MACD_SIGNAL] = s[F_SIG]
        out[OUT_MACD_HIST] = value - s[F_SIG]
    n = p[P_ROC]
    if k >= n:
        before = ring[_back(hc, n, rc)]
        out[OUT_ROC] = ((ring[hc] / before) - 1.0) * 100.0 if before != 0.0 else 0.0
    k = kh - 1
    if k >= p[P_ATR]:
        out[OUT_ATR] = s[F_ATR]
    if k >= 2 * p[P_ADX] - 1:
        out[OUT_ADX] = s[F_ADX]
    if kz >= w_z - 1:
        std = math.sqrt(ss_z / w_z)
        x = ring[rc + rr + hv]
        out[OUT_VOLUME_Z] = (x - mean_z) / std if std > 0.0 else (x - mean_z) * 0.0


@helper
def _initial() -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The state before any bar: nothing started, sums at zero, no previous bar."""
    nan = np.nan
    s = (
        nan, nan, nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    )  # fmt: skip
    return s, (0, 0, 0, 0, -1, -1, -1)


@helper
def load_state(st: Array, ist: NDArray[np.int64]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """One symbol's state from its rows of the state arrays."""
    s = (
        st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9], st[10], st[11],
        st[12], st[13], st[14], st[15], st[16], st[17], st[18], st[19], st[20], st[21], st[22],
    )  # fmt: skip
    return s, (ist[0], ist[1], ist[2], ist[3], ist[4], ist[5], ist[6])


@helper
def store_state(
    s: tuple[float, ...], ks: tuple[int, ...], st: Array, ist: NDArray[np.int64]
) -> None:
    for q in range(N_FSTATE):
        st[q] = s[q]
    for q in range(N_ISTATE):
        ist[q] = ks[q]


@helper
def _step(
    p: tuple[int, ...],
    s: tuple[float, ...],
    ks: tuple[int, ...],
    ring: Array,
    h: float,
    lo: float,
    c: float,
    v: float,
    fill_returns: bool,
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """One symbol's (float state, int state) after one more bar, any bar (warm-up included).
    ``fill_returns``: also log the return into its ring (a full pass needs only the last
    ``vol_window`` of them; the log is costly)."""
    (
        last_c, last_h, last_l, ef_tot, ef, es_tot, es, mf_tot, mf, ms_tot, ms, sig_tot, sig,
        gain, loss, atr_v, dmp, dmm, tr_s, sum_dx, adx_v, bb_tot, bb_pre,
    ) = s  # fmt: skip
    kc, kh, kv, nvalid, hc, hr, hv = ks
    rc, rr, rv = _ring_sizes(p)
    hc = _advance(hc, rc)
    ring[hc] = c
    hr = _advance(hr, rr)
    if fill_returns:
        ring[rc + hr] = math.log(c / last_c)
    hv = _advance(hv, rv)
    ring[rc + rr + hv] = v
    nvalid += 0 if math.isnan(c) else 1

    if kc > 0 or not math.isnan(c):
        k = kc
        ef_tot, ef = _ema_upd(k, c, p[P_FAST], ef_tot, ef)
        es_tot, es = _ema_upd(k, c, p[P_SLOW], es_tot, es)
        # MACD as ``reference.macd`` (periods ordered by the Python layer).
        f_n = p[P_MF]
        s_n = p[P_MS]
        g_n = p[P_MSIG]
        if k < s_n:
            ms_tot += c
            if k >= s_n - f_n:
                mf_tot += c
            if k == s_n - 1:
                mf = mf_tot / f_n
                ms = ms_tot / s_n
        else:
            mf = fma(c - mf, 2.0 / (f_n + 1.0), mf)
            ms = fma(c - ms, 2.0 / (s_n + 1.0), ms)
        if k >= s_n - 1:
            line = mf - ms
            if k <= s_n + g_n - 2:
                sig_tot += line
                if k == s_n + g_n - 2:
                    sig = sig_tot / g_n
            else:
                sig = fma(line - sig, 2.0 / (g_n + 1.0), sig)
        # RSI (Wilder), branch-free: a random walk's up/down moves defeat branch prediction.
        n = p[P_RSI]
        if k >= 1:
            change = c - last_c
            down = change < 0.0
            if k > n:
                loss *= n - 1
                gain *= n - 1
            loss -= change if down else 0.0
            gain += 0.0 if down else change
            if k >= n:
                loss *= 1.0 / n
                gain *= 1.0 / n
        # SMA / Bollinger middle: TA-Lib's running total (add, read, drop the oldest).
        n = p[P_BB]
        pre = bb_tot + c
        if k < n - 1:
            bb_tot = pre
        else:
            bb_pre = pre
            bb_tot = pre - ring[_back(hc, n - 1, rc)]
        kc = k + 1

    if kh > 0 or not (math.isnan(h) or math.isnan(lo) or math.isnan(c)):
        k = kh
        if k >= 1:
            tr = _true_range_of(h, lo, last_c)
            n = p[P_ATR]
            if k > n:
                atr_v *= n - 1
            atr_v += tr
            if k >= n:
                atr_v *= 1.0 / n
            n = p[P_ADX]
            diff_p = h - last_h
            diff_m = last_l - lo
            # Bitwise, not short-circuit: branches here would be mispredicted.
            is_m = (diff_m > 0) & (diff_p < diff_m)
            is_p = (diff_p > 0) & (diff_p > diff_m) & (not is_m)
            if k < n:
                dmm += diff_m if is_m else 0.0
                dmp += diff_p if is_p else 0.0
                tr_s += tr
            else:
                inv_n = 1.0 / n
                dmm -= dmm * inv_n
                dmp -= dmp * inv_n
                dmm += diff_m if is_m else 0.0
                dmp += diff_p if is_p else 0.0
                tr_s = tr_s - tr_s * inv_n + tr
                # DX = 100 |-DI - +DI| / (-DI + +DI): their factor 100 / TR cancels.
                dm_sum = dmm + dmp
                have_dx = (tr_s > 0.0) & (dm_sum > 0.0)
                dx = 100.0 * (abs(dmm - dmp) / dm_sum)
                first = 2 * n - 1
                if k <= first:
                    sum_dx += dx if have_dx else 0.0
                    if k == first:
                        adx_v = sum_dx * inv_n
                else:
                    adx_v = (adx_v * (n - 1) + dx) * inv_n if have_dx else adx_v
        kh = k + 1

    if kv > 0 or not math.isnan(v):
        kv += 1

    last_c = c
    last_h = h
    last_l = lo
    s = (
        last_c, last_h, last_l, ef_tot, ef, es_tot, es, mf_tot, mf, ms_tot, ms, sig_tot, sig,
        gain, loss, atr_v, dmp, dmm, tr_s, sum_dx, adx_v, bb_tot, bb_pre,
    )  # fmt: skip
    return s, (kc, kh, kv, nvalid, hc, hr, hv)


@kernel
def scan_kernel(
    high: Array,
    low: Array,
    close: Array,
    volume: Array,
    params: NDArray[np.int64],
    nbdev: float,
    state: Array,
    istate: NDArray[np.int64],
    rings: Array,
    out: Array,
    series: Array,
) -> None:
    """Every scan indicator at each row's newest bar, bar by bar through ``_step``, from
    nothing; the state after the last bar is left in ``state``/``istate``/``rings``.

    ``series`` either has shape (outputs, symbols, bars) and receives every bar's values (the
    windowed statistics are then evaluated at every bar), or is empty. Without series,
    ``scan_block_kernel`` gives the same bits faster.
    """
    n_sym, n_bar = close.shape
    p = _params(params)
    rr = p[P_VOLW]
    want_series = n_bar > 0 and series.shape[1] == n_sym and series.shape[2] == n_bar
    # Without series only the last ``vol_window`` log returns are read.
    fill_from = 0 if want_series else n_bar - rr
    for i in numba.prange(n_sym):
        ring = rings[i]
        s, ks = _initial()
        for j in range(n_bar):
            s, ks = _step(
                p, s, ks, ring, high[i, j], low[i, j], close[i, j], volume[i, j], j >= fill_from
            )
            if want_series:
                _finish(p, nbdev, s, ks, ring, out[i])
                for q in range(out.shape[1]):
                    series[q, i, j] = out[i, q]
        _finish(p, nbdev, s, ks, ring, out[i])
        store_state(s, ks, state[i], istate[i])


# Symbols per block of ``scan_block_kernel``: its state is laid out [variable][lane] with this
# compile-time stride, so LLVM can vectorise the steady-state step across lanes.
LANES = 64
TILE = 128  # bars per transposed input tile
# How far ahead (bars) the tile transposition prefetches its inputs: 4 cache lines of a row.
PREFETCH_BARS = 32
_NV = N_FSTATE  # an extra float row of the block state: non-NaN closes seen in steady state


@helper
def _lane_get(
    st: Array, kst: NDArray[np.int64], lane: int
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """One lane's state out of a block's [variable][lane] arrays."""
    s = (
        st[0 * LANES + lane], st[1 * LANES + lane], st[2 * LANES + lane], st[3 * LANES + lane],
        st[4 * LANES + lane], st[5 * LANES + lane], st[6 * LANES + lane], st[7 * LANES + lane],
        st[8 * LANES + lane], st[9 * LANES + lane], st[10 * LANES + lane],
        st[11 * LANES + lane], st[12 * LANES + lane], st[13 * LANES + lane],
        st[14 * LANES + lane], st[15 * LANES + lane], st[16 * LANES + lane],
        st[17 * LANES + lane], st[18 * LANES + lane], st[19 * LANES + lane],
        st[20 * LANES + lane], st[21 * LANES + lane], st[22 * LANES + lane],
    )  # fmt: skip
    ks = (
        kst[0 * LANES + lane], kst[1 * LANES + lane], kst[2 * LANES + lane],
        kst[3 * LANES + lane], kst[4 * LANES + lane], kst[5 * LANES + lane],
        kst[6 * LANES + lane],
    )  # fmt: skip
    return s, ks


@helper
def _lane_put(
    st: Array, kst: NDArray[np.int64], lane: int, s: tuple[float, ...], ks: tuple[int, ...]
) -> None:
    for q in range(N_FSTATE):
        st[q * LANES + lane] = s[q]
    for q in range(N_ISTATE):
        kst[q * LANES + lane] = ks[q]


@helper
def _steady_from(p: tuple[int, ...]) -> tuple[int, int]:
    """Bars since start from which every close (resp. high/low) branch of ``_step`` takes its
    steady side: no seed, no warm-up left."""
    kc = max(p[P_FAST], p[P_SLOW], p[P_MS] + max(p[P_MSIG] - 1, 0), p[P_RSI] + 1, p[P_BB], 1)
    kh = max(p[P_ATR] + 1, 2 * p[P_ADX], 1)
    return kc, kh


@helper
def _steady_tile(
    p: tuple[int, ...], st: Array, tc: Array, th: Array, tl: Array, m: int, lag: int
) -> None:
    """``m`` bars for every lane of a block's [variable][lane] state, all past their warm-up:
    ``_step``'s steady branches, the same operations in the same order (so the same bits),
    in a loop over lanes LLVM vectorises. Inputs are [bar][lane] tiles: high and low from
    row 0, close from row ``lag`` (rows 0..lag-1: the ``lag = bb_period - 1`` closes before,
    the Bollinger total's trailing values)."""
    a_fast = 2.0 / (p[P_FAST] + 1.0)
    a_slow = 2.0 / (p[P_SLOW] + 1.0)
    a_mf = 2.0 / (p[P_MF] + 1.0)
    a_ms = 2.0 / (p[P_MS] + 1.0)
    a_sig = 2.0 / (p[P_MSIG] + 1.0)
    n_rsi = p[P_RSI]
    n_atr = p[P_ATR]
    n_adx = p[P_ADX]
    for jj in range(m):
        base = jj * LANES
        now = (lag + jj) * LANES
        for lane in range(LANES):
            c = tc[now + lane]
            h = th[base + lane]
            lo = tl[base + lane]
            last_c = st[F_LAST_C * LANES + lane]
            last_h = st[F_LAST_H * LANES + lane]
            last_l = st[F_LAST_L * LANES + lane]
            ef = st[F_EF * LANES + lane]
            st[F_EF * LANES + lane] = fma(c - ef, a_fast, ef)
            es = st[F_ES * LANES + lane]
            st[F_ES * LANES + lane] = fma(c - es, a_slow, es)
            mf = st[F_MF * LANES + lane]
            mf = fma(c - mf, a_mf, mf)
            st[F_MF * LANES + lane] = mf
            ms = st[F_MS * LANES + lane]
            ms = fma(c - ms, a_ms, ms)
            st[F_MS * LANES + lane] = ms
            line = mf - ms
            sig = st[F_SIG * LANES + lane]
            st[F_SIG * LANES + lane] = fma(line - sig, a_sig, sig)
            change = c - last_c
            down = change < 0.0
            loss = st[F_LOSS * LANES + lane] * (n_rsi - 1)
            gain = st[F_GAIN * LANES + lane] * (n_rsi - 1)
            loss -= change if down else 0.0
            gain += 0.0 if down else change
            st[F_LOSS * LANES + lane] = loss * (1.0 / n_rsi)
            st[F_GAIN * LANES + lane] = gain * (1.0 / n_rsi)
            pre = st[F_BB_TOT * LANES + lane] + c
            st[F_BB_PRE * LANES + lane] = pre
            st[F_BB_TOT * LANES + lane] = pre - tc[base + lane]
            tr = _true_range_of(h, lo, last_c)
            atr_v = st[F_ATR * LANES + lane] * (n_atr - 1)
            atr_v += tr
            st[F_ATR * LANES + lane] = atr_v * (1.0 / n_atr)
            diff_p = h - last_h
            diff_m = last_l - lo
            is_m = (diff_m > 0) & (diff_p < diff_m)
            is_p = (diff_p > 0) & (diff_p > diff_m) & (not is_m)
            inv_n = 1.0 / n_adx
            dmm = st[F_DMM * LANES + lane]
            dmp = st[F_DMP * LANES + lane]
            dmm -= dmm * inv_n
            dmp -= dmp * inv_n
            dmm += diff_m if is_m else 0.0
            dmp += diff_p if is_p else 0.0
            st[F_DMM * LANES + lane] = dmm
            st[F_DMP * LANES + lane] = dmp
            tr_s = st[F_TR * LANES + lane]
            tr_s = tr_s - tr_s * inv_n + tr
            st[F_TR * LANES + lane] = tr_s
            dm_sum = dmm + dmp
            have_dx = (tr_s > 0.0) & (dm_sum > 0.0)
            dx = 100.0 * (abs(dmm - dmp) / dm_sum)
            adx_v = st[F_ADX * LANES + lane]
            new_adx = (adx_v * (n_adx - 1) + dx) * inv_n
            st[F_ADX * LANES + lane] = new_adx if have_dx else adx_v
            st[_NV * LANES + lane] += 0.0 if math.isnan(c) else 1.0
            st[F_LAST_C * LANES + lane] = c
            st[F_LAST_H * LANES + lane] = h
            st[F_LAST_L * LANES + lane] = lo


@kernel
def scan_block_kernel(
    high: Array,
    low: Array,
    close: Array,
    volume: Array,
    params: NDArray[np.int64],
    nbdev: float,
    state: Array,
    istate: NDArray[np.int64],
    rings: Array,
    out: Array,
) -> None:
    """``scan_kernel`` from nothing, without series, faster: the same bits (tested).

    Blocks of ``LANES`` symbols run ``_step`` lane by lane until every lane is past its warm-up,
    then the steady-state step (``_step``'s steady branches, the same operations in the same
    order) for all lanes at once, a loop LLVM vectorises. The rings are written at the end with
    what ``_step`` would have left in them (the last bars).
    """
    n_sym, n_bar = close.shape
    p = _params(params)
    rc, rr, rv = _ring_sizes(p)
    kc_steady, kh_steady = _steady_from(p)
    fill_from = n_bar - rr
    lag_bb = p[P_BB] - 1
    n_blocks = (n_sym + LANES - 1) // LANES
    cf, hf, lf = close.ravel(), high.ravel(), low.ravel()
    for blk in numba.prange(n_blocks):
        i0 = blk * LANES
        nb = min(LANES, n_sym - i0)
        st = np.zeros((N_FSTATE + 1) * LANES)
        kst = np.zeros(N_ISTATE * LANES, dtype=np.int64)
        tc = np.zeros((TILE + lag_bb) * LANES)
        th = np.zeros(TILE * LANES)
        tl = np.zeros(TILE * LANES)
        lane_at = np.zeros(LANES, dtype=np.int64)
        # Warm-up, lane by lane (the state in registers): each lane up to its steady bar,
        # then all up to the block's latest one.
        j_steady = 0
        for lane in range(nb):
            i = i0 + lane
            ring = rings[i]
            s, ks = _initial()
            j = 0
            while j < n_bar and (ks[I_KC] < kc_steady or ks[I_KH] < kh_steady or ks[I_KV] < 1):
                s, ks = _step(
                    p, s, ks, ring, high[i, j], low[i, j], close[i, j], volume[i, j],
                    j >= fill_from,
                )  # fmt: skip
                j += 1
            _lane_put(st, kst, lane, s, ks)
            lane_at[lane] = j
            j_steady = max(j_steady, j)
        for lane in range(nb):
            if lane_at[lane] < j_steady:
                i = i0 + lane
                ring = rings[i]
                s, ks = _lane_get(st, kst, lane)
                for j in range(lane_at[lane], j_steady):
                    s, ks = _step(
                        p, s, ks, ring, high[i, j], low[i, j], close[i, j], volume[i, j],
                        j >= fill_from,
                    )  # fmt: skip
                _lane_put(st, kst, lane, s, ks)
        # Tiles of the next bars, transposed to [bar][lane]. The close tile also keeps the
        # ``lag_bb`` bars before them (the Bollinger total's trailing value), carried over
        # from the previous tile. Each bar prefetches the inputs ``PREFETCH_BARS`` ahead for
        # every 8th lane, in turn (as ``regime.numerics.classify_kernel`` does): one request per
        # cache line of 8 bars, spread over the bars, where the rows' lines would otherwise all
        # miss on the same bar (measured at 5,000 x 1,000: this kernel ~15 % faster).
        j = j_steady
        for jj in range(lag_bb):
            for lane in range(nb):
                tc[jj * LANES + lane] = close[i0 + lane, j - lag_bb + jj]
        while j < n_bar:
            m = min(TILE, n_bar - j)
            for jj in range(m):
                row = (lag_bb + jj) * LANES
                for lane in range((j + jj) % 8, nb, 8):
                    k = (i0 + lane) * n_bar + j + jj + PREFETCH_BARS
                    prefetch(cf, k)
                    prefetch(hf, k)
                    prefetch(lf, k)
                for lane in range(nb):
                    i = i0 + lane
                    tc[row + lane] = close[i, j + jj]
                    th[jj * LANES + lane] = high[i, j + jj]
                    tl[jj * LANES + lane] = low[i, j + jj]
            _steady_tile(p, st, tc, th, tl, m, lag_bb)
            # The last ``lag_bb`` closes become the start of the next tile.
            for q in range(lag_bb * LANES):
                tc[q] = tc[m * LANES + q]
            j += m
        n_steady = n_bar - j_steady
        for lane in range(nb):
            i = i0 + lane
            ring = rings[i]
            if n_steady > 0:
                kst[I_KC * LANES + lane] += n_steady
                kst[I_KH * LANES + lane] += n_steady
                kst[I_KV * LANES + lane] += n_steady
                kst[I_NVALID * LANES + lane] += int(st[_NV * LANES + lane])
                # What ``_step`` leaves in the rings: heads at the last bar, the newest values.
                kst[I_HC * LANES + lane] = (n_bar - 1) % rc
                kst[I_HR * LANES + lane] = (n_bar - 1) % rr
                kst[I_HV * LANES + lane] = (n_bar - 1) % rv
                for t in range(max(j_steady, n_bar - rc), n_bar):
                    ring[t % rc] = close[i, t]
                for t in range(max(j_steady, n_bar - rr), n_bar):
                    ring[rc + t % rr] = math.log(close[i, t] / close[i, t - 1])
                for t in range(max(j_steady, n_bar - rv), n_bar):
                    ring[rc + rr + t % rv] = volume[i, t]
            s, ks = _lane_get(st, kst, lane)
            _finish(p, nbdev, s, ks, ring, out[i])
            store_state(s, ks, state[i], istate[i])


@helper
def _lanes_ready(p: tuple[int, ...], istate: NDArray[np.int64], i0: int, nb: int) -> bool:
    """Whether the block's next bar can take the lane-parallel path: every lane past the
    warm-up of every recursion and window, and the ring heads the same for all lanes."""
    kc_steady, kh_steady = _steady_from(p)
    kc_need = max(kc_steady, p[P_VOLW], p[P_BB] - 1)
    for lane in range(nb):
        ist = istate[i0 + lane]
        if ist[I_KC] < kc_need or ist[I_KH] < kh_steady or ist[I_KV] < p[P_ZW] - 1:
            return False
        if ist[I_KV] < 1:
            return False
        for q in (I_HC, I_HR, I_HV):
            if ist[q] != istate[i0, q]:
                return False
    return True


@kernel
def resume_block_kernel(
    high: Array,
    low: Array,
    close: Array,
    volume: Array,
    params: NDArray[np.int64],
    nbdev: float,
    state: Array,
    istate: NDArray[np.int64],
    rings: Array,
    out: Array,
) -> None:
    """One new bar per symbol (1-D inputs) on the state a full pass (or this) left: the
    indicators a full pass over all the bars would give, to the bit (tested).

    Blocks of ``LANES`` symbols whose lanes are all past their warm-ups take the steady step
    for all lanes at once (``_steady_tile``) and sum the windowed statistics lane-parallel
    (each lane's sums still in ``_windows``' order; the lanes' independent chains overlap);
    other blocks go lane by lane through ``_step`` and ``_finish``.
    """
    n_sym = close.shape[0]
    p = _params(params)
    rc, rr, rv = _ring_sizes(p)
    lag_bb = p[P_BB] - 1
    w_ret = p[P_VOLW]
    w_z = p[P_ZW]
    n_bb = p[P_BB]
    n_blocks = (n_sym + LANES - 1) // LANES
    for blk in numba.prange(n_blocks):
        i0 = blk * LANES
        nb = min(LANES, n_sym - i0)
        if not _lanes_ready(p, istate, i0, nb):
            for lane in range(nb):
                i = i0 + lane
                s, ks = load_state(state[i], istate[i])
                s, ks = _step(p, s, ks, rings[i], high[i], low[i], close[i], volume[i], True)
                _finish(p, nbdev, s, ks, rings[i], out[i])
                store_state(s, ks, state[i], istate[i])
            continue
        hc = _advance(istate[i0, I_HC], rc)
        hr = _advance(istate[i0, I_HR], rr)
        hv = _advance(istate[i0, I_HV], rv)
        st = np.zeros((N_FSTATE + 1) * LANES)
        tc = np.zeros((lag_bb + 1) * LANES)
        th = np.zeros(LANES)
        tl = np.zeros(LANES)
        for lane in range(nb):
            i = i0 + lane
            ring = rings[i]
            c = close[i]
            for q in range(N_FSTATE):
                st[q * LANES + lane] = state[i, q]
            ring[hc] = c
            ring[rc + hr] = math.log(c / state[i, F_LAST_C])
            ring[rc + rr + hv] = volume[i]
            tc[lane] = ring[_back(hc, lag_bb, rc)]
            tc[lag_bb * LANES + lane] = c
            th[lane] = high[i]
            tl[lane] = low[i]
        _steady_tile(p, st, tc, th, tl, 1, lag_bb)
        # The windowed sums, lanes inner: each lane's chain in order, the lanes' interleaved.
        mean_ret = np.zeros(LANES)
        mean_z = np.zeros(LANES)
        ss_ret = np.zeros(LANES)
        ss_z = np.zeros(LANES)
        ss_bb = np.zeros(LANES)
        j = _back(hr, w_ret - 1, rr)
        for _ in range(w_ret):
            for lane in range(nb):
                mean_ret[lane] += rings[i0 + lane, rc + j]
            j = _advance(j, rr)
        j = _back(hv, w_z - 1, rv)
        for _ in range(w_z):
            for lane in range(nb):
                mean_z[lane] += rings[i0 + lane, rc + rr + j]
            j = _advance(j, rv)
        for lane in range(nb):
            mean_ret[lane] /= w_ret
            mean_z[lane] /= w_z
        j = _back(hr, w_ret - 1, rr)
        for _ in range(w_ret):
            for lane in range(nb):
                d = rings[i0 + lane, rc + j] - mean_ret[lane]
                ss_ret[lane] += d * d
            j = _advance(j, rr)
        j = _back(hv, w_z - 1, rv)
        for _ in range(w_z):
            for lane in range(nb):
                d = rings[i0 + lane, rc + rr + j] - mean_z[lane]
                ss_z[lane] += d * d
            j = _advance(j, rv)
        j = _back(hc, n_bb - 1, rc)
        for _ in range(n_bb):
            for lane in range(nb):
                d = rings[i0 + lane, j] - st[F_BB_PRE * LANES + lane] / n_bb
                ss_bb[lane] += d * d
            j = _advance(j, rc)
        no_ints = np.zeros(N_ISTATE * LANES, dtype=np.int64)
        for lane in range(nb):
            i = i0 + lane
            ist = istate[i]
            ks = (
                ist[I_KC] + 1, ist[I_KH] + 1, ist[I_KV] + 1,
                ist[I_NVALID] + (0 if math.isnan(close[i]) else 1), hc, hr, hv,
            )  # fmt: skip
            s, _ = _lane_get(st, no_ints, lane)
            _finish_from(
                p, nbdev, s, ks, rings[i], out[i], ss_ret[lane], mean_z[lane], ss_z[lane],
                ss_bb[lane],
            )  # fmt: skip
            store_state(s, ks, state[i], istate[i])


class ScanParams(NamedTuple):
    """The periods of the scan's indicators (TA-Lib's usual defaults)."""

    ema_fast: int = 12
    ema_slow: int = 26
    vol_window: int = 30
    rsi: int = 14
    atr: int = 14
    adx: int = 14
    bb_period: int = 20
    bb_nbdev: float = 2.0
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    zscore_window: int = 20
    roc: int = 10

    def as_array(self) -> NDArray[np.int64]:
        """Checked, in the ``P_*`` order the kernels read (MACD periods ordered as TA-Lib)."""
        at_least(1, ema_fast=self.ema_fast, ema_slow=self.ema_slow, rsi=self.rsi)
        at_least(1, atr=self.atr, adx=self.adx, bb_period=self.bb_period, roc=self.roc)
        at_least(1, macd_fast=self.macd_fast, macd_slow=self.macd_slow)
        at_least(1, macd_signal=self.macd_signal, zscore_window=self.zscore_window)
        at_least(2, vol_window=self.vol_window)
        if not math.isfinite(self.bb_nbdev) or self.bb_nbdev < 0.0:
            raise ValueError(f"bb_nbdev must be finite and >= 0, got {self.bb_nbdev}")
        mf, ms = sorted((self.macd_fast, self.macd_slow))
        values = [0] * N_PARAMS
        values[P_FAST], values[P_SLOW] = self.ema_fast, self.ema_slow
        values[P_VOLW], values[P_RSI] = self.vol_window, self.rsi
        values[P_ATR], values[P_ADX], values[P_BB] = self.atr, self.adx, self.bb_period
        values[P_MF], values[P_MS], values[P_MSIG] = mf, ms, self.macd_signal
        values[P_ZW], values[P_ROC] = self.zscore_window, self.roc
        return np.array(values, dtype=np.int64)


class ScanState(NamedTuple):
    """Per symbol: the indicators at the newest bar (``OUT_*`` columns) and the state a bar
    can be added to (see ``incremental.IncrementalIndicators``)."""

    values: Array
    state: Array
    istate: NDArray[np.int64]
    rings: Array


def ring_width(params: NDArray[np.int64]) -> int:
    """Ring cells per symbol: closes (Bollinger window, ROC lag), log returns, volumes."""
    return int(max(params[P_BB], params[P_ROC] + 1) + params[P_VOLW] + params[P_ZW])


def empty_state(n_symbols: int, params: NDArray[np.int64]) -> ScanState:
    """Uninitialised buffers for ``n_symbols`` (the kernels reset what they use)."""
    return ScanState(
        values=np.empty((n_symbols, len(OUTPUTS))),
        state=np.empty((n_symbols, N_FSTATE)),
        istate=np.empty((n_symbols, N_ISTATE), dtype=np.int64),
        rings=np.full((n_symbols, ring_width(params)), np.nan),
    )


def compute_scan(
    high: Array,
    low: Array,
    close: Array,
    volume: Array,
    params: ScanParams | None = None,
    *,
    series: bool = False,
) -> tuple[ScanState, Array | None]:
    """Every scan indicator at each row's newest bar (and, with ``series``, at every bar as an
    (outputs, symbols, bars) array), in one fused pass; the state for incremental updates."""
    high, low, close = hlc(high, low, close)
    volume = bars("volume", volume)
    same_shape(close, volume=volume)
    p = params if params is not None else ScanParams()
    arr = p.as_array()
    n_sym, n_bar = close.shape
    scan = empty_state(n_sym, arr)
    if not series:
        scan_block_kernel(
            high, low, close, volume, arr, float(p.bb_nbdev), scan.state, scan.istate,
            scan.rings, scan.values,
        )  # fmt: skip
        return scan, None
    out_series = np.empty((len(OUTPUTS), n_sym, n_bar))
    scan_kernel(
        high, low, close, volume, arr, float(p.bb_nbdev), scan.state, scan.istate, scan.rings,
        scan.values, out_series,
    )  # fmt: skip
    return scan, out_series


def warm_up_scan() -> None:
    """Compile (or load from the cache) the two kernels a scan runs: the full pass
    (``scan_block_kernel``) and the incremental update (``resume_block_kernel``)."""
    close = np.linspace(100.0, 103.0, 3 * 12).reshape(3, 12)
    close[0, :2] = np.nan
    scan, _ = compute_scan(close + 0.5, close - 0.5, close, close)
    new_bar = close[:, -1].copy()
    resume_block_kernel(
        new_bar + 0.5, new_bar - 0.5, new_bar, new_bar, ScanParams().as_array(), 2.0,
        scan.state, scan.istate, scan.rings, scan.values,
    )  # fmt: skip
