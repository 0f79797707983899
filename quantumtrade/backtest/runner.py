"""The backtest engine: the daemon's trading core stepped over history on a data-driven clock.

For every bar of the axis, in order, exactly what a paper daemon with ``fill_model =
"next_bar"`` does at a heartbeat that brings one bar per symbol:

1. the clock moves to the bar's close (bars are known once they have closed);
2. the bars go through validation into MarketState and out as ``BarsUpdated``
   (``orchestrator.publish_stored``, the daemon's own intake);
3. ``core.after_bars``: orders decided on an earlier bar fill at this bar (``bar_fill``);
4. the books are marked at this bar's closes and the equity row is recorded;
5. ``core.decide``: regimes, scan, signals, risk, intents (held for the next bar).

So a decision taken on bar t's close fills at bar t+1 at the earliest. Before ``trade_from``
the bars are fed (steps 1-2, so indicators, regimes and the risk manager's history warm up)
without deciding. No admin server, no event log, no wall-clock wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.backtest.attribution import BrinsonAccumulator
from quantumtrade.backtest.data import Candles
from quantumtrade.backtest.model import EquityCurve, SignalRecord, Trade
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig, Mode
from quantumtrade.core import TradingCore
from quantumtrade.core import warm_up as core_warm_up
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import publish_stored
from quantumtrade.data.source import BarBatch
from quantumtrade.events import (
    Event,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    SignalGenerated,
)
from quantumtrade.execution.bar_fill import FillModel
from quantumtrade.regime.model import NO_LABEL
from quantumtrade.strategy.loader import load_strategy

log = structlog.get_logger("quantumtrade.backtest")

SOURCE = "backtest"
_MS_NS = 1_000_000
VAR_BACKTEST_CONFIDENCES = (0.99, 0.95)


class _OpenTrade:
    __slots__ = (
        "basis", "cluster", "entry_bar", "entry_qty", "entry_ts_ms", "entry_value", "exit_qty",
        "exit_value", "fees", "max_qty", "position", "realized", "regime", "side",
    )  # fmt: skip

    def __init__(self, bar: int, ts_ms: int, regime: str | None, cluster: str) -> None:
        self.entry_bar = bar
        self.entry_ts_ms = ts_ms
        self.regime = regime
        self.cluster = cluster
        self.side = ""
        self.position = 0.0
        self.max_qty = 0.0
        self.entry_qty = self.entry_value = 0.0
        self.exit_qty = self.exit_value = 0.0
        self.fees = 0.0
        self.realized = 0.0
        self.basis = 0.0
        """Average cost of the quantity held now (the portfolio's rules): what a reduction
        realises against. ``avg_entry`` also counts entries already sold, so after a resize
        down and up again it is not the held quantity's cost."""

    @property
    def avg_entry(self) -> float:
        return self.entry_value / self.entry_qty if self.entry_qty else 0.0


class Ledger:
    """Cash, positions and round-trip trades, kept from the bus's fills as they happen.

    Independent of the portfolio (which the risk manager reads), so the two can be checked
    against each other: equity = initial + realised + unrealised - fees at every bar.
    """

    def __init__(self, symbols: tuple[str, ...], initial_equity: float) -> None:
        self.symbols = symbols
        self.row = {s: i for i, s in enumerate(symbols)}
        self.initial_equity = initial_equity
        self.cash = initial_equity
        self.quantity = np.zeros(len(symbols))
        self.fees = 0.0
        self.traded_notional = 0.0
        self.fills = 0
        self.bar = 0
        self.ts_ms = 0
        self.trades: list[Trade] = []
        self.signals: list[SignalRecord] = []
        self.orders = 0
        self.rejected: Counter[str] = Counter()
        self._open: dict[str, _OpenTrade] = {}
        self._regime_of_signal: dict[str, str | None] = {}
        self._regime_of_order: dict[str, str | None] = {}
        self._reason_of_order: dict[str, str] = {}
        self.clusters: Mapping[str, str] = {}
        """The risk manager's clusters after the newest decision (a trade's cluster at entry)."""

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(SignalGenerated, self.on_signal)
        bus.subscribe(OrderIntent, self.on_intent)
        bus.subscribe(OrderFilled, self.on_fill)
        bus.subscribe(OrderRejected, self.on_rejected)

    def on_signal(self, signal: SignalGenerated) -> None:
        regime = str(signal.regime) if signal.regime is not None else None
        self._regime_of_signal[signal.signal_id] = regime
        self.signals.append(
            SignalRecord(symbol=signal.symbol, bar=self.bar, sign=signal.side.sign, regime=regime)
        )

    def on_intent(self, intent: OrderIntent) -> None:
        self.orders += 1
        if intent.reason:
            self._reason_of_order[intent.client_order_id] = intent.reason
        if intent.signal_id is not None:
            self._regime_of_order[intent.client_order_id] = self._regime_of_signal.get(
                intent.signal_id
            )

    def on_rejected(self, event: OrderRejected) -> None:
        if not event.parent_id:
            self.rejected[event.reason] += 1

    def on_fill(self, fill: OrderFilled) -> None:
        signed = fill.quantity * fill.side.sign
        self.cash -= signed * fill.price + fill.fee
        self.quantity[self.row[fill.symbol]] += signed
        self.fees += fill.fee
        self.traded_notional += fill.quantity * fill.price
        self.fills += 1
        self._trade(fill, signed)

    def _trade(self, fill: OrderFilled, signed: float) -> None:
        symbol, price = fill.symbol, fill.price
        trade = self._open.get(symbol)
        if trade is None:
            regime = self._regime_of_order.get(fill.parent_id or fill.client_order_id)
            cluster = self.clusters.get(symbol, symbol)
            trade = self._open[symbol] = _OpenTrade(self.bar, self.ts_ms, regime, cluster)
        held = trade.position
        if held == 0.0:
            trade.side = "LONG" if signed > 0 else "SHORT"
        if held == 0.0 or (held > 0) == (signed > 0):
            trade.entry_qty += abs(signed)
            trade.entry_value += abs(signed) * price
            trade.basis = (abs(held) * trade.basis + abs(signed) * price) / abs(held + signed)
            trade.fees += fill.fee
            trade.position = held + signed
            trade.max_qty = max(trade.max_qty, abs(trade.position))
            return
        closed = min(abs(signed), abs(held))
        share = closed / abs(signed)
        trade.realized += closed * (price - trade.basis) * (1.0 if held > 0 else -1.0)
        trade.exit_qty += closed
        trade.exit_value += closed * price
        trade.fees += fill.fee * share
        trade.position = held + signed
        if abs(trade.position) <= 1e-12 * max(abs(held), abs(signed)):
            trade.position = 0.0
        if trade.position == 0.0 or (trade.position > 0) != (held > 0):
            reason = self._reason_of_order.get(fill.parent_id or fill.client_order_id, "signal")
            self._close(symbol, trade, reason, trade.exit_value / trade.exit_qty)
            if trade.position != 0.0:  # a flip: the rest opens the next trade
                regime = self._regime_of_order.get(fill.parent_id or fill.client_order_id)
                rest = _OpenTrade(self.bar, self.ts_ms, regime, self.clusters.get(symbol, symbol))
                rest.side = "LONG" if trade.position > 0 else "SHORT"
                rest.position = trade.position
                rest.max_qty = abs(rest.position)
                rest.entry_qty = abs(rest.position)
                rest.entry_value = abs(rest.position) * price
                rest.basis = price
                rest.fees = fill.fee * (1.0 - share)
                self._open[symbol] = rest

    def _close(self, symbol: str, trade: _OpenTrade, reason: str, exit_price: float) -> None:
        del self._open[symbol]
        self.trades.append(
            Trade(
                symbol=symbol,
                side=trade.side,
                entry_ts_ms=trade.entry_ts_ms,
                exit_ts_ms=self.ts_ms,
                entry_bar=trade.entry_bar,
                exit_bar=self.bar,
                quantity=trade.max_qty,
                entry_price=trade.avg_entry,
                exit_price=exit_price,
                fees=trade.fees,
                pnl=trade.realized - trade.fees,
                regime=trade.regime,
                exit_reason=reason,
                cluster=trade.cluster,
            )
        )

    def close_open(self, marks: NDArray[np.float64]) -> None:
        """Mark every trade still open at the last closes (``end_of_data``)."""
        for symbol in list(self._open):
            trade = self._open[symbol]
            mark = float(marks[self.row[symbol]])
            trade.realized += trade.position * (mark - trade.basis)
            self._close(symbol, trade, "end_of_data", mark)

    def equity(self, marks: NDArray[np.float64]) -> tuple[float, float, float]:
        """(cash, signed position value, gross exposure) at ``marks``."""
        held = np.flatnonzero(self.quantity)
        if held.size == 0:
            return self.cash, 0.0, 0.0
        value = self.quantity[held] * marks[held]
        return self.cash, float(value.sum()), float(np.abs(value).sum())


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """What one run produced (bars ``trade_from:`` of ``candles``)."""

    candles: Candles
    """The traded window (the warm-up bars excluded)."""
    curve: EquityCurve
    trades: list[Trade]
    signals: list[SignalRecord]
    regimes: NDArray[np.int8]
    """(symbols, bars) regime code per bar after that bar's update (``NO_LABEL``: none)."""
    initial_equity: float
    fees: float
    traded_notional: float
    orders: int
    fills: int
    rejected_orders: dict[str, int]
    rejected_bars: dict[str, int]
    elapsed_s: float
    bars_fed: int
    """Symbol-bars that went through the decision path, warm-up included."""
    attribution: dict[str, object] = field(default_factory=dict)
    """The strategy's name and the Brinson-Fachler effects against the equal-weight
    benchmark (``attribution.BrinsonAccumulator.summary``)."""
    var_forecast: dict[float, NDArray[np.float64]] = field(default_factory=dict)
    """Confidence -> per bar, the one-bar VaR of the book held at that bar's close (after
    its fills), from the risk manager's return history then (NaN: too little history)."""
    book_pnl: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    """Per bar, that same book's P&L over the next bar at the closes (hypothetical P&L:
    the held quantities, no fills, fees or slippage; NaN on the last bar)."""
    allocation: dict[str, Any] = field(default_factory=dict)
    """The allocator's figures (method, rebalances by trigger, fallbacks, the newest
    allocation and its clusters): the strategy engine's ``metrics()["allocation"]``."""


Observer = Callable[[int, TradingCore, Ledger, float], None]


async def run_backtest(
    cfg: AppConfig,
    candles: Candles,
    *,
    initial_equity: float = 100_000.0,
    trade_from: int = 0,
    progress: Callable[[int], None] | None = None,
    observe: Observer | None = None,
    record: Callable[[Event], None] | None = None,
) -> BacktestResult:
    """Run the trading core over ``candles``; decide from bar ``trade_from`` on.

    ``progress(n)`` is called with the bars done since its last call; ``observe(bar, core,
    ledger, equity)`` after each traded bar's equity row (tests check the books with it);
    ``record`` sees every event the bus publishes (the parity test compares them)."""
    n_bars, n_sym = candles.bars, len(candles.symbols)
    bar_ms = candles.bar_ms
    start_ns = (int(candles.ts_ms[0]) if n_bars else 0) * _MS_NS
    clock = ManualClock(start_ns)
    bus = EventBus(clock=clock, config=cfg.bus)
    if record is not None:
        bus.set_recorder(_Recorder(record))
    state = MarketState(candles.symbols, cfg.data.capacity)
    # The daemon's core as a paper daemon with next-bar fills builds it, sized on this equity.
    sim = msgspec.structs.replace(
        cfg,
        system=msgspec.structs.replace(cfg.system, mode=Mode.PAPER),
        execution=msgspec.structs.replace(cfg.execution, fill_model=FillModel.NEXT_BAR),
        strategy=msgspec.structs.replace(cfg.strategy, capital=initial_equity),
    )
    core = TradingCore.build(sim, bus=bus, clock=clock, state=state)
    ledger = Ledger(candles.symbols, initial_equity)
    ledger.subscribe(bus)
    brinson = BrinsonAccumulator(candles.symbols)
    all_rows = np.arange(n_sym, dtype=np.int64)
    offsets = np.arange(n_sym + 1, dtype=np.int64)
    rejects: Counter[str] = Counter(candles.load_rejects)
    traded = max(n_bars - trade_from, 0)
    cash = np.empty(traded)
    value = np.empty(traded)
    gross = np.empty(traded)
    equity = np.empty(traded)
    regimes = np.full((n_sym, traded), NO_LABEL, dtype=np.int8)
    marks = np.zeros(n_sym)  # each symbol's last stored close (0 before its first bar)
    var_forecast = np.full((len(VAR_BACKTEST_CONFIDENCES), traded), np.nan)
    book_pnl = np.full(traded, np.nan)
    held = np.zeros(0, dtype=np.int64)  # rows of the book held into this bar, and then:
    held_qty, held_marks = np.zeros(0), np.zeros(0)
    fed = 0
    last_have: NDArray[np.bool_] | None = None  # the last step that lacked a symbol's bar
    some: tuple[str, ...] = ()
    some_rows, some_offsets = all_rows, offsets
    # Compiled before the first bar, as the daemon does at start (numba's cache makes it quick).
    await asyncio.to_thread(core_warm_up)
    t0 = time.perf_counter()  # elapsed_s: the run, as a peer's engine.run(), not the set-up
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        for t in range(n_bars):
            ts_ms = int(candles.ts_ms[t])
            clock.set((ts_ms + bar_ms) * _MS_NS)
            have = candles.have[t]
            prices = candles.prices[t]
            if have.all():
                batch = BarBatch(candles.symbols, np.full(n_sym, ts_ms), prices, offsets)
                batch_rows = all_rows
            else:
                if last_have is None or not np.array_equal(have, last_have):
                    # The same symbols as the step before keep the same tuple: the handlers'
                    # per-tuple caches (rows, index) then hold across steps.
                    some_rows = np.flatnonzero(have)
                    some = tuple(candles.symbols[i] for i in some_rows.tolist())
                    some_offsets = np.arange(some_rows.size + 1, dtype=np.int64)
                    last_have = have
                batch_rows = some_rows
                batch = BarBatch(
                    some,
                    np.full(some_rows.size, ts_ms),
                    np.ascontiguousarray(prices[some_rows]),
                    some_offsets,
                )
            batch.freeze()
            codes, counts = state.append_validated(batch, batch_rows)
            fed += int(counts.sum())
            await publish_stored(bus, clock.now_ns(), SOURCE, batch, codes, counts, rejects)
            stored = batch_rows if counts.all() else batch_rows[counts > 0]
            marks[stored] = prices[stored, 3]
            if t < trade_from:
                if progress is not None:
                    progress(1)
                continue
            i = t - trade_from
            ledger.bar, ledger.ts_ms = i, ts_ms
            await core.after_bars()
            cash[i], value[i], gross[i] = ledger.equity(marks)
            equity[i] = cash[i] + value[i]
            brinson.mark(ledger.quantity, marks, float(equity[i]))
            # VaR backtest: the last bar's book at this bar's closes; this bar's book and its
            # forecast, judged at the next bar.
            if i:
                book_pnl[i - 1] = float(held_qty @ (marks[held] - held_marks))
            held = np.flatnonzero(ledger.quantity)
            held_qty, held_marks = ledger.quantity[held], marks[held]
            values = {
                candles.symbols[j]: float(v)
                for j, v in zip(held.tolist(), held_qty * held_marks, strict=True)
            }
            var_forecast[:, i] = core.risk.one_bar_var(values, VAR_BACKTEST_CONFIDENCES)
            if observe is not None:
                observe(i, core, ledger, float(equity[i]))
            await core.decide()
            ledger.clusters = core.risk.clusters
            brinson.set_clusters(core.risk.clusters)
            labels = core.regime.labels
            if labels.shape[0] == n_sym:
                regimes[:, i] = labels
            if progress is not None:
                progress(1)
        # As the daemon does at its stop: orders decided on the last bar end, cancelled.
        await core.close()
        await bus.stop()
    ledger.close_open(marks)
    window = candles.window(trade_from, n_bars)
    curve = EquityCurve(
        ts_ms=window.ts_ms.copy(),
        cash=cash,
        position_value=value,
        equity=equity,
        gross_exposure=gross,
    )
    return BacktestResult(
        candles=window,
        curve=curve,
        trades=ledger.trades,
        signals=ledger.signals,
        regimes=regimes,
        initial_equity=initial_equity,
        fees=ledger.fees,
        traded_notional=ledger.traded_notional,
        orders=ledger.orders,
        fills=ledger.fills,
        rejected_orders=dict(ledger.rejected),
        rejected_bars=dict(rejects),
        elapsed_s=time.perf_counter() - t0,
        bars_fed=fed,
        attribution={"strategy": core.strategy.name, "brinson": brinson.summary()},
        var_forecast=dict(zip(VAR_BACKTEST_CONFIDENCES, var_forecast, strict=True)),
        book_pnl=book_pnl,
        allocation=core.strategy.metrics()["allocation"],
    )


class _Recorder:
    """Hands every published event to a callback (the bus's recorder hook)."""

    def __init__(self, sink: Callable[[Event], None]) -> None:
        self._sink = sink

    def record(self, event: Event) -> bool:
        self._sink(event)
        return True

    async def wait_room(self) -> None:
        return None


def decision_config(cfg: AppConfig) -> dict[str, object]:
    """The parts of the config that shape decisions, as plain values (for summary.json)."""
    loaded = load_strategy(cfg.strategy)
    return {
        "strategy": {
            **msgspec.to_builtins(cfg.strategy),
            "params": loaded.params,
            "exits": msgspec.to_builtins(loaded.exits),
            "protections": msgspec.to_builtins(loaded.protections),
        },
        "allocation": msgspec.to_builtins(cfg.allocation),
        "scanner": msgspec.to_builtins(cfg.scanner),
        "risk": msgspec.to_builtins(cfg.risk),
        "regime_min_dwell": cfg.regime.min_dwell,
        "bar_fill": msgspec.to_builtins(cfg.execution.bar_fill),
        "capacity": cfg.data.capacity,
    }
