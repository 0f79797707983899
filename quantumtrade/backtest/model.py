"""What a backtest produces: the equity curve, the round-trip trades and the signals.

Plain containers shared by the runner (which fills them), ``metrics`` (which scores them) and
``report`` (which draws them). Times are bar open times in ms since the epoch (UTC); ``bar``
fields index the backtest's common bar axis (0 = the first bar of the run).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class EquityCurve:
    """One row per bar of the run, after that bar's fills, marked at that bar's closes."""

    ts_ms: NDArray[np.int64]
    cash: NDArray[np.float64]
    position_value: NDArray[np.float64]
    """Signed: sum over symbols of quantity * close (a short counts negative)."""
    equity: NDArray[np.float64]
    """cash + position_value."""
    gross_exposure: NDArray[np.float64]
    """Sum over symbols of |quantity| * close."""

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @property
    def drawdown(self) -> NDArray[np.float64]:
        """1 - equity / running peak of equity (0 at a new high; a positive fraction)."""
        peak = np.maximum.accumulate(self.equity)
        with np.errstate(divide="ignore", invalid="ignore"):
            dd = np.where(peak > 0, 1.0 - self.equity / peak, 0.0)
        return np.asarray(dd, dtype=np.float64)


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One round trip of a symbol: from flat to flat (a flip closes one and opens the next)."""

    symbol: str
    side: str
    """"LONG" or "SHORT"."""
    entry_ts_ms: int
    exit_ts_ms: int
    entry_bar: int
    exit_bar: int
    quantity: float
    """Largest absolute position held during the trade."""
    entry_price: float
    """Average price of the fills that opened or added to the position."""
    exit_price: float
    """Average price of the fills that reduced it (the last close for ``end_of_data``)."""
    fees: float
    """Fees of every fill of the trade (entries and exits)."""
    pnl: float
    """Realised PnL of the round trip net of its fees (marked at the last close when the trade
    was still open at the end)."""
    regime: str | None
    """The symbol's regime when the trade was opened (from the opening signal), if known."""
    exit_reason: str
    """Why the closing order was sent: ``stop_loss``, ``take_profit``, ``trailing_stop``,
    ``time_stop``, ``regime_change``, ``signal_fade``, ``reverse``, ``volatile`` (a cut in a
    VOLATILE regime) or another reason of the strategy's; ``end_of_data`` when still open at
    the end (marked at the last close)."""
    cluster: str | None = None
    """The symbol's cluster when the trade was opened (the risk manager's: hand-set, or
    computed by the allocator at that decision; the symbol itself when in none)."""

    @property
    def hold_bars(self) -> int:
        return self.exit_bar - self.entry_bar

    @property
    def notional(self) -> float:
        return self.quantity * self.entry_price


class SignalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An entry the strategy signalled: which symbol, on which bar's close, which way."""

    symbol: str
    bar: int
    """Index of the bar whose close it was decided on."""
    sign: int
    """+1 BUY, -1 SELL."""
    regime: str | None = None
