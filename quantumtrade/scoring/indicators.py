"""TA-Lib-exact indicator kernels over (symbols, bars) float64 arrays, and their Python layer.

Conventions (those of ``kernels.py``): C-contiguous float64 rows, oldest bar first; a row may
start with NaN padding and each row's indicator starts at its first non-NaN value (for
high/low/close, the first bar where all three are non-NaN, as TA-Lib's Python wrapper does);
NaN before the warm-up; a NaN inside the series propagates through the recursion as it does in
TA-Lib. Outputs are preallocated by the caller; rows run in ``prange``.

Each TA-Lib indicator repeats TA-Lib's own operation order, so results agree with the installed
TA-Lib (C 0.8.1) to the last bit for SMA, ADX, Bollinger width's middle band, MACD and ROC, and
within a few ulps (< 3e-15 relative) for RSI and ATR, whose Wilder step TA-Lib 0.8 no longer
writes in the classic ``prev *= n - 1; prev += x; prev /= n`` form we keep (its new form was
not identified). TA-Lib 0.8's EMA step is a fused multiply-add, ``fma(x - prev, k, prev)``,
reproduced here for MACD. The Bollinger stdev is exact where TA-Lib's is not (< 1e-10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numpy.typing import NDArray

from quantumtrade.scoring.kernels import _JIT

F = TypeVar("F", bound=Callable[..., Any])
Array = NDArray[np.float64]


def _kernel(fn: F) -> F:
    """Compile a 2-D kernel with the shared flags, parallel over symbols."""
    return cast(F, numba.jit(**_JIT, parallel=True)(fn))


def _helper(fn: F) -> F:
    """Compile a per-row helper with the shared flags."""
    return cast(F, numba.jit(**_JIT)(fn))


@intrinsic
def _fma_intrinsic(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c rounded once (LLVM's fma: the hardware instruction or libm's exact fma)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        double = ir.DoubleType()
        fnty = ir.FunctionType(double, [double, double, double])
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, fnty, "llvm.fma.f64"
        )
        return builder.call(fn, args)

    return sig, codegen


# Numba has no math.fma (Python 3.13 adds it); typed for mypy as the plain function it is.
_fma = cast(Callable[[float, float, float], float], _fma_intrinsic)


@_helper
def _first_valid(row: Array) -> int:
    """Index of the first non-NaN value of ``row`` (``len(row)`` when there is none)."""
    n: int = row.shape[0]
    for j in range(n):
        if not math.isnan(row[j]):
            return j
    return n


@_helper
def _first_valid3(a: Array, b: Array, c: Array) -> int:
    """First index where ``a``, ``b`` and ``c`` are all non-NaN (``len(a)`` if none)."""
    n: int = a.shape[0]
    for j in range(n):
        if not (math.isnan(a[j]) or math.isnan(b[j]) or math.isnan(c[j])):
            return j
    return n


@_helper
def _fill_nan(row: Array, stop: int) -> None:
    for j in range(min(stop, row.shape[0])):
        row[j] = np.nan


@_helper
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


@_kernel
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


@_kernel
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


@_kernel
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


@_kernel
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


@_kernel
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


@_helper
def _ema_seed(row: Array, begin: int, period: int) -> float:
    """SMA of ``row[begin:begin+period]``, TA-Lib's EMA seed."""
    total = 0.0
    for j in range(begin, begin + period):
        total += row[j]
    return total / period


@_kernel
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
            ema_fast = _fma(row[j] - ema_fast, k_fast, ema_fast)
            ema_slow = _fma(row[j] - ema_slow, k_slow, ema_slow)
            line[j] = ema_fast - ema_slow
        prev = _ema_seed(line, macd_first, signal)
        _fill_nan(line, first)  # TA-Lib shows no MACD before its signal exists
        value = line[first]
        out_signal[i, first] = prev
        out_hist[i, first] = value - prev
        for j in range(first + 1, n_bar):
            ema_fast = _fma(row[j] - ema_fast, k_fast, ema_fast)
            ema_slow = _fma(row[j] - ema_slow, k_slow, ema_slow)
            value = ema_fast - ema_slow
            prev = _fma(value - prev, k_signal, prev)
            line[j] = value
            out_signal[i, j] = prev
            out_hist[i, j] = value - prev


@_kernel
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


@_kernel
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


@_kernel
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


def _bars(name: str, a: NDArray[Any]) -> Array:
    if not isinstance(a, np.ndarray) or a.dtype != np.float64:
        raise TypeError(f"{name} must be a float64 array, got {getattr(a, 'dtype', type(a))}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (symbols, bars), got shape {a.shape}")
    return np.ascontiguousarray(a)


def _same_shape(first: Array, **others: Array) -> None:
    for name, a in others.items():
        if a.shape != first.shape:
            raise ValueError(f"{name} shape {a.shape} != {first.shape}")


def _at_least(minimum: int, **periods: int) -> None:
    for name, value in periods.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _series(
    kernel: Callable[[Array, int, Array], None],
    name: str,
    x: Array,
    *,
    minimum: int,
    **period: int,
) -> Array:
    """Check one series and its one period, allocate the output, run ``kernel``."""
    x = _bars(name, x)
    _at_least(minimum, **period)
    out = np.empty_like(x)
    kernel(x, int(next(iter(period.values()))), out)
    return out


def compute_sma(x: Array, *, period: int) -> Array:
    """Simple moving average per row (TA-Lib SMA)."""
    return _series(sma, "x", x, period=period, minimum=1)


def compute_rsi(close: Array, *, period: int) -> Array:
    """Relative strength index per row (TA-Lib RSI, Wilder smoothing)."""
    return _series(rsi, "close", close, period=period, minimum=1)


def _hlc(high: Array, low: Array, close: Array) -> tuple[Array, Array, Array]:
    high, low, close = _bars("high", high), _bars("low", low), _bars("close", close)
    _same_shape(close, high=high, low=low)
    return high, low, close


def compute_atr(high: Array, low: Array, close: Array, *, period: int) -> Array:
    """Average true range per row (TA-Lib ATR)."""
    high, low, close = _hlc(high, low, close)
    _at_least(1, period=period)
    out = np.empty_like(close)
    atr(high, low, close, int(period), out)
    return out


def compute_adx(high: Array, low: Array, close: Array, *, period: int) -> Array:
    """Average directional index per row (TA-Lib ADX)."""
    high, low, close = _hlc(high, low, close)
    _at_least(1, period=period)
    out = np.empty_like(close)
    adx(high, low, close, int(period), out)
    return out


def compute_bbands_width(close: Array, *, period: int, nbdev: float) -> Array:
    """Bollinger band width (upper - lower) / middle per row (TA-Lib BBANDS, SMA middle)."""
    close = _bars("close", close)
    _at_least(1, period=period)
    if not math.isfinite(nbdev) or nbdev < 0.0:
        raise ValueError(f"nbdev must be finite and >= 0, got {nbdev}")
    out = np.empty_like(close)
    bbands_width(close, int(period), float(nbdev), out)
    return out


def compute_macd(close: Array, *, fast: int, slow: int, signal: int) -> tuple[Array, Array, Array]:
    """(macd, signal, histogram) per row (TA-Lib MACD)."""
    close = _bars("close", close)
    _at_least(1, fast=fast, slow=slow, signal=signal)
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


def warm_up() -> None:
    """Compile (or load from the cache) every indicator kernel on tiny arrays."""
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
