"""Property: whatever mix of good and malformed bars a feed serves, the orchestrator stores every
good one in order, counts every bad one exactly once, and keeps all its workers alive."""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from dataclasses import dataclass

import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator, OrchestratorConfig
from quantumtrade.data.source import OrderBook
from quantumtrade.events import Bar, BarsUpdated, DataRejected

BAR_MS = 60_000
START_MS = 1_700_000_000_000
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
CAPACITY = 256  # above the most bars one example can accept, so nothing is evicted


@dataclass(frozen=True)
class Draft:
    """How to make one bar: where its timestamp goes and what is wrong with its values."""

    timing: str  # "next" (after every earlier one), "same" (repeat the last), "back" (earlier)
    step: int  # bars to move forward ("next") or back ("back")
    fault: str  # "none" or the kind of bad value
    price: float


FAULTS = ("nan", "inf", "zero", "negative", "high_below_low", "negative_volume")
drafts = st.builds(
    Draft,
    timing=st.sampled_from(("next", "next", "next", "same", "back")),
    step=st.integers(1, 3),
    fault=st.sampled_from(("none",) * len(FAULTS) + FAULTS),  # half the bars are bad
    price=st.floats(0.01, 1e5, allow_nan=False),
)
# Per symbol: refresh rounds, each serving a batch of bars.
scripts = st.dictionaries(
    st.sampled_from(SYMBOLS),
    st.lists(st.lists(drafts, max_size=8), min_size=1, max_size=4),
    min_size=1,
)


def make_bars(rounds: list[list[Draft]]) -> list[list[Bar]]:
    """Turn drafts into bars; timestamps move from a cursor that only "next" advances."""
    top = START_MS
    last = START_MS
    out: list[list[Bar]] = []
    for batch in rounds:
        bars: list[Bar] = []
        for d in batch:
            if d.timing == "next":
                top += d.step * BAR_MS
                ts = top
            elif d.timing == "same":
                ts = last
            else:
                ts = top - d.step * BAR_MS
            last = ts
            p = d.price
            o, h, lo, c, v = p, p * 1.01, p * 0.99, p * 1.005, 10.0
            match d.fault:
                case "nan":
                    c = math.nan
                case "inf":
                    h = math.inf
                case "zero":
                    lo = 0.0
                case "negative":
                    o = -p
                case "high_below_low":
                    h, lo = p * 0.98, p * 1.02
                case "negative_volume":
                    v = -1.0
            bars.append(Bar(ts, o, h, lo, c, v))
        out.append(bars)
    return out


def good_values(bar: Bar) -> bool:
    """The rules written out again, independently of ``validate_bars``."""
    values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    if not all(math.isfinite(x) for x in values):
        return False
    if min(bar.open, bar.high, bar.low, bar.close) <= 0.0:
        return False
    return (
        bar.low <= min(bar.open, bar.close)
        and bar.high >= max(bar.open, bar.close)
        and (bar.volume >= 0.0)
    )


def expected(rounds: list[list[Bar]]) -> tuple[list[Bar], int]:
    """(accepted bars in order, number rejected): good values, strictly after the last accepted."""
    accepted: list[Bar] = []
    bad = 0
    for batch in rounds:
        for bar in batch:
            if good_values(bar) and (not accepted or bar.ts_ms > accepted[-1].ts_ms):
                accepted.append(bar)
            else:
                bad += 1
    return accepted, bad


class ScriptedFeed:
    """A real ``Source``: each fetch of a symbol serves its next scripted batch, once."""

    name = "scripted"

    def __init__(self, batches: dict[str, list[list[Bar]]]) -> None:
        self._batches = {s: deque(b) for s, b in batches.items()}
        self.fetches: Counter[str] = Counter()

    def symbols(self) -> list[str]:
        return list(self._batches)

    async def fetch_bars(self, symbol: str, since_ms: int | None, until_ms: int) -> list[Bar]:
        self.fetches[symbol] += 1
        pending = self._batches[symbol]
        await asyncio.sleep(0)  # let the workers interleave
        return pending.popleft() if pending else []

    async def fetch_order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        return OrderBook(symbol=symbol, ts_ms=0, bids=(), asks=())


async def run_session(batches: dict[str, list[list[Bar]]], rounds: int, workers: int) -> None:
    clock = ManualClock(start_ns=START_MS * 1_000_000)
    bus = EventBus(clock=clock)
    symbols = sorted(batches)
    state = MarketState(symbols, capacity=CAPACITY)
    feed = ScriptedFeed(batches)
    orch = Orchestrator(
        bus=bus,
        clock=clock,
        state=state,
        sources={feed.name: feed},
        config=OrchestratorConfig(max_workers=workers),
        breaker_config=BreakerConfig(failure_threshold=3, cooldown_ms=10_000),
    )
    rejected: list[DataRejected] = []
    updates: list[BarsUpdated] = []
    bus.subscribe(DataRejected, rejected.append)
    bus.subscribe(BarsUpdated, updates.append)
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        orch.start(tg)
        for _ in range(rounds):
            clock.advance(60.0)  # past every cadence: each symbol is due again
            assert orch.refresh_due() == len(symbols)
            await orch.join()
        metrics, health = orch.metrics(), orch.health()
        await orch.stop()
        await bus.stop()

    assert metrics["crashes"] == 0 and metrics["failures"] == 0
    assert metrics["workers_running"] == workers and health["workers_stopped"] == 0
    assert health["status"] == "ok"
    assert all(feed.fetches[s] == rounds for s in symbols)

    total_bad = 0
    columns = state.columns()
    for symbol in symbols:
        good, bad = expected(batches[symbol])
        total_bad += bad
        row = state.index(symbol)
        n = int(columns.lengths[row])
        stored = [
            Bar(int(t), o, h, lo, c, v)
            for t, o, h, lo, c, v in zip(
                columns.ts_ms[row, CAPACITY - n :].tolist(),
                columns.open[row, CAPACITY - n :].tolist(),
                columns.high[row, CAPACITY - n :].tolist(),
                columns.low[row, CAPACITY - n :].tolist(),
                columns.close[row, CAPACITY - n :].tolist(),
                columns.volume[row, CAPACITY - n :].tolist(),
                strict=True,
            )
        ]
        assert stored == good, symbol
        assert [b for e in updates for s, k in e.blocks() if s == symbol for b in k] == good
        assert sum(1 for e in rejected if e.symbol == symbol) == bad, symbol
    assert sum(metrics["rejects"].values()) == total_bad == len(rejected)
    assert metrics["bars_stored"] == sum(len(expected(b)[0]) for b in batches.values())


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(script=scripts, extra_rounds=st.integers(0, 2), workers=st.integers(1, 3))
def test_orchestrator_stores_every_good_bar_and_counts_every_bad_one(
    script: dict[str, list[list[Draft]]], extra_rounds: int, workers: int
) -> None:
    batches = {symbol: make_bars(rounds) for symbol, rounds in script.items()}
    rounds = max(len(b) for b in batches.values()) + extra_rounds  # later fetches serve nothing
    # Each example gets its own loop (uvloop, as the daemon), bus and orchestrator.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_session(batches, rounds, workers))
