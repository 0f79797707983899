"""The data orchestrator: a pool of fetch workers fed by a regime-priority queue.

Each heartbeat the app calls ``refresh_due()`` (enqueue every active symbol whose regime
cadence has elapsed) and ``await join()``. A worker takes the most urgent symbol (VOLATILE and
BREAKOUT first, RANGING last) and, when its source can fetch many symbols in one call
(``BatchSource``), up to ``batch_size`` more from the queue in priority order. It fetches their
new bars through the source's circuit breaker under a timeout, validates them (one numba pass
over the columnar batch), appends the good ones to ``MarketState`` and publishes one ``BarsUpdated``
for the batch, ``DataRejected`` per bad bar, ``SourceFailed`` on a fault and every
``CircuitBreakerChanged``. Bars travel as columns from the source to ``MarketState``; records
(``Bar``) exist only for sources that return them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, cast

import msgspec
import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.breaker import BreakerConfig, CircuitBreaker
from quantumtrade.bus import EventBus
from quantumtrade.cache.tiered import TieredCache
from quantumtrade.clock import Clock
from quantumtrade.data.bar_cache import CachedBars
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.schedule import Schedule
from quantumtrade.data.source import BarBatch, BatchSource, OrderBook, Source, Ticker
from quantumtrade.data.validation import NO_BAR, OK, REASONS
from quantumtrade.events import (
    MAX_EVENT_BARS,
    Bar,
    BarBlock,
    BarsUpdated,
    BreakerState,
    CircuitBreakerChanged,
    DataRejected,
    Regime,
    RegimeChanged,
    SourceFailed,
    byte_view,
)

log = structlog.get_logger("quantumtrade.orchestrator")

DEFAULT_CADENCE_MS: dict[str, int] = {
    "VOLATILE": 1000,
    "BREAKOUT": 1000,
    "TRENDING": 2000,
    "RANGING": 5000,
}
PRIORITY: dict[Regime | None, int] = {
    Regime.VOLATILE: 0,
    Regime.BREAKOUT: 0,
    Regime.TRENDING: 1,
    None: 1,  # not classified yet
    Regime.RANGING: 2,
}


class OrchestratorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_workers: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 4
    """Fetch worker tasks (MAX_WORKERS)."""
    update_interval_ms: Annotated[int, msgspec.Meta(ge=1)] = 1000
    """Heartbeat: how often the app refreshes what is due and scans (UPDATE_INTERVAL)."""
    cadence_ms: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_CADENCE_MS))
    """How often a symbol is refreshed, by regime name; a symbol not yet classified uses the
    shortest cadence (no evidence yet that it is calm)."""
    fetch_timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 5000
    """A fetch slower than this counts as a source failure."""
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    """Bound of the fetch queue; symbols that do not fit stay due for the next heartbeat."""
    book_depth: Annotated[int, msgspec.Meta(ge=1)] = 20
    """Levels a side for ``Orchestrator.order_book``."""
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1024
    """Symbols one worker fetches in one call from a source that supports batches."""
    ticker_interval_ms: Annotated[int, msgspec.Meta(ge=0)] = 5_000
    """How often every active symbol's ticker is fetched (one call per source; 0: never)."""
    cache_bars: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 64
    """Newest bars per symbol kept in the market-data cache (L1 and Redis): what a peer or a
    fetch during an outage can be served from. Each refresh rewrites it, so with Redis
    it bounds the bytes written per symbol and heartbeat (48 per bar)."""

    def __post_init__(self) -> None:
        names = {r.value for r in Regime}
        unknown = sorted(set(self.cadence_ms) - names)
        if unknown:
            raise ValueError(f"cadence_ms: unknown regimes {unknown}; expected {sorted(names)}")
        if any(ms < 1 for ms in self.cadence_ms.values()):
            raise ValueError("cadence_ms: every cadence must be at least 1 ms")


class _Flow:
    """Scheduling state of one symbol."""

    __slots__ = (
        "active",
        "cache_key",
        "last_fetch_ns",
        "last_until_ms",
        "queued",
        "regime",
        "row",
        "source",
        "symbol",
    )

    def __init__(self, symbol: str, source: str, row: int) -> None:
        self.symbol = symbol
        self.source = source
        self.row = row  # the symbol's row in MarketState (rows are never reused)
        self.cache_key = f"bars:{source}:{symbol}"  # its entry in the market-data cache
        self.regime: Regime | None = None
        self.last_fetch_ns: int | None = None
        self.last_until_ms = -1  # the newest data this symbol was refreshed with (fetch time)
        self.queued = False
        self.active = True


