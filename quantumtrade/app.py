"""The composition root: builds every component from the config, wires the bus, runs, stops.

Start order: event log → bus → sources and MarketState → orchestrator → scanner → portfolio →
risk → venues and router → metrics → admin API. Stop runs the other way: intake stops first
(orchestrator workers), then the bus drains, the event log flushes and closes, the admin API
goes last so ``/health`` reports "stopping" while the rest winds down.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

import structlog

from quantumtrade.admin.server import AdminServer
from quantumtrade.bus import EventBus
from quantumtrade.cache.l1 import L1Cache
from quantumtrade.cache.tiered import RedisL2, TieredCache
from quantumtrade.clock import Clock
from quantumtrade.config import AppConfig, Mode, Secrets, describe
from quantumtrade.core import TradingCore
from quantumtrade.core import warm_up as core_warm_up
from quantumtrade.data.bar_cache import CachedBars
from quantumtrade.data.ccxt_source import CcxtSource
from quantumtrade.data.factory import active_symbols, build_source
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator
from quantumtrade.data.source import OrderBook, Source
from quantumtrade.errors import SourceUnavailable, StoreUnavailable
from quantumtrade.events import (
    Event,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    RegimeChanged,
    TradingState,
    decode,
)
from quantumtrade.execution.ccxt_venue import CcxtVenue
from quantumtrade.execution.reconcile import OrderLedger, Reconciler
from quantumtrade.execution.tracker import OrderTracker
from quantumtrade.metrics import Metrics, Snapshot
from quantumtrade.store.eventlog import EventLog, EventLogWriter
from quantumtrade.store.factory import open_event_log
from quantumtrade.store.session import RESTORE_EVENT_TYPES, positions_unknown, start_session
from quantumtrade.store.spool import Spool

log = structlog.get_logger("quantumtrade.app")

HEALTH_VALUE = {"ok": 1.0, "degraded": 0.5}
OUTBOX_SIZE = 10_000


class Daemon:
    """Every component of one QuantumTrade process, built by ``Daemon.create``."""

    def __init__(
        self,
        cfg: AppConfig,
        *,
        clock: Clock,
        eventlog: EventLog,
        source: Source,
        spool: Spool | None = None,
        first_seq: int = 1,
        venues: Sequence[CcxtVenue] = (),
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.status = "starting"
        self.ticks = 0
        self.eventlog = eventlog
        db = cfg.database
        self.writer = EventLogWriter(
            eventlog,
            batch_size=db.batch_size,
            flush_interval_ms=db.flush_interval_ms,
            max_buffer=db.max_buffer,
            spool=spool,
        )
        self.bus = EventBus(clock=clock, config=cfg.bus, recorder=self.writer, first_seq=first_seq)
        self.metrics = Metrics()

        # Sync callbacks (breaker changes) hand events here; a task publishes them in order.
        self._outbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self.outbox_overflow = 0
        l2 = (
            RedisL2.from_url(
                cfg.redis.url, prefix=cfg.redis.key_prefix, timeout_s=cfg.redis.timeout_ms / 1000
            )
            if cfg.redis.url
            else None
        )
        self.book_cache: TieredCache[OrderBook] = TieredCache(
            clock=clock,
            l1=L1Cache(clock=clock, ttl_ms=cfg.cache.ttl_ms, max_entries=cfg.cache.max_entries),
            l2=l2,
            value_type=OrderBook,
            on_breaker_change=self._post,
        )
        # Bars share Redis with the books (one client, one breaker each).
        self.bars_cache: TieredCache[CachedBars] = TieredCache(
            clock=clock,
            l1=L1Cache(clock=clock, ttl_ms=cfg.cache.ttl_ms, max_entries=cfg.cache.max_entries),
            l2=l2,
            value_type=CachedBars,
            on_breaker_change=self._post,
        )
        self.source = source
        self.state = MarketState(active_symbols(cfg, source), cfg.data.capacity)
        self.orchestrator = Orchestrator(
            bus=self.bus,
            clock=clock,
            state=self.state,
            sources={self.source.name: self.source},
            config=cfg.data.orchestrator,
            breaker_config=cfg.breaker,
            on_processing_time=self.metrics.observe_processing_time,
            cache=self.bars_cache,
        )
        # Live mode trades on the configured exchanges only; paper mode on the simulator.
        self.ccxt_venues = list(venues)
        self.core = TradingCore.build(
            cfg,
            bus=self.bus,
            clock=clock,
            state=self.state,
            books=self.order_book,
            live_venues=self.ccxt_venues,
            on_latency=self.metrics.observe_router_latency,
            on_breaker_change=self._post,
        )
        self.regime = self.core.regime
        self.scanner = self.core.scanner
        self.strategy = self.core.strategy
        self.portfolio = self.core.portfolio
        self.risk = self.core.risk
        self.router = self.core.router
        self.tracker = OrderTracker()
        self.ledger = OrderLedger()
        self.reconciler = Reconciler(
            bus=self.bus,
            clock=clock,
            ledger=self.ledger,
            venues={v.name: v for v in self.ccxt_venues},
            busy=self.router.in_progress.__contains__,
            config=cfg.execution.reconcile,
        )
        self._reconcile_task: asyncio.Task[None] | None = None
        self._subscribe()
        self.metrics.attach(self._snapshot())
        self.admin = AdminServer(
            host=cfg.admin.host,
            port=cfg.admin.port,
            token=cfg.admin.token,
            health=self.health,
            metrics=self.metrics,
            orchestrator=self.orchestrator,
            state=self.state,
            router=self.router,
            portfolio=self.portfolio,
            risk=self.risk,
            regime=self.regime,
            cache_stats=self.cache_stats,
            cached_book=lambda symbol: self.book_cache.l1.peek(f"book:{symbol}"),
            tracker=self.tracker,
            reconciler=self.reconciler,
        )

    @classmethod
    async def create(
        cls, cfg: AppConfig, *, clock: Clock, environ: Mapping[str, str] | None = None
    ) -> Daemon:
        """Open the event log first: the bus continues its seq after the last logged event.

        Live mode connects to every configured exchange (markets loaded) before anything
        else starts; keys come from ``environ`` (default: the process environment).
        """
        eventlog, spool, first_seq = await open_event_log(cfg.database)
        source: Source | None = None
        venues: list[CcxtVenue] = []
        try:
            source = await build_source(cfg, clock)
            if cfg.system.mode is Mode.LIVE:
                venues = await open_venues(cfg, clock, os.environ if environ is None else environ)
            daemon = cls(
                cfg,
                clock=clock,
                eventlog=eventlog,
                source=source,
                spool=spool,
                first_seq=first_seq,
                venues=venues,
            )
            await daemon.restore_positions()
            return daemon
        except BaseException:
            for venue in venues:
                await venue.close()
            if isinstance(source, CcxtSource):
                await source.close()
            await eventlog.close()
            raise

    async def restore_positions(self) -> None:
        """Positions and the order ledger from the log (and the spool): a restart keeps them.

        If the log cannot be read, the positions are unknown: trading starts HALTED (orders
        refused, visible in /health) until an operator sets the state back to ACTIVE.
        """
        events: dict[int, Event] = {}
        try:
            async for stored in self.eventlog.read(types=list(RESTORE_EVENT_TYPES)):
                events[stored.seq] = decode(stored.payload)
        except (StoreUnavailable, OSError) as exc:
            log.error("positions_unknown_trading_halted", error=str(exc))
            self.session = positions_unknown(self.cfg, symbols=self.state.symbols)
            await self.risk.set_state(
                TradingState.HALTED, "positions unknown: event log unreadable"
            )
            return
        if self.writer.spool is not None:
            for seq, _, type_name, payload in self.writer.spool.load():
                if type_name in RESTORE_EVENT_TYPES:
                    events[seq] = decode(payload)
        ordered = [events[seq] for seq in sorted(events)]
        self.ledger.restore(ordered)
        self.session = await start_session(
            self.cfg, symbols=self.state.symbols, logged=ordered, eventlog=self.eventlog
        )
        restored = self.portfolio.restore(self.session.fills)
        if restored:
            log.info(
                "positions_restored",
                fills=restored,
                open_positions=sum(1 for p in self.portfolio.positions().values() if p.quantity),
            )

    async def order_book(self, symbol: str) -> OrderBook | None:
        """The symbol's book through the tiered cache and its source's breaker (None: none)."""
        try:
            return await self.book_cache.get_or_load(
                f"book:{symbol}", lambda: self._load_book(symbol)
            )
        except SourceUnavailable:
            return None

    async def _load_book(self, symbol: str) -> OrderBook:
        book = await self.orchestrator.order_book(symbol)
        if book is None:
            raise SourceUnavailable(f"no order book for {symbol}")
        return book

    def _post(self, event: Event) -> None:
        try:
            self._outbox.put_nowait(event)
        except asyncio.QueueFull:
            # Counted and logged, never silent; the outbox only carries breaker changes.
            self.outbox_overflow += 1
            log.error("outbox_full_event_not_published", event_type=type(event).__name__)

    async def _publish_outbox(self) -> None:
        while True:
            event = await self._outbox.get()
            await self.bus.publish(event)
            self._outbox.task_done()

    def _subscribe(self) -> None:
        bus = self.bus
        for event_type, handler in self.ledger.handlers():
            bus.subscribe(event_type, handler)
        bus.subscribe(OrderIntent, self.tracker.on_intent)
        bus.subscribe(RegimeChanged, self.orchestrator.on_regime_changed)
        bus.subscribe(OrderFilled, self.tracker.on_filled)
        bus.subscribe(OrderCancelled, self.tracker.on_cancelled)
        bus.subscribe(OrderRejected, self.tracker.on_rejected)

    def _snapshot(self) -> Snapshot:
        def breakers() -> dict[str, str]:
            states = {
                f"source:{name}": str(b["state"])
                for name, b in self.orchestrator.metrics()["breakers"].items()
            }
            for venue, record in self.router.metrics().get("venues", {}).items():
                states[f"venue:{venue}"] = str(record.get("breaker", "CLOSED"))
            return states

        return Snapshot(
            health=lambda: HEALTH_VALUE.get(self.health()["status"], 0.0),
            bus_counts=self.bus.counts,
            bus_queue_depths=self.bus.queue_depths,
            dead_letters=lambda: self.bus.dead_letter_count,
            breakers=breakers,
            rejects=lambda: dict(self.orchestrator.rejects),
            stale_symbols=lambda: len(self.orchestrator.stale_symbols),
            risk_state=lambda: str(self.risk.state),
            pnl=lambda: self.portfolio.totals(),
            eventlog=self.writer.health,
            cache=self.cache_stats,
            regime=self.regime.current,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, tg: asyncio.TaskGroup) -> None:
        t0 = time.perf_counter()
        await asyncio.to_thread(core_warm_up)
        self.writer.start(tg)
        self.bus.start(tg)
        # First event of the session: where it starts in the log, and on what market.
        await self.bus.publish(self.session.command(self.clock.now_ns()))
        self._outbox_task = tg.create_task(self._publish_outbox(), name="outbox")
        if self.reconciler.venues:
            # Before any new order: the log learns what the venues did while we were away.
            status = await self.reconciler.run_once()
            log.info(
                "reconciled_at_start",
                resolved=status["resolved"],
                open=len(status["open_orders"]),
                external=len(status["external_orders"]),
                errors=status["errors"],
            )
            self._reconcile_task = tg.create_task(
                self.reconciler.run_periodically(), name="reconcile"
            )
        self.orchestrator.start(tg)
        await self.admin.start()
        self.status = "running"
        log.info(
            "daemon_started",
            mode=self.cfg.system.mode,
            symbols=len(self.state.symbols),
            first_seq=self.bus.last_seq + 1,
            eventlog=self.eventlog.name,
            admin=self.admin.url,
            startup_s=round(time.perf_counter() - t0, 3),
            config=describe(self.cfg),
        )

    async def step(self) -> None:
        """One heartbeat: refresh the symbols that are due, wait for them, classify, scan."""
        self.orchestrator.refresh_due()
        await self.orchestrator.join()
        await self.orchestrator.refresh_tickers()
        await self.core.after_bars()
        await self.core.decide()
        self.ticks += 1

    async def run_until(self, stop: asyncio.Event) -> None:
        interval = self.cfg.data.orchestrator.update_interval_ms / 1000.0
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                # One crash policy: a failed heartbeat is logged and the next one runs.
                log.exception("heartbeat_failed", tick=self.ticks)
            with suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()

    async def stop(self) -> None:
        """Reverse order: intake, bus drain, event log flush, then the admin API."""
        self.status = "stopping"
        budget = self.cfg.system.shutdown_timeout_s
        t0 = time.perf_counter()
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._reconcile_task
        await self.orchestrator.stop()
        await self.core.close()
        with suppress(TimeoutError):
            async with asyncio.timeout(budget * 0.1):
                await self._outbox.join()
        self._outbox_task.cancel()
        with suppress(asyncio.CancelledError):
            await self._outbox_task
        await self.bus.stop(timeout=budget * 0.4)
        await self.writer.stop(timeout=budget * 0.4)
        await self.admin.stop()
        if self.book_cache.l2 is not None:
            await self.book_cache.l2.close()
        if isinstance(self.source, CcxtSource):
            await self.source.close()
        for venue in self.ccxt_venues:
            await venue.close()
        await self.eventlog.close()
        self.status = "stopped"
        log.info(
            "daemon_stopped",
            events=self.bus.last_seq,
            written=self.writer.written,
            unwritten=self.writer.pending,
            stop_s=round(time.perf_counter() - t0, 3),
        )

    def cache_stats(self) -> dict[str, dict[str, Any]]:
        """Hits and misses of the order-book and the market-data (bars) caches."""
        return {"books": self.book_cache.stats(), "bars": self.bars_cache.stats()}

    def health(self) -> dict[str, Any]:
        components: dict[str, dict[str, Any]] = {
            "event_bus": {
                "status": "ok" if not self.bus.closed else "stopped",
                "events": self.bus.last_seq,
                "dead_letters": self.bus.dead_letter_count,
            },
            "event_log": self.writer.health(),
            "orchestrator": self.orchestrator.health(),
            "regime": self.regime.health(),
            "scanner": self.scanner.health(),
            "strategy": self.strategy.health(),
            "risk": self.risk.health(),
            "router": self.router.health(),
            "cache": {
                "status": "ok"
                if self.book_cache.l2 is None
                or all(c.breaker.state == "CLOSED" for c in (self.book_cache, self.bars_cache))
                else "degraded",
                "l2": "redis" if self.book_cache.l2 is not None else "off",
            },
        }
        if self.status != "running":
            status = self.status
        elif all(c.get("status") == "ok" for c in components.values()):
            status = "ok"
        else:
            status = "degraded"
        return {
            "status": status,
            "mode": str(self.cfg.system.mode),
            "ticks": self.ticks,
            "components": components,
        }


async def open_venues(cfg: AppConfig, clock: Clock, environ: Mapping[str, str]) -> list[CcxtVenue]:
    """Connect to every configured exchange (keys from ``environ``; the config checked them)."""
    secrets = Secrets.from_env(environ)
    venues: list[CcxtVenue] = []
    try:
        for venue_cfg in cfg.execution.venues:
            credentials = secrets.get(venue_cfg.exchange)
            if credentials is None:
                raise ValueError(f"no credentials for {venue_cfg.exchange} in the environment")
            venue = CcxtVenue(venue_cfg, credentials=credentials, clock=clock)
            venues.append(venue)
            await venue.start()
    except BaseException:
        for venue in venues:
            await venue.close()
        raise
    return venues


async def run_daemon(
    cfg: AppConfig, *, clock: Clock, stop: asyncio.Event, on_ready: Any = None
) -> None:
    """Build, start, run until ``stop`` is set, and stop in reverse order."""
    daemon = await Daemon.create(cfg, clock=clock)
    async with asyncio.TaskGroup() as tg:
        try:
            await daemon.start(tg)
            if on_ready is not None:
                on_ready(daemon)
            await daemon.run_until(stop)
        finally:
            await daemon.stop()
