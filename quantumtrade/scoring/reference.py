"""Reference kernels: one numba kernel per indicator over (symbols, bars) float64 arrays, and
their Python layer. The daemon does not run them: they are what the fused production path
(``indicators.compute_scan``) is tested against, each TA-Lib indicator itself tested against
TA-Lib.

Conventions shared by every kernel: C-contiguous float64 rows, one per symbol, oldest bar
first, newest last; a row may start with NaN padding and each row's indicator starts at its
first non-NaN value (for high/low/close, the first bar where all three are non-NaN, as TA-Lib's
Python wrapper does); NaN before the warm-up; a NaN inside the series propagates through the
recursion as it does in TA-Lib (no data is invented). Outputs are preallocated by the caller
and passed as ``out``. Rows are independent, so the kernels run ``prange`` over symbols.

The trend score (``score_last``, ``compute_scores``) is the volatility-normalised EMA trend the
scan ranks by. Each TA-Lib indicator repeats TA-Lib's own operation order, so results agree
with the installed TA-Lib (C 0.8.1) to the last bit for EMA, SMA, ADX, Bollinger width's middle
band, MACD and ROC, and within a few ulps (< 3e-15 relative) for RSI and ATR, whose Wilder step
TA-Lib 0.8 no longer writes in the classic ``prev *= n - 1; prev += x; prev /= n`` form we keep
(its new form was not identified). TA-Lib 0.8's EMA step is a fused multiply-add,
``fma(x - prev, k, prev)``, reproduced here in ``ema`` and MACD. The Bollinger stdev is exact
where TA-Lib's is not (< 1e-10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.scoring.checks import at_least, bars, hlc
from quantumtrade.scoring.jit import fma, helper, kernel

Array = NDArray[np.float64]
# Floor on volatility so a flat series scores a finite (huge) value instead of dividing by 0.
VOL_FLOOR = 1e-12


@helper
def _first_valid(row: Array) -> int:
    """Index of the first non-NaN value of ``row`` (``len(row)`` when there is none)."""
    n: int = row.shape[0]
    for j in range(n):
        if not math.isnan(row[j]):
            return j
    return n


@helper
def _first_valid3(a: Array, b: Array, c: Array) -> int:
    """First index where ``a``, ``b`` and ``c`` are all non-NaN (``len(a)`` if none)."""
    n: int = a.shape[0]
    for j in range(n):
        if not (math.isnan(a[j]) or math.isnan(b[j]) or math.isnan(c[j])):
            return j
    return n


@helper
def _fill_nan(row: Array, stop: int) -> None:
    for j in range(min(stop, row.shape[0])):
        row[j] = np.nan


@helper
def _true_range(high: Array, low: Array, close: Array, j: int) -> float:
    """TA-Lib's true range of bar ``j``: high - low, then the two previous-close distances."""
    greatest: float = high[j] - low[j]
    val = abs(close[j - 1] - high[j])
    if val > greatest:
        greatest = val
    val = abs(close[j - 1] - low[j])
    if val > greatest:
        greatest = val
    return greatest


# --- the trend score -------------------------------------------------------------------------


@kernel
def ema(x: Array, period: int, out: Array) -> None:
    """TA-Lib 0.8 EMA per row: SMA of the first ``period`` values as seed, then
    ``fma(x - prev, alpha, prev)`` with alpha = 2/(period+1) (bit-identical to TA-Lib)."""
    n_sym, n_bar = x.shape
    alpha = 2.0 / (period + 1.0)
    for i in numba.prange(n_sym):
        row = x[i]
        start = _first_valid(row)
        seed_at = start + period - 1
        for j in range(min(seed_at, n_bar)):
            out[i, j] = np.nan
        if seed_at >= n_bar:
            continue
        total = 0.0
        for j in range(start, seed_at + 1):
            total += row[j]
        prev = total / period
        out[i, seed_at] = prev
        for j in range(seed_at + 1, n_bar):
            # TA-Lib 0.8's step, fma(x - prev, alpha, prev): one rounding, as it does.
            prev = fma(row[j] - prev, alpha, prev)
            out[i, j] = prev


