"""The numba machinery every kernel module shares (scoring's and regime's): the one set of jit
flags and the decorators that apply it, the LLVM intrinsics numba lacks (fused multiply-add,
prefetch), and the serial twin of a parallel kernel. It imports nothing of quantumtrade, so
every kernel module can import it.
"""

from __future__ import annotations

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
JIT_FLAGS: dict[str, Any] = dict(
    nopython=True, cache=True, nogil=True, fastmath=False, error_model="numpy"
)


def kernel(fn: F) -> F:
    """Compile a 2-D kernel with the shared flags, parallel over symbols (typed for mypy)."""
    return cast(F, numba.jit(**JIT_FLAGS, parallel=True)(fn))


def helper(fn: F) -> F:
    """Compile a helper that the kernels call, with the shared flags."""
    return cast(F, numba.jit(**JIT_FLAGS)(fn))


def inline(fn: F) -> F:
    """A helper inlined at numba's IR level, so the lane loops that call it stay call-free
    (vectorisable)."""
    return cast(F, numba.jit(**JIT_FLAGS, inline="always")(fn))


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
    return cast(F, numba.jit(**JIT_FLAGS)(twin))


def by_rows(kernel: F, serial: F, rows: int) -> F:
    """The build to call for ``rows`` symbols."""
    return kernel if rows >= PARALLEL_MIN_ROWS else serial


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
fma = cast(
    Callable[[float, float, float], float],
    _llvm_fma(types.float64, ir.DoubleType(), "llvm.fma.f64"),
)
fma32 = cast(
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


prefetch = cast(Callable[[NDArray[Any], int], None], _prefetch_intrinsic)
