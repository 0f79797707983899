"""The ``Strategy`` protocol and what a strategy sees and returns.

At every decision (a heartbeat in ``run``, a bar in ``backtest``, a logged scan in ``replay``)
the engine hands the strategy ``Features`` (the scan's indicators at the newest bar, each
symbol's regime and confidence, the newest bars as (symbols, window) columns) and the ``Book``
(positions, entry prices, bars held, equity), all aligned by row with ``Features.symbols``.
The strategy returns ``Targets``: a signed weight per symbol, a fraction of equity (0.05 = a
long worth 5 % of equity, -0.05 a short; NaN = keep what is held), with a reason per symbol.
The engine does the rest the same way for every strategy: caps, the gross budget, exits,
protections, and the orders for the difference between target and position.

A strategy is a class with a ``name``, a ``targets`` method, and optionally:

* ``Params``: a ``msgspec.Struct`` of its parameters (``forbid_unknown_fields=True``); the
  loader validates ``[strategy.params]`` against it and passes the instance to ``__init__``;
* ``exits`` / ``protections``: its default ``ExitConfig`` / ``ProtectionConfig``, which
  ``[strategy.exits]`` / ``[strategy.protections]`` override key by key.

``targets`` must be a pure function of its arguments and the strategy's own state (no clock,
no randomness without a seed): ``replay`` re-derives every decision from the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from quantumtrade.regime.model import NO_LABEL, REGIME_ORDER
from quantumtrade.scoring.indicators import OUTPUTS

__all__ = [
    "BREAKOUT",
    "NO_LABEL",
    "RANGING",
    "REGIME_ORDER",
    "TRENDING",
    "VOLATILE",
    "Book",
    "Features",
    "Strategy",
    "Targets",
]

TRENDING, RANGING, VOLATILE, BREAKOUT = (REGIME_ORDER.index(r) for r in REGIME_ORDER)
"""Regime codes in ``Features.regime`` (``NO_LABEL``: not classified yet)."""
_COLUMN = {name: k for k, name in enumerate(OUTPUTS)}


@dataclass(frozen=True, slots=True)
class Features:
    """What the scan knows at the newest bar; every array is read-only, one row per symbol."""

    symbols: tuple[str, ...]
    values: NDArray[np.float64]
    """(symbols, len(OUTPUTS)): every indicator at the newest bar; ``feature(name)`` reads one
    (``score``, ``vol``, ``ema_fast``, ``ema_slow``, ``sma``, ``rsi``, ``atr``, ``adx``,
    ``bb_width``, ``macd``, ``macd_signal``, ``macd_hist``, ``volume_z``, ``roc``, ``bars``)."""
    regime: NDArray[np.int8]
    """Code in ``REGIME_ORDER`` (TRENDING, RANGING, VOLATILE, BREAKOUT) or ``NO_LABEL``."""
    confidence: NDArray[np.float64]
    """The regime's confidence in [0, 1]."""
    eligible: NDArray[np.bool_]
    """Passed the scanner's data filters (enough bars, liquidity, volatility band)."""
    selected: tuple[int, ...]
    """Rows of the scanner's own top N by |trend score| (after every scanner stage)."""
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    """(symbols, window) the newest bars, newest last (NaN where a symbol has fewer)."""
    ts_ms: NDArray[np.int64]
    """(symbols,) open time of each symbol's newest bar (0: none yet)."""
    bar_ms: int
    """The bars' length in ms (0 when not known yet)."""

    def feature(self, name: str) -> NDArray[np.float64]:
        """One indicator's column (a view)."""
        try:
            return self.values[:, _COLUMN[name]]
        except KeyError:
            raise KeyError(f"no feature {name!r}; there are {', '.join(OUTPUTS)}") from None

    @property
    def last(self) -> NDArray[np.float64]:
        """The newest close per symbol."""
        return self.close[:, -1]


@dataclass(frozen=True, slots=True)
class Book:
    """The positions the strategy trades from, aligned with ``Features.symbols``."""

    position: NDArray[np.float64]
    """Signed quantity: held, plus fills not yet applied, plus orders in flight."""
    weight: NDArray[np.float64]
    """Signed position value at the newest close over ``equity``."""
    entry_price: NDArray[np.float64]
    """Average entry price of the open position (NaN: flat)."""
    bars_held: NDArray[np.int64]
    """Bars since entry (-1: flat)."""
    entry_weight: NDArray[np.float64]
    """The weight the position was entered with (0: flat)."""
    target_weight: NDArray[np.float64]
    """The weight of the current target (0: none)."""
    entry_regime: NDArray[np.int8]
    """Regime code when the position was entered (``NO_LABEL``: flat or unknown)."""
    equity: float
    """Capital plus net PnL: what weights are fractions of."""


@dataclass(frozen=True, slots=True)
class Targets:
    """A strategy's answer: a signed weight per symbol and why."""

    weight: NDArray[np.float64]
    """(symbols,) signed fraction of equity; NaN: keep what is held (no opinion)."""
    reason: str | Sequence[str] = "signal"
    """One reason for every symbol, or one per symbol (an entry's, or a strategy's own exit)."""
    score: NDArray[np.float64] | None = None
    """Ranks entries when the gross budget cannot take them all (default: |weight|)."""

    def reason_of(self, row: int) -> str:
        return self.reason if isinstance(self.reason, str) else self.reason[row]


@runtime_checkable
class Strategy(Protocol):
    """Turns features and the book into target weights (see the module docstring)."""

    name: str

    def targets(self, features: Features, book: Book) -> Targets: ...