@helper
def _stdev_log_returns(row: Array, first: int, stop: int) -> float:
    """Sample stdev of the log returns into bars ``first..stop-1`` (two passes: a rolling
    one-pass sum loses digits when the window's variance is small next to its mean square)."""
    mean = 0.0
    for j in range(first, stop):
        mean += math.log(row[j] / row[j - 1])
    mean /= stop - first
    ss = 0.0
    for j in range(first, stop):
        d = math.log(row[j] / row[j - 1]) - mean
        ss += d * d
    return math.sqrt(ss / (stop - first - 1))


@kernel
def log_return_vol(close: Array, window: int, out: Array) -> None:
    """Rolling sample stdev (ddof=1) of the last ``window`` log returns; NaN if any is NaN.

    Each window is summed afresh (O(bars * window)): exact to the last digits, where a rolling
    one-pass sum drifts and cancels on quiet stretches.
    """
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        row = close[i]
        nan_count = 0  # NaN returns inside the current window
        if n_bar > 0:
            out[i, 0] = np.nan
        for j in range(1, n_bar):
            if math.isnan(row[j] / row[j - 1]):
                nan_count += 1
            if j > window and math.isnan(row[j - window] / row[j - window - 1]):
                nan_count -= 1
            if j < window or nan_count > 0:
                out[i, j] = np.nan
            else:
                out[i, j] = _stdev_log_returns(row, j + 1 - window, j + 1)


@kernel
def momentum(close: Array, period: int, out: Array) -> None:
    """Rate of change: close / close ``period`` bars earlier - 1 (NaN where either is NaN)."""
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        for j in range(min(period, n_bar)):
            out[i, j] = np.nan
        for j in range(period, n_bar):
            out[i, j] = close[i, j] / close[i, j - period] - 1.0


@helper
def _ema_end(row: Array, start: int, period: int, alpha: float) -> float:
    """The TA-Lib EMA of ``row[start:]`` at its last value (needs ``period`` values)."""
    seed_at = start + period - 1
    total = 0.0
    for j in range(start, seed_at + 1):
        total += row[j]
    prev = total / period
    for j in range(seed_at + 1, row.shape[0]):
        prev = fma(row[j] - prev, alpha, prev)
    return prev


@kernel
def score_last(
    close: Array,
    volume: Array,
    fast: int,
    slow: int,
    vol_window: int,
    out_score: Array,
    out_vol: Array,
) -> None:
    """Volatility-normalised trend at each row's last bar.

    trend = (EMA_fast - EMA_slow) / EMA_slow, vol = sample stdev of the last ``vol_window`` log
    returns, score = trend / max(vol, VOL_FLOOR). ``out_score`` is NaN when the row has fewer
    than ``slow + 1`` bars or ``vol`` is NaN; ``out_vol`` is NaN when it has fewer than
    ``vol_window + 1``. O(bars) per row, no allocation. ``volume`` is part of the
    signature for volume-aware terms and is not read yet.
    """
    n_sym, n_bar = close.shape
    alpha_f = 2.0 / (fast + 1.0)
    alpha_s = 2.0 / (slow + 1.0)
    for i in numba.prange(n_sym):
        row = close[i]
        start = _first_valid(row)
        n_valid = n_bar - start

        vol = np.nan
        if n_valid >= vol_window + 1:
            vol = _stdev_log_returns(row, n_bar - vol_window, n_bar)
        out_vol[i] = vol

        if n_valid < slow + 1 or n_valid < fast or math.isnan(vol):
            out_score[i] = np.nan
            continue
        ema_f = _ema_end(row, start, fast, alpha_f)
        ema_s = _ema_end(row, start, slow, alpha_s)
        trend = (ema_f - ema_s) / ema_s
        out_score[i] = trend / max(vol, VOL_FLOOR)


# --- TA-Lib's indicators ---------------------------------------------------------------------


