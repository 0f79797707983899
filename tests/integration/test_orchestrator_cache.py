"""Market data through the tiered cache: peers sharing Redis, and service during an outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import EventBus
from quantumtrade.cache.l1 import L1Cache
from quantumtrade.cache.tiered import RedisL2, TieredCache
from quantumtrade.clock import ManualClock
from quantumtrade.data.bar_cache import CachedBars
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator, OrchestratorConfig
from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource
from quantumtrade.events import BarsUpdated, Event, SourceFailed

BAR_MS = 1_000
START_NS = 1_700_000_000_000_000_000


class CountingSource(SyntheticSource):
    """The synthetic market (a real source), counting what it was asked and able to fail."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(SyntheticConfig(symbols=6, bar_ms=BAR_MS, history_bars=50), clock)
        self.asked: list[str] = []
        self.down = False

    async def fetch_bar_batch(self, symbols, since_ms, until_ms):  # type: ignore[no-untyped-def]
        self.asked.extend(symbols)
        if self.down:
            raise ConnectionError("exchange unreachable")
        return await super().fetch_bar_batch(symbols, since_ms, until_ms)


@dataclass
class Node:
    """One daemon's data path: its own bus, MarketState, L1 and source; Redis is shared."""

    clock: ManualClock
    source: CountingSource
    state: MarketState
    orch: Orchestrator
    cache: TieredCache[CachedBars]
    events: list[Event] = field(default_factory=list)

    async def tick(self) -> None:
        self.orch.refresh_due()
        await self.orch.join()
        await self.orch.bus.drain()


@asynccontextmanager
async def node(
    clock: ManualClock, url: str, prefix: str, cache_bars: int = 200
) -> AsyncIterator[Node]:
    source = CountingSource(clock)
    state = MarketState(source.symbols(), 200)
    bus = EventBus(clock=clock)
    cache: TieredCache[CachedBars] = TieredCache(
        clock=clock,
        # Redis expires keys on the wall clock: a TTL the slowest test run cannot outlast.
        l1=L1Cache(clock=clock, ttl_ms=600_000, max_entries=1_000),
        l2=RedisL2.from_url(url, prefix=prefix),
        value_type=CachedBars,
    )
    orch = Orchestrator(
        bus=bus,
        clock=clock,
        state=state,
        sources={source.name: source},
        config=OrchestratorConfig(
            max_workers=1, cadence_ms={}, update_interval_ms=1_000, cache_bars=cache_bars
        ),
        breaker_config=BreakerConfig(failure_threshold=2, cooldown_ms=60_000),
        cache=cache,
    )
    n = Node(clock, source, state, orch, cache)
    for kind in (BarsUpdated, SourceFailed):
        bus.subscribe(kind, n.events.append)
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        orch.start(tg)
        try:
            yield n
        finally:
            await orch.stop()
            await bus.stop()
            assert cache.l2 is not None
            await cache.l2.close()


def closes(n: Node) -> list[list[float]]:
    return n.state.columns().close[:, -50:].tolist()


async def test_a_peer_gets_bars_from_redis_without_asking_the_source(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    clock = ManualClock(START_NS)
    async with node(clock, url, prefix) as a, node(clock, url, prefix) as b:
        await a.tick()
        assert len(a.source.asked) == 6
        await b.tick()
        assert b.source.asked == []  # every symbol came from Redis
        assert b.orch.metrics()["cache_served"] == 6
        assert b.cache.stats()["l2"]["hits"] == 6
        assert [b.state.length(s) for s in b.source.symbols()] == [50] * 6
        assert closes(b) == closes(a)

        # One bar later the entry is extended, so the peer again skips the source.
        clock.advance(1.0)
        await a.tick()
        await b.tick()
        assert b.source.asked == []
        assert [b.state.length(s) for s in b.source.symbols()] == [51] * 6
        assert closes(b) == closes(a)
        assert b.orch.stale_symbols == []


async def test_an_outage_is_served_from_the_cache_and_marked_stale(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    clock = ManualClock(START_NS)
    async with node(clock, url, prefix) as a, node(clock, url, prefix) as b:
        await b.tick()  # b fetched its history itself
        b.source.down = True
        for _ in range(2):  # two failures open b's breaker (threshold 2)
            clock.advance(1.0)
            await b.tick()
        assert b.orch.metrics()["breakers"]["synthetic"]["state"] == "OPEN"
        assert b.orch.stale_symbols == sorted(b.source.symbols())
        assert len([e for e in b.events if isinstance(e, SourceFailed)]) == 12
        assert [b.state.length(s) for s in b.source.symbols()] == [50] * 6

        # A healthy peer keeps refreshing; b, breaker open, is served what it fetched.
        await a.tick()
        asked = len(b.source.asked)
        clock.advance(1.0)
        await a.tick()
        await b.tick()
        assert len(b.source.asked) == asked  # the open breaker kept b off its source
        assert [b.state.length(s) for s in b.source.symbols()] == [53] * 6
        assert closes(b) == closes(a)
        assert b.orch.stale_symbols == sorted(b.source.symbols())  # served, but stale
        assert b.orch.metrics()["stale_served"] == 6
        assert any(isinstance(e, BarsUpdated) for e in b.events[-12:])


async def test_entries_keep_a_bounded_window_that_still_serves_an_up_to_date_peer(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    clock = ManualClock(START_NS)
    async with node(clock, url, prefix, 20) as a, node(clock, url, prefix, 20) as b:
        await a.tick()
        entry = a.cache.l1.peek("bars:synthetic:BTCUSDT")
        assert entry is not None and len(entry.bars) == 20
        history = a.state.columns().ts_ms[a.state.index("BTCUSDT"), -50:].copy()
        assert entry.since_ms == history[-21]  # cut to the window: it starts after bar 30
        await b.tick()
        assert len(b.source.asked) == 6  # 50 bars of history are more than the window holds

        clock.advance(1.0)
        await a.tick()
        entry = a.cache.l1.peek("bars:synthetic:BTCUSDT")
        assert entry is not None and len(entry.bars) == 20
        assert entry.since_ms == history[-20] and entry.newest_ts() == history[-1] + BAR_MS
        await b.tick()
        assert len(b.source.asked) == 6  # the extended window served b's one new bar
        assert closes(b) == closes(a)
