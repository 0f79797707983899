"""Argument checks of the Python layers in front of the scoring kernels: float64 (symbols, bars)
arrays of one shape, integer periods."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def bars(name: str, a: NDArray[Any]) -> Array:
    """``a`` as a C-contiguous float64 (symbols, bars) array (a copy only if it is not one)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float64:
        raise TypeError(f"{name} must be a float64 array, got {getattr(a, 'dtype', type(a))}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (symbols, bars), got shape {a.shape}")
    return np.ascontiguousarray(a)


def same_shape(first: Array, **others: Array) -> None:
    for name, a in others.items():
        if a.shape != first.shape:
            raise ValueError(f"{name} shape {a.shape} != {first.shape}")


def at_least(minimum: int, **periods: int) -> None:
    for name, value in periods.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def hlc(high: Array, low: Array, close: Array) -> tuple[Array, Array, Array]:
    """High, low and close checked by ``bars``, of one shape."""
    high, low, close = bars("high", high), bars("low", low), bars("close", close)
    same_shape(close, high=high, low=low)
    return high, low, close
