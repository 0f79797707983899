"""Smart order routing: rank venues by expected all-in cost, split, submit, publish outcomes.

Eligible venues: listed, breaker not open, book fetched, the order at least one of the
venue's lot steps, and the venue's free balance enough for at least one lot step of it (BUY:
the quote asset for the book-walk cost plus fee; SELL: the base quantity; a venue that reports
no balances is not checked). The others are in the decision's ``excluded`` with the reason. A
venue whose balance pays for only part of the order is quoted for that part (its book cut
where the balance runs out, ``balance_limited``, with the shortfall in the decision's
``limited``): it ranks with the venues that cannot fill the whole order and takes part only in
a split, which takes from it at most what it can pay; it is never sent a whole order alone (an
order no venue, nor a split, can pay for is rejected with every venue's reason).

Cost of a venue, in bps of one reference mid (the median of the eligible venues' mids, so
books at different prices compare in price): taker fee + slippage of walking its book for the
whole quantity + a latency penalty (EWMA of measured submit latency *
``latency_penalty_bps_per_ms``) + its record of realised minus expected slippage (EWMA) + a
reliability penalty (``reliability_penalty_bps`` * (reject/error rate EWMA + fill shortfall
EWMA)). Venues that can fill the whole quantity rank before those that cannot.

Splitting: every level of every eligible venue's book (the best ``max_children`` venues) is
priced per unit with that venue's per-unit costs (fee, latency penalty, record corrections)
and levels are taken cheapest first until the quantity is done: greedy marginal-cost
allocation, which is optimal because all these costs grow with quantity. Each book is cut
where its sizes reach the order's quantity (deeper levels are never taken), and when the best
venue's dearest level needed costs no more than every other venue's best level, the order
goes whole to it without pricing any level (the common small order). The split is used when
it saves at least ``min_split_saving_bps`` against the best single venue, or when it fills more
than any one venue can. Each child is an order of its own with a deterministic client order id
(``<parent>-<n>``, so a redelivered intent maps to the same ids) and events that carry
``parent_id``; the parent's state is derived from them: filled when the children's fills add up
to its quantity, else cancelled (or rejected) once every child has ended. An order that goes to
one venue is its own only child (no ``parent_id``). Every order is sent with its quantity
rounded down to the venue's lot step (a child share below one step is left out), and is
filled when the venue filled all that was sent.

A submit whose outcome the venue cannot tell (``OutcomeUnknown``) leaves its order in flight:
``OrderSubmitted`` without fills; reconciliation resolves it by querying the venue. Resting
orders are not managed: an order a venue leaves open (NEW / PARTIALLY_FILLED) is cancelled at
once and its remainder reported cancelled.

Latency is measured on the injected clock, so a replay makes the same routing decisions.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
import structlog

from quantumtrade.breaker import BreakerConfig, CircuitBreaker
from quantumtrade.bus import EventBus
from quantumtrade.clock import Clock
from quantumtrade.events import (
    BreakerState,
    CircuitBreakerChanged,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderType,
    Side,
)
from quantumtrade.execution.venue import (
    FILL_TOLERANCE,
    Execution,
    OrderStatus,
    OutcomeUnknown,
    Venue,
    is_complete,
    take_levels,
    walk_book,
)

log = structlog.get_logger("quantumtrade.router")

# Intent ids remembered so a redelivered intent is never sent (and its fills published) twice.
_RECENT_INTENTS = 10_000
# Consecutive venue errors after which the router reports itself degraded.
_DEGRADED_AFTER_ERRORS = 3
# Longest client order id every supported exchange accepts (Binance: 36).
MAX_CLIENT_ID = 36
# The smallest quantity a venue is quoted for: below the smallest normal float a quantity is
# a rounding crumb (of a balance, a lot step), never an order (the risk manager refuses such
# an intent too).
MIN_QUANTITY = sys.float_info.min

Levels = Sequence[tuple[float, float]]


class RouterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    latency_penalty_bps_per_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.01
    book_depth: Annotated[int, msgspec.Meta(ge=1)] = 20
    """Book levels a side fetched to estimate slippage and to split orders."""
    ewma_alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    """Weight of the newest sample in the latency, slippage, reject and fill averages."""
    latency_samples: Annotated[int, msgspec.Meta(ge=1)] = 1_000
    """Newest submit latencies kept per venue for p50 / p99."""
    reliability_penalty_bps: Annotated[float, msgspec.Meta(ge=0)] = 20.0
    """Cost added per unit of (reject-or-error rate EWMA + fill shortfall EWMA) of a venue."""
    max_children: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3
    """Most venues one order is split across (1: never split)."""
    min_split_saving_bps: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    """A split must save at least this much against the best single venue (each child is one
    more request and one more partial outcome to handle)."""


class VenueQuote(msgspec.Struct, frozen=True, kw_only=True):
    """One venue's expected cost for the whole order, in bps of the reference mid."""

    venue: str
    mid: float
    """The reference every venue of the decision is priced against: the median of their mids
    (so a venue's slippage includes how far its book sits from the others')."""
    expected_price: float
    fillable_quantity: float
    fee_bps: float
    slippage_bps: float
    latency_penalty_bps: float
    slippage_correction_bps: float
    reliability_penalty_bps: float = 0.0
    total_bps: float
    complete: bool
    """True when the book holds the whole quantity."""
    quantity: float = 0.0
    """What this venue would be sent for the whole order: its quantity (or, when
    ``balance_limited``, what its balance pays for) rounded down to the venue's lot step."""
    balance_limited: bool = False
    """True when the venue's free balance pays for less than the whole order: the quote,
    ``fillable_quantity`` and ``quantity`` cover only what it can pay for."""

    @property
    def unit_cost_bps(self) -> float:
        """The costs that scale with quantity but not with book depth (all but slippage)."""
        return self.total_bps - self.slippage_bps


class ChildOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One venue's share of an order."""

    venue: str
    client_order_id: str
    quantity: float
    expected_price: float


class RoutingDecision(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    ranking: tuple[VenueQuote, ...]
    """Eligible venues, cheapest first."""
    excluded: dict[str, str]
    """Ineligible venue → why (not_listed, breaker_open, book_error, no_book, below_lot_size,
    ``insufficient_balance: needs <amount> <asset>, has <free>``)."""
    children: tuple[ChildOrder, ...] = ()
    """What will be sent where: one child (the order itself) or a split."""
    split_saving_bps: float = 0.0
    """Expected saving of the split against the best single venue (0 when not split)."""
    limited: dict[str, str] = {}
    """Eligible venues whose balance pays for only part of the order → the shortfall
    (``insufficient_balance: …``); they are quoted, and split into, for the part they pay."""

    @property
    def best(self) -> VenueQuote | None:
        return self.ranking[0] if self.ranking else None


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


def child_order_id(parent: str, n: int) -> str:
    """The n-th child's client order id: ``parent-n``, or a digest of the parent if too long."""
    suffix = f"-{n}"
    if len(parent) + len(suffix) <= MAX_CLIENT_ID:
        return parent + suffix
    digest = hashlib.blake2b(parent.encode(), digest_size=12).hexdigest()
    return f"c{digest}{suffix}"


class _VenueRecord:
    """What the router has measured about one venue."""

    def __init__(self, samples: int) -> None:
        self.orders = 0
        self.fills = 0
        self.rejects = 0
        self.errors = 0
        self.unknown = 0
        self.consecutive_errors = 0
        self.requested_quantity = 0.0
        self.filled_quantity = 0.0
        self.latency_ewma_ms: float | None = None
        self.latencies_ms: deque[float] = deque(maxlen=samples)
        self.slippage_samples = 0
        self.expected_slippage_bps_sum = 0.0
        self.realized_slippage_bps_sum = 0.0
        self.slippage_error_ewma_bps = 0.0
        self.failure_ewma = 0.0
        self.shortfall_ewma = 0.0

    def metrics(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        n = self.slippage_samples
        return {
            "orders": self.orders,
            "fills": self.fills,
            "rejects": self.rejects,
            "errors": self.errors,
            "outcome_unknown": self.unknown,
            "fill_ratio": self.filled_quantity / self.requested_quantity
            if self.requested_quantity
            else 0.0,
            "latency_ewma_ms": self.latency_ewma_ms or 0.0,
            "latency_p50_ms": _percentile(lat, 0.50),
            "latency_p99_ms": _percentile(lat, 0.99),
            "expected_slippage_bps": self.expected_slippage_bps_sum / n if n else 0.0,
            "realized_slippage_bps": self.realized_slippage_bps_sum / n if n else 0.0,
            "reject_rate_ewma": self.failure_ewma,
            "fill_shortfall_ewma": self.shortfall_ewma,
        }


def _slippage_bps(side: Side, price: float, mid: float) -> float:
    """Cost of paying ``price`` against ``mid``, in bps (positive is worse)."""
    cost = (price - mid) / mid * 1e4
    return cost if side is Side.BUY else -cost


def _median(values: list[float]) -> float:
    """The median (0.0 of nothing); one value, the common case, is its own."""
    n = len(values)
    if n < 2:
        return values[0] if n else 0.0
    values.sort()
    half = n // 2
    return values[half] if n % 2 else (values[half - 1] + values[half]) / 2


def _order_log(intent: OrderIntent, venue: str) -> Any:
    """A logger bound to one order: built on the paths that log, not for every order."""
    return log.bind(client_order_id=intent.client_order_id, venue=venue, symbol=intent.symbol)


def _balance_shortfall(venue: Venue, intent: OrderIntent, quote: VenueQuote) -> str:
    """Why the venue's free balance cannot pay for the order ("" when it can or is unknown).

    A BUY needs the quote asset for what the book walk costs plus the taker fee; a SELL
    needs the base asset for the whole quantity.
    """
    pair = venue.assets(intent.symbol)
    if pair is None:
        return ""
    if intent.side is Side.BUY:
        asset = pair[1]
        need = quote.fillable_quantity * quote.expected_price * (1.0 + quote.fee_bps / 1e4)
    else:
        asset, need = pair[0], intent.quantity
    free = venue.free_balance(asset)
    if free is None or free >= need * (1.0 - FILL_TOLERANCE):
        return ""
    return f"insufficient_balance: needs {need:.8g} {asset}, has {free:.8g}"


def _affordable(venue: Venue, intent: OrderIntent, levels: Levels) -> float:
    """How much of the order the venue's free balance pays for (inf when it reports none):
    SELL, the free base; BUY, the quantity whose book walk plus taker fee the free quote
    asset covers."""
    pair = venue.assets(intent.symbol)
    if pair is None:
        return math.inf
    free = venue.free_balance(pair[1] if intent.side is Side.BUY else pair[0])
    if free is None:
        return math.inf
    if intent.side is Side.SELL:
        return max(free, 0.0)
    budget = free
    fee = 1.0 + venue.taker_fee_bps / 1e4
    quantity = 0.0
    for price, size in levels:
        if size <= 0:
            continue
        take = min(size, budget / (price * fee))
        # The division rounds, up as often as down: step back until the level's cost fits
        # (one or two steps; more only where the budget is subnormal, never a real balance).
        while take > 0 and take * price * fee > budget:
            take = math.nextafter(take, 0.0)
        quantity += take
        budget -= take * price * fee
        if take < size or budget <= 0:
            break
    return quantity


def _levels_for(quantity: float, levels: Levels) -> Levels:
    """The best levels whose sizes first add up to ``quantity`` (all of them if they never do):
    no allocation of ``quantity`` takes a deeper level of the same book."""
    total = 0.0
    goal = quantity * (1.0 - FILL_TOLERANCE)
    for i, (_, size) in enumerate(levels):
        if size > 0:
            total += size
            if total >= goal:
                return levels[: i + 1]
    return levels


def _marketable(intent: OrderIntent, levels: Levels) -> Levels:
    """The levels a LIMIT order may take (all of them for a MARKET order)."""
    limit = intent.limit_price
    if intent.order_type is not OrderType.LIMIT or limit is None:
        return levels
    if intent.side is Side.BUY:
        return tuple(lv for lv in levels if lv[0] <= limit)
    return tuple(lv for lv in levels if lv[0] >= limit)


def _best_takes_all(
    intent: OrderIntent, ranking: Sequence[VenueQuote], books: dict[str, Levels]
) -> bool:
    """True when greedy allocation would take the whole order from the best venue alone: it
    fills the order from its book, and its dearest level needed costs no more per unit than
    the first level of every other candidate (ties go to the best venue, as in the greedy
    sort). The common small order is then decided without pricing every level."""
    best = ranking[0]
    if not best.complete:
        return False
    sign = intent.side.sign
    needed = _levels_for(intent.quantity, _marketable(intent, books[best.venue]))
    if not needed or not is_complete(sum(size for _, size in needed if size > 0), intent.quantity):
        return False
    worst = sign * needed[-1][0] * (1.0 + sign * best.unit_cost_bps / 1e4)
    for quote in ranking[1:]:
        for price, size in _marketable(intent, books[quote.venue]):
            if size > 0:
                if sign * price * (1.0 + sign * quote.unit_cost_bps / 1e4) < worst:
                    return False
                break
    return True


class OrderRouter:
    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        venues: Sequence[Venue],
        config: RouterConfig | None = None,
        breaker_config: BreakerConfig | None = None,
        on_latency: Callable[[str, float], None] | None = None,
        on_breaker_change: Callable[[CircuitBreakerChanged], None] | None = None,
    ) -> None:
        names = [v.name for v in venues]
        if len(set(names)) != len(names):
            raise ValueError(f"venue names must be unique: {names}")
        self.bus = bus
        self.clock = clock
        self.config = config or RouterConfig()
        self.venues = {v.name: v for v in venues}
        self.breakers = {
            v.name: CircuitBreaker(
                f"venue:{v.name}", clock=clock, config=breaker_config, on_change=on_breaker_change
            )
            for v in venues
        }
        self._records = {v.name: _VenueRecord(self.config.latency_samples) for v in venues}
        self._on_latency = on_latency
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.in_progress: set[str] = set()
        """Client order ids being submitted or published now (reconciliation leaves them)."""
        self.routed = 0
        self.split = 0
        self.unroutable = 0
        self.duplicates = 0

    # --- ranking ----------------------------------------------------------------------

    async def route(self, intent: OrderIntent) -> RoutingDecision:
        """Rank the eligible venues for ``intent`` and plan its children (nothing is sent).

        A book that cannot be fetched counts as a failure of the venue (its breaker opens
        after repeated ones, so a dead venue stops costing a timeout per decision).
        """
        decision, _ = await self._rank(intent)
        return decision

    async def _rank(self, intent: OrderIntent) -> tuple[RoutingDecision, dict[str, Levels]]:
        quotes: list[VenueQuote] = []
        excluded: dict[str, str] = {}
        limited: dict[str, str] = {}
        books: dict[str, Levels] = {}
        found: list[tuple[Venue, float, Levels, float]] = []  # (venue, mid, levels, sendable)
        buy = intent.side is Side.BUY
        for name, venue in self.venues.items():
            if not venue.listed(intent.symbol):
                excluded[name] = "not_listed"
                continue
            breaker = self.breakers[name]
            if breaker.state is BreakerState.OPEN:
                excluded[name] = "breaker_open"
                continue
            try:
                book = await venue.order_book(intent.symbol, self.config.book_depth)
            except Exception:
                log.warning("order_book_failed", venue=name, symbol=intent.symbol, exc_info=True)
                breaker.record_failure()
                excluded[name] = "book_error"
                continue
            if breaker.state is BreakerState.CLOSED:
                breaker.record_success()  # resets the consecutive count; a probe is an order
            levels = () if book is None else (book.asks if buy else book.bids)
            mid = math.nan if book is None else book.mid
            if not levels or not (math.isfinite(mid) and mid > 0):
                excluded[name] = "no_book"
                continue
            sendable = venue.tradable_quantity(intent.symbol, intent.quantity)
            if not sendable >= MIN_QUANTITY:
                excluded[name] = "below_lot_size"
                continue
            found.append((venue, mid, levels, sendable))
        # One reference for every venue (the median of their mids): costs in bps of each
        # venue's own mid would rank a dearer book first when its mid is higher.
        reference = _median([mid for _, mid, _, _ in found])
        for venue, _, ladder, sendable in found:
            quote = self._quote(venue, intent, reference, ladder, sendable)
            shortfall = _balance_shortfall(venue, intent, quote)
            if shortfall:
                # Quoted for what its balance pays for, if that is at least one lot step.
                payable = venue.tradable_quantity(
                    intent.symbol, min(_affordable(venue, intent, ladder), intent.quantity)
                )
                if not payable >= MIN_QUANTITY:  # 0, or a subnormal crumb of a balance
                    excluded[venue.name] = shortfall
                    continue
                limited[venue.name] = shortfall
                # The book as far as the balance reaches (the last level cut to fit).
                ladder = tuple((price, qty) for qty, price in take_levels(ladder, payable))
                quote = self._quote(venue, intent, reference, ladder, payable, balance_limited=True)
            books[venue.name] = ladder
            quotes.append(quote)
        if len(quotes) > 1:
            quotes.sort(key=lambda q: (not q.complete, q.total_bps))
        ranking = tuple(quotes)
        children, saving = self._allocate(intent, ranking, books)
        decision = RoutingDecision(
            client_order_id=intent.client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            quantity=intent.quantity,
            ranking=ranking,
            excluded=excluded,
            children=children,
            split_saving_bps=saving,
            limited=limited,
        )
        return decision, books

    def _quote(
        self,
        venue: Venue,
        intent: OrderIntent,
        mid: float,
        levels: Levels,
        sendable: float,
        *,
        balance_limited: bool = False,
    ) -> VenueQuote:
        filled, avg = walk_book(levels, intent.quantity)
        slippage = _slippage_bps(intent.side, avg, mid)
        record = self._records[venue.name]
        latency_penalty = (record.latency_ewma_ms or 0.0) * self.config.latency_penalty_bps_per_ms
        correction = record.slippage_error_ewma_bps
        reliability = self.config.reliability_penalty_bps * (
            record.failure_ewma + record.shortfall_ewma
        )
        return VenueQuote(
            venue=venue.name,
            mid=mid,
            expected_price=avg,
            fillable_quantity=filled,
            fee_bps=venue.taker_fee_bps,
            slippage_bps=slippage,
            latency_penalty_bps=latency_penalty,
            slippage_correction_bps=correction,
            reliability_penalty_bps=reliability,
            total_bps=venue.taker_fee_bps + slippage + latency_penalty + correction + reliability,
            complete=is_complete(filled, intent.quantity),
            quantity=sendable,
            balance_limited=balance_limited,
        )

    def _allocate(
        self, intent: OrderIntent, ranking: Sequence[VenueQuote], books: dict[str, Levels]
    ) -> tuple[tuple[ChildOrder, ...], float]:
        """The children to send (greedy marginal cost over book levels) and the split's saving.

        Each level's cost per unit is its price moved by the venue's per-unit costs; the
        cheapest units are taken first. Compared with the best single venue on the same
        per-unit costs; one child (the order itself) unless the split pays.
        """
        # The best venue that may take the order alone: a balance-limited one only splits.
        best = next((q for q in ranking if not q.balance_limited), None)
        single: tuple[ChildOrder, ...] = ()
        if best is not None:
            single = (
                ChildOrder(
                    venue=best.venue,
                    client_order_id=intent.client_order_id,
                    quantity=best.quantity,
                    expected_price=best.expected_price,
                ),
            )
        candidates = ranking[: self.config.max_children]
        if len(candidates) < 2 or _best_takes_all(intent, candidates, books):
            return single, 0.0
        sign = intent.side.sign
        units: list[tuple[float, float, float, str]] = []  # (signed unit cost, price, size, venue)
        for quote in candidates:
            extra = quote.unit_cost_bps / 1e4
            for price, size in _levels_for(
                intent.quantity, _marketable(intent, books[quote.venue])
            ):
                if size > 0:
                    units.append((sign * price * (1.0 + sign * extra), price, size, quote.venue))
        units.sort(key=lambda u: u[0])
        quantity = intent.quantity
        remaining = quantity
        taken: dict[str, list[float]] = {}  # venue → [quantity, notional, signed cost]
        for cost, price, size, venue in units:
            if remaining <= quantity * FILL_TOLERANCE:
                break
            take = min(size, remaining)
            share = taken.setdefault(venue, [0.0, 0.0, 0.0])
            share[0] += take
            share[1] += take * price
            share[2] += take * cost
            remaining -= take
        if len(taken) < 2:
            return single, 0.0
        split_filled = quantity - remaining
        split_cost = sum(share[2] for share in taken.values())
        saving = 0.0
        # With no venue that can pay for the order alone, the split is the only way.
        if best is not None and best.complete and is_complete(split_filled, quantity):
            best_cost = sum(
                sign * p * (1.0 + sign * best.unit_cost_bps / 1e4) * q
                for q, p in take_levels(_marketable(intent, books[best.venue]), quantity)
            )
            saving = (best_cost - split_cost) / (quantity * best.mid) * 1e4
            if saving < self.config.min_split_saving_bps:
                return single, 0.0
        elif best is not None and not split_filled > best.fillable_quantity * (
            1.0 + FILL_TOLERANCE
        ):
            return single, 0.0
        order = {q.venue: i for i, q in enumerate(ranking)}
        children: list[ChildOrder] = []
        for venue, share in sorted(taken.items(), key=lambda kv: order[kv[0]]):
            quantity = self.venues[venue].tradable_quantity(intent.symbol, share[0])
            if quantity > 0:  # a share below the venue's lot step is left out
                children.append(
                    ChildOrder(
                        venue=venue,
                        client_order_id=child_order_id(intent.client_order_id, len(children) + 1),
                        quantity=quantity,
                        expected_price=share[1] / share[0],
                    )
                )
        if len(children) < 2:
            return single, 0.0
        return tuple(children), saving

    # --- execution --------------------------------------------------------------------

    async def on_intent(self, intent: OrderIntent) -> None:
        """Route, submit every child, publish Submitted → Filled… → Cancelled, or Rejected."""
        if intent.client_order_id in self._recent:
            self.duplicates += 1
            log.warning("duplicate_intent_ignored", client_order_id=intent.client_order_id)
            return
        self._recent[intent.client_order_id] = None
        while len(self._recent) > _RECENT_INTENTS:
            self._recent.popitem(last=False)

        decision, books = await self._rank(intent)
        children = self._admitted(intent, decision, books)
        if not children:
            self.unroutable += 1
            reasons = {**decision.excluded, **decision.limited}
            detail = ", ".join(f"{v}: {why}" for v, why in reasons.items())
            await self._reject(intent, "no_eligible_venue", detail or "no venues", None)
            return
        self.routed += 1
        quotes = {q.venue: q for q in decision.ranking}
        if len(children) == 1:
            child = children[0]
            # What the venue can trade: the quantity rounded down to its lot step.
            sent = (
                intent
                if child.quantity == intent.quantity
                else msgspec.structs.replace(intent, quantity=child.quantity, seq=0)
            )
            self.in_progress.add(intent.client_order_id)
            try:
                execution = await self._send(sent, self.venues[child.venue])
                await self._publish(sent, quotes[child.venue], child, execution, "")
            finally:
                self.in_progress.discard(intent.client_order_id)
            return
        await self._split(intent, children, quotes)

    def _admitted(
        self, intent: OrderIntent, decision: RoutingDecision, books: dict[str, Levels]
    ) -> tuple[ChildOrder, ...]:
        """The planned children whose breakers let an order through (re-planned without the
        venues that refuse: a half-open breaker lets one probe at a time)."""
        children = decision.children
        granted: set[str] = set()
        denied: set[str] = set()
        while children:
            for child in children:
                if child.venue in granted or child.venue in denied:
                    continue
                (granted if self.breakers[child.venue].allow() else denied).add(child.venue)
            if not any(c.venue in denied for c in children):
                return children
            ranking = tuple(q for q in decision.ranking if q.venue not in denied)
            children, _ = self._allocate(intent, ranking, books)
        return ()

    async def _split(
        self, intent: OrderIntent, children: Sequence[ChildOrder], quotes: dict[str, VenueQuote]
    ) -> None:
        """Send the children at once, publish each child's outcome, then the parent's end."""
        self.split += 1
        parent = intent.client_order_id
        child_intents = [
            msgspec.structs.replace(
                intent, client_order_id=c.client_order_id, quantity=c.quantity, seq=0
            )
            for c in children
        ]
        self.in_progress.update(c.client_order_id for c in children)
        try:
            executions = await asyncio.gather(
                *(
                    self._send(ci, self.venues[c.venue])
                    for ci, c in zip(child_intents, children, strict=True)
                )
            )
            filled = 0.0
            unknown = False
            reasons: list[str] = []
            for ci, child, execution in zip(child_intents, children, executions, strict=True):
                filled += await self._publish(ci, quotes[child.venue], child, execution, parent)
                if execution is None:
                    unknown = True
                elif execution.reason:
                    reasons.append(execution.reason)
        finally:
            self.in_progress.difference_update(c.client_order_id for c in children)
        if unknown or is_complete(filled, intent.quantity):
            return  # filled by its children's fills, or still in flight until reconciled
        venues = "+".join(c.venue for c in children)
        if filled > 0 or any(
            e is not None and e.status is not OrderStatus.REJECTED for e in executions
        ):
            await self.bus.publish(
                OrderCancelled(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=parent,
                    venue=venues,
                    symbol=intent.symbol,
                    reason=reasons[0] if reasons else "unfilled_remainder",
                    filled_quantity=filled,
                )
            )
        else:
            await self._reject(intent, reasons[0] if reasons else "venue_rejected", "", venues)

    async def _send(self, intent: OrderIntent, venue: Venue) -> Execution | None:
        """Submit one order and keep the venue's record; None when the outcome is unknown."""
        record = self._records[venue.name]
        record.orders += 1
        record.requested_quantity += intent.quantity
        alpha = self.config.ewma_alpha
        t0 = self.clock.now_ns()
        try:
            execution = await venue.submit(intent)
        except Exception as exc:
            self._observe_latency(venue.name, record, t0)
            record.errors += 1
            record.consecutive_errors += 1
            record.failure_ewma += alpha * (1.0 - record.failure_ewma)
            self.breakers[venue.name].record_failure()
            bound = _order_log(intent, venue.name)
            if isinstance(exc, OutcomeUnknown):
                record.unknown += 1
                bound.warning("venue_submit_outcome_unknown", error=str(exc))
                return None
            bound.exception("venue_submit_failed")
            return Execution(
                client_order_id=intent.client_order_id,
                venue_order_id="",
                status=OrderStatus.REJECTED,
                reason="venue_error",
                detail=f"{type(exc).__name__}: {exc}",
            )
        self._observe_latency(venue.name, record, t0)
        record.consecutive_errors = 0
        self.breakers[venue.name].record_success()
        rejected = execution.status is OrderStatus.REJECTED
        record.failure_ewma += alpha * (float(rejected) - record.failure_ewma)
        if execution.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
            # Resting orders are not tracked yet: cancel the rest so every order ends here.
            try:
                await venue.cancel(intent.client_order_id)
            except Exception:
                _order_log(intent, venue.name).exception("venue_cancel_failed")
            execution = msgspec.structs.replace(
                execution, status=OrderStatus.CANCELLED, reason="resting_not_supported"
            )
        return execution

    def _observe_latency(self, venue: str, record: _VenueRecord, t0_ns: int) -> None:
        ms = (self.clock.now_ns() - t0_ns) / 1e6
        record.latencies_ms.append(ms)
        alpha = self.config.ewma_alpha
        prev = record.latency_ewma_ms
        record.latency_ewma_ms = ms if prev is None else prev + alpha * (ms - prev)
        if self._on_latency is not None:
            self._on_latency(venue, ms / 1000.0)

    async def _publish(
        self,
        intent: OrderIntent,
        quote: VenueQuote,
        child: ChildOrder,
        execution: Execution | None,
        parent_id: str,
    ) -> float:
        """Publish one order's outcome; returns the quantity it filled."""
        venue = child.venue
        record = self._records[venue]
        if execution is not None and execution.status is OrderStatus.REJECTED:
            record.rejects += 1
            await self._reject(
                intent, execution.reason or "venue_rejected", execution.detail, venue, parent_id
            )
            return 0.0
        await self.bus.publish(
            OrderSubmitted(
                ts_ns=self.clock.now_ns(),
                client_order_id=intent.client_order_id,
                venue=venue,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                order_type=intent.order_type,
                venue_order_id=execution.venue_order_id if execution is not None else "",
                parent_id=parent_id,
            )
        )
        if execution is None:
            return 0.0  # in flight until reconciliation learns what the venue holds
        cumulative = 0.0
        last_index = len(execution.fills) - 1
        for i, fill in enumerate(execution.fills):
            cumulative += fill.quantity
            complete = i == last_index and is_complete(cumulative, intent.quantity)
            record.fills += 1
            await self.bus.publish(
                OrderFilled(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=intent.client_order_id,
                    venue=venue,
                    symbol=intent.symbol,
                    side=intent.side,
                    quantity=fill.quantity,
                    price=fill.price,
                    fee=fill.fee,
                    cumulative_quantity=cumulative,
                    leaves_quantity=0.0 if complete else max(intent.quantity - cumulative, 0.0),
                    parent_id=parent_id,
                )
            )
        record.filled_quantity += cumulative
        if intent.order_type is OrderType.MARKET:
            # What the book held of what was sent (a child was sized from the book).
            expected_fill = min(quote.fillable_quantity, child.quantity)
            self._record_quality(record, intent, quote, child, execution, cumulative, expected_fill)
        if not is_complete(cumulative, intent.quantity):
            await self.bus.publish(
                OrderCancelled(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=intent.client_order_id,
                    venue=venue,
                    symbol=intent.symbol,
                    reason=execution.reason or "unfilled_remainder",
                    filled_quantity=cumulative,
                    parent_id=parent_id,
                )
            )
        return cumulative

    def _record_quality(
        self,
        record: _VenueRecord,
        intent: OrderIntent,
        quote: VenueQuote,
        child: ChildOrder,
        execution: Execution,
        filled: float,
        expected_fill: float,
    ) -> None:
        """Realised vs expected slippage and fill shortfall (market orders only: a limit's IOC
        cut-off is neither slippage nor a venue's shortfall)."""
        alpha = self.config.ewma_alpha
        if expected_fill > 0:
            shortfall = max(0.0, 1.0 - filled / expected_fill)
            record.shortfall_ewma += alpha * (shortfall - record.shortfall_ewma)
        if filled <= 0:
            return
        expected = _slippage_bps(intent.side, child.expected_price, quote.mid)
        realized = _slippage_bps(intent.side, execution.avg_price, quote.mid)
        record.slippage_samples += 1
        record.expected_slippage_bps_sum += expected
        record.realized_slippage_bps_sum += realized
        error = realized - expected
        record.slippage_error_ewma_bps += alpha * (error - record.slippage_error_ewma_bps)

    async def _reject(
        self,
        intent: OrderIntent,
        reason: str,
        detail: str,
        venue: str | None,
        parent_id: str = "",
    ) -> None:
        await self.bus.publish(
            OrderRejected(
                ts_ns=self.clock.now_ns(),
                client_order_id=intent.client_order_id,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                reason=reason,
                detail=detail[:500],
                venue=venue,
                parent_id=parent_id,
            )
        )

    # --- introspection ----------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        venues = {}
        for name, record in self._records.items():
            venues[name] = record.metrics() | {
                "taker_fee_bps": self.venues[name].taker_fee_bps,
                "breaker": str(self.breakers[name].state),
            }
        return {
            "routed": self.routed,
            "split": self.split,
            "in_flight": len(self.in_progress),
            "unroutable": self.unroutable,
            "duplicates": self.duplicates,
            "venues": venues,
        }

    def health(self) -> dict[str, Any]:
        failing = sorted(
            name
            for name, record in self._records.items()
            if record.consecutive_errors >= _DEGRADED_AFTER_ERRORS
            or self.breakers[name].state is not BreakerState.CLOSED
        )
        if not self.venues:
            status = "down"
        elif len(failing) == len(self.venues):
            status = "down"
        elif failing:
            status = "degraded"
        else:
            status = "ok"
        return {"status": status, "venues": len(self.venues), "failing": failing}
