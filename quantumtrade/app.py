"""The composition root: builds every component from the config, wires the bus, runs, stops.

Build order (``Daemon.__init__``, top to bottom): event log writer → bus → outbox → market-data
caches → MarketState → orchestrator → the trading core (``core.TradingCore``: regimes, scan,
strategy, risk, portfolio, router, venues) → order tracking and reconciliation → metrics →
admin API. ``create`` opens the event log, the source and (live) the exchanges first,
restores positions (``restore.py``) and compiles the numba kernels before the first heartbeat.
``run_daemon`` binds the admin port before all of that (``admin/startup.py``: ``/health``
answers 503 "starting" with the phase) and hands it to the admin API when trading starts; a
stop asked for during start-up abandons it (``warm_up_kernels``). Stop runs the other way:
intake stops first (orchestrator workers), then the bus drains, the event log flushes and
closes, the admin API goes last so ``/health`` reports "stopping" while the rest winds down.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec
import structlog

from quantumtrade.admin.server import AdminServer, Listen
from quantumtrade.admin.startup import StartupListener
from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.config import AppConfig, Mode, describe
from quantumtrade.core import KERNEL_GROUPS, TradingCore
from quantumtrade.core import warm_up as core_warm_up
from quantumtrade.credentials import Secrets
from quantumtrade.data import synthetic
from quantumtrade.data.caches import MarketCaches
from quantumtrade.data.ccxt_source import CcxtSource
from quantumtrade.data.factory import active_symbols, build_source
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator
from quantumtrade.data.source import OrderBook, Source
from quantumtrade.events import (
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    RegimeChanged,
)
from quantumtrade.execution.ccxt_venue import CcxtVenue
from quantumtrade.execution.reconcile import OrderLedger, Reconciler
from quantumtrade.execution.tracker import OrderTracker
from quantumtrade.metrics import Metrics, Snapshot
from quantumtrade.outbox import Outbox
from quantumtrade.restore import restore_session
from quantumtrade.store.eventlog import EventLog, EventLogWriter
from quantumtrade.store.factory import open_event_log
from quantumtrade.store.spool import Spool
from quantumtrade.strategy.adapt import Adapter, Search

log = structlog.get_logger("quantumtrade.app")

HEALTH_VALUE = {"ok": 1.0, "degraded": 0.5}
WARM_UP_THREAD = "quantumtrade-warm-up"


class StartPhase(StrEnum):
    """What ``run`` is doing before it trades (``/health``'s ``phase`` meanwhile)."""

    OPENING = "opening"  # the event log, the market data source, exchanges, positions
    WARMING_UP = "warming_up"  # compiling or loading the numba kernels
    STARTING = "starting"  # writer, bus, workers, reconciliation, the admin API: not abandoned


OnPhase = Callable[[StartPhase, str], None]


@dataclass(frozen=True, slots=True)
class StartupProgress:
    """One step of start-up, for the command line to print and tell systemd."""

    phase: StartPhase
    detail: str
    admin_url: str
    elapsed_s: float


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
        search: Search | None = None,
    ) -> None:
        self.cfg, self.clock, self.eventlog, self.source = cfg, clock, eventlog, source
        self.status = "starting"
        self.ticks = 0
        db = cfg.database
        self.writer = EventLogWriter(
            eventlog, batch_size=db.batch_size, flush_interval_ms=db.flush_interval_ms,
            max_buffer=db.max_buffer, spool=spool,
        )  # fmt: skip
        self.bus = EventBus(clock=clock, config=cfg.bus, recorder=self.writer, first_seq=first_seq)
        self.metrics = Metrics()
        self.outbox = Outbox(self.bus)  # breaker changes from synchronous code, in order
        self.caches = MarketCaches.build(
            clock=clock, ttl_ms=cfg.cache.ttl_ms, max_entries=cfg.cache.max_entries,
            redis_url=cfg.redis.url, key_prefix=cfg.redis.key_prefix,
            timeout_ms=cfg.redis.timeout_ms, on_breaker_change=self.outbox.post,
        )  # fmt: skip
        self.book_cache, self.bars_cache = self.caches.books, self.caches.bars
        self.state = MarketState(active_symbols(cfg, source), cfg.data.capacity)
        self.orchestrator = Orchestrator(
            bus=self.bus, clock=clock, state=self.state, sources={source.name: source},
            config=cfg.data.orchestrator, breaker_config=cfg.breaker,
            on_processing_time=self.metrics.observe_processing_time, cache=self.bars_cache,
        )  # fmt: skip
        # The trading core: live mode trades on the configured exchanges, paper on a simulator.
        self.ccxt_venues = list(venues)
        self.core = TradingCore.build(
            cfg, bus=self.bus, clock=clock, state=self.state, books=self.order_book,
            live_venues=self.ccxt_venues, on_latency=self.metrics.observe_router_latency,
            on_breaker_change=self.outbox.post,
        )  # fmt: skip
        core = self.core
        self.regime, self.scanner, self.strategy = core.regime, core.scanner, core.strategy
        self.portfolio, self.risk, self.router = core.portfolio, core.risk, core.router
        # Around the core, for the live daemon only: order tracking, reconciliation, the API.
        self.tracker = OrderTracker()
        self.ledger = OrderLedger()
        self.reconciler = Reconciler(
            bus=self.bus, clock=clock, ledger=self.ledger,
            venues={v.name: v for v in self.ccxt_venues},
            busy=self.router.in_progress.__contains__, config=cfg.execution.reconcile,
        )  # fmt: skip
        self._reconcile_task: asyncio.Task[None] | None = None
        # [adapt]: the strategy re-tuned in a worker process (the search is handed in).
        self.adapter: Adapter | None = None
        if cfg.adapt.enabled:
            if search is None:
                raise ValueError("[adapt] enabled needs a search (the command line passes one)")
            self.adapter = Adapter(
                bus=self.bus, clock=clock, state=self.state, engine=self.strategy,
                config=cfg.adapt, search=search,
            )  # fmt: skip
        self._subscribe()
        self.metrics.attach(self._snapshot())
        self.admin = AdminServer(
            host=cfg.admin.host, port=cfg.admin.port, token=cfg.admin.token,
            health=self.health, metrics=self.metrics, orchestrator=self.orchestrator,
            state=self.state, router=self.router, portfolio=self.portfolio, risk=self.risk,
            regime=self.regime, cache_stats=self.caches.stats,
            cached_book=self.caches.cached_book, tracker=self.tracker,
            reconciler=self.reconciler, anomaly=core.anomaly, strategy=self.strategy_status,
            dead_letters=self.bus,
        )  # fmt: skip

    @classmethod
    async def create(
        cls,
        cfg: AppConfig,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        search: Search | None = None,
        on_phase: OnPhase | None = None,
    ) -> Daemon:
        """Open the event log first: the bus continues its seq after the last logged event.

        Live mode connects to every configured exchange (markets loaded) before anything
        else starts; keys come from ``environ`` (default: the process environment). The numba
        kernels are compiled right after the event log opens (``warm_up_kernels``).
        ``on_phase`` hears each step.
        """

        def phase(name: StartPhase, detail: str) -> None:
            if on_phase is not None:
                on_phase(name, detail)

        phase(StartPhase.OPENING, "the event log")
        eventlog, spool, first_seq = await open_event_log(cfg.database)
        source: Source | None = None
        venues: list[CcxtVenue] = []
        daemon: Daemon | None = None
        try:
            # Before the source: building the synthetic market runs its kernels on the loop.
            await warm_up_kernels(lambda detail: phase(StartPhase.WARMING_UP, detail))
            phase(StartPhase.OPENING, f"the market data source ({cfg.data.source})")
            source = await build_source(cfg, clock)
            if cfg.system.mode is Mode.LIVE:
                phase(StartPhase.OPENING, "the exchanges")
                venues = await open_venues(cfg, clock, os.environ if environ is None else environ)
            daemon = cls(
                cfg,
                clock=clock,
                eventlog=eventlog,
                source=source,
                spool=spool,
                first_seq=first_seq,
                venues=venues,
                search=search,
            )
            phase(StartPhase.OPENING, "positions from the event log")
            await daemon.restore_positions()
            return daemon
        except BaseException:
            # Nothing was written yet (the session's first event is published by start).
            if daemon is not None:
                await daemon.caches.close()
            for venue in venues:
                await venue.close()
            if isinstance(source, CcxtSource):
                await source.close()
            await eventlog.close()
            raise

    async def restore_positions(self) -> None:
        """Positions and the order ledger from the log and the spool (``restore.py``)."""
        self.session = await restore_session(
            self.cfg, eventlog=self.eventlog, spool=self.writer.spool,
            symbols=self.state.symbols, ledger=self.ledger, portfolio=self.portfolio,
            risk=self.risk,
        )  # fmt: skip

    async def order_book(self, symbol: str) -> OrderBook | None:
        """The symbol's book through the cache and its source's breaker (None: none)."""
        return await self.caches.order_book(symbol, self.orchestrator.order_book)

    def _subscribe(self) -> None:
        bus = self.bus
        for event_type, handler in [*self.ledger.handlers(), *self.metrics.handlers()]:
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
            dead_letter_retries=lambda: self.bus.dead_letter_retries,
            handler_stats=self.bus.handler_stats,
            breakers=breakers,
            rejects=lambda: dict(self.orchestrator.rejects),
            stale_symbols=lambda: len(self.orchestrator.stale_symbols),
            risk_state=lambda: str(self.risk.state),
            pnl=lambda: self.portfolio.totals(),
            eventlog=self.writer.health,
            cache=self.caches.stats,
            regime=self.regime.current,
            anomalies=self._anomaly_counts,
            adapt_runs=lambda: dict(self.adapter.runs) if self.adapter is not None else {},
            calls=self._call_counts,
            tail_risk=self.risk.tail_risk_1d,
        )

    def _call_counts(self) -> dict[str, dict[str, int]]:
        """Source calls and order submissions, attempted and failed (the error-rate alert)."""
        o = self.orchestrator
        venues = self.router.metrics().get("venues", {}).values()
        return {
            "data": {"attempts": o.source_calls, "errors": o.failures},
            "venue": {
                "attempts": sum(int(v.get("orders", 0)) for v in venues),
                "errors": sum(int(v.get("errors", 0)) for v in venues),
            },
        }

    def strategy_status(self) -> dict[str, Any]:
        """The strategy's parameters in force and the [adapt] runner's state (admin API)."""
        engine = self.strategy
        return {
            "strategy": engine.name,
            "params": engine.params,
            "exits": msgspec.to_builtins(engine.exits),
            "protections": msgspec.to_builtins(engine.protections.config),
            "parameter_changes": engine.parameter_changes,
            "adapt": self.adapter.status() if self.adapter is not None else {"enabled": False},
        }

    def _anomaly_counts(self) -> dict[str, dict[str, int]]:
        detector = self.core.anomaly
        if detector is None:
            return {}
        return {"detected": dict(detector.detected), "active": detector.active_counts()}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, tg: asyncio.TaskGroup, *, listen: Listen | None = None) -> None:
        """Writer, bus, the session's first event, reconciliation (live), workers, then the
        admin API (on the listener ``listen`` hands over, else its own)."""
        t0 = time.perf_counter()
        self.writer.start(tg)
        self.bus.start(tg)
        # First event of the session: where it starts in the log, and on what market.
        await self.bus.publish(self.session.command(self.clock.now_ns()))
        self.outbox.start(tg)
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
        if self.adapter is not None:
            self.adapter.start(tg)
        await self.admin.start(listen)
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
        """One heartbeat: publish a finished re-tuning (before the bars: a fixed point of the
        stream that replay sees), refresh the symbols that are due, wait, classify, scan."""
        if self.adapter is not None:
            await self.adapter.step()
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
        if self.adapter is not None:
            await self.adapter.stop()
        await self.core.close()
        await self.outbox.stop(timeout=budget * 0.1)
        await self.bus.stop(timeout=budget * 0.4)
        await self.writer.stop(timeout=budget * 0.4)
        await self.admin.stop()
        await self.caches.close()
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
            "cache": self.caches.health(),
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


