"""Numba kernels over (symbols, bars) float64 arrays, and the thin Python layer in front of them.

Conventions shared by every kernel:

* Arrays are C-contiguous float64, one row per symbol, oldest bar first, newest bar last.
* A row may start with NaN padding (a symbol with fewer bars than the window); each row's
  series starts at its first non-NaN value. A NaN inside the series propagates the way TA-Lib's
  does (no data is invented).
* Outputs are preallocated by the caller and passed as ``out``; kernels allocate nothing.
* Rows are independent, so the 2-D kernels run ``prange`` over symbols.
"""

from __future__ import annotations

import math
import types as pytypes
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numpy.typing import NDArray

F = TypeVar("F", bound=Callable[..., Any])

# The one set of jit flags. fastmath stays off: it would let LLVM reorder the sums and break
# the agreement with TA-Lib and replay parity. error_model="numpy": x / 0 gives inf/NaN as in
# NumPy instead of raising ZeroDivisionError from inside a kernel.
_JIT: dict[str, Any] = dict(
    nopython=True, cache=True, nogil=True, fastmath=False, error_model="numpy"
)
# Floor on volatility so a flat series scores a finite (huge) value instead of dividing by 0.
VOL_FLOOR = 1e-12


def _llvm_fma(nb_type: Any, ir_type: Any, name: str) -> Any:
    """An intrinsic ``a * b + c`` of ``nb_type`` rounded once: LLVM's ``name`` (the hardware
    instruction or libm's exact fma)."""

    def fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            fnty = ir.FunctionType(ir_type, [ir_type, ir_type, ir_type])
            fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
                builder.module, fnty, name
            )
            return builder.call(fn, args)

        return nb_type(nb_type, nb_type, nb_type), codegen

    fma.__name__ = fma.__qualname__ = name.replace(".", "_")
    return intrinsic(fma)


# Numba has no math.fma (Python 3.13 adds it); typed for mypy as the plain functions they are.
_fma = cast(
    Callable[[float, float, float], float],
    _llvm_fma(types.float64, ir.DoubleType(), "llvm.fma.f64"),
)
_fma32 = cast(
    Callable[[np.float32, np.float32, np.float32], np.float32],
    _llvm_fma(types.float32, ir.FloatType(), "llvm.fma.f32"),
)


@intrinsic
def _prefetch_intrinsic(typingctx: Any, a: Any, i: Any) -> Any:
    """Ask the cache for the line holding ``a[i]`` (LLVM's prefetch: a hint, which never
    faults, even past the array's end, and changes no result)."""
    sig = types.void(a, types.intp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        byte_ptr = ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), byte_ptr)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        # The overload's name follows this llvmlite's pointer mangling (p0i8 for typed
        # pointers, which newer LLVMs remangle to p0).
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, fnty, f"llvm.prefetch.{byte_ptr.intrinsic_name}"
        )
        # read, keep in every cache level, data
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


_prefetch = cast(Callable[[NDArray[Any], int], None], _prefetch_intrinsic)


def _kernel(fn: F) -> F:
    """Compile a 2-D kernel with the shared flags, parallel over symbols (typed for mypy)."""
    return cast(F, numba.jit(**_JIT, parallel=True)(fn))


PARALLEL_MIN_ROWS = 256
"""Below this many symbols a kernel called once per bar runs on the calling thread: waking
numba's thread pool costs more than the work (tens of µs idle, milliseconds on a busy box)."""


def serial_twin(kernel: F) -> F:
    """``kernel`` compiled without ``parallel`` (its ``prange`` runs as ``range``): the same
    results, rows one after another. A copy of the function under its own name, so numba's
    on-disk cache keeps the two builds apart."""
    fn = kernel.py_func  # type: ignore[attr-defined]
    twin = pytypes.FunctionType(
        fn.__code__, fn.__globals__, f"{fn.__name__}_serial", fn.__defaults__, fn.__closure__
    )
    twin.__qualname__ = f"{fn.__qualname__}_serial"
    twin.__module__ = fn.__module__
    return cast(F, numba.jit(**_JIT)(twin))


def by_rows(kernel: F, serial: F, rows: int) -> F:
    """The build to call for ``rows`` symbols."""
    return kernel if rows >= PARALLEL_MIN_ROWS else serial


def _helper(fn: F) -> F:
    """Compile a per-row helper that the kernels call, with the shared flags."""
    return cast(F, numba.jit(**_JIT)(fn))


@_helper
def _first_valid(row: NDArray[np.float64]) -> int:
    """Index of the first non-NaN value of ``row`` (``len(row)`` when there is none)."""
    n: int = row.shape[0]
    for j in range(n):
        if not math.isnan(row[j]):
            return j
    return n


@_kernel
def ema(x: NDArray[np.float64], period: int, out: NDArray[np.float64]) -> None:
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
            prev = _fma(row[j] - prev, alpha, prev)
            out[i, j] = prev


@_helper
def _stdev_log_returns(row: NDArray[np.float64], first: int, stop: int) -> float:
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


@_kernel
def log_return_vol(close: NDArray[np.float64], window: int, out: NDArray[np.float64]) -> None:
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


@_kernel
def momentum(close: NDArray[np.float64], period: int, out: NDArray[np.float64]) -> None:
    """Rate of change: close / close ``period`` bars earlier - 1 (NaN where either is NaN)."""
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        for j in range(min(period, n_bar)):
            out[i, j] = np.nan
        for j in range(period, n_bar):
            out[i, j] = close[i, j] / close[i, j - period] - 1.0


@_helper
def _ema_end(row: NDArray[np.float64], start: int, period: int, alpha: float) -> float:
    """The TA-Lib EMA of ``row[start:]`` at its last value (needs ``period`` values)."""
    seed_at = start + period - 1
    total = 0.0
    for j in range(start, seed_at + 1):
        total += row[j]
    prev = total / period
    for j in range(seed_at + 1, row.shape[0]):
        prev = _fma(row[j] - prev, alpha, prev)
    return prev


@_kernel
def score_last(
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    fast: int,
    slow: int,
    vol_window: int,
    out_score: NDArray[np.float64],
    out_vol: NDArray[np.float64],
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


def _as_bars(name: str, a: NDArray[Any]) -> NDArray[np.float64]:
    if a.dtype != np.float64:
        raise TypeError(f"{name} must be float64, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (symbols, bars), got shape {a.shape}")
    return np.ascontiguousarray(a)


def compute_scores(
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    *,
    fast: int,
    slow: int,
    vol_window: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
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
    """Compile (or load from numba's cache) the kernels the daemon's scan runs: the fused
    full-pass kernel and the incremental one (``indicators.warm_up_scan``). The trend-score
    kernels here are the reference the fused kernel is tested against; loading them at start
    would only cost time."""
    from quantumtrade.scoring.indicators import warm_up_scan  # imports this module

    warm_up_scan()
