"""The trading core: the decision path that ``run``, ``replay`` and ``backtest`` share.

``DecisionPath.build`` is the one builder of the decision path, from the config, a bus, a
clock and a MarketState: regime detector → scanner → strategy engine → risk manager, and the
portfolio that fills feed; its output is ``OrderIntent``. ``replay`` uses it alone (the
venues' answers come from the log). ``TradingCore.build`` adds where the orders go: (next-bar
gate) → order router → venues; ``run`` and ``backtest`` use it, and only the daemon
(``app.py``) adds sources, the admin API, reconciliation and metrics around it.

The caller brings the bars (the orchestrator's ``BarsUpdated`` in the daemon, candle files in
a backtest, the log in replay) and calls, once per heartbeat, ``after_bars`` (orders held for
the next bar are routed at it, then every held position's stop and take-profit levels are
judged on the new bar) and then ``decide`` (classify, scan, the strategy's targets and the
orders towards them; with simulated bar fills, let every decision settle). Same bars, same
calls: the same signals, targets, orders and fills.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from quantumtrade.allocation import kernels as allocation_kernels
from quantumtrade.allocation.allocator import Allocator
from quantumtrade.anomaly import detector as anomaly_detector
from quantumtrade.anomaly.detector import AnomalyDetector
from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.config import AppConfig, Mode
from quantumtrade.data import market_state
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.source import OrderBook
from quantumtrade.events import BarsUpdated, CircuitBreakerChanged, OrderIntent
from quantumtrade.execution.bar_fill import BarVenue, FillModel, NextBarGate
from quantumtrade.execution.paper import PaperVenue
from quantumtrade.execution.router import OrderRouter
from quantumtrade.execution.venue import Venue
from quantumtrade.portfolio import Portfolio
from quantumtrade.regime import engine as regime_engine
from quantumtrade.regime.detector import RegimeDetector
from quantumtrade.risk import history
from quantumtrade.risk.manager import RiskManager, subscribe_decision_path
from quantumtrade.scoring import incremental
from quantumtrade.scoring.scanner import Scanner
from quantumtrade.strategy.engine import StrategyEngine
from quantumtrade.strategy.loader import load_strategy

KERNEL_GROUPS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("market state", market_state.warm_up),
    ("price history", history.warm_up),
    ("scan", incremental.warm_up),
    ("regimes", regime_engine.warm_up),
    ("anomalies", anomaly_detector.warm_up),
    ("allocation", allocation_kernels.warm_up),
)
"""Every kernel the decision path runs per bar, by group, in the order ``warm_up`` takes them."""


def warm_up(on_group: Callable[[str, int, int], None] | None = None) -> None:
    """Compile (or load from numba's cache) every kernel the decision path runs per bar, both
    builds, before the first bar: MarketState appends, the risk manager's price history,
    regimes, the scan, anomalies, the allocator. ``on_group(name, index, total)`` is called
    before each group (index from 1). Blocking: call it in a thread from a running loop."""
    for index, (name, warm) in enumerate(KERNEL_GROUPS, start=1):
        if on_group is not None:
            on_group(name, index, len(KERNEL_GROUPS))
        warm()


class DecisionPath:
    """Bars in MarketState to orders: anomalies, regimes, scan, strategy, risk, and the
    portfolio."""

    def __init__(
        self,
        *,
        bus: EventBus,
        regime: RegimeDetector,
        scanner: Scanner,
        strategy: StrategyEngine,
        portfolio: Portfolio,
        risk: RiskManager,
        anomaly: AnomalyDetector | None = None,
    ) -> None:
        self.bus = bus
        self.regime = regime
        self.scanner = scanner
        self.strategy = strategy
        self.portfolio = portfolio
        self.risk = risk
        self.anomaly = anomaly
        """The anomaly detector (None: ``[anomaly] enabled = false``)."""
        subscribe_decision_path(bus, risk=risk, portfolio=portfolio)
        if anomaly is not None:
            for event_type, handler in anomaly.subscriptions():
                bus.subscribe(event_type, handler)
        strategy.subscribe()

    @classmethod
    def build(
        cls, cfg: AppConfig, *, bus: EventBus, clock: Clock, state: MarketState
    ) -> DecisionPath:
        """From ``[anomaly]``, ``[regime]``, ``[scanner]``, ``[strategy]`` and ``[risk]``;
        whether fills come within a bar (``[execution] fill_model = "next_bar"``) decides how
        stops are judged."""
        anomaly = (
            AnomalyDetector(bus=bus, clock=clock, config=cfg.anomaly)
            if cfg.anomaly.enabled
            else None
        )
        detector = RegimeDetector(bus=bus, clock=clock, state=state, config=cfg.regime)
        scanner = Scanner(
            bus=bus,
            clock=clock,
            state=state,
            config=cfg.scanner,
            regime_of=detector.regime,
            regime_codes=detector.regime_codes,  # all symbols at once, as one code array
        )
        portfolio = Portfolio(bus=bus, clock=clock)
        risk = RiskManager(
            bus=bus,
            clock=clock,
            limits=cfg.risk,
            portfolio=portfolio,
            pause_on_anomaly=cfg.anomaly.enabled and cfg.anomaly.pause_entries,
            capital=cfg.strategy.capital,
        )
        strategy = StrategyEngine(
            bus=bus,
            clock=clock,
            state=state,
            loaded=load_strategy(cfg.strategy),
            config=cfg.strategy,
            risk=risk,
            portfolio=portfolio,
            regime=detector,
            window=cfg.scanner.window,
            fills_within_bar=uses_bar_fills(cfg),
            allocator=Allocator(
                cfg.allocation,
                max_weight=cfg.strategy.max_weight,
                max_gross=cfg.strategy.max_gross,
            ),
        )
        portfolio.label_positions(strategy.position_labels)
        return cls(
            bus=bus,
            regime=detector,
            scanner=scanner,
            strategy=strategy,
            portfolio=portfolio,
            risk=risk,
            anomaly=anomaly,
        )

    async def check_levels(self) -> None:
        """Held positions' stops and take-profits against the new bars (and tickers)."""
        await self.strategy.check_bars()

    async def decide(self) -> None:
        """Publish the anomalies the new bars and tickers switched (the risk manager pauses
        entries on them), classify every symbol, scan, and let the strategy decide."""
        if self.anomaly is not None:
            await self.anomaly.publish()
        await self.regime.update()
        result = await self.scanner.scan()
        await self.strategy.decide(result)


def uses_bar_fills(cfg: AppConfig) -> bool:
    """Paper orders fill at the next bar (live mode always trades on its venues)."""
    return cfg.system.mode is not Mode.LIVE and cfg.execution.fill_model is FillModel.NEXT_BAR


class TradingCore:
    """The decision path and where its orders go: router, venues, and the next-bar gate."""

    def __init__(
        self,
        *,
        path: DecisionPath,
        router: OrderRouter,
        venues: Sequence[Venue],
        gate: NextBarGate | None,
    ) -> None:
        self.path = path
        self.bus = path.bus
        self.regime = path.regime
        self.scanner = path.scanner
        self.strategy = path.strategy
        self.portfolio = path.portfolio
        self.risk = path.risk
        self.anomaly = path.anomaly
        self.router = router
        self.venues = list(venues)
        self.gate = gate
        if gate is None:
            self.bus.subscribe(OrderIntent, router.on_intent)
        else:
            self.bus.subscribe(BarsUpdated, gate.on_bars)
            self.bus.subscribe(OrderIntent, gate.on_intent)

    @classmethod
    def build(
        cls,
        cfg: AppConfig,
        *,
        bus: EventBus,
        clock: Clock,
        state: MarketState,
        books: Callable[[str], Awaitable[OrderBook | None]] | None = None,
        live_venues: Sequence[Venue] = (),
        on_latency: Callable[[str, float], None] | None = None,
        on_breaker_change: Callable[[CircuitBreakerChanged], None] | None = None,
    ) -> TradingCore:
        """Live venues when given; else the simulator ``[execution] fill_model`` names
        (``books`` feeds the book-filling paper venue)."""
        bar_fills = uses_bar_fills(cfg)  # the one answer the path's stop judging also uses
        if live_venues and bar_fills:
            raise ValueError("live venues with bar fills: live mode trades on its venues")
        path = DecisionPath.build(cfg, bus=bus, clock=clock, state=state)
        ex = cfg.execution
        venues: list[Venue]
        bar_venue: BarVenue | None = None
        if live_venues:
            venues = list(live_venues)
        elif bar_fills:
            bar_venue = BarVenue("sim", config=ex.bar_fill)
            venues = [bar_venue]
        else:
            if books is None:
                raise ValueError("the book fill model needs a source of order books")
            venues = [PaperVenue("paper", clock=clock, books=books, config=ex.paper)]
        router = OrderRouter(
            bus=bus,
            clock=clock,
            venues=venues,
            config=ex.router,
            breaker_config=cfg.breaker,
            on_latency=on_latency,
            on_breaker_change=on_breaker_change,
        )
        gate = (
            NextBarGate(bus=bus, clock=clock, venue=bar_venue, route=router.on_intent)
            if bar_venue is not None
            else None
        )
        return cls(path=path, router=router, venues=venues, gate=gate)

    async def after_bars(self) -> None:
        """Orders held for the next bar go now (with bar fills) and their fills settle; then
        the new bars are judged against every held position's levels (a triggered exit fills
        on the bar that crossed its level, with bar fills)."""
        if self.gate is not None:
            await self.gate.release()
            await self.bus.drain()
        await self.path.check_levels()
        if self.gate is not None and self.gate.pending:
            await self.gate.release()
            await self.bus.drain()

    async def close(self) -> None:
        """Before the bus stops: orders still held for a next bar are cancelled (``shutdown``)."""
        if self.gate is not None:
            await self.gate.cancel_all("shutdown")

    async def decide(self) -> None:
        """The decision path; with bar fills, wait until the decisions settle (each intent
        held by the gate before the next bar can arrive)."""
        await self.path.decide()
        if self.gate is not None:
            await self.bus.drain()
