"""The trading core: the decision path that ``run``, ``replay`` and ``backtest`` share.

``TradingCore.build`` makes it from the config, a bus, a clock and a MarketState: regime
detector → scanner → strategy engine → risk manager → (next-bar gate) → order router →
venues, and the portfolio that fills feed. The caller brings the bars (the orchestrator's
``BarsUpdated`` in the daemon, candle files in a backtest) and calls, once per heartbeat,
``after_bars`` (orders held for the next bar are routed at it, then every held position's
stop and take-profit levels are judged on the new bar) and then ``decide`` (classify, scan,
the strategy's targets and the orders towards them; with simulated bar fills, let every
decision settle). Same bars, same calls: the same signals, targets, orders and fills.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.data import market_state
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.source import OrderBook
from quantumtrade.events import BarsUpdated, CircuitBreakerChanged, OrderIntent
from quantumtrade.execution.bar_fill import BarFillConfig, BarVenue, FillModel, NextBarGate
from quantumtrade.execution.paper import PaperVenue, PaperVenueConfig
from quantumtrade.execution.router import OrderRouter, RouterConfig
from quantumtrade.execution.venue import Venue
from quantumtrade.portfolio import Portfolio
from quantumtrade.regime import engine as regime_engine
from quantumtrade.regime.detector import RegimeDetector
from quantumtrade.regime.engine import RegimeConfig
from quantumtrade.risk.manager import RiskLimits, RiskManager, subscribe_decision_path
from quantumtrade.scoring import incremental
from quantumtrade.scoring.scanner import Scanner, ScannerConfig
from quantumtrade.strategy.engine import StrategyEngine
from quantumtrade.strategy.loader import StrategyConfig, load_strategy


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel the decision path runs per bar, both
    builds, before the first bar: MarketState appends, regimes, the scan. Blocking: call it in
    a thread from a running loop."""
    market_state.warm_up()
    incremental.warm_up()
    regime_engine.warm_up()


class TradingCore:
    """Every component of the decision path, wired on one bus."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        state: MarketState,
        regime: RegimeDetector,
        scanner: Scanner,
        strategy: StrategyEngine,
        portfolio: Portfolio,
        risk: RiskManager,
        router: OrderRouter,
        venues: Sequence[Venue],
        gate: NextBarGate | None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.state = state
        self.regime = regime
        self.scanner = scanner
        self.strategy = strategy
        self.portfolio = portfolio
        self.risk = risk
        self.router = router
        self.venues = list(venues)
        self.gate = gate
        subscribe_decision_path(bus, risk=risk, portfolio=portfolio)
        strategy.subscribe()
        if gate is None:
            bus.subscribe(OrderIntent, router.on_intent)
        else:
            bus.subscribe(BarsUpdated, gate.on_bars)
            bus.subscribe(OrderIntent, gate.on_intent)

    @classmethod
    def build(
        cls,
        *,
        bus: EventBus,
        clock: Clock,
        state: MarketState,
        regime: RegimeConfig,
        scanner: ScannerConfig,
        strategy: StrategyConfig,
        risk: RiskLimits,
        router: RouterConfig,
        breaker: BreakerConfig,
        fill_model: FillModel,
        bar_fill: BarFillConfig,
        paper: PaperVenueConfig,
        books: Callable[[str], Awaitable[OrderBook | None]] | None = None,
        live_venues: Sequence[Venue] = (),
        on_latency: Callable[[str, float], None] | None = None,
        on_breaker_change: Callable[[CircuitBreakerChanged], None] | None = None,
    ) -> TradingCore:
        """Live venues when given; else the simulator the fill model names (``books`` feeds
        the book-filling paper venue)."""
        detector = RegimeDetector(bus=bus, clock=clock, state=state, config=regime)
        scan = Scanner(bus=bus, clock=clock, state=state, config=scanner, regime_of=detector.regime)
        portfolio = Portfolio(bus=bus, clock=clock)
        manager = RiskManager(bus=bus, clock=clock, limits=risk, portfolio=portfolio)
        venues: list[Venue]
        bar_venue: BarVenue | None = None
        if live_venues:
            venues = list(live_venues)
        elif fill_model is FillModel.NEXT_BAR:
            bar_venue = BarVenue("sim", config=bar_fill)
            venues = [bar_venue]
        else:
            if books is None:
                raise ValueError("the book fill model needs a source of order books")
            venues = [PaperVenue("paper", clock=clock, books=books, config=paper)]
        order_router = OrderRouter(
            bus=bus,
            clock=clock,
            venues=venues,
            config=router,
            breaker_config=breaker,
            on_latency=on_latency,
            on_breaker_change=on_breaker_change,
        )
        gate = (
            NextBarGate(bus=bus, clock=clock, venue=bar_venue, route=order_router.on_intent)
            if bar_venue is not None
            else None
        )
        engine = StrategyEngine(
            bus=bus,
            clock=clock,
            state=state,
            loaded=load_strategy(strategy),
            config=strategy,
            risk=manager,
            portfolio=portfolio,
            regime=detector,
            window=scanner.window,
            fills_within_bar=gate is not None,
        )
        return cls(
            bus=bus,
            clock=clock,
            state=state,
            regime=detector,
            scanner=scan,
            strategy=engine,
            portfolio=portfolio,
            risk=manager,
            router=order_router,
            venues=venues,
            gate=gate,
        )

    async def after_bars(self) -> None:
        """Orders held for the next bar go now (with bar fills) and their fills settle; then
        the new bars are judged against every held position's levels (a triggered exit fills
        on the bar that crossed its level, with bar fills)."""
        if self.gate is not None:
            await self.gate.release()
            await self.bus.drain()
        await self.strategy.check_bars()
        if self.gate is not None and self.gate.pending:
            await self.gate.release()
            await self.bus.drain()

    async def close(self) -> None:
        """Before the bus stops: orders still held for a next bar are cancelled (``shutdown``)."""
        if self.gate is not None:
            await self.gate.cancel_all("shutdown")

    async def decide(self) -> None:
        """Classify every symbol, scan, let the strategy decide; with bar fills, wait until the
        decisions settle (each intent held by the gate before the next bar can arrive)."""
        await self.regime.update()
        result = await self.scanner.scan()
        await self.strategy.decide(result)
        if self.gate is not None:
            await self.bus.drain()
