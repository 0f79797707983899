"""Indicators updated bar by bar: O(symbols) per new bar instead of O(symbols x bars).

``IncrementalIndicators`` keeps, per symbol, the state the fused full pass
(``indicators.compute_scan``) leaves behind: the EMA/MACD/RSI/ATR/ADX recursions (with their
TA-Lib seeding), the SMA/Bollinger running total and rings of the last closes, log returns and
volumes for the windowed statistics. ``update`` feeds one new bar per symbol through the very
same arithmetic (``indicators.resume_block_kernel``: ``_step`` and ``_finish``, or their
lane-parallel form), so the indicators after it are bit-identical to a full recomputation over
the whole history (tested at every bar, NaN padding and gaps included).

``IncrementalScores`` is the trend score and its volatility alone, on top of it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from quantumtrade.scoring import indicators as ind
from quantumtrade.scoring.indicators import OUT_SCORE, OUT_VOL, ScanParams, ScanState
from quantumtrade.scoring.jit import PARALLEL_MIN_ROWS, by_rows, serial_twin

_resume_block_serial = serial_twin(ind.resume_block_kernel)

Array = NDArray[np.float64]


class IncrementalIndicators:
    """Every scan indicator per symbol, advanced one bar at a time.

    ``values`` is (symbols, len(indicators.OUTPUTS)): the indicators at the newest bar seen,
    NaN where not warmed up. Rows with no bar yet take NaN bars (leading padding).
    """

    def __init__(self, n_symbols: int, params: ScanParams | None = None) -> None:
        if n_symbols < 0:
            raise ValueError(f"n_symbols must be >= 0, got {n_symbols}")
        self.params = params if params is not None else ScanParams()
        self._params = self.params.as_array()
        self._nbdev = float(self.params.bb_nbdev)
        # Zero bars: the kernel leaves every row in its initial state.
        empty = np.empty((n_symbols, 0))
        self._scan, _ = ind.compute_scan(empty, empty, empty, empty, self.params)
        self.bars_seen = 0

    @classmethod
    def from_history(
        cls,
        high: Array,
        low: Array,
        close: Array,
        volume: Array,
        params: ScanParams | None = None,
    ) -> IncrementalIndicators:
        """The state after a full pass over (symbols, bars) arrays (the fallback path)."""
        self = cls.__new__(cls)
        self.params = params if params is not None else ScanParams()
        self._params = self.params.as_array()
        self._nbdev = float(self.params.bb_nbdev)
        self._scan, _ = ind.compute_scan(high, low, close, volume, self.params)
        self.bars_seen = int(close.shape[1])
        return self

    @property
    def n_symbols(self) -> int:
        return int(self._scan.values.shape[0])

    @property
    def values(self) -> Array:
        """(symbols, outputs) indicators at the newest bar; updated in place by ``update``."""
        return self._scan.values

    @property
    def scan_state(self) -> ScanState:
        return self._scan

    def update(self, high: Array, low: Array, close: Array, volume: Array) -> Array:
        """One new bar per symbol (1-D arrays, one value per symbol); returns ``values``."""
        s = self._scan
        n = s.values.shape[0]
        cols = []
        for name, a in (("high", high), ("low", low), ("close", close), ("volume", volume)):
            arr = np.asarray(a)
            if arr.dtype != np.float64:
                raise TypeError(f"{name} must be float64, got {arr.dtype}")
            if arr.shape != (n,):
                raise ValueError(f"expected {n} values of {name}, got shape {arr.shape}")
            cols.append(np.ascontiguousarray(arr))
        kernel = by_rows(ind.resume_block_kernel, _resume_block_serial, n)
        kernel(
            cols[0], cols[1], cols[2], cols[3], self._params, self._nbdev,
            s.state, s.istate, s.rings, s.values,
        )  # fmt: skip
        self.bars_seen += 1
        return s.values

    def replay(self, high: Array, low: Array, close: Array, volume: Array) -> Array:
        """Feed (symbols, bars) arrays bar by bar; the values after the last one."""
        for j in range(close.shape[1]):
            self.update(high[:, j], low[:, j], close[:, j], volume[:, j])
        return self.values


class IncrementalScores:
    """The trend score and its volatility (as ``reference.compute_scores``), bar by bar."""

    def __init__(self, n_symbols: int, *, fast: int, slow: int, vol_window: int) -> None:
        if not (1 <= fast < slow) or vol_window < 2:
            raise ValueError("need 1 <= fast < slow and vol_window >= 2")
        self.fast, self.slow, self.vol_window = fast, slow, vol_window
        params = ScanParams(ema_fast=fast, ema_slow=slow, vol_window=vol_window)
        self._inc = IncrementalIndicators(n_symbols, params)

    def update(self, closes: Array) -> tuple[Array, Array]:
        """One new close per symbol (NaN: none yet); returns (score, vol), fresh arrays."""
        closes = np.ascontiguousarray(closes, dtype=np.float64)
        if closes.shape != (self._inc.n_symbols,):
            raise ValueError(f"expected {self._inc.n_symbols} closes, got {closes.shape}")
        started = self._inc.scan_state.istate[:, ind.I_KC] > 0
        if np.isnan(closes[started]).any():
            raise ValueError("a symbol that has bars got a NaN close")
        values = self._inc.update(closes, closes, closes, np.ones_like(closes))
        return values[:, OUT_SCORE].copy(), values[:, OUT_VOL].copy()

    def replay(self, close: Array) -> tuple[Array, Array]:
        """Feed a (symbols, bars) history bar by bar; the scores after the last one."""
        values = self._inc.values
        score, vol = values[:, OUT_SCORE].copy(), values[:, OUT_VOL].copy()
        for j in range(close.shape[1]):
            score, vol = self.update(close[:, j])
        return score, vol


def warm_up() -> None:
    """Compile (or load from the cache) the kernels the incremental path runs: the full pass
    and the update, in both builds (serial below ``PARALLEL_MIN_ROWS`` symbols)."""
    ind.warm_up_scan()
    for n in (1, PARALLEL_MIN_ROWS):
        close = np.linspace(100.0, 103.0, n * 12).reshape(n, 12)
        inc = IncrementalIndicators.from_history(close + 0.5, close - 0.5, close, close)
        bar = close[:, -1].copy()
        inc.update(bar + 0.5, bar - 0.5, bar, bar)
