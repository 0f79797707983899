"""``[adapt]``: the decision rule, ``ParametersChanged`` through the codec, the engine switching
at the event, the config's errors, and the runner driven by bars (a fake search in a thread)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import numpy as np
import pytest

from quantumtrade.backtest.data import from_arrays
from quantumtrade.backtest.runner import run_backtest
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig, load_config
from quantumtrade.core import DecisionPath, TradingCore
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.source import BarBatch
from quantumtrade.errors import ConfigError
from quantumtrade.events import (
    AdaptEvidence,
    ParametersChanged,
    SignalGenerated,
    decode,
    encode,
)
from quantumtrade.strategy.adapt import (
    AdaptConfig,
    Adapter,
    AdaptRequest,
    SearchResult,
    judge,
    snapshot,
)

CFG = AdaptConfig(enabled=True, margin=0.25, min_trades=5)
HOUR = 3_600_000


def result(**kw: Any) -> SearchResult:
    base: dict[str, Any] = dict(
        current={"min_score": 0.0}, best={"min_score": 1.0}, tuned_score=1.0,
        current_score=0.5, tuned_trades=10, current_trades=8, trials=30, scored_trials=25,
        train_from_ms=0, test_from_ms=1, test_to_ms=2,
    )  # fmt: skip
    return SearchResult(**{**base, **kw})


def test_applied_when_the_margin_is_met() -> None:
    assert judge(result(tuned_score=0.75, current_score=0.5), CFG) == (True, "applied")
    assert judge(result(tuned_score=2.0, current_score=-1.0), CFG) == (True, "applied")


def test_kept_below_the_margin() -> None:
    assert judge(result(tuned_score=0.74, current_score=0.5), CFG) == (False, "below_margin")
    assert judge(result(tuned_score=0.4, current_score=0.5), CFG) == (False, "below_margin")


def test_kept_with_too_few_trades_whatever_the_score() -> None:
    assert judge(result(tuned_score=9.0, tuned_trades=4), CFG) == (False, "too_few_trades")
    assert judge(result(tuned_score=9.0, tuned_trades=5), CFG) == (True, "applied")


def test_kept_without_evidence() -> None:
    assert judge(result(best=None), CFG)[1] == "no_scored_trial"
    assert judge(result(best={"min_score": 0.0}), CFG)[1] == "same_parameters"
    assert judge(result(tuned_score=None), CFG)[1] == "tuned_objective_undefined"
    assert judge(result(current_score=None), CFG)[1] == "current_objective_undefined"


def test_parameters_changed_round_trips_through_the_event_codec() -> None:
    event = ParametersChanged(
        ts_ns=5, seq=9, strategy="regime_adaptive",
        old={"trend.min_score": 0.0, "breakout.channel": 24, "trade_ranging": False},
        new={"trend.min_score": 1.25, "breakout.channel": 36, "trade_ranging": True},
        evidence=AdaptEvidence(
            objective="sharpe", tuned_score=1.5, current_score=0.2, margin=0.25,
            tuned_trades=12, current_trades=9, trials=30, scored_trials=28,
            train_from_ms=1_000, test_from_ms=2_000, test_to_ms=3_000, seed=7, pbo=0.25,
        ),
    )  # fmt: skip
    back = decode(encode(event))
    assert back == event
    assert isinstance(back, ParametersChanged)
    assert type(back.new["breakout.channel"]) is int
    assert type(back.new["trend.min_score"]) is float


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"QT_ADAPT__OBJECTIVE": "returns"}, "adapt.objective"),
        ({"QT_ADAPT__TEST_SHARE": "1.5"}, "adapt.test_share"),
        ({"QT_ADAPT__EVERY_BARS": "0"}, "adapt.every_bars"),
        ({"QT_ADAPT__MARGIN": "-0.1"}, "adapt.margin"),
        ({"QT_ADAPT__ENABLED": "true", "QT_ADAPT__LOOKBACK_BARS": "5000"}, "adapt.lookback_bars"),
        ({"QT_ADAPT__ENABLED": "true", "QT_ADAPT__WARMUP_BARS": "900"}, "adapt.warmup_bars"),
    ],
)
def test_config_errors_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, environ=env)
    assert err.value.key == key


def test_unknown_adapt_key_is_named(tmp_path: Any) -> None:
    path = tmp_path / "qt.toml"
    path.write_text("[adapt]\nevery_bar = 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.key == "adapt.every_bar"


def test_off_by_default_and_a_long_lookback_is_fine_while_off() -> None:
    cfg = load_config(None, environ={"QT_ADAPT__LOOKBACK_BARS": "5000"})
    assert cfg.adapt.enabled is False


# --- the engine switches at the event ----------------------------------------------------


def random_walk(bars: int, symbols: int, seed: int, drift: float = 0.0005) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(drift, 0.01, (bars, symbols)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    wick = np.abs(rng.normal(0, 0.003, (2, bars, symbols)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = rng.uniform(100, 1_000, (bars, symbols))
    return np.stack([open_, high, low, close, volume], axis=2)


def trend_config() -> AppConfig:
    return load_config(None, environ={"QT_STRATEGY__NAME": "trend", "QT_SCANNER__MIN_BARS": "30"})


async def signals_after(bar: int, change: ParametersChanged | None) -> int:
    cfg = trend_config()
    n_bars, n_sym = 400, 6
    candles = from_arrays(
        [f"S{i}USDT" for i in range(n_sym)],
        np.arange(n_bars, dtype=np.int64) * HOUR,
        random_walk(n_bars, n_sym, seed=3),
        HOUR,
    )
    signals: list[int] = []
    at: list[int] = [0]

    def observe(i: int, core: TradingCore, ledger: Any, equity: float) -> None:
        at[0] = i
        if i == bar and change is not None:
            core.strategy.on_parameters(change)

    def record(event: Any) -> None:
        if isinstance(event, SignalGenerated) and at[0] >= bar:
            signals.append(at[0])

    await run_backtest(cfg, candles, trade_from=100, observe=observe, record=record)
    return len(signals)


async def test_the_engine_decides_with_the_new_parameters_after_the_event() -> None:
    blocking = ParametersChanged(
        ts_ns=0, strategy="trend", old={"min_score": 0.0}, new={"min_score": 1e9},
        evidence=AdaptEvidence(
            objective="sharpe", tuned_score=1.0, current_score=0.0, margin=0.0,
            tuned_trades=5, current_trades=5, trials=1, scored_trials=1, train_from_ms=0,
            test_from_ms=0, test_to_ms=0, seed=0,
        ),
    )  # fmt: skip
    assert await signals_after(100, None) > 0  # the negative control: entries without it
    assert await signals_after(100, blocking) == 0
    other = msgspec.structs.replace(blocking, strategy="breakout")
    assert await signals_after(100, other) > 0  # another strategy's set is not applied


# --- the runner, driven by bars --------------------------------------------------------------


class Harness:
    def __init__(self, search: Any, config: AdaptConfig) -> None:
        cfg = trend_config()
        self.clock = ManualClock(0)
        self.bus = EventBus(clock=self.clock)
        self.symbols = ("AAAUSDT", "BBBUSDT")
        self.state = MarketState(self.symbols, 200)
        self.path = DecisionPath.build(cfg, bus=self.bus, clock=self.clock, state=self.state)
        self.changes: list[ParametersChanged] = []
        self.bus.subscribe(ParametersChanged, self.changes.append)
        self.requests: list[AdaptRequest] = []

        def recorded(request: AdaptRequest) -> SearchResult:
            self.requests.append(request)
            return search(request)  # type: ignore[no-any-return]

        self.adapter = Adapter(
            bus=self.bus, clock=self.clock, state=self.state, engine=self.path.strategy,
            config=config, search=recorded, executor=lambda: ThreadPoolExecutor(1),
        )  # fmt: skip
        self.prices = random_walk(1_000, 2, seed=5)
        self.t = 0

    def feed(self, bars: int) -> None:
        for _ in range(bars):
            batch = BarBatch(
                self.symbols,
                np.full(2, (self.t + 1) * HOUR, dtype=np.int64),  # 0 is padding
                np.ascontiguousarray(self.prices[self.t]),
                np.arange(3, dtype=np.int64),
            )
            batch.freeze()
            self.state.append_validated(batch)
            self.t += 1

    async def settle(self) -> None:
        task = self.adapter._task
        if task is not None:
            await task


async def run_steps(h: Harness, steps: int, bars_each: int = 1) -> None:
    for _ in range(steps):
        h.feed(bars_each)
        await h.adapter.step()
        await h.settle()
    await h.bus.drain()


def tuned(request: AdaptRequest) -> SearchResult:
    return result(current={"min_score": 0.0}, best={"min_score": 0.5}, tuned_score=2.0)


async def test_a_run_every_every_bars_bars_applies_a_set_that_beats_the_margin() -> None:
    cfg = AdaptConfig(enabled=True, every_bars=10, lookback_bars=50, warmup_bars=10)
    h = Harness(tuned, cfg)
    async with asyncio.TaskGroup() as tg:
        h.bus.start(tg)
        h.adapter.start(tg)
        await run_steps(h, 49)  # fewer bars than the lookback: nothing runs yet
        assert h.requests == []
        await run_steps(h, 1)  # bar 50: enough bars, and more than every_bars since start
        assert len(h.requests) == 1
        await run_steps(h, 1)  # the result is published at the next step
        assert len(h.changes) == 1 and h.changes[0].new == {"min_score": 0.5}
        assert h.path.strategy.params["min_score"] == 0.5
        assert h.adapter.runs == {"applied": 1, "kept": 0, "failed": 0}
        await run_steps(h, 8)
        assert len(h.requests) == 1  # 9 bars after the run began: not yet
        await run_steps(h, 1)
        assert len(h.requests) == 2  # ten bars after the last run began
        await run_steps(h, 3)
        await h.adapter.stop()
        await h.bus.stop()
    request = h.requests[0]
    assert request.ts_ms.size == 50
    assert request.strategy.params == {}  # the set in force when it began
    assert h.requests[1].strategy.params == {"min_score": 0.5}
    # A copy: later bars never reach a snapshot already taken.
    assert int(request.ts_ms[-1]) < int(h.requests[1].ts_ms[-1])


async def test_a_set_below_the_margin_is_kept_and_a_failed_search_is_counted() -> None:
    calls = [0]

    def flaky(request: AdaptRequest) -> SearchResult:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("search blew up")
        return result(tuned_score=0.6, current_score=0.5)

    cfg = AdaptConfig(enabled=True, every_bars=5, lookback_bars=30, warmup_bars=5)
    h = Harness(flaky, cfg)
    async with asyncio.TaskGroup() as tg:
        h.bus.start(tg)
        h.adapter.start(tg)
        await run_steps(h, 30 + 5 * 3 + 2)
        await h.adapter.stop()
        await h.bus.stop()
    assert h.changes == []
    assert h.adapter.runs["failed"] == 1
    assert h.adapter.runs["kept"] >= 2
    assert h.adapter.kept == {"below_margin": h.adapter.runs["kept"]}
    assert h.path.strategy.params["min_score"] == 0.0


def test_snapshot_places_every_symbol_on_one_axis() -> None:
    state = MarketState(["AUSDT", "BUSDT"], 50)
    for t in range(8):
        symbols = ("AUSDT", "BUSDT") if t != 3 else ("AUSDT",)  # B misses bar 3
        n = len(symbols)
        batch = BarBatch(
            symbols,
            np.full(n, (t + 1) * HOUR, dtype=np.int64),
            np.tile([1.0, 20.0, 0.5, 1.0 + t, 10.0], (n, 1)),
            np.arange(n + 1, dtype=np.int64),
        )
        batch.freeze()
        state.append_validated(batch)
    ts, prices, have = snapshot(state, 6)
    assert ts.tolist() == [t * HOUR for t in range(3, 9)]
    assert have[:, 0].all() and have[:, 1].tolist() == [True, False, True, True, True, True]
    assert prices[:, 0, 3].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert np.isnan(prices[1, 1, 3])