@kernel
def sma(x: Array, period: int, out: Array) -> None:
    """TA-Lib SMA: a running sum (added, read, then the trailing value taken off)."""
    n_sym, n_bar = x.shape
    for i in numba.prange(n_sym):
        row = x[i]
        start = _first_valid(row)
        first = start + period - 1
        _fill_nan(out[i], first)
        if first >= n_bar:
            continue
        total = 0.0
        for j in range(start, first):
            total += row[j]
        for j in range(first, n_bar):
            total += row[j]
            out[i, j] = total / period
            total -= row[j - period + 1]


@kernel
def rsi(close: Array, period: int, out: Array) -> None:
    """TA-Lib RSI: mean gain/loss of the first ``period`` changes, then Wilder smoothing.

    First value at bar start + period; 0.0 where gains and losses are both zero (flat prices)
    or NaN (after a NaN inside the series), as TA-Lib 0.8 does.
    """
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        row = close[i]
        start = _first_valid(row)
        first = start + period
        _fill_nan(out[i], first)
        if first >= n_bar:
            continue
        gain = 0.0
        loss = 0.0
        for j in range(start + 1, first + 1):
            change = row[j] - row[j - 1]
            if change < 0.0:
                loss -= change
            else:
                gain += change
        loss /= period
        gain /= period
        total = gain + loss
        out[i, first] = 100.0 * (gain / total) if total > 0.0 else 0.0
        for j in range(first + 1, n_bar):
            change = row[j] - row[j - 1]
            loss *= period - 1
            gain *= period - 1
            if change < 0.0:
                loss -= change
            else:
                gain += change
            loss /= period
            gain /= period
            total = gain + loss
            out[i, j] = 100.0 * (gain / total) if total > 0.0 else 0.0


@kernel
def atr(high: Array, low: Array, close: Array, period: int, out: Array) -> None:
    """TA-Lib ATR: mean true range of bars start+1..start+period, then Wilder smoothing."""
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        h = high[i]
        lo = low[i]
        c = close[i]
        start = _first_valid3(h, lo, c)
        first = start + period
        _fill_nan(out[i], first)
        if first >= n_bar:
            continue
        total = 0.0
        for j in range(start + 1, first + 1):
            total += _true_range(h, lo, c, j)
        prev = total / period
        out[i, first] = prev
        for j in range(first + 1, n_bar):
            prev *= period - 1
            prev += _true_range(h, lo, c, j)
            prev /= period
            out[i, j] = prev


@kernel
def adx(high: Array, low: Array, close: Array, period: int, out: Array) -> None:
    """TA-Lib ADX (Wilder): first value at bar start + 2*period - 1.

    As TA-Lib: +DM/-DM/TR are summed over bars start+1..start+period-1, then smoothed with
    ``s -= s / period; s += today`` (TR: ``s - s / period + today``); the first ADX is the mean
    of the next ``period`` DX values; a DX whose TR or DI sum is not positive (zero, or NaN
    after a NaN inside the series) is skipped and the previous ADX carried, as TA-Lib 0.8.
    """
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        h = high[i]
        lo = low[i]
        c = close[i]
        start = _first_valid3(h, lo, c)
        first = start + 2 * period - 1
        _fill_nan(out[i], first)
        if first >= n_bar:
            continue
        minus_dm = 0.0
        plus_dm = 0.0
        tr = 0.0
        for j in range(start + 1, start + period):
            diff_p = h[j] - h[j - 1]
            diff_m = lo[j - 1] - lo[j]
            if diff_m > 0 and diff_p < diff_m:
                minus_dm += diff_m
            elif diff_p > 0 and diff_p > diff_m:
                plus_dm += diff_p
            tr += _true_range(h, lo, c, j)
        sum_dx = 0.0
        prev_adx = 0.0
        for j in range(start + period, n_bar):
            diff_p = h[j] - h[j - 1]
            diff_m = lo[j - 1] - lo[j]
            minus_dm -= minus_dm / period
            plus_dm -= plus_dm / period
            if diff_m > 0 and diff_p < diff_m:
                minus_dm += diff_m
            elif diff_p > 0 and diff_p > diff_m:
                plus_dm += diff_p
            tr = tr - tr / period + _true_range(h, lo, c, j)
            have_dx = False
            dx = 0.0
            if tr > 0.0:
                minus_di = 100.0 * (minus_dm / tr)
                plus_di = 100.0 * (plus_dm / tr)
                di_sum = minus_di + plus_di
                if di_sum > 0.0:
                    dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
                    have_dx = True
            if j < first:
                if have_dx:
                    sum_dx += dx
                continue
            if j == first:
                if have_dx:
                    sum_dx += dx
                prev_adx = sum_dx / period
            elif have_dx:
                prev_adx = (prev_adx * (period - 1) + dx) / period
            out[i, j] = prev_adx


