"""The anomaly kinds and ``AnomalyConfig`` (no numba: config and the API import this)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec
import numpy as np
from numpy.typing import NDArray


class AnomalyKind(StrEnum):
    SPIKE = "spike"
    """A bar's log return far from the symbol's recent returns (a spike or a crash bar)."""
    RANGE = "range"
    """A bar's high-low range far above the symbol's recent ranges."""
    VOLUME = "volume"
    """A bar's volume far above the symbol's recent volumes (a burst)."""
    FROZEN = "frozen"
    """``frozen_bars`` bars in a row with zero volume, or with zero range at the last close."""
    MISSING_BARS = "missing_bars"
    """The bar's open time jumps past the next expected one: bars are missing."""
    PRICE_GAP = "price_gap"
    """The bar opens far from the previous close, in units of recent volatility."""
    TICKER = "ticker"
    """A ticker far from the last bar's close, in units of recent volatility."""


KINDS: tuple[AnomalyKind, ...] = tuple(AnomalyKind)
"""A kind's code: its index here (the kernel's columns)."""
KIND_CODE: dict[AnomalyKind, int] = {k: i for i, k in enumerate(KINDS)}

Threshold = Annotated[float, msgspec.Meta(gt=0)]


class AnomalyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[anomaly]``: robust z-score thresholds per kind, warm-up, clearing, the risk pause.

    The z thresholds are what ``scripts/research/anomaly_eval.py --tune`` chose on
    binance-spot-1h-2021 (injections seed 1); ``ticker_z`` (no tickers in candle files) is
    set like ``spike_z``.

    Scores are robust z-scores: (x - location) / scale, where location and scale are
    exponentially weighted, Huber-clipped estimates of each symbol's own recent values (a
    running median and mean absolute deviation, the latter scaled to a normal sigma), so one
    wild bar moves them little.
    """

    enabled: bool = True
    """Run the detector (publish ``AnomalyDetected``/``AnomalyCleared``, serve them)."""
    pause_entries: bool = False
    """While a symbol has an active anomaly, the risk manager refuses orders that increase
    its absolute exposure (reason ``anomaly_pause``); exits always pass."""
    span_bars: Annotated[int, msgspec.Meta(ge=2, le=100_000)] = 168
    """EWMA span of the location and scale estimates (bars)."""
    warmup_bars: Annotated[int, msgspec.Meta(ge=2, le=100_000)] = 48
    """Bars a symbol must have before anything is flagged."""
    clear_bars: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 3
    """An active anomaly clears after this many bars in a row without its kind."""
    spike_z: Threshold = 10.0
    """|z| of the bar's log return (per sqrt of the bars it spans)."""
    range_z: Threshold = 4.5
    """z of the log of the bar's (high - low) / close."""
    volume_z: Threshold = 4.0
    """z of the log of the bar's volume."""
    price_gap_z: Threshold = 6.0
    """|log(open / previous close)| in units of the return scale."""
    ticker_z: Threshold = 10.0
    """|log(ticker mid / last close)| in units of the return scale (per sqrt of bars since)."""
    frozen_bars: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 3
    """Bars in a row with zero volume, or zero range at an unchanged close, that make a feed
    frozen."""
    missing_bar_ratio: Annotated[float, msgspec.Meta(gt=1.0)] = 1.5
    """A bar whose open time is more than this many bar lengths after the previous one's
    (the bar length: the shortest step seen for the symbol) means missing bars."""

    def params(self) -> NDArray[np.float64]:
        """The kernel's parameter vector (``kernels.P_*`` index it)."""
        return np.array(
            [
                2.0 / (self.span_bars + 1.0),
                float(self.warmup_bars),
                float(self.clear_bars),
                self.spike_z,
                self.range_z,
                self.volume_z,
                self.price_gap_z,
                float(self.frozen_bars),
                self.missing_bar_ratio,
            ],
            dtype=np.float64,
        )
