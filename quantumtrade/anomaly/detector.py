"""The daemon's anomaly detector: score every new bar and ticker, publish what turns on or off.

``on_bars`` (inline on ``BarsUpdated``) advances the state rows of the batch's symbols by
their new bars in one kernel call (``kernels.advance``); a symbol whose kinds switched is
looked at in Python, so a heartbeat of 5,000 quiet symbols costs one call and no loop.
``on_ticker`` (inline on ``TickerUpdated``) compares a ticker's mid with the last close in
units of the symbol's return scale. The switches are held until ``publish()``, which the
trading core calls at the start of each decision (``DecisionPath.decide``), so the risk
manager knows the anomalies before the strategy sends an order, in the daemon, in replay and
in a backtest alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.anomaly import kernels as K
from quantumtrade.anomaly.model import KIND_CODE, KINDS, AnomalyConfig, AnomalyKind
from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import (
    AnomalyCleared,
    AnomalyDetected,
    BarsUpdated,
    Event,
    SymbolRows,
    TickerUpdated,
)
from quantumtrade.scoring.jit import by_rows

log = structlog.get_logger("quantumtrade.anomaly")


class AnomalyDetector:
    def __init__(self, *, bus: EventBus, clock: Clock, config: AnomalyConfig) -> None:
        self.bus = bus
        self.clock = clock
        self.config = config
        self._params = config.params()
        self._rows = SymbolRows()
        self._ints = np.zeros((0, K.N_INTS), dtype=np.int64)
        self._floats = np.zeros((0, K.N_FLOATS))
        self._active = np.zeros((0, K.N_KINDS), dtype=np.bool_)
        self._kind_ints = np.zeros((0, K.N_KINDS, 2), dtype=np.int64)
        self._score = np.zeros((0, K.N_KINDS))
        self._ticker_hit = np.zeros(0, dtype=np.bool_)
        self._trans = np.zeros((0, K.N_KINDS), dtype=np.int32)
        self._pending: list[Event] = []
        self.detected: dict[str, int] = {k.value: 0 for k in KINDS}
        """``AnomalyDetected`` published, by kind (the Prometheus counter)."""
        self.cleared = 0
        self.bars_seen = 0

    def subscriptions(self) -> list[tuple[type[Event], Any]]:
        """Inline handlers for the bus (replay calls them directly, as it feeds its inputs)."""
        return [(BarsUpdated, self.on_bars), (TickerUpdated, self.on_ticker)]

    # --- state rows -----------------------------------------------------------------------

    def _grow(self, symbols: tuple[str, ...]) -> NDArray[np.int64]:
        rows = self._rows.rows(symbols)
        n = len(self._rows)
        size = self._ints.shape[0]
        if n > size:
            extra = max(n, 2 * size, 16) - size

            def more(a: NDArray[Any]) -> NDArray[Any]:
                return np.concatenate([a, np.zeros((extra, *a.shape[1:]), dtype=a.dtype)])

            self._ints, self._floats = more(self._ints), more(self._floats)
            self._active, self._kind_ints = more(self._active), more(self._kind_ints)
            self._score, self._ticker_hit = more(self._score), more(self._ticker_hit)
        if self._trans.shape[0] < len(symbols):
            self._trans = np.zeros(
                (max(len(symbols), 2 * self._trans.shape[0]), K.N_KINDS), np.int32
            )
        return rows

    # --- inputs ---------------------------------------------------------------------------

    def on_bars(self, event: BarsUpdated) -> None:
        """Advance every symbol of the batch by its new bars; hold what switched for
        ``publish``."""
        rows = self._grow(event.symbols)
        block = event.bars
        trans = self._trans
        switched = by_rows(K.advance, K.advance_serial, len(rows))(
            rows, event.offsets_array(), block.ts(), block.rows(), self._params,
            self._ints, self._floats, self._active, self._kind_ints, self._score,
            self._ticker_hit, trans,
        )  # fmt: skip
        self.bars_seen += len(block)
        if switched:
            js, ks = np.nonzero(trans[: len(event.symbols)])
            for j, k in zip(js.tolist(), ks.tolist(), strict=True):
                self._switched(int(rows[j]), k, int(trans[j, k]))

    def _switched(self, row: int, k: int, times: int) -> None:
        """Events for a kind that switched ``times`` times in one batch: from the state before
        it to the state after, at most an on and an off (a history fetch may hold several)."""
        now = self.clock.now_ns()
        on = bool(self._active[row, k])
        was_on = on if times % 2 == 0 else not on
        symbol, kind = self._rows.names[row], KINDS[k].value
        since = int(self._kind_ints[row, k, K.K_SINCE])
        score = float(self._score[row, k])
        if was_on:
            self._pending.append(
                AnomalyCleared(ts_ns=now, symbol=symbol, kind=kind, since_ms=since, score=score)
            )
            self.cleared += 1
        if on or not was_on:
            self._pending.append(
                AnomalyDetected(ts_ns=now, symbol=symbol, kind=kind, score=score, since_ms=since)
            )
            self.detected[kind] += 1
        if not on and not was_on:
            self._pending.append(
                AnomalyCleared(ts_ns=now, symbol=symbol, kind=kind, since_ms=since, score=score)
            )
            self.cleared += 1

    def on_ticker(self, event: TickerUpdated) -> None:
        """A ticker far from the last close (in return scales per sqrt of the bars since it)
        turns the symbol's ``ticker`` kind on; the next bars clear it."""
        row = self._rows.get(event.symbol)
        if row is None or self._ints[row, K.I_BARS] < self.config.warmup_bars:
            return
        bid, ask = event.bid, event.ask
        price = (bid + ask) / 2.0 if bid > 0.0 and ask >= bid else event.last
        close = float(self._floats[row, K.F_CLOSE])
        if not (math.isfinite(price) and price > 0.0 and close > 0.0):
            return
        bar_ms = int(self._ints[row, K.I_BAR_MS]) or 1
        now_ms = event.ts_ns // 1_000_000
        since_close = (now_ms - int(self._ints[row, K.I_LAST_MS]) - bar_ms) / bar_ms
        scale = K.NORMAL_MAD * float(self._floats[row, 2 + 3 * K.FEAT_RETURN])
        z = abs(math.log(price / close)) / (
            max(scale, K.FLOOR_RETURN) * math.sqrt(max(1.0, since_close))
        )
        if z <= self.config.ticker_z:
            return
        k = K.TICKER
        self._ticker_hit[row] = True
        self._kind_ints[row, k, K.K_QUIET] = 0
        if self._active[row, k]:
            self._score[row, k] = max(float(self._score[row, k]), z)
            return
        self._active[row, k] = True
        self._kind_ints[row, k, K.K_SINCE] = now_ms
        self._score[row, k] = z
        self._switched(row, k, 1)

    # --- outputs --------------------------------------------------------------------------

    async def publish(self) -> None:
        """Publish what switched since the last call, in the order it happened."""
        pending, self._pending = self._pending, []
        for event in pending:
            if isinstance(event, AnomalyDetected):
                # info, not warning: a backtest or an optimize trial sees thousands (the API,
                # the metrics and the event log carry them in the daemon).
                log.info(
                    "anomaly_detected", symbol=event.symbol, kind=event.kind, score=event.score
                )
            await self.bus.publish(event)

    def active(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Active anomalies (of one symbol, or all): symbol, kind, score, since_ms."""
        n = len(self._rows.names)
        if symbol is not None:
            row = self._rows.get(symbol)
            rows = np.zeros(0, np.int64) if row is None else np.array([row])
            mask = self._active[rows]
        else:
            rows, mask = np.arange(n), self._active[:n]
        out = []
        for i, k in zip(*np.nonzero(mask), strict=True):
            r = int(rows[i])
            out.append(
                {
                    "symbol": self._rows.names[r],
                    "kind": KINDS[k].value,
                    "score": float(self._score[r, k]),
                    "since_ms": int(self._kind_ints[r, k, K.K_SINCE]),
                }
            )
        return out

    def is_active(self, symbol: str, kind: AnomalyKind | None = None) -> bool:
        row = self._rows.get(symbol)
        if row is None:
            return False
        return bool(self._active[row].any() if kind is None else self._active[row, KIND_CODE[kind]])

    def active_counts(self) -> dict[str, int]:
        """Active anomalies by kind (the Prometheus gauge)."""
        counts = self._active[: len(self._rows.names)].sum(axis=0)
        return {kind.value: int(counts[i]) for i, kind in enumerate(KINDS)}

    def metrics(self) -> dict[str, Any]:
        return {
            "enabled": self.config.enabled,
            "pause_entries": self.config.pause_entries,
            "symbols": len(self._rows.names),
            "bars_seen": self.bars_seen,
            "detected": dict(self.detected),
            "cleared": self.cleared,
            "active": self.active_counts(),
        }


def _frozen(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel for the read-only views a
    ``BarsUpdated`` hands out, before the first bar."""
    n = K.N_KINDS
    for build in (K.advance, K.advance_serial):
        build(
            _frozen(np.zeros(1, np.int64)), _frozen(np.array([0, 2], np.int64)),
            _frozen(np.array([0, 60_000], np.int64)), _frozen(np.ones((2, 5))),
            AnomalyConfig().params(), np.zeros((1, K.N_INTS), np.int64),
            np.zeros((1, K.N_FLOATS)), np.zeros((1, n), np.bool_), np.zeros((1, n, 2), np.int64),
            np.zeros((1, n)), np.zeros(1, np.bool_), np.zeros((1, n), np.int32),
        )  # fmt: skip