@kernel
def bbands_width(close: Array, period: int, nbdev: float, out: Array) -> None:
    """Bollinger width (upper - lower) / middle with TA-Lib's bands: middle = SMA, population
    stdev, upper/lower = middle +/- stdev * nbdev (the multiply skipped when nbdev == 1).

    The stdev is two-pass over each window around TA-Lib's SMA (exact; TA-Lib 0.8's own
    variance agrees to ~1e-12), and 0.0 when the variance is not positive, as TA-Lib.
    """
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        row = close[i]
        start = _first_valid(row)
        first = start + period - 1
        _fill_nan(out[i], first)
        if first >= n_bar:
            continue
        total = 0.0
        for j in range(start, first):
            total += row[j]
        for j in range(first, n_bar):
            total += row[j]
            middle = total / period
            total -= row[j - period + 1]
            ss = 0.0
            for k in range(j - period + 1, j + 1):
                d = row[k] - middle
                ss += d * d
            var = ss / period
            std = math.sqrt(var) if var > 0.0 else 0.0
            band = std * nbdev if nbdev != 1.0 else std
            out[i, j] = ((middle + band) - (middle - band)) / middle


@helper
def _ema_seed(row: Array, begin: int, period: int) -> float:
    """SMA of ``row[begin:begin+period]``, TA-Lib's EMA seed."""
    total = 0.0
    for j in range(begin, begin + period):
        total += row[j]
    return total / period


@kernel
def macd(
    close: Array,
    fast: int,
    slow: int,
    signal: int,
    out_macd: Array,
    out_signal: Array,
    out_hist: Array,
) -> None:
    """TA-Lib MACD: all three outputs start at bar start + slow + signal - 2.

    As TA-Lib: periods are swapped when slow < fast; the fast EMA is seeded on the ``fast``
    bars that end where the slow EMA's seed ends (so both start at start + slow - 1); every EMA
    (fast, slow, and the signal, seeded with the mean of the first ``signal`` MACD values)
    steps as TA-Lib 0.8's fused ``fma(x - prev, k, prev)``, k = 2 / (n + 1).
    """
    if slow < fast:
        fast, slow = slow, fast
    k_fast = 2.0 / (fast + 1.0)
    k_slow = 2.0 / (slow + 1.0)
    k_signal = 2.0 / (signal + 1.0)
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        row = close[i]
        start = _first_valid(row)
        macd_first = start + slow - 1
        first = macd_first + signal - 1
        _fill_nan(out_macd[i], first)
        _fill_nan(out_signal[i], first)
        _fill_nan(out_hist[i], first)
        if first >= n_bar:
            continue
        ema_fast = _ema_seed(row, macd_first - fast + 1, fast)
        ema_slow = _ema_seed(row, start, slow)
        # The MACD line is written from macd_first so the signal seed can read it back.
        line = out_macd[i]
        line[macd_first] = ema_fast - ema_slow
        for j in range(macd_first + 1, first + 1):
            ema_fast = fma(row[j] - ema_fast, k_fast, ema_fast)
            ema_slow = fma(row[j] - ema_slow, k_slow, ema_slow)
            line[j] = ema_fast - ema_slow
        prev = _ema_seed(line, macd_first, signal)
        _fill_nan(line, first)  # TA-Lib shows no MACD before its signal exists
        value = line[first]
        out_signal[i, first] = prev
        out_hist[i, first] = value - prev
        for j in range(first + 1, n_bar):
            ema_fast = fma(row[j] - ema_fast, k_fast, ema_fast)
            ema_slow = fma(row[j] - ema_slow, k_slow, ema_slow)
            value = ema_fast - ema_slow
            prev = fma(value - prev, k_signal, prev)
            line[j] = value
            out_signal[i, j] = prev
            out_hist[i, j] = value - prev