def warm_up(on_group: Callable[[str, int, int], None] | None = None) -> None:
    """Every kernel ``run`` needs compiled or loaded from numba's cache: the synthetic market
    (paper mode's default source), then the trading core's (``core.warm_up``). ``on_group(name,
    index, total)`` before each group. Blocking: ``quantumtrade warmup`` and
    ``warm_up_kernels``."""

    def tell(name: str, index: int, total: int) -> None:
        if on_group is not None:
            on_group(name, index, total)

    tell("synthetic market", 1, len(KERNEL_GROUPS) + 1)
    synthetic.warm_up()
    core_warm_up(lambda name, index, total: tell(name, index + 1, total + 1))


async def warm_up_kernels(on_group: Callable[[str], None] | None = None) -> None:
    """``warm_up`` in a daemon thread, with ``on_group`` told (on the loop) which group is
    compiling. A fresh numba cache takes about a minute; a thread cannot be stopped, so a
    cancelled wait leaves the thread behind: the process exits without joining it
    (``warm_up_abandoned``, see ``cli``)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def deliver(callback: Callable[..., None], *args: Any) -> None:
        with suppress(RuntimeError):  # the loop closed: the wait was abandoned
            loop.call_soon_threadsafe(callback, *args)

    def settle(error: BaseException | None) -> None:
        if done.done():  # cancelled meanwhile
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def report(name: str, index: int, total: int) -> None:
        if on_group is not None:
            deliver(on_group, f"numba kernels: {name} ({index}/{total})")

    def work() -> None:
        try:
            warm_up(report)
        except Exception as exc:
            deliver(settle, exc)
        else:
            deliver(settle, None)

    threading.Thread(target=work, name=WARM_UP_THREAD, daemon=True).start()
    await done


def warm_up_abandoned() -> bool:
    """True if a kernel warm-up is still compiling after its wait was cancelled."""
    return any(t.name == WARM_UP_THREAD and t.is_alive() for t in threading.enumerate())


async def run_daemon(
    cfg: AppConfig,
    *,
    clock: Clock,
    stop: asyncio.Event,
    on_ready: Any = None,
    on_progress: Callable[[StartupProgress], None] | None = None,
    search: Search | None = None,
) -> None:
    """Bind the admin port (``/health``: 503 "starting"), build, warm up, start, run until
    ``stop`` is set, and stop in reverse order. ``on_progress`` hears each start-up step."""
    startup = StartupListener(host=cfg.admin.host, port=cfg.admin.port, mode=str(cfg.system.mode))
    await startup.start()
    t0 = time.perf_counter()

    def phase(name: StartPhase, detail: str) -> None:
        startup.set_phase(name, detail)
        elapsed = round(time.perf_counter() - t0, 3)
        log.info("starting", phase=str(name), detail=detail, elapsed_s=elapsed)
        if on_progress is not None:
            on_progress(StartupProgress(name, detail, startup.url, elapsed))

    try:
        daemon = await Daemon.create(cfg, clock=clock, search=search, on_phase=phase)
        async with asyncio.TaskGroup() as tg:
            try:
                phase(StartPhase.STARTING, "event log writer, bus, workers, admin API")
                await daemon.start(tg, listen=startup.hand_over)
                if on_ready is not None:
                    on_ready(daemon)
                await daemon.run_until(stop)
            finally:
                await daemon.stop()
    finally:
        await startup.stop()
