"""``[adapt]``: re-tune the strategy on recent bars, apply a new set only on out-of-sample evidence.

Every ``every_bars`` new bars (counted from the bars' open times in MarketState), the newest
``lookback_bars`` of every symbol are copied out of MarketState (the search never sees a later
bar) and handed to a search in one spawned worker process, awaited with
``loop.run_in_executor``: the event loop never waits for it, and there is never more than one
run at once. The search (``backtest/adapt.py``, given to the daemon by the command line: the
daemon imports nothing of ``backtest``) cuts the snapshot as ``optimize`` cuts a window: the
first ``warmup_bars`` warm up, the newest ``test_share`` is the out-of-sample test, the rest
trains; TPE (seeded) searches the strategy's ``SPACE`` on the train bars, then the best set and
the current set are each run once on the same test bars.

Back in the loop, at the start of the next heartbeat (a fixed point of the event stream, before
its bars), ``judge`` decides: the tuned set replaces the current one only when its test
objective beats the current set's by at least ``margin`` and it made at least ``min_trades``
test trades. Then ``ParametersChanged`` (old and new values, the evidence) is published and the
strategy engine switches to the new set inline; replay applies the logged event at the same
place. Otherwise the reason is logged and counted. A failed search is logged and counted and
never stops the daemon.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.data.market_state import MarketState
from quantumtrade.events import AdaptEvidence, ParametersChanged
from quantumtrade.strategy.engine import StrategyEngine
from quantumtrade.strategy.loader import StrategyConfig

log = structlog.get_logger("quantumtrade.adapt")

OUTCOMES = ("applied", "kept", "failed")


class Objective(StrEnum):
    SHARPE = "sharpe"
    SORTINO = "sortino"
    CALMAR = "calmar"
    PROFIT_FACTOR = "profit_factor"


class AdaptConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = False
    """Off by default: re-tuning a live strategy is the trader's choice."""
    every_bars: Annotated[int, msgspec.Meta(ge=1)] = 168
    """Re-run the search after this many new bars of the traded timeframe."""
    lookback_bars: Annotated[int, msgspec.Meta(ge=30)] = 1_000
    """The most recent bars of each symbol the search sees (at most ``data.capacity``)."""
    test_share: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1 / 3
    """The newest share of the lookback: the out-of-sample test; the rest trains."""
    warmup_bars: Annotated[int, msgspec.Meta(ge=0)] = 200
    """Bars at the start of the lookback that only warm up the train run (indicators,
    regimes); the test run warms up on the train bars before it."""
    trials: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 30
    objective: Objective = Objective.SHARPE
    min_trades: Annotated[int, msgspec.Meta(ge=0)] = 5
    """A trial, and the tuned set on the test bars, needs at least this many trades."""
    margin: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    """The tuned set's test objective must beat the current set's by at least this."""
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0


def check(config: AdaptConfig, capacity: int) -> list[tuple[str, str]]:
    """Cross-field rules (``config.py`` runs them): the lookback fits MarketState and leaves
    train bars after the warm-up and the test."""
    if not config.enabled:
        return []
    problems: list[tuple[str, str]] = []
    if config.lookback_bars > capacity:
        problems.append(
            (
                "adapt.lookback_bars",
                f"{config.lookback_bars} exceeds data.capacity ({capacity}): MarketState "
                "keeps only that many bars",
            )
        )
    train_first, test_first = cut(config.lookback_bars, config)
    if test_first - train_first < 10 or config.lookback_bars - test_first < 10:
        problems.append(
            (
                "adapt.warmup_bars",
                f"leaves {test_first - train_first} train and "
                f"{config.lookback_bars - test_first} test bars of {config.lookback_bars} "
                "(each needs at least 10)",
            )
        )
    return problems


def cut(bars: int, config: AdaptConfig) -> tuple[int, int]:
    """(first traded train bar, first test bar) of a snapshot of ``bars`` bars."""
    test_first = bars - max(1, round(bars * config.test_share))
    return min(config.warmup_bars, test_first), test_first


# --- what goes to the worker and what comes back --------------------------------------------


