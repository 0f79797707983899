"""Reconciliation against the loopback Binance server's signed endpoints, with ccxt's real
client: open orders in the log brought up to date, orders unknown to the log recorded as
external, balances recorded, and a submit of unknown outcome resolved to exactly one order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import Credentials
from quantumtrade.events import (
    BalancesReconciled,
    Event,
    ExternalOrderFound,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderType,
    Side,
)
from quantumtrade.execution.ccxt_venue import CcxtVenue, CcxtVenueConfig
from quantumtrade.execution.reconcile import OrderLedger, Reconciler
from quantumtrade.execution.router import OrderRouter
from tests.support.loopback_binance import LoopbackBinance, market
from tests.support.loopback_binance_private import (
    OrderFault,
    OrderFaultKind,
    PrivateBook,
    add_private_routes,
)

KEY, SECRET = "rk", "rs"
START_MS = 1_700_000_000_000
ASKS = [(100.0, 1.0), (101.0, 2.0), (102.0, 5.0)]
BIDS = [(99.0, 1.0), (98.0, 2.0), (97.0, 5.0)]


class World:
    """One bus (inline subscribers only) with a ledger and a reconciler over one CcxtVenue."""

    def __init__(self, venue: CcxtVenue, book: PrivateBook, clock: ManualClock) -> None:
        self.venue, self.book, self.clock = venue, book, clock
        self.bus = EventBus(clock=clock)
        self.ledger = OrderLedger()
        self.seen: list[Event] = []
        for event_type, handler in self.ledger.handlers():
            self.bus.subscribe(event_type, handler)
        for t in (
            OrderSubmitted,
            OrderFilled,
            OrderCancelled,
            OrderRejected,
            ExternalOrderFound,
            BalancesReconciled,
        ):
            self.bus.subscribe(t, self.seen.append)
        self.reconciler = Reconciler(
            bus=self.bus, clock=clock, ledger=self.ledger, venues={venue.name: venue}
        )

    def logged_open(self, cid: str, qty: float, side: Side = Side.BUY, parent: str = "") -> None:
        """What a previous process left in the log: the order submitted, nothing after."""
        self.ledger.apply(
            OrderSubmitted(
                ts_ns=1,
                seq=1,
                client_order_id=cid,
                venue=self.venue.name,
                symbol="BTCUSDT",
                side=side,
                quantity=qty,
                order_type=OrderType.MARKET,
                parent_id=parent,
            )
        )

    def place_at_venue(self, cid: str, qty: float, *, limit: float | None = None) -> None:
        """An order the exchange holds (sent by an earlier process, or by someone else)."""
        params = {"symbol": "BTCUSDT", "side": "BUY", "newClientOrderId": cid}
        if limit is None:
            params |= {"type": "MARKET", "quantity": str(qty)}
        else:
            params |= {"type": "LIMIT", "quantity": str(qty), "price": str(limit)}
            params["timeInForce"] = "GTC"
        placed = self.book.place(params)
        assert not isinstance(placed, Exception) and hasattr(placed, "client_order_id")

    def of(self, event_type: type[Event]) -> list[Event]:
        return [e for e in self.seen if isinstance(e, event_type)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    bars = [(START_MS - i * 60_000, 100.0, 100.5, 99.5, 100.0, 10.0) for i in range(5)]
    markets = {"BTCUSDT": market("BTCUSDT", bars, BIDS, ASKS)}
    async with LoopbackBinance(markets) as server:
        book = add_private_routes(
            server, api_key=KEY, secret=SECRET, balances={"USDT": 10_000.0, "BTC": 1.0}
        )
        clock = ManualClock(start_ns=START_MS * 1_000_000)
        config = msgspec.convert(
            {
                "api_url": server.base_url,
                "enable_rate_limit": False,
                "timeout_ms": 2_000,
                "resolve_attempts": 2,
                "resolve_backoff_ms": 0,
            },
            CcxtVenueConfig,
        )
        async with CcxtVenue(
            config, credentials=Credentials(api_key=KEY, secret=SECRET), clock=clock
        ) as venue:
            yield World(venue, book, clock)


async def test_an_order_left_open_in_the_log_gets_the_fills_the_venue_made(world: World) -> None:
    world.place_at_venue("left-1", 2.0)  # filled at the venue: 1 @ 100, 1 @ 101
    world.logged_open("left-1", 2.0)
    await world.reconciler.run_once()

    (fill,) = world.of(OrderFilled)
    assert isinstance(fill, OrderFilled)
    assert (fill.client_order_id, fill.quantity, fill.leaves_quantity) == ("left-1", 2.0, 0.0)
    assert fill.price == pytest.approx(100.5)
    assert fill.fee == pytest.approx(201.0 * 10 / 1e4)
    assert not world.ledger.open and world.reconciler.resolved == 1
    # A second pass finds nothing left to do: no fill is published twice.
    await world.reconciler.run_once()
    assert len(world.of(OrderFilled)) == 1


async def test_a_resting_order_is_cancelled_and_its_partial_fill_recorded(world: World) -> None:
    world.place_at_venue("rest-1", 3.0, limit=100.0)  # 1 filled at 100, 2 resting
    world.logged_open("rest-1", 3.0)
    await world.reconciler.run_once()

    (fill,) = world.of(OrderFilled)
    (cancel,) = world.of(OrderCancelled)
    assert isinstance(fill, OrderFilled) and isinstance(cancel, OrderCancelled)
    assert (fill.quantity, fill.price, fill.leaves_quantity) == (1.0, 100.0, 2.0)
    assert cancel.filled_quantity == 1.0 and cancel.reason == "reconciled"
    assert world.book.orders["rest-1"].status == "CANCELED"
    assert not world.ledger.open


async def test_an_order_the_venue_does_not_know_is_rejected(world: World) -> None:
    world.logged_open("ghost-1", 1.0)
    await world.reconciler.run_once()
    (rejected,) = world.of(OrderRejected)
    assert isinstance(rejected, OrderRejected)
    assert (rejected.reason, rejected.venue) == ("not_found_at_venue", "binance")
    assert not world.ledger.open and not world.book.orders


async def test_orders_the_log_does_not_know_are_recorded_as_external_once(world: World) -> None:
    world.place_at_venue("manual-7", 1.0, limit=90.0)  # rests: nothing at or below 90
    world.place_at_venue("ours-1", 1.0, limit=90.0)
    world.logged_open("ours-1", 1.0)
    world.book.orders["ours-1"].status = "NEW"
    status = await world.reconciler.run_once()

    (external,) = world.of(ExternalOrderFound)
    assert isinstance(external, ExternalOrderFound)
    assert (external.client_order_id, external.symbol, external.side) == (
        "manual-7",
        "BTCUSDT",
        Side.BUY,
    )
    assert external.price == 90.0 and external.status == "NEW"
    assert world.book.orders["manual-7"].status == "NEW"  # not ours to cancel
    assert [e["client_order_id"] for e in status["external_orders"]] == ["manual-7"]
    await world.reconciler.run_once()
    assert len(world.of(ExternalOrderFound)) == 1


async def test_balances_are_recorded_when_they_change(world: World) -> None:
    await world.reconciler.run_once()
    (first,) = world.of(BalancesReconciled)
    assert isinstance(first, BalancesReconciled)
    assert first.balances == {"BTC": 1.0, "USDT": 10_000.0}
    await world.reconciler.run_once()
    assert len(world.of(BalancesReconciled)) == 1  # unchanged: not recorded again
    world.place_at_venue("x-1", 1.0)
    world.logged_open("x-1", 1.0)
    await world.reconciler.run_once()
    last = world.of(BalancesReconciled)[-1]
    assert isinstance(last, BalancesReconciled) and last.balances["BTC"] == pytest.approx(2.0)


async def test_a_split_parent_ends_when_its_last_child_is_reconciled(world: World) -> None:
    world.ledger.apply(
        OrderIntent(ts_ns=1, client_order_id="p", symbol="BTCUSDT", side=Side.BUY, quantity=3.0)
    )
    world.place_at_venue("p-1", 1.0)
    world.logged_open("p-1", 1.0, parent="p")
    world.logged_open("p-2", 2.0, parent="p")  # never reached the venue
    await world.reconciler.run_once()
    events = [
        (type(e).__name__, e.client_order_id)
        for e in world.seen
        if isinstance(e, OrderFilled | OrderCancelled | OrderRejected)
    ]
    assert events == [
        ("OrderFilled", "p-1"),
        ("OrderRejected", "p-2"),
        ("OrderCancelled", "p"),
    ]
    parent_end = world.of(OrderCancelled)[-1]
    assert isinstance(parent_end, OrderCancelled)
    assert parent_end.filled_quantity == 1.0 and parent_end.parent_id == ""
    assert not world.ledger.parents


async def test_a_submit_of_unknown_outcome_stays_in_flight_then_reconciles_to_one_order(
    world: World,
) -> None:
    router = OrderRouter(bus=world.bus, clock=world.clock, venues=[world.venue])
    # The POST is accepted (and filled) but answered 503; both order queries fail too.
    world.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
    world.book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
    intent = OrderIntent(
        ts_ns=1, client_order_id="unk-1", symbol="BTCUSDT", side=Side.BUY, quantity=1.0
    )
    await router.on_intent(intent)

    (submitted,) = world.seen
    assert isinstance(submitted, OrderSubmitted) and submitted.venue_order_id == ""
    assert "unk-1" in world.ledger.open  # in flight: neither filled nor rejected
    assert router.metrics()["venues"]["binance"]["outcome_unknown"] == 1

    await world.reconciler.run_once()
    fills = world.of(OrderFilled)
    assert [(f.client_order_id, f.quantity) for f in fills if isinstance(f, OrderFilled)] == [
        ("unk-1", 1.0)
    ]
    assert world.book.order_posts == 1 and list(world.book.orders) == ["unk-1"]
    assert not world.ledger.open and not world.of(OrderRejected)
