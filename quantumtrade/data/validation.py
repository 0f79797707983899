"""Bar validation before anything is stored: a bad record is rejected with a reason, never fixed."""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def bar_fault(bar: Bar) -> str | None:
    """Why a bar's values are unusable on their own (None: they are fine); timestamps aside."""
    o, h, lo, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
    if not (
        math.isfinite(o)
        and math.isfinite(h)
        and math.isfinite(lo)
        and math.isfinite(c)
        and math.isfinite(v)
    ):
        return NON_FINITE
    if o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0:
        return NON_POSITIVE_PRICE
    if h < lo or h < o or h < c or lo > o or lo > c:
        return HIGH_LOW_INCONSISTENT
    if v < 0.0:
        return NEGATIVE_VOLUME
    return None


def validate_bars(
    bars: Sequence[Bar], last_ts_ms: int | None
) -> tuple[list[Bar], list[tuple[Bar, str]]]:
    """Split ``bars`` into accepted bars and (bar, reason) rejects, keeping the input order.

    Timestamps must strictly increase after ``last_ts_ms`` (the newest stored bar) and after
    every bar accepted earlier in the batch; a rejected bar does not move that mark.
    """
    accepted: list[Bar] = []
    rejected: list[tuple[Bar, str]] = []
    prev = last_ts_ms
    isfinite = math.isfinite
    for bar in bars:
        o, h, lo, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
        # One test for the common case: every price finite and positive, OHLC consistent
        # (which implies lo ≤ h), volume ≥ 0; NaN fails every comparison, so it falls through.
        if not (
            lo > 0.0
            and h >= o
            and h >= c
            and lo <= o
            and lo <= c
            and v >= 0.0
            and isfinite(h)
            and isfinite(v)
        ):
            fault = bar_fault(bar)
            if fault is not None:
                rejected.append((bar, fault))
                continue
        ts = bar.ts_ms
        if prev is not None and ts <= prev:
            rejected.append((bar, DUPLICATE_TIMESTAMP if ts == prev else OUT_OF_ORDER))
            continue
        accepted.append(bar)
        prev = ts
    return accepted, rejected