@dataclass(frozen=True, slots=True)
class AdaptRequest:
    """A copy of the newest bars and the set in force when the run was started."""

    strategy: StrategyConfig
    config: AdaptConfig
    symbols: tuple[str, ...]
    ts_ms: NDArray[np.int64]
    """Bar open times (bars,), ascending."""
    prices: NDArray[np.float64]
    """(bars, symbols, 5) open, high, low, close, volume (NaN where ``have`` is False)."""
    have: NDArray[np.bool_]
    bar_ms: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    current: dict[str, Any]
    """The searched parameters' values in the set in force."""
    best: dict[str, Any] | None
    """The best trial's values (None: no trial was scored)."""
    tuned_score: float | None
    current_score: float | None
    tuned_trades: int
    current_trades: int
    trials: int
    scored_trials: int
    train_from_ms: int
    test_from_ms: int
    test_to_ms: int
    pbo: float | None = None
    deflated_sharpe: float | None = None
    elapsed_s: float = 0.0
    pid: int = 0
    """The process the search ran in."""


Search = Callable[[AdaptRequest], SearchResult]


def judge(result: SearchResult, config: AdaptConfig) -> tuple[bool, str]:
    """(apply?, why): the tuned set replaces the current one only when it beats it out of
    sample by ``margin`` with at least ``min_trades`` test trades."""
    if result.best is None:
        return False, "no_scored_trial"
    if result.best == result.current:
        return False, "same_parameters"
    if result.tuned_trades < config.min_trades:
        return False, "too_few_trades"
    tuned, current = result.tuned_score, result.current_score
    if tuned is None or not math.isfinite(tuned):
        return False, "tuned_objective_undefined"
    if current is None or not math.isfinite(current):
        # Nothing to beat by a margin: keep what trades now (conservative).
        return False, "current_objective_undefined"
    if tuned - current < config.margin:
        return False, "below_margin"
    return True, "applied"


def snapshot(state: MarketState, bars: int) -> tuple[NDArray[np.int64], NDArray[np.float64],
                                                     NDArray[np.bool_]]:  # fmt: skip
    """The newest ``bars`` bar times of any symbol, as (ts_ms, prices, have) copies on one axis."""
    cols = state.columns(min(bars, state.capacity))
    ts = cols.ts_ms
    axis = np.unique(ts[ts > 0])[-bars:]
    n = len(state.symbols)
    prices = np.full((axis.size, n, 5), np.nan)
    have = np.zeros((axis.size, n), dtype=bool)
    fields = (cols.open, cols.high, cols.low, cols.close, cols.volume)
    for j in range(n):
        row = ts[j]
        keep = (row > 0) & (row >= (axis[0] if axis.size else 0))
        at = np.searchsorted(axis, row[keep])
        for k, values in enumerate(fields):
            prices[at, j, k] = values[j][keep]
        have[at, j] = True
    return axis.astype(np.int64), prices, have


# --- the runner in the daemon ---------------------------------------------------------------


