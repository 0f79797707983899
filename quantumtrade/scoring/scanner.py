"""The scan: score every symbol from MarketState's columns, keep the top N, publish signals.

``select`` is the pure part (arrays in, ranked candidates out) so it can be tested and replayed
without a bus; ``Scanner`` reads the columns, calls it and publishes ``ScanCompleted`` followed by
one ``SignalGenerated`` per new candidate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import Regime, ScanCompleted, Side, SignalGenerated
from quantumtrade.scoring.kernels import compute_scores

INSUFFICIENT_BARS = "insufficient_bars"
LIQUIDITY = "liquidity"
VOLATILITY_BAND = "volatility_band"
REGIME_FIT = "regime_fit"
SCORE_BELOW_THRESHOLD = "score_below_threshold"
CORRELATED = "correlated"
OUTSIDE_TOP_N = "outside_top_n"
# The filter stages, in the order they run; a symbol is counted under the first that drops it.
DROP_REASONS = (
    INSUFFICIENT_BARS,
    LIQUIDITY,
    VOLATILITY_BAND,
    REGIME_FIT,
    SCORE_BELOW_THRESHOLD,
    CORRELATED,
    OUTSIDE_TOP_N,
)
SIGNAL_REASONS = ("trend_score",)


class ScannerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    top_n: Annotated[int, msgspec.Meta(ge=1)] = 3
    window: Annotated[int, msgspec.Meta(ge=2)] = 200
    """Bars per symbol handed to the kernels (the newest ``window``)."""
    ema_fast: Annotated[int, msgspec.Meta(ge=1)] = 12
    ema_slow: Annotated[int, msgspec.Meta(ge=2)] = 26
    vol_window: Annotated[int, msgspec.Meta(ge=2)] = 30
    """Log returns in the realised volatility that normalises the trend."""
    min_abs_score: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    min_bars: Annotated[int, msgspec.Meta(ge=1)] = 50
    """Bars a symbol needs in the window before it is scored at all."""
    min_quote_volume: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Liquidity stage: mean close x volume over the last ``liquidity_window`` bars (0: off)."""
    liquidity_window: Annotated[int, msgspec.Meta(ge=1)] = 20
    min_volatility: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Volatility band (per-bar stdev of log returns): symbols outside it are dropped."""
    max_volatility: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    allowed_regimes: list[Regime] = msgspec.field(
        default_factory=lambda: [Regime.TRENDING, Regime.VOLATILE, Regime.RANGING, Regime.BREAKOUT]
    )
    """Regime fit: symbols whose current regime is not listed are dropped (unlabelled pass)."""
    min_abs_score_by_regime: dict[Regime, float] = msgspec.field(default_factory=dict)
    """Score threshold per regime, overriding ``min_abs_score`` (e.g. {RANGING = 1.5})."""
    max_correlation: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    """De-duplication: a candidate whose log returns correlate above this with a better-ranked
    one already kept is dropped (1.0: off)."""
    correlation_window: Annotated[int, msgspec.Meta(ge=3)] = 50


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: Side
    score: float
    price: float
    """The last close."""
    volatility: float


class ScanResult(msgspec.Struct, frozen=True, kw_only=True):
    symbols: tuple[str, ...]
    scores: NDArray[np.float64]
    """Score per symbol, aligned with ``symbols`` (NaN: not enough bars); read-only."""
    vols: NDArray[np.float64]
    selected: list[Candidate]
    """Best first: |score| descending, then symbol name."""
    dropped: dict[str, int]
    """Symbols left out, by reason (every reason in ``DROP_REASONS`` is present)."""


class Columns(Protocol):
    """What the scanner reads from ``MarketState.columns``: (symbols, window), newest last."""

    @property
    def close(self) -> NDArray[np.float64]: ...

    @property
    def volume(self) -> NDArray[np.float64]: ...

    @property
    def ts_ms(self) -> NDArray[np.int64]: ...


class ColumnSource(Protocol):
    """What the scanner needs of ``MarketState``."""

    @property
    def symbols(self) -> Sequence[str]: ...

    @property
    def capacity(self) -> int: ...

    def columns(self, window: int | None = None) -> Columns: ...


def _decorrelate(
    ranked: list[tuple[float, str, int]],
    close: NDArray[np.float64],
    config: ScannerConfig,
    dropped: dict[str, int],
    top_n: int,
) -> list[tuple[float, str, int]]:
    """Walk the ranking best first; drop a candidate too correlated with one already kept
    (only until ``top_n`` are kept: the rest are outside the top N anyway)."""
    w = min(config.correlation_window, close.shape[1] - 1)
    logc = np.log(close[:, -(w + 1) :])
    returns = np.diff(logc, axis=1)
    kept: list[tuple[float, str, int]] = []
    for entry in ranked:
        if len(kept) >= top_n:
            kept.append(entry)
            continue
        r = returns[entry[2]]
        too_close = False
        for other in kept:
            q = returns[other[2]]
            ok = ~(np.isnan(r) | np.isnan(q))
            if np.count_nonzero(ok) < 3:
                continue
            a, b = r[ok] - r[ok].mean(), q[ok] - q[ok].mean()
            denom = math.sqrt(float(a @ a) * float(b @ b))
            if denom > 0 and abs(float(a @ b)) / denom > config.max_correlation:
                too_close = True
                break
        if too_close:
            dropped[CORRELATED] += 1
        else:
            kept.append(entry)
    return kept


def select(
    symbols: Sequence[str],
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    config: ScannerConfig,
    regimes: Sequence[Regime | None] | None = None,
) -> ScanResult:
    """Score each row, run the filter stages in ``DROP_REASONS`` order (each symbol counted
    under the first that drops it), rank the survivors by |score| and keep the top N."""
    if close.shape[0] != len(symbols):
        raise ValueError(f"{len(symbols)} symbols but close has {close.shape[0]} rows")
    scores, vols = compute_scores(
        close,
        volume,
        fast=config.ema_fast,
        slow=config.ema_slow,
        vol_window=config.vol_window,
    )
    n = close.shape[0]
    bars = np.count_nonzero(~np.isnan(close), axis=1)
    strength = np.abs(scores)
    alive = np.ones(n, dtype=bool)
    dropped = dict.fromkeys(DROP_REASONS, 0)

    def stage(reason: str, drop: NDArray[np.bool_]) -> None:
        hit = alive & drop
        dropped[reason] = int(np.count_nonzero(hit))
        alive[hit] = False

    stage(INSUFFICIENT_BARS, (bars < config.min_bars) | np.isnan(scores) | np.isnan(vols))
    if config.min_quote_volume > 0:
        w = min(config.liquidity_window, close.shape[1])
        with np.errstate(invalid="ignore"):
            quote = np.nanmean(close[:, -w:] * volume[:, -w:], axis=1) if w else np.zeros(n)
        stage(LIQUIDITY, ~(quote >= config.min_quote_volume))
    stage(VOLATILITY_BAND, (vols < config.min_volatility) | (vols > config.max_volatility))
    labels = list(regimes) if regimes is not None else [None] * n
    allowed = set(config.allowed_regimes)
    stage(REGIME_FIT, np.array([r is not None and r not in allowed for r in labels], dtype=bool))
    threshold = np.array(
        [config.min_abs_score_by_regime.get(r, config.min_abs_score) if r is not None
         else config.min_abs_score for r in labels],
        dtype=np.float64,
    )  # fmt: skip
    stage(SCORE_BELOW_THRESHOLD, (strength < threshold) | (scores == 0.0))
    eligible = np.flatnonzero(alive)
    ranked = sorted((-float(strength[i]), symbols[i], i) for i in eligible.tolist())
    if config.max_correlation < 1.0 and len(ranked) > 1:
        ranked = _decorrelate(ranked, close, config, dropped, config.top_n)
    dropped[OUTSIDE_TOP_N] = max(0, len(ranked) - config.top_n)
    selected = [
        Candidate(
            symbol=symbol,
            side=Side.BUY if scores[i] > 0 else Side.SELL,
            score=float(scores[i]),
            price=float(close[i, -1]),
            volatility=float(vols[i]),
        )
        for _, symbol, i in ranked[: config.top_n]
    ]
    scores.flags.writeable = False
    vols.flags.writeable = False
    return ScanResult(
        symbols=tuple(symbols), scores=scores, vols=vols, selected=selected, dropped=dropped
    )


class Scanner:
    """Runs ``select`` over MarketState and publishes the outcome (one signal per symbol, side
    and bar: a re-scan without a new bar publishes no signal again)."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        state: ColumnSource,
        config: ScannerConfig | None = None,
        regime_of: Callable[[str], tuple[Regime | None, float]] | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.state = state
        self.config = config or ScannerConfig()
        # Tags each signal with its symbol's current regime and confidence (the detector).
        self._regime_of = regime_of
        # (symbol, side) -> ts_ms of the newest bar already signalled; at most 2 per symbol.
        self._signalled: dict[tuple[str, Side], int] = {}
        self.scans = 0
        self.signals = 0
        self.duplicates_suppressed = 0
        self.errors = 0
        self.last_error = ""
        self.last_duration_ms = 0.0
        self.last_scan_ts_ns = 0
        self.last_selected: tuple[str, ...] = ()
        self.last_dropped: dict[str, int] = {}

    async def scan(self) -> ScanResult:
        """Score the current window, publish ``ScanCompleted`` and the new ``SignalGenerated``s."""
        t0 = time.perf_counter_ns()
        try:
            symbols = list(self.state.symbols)
            # A window wider than the buffer would be refused; score what the buffer holds.
            cols = self.state.columns(min(self.config.window, self.state.capacity))
            regimes = (
                [self._regime_of(sym)[0] for sym in symbols]
                if self._regime_of is not None
                else None
            )
            result = select(symbols, cols.close, cols.volume, self.config, regimes)
        except Exception as exc:
            # The caller's loop owns the crash policy (log, count, go on); we keep health.
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            raise
        self.last_error = ""
        duration_ns = time.perf_counter_ns() - t0
        self.scans += 1
        self.last_duration_ms = duration_ns / 1e6
        self.last_scan_ts_ns = self.clock.now_ns()
        self.last_selected = tuple(c.symbol for c in result.selected)
        self.last_dropped = dict(result.dropped)
        await self.bus.publish(
            ScanCompleted(
                ts_ns=self.last_scan_ts_ns,
                symbols_scanned=len(symbols),
                selected=self.last_selected,
                dropped=dict(result.dropped),
                duration_us=duration_ns // 1000,
            )
        )
        row_of = {symbol: i for i, symbol in enumerate(symbols)}
        for candidate in result.selected:
            bar_ts = int(cols.ts_ms[row_of[candidate.symbol], -1])
            key = (candidate.symbol, candidate.side)
            if self._signalled.get(key, -1) >= bar_ts:
                self.duplicates_suppressed += 1
                continue
            self._signalled[key] = bar_ts
            regime, confidence = (
                self._regime_of(candidate.symbol) if self._regime_of is not None else (None, 0.0)
            )
            self.signals += 1
            await self.bus.publish(
                SignalGenerated(
                    ts_ns=self.clock.now_ns(),
                    signal_id=f"{candidate.symbol}-{bar_ts}-{candidate.side}",
                    symbol=candidate.symbol,
                    side=candidate.side,
                    score=candidate.score,
                    price=candidate.price,
                    volatility=candidate.volatility,
                    regime=regime,
                    confidence=confidence,
                    reasons=SIGNAL_REASONS,
                )
            )
        return result

    def metrics(self) -> dict[str, Any]:
        return {
            "scans": self.scans,
            "last_duration_ms": self.last_duration_ms,
            "signals": self.signals,
            "duplicates_suppressed": self.duplicates_suppressed,
            "errors": self.errors,
            "last_selected": list(self.last_selected),
            "last_dropped": dict(self.last_dropped),
        }

    def health(self) -> dict[str, Any]:
        return {
            "status": "degraded" if self.last_error else "ok",
            "scans": self.scans,
            "last_error": self.last_error,
            "last_scan_ts_ns": self.last_scan_ts_ns,
        }
