"""Between the strategy and the router: pre-trade checks, in-flight exposure, trading state.

Every order (the strategy engine's, for the difference between a target and the position, or
an operator's from the admin API) goes through ``submit_order``: the checks run in order and
the first that fails refuses it (``OrderRejected`` with that reason), else ``OrderIntent``.

Exposure of a symbol = the portfolio's position + fills already published but not yet applied
by the portfolio (it runs in its own mailbox) + the unfilled quantity of intents in flight. The
in-flight part is kept per client order id: added on ``OrderIntent``, reduced by each
``OrderFilled``, dropped on ``OrderCancelled`` / ``OrderRejected``.

Book-wide limits price every other symbol's exposure at its mark: the last close seen in
``BarsUpdated``, else the last order price, else the position's average price. Two kill
switches (equity drawdown from its peak, share of venue errors among recent order outcomes)
move the state to HALTED; only an explicit ``set_state`` (an admin action) re-arms them.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import (
    AnomalyCleared,
    AnomalyDetected,
    BarsUpdated,
    Event,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderType,
    RiskStateChanged,
    Side,
    TradingState,
)
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.history import PriceHistory
from quantumtrade.risk.var import (
    DEFAULT_CONFIDENCES,
    ScenarioBook,
    VarMethod,
    VarReport,
    portfolio_var,
    tail_risks,
)

log = structlog.get_logger("quantumtrade.risk")

_MINUTE_NS = 60_000_000_000
# Client order ids remembered to refuse a replayed order (duplicates arrive close together).
_RECENT_ORDERS = 10_000
DUPLICATE_ORDER = "duplicate_order"
ANOMALY_PAUSE = "anomaly_pause"
VAR_LIMIT = "var_limit"
ES_LIMIT = "es_limit"
VAR_WARMUP = "var_warmup"
LIMIT_CONFIDENCE = 0.99
"""The confidence of ``max_var_99`` and ``max_es_99``."""


class RiskLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_order_notional: Annotated[float, msgspec.Meta(gt=0)] = 10_000.0
    max_position_notional: Annotated[float, msgspec.Meta(gt=0)] = 25_000.0
    """Cap on |position + unfilled in-flight quantity| * price, per symbol."""
    max_orders_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 120
    max_gross_exposure: Annotated[float, msgspec.Meta(gt=0)] = 1_000_000.0
    """Cap on the sum over symbols of |position + unfilled in-flight quantity| * mark."""
    max_cluster_exposure: Annotated[float, msgspec.Meta(gt=0)] = 250_000.0
    """Cap on |net signed notional| of one correlation cluster: net, because a long and a short
    in one cluster hedge each other (the gross cap covers the rest)."""
    clusters: dict[str, str] = {}
    """Symbol -> correlation cluster name; a symbol not listed is a cluster of its own."""
    price_band_bps: Annotated[float, msgspec.Meta(gt=0)] = 1_000.0
    """Refuse an order priced further than this from the symbol's last close."""
    max_drawdown: Annotated[float, msgspec.Meta(gt=0)] = 1_000_000.0
    """Kill switch: HALTED when net PnL (marked at last closes) falls this far below its peak."""
    max_error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    """Kill switch: HALTED when more than this share of the last ``error_window`` order outcomes
    were venue or router rejections (judged only once the window is full)."""
    error_window: Annotated[int, msgspec.Meta(ge=1)] = 50
    var_window: Annotated[int, msgspec.Meta(ge=2)] = 500
    """Bar-to-bar returns kept per symbol for the VaR in ``metrics()`` and the VaR limits."""
    max_var_99: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Refuse an order that lifts the book's 1-day 99 % VaR above this share of equity
    (``var_limit``); None: off."""
    max_es_99: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """The same for the 1-day 99 % expected shortfall (``es_limit``); None: off."""
    var_method: VarMethod = VarMethod.HISTORICAL
    """How the limits (and ``metrics()``'s 1-day figures) are judged: ``historical`` or
    ``parametric`` (normal, zero mean)."""
    var_min_observations: Annotated[int, msgspec.Meta(ge=2)] = 100
    """With a limit on, an order judged on fewer aligned returns than this is refused
    (``var_warmup``) when it grows |exposure|: unknown risk is not zero risk."""

    def __post_init__(self) -> None:
        if self.var_min_observations > self.var_window:
            raise ValueError(
                f"var_min_observations ({self.var_min_observations}) exceeds var_window "
                f"({self.var_window}): the VaR limits would refuse every entry"
            )

    @property
    def var_limited(self) -> bool:
        return self.max_var_99 is not None or self.max_es_99 is not None


class ProposedOrder(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: Side
    quantity: float
    price: float
    limit_price: float | None = None
    """A LIMIT order's price (None: MARKET); held to the same price band as ``price``."""

    @property
    def signed_quantity(self) -> float:
        # Read by most checks: one comparison instead of a second property (Side.sign).
        return self.quantity if self.side is Side.BUY else -self.quantity

    @property
    def notional(self) -> float:
        return self.quantity * self.price


class RiskView(msgspec.Struct, frozen=True, kw_only=True):
    """What the checks see: the limits, the trading state and the symbol's exposure."""

    limits: RiskLimits
    state: TradingState
    exposure: float
    """Signed position + unapplied fills + unfilled in-flight quantity of the symbol."""
    orders_last_minute: int
    other_gross_exposure: float = 0.0
    """Sum of |exposure| * mark over every other symbol."""
    other_cluster_exposure: float = 0.0
    """Signed exposure * mark of the other symbols in the order's cluster."""
    last_price: float | None = None
    """The symbol's last close seen by the risk manager (None before its first bar)."""
    anomaly_paused: bool = False
    """The symbol has an active anomaly and ``[anomaly] pause_entries`` is on."""
    scenarios: ScenarioBook | None = None
    """The book's scenario P&L (positions, unapplied fills, in-flight, at marks); None when
    no VaR limit is on."""
    account_equity: float = 0.0
    """Capital + net PnL: what ``max_var_99`` and ``max_es_99`` are shares of."""


Check = Callable[[ProposedOrder, RiskView], str | None]


def _increases_exposure(order: ProposedOrder, view: RiskView) -> bool:
    return abs(view.exposure + order.signed_quantity) > abs(view.exposure)


def check_trading_state(order: ProposedOrder, view: RiskView) -> str | None:
    if view.state is TradingState.HALTED:
        return "halted"
    if view.state is TradingState.REDUCING:
        after = view.exposure + order.signed_quantity
        crosses = after != 0.0 and (after > 0) != (view.exposure > 0)
        if view.exposure == 0.0 or _increases_exposure(order, view) or crosses:
            return "reducing_only"
    return None


def check_anomaly_pause(order: ProposedOrder, view: RiskView) -> str | None:
    # Entries wait until the anomaly clears; an order that does not grow |exposure| (an exit,
    # a reduction, a flip to a position no larger) always passes.
    if view.anomaly_paused and _increases_exposure(order, view):
        return ANOMALY_PAUSE
    return None


def check_order_notional(order: ProposedOrder, view: RiskView) -> str | None:
    return "max_order_notional" if order.notional > view.limits.max_order_notional else None


def check_position_notional(order: ProposedOrder, view: RiskView) -> str | None:
    after = abs(view.exposure + order.signed_quantity) * order.price
    # An order that shrinks exposure is always allowed, even above the limit.
    if after > view.limits.max_position_notional and _increases_exposure(order, view):
        return "max_position_notional"
    return None


def check_price_band(order: ProposedOrder, view: RiskView) -> str | None:
    last = view.last_price
    band = view.limits.price_band_bps / 1e4
    if last is not None and abs(order.price - last) > last * band:
        return "price_band"
    # A LIMIT price is banded too: around the last close, or the order's own reference price
    # before the symbol's first bar (a limit of 1e308 or 1e-300 is never a real price).
    anchor = last if last is not None else order.price
    if order.limit_price is not None and abs(order.limit_price - anchor) > anchor * band:
        return "price_band"
    return None


def check_cluster_exposure(order: ProposedOrder, view: RiskView) -> str | None:
    before = view.other_cluster_exposure + view.exposure * order.price
    after = before + order.signed_quantity * order.price
    if abs(after) > view.limits.max_cluster_exposure and abs(after) > abs(before):
        return "max_cluster_exposure"
    return None


def check_gross_exposure(order: ProposedOrder, view: RiskView) -> str | None:
    after = view.other_gross_exposure + abs(view.exposure + order.signed_quantity) * order.price
    if after > view.limits.max_gross_exposure and _increases_exposure(order, view):
        return "max_gross_exposure"
    return None


def check_order_rate(order: ProposedOrder, view: RiskView) -> str | None:
    if view.orders_last_minute >= view.limits.max_orders_per_minute:
        return "max_orders_per_minute"
    return None


def check_var_limit(order: ProposedOrder, view: RiskView) -> str | None:
    """The book's 1-day 99 % VaR and ES after the order against their shares of equity; an
    order that does not raise the figure passes even above the limit."""
    book = view.scenarios
    if book is None:
        return None
    limits = view.limits
    change = book.change(
        order.symbol, order.signed_quantity * order.price, LIMIT_CONFIDENCE, limits.var_method
    )
    if change.observations < limits.var_min_observations:
        return VAR_WARMUP if _increases_exposure(order, view) else None
    equity = view.account_equity
    if limits.max_var_99 is not None:
        var = change.after.var
        if var > limits.max_var_99 * equity and var > change.before.var:
            return VAR_LIMIT
    if limits.max_es_99 is not None:
        es = change.after.expected_shortfall
        if es > limits.max_es_99 * equity and es > change.before.expected_shortfall:
            return ES_LIMIT
    return None


DEFAULT_CHECKS: tuple[Check, ...] = (
    check_trading_state,
    check_anomaly_pause,
    check_price_band,
    check_order_notional,
    check_position_notional,
    check_cluster_exposure,
    check_gross_exposure,
    check_order_rate,
    check_var_limit,
)


class _InFlight:
    __slots__ = ("quantity", "remaining", "symbol")

    def __init__(self, symbol: str, remaining: float) -> None:
        self.symbol = symbol
        self.quantity = abs(remaining)
        self.remaining = remaining  # signed


class RiskManager:
    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        limits: RiskLimits | None = None,
        portfolio: Portfolio,
        checks: Sequence[Check] = DEFAULT_CHECKS,
        pause_on_anomaly: bool = False,
        capital: float = 100_000.0,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.limits = limits or RiskLimits()
        self.portfolio = portfolio
        self.checks = tuple(checks)
        self.state = TradingState.ACTIVE
        self.state_reason = ""
        self._in_flight: dict[str, _InFlight] = {}
        # Fills seen here but maybe not yet applied by the portfolio: (seq, symbol, signed qty).
        self._unapplied: deque[tuple[int, str, float]] = deque()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._order_times: deque[int] = deque()
        self.intents = 0
        self.checks_passed = 0
        self.rejects: dict[str, int] = {}
        self._signal_price: dict[str, float] = {}
        # Per symbol: the last close, and the newest var_window close-to-close returns.
        self._history = PriceHistory(self.limits.var_window)
        # Outcomes of our own orders, newest last: True for a venue or router rejection.
        self._outcomes: deque[bool] = deque(maxlen=self.limits.error_window)
        self._errors_in_window = 0  # True entries of _outcomes, kept as they come and go
        self.equity_peak = 0.0
        self._judged_fill_seq = -1
        # A kill switch that tripped inline, waiting for a coroutine to publish the HALT.
        self._trip_reason: str | None = None
        self._trip_tasks: set[asyncio.Task[None]] = set()
        self.kill_switch_trips: dict[str, int] = {}
        self.pause_on_anomaly = pause_on_anomaly
        """Refuse entries (``anomaly_pause``) in a symbol with an active anomaly."""
        self._anomalies: dict[str, set[str]] = {}  # symbol -> its active anomaly kinds
        self.capital = capital
        """The account's starting equity (``[strategy] capital``): the VaR limits are shares
        of capital + net PnL."""
        # The book's scenario P&L, built on first use after any change other than an order
        # this manager let through (which it adds incrementally): bars, fills, cancels, rejects.
        self._scenarios: ScenarioBook | None = None
        self.clusters: dict[str, str] = dict(self.limits.clusters)
        """Symbol -> cluster for ``max_cluster_exposure``: the hand-set ``clusters`` over the
        ones the allocator computed from rolling correlations (``set_clusters``)."""

    def set_clusters(self, computed: Mapping[str, str]) -> None:
        """Clusters from rolling correlations; a hand-set symbol keeps its own."""
        self.clusters = {**computed, **self.limits.clusters}

    def order_handlers(self) -> list[tuple[type[Event], Callable[[Any], object]]]:
        """Every (event type, handler) pair the risk manager needs on the bus.

        All run inline: they keep in-flight exposure, order outcomes and last closes current
        and judge the kill switches on every event (so a dip between two awaits is not
        missed). Publishing the HALT needs a coroutine: a tripped switch starts a task that
        runs ``publish_trip`` (and ``submit_order`` runs it first, so no order slips in between).
        A task per trip, not a mailbox that wakes on every fill, cancel, reject and bar.
        """
        return [
            (OrderFilled, self.on_order_filled),
            (OrderCancelled, self.on_order_cancelled),
            (OrderRejected, self.on_order_rejected),
            (BarsUpdated, self.on_bars),
            (AnomalyDetected, self.on_anomaly_detected),
            (AnomalyCleared, self.on_anomaly_cleared),
        ]

    # --- exposure ---------------------------------------------------------------------

    def _drop_applied(self) -> None:
        applied = self.portfolio.last_fill_seq
        while self._unapplied and self._unapplied[0][0] <= applied:
            self._unapplied.popleft()

    def exposure(self, symbol: str) -> float:
        """Signed position + fills not yet in the portfolio + unfilled in-flight quantity."""
        self._drop_applied()
        qty = self.portfolio.position(symbol).quantity
        # Plain loops: both are usually empty or hold one entry, where a generator costs more.
        for _, s, q in self._unapplied:
            if s == symbol:
                qty += q
        for f in self._in_flight.values():
            if f.symbol == symbol:
                qty += f.remaining
        return qty

    def exposures(self) -> dict[str, float]:
        """Signed exposure of every symbol with a position, an unapplied fill or an open order."""
        self._drop_applied()
        out = {s: p.quantity for s, p in self.portfolio.positions_view().items() if p.quantity}
        for _, symbol, qty in self._unapplied:
            out[symbol] = out.get(symbol, 0.0) + qty
        for f in self._in_flight.values():
            out[f.symbol] = out.get(f.symbol, 0.0) + f.remaining
        return out

    def mark(self, symbol: str) -> float:
        """Last close, else last order price, else the position's average price (0 if none)."""
        price = self._history.last_close(symbol) or self._signal_price.get(symbol)
        return price if price is not None else self.portfolio.position(symbol).avg_price

    def _book_exposure(self, symbol: str) -> tuple[float, float]:
        """(gross notional of every other symbol, net notional of the others in its cluster)."""
        clusters = self.clusters
        cluster = clusters.get(symbol, symbol)
        gross = net = 0.0
        for other, qty in self.exposures().items():
            if other == symbol or not qty:
                continue
            notional = qty * self.mark(other)
            gross += abs(notional)
            if clusters.get(other, other) == cluster:
                net += notional
        return gross, net

    def in_flight(self) -> dict[str, float]:
        """Unfilled signed quantity of open intents, by symbol."""
        out: dict[str, float] = {}
        for f in self._in_flight.values():
            out[f.symbol] = out.get(f.symbol, 0.0) + f.remaining
        return out

    def on_order_filled(self, fill: OrderFilled) -> None:
        self._scenarios = None
        signed = fill.quantity * fill.side.sign
        self._unapplied.append((fill.seq, fill.symbol, signed))
        order_id = fill.parent_id or fill.client_order_id
        pending = self._in_flight.get(order_id)
        if pending is None:
            return
        if fill.parent_id:
            # A split order's child: the parent is done when its children's fills add up.
            pending.remaining -= signed
            if abs(pending.remaining) > pending.quantity * 1e-9:
                return
        if fill.parent_id or fill.leaves_quantity <= 0.0:
            del self._in_flight[order_id]
            self._record_outcome(False)
        else:
            pending.remaining = fill.leaves_quantity * fill.side.sign

    def on_order_cancelled(self, event: OrderCancelled) -> None:
        # An unfilled remainder cancelled by the venue is an answer, not an error. A child's
        # end is not its parent's: the router publishes the parent's own end.
        if event.parent_id:
            return
        if self._in_flight.pop(event.client_order_id, None) is not None:
            self._scenarios = None
            self._record_outcome(False)

    def on_order_rejected(self, event: OrderRejected) -> None:
        # Our own duplicate refusal names an order that is (maybe) still in flight: keep it.
        if (event.reason == DUPLICATE_ORDER and event.venue is None) or event.parent_id:
            return
        # Only an order we let through can be in flight, so this is the router or a venue.
        if self._in_flight.pop(event.client_order_id, None) is not None:
            self._scenarios = None
            self._record_outcome(True)

    def _record_outcome(self, error: bool) -> None:
        """Count an order's outcome in the error window and judge the kill switches."""
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen:
            self._errors_in_window -= outcomes[0]  # the oldest is about to leave the window
        outcomes.append(error)
        self._errors_in_window += error
        self._judge_kill_switches()

    # --- market -----------------------------------------------------------------------

    def on_bars(self, event: BarsUpdated) -> None:
        """Remember each symbol's last close, extend its bounded return history, mark the
        portfolio at the new closes and judge the kill switches once for the batch (its
        closes are one moment of the market, not one per symbol)."""
        self._scenarios = None  # new returns and marks
        history = self._history
        rows = history.rows(event.symbols)
        block = event.bars
        moved = True  # an open position was marked (or may have been)
        if event.one_each:
            # A heartbeat: one bar per symbol, a few array operations for all of them.
            close = block.rows()[:, 3]
            taken = history.update_last(rows, block.ts(), close)
            if taken.all():
                moved = self.portfolio.set_marks(event.symbols, close)
            else:
                picked = np.flatnonzero(taken)
                moved = self.portfolio.set_marks(
                    tuple(event.symbols[j] for j in picked.tolist()), close[picked]
                )
        else:
            ts, close = block.ts(), block.rows()[:, 3]
            bounds = event.offsets_array().tolist()
            for j, symbol in enumerate(event.symbols):
                a, b = bounds[j], bounds[j + 1]
                if history.update_row(int(rows[j]), ts[a:b], close[a:b]):
                    last = history.last_close(symbol)
                    assert last is not None
                    self.portfolio.set_mark(symbol, last)
        # Equity moves with a held symbol's close and with fills the portfolio applied since
        # the last verdict; the error rate with order outcomes, which judge it themselves.
        # Unchanged inputs, unchanged verdict: skip it (most batches move no held symbol).
        if moved or self.portfolio.last_fill_seq != self._judged_fill_seq:
            self._judge_kill_switches()

    def last_close(self, symbol: str) -> float | None:
        return self._history.last_close(symbol)

    def returns(self, symbol: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """The symbol's newest ``var_window`` (bar open times, close-to-close returns)."""
        return self._history.returns(symbol)

    # --- anomalies --------------------------------------------------------------------

    def on_anomaly_detected(self, event: AnomalyDetected) -> None:
        self._anomalies.setdefault(event.symbol, set()).add(event.kind)

    def on_anomaly_cleared(self, event: AnomalyCleared) -> None:
        kinds = self._anomalies.get(event.symbol)
        if kinds is not None:
            kinds.discard(event.kind)
            if not kinds:
                del self._anomalies[event.symbol]

    def anomaly_paused(self, symbol: str) -> bool:
        """New entries in ``symbol`` are refused now (``anomaly_pause``)."""
        return self.pause_on_anomaly and symbol in self._anomalies

    def equity(self) -> float:
        """Net PnL: realised - fees + unrealised at the last closes (the portfolio's marks,
        which ``on_bars`` sets; a position without a close yet counts no unrealised)."""
        return self.portfolio.net_pnl()

    def drawdown(self) -> float:
        """How far equity is below its peak (the peak restarts when the switches re-arm)."""
        equity = self.equity()
        return max(self.equity_peak, equity) - equity

    def error_rate(self) -> float:
        """Share of venue or router rejections among the last ``error_window`` outcomes."""
        return self._errors_in_window / len(self._outcomes) if self._outcomes else 0.0

    def value_at_risk(self, confidences: Sequence[float] = DEFAULT_CONFIDENCES) -> VarReport:
        """One-bar VaR of the held positions at their marks, on bar times every one of them has."""
        held = {
            s: p.quantity * self.mark(s)
            for s, p in self.portfolio.positions().items()
            if p.quantity
        }
        histories = [self._history.returns(s) for s in held]
        common = set.intersection(*(set(ts.tolist()) for ts, _ in histories)) if held else set()
        returns = {
            s: r[np.fromiter((t in common for t in ts.tolist()), dtype=np.bool_, count=ts.size)]
            for s, (ts, r) in zip(held, histories, strict=True)
        }
        return portfolio_var(held, returns, confidences)

    def scenario_book(self) -> ScenarioBook:
        """The book (positions, unapplied fills, in-flight orders) at marks over its return
        history: built once per change of the market or of the orders, not per order."""
        book = self._scenarios
        if book is None:
            values = {s: q * self.mark(s) for s, q in self.exposures().items() if q}
            book = self._scenarios = self._book_of(values)
        return book

    def _book_of(self, values: Mapping[str, float]) -> ScenarioBook:
        held = {s: v for s, v in values.items() if v != 0.0}
        common = self._history.book_pnl(tuple(held), np.fromiter(held.values(), np.float64))
        return ScenarioBook(held, self._history.returns, common=common)

    def one_bar_var(
        self, values: Mapping[str, float], confidences: Sequence[float] = DEFAULT_CONFIDENCES
    ) -> tuple[float, ...]:
        """One-bar VaR (``var_method``) of a book of signed position values, on the return
        history as it stands: the forecast a VaR backtest scores. NaN on fewer than
        ``var_min_observations`` aligned returns; 0.0 for an empty book."""
        # Per bar in a backtest: the P&L vector straight from the one-pass kernel when it can.
        symbols = tuple(s for s, v in values.items() if v != 0.0)
        if not symbols:
            return tuple(0.0 for _ in confidences)
        w = np.fromiter((values[s] for s in symbols), np.float64, len(symbols))
        common = self._history.book_pnl(symbols, w)
        if common is not None:
            pnl = common[1]
        else:
            pnl = ScenarioBook(dict(zip(symbols, w.tolist(), strict=True)), self.returns).pnl
        if pnl.size < self.limits.var_min_observations:
            return tuple(math.nan for _ in confidences)
        return tuple(r.var for r in tail_risks(pnl, confidences, self.limits.var_method))

    def account_equity(self) -> float:
        return self.capital + self.equity()

    def tail_risk_1d(self) -> dict[str, dict[str, dict[str, float]]]:
        """The book's 1-day VaR and ES in quote currency, by method and confidence (for the
        gauges; a figure without enough history is left out: unknown is not zero)."""
        book = self.scenario_book()
        out: dict[str, dict[str, dict[str, float]]] = {"var": {}, "expected_shortfall": {}}
        if book.axis is not None and book.observations < self.limits.var_min_observations:
            return out
        for method in VarMethod:
            for c in DEFAULT_CONFIDENCES:
                risk = book.risk(c, method)
                for name, value in (
                    ("var", risk.var),
                    ("expected_shortfall", risk.expected_shortfall),
                ):
                    if math.isfinite(value):
                        out[name].setdefault(str(method), {})[f"{c:g}"] = value
        return out

    # --- kill switches ----------------------------------------------------------------

    def _tripped(self) -> str | None:
        equity = self.equity()
        self.equity_peak = max(self.equity_peak, equity)
        if self.equity_peak - equity > self.limits.max_drawdown:
            return "drawdown"
        outcomes = self._outcomes
        # Judged on a full window only: one early rejection is not a 100% error rate.
        if len(outcomes) == outcomes.maxlen and self.error_rate() > self.limits.max_error_rate:
            return "error_rate"
        return None

    def _judge_kill_switches(self) -> None:
        self._judged_fill_seq = self.portfolio.last_fill_seq
        if self.state is not TradingState.HALTED and self._trip_reason is None:
            self._trip_reason = self._tripped()
            if self._trip_reason is not None:
                self._schedule_trip()

    def _schedule_trip(self) -> None:
        """Publish the HALT from a task (without a running loop, the next ``submit_order`` or
        ``publish_trip`` call publishes it)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.publish_trip(), name="risk:publish-trip")
        self._trip_tasks.add(task)
        task.add_done_callback(self._trip_published)

    def _trip_published(self, task: asyncio.Task[None]) -> None:
        self._trip_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The state is HALTED already; only its event did not reach the bus.
            log.error("halt_publish_failed", error=repr(task.exception()))

    async def publish_trip(self, event: Event | None = None) -> None:
        """Move to HALTED (and publish it) if a kill switch has tripped since the last call."""
        reason, self._trip_reason = self._trip_reason, None
        if reason is None or self.state is TradingState.HALTED:
            return
        self.kill_switch_trips[reason] = self.kill_switch_trips.get(reason, 0) + 1
        await self._change_state(TradingState.HALTED, reason)

    # --- signals ----------------------------------------------------------------------

    def _orders_last_minute(self, now_ns: int) -> int:
        times = self._order_times
        while times and times[0] <= now_ns - _MINUTE_NS:
            times.popleft()
        return len(times)

    async def submit_order(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: Side,
        quantity: float,
        price: float,
        order_type: OrderType = OrderType.MARKET,
        limit_price: float | None = None,
        signal_id: str | None = None,
        reason: str = "",
        stop_price: float | None = None,
    ) -> OrderIntent | OrderRejected:
        """An order (the strategy engine's or an operator's): every check, no sizing.

        Publishes and returns the ``OrderIntent``, or the ``OrderRejected`` with its reason.
        """
        await self.publish_trip()
        outcome: list[OrderIntent | OrderRejected] = []

        async def refuse(qty: float, why: str) -> None:
            self.rejects[why] = self.rejects.get(why, 0) + 1
            log.info("order_refused", reason=why, symbol=symbol, client_order_id=client_order_id)
            rejected = OrderRejected(
                ts_ns=self.clock.now_ns(),
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                quantity=qty,
                reason=why,
            )
            await self.bus.publish(rejected)
            outcome.append(rejected)

        if client_order_id in self._recent:
            await refuse(quantity, DUPLICATE_ORDER)
        elif not (_normal_positive(price) and _normal_positive(quantity)) or not (
            limit_price is None or _normal_positive(limit_price)
        ):
            await refuse(quantity, "invalid_order")
        else:
            intent = await self._decide(
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                quantity=quantity,
                price=price,
                order_type=order_type,
                limit_price=limit_price,
                refuse=refuse,
                signal_id=signal_id,
                reason=reason,
                stop_price=stop_price,
            )
            if intent is not None:
                outcome.append(intent)
        return outcome[0]

    async def _decide(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: Side,
        quantity: float,
        price: float,
        refuse: Callable[[float, str], Awaitable[None]],
        signal_id: str | None = None,
        order_type: OrderType = OrderType.MARKET,
        limit_price: float | None = None,
        reason: str = "",
        stop_price: float | None = None,
    ) -> OrderIntent | None:
        """Run every check; publish the intent (returned) or refuse through ``refuse``."""
        now = self.clock.now_ns()
        exposure = self.exposure(symbol)
        other_gross, other_cluster = self._book_exposure(symbol)
        limited = self.limits.var_limited
        order = ProposedOrder(
            symbol=symbol, side=side, quantity=quantity, price=price, limit_price=limit_price
        )
        view = RiskView(
            limits=self.limits,
            state=self.state,
            exposure=exposure,
            orders_last_minute=self._orders_last_minute(now),
            other_gross_exposure=other_gross,
            other_cluster_exposure=other_cluster,
            last_price=self._history.last_close(symbol),
            anomaly_paused=self.anomaly_paused(symbol),
            # Built only with a VaR limit on: off, the limits cost no time per order.
            scenarios=self.scenario_book() if limited else None,
            account_equity=self.account_equity() if limited else 0.0,
        )
        for check in self.checks:
            failed = check(order, view)
            if failed is not None:
                await refuse(order.quantity, failed)
                return None
        self.checks_passed += 1
        self.intents += 1
        self._remember(client_order_id)
        self._order_times.append(now)
        self._signal_price[symbol] = price
        self._in_flight[client_order_id] = _InFlight(symbol, order.signed_quantity)
        if self._scenarios is not None:
            self._scenarios.add(symbol, order.signed_quantity * price)
        intent = OrderIntent(
            ts_ns=now,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=order.quantity,
            order_type=order_type,
            limit_price=limit_price,
            reference_price=price,
            signal_id=signal_id,
            reason=reason,
            stop_price=stop_price,
        )
        await self.bus.publish(intent)
        return intent

    def _remember(self, client_order_id: str) -> None:
        self._recent[client_order_id] = None
        while len(self._recent) > _RECENT_ORDERS:
            self._recent.popitem(last=False)

    # --- state ------------------------------------------------------------------------

    async def set_state(self, state: TradingState, reason: str) -> bool:
        """Move to ``state`` and publish ``RiskStateChanged``; False when already there.

        Leaving HALTED re-arms the kill switches: the drawdown is measured again from the
        current equity and the error window starts empty (else they would trip at once).
        """
        if state is self.state:
            return False
        if self.state is TradingState.HALTED:
            self.equity_peak = self.equity()
            self._outcomes.clear()
            self._errors_in_window = 0
            self._trip_reason = None
        return await self._change_state(state, reason)

    async def _change_state(self, state: TradingState, reason: str) -> bool:
        if state is self.state:
            return False
        previous, self.state, self.state_reason = self.state, state, reason
        log.warning("risk_state_changed", state=state, previous=previous, reason=reason)
        await self.bus.publish(
            RiskStateChanged(
                ts_ns=self.clock.now_ns(), state=state, previous=previous, reason=reason
            )
        )
        return True

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.state is TradingState.ACTIVE else "degraded",
            "state": str(self.state),
            "reason": self.state_reason,
        }

    def metrics(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "state_reason": self.state_reason,
            "intents": self.intents,
            "checks_passed": self.checks_passed,
            "rejects": dict(self.rejects),
            "in_flight": self.in_flight(),
            "orders_last_minute": self._orders_last_minute(self.clock.now_ns()),
            "limits": msgspec.structs.asdict(self.limits),
            "equity": self.equity(),
            "equity_peak": max(self.equity_peak, self.equity()),
            "drawdown": self.drawdown(),
            "error_rate": self.error_rate(),
            "kill_switch_trips": dict(self.kill_switch_trips),
            "anomaly_pause": {
                "enabled": self.pause_on_anomaly,
                "symbols": sorted(self._anomalies) if self.pause_on_anomaly else [],
            },
            "var": _var_metrics(self.value_at_risk()),
            "var_1d": self.tail_risk_1d(),
        }


def _normal_positive(x: float) -> bool:
    """A finite positive float that is not subnormal (1e-320 is no quantity or price)."""
    return math.isfinite(x) and x >= sys.float_info.min


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _var_metrics(report: VarReport) -> dict[str, Any]:
    """The report as JSON-safe values (NaN, i.e. no history yet, becomes None)."""
    return {
        "observations": report.observations,
        "gross_exposure": report.gross_exposure,
        **{
            name: {f"{lv.confidence:g}": _finite_or_none(getattr(lv, name)) for lv in report.levels}
            for name in ("historical", "expected_shortfall", "parametric")
        },
    }


def subscribe_decision_path(bus: EventBus, *, risk: RiskManager, portfolio: Portfolio) -> None:
    """Fills into the portfolio, order outcomes back into the risk manager: the wiring the
    daemon and replay must share for replay parity."""
    bus.subscribe(OrderFilled, portfolio.on_fill)
    for event_type, handler in risk.order_handlers():
        bus.subscribe(event_type, handler)