@kernel
def realized_vol(close: Array, window: int, out: Array) -> None:
    """Rolling sample stdev (ddof=1) of the last ``window`` log returns, two-pass per window.

    First value at bar start + window; NaN while the window holds a NaN return.
    """
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        row = close[i]
        start = _first_valid(row)
        first = start + window
        _fill_nan(out[i], first)
        # Each log return once (the logs were most of the cost), then the same two passes.
        ret = np.empty(n_bar)
        for k in range(start + 1, n_bar):
            ret[k] = math.log(row[k] / row[k - 1])
        for j in range(first, n_bar):
            mean = 0.0
            for k in range(j - window + 1, j + 1):
                mean += ret[k]
            mean /= window
            ss = 0.0
            for k in range(j - window + 1, j + 1):
                d = ret[k] - mean
                ss += d * d
            out[i, j] = math.sqrt(ss / (window - 1))


@kernel
def volume_zscore(volume: Array, window: int, out: Array) -> None:
    """(v - mean) / stdev over the last ``window`` bars, the current bar included; POPULATION
    stdev (ddof=0), two-pass per window. 0.0 when the window is flat (stdev 0, e.g. all-zero
    volume): the bar is then exactly at its mean. First value at bar start + window - 1.
    """
    n_sym, n_bar = volume.shape
    for i in numba.prange(n_sym):
        row = volume[i]
        start = _first_valid(row)
        first = start + window - 1
        _fill_nan(out[i], first)
        for j in range(first, n_bar):
            mean = 0.0
            for k in range(j - window + 1, j + 1):
                mean += row[k]
            mean /= window
            ss = 0.0
            for k in range(j - window + 1, j + 1):
                d = row[k] - mean
                ss += d * d
            std = math.sqrt(ss / window)
            out[i, j] = (row[j] - mean) / std if std > 0.0 else (row[j] - mean) * 0.0


@kernel
def roc(close: Array, period: int, out: Array) -> None:
    """TA-Lib ROC: (x / x[-period] - 1) * 100, and 0.0 where x[-period] is 0, as TA-Lib."""
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        row = close[i]
        start = _first_valid(row)
        first = start + period
        _fill_nan(out[i], first)
        for j in range(first, n_bar):
            before = row[j - period]
            out[i, j] = ((row[j] / before) - 1.0) * 100.0 if before != 0.0 else 0.0


# --- the Python layer ------------------------------------------------------------------------


def _series(
    kernel: Callable[[Array, int, Array], None],
    name: str,
    x: Array,
    *,
    minimum: int,
    **period: int,
) -> Array:
    """Check one series and its one period, allocate the output, run ``kernel``."""
    x = bars(name, x)
    at_least(minimum, **period)
    out = np.empty_like(x)
    kernel(x, int(next(iter(period.values()))), out)
    return out


def compute_sma(x: Array, *, period: int) -> Array:
    """Simple moving average per row (TA-Lib SMA)."""
    return _series(sma, "x", x, period=period, minimum=1)


def compute_rsi(close: Array, *, period: int) -> Array:
    """Relative strength index per row (TA-Lib RSI, Wilder smoothing)."""
    return _series(rsi, "close", close, period=period, minimum=1)


def compute_atr(high: Array, low: Array, close: Array, *, period: int) -> Array:
    """Average true range per row (TA-Lib ATR)."""
    high, low, close = hlc(high, low, close)
    at_least(1, period=period)
    out = np.empty_like(close)
    atr(high, low, close, int(period), out)
    return out


