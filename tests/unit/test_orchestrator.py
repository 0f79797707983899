"""Orchestrator end to end: real EventBus, ManualClock, MarketState, sources and breakers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pytest

from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator, OrchestratorConfig
from quantumtrade.data.source import OrderBook, Source, Ticker
from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource
from quantumtrade.data.validation import DUPLICATE_TIMESTAMP, HIGH_LOW_INCONSISTENT, NON_FINITE
from quantumtrade.events import (
    Bar,
    BarBlock,
    BarsUpdated,
    BreakerState,
    CircuitBreakerChanged,
    DataRejected,
    Event,
    Regime,
    RegimeChanged,
    SourceFailed,
    TickerUpdated,
)

BAR_MS = 1_000
E = TypeVar("E", bound=Event)


class ScriptedSource:
    """A test double of an external feed: one good bar per second, or scripted faults."""

    def __init__(self, name: str, symbols: list[str]) -> None:
        self.name = name
        self._symbols = symbols
        self.fail: Exception | None = None
        self.garbage: list[Bar] | None = None  # returned once, instead of the real bars
        self.return_none = False
        self.calls: list[str] = []

    def symbols(self) -> list[str]:
        return list(self._symbols)

    async def fetch_bars(self, symbol: str, since_ms: int | None, until_ms: int) -> list[Bar]:
        self.calls.append(symbol)
        if self.fail is not None:
            raise self.fail
        if self.return_none:
            return None  # type: ignore[return-value]  # a broken feed
        if self.garbage is not None:
            bars, self.garbage = self.garbage, None
            return bars
        first = 0 if since_ms is None else since_ms // BAR_MS + 1
        return [
            Bar(k * BAR_MS, 100.0, 101.0, 99.0, 100.0, 1.0)
            for k in range(first, until_ms // BAR_MS)
        ]

    async def fetch_order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        if self.fail is not None:
            raise self.fail
        return OrderBook(symbol=symbol, ts_ms=0, bids=((99.0, 1.0),), asks=((101.0, 1.0),))

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        if self.fail is not None:
            raise self.fail
        return {s: Ticker(s, self.name, 0, 99.0, 101.0, 100.0) for s in symbols}


@dataclass
class Rig:
    clock: ManualClock
    bus: EventBus
    state: MarketState
    orch: Orchestrator
    events: list[Event] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def stored(self) -> list[tuple[str, BarBlock]]:
        """(symbol, bars) of every ``BarsUpdated``, in order (an event holds many symbols)."""
        return [pair for e in self.of(BarsUpdated) for pair in e.blocks()]

    async def tick(self, seconds: float = 0.0) -> int:
        self.clock.advance(seconds)
        n = self.orch.refresh_due()
        await self.orch.join()
        return n


@asynccontextmanager
async def running(
    sources: dict[str, Source],
    symbols: list[str],
    *,
    clock: ManualClock | None = None,
    workers: int = 2,
    threshold: int = 3,
    route: Callable[[str], str] | None = None,
) -> AsyncIterator[Rig]:
    """A started bus and orchestrator over ``sources``; stopped in reverse on exit."""
    c = clock or ManualClock(start_ns=10_000 * BAR_MS * 1_000_000)
    bus = EventBus(clock=c)
    state = MarketState(symbols, capacity=500)
    processing: list[float] = []
    orch = Orchestrator(
        bus=bus,
        clock=c,
        state=state,
        sources=sources,
        config=OrchestratorConfig(max_workers=workers),
        breaker_config=BreakerConfig(failure_threshold=threshold, cooldown_ms=10_000),
        route=route,
        on_processing_time=processing.append,
    )
    rig = Rig(c, bus, state, orch, processing=processing)
    for kind in (BarsUpdated, DataRejected, SourceFailed, CircuitBreakerChanged, TickerUpdated):
        bus.subscribe(kind, rig.events.append)
    bus.subscribe(RegimeChanged, orch.on_regime_changed)
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        orch.start(tg)
        yield rig
        await orch.stop()
        await bus.stop()


async def test_synthetic_bars_reach_market_state_and_the_bus() -> None:
    clock = ManualClock()
    source = SyntheticSource(SyntheticConfig(symbols=5, history_bars=120), clock)
    async with running({"synthetic": source}, source.symbols(), clock=clock) as rig:
        assert await rig.tick() == 5
        assert [rig.state.length(s) for s in source.symbols()] == [120] * 5
        assert sorted(s for s, _ in rig.stored()) == sorted(source.symbols())
        assert all(len(b) == 120 for _, b in rig.stored())
        assert all(e.source == "synthetic" for e in rig.of(BarsUpdated))
        assert (
            rig.state.latest("BTCUSDT")
            == (await source.fetch_bars("BTCUSDT", None, clock.now_ns() // 10**6))[-1]
        )
        assert await rig.tick(0.5) == 0  # nothing is due yet
        assert await rig.tick(0.5) == 5
        assert [rig.state.length(s) for s in source.symbols()] == [121] * 5
        m = rig.orch.metrics()
        assert m["fetches"] == 10 and m["bars_stored"] == 605 and m["failures"] == 0
        assert m["breakers"]["synthetic"]["state"] == "CLOSED" and m["stale"] == []
        assert m["queue_depth"] == 0 and m["workers_running"] == 2
        # One processing time per fetch call: the synthetic source serves each tick's five
        # symbols in one batch.
        assert len(rig.processing) == 2 and m["last_processing_ms"] >= 0
        assert rig.orch.health()["status"] == "ok"
        cols = rig.state.columns(121)
        assert not np.isnan(cols.close).any()


async def test_bad_bars_are_rejected_and_the_worker_carries_on() -> None:
    feed = ScriptedSource("feed", ["AUSDT"])
    async with running({"feed": feed}, ["AUSDT"], workers=1) as rig:
        await rig.tick()
        last = rig.state.last_ts_ms("AUSDT")
        assert last is not None
        good = Bar(last + BAR_MS, 100.0, 101.0, 99.0, 100.0, 1.0)
        feed.garbage = [
            Bar(last + 2 * BAR_MS, 100.0, 101.0, 99.0, math.nan, 1.0),
            good,
            good,
            Bar(last + 3 * BAR_MS, 100.0, 98.0, 99.0, 100.0, 1.0),
        ]
        rig.events.clear()
        await rig.tick(1)
        reasons = sorted(e.reason for e in rig.of(DataRejected))
        assert reasons == sorted([NON_FINITE, DUPLICATE_TIMESTAMP, HIGH_LOW_INCONSISTENT])
        assert [e.bars.bars() for e in rig.of(BarsUpdated)] == [[good]]
        assert rig.state.last_ts_ms("AUSDT") == good.ts_ms
        await rig.tick(1)  # the worker survived and the feed is fine again
        assert rig.state.last_ts_ms("AUSDT") == good.ts_ms + BAR_MS
        assert rig.orch.metrics()["rejects"] == {
            NON_FINITE: 1,
            DUPLICATE_TIMESTAMP: 1,
            HIGH_LOW_INCONSISTENT: 1,
        }


async def test_a_malformed_answer_is_a_source_failure_and_the_worker_goes_on() -> None:
    feed = ScriptedSource("feed", ["AUSDT", "BUSDT"])
    async with running({"feed": feed}, ["AUSDT", "BUSDT"], workers=1) as rig:
        feed.return_none = True
        await rig.tick()
        m = rig.orch.metrics()
        assert m["failures"] == 2 and m["crashes"] == 0
        assert m["source_calls"] >= 2  # the failed calls are attempts too (error-rate alert)
        assert sorted(e.symbol for e in rig.of(SourceFailed)) == ["AUSDT", "BUSDT"]
        assert rig.orch.stale_symbols == ["AUSDT", "BUSDT"]
        feed.return_none = False
        await rig.tick(1)
        assert rig.orch.stale_symbols == [] and rig.state.length("AUSDT") > 0
        assert rig.orch.metrics()["workers_running"] == 1


async def test_failing_source_opens_its_breaker_then_recovers_half_open() -> None:
    symbols = [f"S{i}USDT" for i in range(5)]
    feed = ScriptedSource("feed", symbols)
    async with running({"feed": feed}, symbols, workers=1, threshold=3) as rig:
        feed.fail = ConnectionError("exchange down")
        await rig.tick()
        assert len(feed.calls) == 3  # the breaker opened after three failures
        failed = rig.of(SourceFailed)
        assert len(failed) == 3 and "exchange down" in failed[0].error
        changes = [(e.name, e.previous, e.state) for e in rig.of(CircuitBreakerChanged)]
        assert changes == [("feed", BreakerState.CLOSED, BreakerState.OPEN)]
        m = rig.orch.metrics()
        assert m["skipped_open"] == 2 and m["failures"] == 3
        assert m["source_calls"] == len(feed.calls)  # calls skipped while open are no attempts
        assert m["breakers"]["feed"]["state"] == "OPEN"
        assert rig.orch.stale_symbols == symbols
        assert rig.orch.health()["status"] == "degraded"

        await rig.tick(5)  # still cooling down: everything skipped, nothing fetched
        assert len(feed.calls) == 3 and rig.orch.metrics()["skipped_open"] == 7

        feed.fail = None
        rig.events.clear()
        await rig.tick(6)  # cool-down over: one probe, it succeeds, the rest follow
        probe = [(e.previous, e.state) for e in rig.of(CircuitBreakerChanged)]
        assert probe == [
            (BreakerState.OPEN, BreakerState.HALF_OPEN),
            (BreakerState.HALF_OPEN, BreakerState.CLOSED),
        ]
        assert rig.orch.stale_symbols == []
        assert all(rig.state.length(s) > 0 for s in symbols)
        assert sorted(s for s, _ in rig.stored()) == symbols
        assert rig.orch.health()["status"] == "ok"


async def test_reset_breakers_closes_and_publishes() -> None:
    feed = ScriptedSource("feed", ["AUSDT"])
    async with running({"feed": feed}, ["AUSDT"], threshold=1) as rig:
        feed.fail = RuntimeError("boom")
        await rig.tick()
        assert rig.orch.metrics()["breakers"]["feed"]["state"] == "OPEN"
        rig.orch.reset_breakers()
        await rig.orch.join()
        assert rig.of(CircuitBreakerChanged)[-1].state is BreakerState.CLOSED


async def test_each_source_has_its_own_breaker() -> None:
    a, b = ScriptedSource("a", ["AUSDT"]), ScriptedSource("b", ["BUSDT"])
    route = {"AUSDT": "a", "BUSDT": "b"}.__getitem__
    async with running({"a": a, "b": b}, ["AUSDT", "BUSDT"], threshold=1, route=route) as rig:
        a.fail = ConnectionError("down")
        await rig.tick()
        breakers = rig.orch.metrics()["breakers"]
        assert breakers["a"]["state"] == "OPEN" and breakers["b"]["state"] == "CLOSED"
        assert rig.state.length("BUSDT") > 0 and rig.orch.stale_symbols == ["AUSDT"]
        assert b.calls == ["BUSDT"]


async def test_regime_sets_priority_order_and_cadence() -> None:
    symbols = ["RANGEUSDT", "TRENDUSDT", "VOLUSDT", "BREAKUSDT", "NEWUSDT"]
    feed = ScriptedSource("feed", symbols)
    async with running({"feed": feed}, symbols, workers=1) as rig:
        assert await rig.tick() == 5
        assert feed.calls == symbols  # unclassified: all priority 1, in symbol order
        for symbol, regime in [
            ("RANGEUSDT", Regime.RANGING),
            ("TRENDUSDT", Regime.TRENDING),
            ("VOLUSDT", Regime.VOLATILE),
            ("BREAKUSDT", Regime.BREAKOUT),
        ]:
            await rig.bus.publish(
                RegimeChanged(
                    ts_ns=rig.clock.now_ns(),
                    symbol=symbol,
                    regime=regime,
                    previous=None,
                    confidence=0.9,
                )
            )
        assert [rig.orch.priority(s) for s in symbols] == [2, 1, 0, 0, 1]
        feed.calls.clear()
        assert await rig.tick(5) == 5
        assert feed.calls == ["VOLUSDT", "BREAKUSDT", "TRENDUSDT", "NEWUSDT", "RANGEUSDT"]
        feed.calls.clear()
        assert await rig.tick(1) == 3  # VOLATILE, BREAKOUT and the unclassified one: every 1 s
        assert await rig.tick(1) == 4  # TRENDING every 2 s
        assert await rig.tick(3) == 5  # RANGING every 5 s
        assert rig.orch.metrics()["regimes"] == {
            "RANGING": 1,
            "TRENDING": 1,
            "VOLATILE": 1,
            "BREAKOUT": 1,
            "UNKNOWN": 1,
        }


async def test_start_and_stop_flow() -> None:
    feed = ScriptedSource("feed", ["AUSDT", "BUSDT", "CUSDT"])
    async with running({"feed": feed}, ["AUSDT", "BUSDT"]) as rig:
        assert await rig.tick() == 2
        assert rig.orch.stop_flow(["AUSDT"]) == ["AUSDT"]
        assert rig.orch.stop_flow(["AUSDT"]) == []
        with pytest.raises(KeyError, match="ZUSDT"):
            rig.orch.stop_flow(["BUSDT", "ZUSDT"])
        assert await rig.tick(1) == 1  # only BUSDT
        with pytest.raises(KeyError, match="NOPEUSDT"):
            rig.orch.start_flow(["CUSDT", "NOPEUSDT"])
        assert "CUSDT" not in rig.state  # a refused call changes nothing
        assert rig.orch.start_flow(["AUSDT", "CUSDT", "BUSDT"]) == ["AUSDT", "CUSDT"]
        assert rig.state.symbols == ["AUSDT", "BUSDT", "CUSDT"]
        assert await rig.tick() == 2  # the started ones are due at once
        assert rig.state.length("CUSDT") > 0
        assert rig.orch.metrics()["active_symbols"] == 3


async def test_order_book_goes_through_the_breaker() -> None:
    feed = ScriptedSource("feed", ["AUSDT"])
    async with running({"feed": feed}, ["AUSDT"], threshold=1) as rig:
        book = await rig.orch.order_book("AUSDT")
        assert book is not None and book.mid == 100.0
        feed.fail = ConnectionError("down")
        assert await rig.orch.order_book("AUSDT") is None
        assert rig.of(SourceFailed) and rig.orch.metrics()["breakers"]["feed"]["state"] == "OPEN"
        feed.fail = None
        assert await rig.orch.order_book("AUSDT") is None  # open: refused without a call


def test_config_rejects_unknown_regimes() -> None:
    with pytest.raises(ValueError, match="SIDEWAYS"):
        OrchestratorConfig(cadence_ms={"SIDEWAYS": 1000})


async def test_tickers_are_fetched_per_source_on_their_interval_and_published_on_change() -> None:
    clock = ManualClock()
    source = SyntheticSource(SyntheticConfig(symbols=3, history_bars=50), clock)
    async with running({"synthetic": source}, source.symbols(), clock=clock) as rig:
        await rig.tick()
        assert await rig.orch.refresh_tickers() == 3
        await rig.bus.drain()
        tickers = {e.symbol: e for e in rig.of(TickerUpdated)}
        for symbol in source.symbols():
            latest = rig.state.latest(symbol)
            assert latest is not None
            t = tickers[symbol]
            assert t.bid < latest.close < t.ask and t.last == pytest.approx(latest.close)
            assert rig.orch.ticker(symbol) is not None
        assert await rig.orch.refresh_tickers() == 0  # not due (5 s interval)
        await rig.tick(5)  # five new bars: new closes, new tickers
        assert await rig.orch.refresh_tickers() == 3
        await rig.tick(5)
        rig.orch.stop_flow(["BTCUSDT"])
        assert await rig.orch.refresh_tickers() == 2  # only active symbols


async def test_a_failed_ticker_fetch_feeds_the_breaker_but_does_not_stale_bars() -> None:
    feed = ScriptedSource("feed", ["AUSDT", "BUSDT"])
    async with running({"feed": feed}, ["AUSDT", "BUSDT"], threshold=1) as rig:
        await rig.tick()
        feed.fail = ConnectionError("down")
        assert await rig.orch.refresh_tickers() == 0
        await rig.bus.drain()
        failed = rig.of(SourceFailed)
        assert sorted(e.symbol for e in failed) == ["AUSDT", "BUSDT"]
        assert all(e.error == "tickers: ConnectionError: down" for e in failed)
        assert rig.orch.metrics()["breakers"]["feed"]["state"] == "OPEN"
        assert rig.orch.stale_symbols == []
        assert rig.orch.ticker("AUSDT") is None
