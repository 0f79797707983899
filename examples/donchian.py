"""An example user strategy: a Donchian channel breakout, long only, sized by volatility.

Long when the close breaks above the highest high of the previous ``channel`` bars; out when
it falls below the lowest low of the previous ``exit_channel`` bars; a held position is kept
(NaN) in between. The engine adds what every strategy gets: the stop-loss and trailing stop
below (ATR multiples, overridable in ``[strategy.exits]``), the cooldown after a stop-out,
the caps, and the orders for the difference between target and position.

Run it from the repository root (the working directory is importable)::

    QT_DATA_DIR=/path/to/shared/data quantumtrade backtest \\
        --data candles/binance-spot-1h-2024 --symbols BTCUSDT,ETHUSDT,SOLUSDT \\
        --from 2024-03-01 --to 2024-06-01 --config examples/donchian.toml --out var/donchian
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
import numpy as np

from quantumtrade.strategy.base import Book, Features, Targets
from quantumtrade.strategy.exits import ExitConfig, ProtectionConfig


class DonchianParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[strategy.params]``: an unknown key or a wrong type stops the start, key named."""

    channel: Annotated[int, msgspec.Meta(ge=2)] = 48
    """Bars whose highest high the close must break to enter."""
    exit_channel: Annotated[int, msgspec.Meta(ge=2)] = 24
    """Out when the close falls below the lowest low of this many bars."""
    weight: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.05
    """Weight (fraction of equity) of an entry at ``target_vol``."""
    target_vol: Annotated[float, msgspec.Meta(gt=0)] = 0.01
    """Per-bar volatility an entry of ``weight`` is sized for: a wilder symbol gets less."""
    min_adx: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Enter only when ADX (trend strength) is at least this (0: any)."""


class Donchian:
    name = "donchian"
    Params = DonchianParams
    exits: ClassVar[ExitConfig] = ExitConfig(stop_loss_atr=2.0, trailing_atr=3.0)
    protections: ClassVar[ProtectionConfig] = ProtectionConfig(cooldown_bars=4)

    def __init__(self, params: DonchianParams | None = None) -> None:
        self.params = params or DonchianParams()

    def targets(self, features: Features, book: Book) -> Targets:
        p = self.params
        n = len(features.symbols)
        high, low, close = features.high, features.low, features.close
        if close.shape[1] < p.channel + 1:
            return Targets(weight=np.zeros(n), reason="donchian")
        last = close[:, -1]
        # The channels of the bars before the newest (the newest bar must break them).
        upper = high[:, -p.channel - 1 : -1].max(axis=1)
        lower = low[:, -p.exit_channel - 1 : -1].min(axis=1)
        vol = features.feature("vol")
        with np.errstate(divide="ignore", invalid="ignore"):
            size = np.where(vol > 0, p.weight * np.minimum(p.target_vol / vol, 2.0), 0.0)
            enter = features.eligible & (last > upper) & (features.feature("adx") >= p.min_adx)
            leave = last < lower
        weight = np.where(enter, np.nan_to_num(size), 0.0)
        held = book.position > 0
        weight[held & ~leave] = np.nan  # keep what is held until the exit channel breaks
        weight[held & leave] = 0.0
        return Targets(weight=weight, reason="donchian_breakout")