def compute_adx(high: Array, low: Array, close: Array, *, period: int) -> Array:
    """Average directional index per row (TA-Lib ADX)."""
    high, low, close = hlc(high, low, close)
    at_least(1, period=period)
    out = np.empty_like(close)
    adx(high, low, close, int(period), out)
    return out


def compute_bbands_width(close: Array, *, period: int, nbdev: float) -> Array:
    """Bollinger band width (upper - lower) / middle per row (TA-Lib BBANDS, SMA middle)."""
    close = bars("close", close)
    at_least(1, period=period)
    if not math.isfinite(nbdev) or nbdev < 0.0:
        raise ValueError(f"nbdev must be finite and >= 0, got {nbdev}")
    out = np.empty_like(close)
    bbands_width(close, int(period), float(nbdev), out)
    return out


def compute_macd(close: Array, *, fast: int, slow: int, signal: int) -> tuple[Array, Array, Array]:
    """(macd, signal, histogram) per row (TA-Lib MACD)."""
    close = bars("close", close)
    at_least(1, fast=fast, slow=slow, signal=signal)
    out_macd = np.empty_like(close)
    out_signal = np.empty_like(close)
    out_hist = np.empty_like(close)
    macd(close, int(fast), int(slow), int(signal), out_macd, out_signal, out_hist)
    return out_macd, out_signal, out_hist


def compute_realized_vol(close: Array, *, window: int) -> Array:
    """Rolling sample stdev of log returns per row."""
    return _series(realized_vol, "close", close, window=window, minimum=2)


def compute_volume_zscore(volume: Array, *, window: int) -> Array:
    """Rolling z-score of volume per row (population stdev, current bar in the window)."""
    return _series(volume_zscore, "volume", volume, window=window, minimum=1)


def compute_roc(close: Array, *, period: int) -> Array:
    """Rate of change in percent per row (TA-Lib ROC)."""
    return _series(roc, "close", close, period=period, minimum=1)


def _as_bars(name: str, a: NDArray[Any]) -> Array:
    if a.dtype != np.float64:
        raise TypeError(f"{name} must be float64, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (symbols, bars), got shape {a.shape}")
    return np.ascontiguousarray(a)


def compute_scores(
    close: Array,
    volume: Array,
    *,
    fast: int,
    slow: int,
    vol_window: int,
) -> tuple[Array, Array]:
    """(score, vol) per symbol at the last bar; see ``score_last``."""
    close = _as_bars("close", close)
    volume = _as_bars("volume", volume)
    if volume.shape != close.shape:
        raise ValueError(f"volume shape {volume.shape} != close shape {close.shape}")
    if fast < 1 or slow < 1 or vol_window < 2:
        raise ValueError(f"need fast, slow >= 1 and vol_window >= 2: {fast}, {slow}, {vol_window}")
    n_sym = close.shape[0]
    scores = np.empty(n_sym, dtype=np.float64)
    vols = np.empty(n_sym, dtype=np.float64)
    score_last(close, volume, fast, slow, vol_window, scores, vols)
    return scores, vols


def warm_up() -> None:
    """Compile (or load from the cache) every reference kernel on tiny arrays."""
    close = np.linspace(100.0, 103.0, 3 * 12).reshape(3, 12)
    close[0, :2] = np.nan
    high = close + 0.5
    low = close - 0.5
    compute_sma(close, period=3)
    compute_rsi(close, period=3)
    compute_atr(high, low, close, period=3)
    compute_adx(high, low, close, period=3)
    compute_bbands_width(close, period=3, nbdev=2.0)
    compute_macd(close, fast=2, slow=3, signal=2)
    compute_realized_vol(close, window=3)
    compute_volume_zscore(close, window=3)
    compute_roc(close, period=2)
    out = np.empty_like(close)
    ema(close, 3, out)
    log_return_vol(close, 3, out)
    momentum(close, 2, out)
    compute_scores(close, close, fast=2, slow=3, vol_window=3)