class Adapter:
    """Starts a search when due, and publishes or refuses its result at the next heartbeat."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        state: MarketState,
        engine: StrategyEngine,
        config: AdaptConfig,
        search: Search,
        executor: Callable[[], Executor] | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.state = state
        self.engine = engine
        self.config = config
        self._search = search
        self._new_executor = executor or _spawned_worker
        self._executor: Executor | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: SearchResult | None = None
        self._from_ms: int | None = None
        """Open time of the newest bar when the last run started (or when counting began)."""
        self.runs: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.kept: dict[str, int] = {}
        """Runs that kept the current set, by reason."""
        self.last: dict[str, Any] = {}
        """The last run's outcome, for the admin API."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg

    async def stop(self) -> None:
        """Cancel a run in flight and end the worker process (a search does not outlive us)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                if not self._task.cancelled():
                    raise  # our own cancellation, not the run's
        self._close_executor()

    def _close_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # Python 3.11 has no terminate_workers(): end a search still running by hand, or the
        # interpreter's exit would wait for it.
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)

    async def step(self) -> None:
        """At the start of a heartbeat: publish (or refuse) a finished run's result, then start
        the next run if ``every_bars`` new bars have come since the last one began."""
        ready, self._ready = self._ready, None
        if ready is not None:
            await self._conclude(ready)
        if self.running or self._tg is None:
            return
        newest = self._newest_ms()
        if newest is None:
            return
        if self._from_ms is None:
            self._from_ms = newest
        bar_ms = self._bar_ms()
        if bar_ms <= 0 or (newest - self._from_ms) // bar_ms < self.config.every_bars:
            return
        request = self.request()
        if request is None:
            return
        self._from_ms = newest
        self._task = self._tg.create_task(self._run(request), name="adapt")

    def request(self) -> AdaptRequest | None:
        """The snapshot a run searches (None: fewer than ``lookback_bars`` bars yet)."""
        ts, prices, have = snapshot(self.state, self.config.lookback_bars)
        if ts.size < self.config.lookback_bars:
            return None
        return AdaptRequest(
            strategy=self.engine.config,
            config=self.config,
            symbols=tuple(self.state.symbols),
            ts_ms=ts,
            prices=prices,
            have=have,
            bar_ms=int(np.diff(ts).min()) if ts.size > 1 else 0,
        )

    def _newest_ms(self) -> int | None:
        if not len(self.state):
            return None
        newest = int(self.state.columns(1).ts_ms.max())
        return newest or None

    def _bar_ms(self) -> int:
        ts = self.state.columns(min(2, self.state.capacity)).ts_ms
        if ts.shape[1] < 2:
            return 0
        steps = ts[:, 1] - ts[:, 0]
        steps = steps[(ts[:, 0] > 0) & (steps > 0)]
        return int(steps.min()) if steps.size else 0

    async def _run(self, request: AdaptRequest) -> None:
        """The search in the worker; never raises into the task group."""
        if self._executor is None:
            self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        log.info("adapt_started", bars=int(request.ts_ms.size), symbols=len(request.symbols))
        try:
            result = await loop.run_in_executor(self._executor, self._search, request)
        except Exception as exc:  # one crash policy: logged, counted, the daemon goes on
            self.runs["failed"] += 1
            self.last = {"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"}
            log.error("adapt_failed", error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, BrokenProcessPool):
                self._close_executor()  # a new worker next time
            return
        log.info("adapt_searched", elapsed_s=round(time.perf_counter() - t0, 2))
        self._ready = result

    async def _conclude(self, result: SearchResult) -> None:
        apply, why = judge(result, self.config)
        evidence = AdaptEvidence(
            objective=str(self.config.objective),
            tuned_score=_finite(result.tuned_score),
            current_score=_finite(result.current_score),
            margin=self.config.margin,
            tuned_trades=result.tuned_trades,
            current_trades=result.current_trades,
            trials=result.trials,
            scored_trials=result.scored_trials,
            train_from_ms=result.train_from_ms,
            test_from_ms=result.test_from_ms,
            test_to_ms=result.test_to_ms,
            seed=self.config.seed,
            pbo=result.pbo,
            deflated_sharpe=result.deflated_sharpe,
        )
        self.last = {
            "outcome": "applied" if apply else "kept",
            "reason": why,
            "evidence": msgspec.to_builtins(evidence),
            "best": result.best,
            "current": result.current,
            "search_s": round(result.elapsed_s, 2),
        }
        if not apply:
            self.runs["kept"] += 1
            self.kept[why] = self.kept.get(why, 0) + 1
            log.info(
                "adapt_kept_current",
                reason=why,
                tuned=result.tuned_score,
                current=result.current_score,
                tuned_trades=result.tuned_trades,
                margin=self.config.margin,
            )
            return
        assert result.best is not None
        self.runs["applied"] += 1
        await self.bus.publish(
            ParametersChanged(
                ts_ns=self.clock.now_ns(),
                strategy=self.engine.name,
                old=dict(result.current),
                new=dict(result.best),
                evidence=evidence,
            )
        )

    def status(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "running": self.running,
            "runs": dict(self.runs),
            "kept": dict(self.kept),
            "last": self.last,
            "config": msgspec.to_builtins(self.config),
        }


def _finite(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _spawned_worker() -> Executor:
    # spawn, not fork: the daemon has numba's, asyncio's and aiohttp's threads running.
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
