"""Bar validation before anything is stored: a bad record is rejected with a reason, never fixed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.data.source import BarBatch
from quantumtrade.events import Bar

NON_FINITE = "non_finite"
NON_POSITIVE_PRICE = "non_positive_price"
HIGH_LOW_INCONSISTENT = "high_low_inconsistent"
NEGATIVE_VOLUME = "negative_volume"
DUPLICATE_TIMESTAMP = "duplicate_timestamp"
OUT_OF_ORDER = "out_of_order"
REASONS: tuple[str, ...] = (
    NON_FINITE,
    NON_POSITIVE_PRICE,
    HIGH_LOW_INCONSISTENT,
    NEGATIVE_VOLUME,
    DUPLICATE_TIMESTAMP,
    OUT_OF_ORDER,
)


# Codes of the validation kernel: 0 accepted, else 1 + the index of the reason in REASONS.
OK = 0
NO_BAR = np.iinfo(np.int64).min
"""``last_ts_ms`` of a symbol that holds no bar yet."""


@numba.njit(cache=True, nogil=True, inline="always")
def _value_fault(o: float, h: float, lo: float, c: float, v: float) -> int:
    # One test for the common case: every price finite and positive, OHLC consistent (which
    # implies lo ≤ h), volume ≥ 0; NaN fails every comparison, so it falls through.
    if (
        lo > 0.0
        and h >= o
        and h >= c
        and lo <= o
        and lo <= c
        and v >= 0.0
        and h < math.inf
        and v < math.inf
    ):
        return OK
    if not (
        math.isfinite(o)
        and math.isfinite(h)
        and math.isfinite(lo)
        and math.isfinite(c)
        and math.isfinite(v)
    ):
        return 1  # NON_FINITE
    if o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0:
        return 2  # NON_POSITIVE_PRICE
    if h < lo or h < o or h < c or lo > o or lo > c:
        return 3  # HIGH_LOW_INCONSISTENT
    if v < 0.0:
        return 4  # NEGATIVE_VOLUME
    return OK


@numba.njit(cache=True, nogil=True, inline="always")
def validate_run(
    ts: NDArray[np.int64],
    prices: NDArray[np.float64],
    a: int,
    b: int,
    prev: int,
    codes: NDArray[np.int8],
) -> int:
    """Codes for bars a..b-1 of one symbol (after its stored bar at ``prev``); returns how
    many are OK. The one place the rules are applied (``validate_batch``, and
    ``MarketState.append_validated`` in the same pass as the append)."""
    ok = 0
    for i in range(a, b):
        code = _value_fault(prices[i, 0], prices[i, 1], prices[i, 2], prices[i, 3], prices[i, 4])
        if code == OK and ts[i] <= prev:
            code = 5 if ts[i] == prev else 6  # DUPLICATE_TIMESTAMP / OUT_OF_ORDER
        if code == OK:
            prev = ts[i]
            ok += 1
        codes[i] = code
    return ok


@numba.njit(cache=True, nogil=True, parallel=True)
def _validate(
    ts: NDArray[np.int64],
    prices: NDArray[np.float64],
    offsets: NDArray[np.int64],
    last_ts: NDArray[np.int64],
    codes: NDArray[np.int8],
) -> None:
    for j in numba.prange(offsets.shape[0] - 1):
        validate_run(ts, prices, offsets[j], offsets[j + 1], last_ts[j], codes)


def validate_batch(batch: BarBatch, last_ts_ms: NDArray[np.int64]) -> NDArray[np.int8]:
    """A code per bar of ``batch``: ``OK`` or 1 + the index of its reason in ``REASONS``.

    Per symbol ``j``, timestamps must strictly increase after ``last_ts_ms[j]`` (the newest
    stored bar; ``NO_BAR`` when there is none) and after every bar accepted earlier in the
    batch; a rejected bar does not move that mark.
    """
    if last_ts_ms.shape != (len(batch),):
        raise ValueError(f"need one last_ts_ms per symbol ({len(batch)}), got {last_ts_ms.shape}")
    codes = np.empty(batch.total, dtype=np.int8)
    _validate(batch.ts_ms, batch.prices, batch.offsets, last_ts_ms.astype(np.int64), codes)
    return codes


def bar_fault(bar: Bar) -> str | None:
    """Why a bar's values are unusable on their own (None: they are fine); timestamps aside."""
    code = _value_fault(bar.open, bar.high, bar.low, bar.close, bar.volume)
    return None if code == OK else REASONS[code - 1]


def validate_bars(
    bars: Sequence[Bar], last_ts_ms: int | None
) -> tuple[list[Bar], list[tuple[Bar, str]]]:
    """Split ``bars`` into accepted bars and (bar, reason) rejects, keeping the input order
    (the rules of ``validate_batch``, for one symbol's records)."""
    if not bars:
        return [], []
    batch = BarBatch.from_bars(("",), (bars,))
    last = np.array([NO_BAR if last_ts_ms is None else last_ts_ms], dtype=np.int64)
    accepted: list[Bar] = []
    rejected: list[tuple[Bar, str]] = []
    for bar, code in zip(bars, validate_batch(batch, last).tolist(), strict=True):
        if code == OK:
            accepted.append(bar)
        else:
            rejected.append((bar, REASONS[code - 1]))
    return accepted, rejected
