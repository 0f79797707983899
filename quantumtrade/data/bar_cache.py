"""What the market-data cache holds per symbol: the newest bars a source answered."""

from __future__ import annotations

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import BarBlock


class CachedBars(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A symbol's newest bars as a source answered them: every closed bar opened after
    ``since_ms`` (None: the source's default history) up to the fetch at ``until_ms``."""

    since_ms: int | None
    until_ms: int
    bars: BarBlock

    def newest_ts(self) -> int | None:
        n = len(self.bars)
        return int(self.bars.ts()[n - 1]) if n else None

    def covers(self, since_ms: int | None) -> bool:
        """Whether this entry holds every bar a fetch after ``since_ms`` would return."""
        if since_ms is None:
            return self.since_ms is None
        if self.since_ms is not None:
            return self.since_ms <= since_ms
        return len(self.bars) > 0 and int(self.bars.ts()[0]) <= since_ms

    def after(self, since_ms: int | None) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(ts, (5, k) prices) of the bars opened after ``since_ms``."""
        ts, prices = self.bars.ts(), self.bars.columns()
        if since_ms is None:
            return ts, prices
        start = int(np.searchsorted(ts, since_ms, side="right"))
        return ts[start:], prices[:, start:]