class Orchestrator:
    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        state: MarketState,
        sources: Mapping[str, Source],
        config: OrchestratorConfig,
        breaker_config: BreakerConfig,
        route: Callable[[str], str] | None = None,
        on_processing_time: Callable[[float], None] | None = None,
        cache: TieredCache[CachedBars] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("the orchestrator needs at least one source")
        self.bus = bus
        self.clock = clock
        self.state = state
        self.config = config
        self._sources = dict(sources)
        self._batched = {
            name: isinstance(source, BatchSource) for name, source in self._sources.items()
        }
        default = next(iter(self._sources))
        self._route = route or (lambda _symbol: default)
        self._on_processing_time = on_processing_time
        self._cache = cache
        self._breaker_events: list[CircuitBreakerChanged] = []
        self._breakers = {
            name: CircuitBreaker(
                name, clock=clock, config=breaker_config, on_change=self._breaker_events.append
            )
            for name in self._sources
        }
        cadence = {Regime(k): v * 1_000_000 for k, v in config.cadence_ms.items()}
        fallback = min(cadence.values(), default=config.update_interval_ms * 1_000_000)
        self._cadence_ns: dict[Regime | None, int] = {
            **{r: cadence.get(r, config.update_interval_ms * 1_000_000) for r in Regime},
            None: fallback,
        }
        self._timeout_s = config.fetch_timeout_ms / 1000.0
        # Bounded: refresh_due() never waits; what does not fit stays due for the next tick.
        self._queue: Schedule[_Flow] = Schedule(levels=max(PRIORITY.values()) + 1)
        self._flows: dict[str, _Flow] = {}
        for symbol in state.symbols:
            self._flows[symbol] = self._new_flow(symbol)
        self._workers: list[asyncio.Task[None]] = []
        self._stale: set[str] = set()
        self.fetches = 0
        self.source_calls = 0
        """Calls to a source (bar batches and tickers); ``failures`` counts the failed ones."""
        self.bars_stored = 0
        self.failures = 0
        self.timeouts = 0
        self.skipped_open = 0
        self.crashes = 0
        self.deferred = 0
        self.cache_served = 0
        self._tickers: dict[str, Ticker] = {}
        self._tickers_due_ns: int | None = None
        self.stale_served = 0
        self.rejects: Counter[str] = Counter()
        self._processing_total_s = 0.0
        self._processing_count = 0
        self._last_processing_s = 0.0

    def _new_flow(self, symbol: str) -> _Flow:
        source = self._route(symbol)
        if source not in self._sources:
            raise KeyError(f"route sends {symbol} to unknown source {source!r}")
        return _Flow(symbol, source, self.state.index(symbol))

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Start ``max_workers`` fetch workers inside ``tg``."""
        if self._workers:
            raise RuntimeError("orchestrator already started")
        self._workers = [
            tg.create_task(self._work(), name=f"orchestrator:worker-{i}")
            for i in range(self.config.max_workers)
        ]

    async def stop(self) -> None:
        """Cancel the workers, wait for them, and drop what was still queued."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():  # stop() itself was cancelled
                    raise
        dropped = self._queue.take_nowait(self._queue.qsize())
        for flow in dropped:
            flow.queued = False
        self._queue.task_done(len(dropped))

    async def join(self) -> None:
        """Wait until every enqueued fetch is done, then publish pending breaker changes."""
        await self._queue.join()
        await self._publish_breaker_events()

    # --- scheduling ---------------------------------------------------------------------

    def refresh_due(self) -> int:
        """Enqueue every active symbol whose cadence has elapsed; returns how many."""
        now = self.clock.now_ns()
        cadence = self._cadence_ns
        room = self.config.queue_size - self._queue.qsize()
        due: list[list[_Flow]] = [[] for _ in range(max(PRIORITY.values()) + 1)]
        enqueued = 0
        for flow in self._flows.values():
            if not flow.active or flow.queued:
                continue
            last = flow.last_fetch_ns
            if last is not None and now - last < cadence[flow.regime]:
                continue
            if enqueued >= room:
                self.deferred += 1
                continue
            due[PRIORITY[flow.regime]].append(flow)
            flow.queued = True
            enqueued += 1
        for priority, flows in enumerate(due):
            self._queue.put_many(priority, flows)
        return enqueued

    def on_regime_changed(self, event: RegimeChanged) -> None:
        """Bus handler: a new regime sets the symbol's refresh priority and cadence."""
        flow = self._flows.get(event.symbol)
        if flow is not None:
            flow.regime = event.regime

    def start_flow(self, symbols: Iterable[str]) -> list[str]:
        """Activate symbols (adding them to MarketState if needed); returns those activated.

        Raises KeyError naming the symbols that their source does not list (nothing changes).
        """
        wanted = list(dict.fromkeys(symbols))
        listed: dict[str, set[str]] = {}
        unknown: list[str] = []
        for symbol in wanted:
            flow = self._flows.get(symbol)
            source = flow.source if flow is not None else self._route(symbol)
            if source not in self._sources:
                unknown.append(symbol)
                continue
            if source not in listed:
                listed[source] = set(self._sources[source].symbols())
            if symbol not in listed[source]:
                unknown.append(symbol)
        if unknown:
            raise KeyError(", ".join(unknown))
        self.state.add_symbols(wanted)
        started: list[str] = []
        for symbol in wanted:
            flow = self._flows.get(symbol)
            if flow is None:
                flow = self._flows[symbol] = self._new_flow(symbol)
            elif flow.active:
                continue
            flow.active = True
            flow.last_fetch_ns = None
            started.append(symbol)
        if started:
            log.info("flow_started", symbols=started[:20], count=len(started))
        return started

    def stop_flow(self, symbols: Iterable[str]) -> list[str]:
        """Deactivate symbols (their bars stay in MarketState); returns those deactivated.

        Raises KeyError naming the unknown symbols (nothing changes).
        """
        wanted = list(dict.fromkeys(symbols))
        unknown = [s for s in wanted if s not in self._flows]
        if unknown:
            raise KeyError(", ".join(unknown))
        stopped: list[str] = []
        for symbol in wanted:
            flow = self._flows[symbol]
            if flow.active:
                flow.active = False
                self._stale.discard(symbol)
                stopped.append(symbol)
        if stopped:
            log.info("flow_stopped", symbols=stopped[:20], count=len(stopped))
        return stopped

    def reset_breakers(self) -> None:
        """Close every source breaker (admin API); the changes are published at the next join."""
        for breaker in self._breakers.values():
            breaker.reset()

    # --- the work -----------------------------------------------------------------------

    async def _work(self) -> None:
        queue = self._queue
        while True:
            taken = await queue.take(1)
            if self._batched[taken[0].source]:
                taken += queue.take_nowait(self.config.batch_size - 1)
            try:
                groups: dict[str, list[_Flow]] = {}
                for flow in taken:
                    groups.setdefault(flow.source, []).append(flow)
                for source_name, group in groups.items():
                    # A source that returns records is asked one symbol at a time.
                    chunks = [group] if self._batched[source_name] else [[f] for f in group]
                    for chunk in chunks:
                        try:
                            await self._refresh(source_name, chunk)
                        except Exception:
                            self._crashed(source_name, chunk)
            finally:
                for flow in taken:
                    flow.queued = False
                queue.task_done(len(taken))

    def _crashed(self, source_name: str, flows: list[_Flow]) -> None:
        """One crash policy: log with context, count, feed the breaker, take the next symbol."""
        self.crashes += 1
        self._stale.update(f.symbol for f in flows if f.active)
        self._breakers[source_name].record_failure()
        log.bind(symbols=[f.symbol for f in flows[:20]], source=source_name).exception(
            "refresh_crashed"
        )

    async def _refresh(self, source_name: str, flows: list[_Flow]) -> None:
        """Fetch the new bars of ``flows`` (one source) through the cache and the breaker,
        then validate and store them; on a fault serve what the cache still holds, stale."""
        now_ns = self.clock.now_ns()
        for flow in flows:
            flow.last_fetch_ns = now_ns
        active = [f for f in flows if f.active]
        if not active:
            return
        symbols = [f.symbol for f in active]
        last = self.state.last_ts_rows([f.row for f in active])
        since = [None if ts == NO_BAR else ts for ts in last.tolist()]
        if not self._breakers[source_name].allow():
            self.skipped_open += len(active)
            self._stale.update(symbols)
            await self._serve_stale(source_name, active, since)
            await self._publish_breaker_events()
            return
        t0 = time.perf_counter()
        self.fetches += len(active)
        self.source_calls += 1
        until_ms = now_ns // 1_000_000
        try:
            async with asyncio.timeout(self._timeout_s):
                batch = await self._fetch(source_name, active, since, until_ms)
        except Exception as exc:
            await self._failed(source_name, symbols, exc)
            await self._serve_stale(source_name, active, since)
            self._observe(time.perf_counter() - t0)
            return
        self._breakers[source_name].record_success()
        for flow in active:
            flow.last_until_ms = until_ms
        await self._store(source_name, batch, [f.row for f in active], stale=False)
        self._observe(time.perf_counter() - t0)

    async def _fetch(
        self, source_name: str, flows: list[_Flow], since: list[int | None], until_ms: int
    ) -> BarBatch:
        """The bars after each ``since`` up to ``until_ms``: a fresh cache entry answers when it
        covers the request and is newer than this symbol's last refresh (written by a peer
        sharing Redis); the rest come from the source in one call and are cached."""
        symbols = [f.symbol for f in flows]
        cache = self._cache
        if cache is None:
            return await self._from_source(source_name, symbols, since, until_ms)
        keys, entries = await self._usable_entries(cache, source_name, flows, since, stale_ok=False)
        hits = [j for j, e in enumerate(entries) if e is not None]
        self.cache_served += len(hits)
        if len(hits) == len(symbols):
            fetched = None
            missing: list[int] = []
        else:
            missing = [j for j, e in enumerate(entries) if e is None]
            fetched = await self._from_source(
                source_name, [symbols[j] for j in missing], [since[j] for j in missing], until_ms
            )
            await cache.set_many(
                self._cache_entries(
                    [keys[j] for j in missing], [since[j] for j in missing], until_ms, fetched
                )
            )
            if not hits:
                return fetched
        blocks: dict[int, tuple[NDArray[np.int64], NDArray[np.float64]]] = {}
        for j in hits:
            entry = entries[j]
            assert entry is not None
            blocks[j] = entry.after(since[j])
        if fetched is not None:
            for i, j in enumerate(missing):
                a, b = int(fetched.offsets[i]), int(fetched.offsets[i + 1])
                blocks[j] = (fetched.ts_ms[a:b], fetched.columns(i))
        return BarBatch.from_blocks(symbols, [blocks[j] for j in range(len(symbols))])

    async def _from_source(
        self, source_name: str, symbols: list[str], since: list[int | None], until_ms: int
    ) -> BarBatch:
        """One call to the source; the answer is frozen, so events and cache entries can share
        its memory."""
        source = self._sources[source_name]
        if self._batched[source_name]:
            batch = await cast(BatchSource, source).fetch_bar_batch(symbols, since, until_ms)
            if batch.symbols != tuple(symbols):
                raise ValueError(f"{source_name} answered a batch for other symbols")
        else:
            (symbol,), (after,) = symbols, since
            bars = await source.fetch_bars(symbol, after, until_ms)
            batch = BarBatch.from_bars(symbols, [bars])
        batch.freeze()
        return batch

    def _cache_entries(
        self, keys: list[str], since: list[int | None], until_ms: int, batch: BarBatch
    ) -> list[tuple[str, CachedBars]]:
        """Each symbol of a fresh answer as a cache entry of at most ``cache_bars`` bars,
        extending the previous entry when the answer starts right after it (so a cold reader
        gets a window, not one bar). The entries share one packed copy of the answers' tails
        (views of the whole answer would keep all of it alive)."""
        window = self.config.cache_bars
        tail = batch.tail(window)
        tail.freeze()
        ts_view, price_view = byte_view(tail.ts_ms), byte_view(tail.prices)
        offsets = tail.offsets.tolist()
        # Per symbol: whether the answer is longer than the window, and if so the open time of
        # its last bar left out (where the entry then starts).
        ends = batch.offsets[1:]
        cuts = (np.diff(batch.offsets) > window).tolist()
        cut_after = batch.ts_ms[np.maximum(ends - window - 1, 0)].tolist() if batch.total else []
        assert self._cache is not None
        peek = self._cache.peek_stale
        entries: list[tuple[str, CachedBars]] = []
        for i, key in enumerate(keys):
            after = since[i]
            a, b = offsets[i], offsets[i + 1]
            cut = cuts[i]
            previous = peek(key) if after is not None and not cut else None
            if previous is not None and previous.newest_ts() == after:
                old_ts, old_rows = previous.bars.ts(), previous.bars.rows()
                keep = min(len(old_ts), window - (b - a))  # old bars that still fit
                if keep < len(old_ts):
                    after = int(old_ts[len(old_ts) - keep - 1])
                else:
                    after = previous.since_ms
                ts = np.concatenate((old_ts[len(old_ts) - keep :], tail.ts_ms[a:b]))
                rows = np.concatenate((old_rows[len(old_rows) - keep :], tail.prices[a:b]))
                block = BarBlock(memoryview(ts.tobytes()), memoryview(rows.tobytes()))
            else:
                if cut:
                    after = cut_after[i]
                block = BarBlock(ts_view[8 * a : 8 * b], price_view[40 * a : 40 * b])
            entries.append((key, CachedBars(since_ms=after, until_ms=until_ms, bars=block)))
        return entries

    async def _usable_entries(
        self,
        cache: TieredCache[CachedBars],
        source_name: str,
        flows: list[_Flow],
        since: list[int | None],
        *,
        stale_ok: bool,
    ) -> tuple[list[str], list[CachedBars | None]]:
        """The cache keys of ``flows`` and, for each, the entry that can answer it (else None):
        one that covers its ``since`` and is newer than its last refresh, i.e. a peer's write
        (with ``stale_ok``, this process's expired L1 entry too). The flows' last refresh
        moves to the entries returned."""
        keys = [flow.cache_key for flow in flows]

        def usable(j: int, entry: CachedBars) -> bool:
            return entry.until_ms > flows[j].last_until_ms and entry.covers(since[j])

        found = await cache.get_many(keys, usable)  # L2 values are not checked by get_many
        entries: list[CachedBars | None] = []
        for j, key in enumerate(keys):
            entry = found[j]
            if entry is None and stale_ok:
                entry = cache.peek_stale(key)
            if entry is not None and usable(j, entry):
                flows[j].last_until_ms = entry.until_ms
                entries.append(entry)
            else:
                entries.append(None)
        return keys, entries

    async def _serve_stale(
        self, source_name: str, flows: list[_Flow], since: list[int | None]
    ) -> None:
        """During a fault, store what the cache holds beyond each symbol's last bar: what a
        peer sharing Redis fetched, else this process's expired entry. The symbols stay
        marked stale."""
        cache = self._cache
        if cache is None:
            return
        _, entries = await self._usable_entries(cache, source_name, flows, since, stale_ok=True)
        served: list[int] = []
        blocks = []
        for j, entry in enumerate(entries):
            if entry is not None:
                block = entry.after(since[j])
                if len(block[0]):
                    served.append(j)
                    blocks.append(block)
        if not served:
            return
        self.stale_served += len(served)
        batch = BarBatch.from_blocks([flows[j].symbol for j in served], blocks)
        await self._store(source_name, batch, [flows[j].row for j in served], stale=True)

    async def _failed(
        self, source_name: str, symbols: list[str], exc: Exception, what: str = "bars"
    ) -> None:
        """A fetch failed (one breaker failure per call): ``SourceFailed`` for each symbol; a
        failed bar fetch also marks the symbols stale."""
        if isinstance(exc, TimeoutError):
            self.timeouts += 1
            error = f"{what}: timeout after {self.config.fetch_timeout_ms} ms"
        else:
            error = f"{what}: {type(exc).__name__}: {exc}"[:500]
        self.failures += 1
        if what == "bars":
            self._stale.update(symbols)
        self._breakers[source_name].record_failure()
        log.warning(
            "source_fetch_failed",
            symbols=symbols[:20],
            count=len(symbols),
            source=source_name,
            error=error,
        )
        now = self.clock.now_ns()
        for symbol in symbols:
            await self.bus.publish(
                SourceFailed(ts_ns=now, source=source_name, symbol=symbol, error=error)
            )
        await self._publish_breaker_events()

    async def _store(
        self, source_name: str, batch: BarBatch, rows: list[int], *, stale: bool
    ) -> None:
        """Validate against the stored bars and append the good ones (one pass), publish
        ``BarsUpdated`` and ``DataRejected``. ``rows``: the batch symbols' MarketState rows."""
        batch.freeze()
        codes, counts = self.state.append_validated(batch, rows)
        self.bars_stored += int(counts.sum())
        if not stale:
            self._stale.difference_update(batch.symbols)
        await self._publish_breaker_events()
        await publish_stored(
            self.bus, self.clock.now_ns(), source_name, batch, codes, counts, self.rejects
        )

    def _observe(self, seconds: float) -> None:
        self._last_processing_s = seconds
        self._processing_total_s += seconds
        self._processing_count += 1
        if self._on_processing_time is not None:
            self._on_processing_time(seconds)

    async def _publish_breaker_events(self) -> None:
        if not self._breaker_events:
            return
        events = list(self._breaker_events)
        self._breaker_events.clear()
        for event in events:
            await self.bus.publish(event)

    async def refresh_tickers(self) -> int:
        """When ``ticker_interval_ms`` has passed, fetch the tickers of every active symbol,
        one call per source through its breaker; publishes ``TickerUpdated`` for each ticker
        that changed. Returns how many changed."""
        interval = self.config.ticker_interval_ms
        now = self.clock.now_ns()
        if interval <= 0 or (self._tickers_due_ns is not None and now < self._tickers_due_ns):
            return 0
        self._tickers_due_ns = now + interval * 1_000_000
        by_source: dict[str, list[str]] = {}
        for flow in self._flows.values():
            if flow.active:
                by_source.setdefault(flow.source, []).append(flow.symbol)
        changed = 0
        for source_name, symbols in by_source.items():
            source = self._sources[source_name]
            breaker = self._breakers[source_name]
            if not hasattr(source, "fetch_tickers") or not breaker.allow():
                continue
            self.source_calls += 1
            try:
                async with asyncio.timeout(self._timeout_s):
                    tickers = await source.fetch_tickers(symbols)
            except Exception as exc:
                await self._failed(source_name, symbols, exc, what="tickers")
                continue
            breaker.record_success()
            ts_ns = self.clock.now_ns()
            for symbol, ticker in tickers.items():
                previous = self._tickers.get(symbol)
                self._tickers[symbol] = ticker
                if previous is None or (previous.bid, previous.ask, previous.last) != (
                    ticker.bid,
                    ticker.ask,
                    ticker.last,
                ):
                    changed += 1
                    await self.bus.publish(ticker.to_event(ts_ns))
        await self._publish_breaker_events()
        return changed

    def ticker(self, symbol: str) -> Ticker | None:
        """The last ticker fetched for ``symbol`` (None before the first)."""
        return self._tickers.get(symbol)

    async def order_book(self, symbol: str) -> OrderBook | None:
        """The symbol's book (``book_depth`` levels) through its source's breaker; None when the
        breaker is open or the source failed (published as ``SourceFailed``)."""
        flow = self._flows.get(symbol)
        source_name = flow.source if flow is not None else self._route(symbol)
        breaker = self._breakers[source_name]
        if not breaker.allow():
            await self._publish_breaker_events()
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                book = await self._sources[source_name].fetch_order_book(
                    symbol, self.config.book_depth
                )
        except Exception as exc:
            breaker.record_failure()
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("order_book_failed", symbol=symbol, source=source_name, error=error)
            await self.bus.publish(
                SourceFailed(
                    ts_ns=self.clock.now_ns(), source=source_name, symbol=symbol, error=error
                )
            )
            await self._publish_breaker_events()
            return None
        breaker.record_success()
        await self._publish_breaker_events()
        return book

    # --- introspection ------------------------------------------------------------------

    @property
    def stale_symbols(self) -> list[str]:
        """Active symbols whose last refresh failed or was skipped by an open breaker."""
        return sorted(self._stale)

    def priority(self, symbol: str) -> int:
        return PRIORITY[self._flows[symbol].regime]

    def metrics(self) -> dict[str, Any]:
        count = self._processing_count
        regimes = Counter(
            str(f.regime) if f.regime is not None else "UNKNOWN"
            for f in self._flows.values()
            if f.active
        )
        return {
            "workers": self.config.max_workers,
            "workers_running": sum(1 for t in self._workers if not t.done()),
            "queue_depth": self._queue.qsize(),
            "queue_size": self.config.queue_size,
            "symbols": len(self._flows),
            "active_symbols": sum(1 for f in self._flows.values() if f.active),
            "regimes": dict(regimes),
            "breakers": {
                name: {
                    "state": str(b.state),
                    "consecutive_failures": b.consecutive_failures,
                    "total_failures": b.total_failures,
                    "times_opened": b.times_opened,
                }
                for name, b in self._breakers.items()
            },
            "fetches": self.fetches,
            "source_calls": self.source_calls,
            "bars_stored": self.bars_stored,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "skipped_open": self.skipped_open,
            "crashes": self.crashes,
            "deferred": self.deferred,
            "cache_served": self.cache_served,
            "stale_served": self.stale_served,
            "rejects": dict(self.rejects),
            "stale": self.stale_symbols,
            "mean_processing_ms": self._processing_total_s / count * 1000.0 if count else 0.0,
            "last_processing_ms": self._last_processing_s * 1000.0,
        }

    def health(self) -> dict[str, Any]:
        """ "ok" when every breaker is closed, no symbol is stale and every worker runs."""
        breakers = {name: str(b.state) for name, b in self._breakers.items()}
        dead = sum(1 for t in self._workers if t.done())
        degraded = (
            any(state != BreakerState.CLOSED for state in breakers.values())
            or bool(self._stale)
            or dead > 0
        )
        return {
            "status": "degraded" if degraded else "ok",
            "breakers": breakers,
            "stale_symbols": len(self._stale),
            "workers_stopped": dead,
            "queue_depth": self._queue.qsize(),
        }


