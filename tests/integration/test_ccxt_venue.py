"""CcxtVenue end to end: ccxt's real binance client against the loopback Binance server's signed
endpoints (tests/support/loopback_binance_private.py).

Nothing here leaves 127.0.0.1. Every venue is built with ``enable_rate_limit=False``: ccxt's
throttle paces binance at ~48 requests/s of wall time, which would only slow these tests down
(the loopback server has no limit to respect); production keeps it on (the config default).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import ccxt.async_support as ccxt_async
import msgspec
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import Credentials
from quantumtrade.errors import VenueError
from quantumtrade.events import OrderIntent, OrderType, Side
from quantumtrade.execution.ccxt_venue import CcxtVenue, CcxtVenueConfig
from quantumtrade.execution.router import OrderRouter
from quantumtrade.execution.venue import OrderStatus, Venue
from tests.support.loopback_binance import Fault, LoopbackBinance, Market, market
from tests.support.loopback_binance_private import (
    OrderFault,
    OrderFaultKind,
    PrivateBook,
    add_private_routes,
)

KEY, SECRET = "test-key", "test-secret"
START_MS = 1_700_000_000_000
ASKS = [(100.0, 1.0), (101.0, 2.0), (102.0, 5.0)]
BIDS = [(99.0, 1.0), (98.0, 2.0), (97.0, 5.0)]
FEE = 10.0 / 1e4  # the server's taker fee, charged in USDT
BALANCES = {"USDT": 10_000.0, "BTC": 1.0}


@pytest.fixture
def markets() -> dict[str, Market]:
    bars = [(START_MS - i * 60_000, 100.0, 100.5, 99.5, 100.0, 10.0) for i in range(5)]
    return {
        "BTCUSDT": market("BTCUSDT", bars, BIDS, ASKS),
        "ETHUSDT": market("ETHUSDT", [(START_MS, 10.0, 10.0, 10.0, 10.0, 1.0)]),
    }


@pytest.fixture
async def server(markets: dict[str, Market]) -> AsyncIterator[LoopbackBinance]:
    async with LoopbackBinance(markets) as srv:
        yield srv


@pytest.fixture
def book(server: LoopbackBinance) -> PrivateBook:
    return add_private_routes(server, api_key=KEY, secret=SECRET, balances=BALANCES)


VenueFactory = Callable[..., AbstractAsyncContextManager[CcxtVenue]]


@pytest.fixture
def make_venue(server: LoopbackBinance) -> VenueFactory:
    def make(
        *, key: str = KEY, secret: str = SECRET, **overrides: object
    ) -> AbstractAsyncContextManager[CcxtVenue]:
        fields: dict[str, object] = {
            "api_url": server.base_url,
            "enable_rate_limit": False,  # see the module docstring
            "timeout_ms": 2_000,
            **overrides,
        }
        return CcxtVenue(
            msgspec.convert(fields, CcxtVenueConfig),
            credentials=Credentials(api_key=key, secret=secret),
            clock=ManualClock(start_ns=START_MS * 1_000_000),
        )

    return make


@pytest.fixture
async def venue(book: PrivateBook, make_venue: VenueFactory) -> AsyncIterator[CcxtVenue]:
    async with make_venue() as v:
        yield v


def buy(cid: str, qty: float, limit: float | None = None, symbol: str = "BTCUSDT") -> OrderIntent:
    return OrderIntent(
        ts_ns=0,
        client_order_id=cid,
        symbol=symbol,
        side=Side.BUY,
        quantity=qty,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=limit,
    )


def sell(cid: str, qty: float) -> OrderIntent:
    return OrderIntent(ts_ns=0, client_order_id=cid, symbol="BTCUSDT", side=Side.SELL, quantity=qty)


# --- plain trading ------------------------------------------------------------------------


async def test_listed_and_order_book(venue: CcxtVenue) -> None:
    as_venue: Venue = venue  # meets the protocol the router takes
    assert as_venue.taker_fee_bps == 10.0
    assert venue.listed("BTCUSDT") and venue.listed("ETHUSDT")
    assert not venue.listed("DOGEUSDT")
    ob = await venue.order_book("BTCUSDT", depth=2)
    assert ob is not None
    assert ob.asks == tuple(ASKS[:2]) and ob.bids == tuple(BIDS[:2])
    assert await venue.order_book("DOGEUSDT") is None


async def test_market_buy_fills_across_levels_and_moves_the_balance(
    venue: CcxtVenue, book: PrivateBook
) -> None:
    ex = await venue.submit(buy("m-1", 2.0))
    assert ex.status is OrderStatus.FILLED
    assert ex.client_order_id == "m-1" and ex.venue_order_id == "1"
    assert [(f.quantity, f.price) for f in ex.fills] == [(1.0, 100.0), (1.0, 101.0)]
    assert ex.fees == pytest.approx(201.0 * FEE)
    # The id reached the exchange as ours, not ccxt's broker-prefixed one.
    assert list(book.orders) == ["m-1"]
    balance = await venue.balance()
    assert balance["BTC"] == pytest.approx(3.0)
    assert balance["USDT"] == pytest.approx(10_000.0 - 201.0 * (1 + FEE))


async def test_market_sell_fills_against_the_bids(venue: CcxtVenue) -> None:
    ex = await venue.submit(sell("s-1", 1.0))
    assert ex.status is OrderStatus.FILLED
    assert ex.avg_price == pytest.approx(99.0)
    balance = await venue.balance()
    assert "BTC" not in balance  # sold out: zero balances are left out
    assert balance["USDT"] == pytest.approx(10_000.0 + 99.0 * (1 - FEE))


async def test_market_order_partially_filled_comes_back_cancelled_with_its_fills(
    server: LoopbackBinance, make_venue: VenueFactory
) -> None:
    add_private_routes(
        server, api_key=KEY, secret=SECRET, balances=BALANCES, partial_fill_ratio=0.5
    )
    async with make_venue() as venue:
        ex = await venue.submit(buy("p-1", 2.0))
    assert ex.status is OrderStatus.CANCELLED
    assert ex.filled_quantity == pytest.approx(1.0)
    assert ex.avg_price == pytest.approx(100.0)


async def test_limit_orders_are_immediate_or_cancel(venue: CcxtVenue, book: PrivateBook) -> None:
    full = await venue.submit(buy("l-1", 3.0, limit=101.0))
    assert full.status is OrderStatus.FILLED
    assert full.filled_quantity == pytest.approx(3.0)
    partial = await venue.submit(buy("l-2", 5.0, limit=100.5))
    assert partial.status is OrderStatus.CANCELLED
    assert [(f.quantity, f.price) for f in partial.fills] == [(1.0, 100.0)]
    assert book.orders["l-2"].time_in_force == "IOC"
    assert not [o for o in book.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")]


async def test_gtc_limit_rests_then_cancels(venue: CcxtVenue, book: PrivateBook) -> None:
    resting = await venue.submit_limit(buy("g-1", 2.0, limit=99.5))
    assert resting.status is OrderStatus.NEW and not resting.fills
    assert (await venue.fetch_order("g-1")).status is OrderStatus.NEW
    assert (await venue.balance())["USDT"] == pytest.approx(10_000.0)  # locked counts in total
    assert book.balances["USDT"].locked == pytest.approx(199.0)

    assert await venue.cancel("g-1") is True
    cancelled = await venue.fetch_order("g-1")
    assert cancelled.status is OrderStatus.CANCELLED and not cancelled.fills
    assert book.balances["USDT"].locked == pytest.approx(0.0)
    assert book.balances["USDT"].free == pytest.approx(10_000.0)
    assert await venue.cancel("g-1") is False  # nothing open any more
    assert await venue.cancel("never-sent") is False


async def test_gtc_limit_partially_filled_rests_the_remainder(venue: CcxtVenue) -> None:
    ex = await venue.submit_limit(buy("g-2", 3.0, limit=100.0))
    assert ex.status is OrderStatus.PARTIALLY_FILLED
    assert ex.filled_quantity == pytest.approx(1.0)
    queried = await venue.fetch_order("g-2")
    assert queried.status is OrderStatus.PARTIALLY_FILLED
    assert queried.filled_quantity == pytest.approx(1.0)
    assert queried.avg_price == pytest.approx(100.0)
    assert await venue.cancel("g-2") is True
    assert (await venue.fetch_order("g-2")).status is OrderStatus.CANCELLED


async def test_fetch_order_of_an_unknown_id(venue: CcxtVenue) -> None:
    with pytest.raises(KeyError):
        await venue.fetch_order("nobody")
    with pytest.raises(VenueError) as raised:
        await venue.fetch_order("nobody", symbol="BTCUSDT")
    assert isinstance(raised.value.__cause__, ccxt_async.OrderNotFound)


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "secret"), [(KEY, "wrong-secret"), ("wrong-key", SECRET)])
async def test_wrong_credentials_are_an_auth_error(
    book: PrivateBook, make_venue: VenueFactory, key: str, secret: str
) -> None:
    async with make_venue(key=key, secret=secret) as venue:
        with pytest.raises(VenueError) as raised:
            await venue.balance()
        assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)
        ex = await venue.submit(buy("a-1", 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "authentication_failed"
    assert not book.orders and book.order_posts == 0


async def test_insufficient_balance_is_rejected_with_the_reason(
    venue: CcxtVenue, book: PrivateBook
) -> None:
    ex = await venue.submit(sell("i-1", 5.0))  # holds 1 BTC
    assert ex.status is OrderStatus.REJECTED and ex.reason == "insufficient_balance"
    book.order_faults.append(OrderFault(OrderFaultKind.REJECT))
    forced = await venue.submit(buy("i-2", 0.1))
    assert forced.status is OrderStatus.REJECTED and forced.reason == "insufficient_balance"
    assert not book.orders
    assert await venue.balance() == BALANCES


async def test_invalid_intents_are_refused_before_sending(
    venue: CcxtVenue, book: PrivateBook
) -> None:
    assert (await venue.submit(buy("v-1", 1.0, symbol="DOGEUSDT"))).reason == "unknown_symbol"
    assert (await venue.submit(buy("v-2", 0.0))).reason == "invalid_quantity"
    assert book.order_posts == 0


# --- unknown outcomes ---------------------------------------------------------------------


async def test_accepted_then_timed_out_submit_ends_as_exactly_one_order(
    server: LoopbackBinance, book: PrivateBook, make_venue: VenueFactory
) -> None:
    book.order_faults.append(OrderFault(OrderFaultKind.ACCEPT_THEN_TIMEOUT, delay_s=30.0))
    # A short client timeout: the server holds its answer far longer (and is cancelled when
    # ccxt hangs up), so the venue sees a timeout with the order already filled.
    async with make_venue(timeout_ms=300) as venue:
        ex = await venue.submit(buy("t-1", 2.0))
        assert ex.status is OrderStatus.FILLED
        assert ex.filled_quantity == pytest.approx(2.0)
        assert ex.avg_price == pytest.approx(100.5)
        assert ex.fees == pytest.approx(201.0 * FEE)
        # Known from the query, not the lost answer: one fill at the average price.
        assert len(ex.fills) == 1
        assert server.requests["/api/v3/order"] == 2  # the POST, then one query
        assert book.order_posts == 1 and list(book.orders) == ["t-1"]

        # The router retrying the same id gets the same order back, never a second one.
        again = await venue.submit(buy("t-1", 2.0))
        assert again.status is OrderStatus.FILLED and again.venue_order_id == ex.venue_order_id
        assert book.order_posts == 1 and len(book.orders) == 1
        assert (await venue.balance())["BTC"] == pytest.approx(3.0)


async def test_resubmit_from_a_fresh_venue_hits_the_duplicate_error_and_resolves(
    book: PrivateBook, make_venue: VenueFactory
) -> None:
    async with make_venue() as first:
        original = await first.submit(buy("d-1", 1.0))
    # A restarted process remembers nothing: the exchange's duplicate error tells it the order
    # went through, and a query tells it how.
    async with make_venue() as restarted:
        ex = await restarted.submit(buy("d-1", 1.0))
    assert ex.status is OrderStatus.FILLED
    assert ex.venue_order_id == original.venue_order_id
    assert ex.filled_quantity == pytest.approx(1.0)
    assert book.order_posts == 2 and len(book.orders) == 1


@pytest.mark.parametrize("kind", [OrderFaultKind.SERVER_ERROR, OrderFaultKind.RATE_LIMIT])
async def test_error_answer_after_acceptance_resolves_to_the_order(
    venue: CcxtVenue, book: PrivateBook, kind: OrderFaultKind
) -> None:
    book.order_faults.append(OrderFault(kind, accept=True))
    ex = await venue.submit(sell("e-1", 1.0))
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(99.0)
    assert book.order_posts == 1 and len(book.orders) == 1


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (OrderFaultKind.SERVER_ERROR, "ExchangeNotAvailable"),
        (OrderFaultKind.RATE_LIMIT, "DDoSProtection"),
    ],
)
async def test_error_answer_before_acceptance_is_rejected_after_the_query(
    venue: CcxtVenue, book: PrivateBook, server: LoopbackBinance, kind: OrderFaultKind, reason: str
) -> None:
    book.order_faults.append(OrderFault(kind))
    ex = await venue.submit(sell("r-1", 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == reason
    assert not book.orders
    assert server.requests["/api/v3/order"] == 2  # the POST, then one query
    # The id stays taken: a resubmit asks again rather than sending a new order.
    again = await venue.submit(sell("r-1", 1.0))
    assert again.status is OrderStatus.REJECTED
    assert book.order_posts == 1 and not book.orders


async def test_unanswerable_queries_raise_and_a_later_resubmit_resolves(
    server: LoopbackBinance, book: PrivateBook, make_venue: VenueFactory
) -> None:
    # Backoff 0: the venue sleeps on its manual clock between queries, which nobody advances.
    async with make_venue(resolve_attempts=3, resolve_backoff_ms=0) as venue:
        server.set_fault(Fault(status=503), "/api/v3/order")  # the POST and every query
        with pytest.raises(VenueError, match="unknown after 3 queries"):
            await venue.submit(buy("u-1", 1.0))
        assert book.order_posts == 0  # the gateway fault answered before the handler ran
        assert server.requests["/api/v3/order"] == 4  # the POST and three queries

        server.clear_faults()
        ex = await venue.submit(buy("u-1", 1.0))
        assert ex.status is OrderStatus.REJECTED and ex.reason == "not_found"
        assert book.order_posts == 0  # never resent


async def test_concurrent_submits_of_one_id_send_one_order(
    venue: CcxtVenue, book: PrivateBook
) -> None:
    async with asyncio.TaskGroup() as tg:
        first = tg.create_task(venue.submit(buy("c-1", 1.0)))
        second = tg.create_task(venue.submit(buy("c-1", 1.0)))
    assert first.result().status is second.result().status is OrderStatus.FILLED
    assert first.result().venue_order_id == second.result().venue_order_id
    assert book.order_posts == 1 and len(book.orders) == 1


# --- lot steps and balances for the router --------------------------------------------------


async def test_lot_step_and_assets_come_from_the_exchange_markets(
    venue: CcxtVenue, book: PrivateBook
) -> None:
    assert venue.assets("BTCUSDT") == ("BTC", "USDT") and venue.assets("DOGEUSDT") is None
    # The loopback server's LOT_SIZE step is 0.00001: ccxt would truncate 1/60 to 0.01666.
    assert venue.tradable_quantity("BTCUSDT", 1.0 / 60.0) == 0.01666
    assert venue.tradable_quantity("BTCUSDT", 0.000009) == 0.0
    ex = await venue.submit(buy("lot-1", venue.tradable_quantity("BTCUSDT", 1.0 / 60.0)))
    assert ex.status is OrderStatus.FILLED and ex.filled_quantity == pytest.approx(0.01666)
    assert book.orders["lot-1"].orig_qty == 0.01666


async def test_free_balances_are_fetched_then_moved_by_our_fills(venue: CcxtVenue) -> None:
    assert venue.free_balance("USDT") is None  # never fetched: the router does not check
    await venue.balance()
    assert venue.free_balance("USDT") == pytest.approx(10_000.0)
    assert venue.free_balance("BTC") == pytest.approx(1.0)
    assert venue.free_balance("ETH") == 0.0
    await venue.submit(buy("bal-1", 2.0))  # 100 + 101 USDT plus the fee
    assert venue.free_balance("USDT") == pytest.approx(10_000.0 - 201.0 * (1 + FEE))
    assert venue.free_balance("BTC") == pytest.approx(3.0)
    await venue.submit(sell("bal-2", 1.0))  # 99 USDT less the fee
    assert venue.free_balance("BTC") == pytest.approx(2.0)
    await venue.balance()  # the exchange agrees with what the fills moved
    assert venue.free_balance("USDT") == pytest.approx(
        10_000.0 - 201.0 * (1 + FEE) + 99.0 * (1 - FEE)
    )


async def test_the_router_skips_the_venue_once_its_fetched_balance_falls_short(
    venue: CcxtVenue, book: PrivateBook
) -> None:
    clock = ManualClock(start_ns=START_MS * 1_000_000)
    router = OrderRouter(bus=EventBus(clock=clock), clock=clock, venues=[venue])
    order = buy("r-1", 1.5)  # 100 + 0.5 * 101 = 150.5 USDT plus 10 bps
    assert (await router.route(order)).excluded == {}  # balances unknown: not checked
    book.balances["USDT"].free = 150.0  # someone spent it; the next fetch sees it
    await venue.balance()
    decision = await router.route(order)
    # Quoted for what 150 USDT pays for, but never sent a whole order alone: nothing is sent.
    assert decision.children == () and decision.excluded == {}
    assert decision.limited == {"binance": "insufficient_balance: needs 150.6505 USDT, has 150"}
    assert decision.ranking[0].balance_limited and decision.ranking[0].quantity < 1.5
