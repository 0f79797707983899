"""The daemon's regime component: keep every symbol's regime current, publish changes.

Each ``update()`` brings every symbol's regime up to its newest bar in MarketState and publishes
``RegimeChanged`` for each symbol whose label differs from the last one published, so the
orchestrator re-prioritises it and the scanner tags signals with it. A ``RegimeTracker`` holds
each symbol's classifier state: a symbol with up to ``MAX_STEPS`` new bars since the last
update (the usual heartbeat brings one; a symbol on a slower cadence a few) is advanced by them
one at a time, O(1) per bar, so its labels stay those of classifying its whole history; a new
symbol, or one whose last seen bar has left the newest ``MAX_STEPS + 1`` (a long gap, a
backfill), is classified afresh over its MarketState window; a symbol without a new bar keeps
its label. The market-wide regime is the confidence-weighted mode of the symbols'
labels. The same calls in the same order give the same labels in replay.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.data.market_state import MarketState
from quantumtrade.events import Regime, RegimeChanged
from quantumtrade.regime.engine import RegimeTracker, market_regime
from quantumtrade.regime.model import NO_LABEL, REGIME_ORDER, RegimeConfig

log = structlog.get_logger("quantumtrade.regime")

# Most new bars a symbol is advanced by, one bar per step (each step runs the whole tracker:
# ~0.25 ms for 5,000 symbols); after more, its window is classified afresh.
MAX_STEPS = 64


class RegimeDetector:
    def __init__(
        self, *, bus: EventBus, clock: Clock, state: MarketState, config: RegimeConfig
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.state = state
        self.config = config
        # Per row (MarketState's order, as of the last update): the published label (index in
        # REGIME_ORDER, NO_LABEL: none yet), its confidence and since when (ts_ns).
        self._symbols: list[str] = []
        self._row: dict[str, int] = {}
        self._code = np.zeros(0, dtype=np.int8)
        self._conf = np.zeros(0)
        self._since = np.zeros(0, dtype=np.int64)
        self.market: tuple[Regime | None, float] = (None, 0.0)
        self.market_since_ns = 0
        self.updates = 0
        self.changes = 0
        self.last_duration_ms = 0.0
        self._tracker = RegimeTracker(config)
        self._seen_ts = np.zeros(0, dtype=np.int64)
        """Per MarketState row: open time of the newest bar the tracker has taken (0: none)."""
        self.incremental_rows = 0
        self.reclassified_rows = 0
        self.labels = np.zeros(0, dtype=np.int8)
        """Per MarketState row after the last update: index in ``REGIME_ORDER``, or
        ``NO_LABEL`` (a copy; the backtest records it per bar)."""
        self.confidence = np.zeros(0)
        """Per MarketState row after the last update: the label's confidence (a copy)."""

    async def update(self) -> None:
        """Classify every symbol now; publish ``RegimeChanged`` where the label changed."""
        t0 = time.perf_counter()
        symbols = self.state.symbols
        if not symbols:
            return
        labels, confidence = self._advance()
        self.labels = labels
        self.confidence = confidence
        now = self.clock.now_ns()
        n = labels.shape[0]
        if len(self._symbols) < n:
            for i in range(len(self._symbols), n):
                self._row[symbols[i]] = i
            self._symbols = symbols[:n]
            grow = n - self._code.shape[0]
            self._code = np.concatenate([self._code, np.full(grow, NO_LABEL, np.int8)])
            self._conf = np.concatenate([self._conf, np.zeros(grow)])
            self._since = np.concatenate([self._since, np.zeros(grow, np.int64)])
        # A row with a label takes it and its confidence; a change starts a new "since".
        code = self._code
        labelled = labels != NO_LABEL
        changed = (labelled & (labels != code)).nonzero()[0]
        previous = code[changed].tolist()
        np.copyto(code, labels, where=labelled)
        np.copyto(self._conf, confidence, where=labelled)
        self._since[changed] = now
        self.changes += changed.size
        for i, prev, new, conf in zip(
            changed.tolist(),
            previous,
            labels[changed].tolist(),
            confidence[changed].tolist(),
            strict=True,
        ):
            await self.bus.publish(
                RegimeChanged(
                    ts_ns=now,
                    symbol=symbols[i],
                    regime=REGIME_ORDER[new],
                    previous=REGIME_ORDER[prev] if prev != NO_LABEL else None,
                    confidence=conf,
                )
            )
        market = market_regime(labels, confidence)
        if market[0] is not self.market[0]:
            self.market_since_ns = now
        self.market = market
        self.updates += 1
        self.last_duration_ms = (time.perf_counter() - t0) * 1000

    def _advance(self) -> tuple[np.ndarray, np.ndarray]:
        """Bring the tracker to every row's newest bar; returns (labels, confidence) copies."""
        cols = self.state.columns()
        n = cols.close.shape[0]
        if self._tracker.symbols < n:
            self._tracker.resize(n)
            self._seen_ts = np.concatenate(
                [self._seen_ts, np.zeros(n - self._seen_ts.size, np.int64)]
            )
        cap = cols.ts_ms.shape[1]
        seen = self._seen_ts
        newest = cols.ts_ms[:, -1]
        if cap >= 2 and seen.shape[0] == n and seen.all() and (cols.ts_ms[:, -2] == seen).all():
            # Every row got exactly one bar since the last update (a heartbeat's usual case,
            # and every bar of a backtest): one step, as the general path below would take.
            self._tracker.update(cols.close[:, -1], cols.high[:, -1], cols.low[:, -1],
                                 cols.volume[:, -1])  # fmt: skip
            self._seen_ts = newest.copy()
            self.incremental_rows += n
            return self._tracker.labels.copy(), self._tracker.confidence.copy()
        fresh = newest != seen
        # New bars per row among the newest MAX_STEPS + 1 (open times ascend along a row), and
        # whether the bar right before them is the one the tracker took last.
        recent = cols.ts_ms[:, cap - min(MAX_STEPS + 1, cap) :]
        new = np.count_nonzero(recent > seen[:, None], axis=1)
        before = recent.shape[1] - new - 1
        taken = recent[np.arange(n), np.maximum(before, 0)]
        steps = fresh & (seen != 0) & (before >= 0) & (taken == seen)
        rebuild = np.flatnonzero(fresh & ~steps)
        if rebuild.size:
            # Only the columns these rows hold bars in (a row's bars end at the last column;
            # leading empty columns change no label): the copies are the rows' own bars, not
            # the whole window (rebuilding 5,000 rows of a 1,000-bar window on the first bar
            # copied 160 MB of NaN).
            held = cap - int(cols.lengths[rebuild].max())
            self._tracker.reset(
                cols.close[rebuild, held:], cols.high[rebuild, held:],
                cols.low[rebuild, held:], cols.volume[rebuild, held:],
                rows=rebuild,
            )  # fmt: skip
        if steps.any():
            # Step s takes column cap - k + s: every stepping row ends on its newest bar.
            k = int(new[steps].max())
            for s in range(k):
                c = cap - k + s
                self._tracker.update(
                    cols.close[:, c], cols.high[:, c], cols.low[:, c], cols.volume[:, c],
                    active=steps & (new >= k - s),
                )  # fmt: skip
        self._seen_ts = newest.copy()
        self.incremental_rows += int(np.count_nonzero(steps))
        self.reclassified_rows += int(rebuild.size)
        return self._tracker.labels.copy(), self._tracker.confidence.copy()

    def regime(self, symbol: str) -> tuple[Regime | None, float]:
        row = self._row.get(symbol)
        if row is None:
            return None, 0.0
        code = int(self._code[row])
        return (REGIME_ORDER[code], float(self._conf[row])) if code != NO_LABEL else (None, 0.0)

    def regime_codes(self, symbols: Sequence[str]) -> NDArray[np.int8]:
        """``regime(symbol)[0]`` of each symbol as its index in ``REGIME_ORDER`` (NO_LABEL:
        None), one array for all: O(1) Python work when ``symbols`` are the rows of the last
        update (the scanner's case), a lookup per symbol otherwise."""
        if len(symbols) == len(self._symbols) and list(symbols) == self._symbols:
            codes = self._code.copy()
        else:
            codes = np.full(len(symbols), NO_LABEL, dtype=np.int8)
            for k, symbol in enumerate(symbols):
                row = self._row.get(symbol)
                if row is not None:
                    codes[k] = self._code[row]
        return codes

    def current(self) -> dict[str, Any]:
        """Market-wide regime, confidence, since when, and how many symbols are in each."""
        per_code = np.bincount(self._code[self._code != NO_LABEL], minlength=len(REGIME_ORDER))
        counts = {r.value: int(per_code[k]) for k, r in enumerate(REGIME_ORDER)}
        market, confidence = self.market
        return {
            "regime": market.value if market is not None else None,
            "confidence": confidence,
            "since_ns": self.market_since_ns or None,
            "symbols": counts,
            "unlabelled": len(self.state.symbols) - int(per_code.sum()),
        }

    def confidences(self) -> dict[str, dict[str, Any]]:
        code, conf, since = self._code.tolist(), self._conf.tolist(), self._since.tolist()
        return {
            symbol: {
                "regime": REGIME_ORDER[code[i]].value,
                "confidence": conf[i],
                "since_ns": since[i],
            }
            for symbol, i in sorted(self._row.items())
            if code[i] != NO_LABEL
        }

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "updates": self.updates,
            "changes": self.changes,
            "incremental_rows": self.incremental_rows,
            "reclassified_rows": self.reclassified_rows,
            "last_duration_ms": round(self.last_duration_ms, 3),
        }
