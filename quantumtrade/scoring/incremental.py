"""The trend score updated bar by bar: O(symbols) per new bar instead of O(symbols x bars).

``IncrementalScores`` keeps, per symbol, the two EMAs (with TA-Lib's SMA seeding), the last
close and a ring of the last ``vol_window`` log returns. ``update(closes)`` takes one new close
per symbol and returns the same score and volatility that ``kernels.compute_scores`` gives for
the whole history up to that bar: the same arithmetic in the same order, so the results are
bit-identical (tested). A NaN close means "no bar for this symbol yet" and is only allowed
before its first one (leading padding), as in MarketState.

Regimes are not incremental yet (``regime.engine.classify`` recomputes its window).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.scoring.kernels import VOL_FLOOR, _kernel

Array = NDArray[np.float64]
Counts = NDArray[np.int64]


@_kernel
def _update(
    closes: Array,
    fast: int,
    slow: int,
    count: Counts,
    last: Array,
    total_f: Array,
    total_s: Array,
    ema_f: Array,
    ema_s: Array,
    ring: Array,
    ring_pos: Counts,
    out_score: Array,
    out_vol: Array,
) -> None:
    n_sym = closes.shape[0]
    window = ring.shape[1]
    alpha_f = 2.0 / (fast + 1.0)
    alpha_s = 2.0 / (slow + 1.0)
    for i in numba.prange(n_sym):
        x = closes[i]
        if math.isnan(x):
            out_score[i] = np.nan
            out_vol[i] = np.nan
            continue
        c = count[i]
        if c > 0:
            ring[i, ring_pos[i]] = math.log(x / last[i])
            ring_pos[i] = (ring_pos[i] + 1) % window
        last[i] = x
        if c < fast:
            total_f[i] += x
            if c + 1 == fast:
                ema_f[i] = total_f[i] / fast
        else:
            ema_f[i] = (x - ema_f[i]) * alpha_f + ema_f[i]
        if c < slow:
            total_s[i] += x
            if c + 1 == slow:
                ema_s[i] = total_s[i] / slow
        else:
            ema_s[i] = (x - ema_s[i]) * alpha_s + ema_s[i]
        c += 1
        count[i] = c
        vol = np.nan
        if c >= window + 1:
            # The last `window` returns, oldest first: ring_pos points at the oldest.
            mean = 0.0
            for k in range(window):
                mean += ring[i, (ring_pos[i] + k) % window]
            mean /= window
            ss = 0.0
            for k in range(window):
                d = ring[i, (ring_pos[i] + k) % window] - mean
                ss += d * d
            vol = math.sqrt(ss / (window - 1))
        out_vol[i] = vol
        if c < slow + 1 or c < fast or math.isnan(vol):
            out_score[i] = np.nan
            continue
        trend = (ema_f[i] - ema_s[i]) / ema_s[i]
        out_score[i] = trend / max(vol, VOL_FLOOR)


class IncrementalScores:
    """Per-symbol trend-score state; ``update`` advances every symbol by one bar."""

    def __init__(self, n_symbols: int, *, fast: int, slow: int, vol_window: int) -> None:
        if not (1 <= fast < slow) or vol_window < 2:
            raise ValueError("need 1 <= fast < slow and vol_window >= 2")
        self.fast, self.slow, self.vol_window = fast, slow, vol_window
        self._count = np.zeros(n_symbols, dtype=np.int64)
        self._last = np.full(n_symbols, np.nan)
        self._total_f = np.zeros(n_symbols)
        self._total_s = np.zeros(n_symbols)
        self._ema_f = np.full(n_symbols, np.nan)
        self._ema_s = np.full(n_symbols, np.nan)
        self._ring = np.zeros((n_symbols, vol_window))
        self._ring_pos = np.zeros(n_symbols, dtype=np.int64)
        self._score = np.empty(n_symbols)
        self._vol = np.empty(n_symbols)

    def update(self, closes: Array) -> tuple[Array, Array]:
        """One new close per symbol (NaN: none yet); returns (score, vol) views, reused."""
        closes = np.ascontiguousarray(closes, dtype=np.float64)
        if closes.shape != self._count.shape:
            raise ValueError(f"expected {self._count.shape[0]} closes, got {closes.shape}")
        started = self._count > 0
        if np.isnan(closes[started]).any():
            raise ValueError("a symbol that has bars got a NaN close")
        _update(
            closes, self.fast, self.slow, self._count, self._last, self._total_f,
            self._total_s, self._ema_f, self._ema_s, self._ring, self._ring_pos,
            self._score, self._vol,
        )  # fmt: skip
        return self._score, self._vol

    def replay(self, close: Array) -> tuple[Array, Array]:
        """Feed a (symbols, bars) history bar by bar; the scores after the last one."""
        score, vol = self._score, self._vol
        for j in range(close.shape[1]):
            score, vol = self.update(close[:, j])
        return score, vol


def warm_up() -> None:
    scores = IncrementalScores(2, fast=2, slow=3, vol_window=2)
    scores.replay(np.exp(np.linspace(0.0, 0.1, 16)).reshape(2, 8))
