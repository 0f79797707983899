"""The scan: score every symbol from MarketState's columns, rank them, publish the outcome.

``select`` is the pure part (arrays in, ranked candidates out) so it can be tested and replayed
without a bus: one fused kernel pass (``indicators.compute_scan``) computes every indicator at
the newest bar, then ``select_from_values`` runs the filter stages and ranks. ``Scanner`` reads
the columns, gets the indicators (incrementally when exactly one new bar arrived for every
symbol since the last scan, else by the full pass), and publishes ``ScanCompleted``. What to
trade is the strategy's call (``quantumtrade.strategy``): it gets the ``ScanResult``.
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
from quantumtrade.events import NO_LABEL, REGIME_ORDER, Regime, ScanCompleted, Side
from quantumtrade.scoring.incremental import IncrementalIndicators
from quantumtrade.scoring.indicators import (
    OUT_BARS,
    OUT_SCORE,
    OUT_VOL,
    OUTPUTS,
    ScanParams,
    compute_scan,
)

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
    rsi_period: Annotated[int, msgspec.Meta(ge=1)] = 14
    atr_period: Annotated[int, msgspec.Meta(ge=1)] = 14
    adx_period: Annotated[int, msgspec.Meta(ge=1)] = 14
    bb_period: Annotated[int, msgspec.Meta(ge=1)] = 20
    bb_nbdev: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    macd_fast: Annotated[int, msgspec.Meta(ge=1)] = 12
    macd_slow: Annotated[int, msgspec.Meta(ge=1)] = 26
    macd_signal: Annotated[int, msgspec.Meta(ge=1)] = 9
    zscore_window: Annotated[int, msgspec.Meta(ge=1)] = 20
    roc_period: Annotated[int, msgspec.Meta(ge=1)] = 10
    """Periods of the other indicators the scan computes (``ScanResult.indicators``)."""
    incremental: bool = True
    """When exactly one new bar arrived for every symbol since the last scan, update the
    indicators from their saved state (O(symbols)) instead of recomputing the window. The
    indicators then cover every bar since the last full recomputation (which starts at the
    window's oldest bar): identical to the full pass until the window slides, after which
    they keep the history it would drop (EMA/Wilder seeds further back). A gap, a restart or
    a change of symbols recomputes in full."""

    def scan_params(self) -> ScanParams:
        """The indicator periods for the fused kernel."""
        return ScanParams(
            ema_fast=self.ema_fast, ema_slow=self.ema_slow, vol_window=self.vol_window,
            rsi=self.rsi_period, atr=self.atr_period, adx=self.adx_period,
            bb_period=self.bb_period, bb_nbdev=self.bb_nbdev, macd_fast=self.macd_fast,
            macd_slow=self.macd_slow, macd_signal=self.macd_signal,
            zscore_window=self.zscore_window, roc=self.roc_period,
        )  # fmt: skip


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
    indicators: NDArray[np.float64] | None = None
    """(symbols, len(indicators.OUTPUTS)) every indicator at the newest bar; read-only."""
    eligible: NDArray[np.bool_] | None = None
    """Passed the data stages (enough bars, liquidity, volatility band); read-only."""


class Columns(Protocol):
    """What the scanner reads from ``MarketState.columns``: (symbols, window), newest last."""

    @property
    def high(self) -> NDArray[np.float64]: ...

    @property
    def low(self) -> NDArray[np.float64]: ...

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
    top_n: int,
) -> tuple[list[tuple[float, str, int]], int, bool]:
    """Walk the ranking best first; drop a candidate too correlated with one already kept,
    until ``top_n`` are kept (the rest are outside the top N anyway). Returns the kept ones,
    how many were dropped, and whether ``top_n`` were reached."""
    w = min(config.correlation_window, close.shape[1] - 1)
    rows = [entry[2] for entry in ranked]
    returns = np.diff(np.log(close[rows, -(w + 1) :]), axis=1)  # only the ranked rows
    kept: list[tuple[float, str, int]] = []
    kept_at: list[int] = []  # their rows in ``returns``
    n_dropped = 0
    for k, entry in enumerate(ranked):
        if len(kept) >= top_n:
            return kept, n_dropped, True
        r = returns[k]
        too_close = False
        for other in kept_at:
            q = returns[other]
            ok = ~(np.isnan(r) | np.isnan(q))
            if np.count_nonzero(ok) < 3:
                continue
            a, b = r[ok] - r[ok].mean(), q[ok] - q[ok].mean()
            denom = math.sqrt(float(a @ a) * float(b @ b))
            if denom > 0 and abs(float(a @ b)) / denom > config.max_correlation:
                too_close = True
                break
        if too_close:
            n_dropped += 1
        else:
            kept.append(entry)
            kept_at.append(k)
    return kept, n_dropped, len(kept) >= top_n


def _sorted_rows(
    rows: NDArray[np.intp], strength: NDArray[np.float64], symbols: Sequence[str]
) -> list[tuple[float, str, int]]:
    """``rows`` in ranking order, |score| descending then symbol name."""
    at = rows.tolist()
    return sorted(zip((-strength[rows]).tolist(), [symbols[i] for i in at], at, strict=True))


def _ranked_prefix(
    eligible: NDArray[np.intp], strength: NDArray[np.float64], symbols: Sequence[str], k: int
) -> list[tuple[float, str, int]]:
    """The first ``k`` (at least; ties at the cut are all in) of the eligible rows in ranking
    order, |score| descending then symbol name, without sorting all of them."""
    if k < eligible.size:
        s = strength[eligible]
        cut = -np.partition(-s, k - 1)[k - 1]
        eligible = eligible[s >= cut]
    return _sorted_rows(eligible, strength, symbols)


# Up to this many eligible rows, ``_ranked_top`` sorts them all: cheaper than the partition.
_SORT_ALL = 64


def _ranked_top(
    eligible: NDArray[np.intp], strength: NDArray[np.float64], symbols: Sequence[str], k: int
) -> list[tuple[float, str, int]]:
    """The first ``k`` of the eligible rows in ranking order (``_ranked_prefix``'s head)."""
    if eligible.size > _SORT_ALL:
        return _ranked_prefix(eligible, strength, symbols, k)[:k]
    return _sorted_rows(eligible, strength, symbols)[:k]


_ORDER_CODE: dict[object, int] = {r: k for k, r in enumerate(REGIME_ORDER)}
# The last regime config's (key, (unfit, threshold)): lookup tables indexed by regime code,
# REGIME_ORDER's order then unlabelled (NO_LABEL, -1, reads the last entry).
_tables: tuple[tuple[Any, ...], tuple[NDArray[np.bool_], NDArray[np.float64]]] | None = None


def _regime_tables(config: ScannerConfig) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Per regime code: dropped by the regime fit (a label not allowed; unlabelled pass), and
    the score threshold (per regime, else ``min_abs_score``)."""
    global _tables
    key = (
        tuple(config.allowed_regimes),
        tuple(config.min_abs_score_by_regime.items()),
        config.min_abs_score,
    )
    if _tables is not None and _tables[0] == key:
        return _tables[1]
    allowed = set(config.allowed_regimes)
    unfit = np.array([r not in allowed for r in REGIME_ORDER] + [False])
    by_code = np.array(
        [config.min_abs_score_by_regime.get(r, config.min_abs_score) for r in REGIME_ORDER]
        + [config.min_abs_score]
    )
    _tables = (key, (unfit, by_code))
    return unfit, by_code


def _regime_codes(
    regimes: Sequence[Regime | None] | None,
    codes: NDArray[np.integer[Any]] | None,
    n: int,
) -> NDArray[np.integer[Any]] | None:
    """Each symbol's regime as an index in ``REGIME_ORDER`` (``NO_LABEL``: unlabelled), from
    either form, checked; None when neither is given."""
    if codes is not None:
        if regimes is not None:
            raise ValueError("pass regimes or regime_codes, not both")
        if codes.shape != (n,):
            raise ValueError(f"{n} symbols but regime codes shaped {codes.shape}")
        if n and not (int(codes.min()) >= NO_LABEL and int(codes.max()) < len(REGIME_ORDER)):
            raise ValueError("regime codes must be NO_LABEL or an index in REGIME_ORDER")
        return codes
    if regimes is None:
        return None
    if len(regimes) != n:
        raise ValueError(f"{n} symbols but {len(regimes)} regimes")
    return np.fromiter((_ORDER_CODE.get(r, NO_LABEL) for r in regimes), dtype=np.int64, count=n)


def select(
    symbols: Sequence[str],
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    config: ScannerConfig,
    regimes: Sequence[Regime | None] | None = None,
    *,
    high: NDArray[np.float64] | None = None,
    low: NDArray[np.float64] | None = None,
) -> ScanResult:
    """Compute every indicator at the newest bar in one fused pass (high/low default to the
    close), then ``select_from_values``."""
    if close.shape[0] != len(symbols):
        raise ValueError(f"{len(symbols)} symbols but close has {close.shape[0]} rows")
    scan, _ = compute_scan(
        high if high is not None else close,
        low if low is not None else close,
        close,
        volume,
        config.scan_params(),
    )
    return select_from_values(symbols, scan.values, close, volume, config, regimes)


def select_from_values(
    symbols: Sequence[str],
    values: NDArray[np.float64],
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    config: ScannerConfig,
    regimes: Sequence[Regime | None] | None = None,
    *,
    regime_codes: NDArray[np.integer[Any]] | None = None,
) -> ScanResult:
    """Run the filter stages in ``DROP_REASONS`` order on the indicators ``values`` (each symbol
    counted under the first that drops it), rank the survivors by |score| and keep the top N.
    ``close``/``volume`` are the window the liquidity and correlation stages read. Each
    symbol's regime comes as ``regimes`` or as ``regime_codes`` (its index in
    ``REGIME_ORDER``, ``NO_LABEL`` for none: the detector's labels), or not at all."""
    n = len(symbols)
    if close.shape[0] != n or values.shape != (n, len(OUTPUTS)):
        raise ValueError(
            f"{n} symbols but close has {close.shape[0]} rows and values shape {values.shape}"
        )
    codes = _regime_codes(regimes, regime_codes, n)
    return _select(symbols, values, close, volume, config, codes)


def _select(
    symbols: Sequence[str],
    values: NDArray[np.float64],
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    config: ScannerConfig,
    codes: NDArray[np.integer[Any]] | None,
) -> ScanResult:
    """``select_from_values`` on checked inputs, the regimes as codes (None: no regimes)."""
    n = len(symbols)
    indicators = values.copy()
    scores = indicators[:, OUT_SCORE].copy()
    vols = indicators[:, OUT_VOL].copy()
    strength = np.abs(scores)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    # Each stage drops ``hit``, the rows still alive that it fails (``alive ^= hit``).
    hit = (indicators[:, OUT_BARS] < config.min_bars) | np.isnan(scores) | np.isnan(vols)
    dropped[INSUFFICIENT_BARS] = int(np.count_nonzero(hit))
    alive = ~hit
    if config.min_quote_volume > 0:
        w = min(config.liquidity_window, close.shape[1])
        with np.errstate(invalid="ignore"):
            quote = np.nanmean(close[:, -w:] * volume[:, -w:], axis=1) if w else np.zeros(n)
        hit = alive & ~(quote >= config.min_quote_volume)
        dropped[LIQUIDITY] = int(np.count_nonzero(hit))
        alive ^= hit
    hit = alive & ((vols < config.min_volatility) | (vols > config.max_volatility))
    dropped[VOLATILITY_BAND] = int(np.count_nonzero(hit))
    alive ^= hit
    data_ok = alive.copy()
    if codes is None:
        low = strength < config.min_abs_score
    else:
        unfit, by_code = _regime_tables(config)
        hit = alive & unfit[codes]
        dropped[REGIME_FIT] = int(np.count_nonzero(hit))
        alive ^= hit
        low = strength < by_code[codes]
    hit = alive & (low | (scores == 0.0))
    dropped[SCORE_BELOW_THRESHOLD] = int(np.count_nonzero(hit))
    alive ^= hit
    eligible = alive.nonzero()[0]
    top_n = config.top_n
    if config.max_correlation < 1.0 and eligible.size > 1:
        # Correlated candidates are skipped, so the walk may need more than the top N.
        k = 4 * top_n
        while True:
            prefix = _ranked_prefix(eligible, strength, symbols, k)
            kept, n_correlated, reached = _decorrelate(prefix, close, config, top_n)
            if reached or len(prefix) == eligible.size:
                break
            k *= 4
        dropped[CORRELATED] = n_correlated
        ranked = kept[:top_n]
    else:
        ranked = _ranked_top(eligible, strength, symbols, top_n)
    dropped[OUTSIDE_TOP_N] = max(0, int(eligible.size) - dropped[CORRELATED] - top_n)
    selected = []
    for _, symbol, i in ranked:
        score = float(scores[i])
        selected.append(
            Candidate(
                symbol=symbol,
                side=Side.BUY if score > 0 else Side.SELL,
                score=score,
                price=float(close[i, -1]),
                volatility=float(vols[i]),
            )
        )
    scores.flags.writeable = False
    vols.flags.writeable = False
    indicators.flags.writeable = False
    data_ok.flags.writeable = False
    return ScanResult(
        symbols=tuple(symbols),
        scores=scores,
        vols=vols,
        selected=selected,
        dropped=dropped,
        indicators=indicators,
        eligible=data_ok,
    )


class Scanner:
    """Runs ``select`` over MarketState and publishes ``ScanCompleted``."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        state: ColumnSource,
        config: ScannerConfig | None = None,
        regime_of: Callable[[str], tuple[Regime | None, float]] | None = None,
        regime_codes: Callable[[list[str]], NDArray[np.integer[Any]]] | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.state = state
        self.config = config or ScannerConfig()
        # Each symbol's current regime, for the regime-fit stage (the detector): per symbol
        # (``regime_of``), or all at once as codes (``regime_codes``: an index in REGIME_ORDER
        # per symbol, NO_LABEL for none; the detector's, which DecisionPath passes).
        self._regime_of = regime_of
        self._regime_codes = regime_codes
        self.scans = 0
        self.errors = 0
        self.last_error = ""
        self.last_duration_ms = 0.0
        self.last_scan_ts_ns = 0
        self.last_selected: tuple[str, ...] = ()
        self.last_dropped: dict[str, int] = {}
        # The indicators' state after the last scan, the symbols it is for and each row's
        # newest bar timestamp then (0: no bar): what decides whether a scan can resume it.
        self._inc: IncrementalIndicators | None = None
        self._inc_symbols: tuple[str, ...] = ()
        self._inc_last_ts: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.incremental_updates = 0
        self.full_recomputes = 0

    async def scan(self) -> ScanResult:
        """Score the current window and publish ``ScanCompleted``."""
        t0 = time.perf_counter_ns()
        try:
            symbols = self.state.symbols
            if not isinstance(symbols, list):
                symbols = list(symbols)
            names = tuple(symbols)
            # A window wider than the buffer would be refused; score what the buffer holds.
            cols = self.state.columns(min(self.config.window, self.state.capacity))
            codes: NDArray[np.integer[Any]] | None = None
            if self._regime_codes is not None:
                codes = _regime_codes(None, self._regime_codes(symbols), len(names))
            elif self._regime_of is not None:
                regimes = [self._regime_of(sym)[0] for sym in symbols]
                codes = _regime_codes(regimes, None, len(names))
            values = self._indicators(names, cols)
            if cols.close.shape[0] != len(names) or values.shape != (len(names), len(OUTPUTS)):
                raise ValueError(
                    f"{len(names)} symbols but close has {cols.close.shape[0]} rows and values "
                    f"shape {values.shape}"
                )
            result = _select(names, values, cols.close, cols.volume, self.config, codes)
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
        return result

    def _indicators(self, symbols: Sequence[str], cols: Columns) -> NDArray[np.float64]:
        """Every indicator at the newest bar: resumed from the last scan's state when each
        row got exactly one new bar since (or none, for a row still without bars), kept when
        no row changed, else recomputed over the whole window."""
        ts = cols.ts_ms
        last = ts[:, -1] if ts.shape[1] else np.zeros(ts.shape[0], dtype=np.int64)
        inc = self._inc
        if (
            self.config.incremental
            and inc is not None
            and ts.shape[1] >= 2
            and tuple(symbols) == self._inc_symbols
        ):
            prev = self._inc_last_ts
            if (last == prev).all():
                return inc.values
            one_new = (ts[:, -2] == prev) & (last > prev)
            if one_new.all() or (one_new | ((last == 0) & (prev == 0))).all():
                inc.update(cols.high[:, -1], cols.low[:, -1], cols.close[:, -1], cols.volume[:, -1])
                self._inc_last_ts = last.copy()
                self.incremental_updates += 1
                return inc.values
        self._inc = IncrementalIndicators.from_history(
            cols.high, cols.low, cols.close, cols.volume, self.config.scan_params()
        )
        self._inc_symbols = tuple(symbols)
        self._inc_last_ts = last.copy()
        self.full_recomputes += 1
        return self._inc.values

    def metrics(self) -> dict[str, Any]:
        return {
            "scans": self.scans,
            "incremental_updates": self.incremental_updates,
            "full_recomputes": self.full_recomputes,
            "last_duration_ms": self.last_duration_ms,
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
