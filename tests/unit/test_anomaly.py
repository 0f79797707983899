"""The anomaly detector on hand-made series, and the risk manager's pause on its events."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from numpy.typing import NDArray

from quantumtrade.anomaly import kernels as K
from quantumtrade.anomaly.detector import AnomalyDetector
from quantumtrade.anomaly.model import AnomalyConfig, AnomalyKind
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import (
    AnomalyCleared,
    AnomalyDetected,
    BarBlock,
    BarsUpdated,
    Event,
    OrderIntent,
    OrderRejected,
    Side,
    TickerUpdated,
    decode,
    encode,
)
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.manager import ANOMALY_PAUSE, RiskManager

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000
CFG = AnomalyConfig()


def walk(n: int, seed: int, sigma: float = 0.01) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A random walk of n hourly bars: (open times, (n, 5) open, high, low, close, volume)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.normal(0.0, sigma / 2, (2, n)))
    high = np.maximum(open_, close) * np.exp(wiggle[0])
    low = np.minimum(open_, close) * np.exp(-wiggle[1])
    volume = 1_000.0 * np.exp(rng.normal(0.0, 0.3, n))
    ts = START_MS + HOUR_MS * np.arange(n, dtype=np.int64)
    return ts, np.column_stack([open_, high, low, close, volume])


class Harness:
    """A detector on a bus, fed one heartbeat (one bar per symbol) at a time."""

    def __init__(self, config: AnomalyConfig = CFG) -> None:
        self.clock = ManualClock(START_MS * 1_000_000)
        self.bus = EventBus(clock=self.clock)
        self.events: list[Event] = []
        self.steps: list[int] = []  # the heartbeat each event came at
        self.step = -1
        self.bus.subscribe(AnomalyDetected, self._seen)
        self.bus.subscribe(AnomalyCleared, self._seen)
        self.detector = AnomalyDetector(bus=self.bus, clock=self.clock, config=config)

    def _seen(self, event: Event) -> None:
        self.events.append(event)
        self.steps.append(self.step)

    async def feed(
        self,
        symbols: tuple[str, ...],
        ts: NDArray[np.int64],
        rows: NDArray[np.float64],
        step: int = -1,
    ) -> None:
        """Bars ``rows`` as one BarsUpdated: one per symbol, or equal runs of them."""
        per = len(ts) // len(symbols)
        offsets = np.arange(0, len(ts) + 1, per, dtype=np.int64)
        event = BarsUpdated.of(
            self.clock.now_ns(), "test", symbols, offsets, BarBlock.of(ts, rows.T.copy())
        )
        self.step = step
        self.detector.on_bars(event)
        await self.detector.publish()

    async def run(self, series: dict[str, tuple[NDArray[np.int64], NDArray[np.float64]]]) -> None:
        symbols = tuple(series)
        n = len(next(iter(series.values()))[0])
        for t in range(n):
            ts = np.array([series[s][0][t] for s in symbols], dtype=np.int64)
            rows = np.array([series[s][1][t] for s in symbols])
            self.clock.set(int(ts[0]) * 1_000_000)
            await self.feed(symbols, ts, rows, step=t)

    def of(self, kind: str, cls: type[Event] = AnomalyDetected) -> list[tuple[int, Event]]:
        return [
            (step, e)
            for step, e in zip(self.steps, self.events, strict=True)
            if isinstance(e, cls) and e.kind == kind  # type: ignore[attr-defined]
        ]


def spiked(
    n: int, at: int, k: float, seed: int = 3
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    ts, px = walk(n, seed)
    px = px.copy()
    c = px[at - 1, 3] * np.exp(k * 0.01)
    px[at, 3] = c
    px[at, 1] = max(px[at, 1], c)
    px[at, 2] = min(px[at, 2], c)
    return ts, px


async def test_a_spike_is_flagged_at_its_bar_and_clears_after_clear_bars() -> None:
    h = Harness()
    ts, px = spiked(300, at=200, k=25.0)
    await h.run({"AAAUSDT": (ts, px)})
    detected = h.of("spike")
    assert [(step, e.since_ms) for step, e in detected] == [(200, int(ts[200]))]  # type: ignore[attr-defined]
    assert detected[0][1].score > CFG.spike_z  # type: ignore[attr-defined]
    # The close comes back at bar 201 (a second trigger in the same episode): quiet from 202.
    cleared = h.of("spike", AnomalyCleared)
    assert [step for step, _ in cleared] == [201 + CFG.clear_bars]
    assert not h.detector.is_active("AAAUSDT")


async def test_the_same_walk_without_the_spike_gives_no_spike() -> None:
    h = Harness()
    ts, px = spiked(300, at=200, k=0.5)  # a normal move: the negative control
    await h.run({"AAAUSDT": (ts, px)})
    assert h.of("spike") == []


async def test_nothing_is_flagged_during_warm_up() -> None:
    h = Harness()
    ts, px = spiked(100, at=CFG.warmup_bars - 5, k=40.0)
    await h.run({"AAAUSDT": (ts, px)})
    assert h.of("spike") == []


async def test_a_frozen_feed_is_flagged_and_clears_when_it_moves_again() -> None:
    h = Harness()
    ts, px = walk(200, seed=5)
    px = px.copy()
    px[120:130, 0:4] = px[119, 3]
    px[120:130, 4] = 0.0
    await h.run({"AAAUSDT": (ts, px)})
    detected = h.of("frozen")
    assert [step for step, _ in detected] == [120 + CFG.frozen_bars - 1]
    assert [step for step, _ in h.of("frozen", AnomalyCleared)] == [129 + CFG.clear_bars]


async def test_zero_range_at_the_same_close_with_volume_is_frozen_too() -> None:
    h = Harness()
    ts, px = walk(200, seed=6)
    px = px.copy()
    px[150:156, 0:4] = px[149, 3]  # volume stays: a feed that repeats its last price
    await h.run({"AAAUSDT": (ts, px)})
    assert [step for step, _ in h.of("frozen")] == [150 + CFG.frozen_bars - 1]


async def test_missing_bars_are_flagged_at_the_bar_after_the_hole() -> None:
    h = Harness()
    ts, px = walk(200, seed=7)
    keep = np.ones(200, dtype=np.bool_)
    keep[100:103] = False
    await h.run({"AAAUSDT": (ts[keep], px[keep])})
    detected = h.of("missing_bars")
    assert [e.since_ms for _, e in detected] == [int(ts[103])]  # type: ignore[attr-defined]
    assert detected[0][1].score == 3.0  # type: ignore[attr-defined]


async def test_constant_volume_and_range_divide_by_no_zero_and_a_burst_is_flagged() -> None:
    h = Harness()
    n = 120
    ts = START_MS + HOUR_MS * np.arange(n, dtype=np.int64)
    close = 100.0 * np.exp(0.001 * np.sin(np.arange(n)))  # moves, but evenly
    px = np.column_stack([close, close * 1.01, close * 0.99, close, np.full(n, 500.0)])
    quiet = px.copy()
    px[100, 4] = 5_000.0
    with np.errstate(all="raise"):
        await h.run({"AAAUSDT": (ts, quiet), "BBBUSDT": (ts, px)})
    volume = h.of("volume")
    assert [(step, e.symbol) for step, e in volume] == [(100, "BBBUSDT")]  # type: ignore[attr-defined]
    assert np.isfinite(volume[0][1].score)  # type: ignore[attr-defined]
    assert h.detector.active("AAAUSDT") == []


async def test_random_walks_give_few_false_alarms_after_warm_up() -> None:
    h = Harness()
    series = {f"S{i:02d}USDT": walk(2_000, seed=100 + i) for i in range(10)}
    await h.run(series)
    detected = [e for e in h.events if isinstance(e, AnomalyDetected)]
    # 20,000 bars of a Gaussian walk: well under the ~3 per 1,000 bars the real data shows.
    assert len(detected) <= 4, [(e.symbol, e.kind, e.score) for e in detected]
    # Negative control: the same walks with a spike in each are flagged ten times.
    h2 = Harness()
    for i, s in enumerate(series):
        ts, px = series[s]
        px = px.copy()
        px[1_000 + i, 3] *= np.exp(0.3)
        px[1_000 + i, 1] = max(px[1_000 + i, 1], px[1_000 + i, 3])
        series[s] = (ts, px)
    await h2.run(series)
    assert len({e.symbol for _, e in h2.of("spike")}) == 10  # type: ignore[attr-defined]


async def test_a_batch_of_history_ends_in_the_state_of_bar_by_bar_feeding() -> None:
    ts, px = spiked(300, at=250, k=30.0)
    stepwise, batched = Harness(), Harness()
    await stepwise.run({"AAAUSDT": (ts, px)})
    await batched.feed(("AAAUSDT",), ts[:240], px[:240])
    for t in range(240, 300):
        await batched.feed(("AAAUSDT",), ts[t : t + 1], px[t : t + 1], step=t)
    assert batched.detector._ints.tolist() == stepwise.detector._ints.tolist()
    np.testing.assert_array_equal(batched.detector._floats, stepwise.detector._floats)
    assert [(s, type(e), e.kind) for s, e in batched.of("spike")] == [  # type: ignore[attr-defined]
        (s, type(e), e.kind)
        for s, e in stepwise.of("spike")  # type: ignore[attr-defined]
    ]


async def test_a_transient_inside_one_history_batch_is_reported_on_and_off() -> None:
    h = Harness()
    ts, px = spiked(300, at=200, k=25.0)
    await h.feed(("AAAUSDT",), ts, px)
    spike = [type(e).__name__ for e in h.events if e.kind == "spike"]  # type: ignore[attr-defined]
    assert spike == ["AnomalyDetected", "AnomalyCleared"]
    # The spike bar's range and the next bar's open are anomalous too: each kind on, then off.
    for kind in {e.kind for e in h.events}:  # type: ignore[attr-defined]
        names = [type(e).__name__ for e in h.events if e.kind == kind]  # type: ignore[attr-defined]
        assert names == ["AnomalyDetected", "AnomalyCleared"], kind
    assert h.detector.active() == []


async def test_symbols_of_one_batch_do_not_affect_each_other() -> None:
    ts, a = spiked(300, at=200, k=25.0, seed=1)
    _, b = walk(300, seed=2)
    together, alone = Harness(), Harness()
    await together.run({"AAAUSDT": (ts, a), "BBBUSDT": (ts, b)})
    await alone.run({"AAAUSDT": (ts, a)})
    assert [e for e in together.events if e.symbol == "AAAUSDT"] == alone.events  # type: ignore[attr-defined]


async def test_a_ticker_far_from_the_last_close_is_flagged_and_cleared_by_bars() -> None:
    h = Harness()
    ts, px = walk(100, seed=9)
    await h.run({"AAAUSDT": (ts[:80], px[:80])})
    close = float(px[79, 3])
    h.clock.set((int(ts[79]) + HOUR_MS + 60_000) * 1_000_000)

    def ticker(price: float) -> TickerUpdated:
        return TickerUpdated(
            ts_ns=h.clock.now_ns(), symbol="AAAUSDT", source="t", bid=price, ask=price, last=price
        )

    h.detector.on_ticker(ticker(close * 1.005))  # half a sigma: nothing
    await h.detector.publish()
    assert h.events == []
    h.detector.on_ticker(ticker(close * 1.5))
    await h.detector.publish()
    assert [(type(e).__name__, e.kind) for e in h.events] == [("AnomalyDetected", "ticker")]  # type: ignore[attr-defined]
    assert h.detector.is_active("AAAUSDT", AnomalyKind.TICKER)
    for t in range(80, 80 + CFG.clear_bars + 1):
        await h.feed(("AAAUSDT",), ts[t : t + 1], px[t : t + 1], step=t)
    assert [step for step, _ in h.of("ticker", AnomalyCleared)] == [80 + CFG.clear_bars]


async def test_api_view_and_counts() -> None:
    h = Harness()
    ts, px = spiked(300, at=200, k=25.0)
    await h.run({"AAAUSDT": (ts[:202], px[:202]), "BBBUSDT": walk(202, seed=4)})
    active = h.detector.active()
    assert {a["symbol"] for a in active} == {"AAAUSDT"}
    spike = next(a for a in active if a["kind"] == "spike")
    assert spike["since_ms"] == int(ts[200]) and spike["score"] > CFG.spike_z
    assert h.detector.active("BBBUSDT") == [] and h.detector.active("NOPE") == []
    assert h.detector.active_counts()["spike"] == 1
    assert h.detector.metrics()["detected"]["spike"] == 1


def test_anomaly_events_round_trip_through_the_log_codec() -> None:
    for event in (
        AnomalyDetected(ts_ns=1, symbol="BTCUSDT", kind="spike", score=12.5, since_ms=2),
        AnomalyCleared(ts_ns=3, symbol="BTCUSDT", kind="spike", since_ms=2, score=12.5),
    ):
        assert decode(encode(event)) == event
        assert msgspec.json.decode(encode(event))["type"] == type(event).__name__


def test_the_params_vector_follows_the_kernel_indices() -> None:
    cfg = AnomalyConfig(spike_z=7.0, frozen_bars=5, clear_bars=4, missing_bar_ratio=2.0)
    p = cfg.params()
    assert p[K.P_SPIKE] == 7.0 and p[K.P_FROZEN] == 5.0 and p[K.P_CLEAR] == 4.0
    assert p[K.P_MISSING] == 2.0 and p[K.P_ALPHA] == pytest.approx(2.0 / (cfg.span_bars + 1))


# --- the risk manager's pause ---------------------------------------------------------------


def risk_manager(pause: bool) -> tuple[RiskManager, EventBus, list[Event]]:
    clock = ManualClock(START_MS * 1_000_000)
    bus = EventBus(clock=clock)
    portfolio = Portfolio(bus=bus, clock=clock)
    risk = RiskManager(bus=bus, clock=clock, portfolio=portfolio, pause_on_anomaly=pause)
    for event_type, handler in risk.order_handlers():
        bus.subscribe(event_type, handler)
    seen: list[Event] = []
    bus.subscribe(OrderIntent, seen.append)
    bus.subscribe(OrderRejected, seen.append)
    return risk, bus, seen


async def submit(
    risk: RiskManager, cid: str, side: Side, qty: float
) -> OrderIntent | OrderRejected:
    return await risk.submit_order(
        client_order_id=cid, symbol="BTCUSDT", side=side, quantity=qty, price=100.0
    )


@pytest.mark.parametrize("pause", [True, False])
async def test_an_active_anomaly_pauses_entries_but_never_exits(pause: bool) -> None:
    risk, bus, _ = risk_manager(pause)
    first = await submit(risk, "a", Side.BUY, 1.0)
    assert isinstance(first, OrderIntent)  # a long of 1 in flight
    await bus.publish(
        AnomalyDetected(ts_ns=1, symbol="BTCUSDT", kind="spike", score=20.0, since_ms=0)
    )
    more = await submit(risk, "b", Side.BUY, 1.0)
    if pause:
        assert isinstance(more, OrderRejected) and more.reason == ANOMALY_PAUSE
        assert risk.metrics()["anomaly_pause"]["symbols"] == ["BTCUSDT"]
    else:
        assert isinstance(more, OrderIntent)
    exit_ = await submit(risk, "c", Side.SELL, 1.0)
    assert isinstance(exit_, OrderIntent)  # reducing is never paused
    other = await risk.submit_order(
        client_order_id="d", symbol="ETHUSDT", side=Side.BUY, quantity=1.0, price=100.0
    )
    assert isinstance(other, OrderIntent)  # only the anomalous symbol pauses
    await bus.publish(
        AnomalyCleared(ts_ns=2, symbol="BTCUSDT", kind="spike", since_ms=0, score=20.0)
    )
    assert isinstance(await submit(risk, "e", Side.BUY, 1.0), OrderIntent)


async def test_the_pause_holds_until_every_kind_of_the_symbol_cleared() -> None:
    risk, bus, _ = risk_manager(True)
    for kind in ("spike", "volume"):
        await bus.publish(
            AnomalyDetected(ts_ns=1, symbol="BTCUSDT", kind=kind, score=9.0, since_ms=0)
        )
    await bus.publish(AnomalyCleared(ts_ns=2, symbol="BTCUSDT", kind="spike", since_ms=0))
    assert risk.anomaly_paused("BTCUSDT")
    short = await submit(risk, "a", Side.SELL, 1.0)  # a new short is an entry too
    assert isinstance(short, OrderRejected) and short.reason == ANOMALY_PAUSE
    await bus.publish(AnomalyCleared(ts_ns=3, symbol="BTCUSDT", kind="volume", since_ms=0))
    assert not risk.anomaly_paused("BTCUSDT")


async def test_anomaly_config_from_the_environment_and_into_the_core() -> None:
    from quantumtrade.config import load_config
    from quantumtrade.core import DecisionPath
    from quantumtrade.data.market_state import MarketState

    cfg = load_config(None, environ={"QT_ANOMALY__PAUSE_ENTRIES": "true"})
    assert cfg.anomaly.enabled and cfg.anomaly.pause_entries
    clock = ManualClock(0)
    path = DecisionPath.build(
        cfg, bus=EventBus(clock=clock), clock=clock, state=MarketState([], 100)
    )
    assert path.anomaly is not None and path.risk.pause_on_anomaly
    off = load_config(None, environ={"QT_ANOMALY__ENABLED": "false"})
    path = DecisionPath.build(
        off, bus=EventBus(clock=clock), clock=clock, state=MarketState([], 100)
    )
    assert path.anomaly is None and not path.risk.pause_on_anomaly
