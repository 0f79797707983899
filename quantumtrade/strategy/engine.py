"""The strategy engine: runs one strategy in the trading core and trades towards its targets.

At every decision (``decide``, after the scan) on a new bar:

1. the strategy gets ``Features`` and the ``Book`` and returns target weights;
2. the engine applies, the same way for every strategy: shorts dropped unless allowed, the
   per-symbol cap (``max_weight``), the exits judged at the close (time stop, regime change,
   the signal fading or reversing), the protections (no entry during a cooldown or a pause),
   a held target resized only past ``rebalance_threshold``, and the gross budget
   (``max_gross``: entries beyond it wait, best score first);
3. each changed target is published as ``TargetPosition`` (an entry also as
   ``SignalGenerated``), sized at the close: quantity = weight * equity / close, equity =
   ``capital`` + the portfolio's net PnL;
4. for every symbol whose target differs from its exposure (position + fills not yet applied
   + orders in flight, the risk manager's figure) by at least ``min_order_notional``, one
   order for the difference, at most ``max_order_notional`` (the rest next bar), through the
   risk manager's checks. A repeated signal changes no target, so it never stacks orders.

Price-level exits (stop-loss, take-profit, trailing stop: ``exits.Levels``) are judged on
every new bar's high and low by ``check_bars`` (the core calls it after the bar's fills), and,
with a live or book-filled paper venue, on the last ticker price that arrived since. A
triggered exit's order carries the price it triggered at (``stop_price``): simulated bar fills
fill it on the bar that crossed the level, at the level or at a worse open.

A position the engine did not open (restored at a restart) is adopted at the next decision:
entered at its average price, with levels from the current ATR.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.allocation.allocator import HEDGE, Allocator
from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.data.market_state import MarketState
from quantumtrade.errors import ConfigError
from quantumtrade.events import (
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    ParametersChanged,
    Regime,
    Side,
    SignalGenerated,
    TargetPosition,
    TickerUpdated,
)
from quantumtrade.portfolio import UNLABELLED, Portfolio
from quantumtrade.regime.detector import RegimeDetector
from quantumtrade.regime.model import NO_LABEL, REGIME_ORDER
from quantumtrade.risk.manager import RiskManager
from quantumtrade.scoring.indicators import OUTPUTS
from quantumtrade.scoring.scanner import ScanResult
from quantumtrade.strategy.base import Book, Features, Targets
from quantumtrade.strategy.exits import (
    PRICE_EXITS,
    REGIME_CHANGE,
    REVERSE,
    SIGNAL_FADE,
    TIME_STOP,
    Levels,
    Protections,
)
from quantumtrade.strategy.loader import (
    LoadedStrategy,
    StrategyConfig,
    load_strategy,
    with_values,
)

log = structlog.get_logger("quantumtrade.strategy")

_ATR = OUTPUTS.index("atr")
# Open orders whose reason is kept (an exit's fill is attributed to it); a split order's end
# comes as its children's events, so the oldest entries are dropped past this bound.
_ORDERS_REMEMBERED = 10_000
_EPS = 1e-9


def _full(n: int, value: float, dtype: type[np.generic]) -> NDArray[Any]:
    """``np.full(n, value, dtype)`` without its Python wrapper (several arrays a bar)."""
    out = np.empty(n, dtype=dtype)
    out.fill(value)
    return out


class _Held:
    """What the engine knows of one open position."""

    __slots__ = ("checked_ms", "entry", "entry_bar", "entry_weight", "levels", "qty", "regime")

    def __init__(
        self, qty: float, entry: float, entry_bar: int, regime: int, weight: float
    ) -> None:
        self.qty = qty
        self.entry = entry
        self.entry_bar = entry_bar
        self.regime = regime
        self.entry_weight = weight
        self.levels: Levels | None = None
        self.checked_ms = 0
        """Open time of the newest bar the levels were checked against."""


class _Target:
    __slots__ = ("id", "orders", "quantity", "reason", "stop_price", "weight")

    def __init__(
        self, target_id: str, quantity: float, weight: float, reason: str, stop: float | None
    ) -> None:
        self.id = target_id
        self.quantity = quantity
        self.weight = weight
        self.reason = reason
        self.stop_price = stop
        self.orders = 0


class StrategyEngine:
    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        state: MarketState,
        loaded: LoadedStrategy,
        config: StrategyConfig,
        risk: RiskManager,
        portfolio: Portfolio,
        regime: RegimeDetector,
        window: int,
        fills_within_bar: bool,
        allocator: Allocator | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.state = state
        self.strategy = loaded.strategy
        self.name = loaded.name
        self.params = loaded.params
        """The strategy's parameters in force (defaults filled in)."""
        self.exits = loaded.exits
        self.config = config
        self.risk = risk
        self.portfolio = portfolio
        self.regime = regime
        self.window = window
        self.allocator = allocator if allocator is not None and allocator.active else None
        """Sizes the book from the strategy's targets (None: the strategy's weights as they
        are, ``[allocation] method = "none"`` and no hedge)."""
        self._hedge = self.allocator.config.hedge_symbol if self.allocator is not None else ""
        # Simulated bar fills: an entry filled at a bar's open lives through that bar, so its
        # levels are checked against it; a live fill comes after the bar it was decided on.
        self._fills_within_bar = fills_within_bar
        self.protections = Protections(loaded.protections)
        self.bar = 0
        """Decisions taken on a new bar (the unit of bars held, cooldowns and pauses)."""
        self._last_ms = np.zeros(0, dtype=np.int64)
        self._bar_ms = 0
        self._held: dict[str, _Held] = {}
        self._targets: dict[str, _Target] = {}
        self._pending: dict[str, tuple[float, int, float]] = {}
        """symbol -> (ATR, regime code, weight) of an entry target not yet filled."""
        self._order_reason: OrderedDict[str, str] = OrderedDict()
        """client order id -> reason, for the engine's own orders still open."""
        self._closing: dict[str, tuple[str, float, float]] = {}
        self._ticks: dict[str, float] = {}
        self._rows_for: tuple[str, ...] = ()
        self._row_of: dict[str, int] = {}
        """Held symbol -> last ticker price since the last ``check_bars`` (live fills)."""
        """symbol -> (reason, exit value, exit quantity) of a position being closed."""
        self.targets_published = 0
        self.orders = 0
        self.refused = 0
        self.exits_by_reason: dict[str, int] = {}
        self.parameter_changes = 0
        self.last_error = ""

    def subscribe(self) -> None:
        """Fills (positions and their levels), order ends and (when fills are live) tickers,
        all inline: what they change is judged at the next ``check_bars``, so the same events
        give the same exits in replay."""
        self.bus.subscribe(OrderFilled, self.on_fill)
        self.bus.subscribe(OrderCancelled, self._on_end)
        self.bus.subscribe(OrderRejected, self._on_end)
        self.bus.subscribe(ParametersChanged, self.on_parameters)
        if not self._fills_within_bar:
            self.bus.subscribe(TickerUpdated, self.on_ticker)

    # --- parameters ----------------------------------------------------------------------

    def on_parameters(self, event: ParametersChanged) -> None:
        """Switch to ``event.new`` (``[adapt]``): the strategy is rebuilt with them, the exits
        and the protections' settings follow; what is held keeps the levels set at its entry,
        and the protections keep their cooldowns and pauses. Replay calls this at the event's
        place in the log, so its decisions after it match the live ones."""
        if event.strategy != self.name:
            log.warning("parameters_for_another_strategy", strategy=event.strategy)
            return
        config = with_values(self.config, event.new)
        try:
            loaded = load_strategy(config, "ParametersChanged")
        except ConfigError as exc:
            # Checked before publishing; a log from another version may still hold such a set.
            self.last_error = str(exc)
            log.error("parameters_not_applied", error=str(exc), seq=event.seq)
            return
        self.config = config
        self.strategy = loaded.strategy
        self.params = loaded.params
        self.exits = loaded.exits
        self.protections.config = loaded.protections
        self.parameter_changes += 1
        log.info("parameters_changed", strategy=self.name, old=event.old, new=event.new)

    # --- fills ---------------------------------------------------------------------------

    def on_fill(self, fill: OrderFilled) -> None:
        symbol = fill.symbol
        signed = fill.quantity * fill.side.sign
        order_id = fill.parent_id or fill.client_order_id
        reason = self._order_reason.get(order_id, SIGNAL_FADE)
        if not fill.parent_id and fill.leaves_quantity <= 0.0:
            self._order_reason.pop(order_id, None)  # done (a split's children: see _trade)
        held = self._held.get(symbol)
        if held is None:
            self._open(symbol, signed, fill.price)
            return
        before = held.qty
        after = before + signed
        if abs(after) <= _EPS * max(abs(before), abs(signed)):
            after = 0.0
        if before * signed > 0:  # adding
            held.entry = (held.entry * abs(before) + fill.price * abs(signed)) / abs(after)
            held.qty = after
            return
        closed = min(abs(signed), abs(before))
        why, value, qty = self._closing.get(symbol, (reason, 0.0, 0.0))
        self._closing[symbol] = (why, value + closed * fill.price, qty + closed)
        held.qty = after
        if after == 0.0 or after * before < 0:
            self._close(symbol, held)
            if after != 0.0:  # a reversal: the rest opens the next position
                self._open(symbol, after, fill.price)

    def _open(self, symbol: str, qty: float, price: float) -> None:
        atr, regime, weight = self._pending.pop(symbol, (math.nan, NO_LABEL, 0.0))
        held = self._held[symbol] = _Held(qty, price, self.bar, regime, weight)
        if symbol != self._hedge:  # the hedge has no stop: it follows the book
            held.levels = Levels(1 if qty > 0 else -1, price, atr, self.exits)
        last = self.state.last_ts_ms(symbol) if symbol in self.state else None
        held.checked_ms = (last or 0) - (1 if self._fills_within_bar else 0)

    def _close(self, symbol: str, held: _Held) -> None:
        del self._held[symbol]
        reason, value, qty = self._closing.pop(symbol, (SIGNAL_FADE, 0.0, 0.0))
        exit_price = value / qty if qty else held.entry
        side = 1.0 if held.qty >= 0 and held.entry_weight >= 0 else -1.0
        ret = side * (exit_price / held.entry - 1.0) if held.entry > 0 else math.nan
        self.exits_by_reason[reason] = self.exits_by_reason.get(reason, 0) + 1
        self.protections.on_exit(symbol, reason, ret, self.bar)

    def _on_end(self, event: OrderCancelled | OrderRejected) -> None:
        if not event.parent_id:
            self._order_reason.pop(event.client_order_id, None)

    # --- price-level exits ---------------------------------------------------------------

    async def check_bars(self) -> None:
        """Judge every held position's levels against its symbol's newest bar if it arrived
        since they were last checked (one bar per decision in a backtest), then against the
        last ticker price seen since (live fills only)."""
        ticks, self._ticks = self._ticks, {}
        if not self._held:
            return
        for symbol in list(self._held):
            held = self._held.get(symbol)
            if held is None or held.levels is None or symbol not in self.state:
                continue
            bar = self.state.latest(symbol)
            if bar is not None and bar.ts_ms > held.checked_ms:
                held.checked_ms = bar.ts_ms
                hit = held.levels.check(bar.open, bar.high, bar.low)
                if hit is not None:
                    await self._exit_at(symbol, bar.ts_ms, hit[0], hit[1], bar.close)
                    continue
            last = ticks.get(symbol)
            if last is not None:
                hit = held.levels.check_price(last)
                if hit is not None:
                    await self._exit_at(symbol, held.checked_ms, hit[0], hit[1], last)

    def on_ticker(self, ticker: TickerUpdated) -> None:
        """Keep a held symbol's last traded price for the next ``check_bars``."""
        if ticker.symbol in self._held and math.isfinite(ticker.last) and ticker.last > 0:
            self._ticks[ticker.symbol] = ticker.last

    async def _exit_at(
        self, symbol: str, bar_ms: int, reason: str, price: float, market: float
    ) -> None:
        """Flat at ``price`` (the level crossed, or a worse open); ``market`` (the bar's close,
        the ticker's last) is what the risk checks judge the order against: a crash bar can
        close further from the stop than the price band allows."""
        current = self._targets.get(symbol)
        if current is not None and current.quantity == 0.0 and current.reason in PRICE_EXITS:
            return  # already leaving on a level
        target = self._set_target(symbol, bar_ms, 0.0, 0.0, reason, stop=price)
        await self._publish_target(symbol, target, price, None, 0.0)
        await self._trade(symbol, target, market)

    # --- decisions -----------------------------------------------------------------------

    async def decide(self, scan: ScanResult) -> None:
        """Targets from the strategy on a new bar, then orders towards every target."""
        state = self.state
        symbols = tuple(scan.symbols)
        n = len(symbols)
        if n == 0:
            return
        cols = state.columns(min(self.window, state.capacity))
        newest = cols.ts_ms[:, -1]
        if self._last_ms.size != n:
            grown = np.zeros(n, dtype=np.int64)
            grown[: min(n, self._last_ms.size)] = self._last_ms[:n]
            self._last_ms = grown
        fresh = newest > self._last_ms
        if not fresh.any():
            return
        self._last_ms = newest.copy()
        self.bar += 1
        if not self._bar_ms and cols.ts_ms.shape[1] >= 2:
            steps = cols.ts_ms[:, -1] - cols.ts_ms[:, -2]
            steps = steps[(cols.ts_ms[:, -2] > 0) & (steps > 0)]
            self._bar_ms = int(steps.min()) if steps.size else 0
        if symbols != self._rows_for:
            self._rows_for = symbols
            self._row_of = {s: i for i, s in enumerate(symbols)}
        row_of = self._row_of
        exposure = self.risk.exposures()
        self._adopt(scan, row_of)
        equity = self.config.capital + self.portfolio.net_pnl()
        features, book = self._views(scan, cols, symbols, row_of, exposure, equity)
        targets = self.strategy.targets(features, book)
        weight = np.array(targets.weight, dtype=np.float64, copy=True)
        if weight.shape != (n,):
            raise ValueError(f"{self.name}: targets has shape {weight.shape}, expected ({n},)")
        await self._apply(features, book, targets, weight, equity, fresh, row_of)

    def _views(
        self,
        scan: ScanResult,
        cols: Any,
        symbols: tuple[str, ...],
        row_of: dict[str, int],
        exposure: dict[str, float],
        equity: float,
    ) -> tuple[Features, Book]:
        n = len(symbols)
        labels = self.regime.labels
        confidence = self.regime.confidence
        if labels.shape[0] != n or self.config.regime_blind:
            labels = _full(n, NO_LABEL, np.int8)
            confidence = _full(n, 1.0 if self.config.regime_blind else 0.0, np.float64)
        values = scan.indicators
        if values is None:
            values = np.full((n, len(OUTPUTS)), np.nan)
        position = np.zeros(n)
        entry = _full(n, np.nan, np.float64)
        held_bars = _full(n, -1, np.int64)
        entry_regime = _full(n, NO_LABEL, np.int8)
        entry_weight = np.zeros(n)
        target_weight = np.zeros(n)
        for symbol, qty in exposure.items():
            i = row_of.get(symbol)
            if i is not None:
                position[i] = qty
        for symbol, held in self._held.items():
            i = row_of.get(symbol)
            if i is not None:
                entry[i] = held.entry
                held_bars[i] = self.bar - held.entry_bar
                entry_regime[i] = held.regime
                entry_weight[i] = held.entry_weight
        for symbol, target in self._targets.items():
            i = row_of.get(symbol)
            if i is not None:
                target_weight[i] = target.weight
        close = cols.close[:, -1]
        with np.errstate(invalid="ignore"):
            weight = np.where(np.isfinite(close), position * close / equity, 0.0)
        selected = tuple(row_of[c.symbol] for c in scan.selected)
        eligible = scan.eligible if scan.eligible is not None else np.ones(n, dtype=bool)
        features = Features(
            symbols=symbols, values=values, regime=labels, confidence=confidence,
            eligible=eligible, selected=selected, open=cols.open, high=cols.high,
            low=cols.low, close=cols.close, volume=cols.volume, ts_ms=cols.ts_ms[:, -1],
            bar_ms=self._bar_ms,
        )  # fmt: skip
        book = Book(
            position=position, weight=weight, entry_price=entry, bars_held=held_bars,
            entry_weight=entry_weight, target_weight=target_weight,
            entry_regime=entry_regime, equity=equity,
        )  # fmt: skip
        return features, book

    def _adopt(self, scan: ScanResult, row_of: dict[str, int]) -> None:
        """Positions held without the engine's record (restored at a start) become its own."""
        for symbol, position in self.portfolio.positions_view().items():
            qty = position.quantity
            if not qty or symbol in self._held or symbol in self._targets:
                continue
            i = row_of.get(symbol)
            atr = math.nan
            code = NO_LABEL
            if i is not None:
                if scan.indicators is not None:
                    atr = float(scan.indicators[i, _ATR])
                if i < self.regime.labels.size:
                    code = int(self.regime.labels[i])
            self._pending[symbol] = (atr, code, 0.0)
            self._open(symbol, qty, position.avg_price)
            weight = qty * position.avg_price / self.config.capital
            self._targets[symbol] = _Target(f"{symbol}-restored", qty, weight, "restored", None)

    async def _apply(
        self,
        features: Features,
        book: Book,
        targets: Targets,
        weight: NDArray[np.float64],
        equity: float,
        fresh: NDArray[np.bool_],
        row_of: dict[str, int],
    ) -> None:
        cfg = self.config
        exits = self.exits
        symbols = features.symbols
        close = features.last
        finite = np.isfinite(weight)
        if not cfg.allow_short:
            weight[finite & (weight < 0)] = 0.0
        weight.clip(-cfg.max_weight, cfg.max_weight, out=weight)
        allocating = self.allocator is not None
        if self.allocator is not None:
            targets, weight = self._allocate(self.allocator, features, book, targets, weight)
            finite = np.isfinite(weight)
        # Only rows with a new bar decide; the others keep what they hold.
        weight[~fresh] = np.nan
        changes: list[tuple[int, float, str]] = []
        kept_gross = 0.0
        busy = self._targets.keys() | self._held.keys()
        for symbol in sorted(busy):
            i = row_of.get(symbol)
            if i is None:
                continue
            target = self._targets.get(symbol)
            current = target.weight if target is not None else float(book.weight[i])
            held = self._held.get(symbol)
            if current == 0.0:
                continue  # leaving: nothing new until it is flat
            want = float(weight[i])
            exit_reason = ""  # the strategy's own reason, read only when a change needs it
            if held is not None and fresh[i] and symbol != self._hedge:
                if exits.max_hold_bars and self.bar - held.entry_bar >= exits.max_hold_bars:
                    want, exit_reason = 0.0, TIME_STOP
                elif (
                    exits.exit_on_regime_change
                    and held.regime != NO_LABEL
                    and features.regime[i] != NO_LABEL
                    and features.regime[i] != held.regime
                ):
                    want, exit_reason = 0.0, REGIME_CHANGE
            if math.isnan(want):
                kept_gross += abs(current)
            elif want == 0.0:
                reason = exit_reason or targets.reason_of(i)
                if reason in (TIME_STOP, REGIME_CHANGE, HEDGE):
                    changes.append((i, 0.0, reason))
                elif exits.exit_on_signal_fade:
                    changes.append((i, 0.0, SIGNAL_FADE))
                else:
                    kept_gross += abs(current)
            elif (want > 0) != (current > 0):
                changes.append((i, want, REVERSE))
                kept_gross += abs(want)
            elif allocating or abs(want - current) > cfg.rebalance_threshold * abs(current):
                # The allocator's finite weight for a held row is its decision to resize.
                changes.append((i, want, targets.reason_of(i)))
                kept_gross += abs(want)
            else:
                kept_gross += abs(current)
        # Entries: flat rows with a weight, best score first, within the gross budget.
        # A finite weight stays finite through the clip, and a fresh row's is not made NaN.
        rows = (finite & fresh & (weight != 0.0)).nonzero()[0]
        entries = [i for i in rows.tolist() if symbols[i] not in busy]
        if entries:
            raw = targets.score if targets.score is not None else weight
            ranked = np.abs(np.nan_to_num(np.asarray(raw, dtype=np.float64)[entries])).tolist()
            score = dict(zip(entries, ranked, strict=True))
            entries.sort(key=lambda i: (-score[i], symbols[i]))
            room = cfg.max_gross - kept_gross
            for i in entries:
                if room <= _EPS:
                    break
                blocked = self.protections.why_blocked(symbols[i], self.bar) is not None
                if blocked and symbols[i] != self._hedge:
                    continue
                w = float(weight[i])
                if abs(w) > room:
                    w = math.copysign(room, w)
                room -= abs(w)
                changes.append((i, w, targets.reason_of(i)))
        if changes:
            atr = features.feature("atr")
            for i, w, reason in changes:
                symbol = symbols[i]
                price = float(close[i])
                if not (math.isfinite(price) and price > 0):
                    continue
                target = self._set_target(
                    symbol, int(features.ts_ms[i]), w * equity / price, w, reason
                )
                regime, conf = self._regime_at(features, i)
                if w != 0.0 and (symbol not in self._held or reason == REVERSE):
                    self._pending[symbol] = (float(atr[i]), int(features.regime[i]), w)
                    await self._signal(symbol, target, features, i, price)
                await self._publish_target(symbol, target, price, regime, conf)
        for symbol in list(self._targets):
            i = row_of.get(symbol)
            if i is not None:
                await self._trade(symbol, self._targets[symbol], float(close[i]))

    def _allocate(
        self,
        allocator: Allocator,
        features: Features,
        book: Book,
        targets: Targets,
        weight: NDArray[np.float64],
    ) -> tuple[Targets, NDArray[np.float64]]:
        """The allocator's book from the strategy's (capped) weights; its clusters go to the
        risk manager's cluster limit."""
        n = weight.size
        reasons = (
            [targets.reason] * n
            if isinstance(targets.reason, str)
            else [targets.reason_of(i) for i in range(n)]
        )
        raw = targets.score if targets.score is not None else weight
        score = np.abs(np.nan_to_num(np.asarray(raw, dtype=np.float64)))
        alloc = allocator.allocate(
            features.symbols, weight, reasons, score, book.weight, features.close
        )
        self.risk.set_clusters(allocator.clusters)
        return Targets(weight=alloc.weight, reason=alloc.reason, score=alloc.score), alloc.weight

    def _regime_at(self, features: Features, i: int) -> tuple[Regime | None, float]:
        code = int(features.regime[i])
        if code == NO_LABEL:
            return None, 0.0
        return REGIME_ORDER[code], float(features.confidence[i])

    def _set_target(
        self,
        symbol: str,
        bar_ms: int,
        quantity: float,
        weight: float,
        reason: str,
        stop: float | None = None,
    ) -> _Target:
        target = _Target(f"{symbol}-{bar_ms}-{reason}", quantity, weight, reason, stop)
        self._targets[symbol] = target
        return target

    async def _signal(
        self, symbol: str, target: _Target, features: Features, i: int, price: float
    ) -> None:
        regime, conf = self._regime_at(features, i)
        await self.bus.publish(
            SignalGenerated(
                ts_ns=self.clock.now_ns(),
                signal_id=target.id,
                symbol=symbol,
                side=Side.BUY if target.quantity > 0 else Side.SELL,
                score=target.weight,
                price=price,
                volatility=float(features.feature("vol")[i]),
                regime=regime,
                confidence=conf,
                reasons=(target.reason,),
                strategy=self.name,
            )
        )

    async def _publish_target(
        self,
        symbol: str,
        target: _Target,
        price: float,
        regime: Regime | None,
        confidence: float,
    ) -> None:
        self.targets_published += 1
        await self.bus.publish(
            TargetPosition(
                ts_ns=self.clock.now_ns(),
                target_id=target.id,
                symbol=symbol,
                quantity=target.quantity,
                weight=target.weight,
                price=price,
                reason=target.reason,
                strategy=self.name,
                regime=regime,
                confidence=confidence,
                stop_price=target.stop_price,
            )
        )

    async def _trade(self, symbol: str, target: _Target, price: float) -> None:
        """One order for the difference between ``target`` and the symbol's exposure."""
        if not (math.isfinite(price) and price > 0):
            return
        exposure = self.risk.exposure(symbol)
        delta = target.quantity - exposure
        if abs(delta) * price < max(self.config.min_order_notional, 1e-12):
            if target.quantity == 0.0 and abs(exposure) * price < self.config.min_order_notional:
                del self._targets[symbol]  # flat (or dust): done
                self._pending.pop(symbol, None)
            return
        quantity = min(abs(delta), self.risk.limits.max_order_notional * (1 - 1e-9) / price)
        target.orders += 1
        client_order_id = f"qt-{target.id}-{target.orders}"
        self._order_reason[client_order_id] = target.reason
        while len(self._order_reason) > _ORDERS_REMEMBERED:
            self._order_reason.popitem(last=False)  # a split parent's children end elsewhere
        self.orders += 1
        outcome = await self.risk.submit_order(
            client_order_id=client_order_id,
            symbol=symbol,
            side=Side.BUY if delta > 0 else Side.SELL,
            quantity=quantity,
            price=price,
            signal_id=target.id,
            reason=target.reason,
            stop_price=target.stop_price,
        )
        # The level holds for the bar that crossed it only: the rest of a volume-capped exit,
        # or a retry after a refusal, is a market order at the next bar.
        target.stop_price = None
        if isinstance(outcome, OrderRejected):
            self.refused += 1
            self._order_reason.pop(client_order_id, None)
            if exposure == 0.0 and target.quantity != 0.0:
                # A refused entry is dropped (it would be refused again at every bar).
                del self._targets[symbol]
                self._pending.pop(symbol, None)

    def position_labels(self, symbol: str) -> tuple[str, str, str]:
        """(strategy, regime, cluster) of the position opening in ``symbol`` now, for the
        portfolio's attribution: the regime of the decision that sent the entry (still pending
        while its fill is being applied, or already held), the risk manager's cluster."""
        pending = self._pending.get(symbol)
        held = self._held.get(symbol)
        code = pending[1] if pending is not None else held.regime if held is not None else NO_LABEL
        regime = REGIME_ORDER[code].value if code != NO_LABEL else UNLABELLED
        return self.name, regime, self.risk.clusters.get(symbol, symbol)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.metrics()}

    def metrics(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "decisions": self.bar,
            "targets_published": self.targets_published,
            "orders": self.orders,
            "refused": self.refused,
            "positions": len(self._held),
            "exits": dict(self.exits_by_reason),
            "protections_blocked": dict(self.protections.blocked),
            "parameter_changes": self.parameter_changes,
            "allocation": self._allocation_metrics(),
        }

    def _allocation_metrics(self) -> dict[str, Any]:
        if self.allocator is None:
            return {"method": "none"}
        stats = self.allocator.stats
        return {
            "method": str(self.allocator.config.method),
            "hedge_symbol": self._hedge or None,
            "decisions": stats.decisions,
            "rebalances": dict(stats.rebalances),
            "drift_below_cost": stats.drift_below_cost,
            "fallbacks": stats.fallbacks,
            "last": dict(stats.last),
        }