async def publish_stored(
    bus: EventBus,
    now_ns: int,
    source_name: str,
    batch: BarBatch,
    codes: NDArray[np.int8],
    counts: NDArray[np.int64],
    rejects: Counter[str],
) -> None:
    """Publish what ``MarketState.append_validated`` made of a frozen ``batch``: the stored
    bars as ``BarsUpdated`` (one event for the batch, views of its memory when every bar was
    stored; a batch of more than ``MAX_EVENT_BARS`` bars is split by symbol), and one
    ``DataRejected`` per bad bar (counted by reason in ``rejects``). The orchestrator and the
    backtest both take bars in through here."""
    ts, prices = batch.ts_ms, batch.prices
    symbols = batch.symbols
    if counts.size and int(counts.sum()):
        if np.array_equal(counts, np.diff(batch.offsets)):
            offsets = batch.offsets  # every bar stored: the batch's own memory
            kept_ts, kept_prices = ts, prices
        else:
            keep = codes == OK
            has = np.flatnonzero(counts)
            if has.size != counts.size:
                symbols = tuple(symbols[j] for j in has.tolist())
            offsets = np.zeros(has.size + 1, dtype=np.int64)
            np.cumsum(counts[has], out=offsets[1:])
            kept_ts = ts[keep]
            kept_prices = prices[keep]
            kept_ts.flags.writeable = kept_prices.flags.writeable = False
        first = 0
        total = len(symbols)
        while first < total:
            # Whole symbols per event, at most MAX_EVENT_BARS bars (at least one symbol).
            base = int(offsets[first])
            last = int(np.searchsorted(offsets, base + MAX_EVENT_BARS, side="right")) - 1
            last = min(max(last, first + 1), total)
            a, b = base, int(offsets[last])
            block = BarBlock(
                byte_view(kept_ts)[8 * a : 8 * b], byte_view(kept_prices)[40 * a : 40 * b]
            )
            part = symbols if first == 0 and last == total else symbols[first:last]
            await bus.publish(
                BarsUpdated.of(now_ns, source_name, part, offsets[first : last + 1] - base, block)
            )
            first = last
    bad = np.flatnonzero(codes)
    if not bad.size:
        return
    owners = np.searchsorted(batch.offsets, bad, side="right") - 1
    by_symbol: dict[str, Counter[str]] = {}
    for i, j in zip(bad.tolist(), owners.tolist(), strict=True):
        reason = REASONS[int(codes[i]) - 1]
        symbol = batch.symbols[j]
        rejects[reason] += 1
        by_symbol.setdefault(symbol, Counter())[reason] += 1
        bar = Bar(int(ts[i]), *prices[i].tolist())
        await bus.publish(
            DataRejected(
                ts_ns=now_ns,
                symbol=symbol,
                source=source_name,
                reason=reason,
                detail=repr(bar)[:300],
            )
        )
    for symbol, reasons in by_symbol.items():
        log.warning(
            "bars_rejected",
            symbol=symbol,
            source=source_name,
            rejected=reasons.total(),
            reasons=sorted(reasons),
        )
