"""CcxtVenue against Kraken: ccxt's real kraken client talking to the loopback Kraken server's
signed endpoints (tests/support/loopback_kraken_private.py), which check the key, the
HMAC-SHA512 signature and the increasing nonce of every private request as Kraken does.

Kraken cannot look an order up by client id with ``QueryOrders`` (it needs the order's txid), so
the venue finds it with ``OpenOrders`` then ``ClosedOrders`` filtered by ``cl_ord_id``.

The server charges 8 bps and the venue is configured with 10, so a fee that matches the server's
came from the exchange. Nothing here leaves 127.0.0.1; rate limiting is off as in
test_ccxt_venue.py.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from quantumtrade.config import Credentials
from quantumtrade.errors import VenueError
from quantumtrade.events import (
    ExternalOrderFound,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderType,
    Side,
)
from quantumtrade.execution.ccxt_venue import CcxtVenue, exchange_client_id
from quantumtrade.execution.router import child_order_id
from quantumtrade.execution.venue import OrderStatus, OutcomeUnknown
from tests.support.ccxt_venue_setup import (
    ASKS,
    BALANCES,
    BIDS,
    SERVER_FEE_BPS,
    START_MS,
    World,
    book_markets,
    loopback_venue,
    order,
)
from tests.support.loopback_binance_private import OrderFault, OrderFaultKind
from tests.support.loopback_kraken_private import (
    ADD_ORDER,
    CLIENT_ID,
    CLOSED_ORDERS,
    OPEN_ORDERS,
    LoopbackKrakenPrivate,
)

KEY = "kraken-key"
SECRET = base64.b64encode(b"kraken-secret-bytes").decode()  # Kraken's secrets are base64
FEE = SERVER_FEE_BPS / 1e4
LONG_ID = "api-" + "7" * 32  # 36 characters: the admin API's longest ids


@pytest.fixture
async def server() -> AsyncIterator[LoopbackKrakenPrivate]:
    async with LoopbackKrakenPrivate(
        book_markets(),
        api_key=KEY,
        secret=SECRET,
        balances=BALANCES,
        taker_fee_bps=SERVER_FEE_BPS,
        now_ms=lambda: START_MS,
    ) as srv:
        yield srv


VenueFactory = Callable[..., CcxtVenue]


@pytest.fixture
def make_venue(server: LoopbackKrakenPrivate) -> VenueFactory:
    def make(*, key: str = KEY, secret: str = SECRET, **overrides: Any) -> CcxtVenue:
        credentials = Credentials(api_key=key, secret=secret)
        return loopback_venue("kraken", server.base_url, credentials, **overrides)

    return make


@pytest.fixture
async def venue(make_venue: VenueFactory) -> AsyncIterator[CcxtVenue]:
    async with make_venue() as v:
        yield v


# --- trading ------------------------------------------------------------------------------


async def test_start_loads_spot_markets_by_kraken_s_names(venue: CcxtVenue) -> None:
    assert venue.listed("BTCUSDT") and venue.listed("ETHUSDT")  # XBTUSDT, XETH…
    assert venue.assets("BTCUSDT") == ("BTC", "USDT")
    assert venue.tradable_quantity("BTCUSDT", 0.123456789) == pytest.approx(0.12345678)
    ob = await venue.order_book("BTCUSDT", depth=2)
    assert ob is not None and ob.asks == tuple(ASKS[:2]) and ob.bids == tuple(BIDS[:2])


async def test_market_buy_fills_with_the_exchange_fee_and_moves_the_balance(
    venue: CcxtVenue, server: LoopbackKrakenPrivate
) -> None:
    ex = await venue.submit(order("m1", Side.BUY, 2.0))
    assert ex.status is OrderStatus.FILLED
    assert ex.client_order_id == "m1"
    assert ex.venue_order_id == "O00001-LOOPB-KRAKEN"
    assert ex.filled_quantity == pytest.approx(2.0)
    assert ex.avg_price == pytest.approx(100.5)
    assert ex.fees == pytest.approx(201.0 * FEE)  # the server's 8 bps, not the configured 10
    # Our id reached Kraken as the cl_ord_id (not as a userref, which is an int32).
    (form,) = server.order_bodies
    assert (form["cl_ord_id"], form["pair"], form["volume"]) == ("m1", "XBTUSDT", "2")
    assert "userref" not in form
    # The place answer is an acknowledgement: the fills come from the order lists by cl_ord_id.
    assert list(server.book.orders) == ["m1"]
    assert server.hits[CLOSED_ORDERS] == 1
    balance = await venue.balance()
    assert balance["BTC"] == pytest.approx(3.0)
    assert balance["USDT"] == pytest.approx(10_000.0 - 201.0 * (1 + FEE))
    assert venue.free_balance("USDT") == pytest.approx(10_000.0 - 201.0 * (1 + FEE))


async def test_market_sell_fills_against_the_bids(venue: CcxtVenue) -> None:
    await venue.balance()
    ex = await venue.submit(order("s1", Side.SELL, 1.0))
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(99.0)
    assert ex.fees == pytest.approx(99.0 * FEE)
    assert venue.free_balance("BTC") == pytest.approx(0.0)  # moved by the fill
    balance = await venue.balance()
    assert "BTC" not in balance
    assert balance["USDT"] == pytest.approx(10_000.0 + 99.0 * (1 - FEE))


async def test_limit_orders_are_immediate_or_cancel(
    venue: CcxtVenue, server: LoopbackKrakenPrivate
) -> None:
    partial = await venue.submit(order("l1", Side.BUY, 5.0, limit=100.5))
    assert partial.status is OrderStatus.CANCELLED
    assert partial.filled_quantity == pytest.approx(1.0)
    assert partial.avg_price == pytest.approx(100.0)
    assert server.order_bodies[-1]["timeinforce"] == "IOC"
    assert await venue.open_orders() == []


async def test_gtc_limit_rests_is_listed_then_cancels(
    venue: CcxtVenue, server: LoopbackKrakenPrivate
) -> None:
    resting = await venue.submit_limit(order("g1", Side.BUY, 2.0, limit=99.5))
    assert resting.status is OrderStatus.NEW and not resting.fills
    assert server.order_bodies[-1]["timeinforce"] == "GTC"
    (listed,) = await venue.open_orders()
    assert (listed.client_order_id, listed.quantity, listed.price) == ("g1", 2.0, 99.5)
    assert listed.venue_order_id == resting.venue_order_id
    assert (await venue.balance())["USDT"] == pytest.approx(10_000.0)  # locked counts in total
    assert venue.free_balance("USDT") == pytest.approx(10_000.0 - 199.0)

    assert await venue.cancel("g1") is True
    assert (await venue.fetch_order("g1")).status is OrderStatus.CANCELLED
    assert server.book.balances["USDT"].free == pytest.approx(10_000.0)
    assert await venue.cancel("g1") is False  # EOrder:Unknown order: nothing open
    assert await venue.cancel("never-sent") is False


async def test_an_order_that_closes_between_the_two_lookups_is_still_found(
    venue: CcxtVenue, server: LoopbackKrakenPrivate
) -> None:
    # Kraken's lists are asked one after the other; an order moves from open to closed only,
    # so asking the open list first cannot miss one that closes in between.
    await venue.submit_limit(order("g2", Side.BUY, 1.0, limit=99.5))
    server.after_lookup.append(lambda: server.book.cancel(server.book.orders["g2"]))
    assert (await venue.fetch_order("g2")).status is OrderStatus.NEW
    assert server.book.orders["g2"].status == "CANCELED"
    assert (await venue.fetch_order("g2")).status is OrderStatus.CANCELLED


async def test_fetch_order_of_an_unknown_id(venue: CcxtVenue) -> None:
    with pytest.raises(VenueError) as raised:
        await venue.fetch_order("nobody", symbol="BTCUSDT")
    assert isinstance(raised.value.__cause__, ccxt_async.OrderNotFound)


async def test_insufficient_balance_is_rejected_with_the_reason(
    venue: CcxtVenue, server: LoopbackKrakenPrivate
) -> None:
    ex = await venue.submit(order("i1", Side.SELL, 5.0))  # holds 1 BTC
    assert ex.status is OrderStatus.REJECTED and ex.reason == "insufficient_balance"
    assert not server.book.orders


# --- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret", "error"),
    [
        ("wrong-key", SECRET, "EAPI:Invalid key"),
        (KEY, base64.b64encode(b"wrong").decode(), "EAPI:Invalid signature"),
    ],
)
async def test_wrong_credentials_are_an_authentication_failure(
    server: LoopbackKrakenPrivate, make_venue: VenueFactory, key: str, secret: str, error: str
) -> None:
    # Kraken's markets are public: start succeeds, the first signed request says why it fails.
    async with make_venue(key=key, secret=secret) as venue:
        with pytest.raises(VenueError, match=error) as raised:
            await venue.balance()
        assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)
        ex = await venue.submit(order("a1", Side.BUY, 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "authentication_failed"
    assert not server.book.orders and server.book.order_posts == 0


async def test_a_replayed_nonce_is_refused(venue: CcxtVenue, server: LoopbackKrakenPrivate) -> None:
    await venue.balance()
    server.last_nonce += 10**12  # another client of the key signed far ahead of ours
    with pytest.raises(VenueError, match="EAPI:Invalid nonce"):
        await venue.balance()


# --- client order ids -------------------------------------------------------------------------


def test_kraken_client_ids_are_valid_deterministic_and_distinct() -> None:
    ids = ["m1", "qt-abc", child_order_id("qt-abc", 1), child_order_id("qt-abc", 2), LONG_ID]
    ids += [child_order_id(LONG_ID, 1), "qt_a.b-1", "qta.b_1", "a" * 19, "a" * 18]
    mapped = [exchange_client_id("kraken", cid) for cid in ids]
    assert all(CLIENT_ID.fullmatch(m) and len(m) <= 18 for m in mapped)
    assert len(set(mapped)) == len(ids)
    assert exchange_client_id("kraken", "qt_a.b-1") == "qt_a.b-1"  # already valid: unchanged
    assert [exchange_client_id("kraken", cid) for cid in ids] == mapped


async def test_a_long_id_is_mapped_and_found_again(
    venue: CcxtVenue, server: LoopbackKrakenPrivate, make_venue: VenueFactory
) -> None:
    cid = child_order_id(LONG_ID, 1)
    resting = await venue.submit_limit(order(cid, Side.BUY, 1.0, limit=90.0))
    assert resting.status is OrderStatus.NEW and resting.client_order_id == cid
    assert list(server.book.orders) == [exchange_client_id("kraken", cid)]
    assert (await venue.fetch_order(cid)).status is OrderStatus.NEW
    assert [o.client_order_id for o in await venue.open_orders()] == [cid]
    # A restarted process maps the id the same way: it finds the order and cancels it.
    async with make_venue() as restarted:
        found = await restarted.lookup(cid, "BTCUSDT")
        assert found is not None and found.venue_order_id == resting.venue_order_id
        assert await restarted.cancel(cid) is True
    assert server.book.order_posts == 1


# --- unknown outcomes ---------------------------------------------------------------------------


async def test_accepted_then_timed_out_submit_resolves_by_client_id(
    server: LoopbackKrakenPrivate, make_venue: VenueFactory
) -> None:
    server.book.order_faults.append(OrderFault(OrderFaultKind.ACCEPT_THEN_TIMEOUT))
    async with make_venue(timeout_ms=300) as venue:
        ex = await venue.submit(order("qt-t-1", Side.BUY, 2.0))
        assert ex.status is OrderStatus.FILLED
        assert ex.avg_price == pytest.approx(100.5) and ex.fees == pytest.approx(201.0 * FEE)
        again = await venue.submit(order("qt-t-1", Side.BUY, 2.0))
        assert again.venue_order_id == ex.venue_order_id
    assert server.book.order_posts == 1 and len(server.book.orders) == 1


@pytest.mark.parametrize("kind", [OrderFaultKind.SERVER_ERROR, OrderFaultKind.RATE_LIMIT])
async def test_error_answer_after_acceptance_resolves_to_the_order(
    venue: CcxtVenue, server: LoopbackKrakenPrivate, kind: OrderFaultKind
) -> None:
    server.book.order_faults.append(OrderFault(kind, accept=True))
    ex = await venue.submit(order("e1", Side.SELL, 1.0))
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(99.0)
    assert server.book.order_posts == 1 and len(server.book.orders) == 1


async def test_error_answer_before_acceptance_is_rejected_after_the_query(
    venue: CcxtVenue, server: LoopbackKrakenPrivate
) -> None:
    server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR))
    ex = await venue.submit(order("r1", Side.SELL, 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "ExchangeNotAvailable"
    assert not server.book.orders
    # Proof of absence: neither list holds the id.
    assert (server.hits[OPEN_ORDERS], server.hits[CLOSED_ORDERS]) == (1, 1)


async def test_an_order_never_found_after_failed_queries_is_unknown(
    server: LoopbackKrakenPrivate, make_venue: VenueFactory
) -> None:
    server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
    server.book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
    async with make_venue(resolve_attempts=2) as venue:
        with pytest.raises(OutcomeUnknown):
            await venue.submit(order("u1", Side.BUY, 1.0))
        ex = await venue.submit(order("u1", Side.BUY, 1.0))  # asks again, never resends
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(100.0)
    assert server.book.order_posts == 1 and server.hits[ADD_ORDER] == 1


async def test_a_submit_of_unknown_outcome_reconciles_to_one_order_by_client_id(
    server: LoopbackKrakenPrivate, make_venue: VenueFactory
) -> None:
    async with make_venue(resolve_attempts=2) as venue:
        world = World(venue)
        # The place is accepted (and filled) but answered 503; both queries fail too.
        server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
        server.book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
        cid = "qt-unknown-outcome-1"  # 20 characters: found again through the mapping
        await world.router.on_intent(
            OrderIntent(ts_ns=1, client_order_id=cid, symbol="BTCUSDT", side=Side.BUY, quantity=1.0)
        )
        (submitted,) = world.seen
        assert isinstance(submitted, OrderSubmitted) and submitted.client_order_id == cid
        assert cid in world.ledger.open
        assert world.router.metrics()["venues"]["kraken"]["outcome_unknown"] == 1

        await world.reconciler.run_once()
    (fill,) = world.of(OrderFilled)
    assert isinstance(fill, OrderFilled)
    assert (fill.client_order_id, fill.quantity, fill.price) == (cid, 1.0, 100.0)
    assert fill.fee == pytest.approx(100.0 * FEE)
    assert not world.ledger.open and not world.of(OrderRejected)
    assert not world.of(ExternalOrderFound)
    assert server.book.order_posts == 1
    assert list(server.book.orders) == [exchange_client_id("kraken", cid)]


async def test_a_resting_order_left_in_the_log_is_cancelled_by_a_new_process(
    server: LoopbackKrakenPrivate, venue: CcxtVenue
) -> None:
    cid = child_order_id("qt-left-in-log", 1)
    placed = server.book.place(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "quantity": "3",
            "price": "100",
            "timeInForce": "GTC",
            "newClientOrderId": exchange_client_id("kraken", cid),
        }
    )  # an earlier process's order: 1 filled at 100, 2 resting
    assert not isinstance(placed, Exception)
    world = World(venue)
    world.ledger.apply(
        OrderSubmitted(
            ts_ns=1,
            seq=1,
            client_order_id=cid,
            venue="kraken",
            symbol="BTCUSDT",
            side=Side.BUY,
            quantity=3.0,
            order_type=OrderType.LIMIT,
        )
    )
    await world.reconciler.run_once()
    (fill,) = world.of(OrderFilled)
    (cancel,) = world.of(OrderCancelled)
    assert isinstance(fill, OrderFilled) and isinstance(cancel, OrderCancelled)
    assert (fill.client_order_id, fill.quantity, fill.price) == (cid, 1.0, 100.0)
    assert cancel.client_order_id == cid and cancel.filled_quantity == 1.0
    assert server.book.orders[exchange_client_id("kraken", cid)].status == "CANCELED"
    assert not world.ledger.open and not world.of(ExternalOrderFound)


async def test_a_restarted_process_asks_before_resubmitting_an_id_kraken_forgot(
    venue: CcxtVenue, server: LoopbackKrakenPrivate, make_venue: VenueFactory
) -> None:
    # Kraken keeps cl_ord_ids unique among open orders only: a filled order's id is free again,
    # so a resubmit from a process that forgot the id must be preceded by a lookup.
    first = await venue.submit(order("once", Side.BUY, 1.0))
    assert first.status is OrderStatus.FILLED
    async with make_venue() as restarted:
        found = await restarted.lookup("once", "BTCUSDT")
        assert found is not None and found.venue_order_id == first.venue_order_id
        again = await restarted.submit(order("once", Side.BUY, 1.0))
    assert again.status is OrderStatus.FILLED and again.venue_order_id == first.venue_order_id
    assert server.book.order_posts == 1 and len(server.book.orders) == 1
