"""CcxtVenue against Coinbase Advanced Trade: ccxt's real coinbase client talking to the loopback
Coinbase server's signed endpoints (tests/support/loopback_coinbase_private.py), which verify the
ES256 JWT of a CDP key (signature, key name, ``uri`` claim, expiry) on every private request.

Coinbase's order query takes only its own order id: the venue keeps the id from the place answer,
and finds an order whose submit had no answer by matching ``client_order_id`` in the product's
order list. The server charges 8 bps and the venue is configured with 10, so a fee that matches
the server's came from the exchange. Nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

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
from quantumtrade.execution.ccxt_venue import CcxtVenue
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
from tests.support.loopback_coinbase_private import (
    CANCEL,
    ORDER,
    ORDER_LIST,
    ORDERS,
    LoopbackCoinbasePrivate,
)

KEY_NAME = "organizations/loopback-org/apiKeys/loopback-key"
FEE = SERVER_FEE_BPS / 1e4


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    """A private key as Coinbase hands out CDP secrets: SEC1 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def server() -> AsyncIterator[LoopbackCoinbasePrivate]:
    async with LoopbackCoinbasePrivate(
        book_markets(),
        key_name=KEY_NAME,
        public_key=PRIVATE_KEY.public_key(),
        balances=BALANCES,
        taker_fee_bps=SERVER_FEE_BPS,
        now_ms=lambda: START_MS,
    ) as srv:
        yield srv


VenueFactory = Callable[..., CcxtVenue]


@pytest.fixture
def make_venue(server: LoopbackCoinbasePrivate) -> VenueFactory:
    def make(*, key: str = KEY_NAME, secret: str = pem(PRIVATE_KEY), **overrides: Any) -> CcxtVenue:
        credentials = Credentials(api_key=key, secret=secret)
        return loopback_venue("coinbase", server.base_url, credentials, **overrides)

    return make


@pytest.fixture
async def venue(make_venue: VenueFactory) -> AsyncIterator[CcxtVenue]:
    async with make_venue() as v:
        yield v


# --- trading ------------------------------------------------------------------------------


async def test_start_loads_spot_markets(venue: CcxtVenue) -> None:
    assert venue.listed("BTCUSDT") and venue.listed("ETHUSDT")
    assert venue.assets("BTCUSDT") == ("BTC", "USDT")
    ob = await venue.order_book("BTCUSDT", depth=2)
    assert ob is not None and ob.asks == tuple(ASKS[:2]) and ob.bids == tuple(BIDS[:2])


async def test_market_buy_sized_in_base_fills_with_the_exchange_fee(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    ex = await venue.submit(order("m1", Side.BUY, 2.0))
    assert ex.status is OrderStatus.FILLED and ex.client_order_id == "m1"
    assert ex.filled_quantity == pytest.approx(2.0)
    assert ex.avg_price == pytest.approx(100.5)
    assert ex.fees == pytest.approx(201.0 * FEE)  # the server's 8 bps, not the configured 10
    # Our id replaced ccxt's ccxt-<uuid>; the buy went out in the base asset, with no price.
    (body,) = server.order_bodies
    assert body["client_order_id"] == "m1" and body["product_id"] == "BTC-USDT"
    assert body["order_configuration"] == {"market_market_ioc": {"base_size": "2"}}
    # The place answer acknowledges: the fills come from the order query by Coinbase's id.
    (placed,) = server.book.orders.values()
    assert ex.venue_order_id and server.hits[ORDER] == 1 and server.hits[ORDER_LIST] == 0
    assert placed.client_order_id == "m1"
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
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    partial = await venue.submit(order("l1", Side.BUY, 5.0, limit=100.5))
    assert partial.status is OrderStatus.CANCELLED
    assert partial.filled_quantity == pytest.approx(1.0)
    assert partial.avg_price == pytest.approx(100.0)
    assert "sor_limit_ioc" in server.order_bodies[-1]["order_configuration"]
    assert await venue.open_orders() == []


async def test_gtc_limit_rests_is_listed_then_cancels(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    resting = await venue.submit_limit(order("g1", Side.BUY, 2.0, limit=99.5))
    assert resting.status is OrderStatus.NEW and not resting.fills
    assert "limit_limit_gtc" in server.order_bodies[-1]["order_configuration"]
    (listed,) = await venue.open_orders()
    assert (listed.client_order_id, listed.quantity, listed.price) == ("g1", 2.0, 99.5)
    assert listed.venue_order_id == resting.venue_order_id
    assert (await venue.balance())["USDT"] == pytest.approx(10_000.0)  # held counts in total
    assert venue.free_balance("USDT") == pytest.approx(10_000.0 - 199.0)

    assert await venue.cancel("g1") is True
    assert (await venue.fetch_order("g1")).status is OrderStatus.CANCELLED
    assert server.book.balances["USDT"].free == pytest.approx(10_000.0)
    assert await venue.cancel("g1") is False  # nothing open under that id
    assert await venue.cancel("never-sent") is False


async def test_an_order_that_closes_before_the_cancel_is_not_cancelled(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    # Coinbase cancels by its order id: the venue asks for the order, and it closes in between;
    # Coinbase's refusal (a bare BadRequest through ccxt) is then told apart by asking again.
    await venue.submit_limit(order("g2", Side.BUY, 1.0, limit=99.5))
    server.after_lookup.append(lambda: server.book.cancel(server.book.orders["g2"]))
    assert await venue.cancel("g2") is False
    assert server.hits[CANCEL] == 1 and server.book.orders["g2"].status == "CANCELED"


async def test_open_orders_pages_through_the_list(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    cids = [f"g{i}" for i in range(5)]  # the server pages by 2
    for i, cid in enumerate(cids):
        await venue.submit_limit(order(cid, Side.BUY, 0.1, limit=90.0 + i))
    assert sorted(o.client_order_id for o in await venue.open_orders()) == cids


async def test_insufficient_balance_is_rejected_with_the_reason(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    ex = await venue.submit(order("i1", Side.SELL, 5.0))  # holds 1 BTC
    assert ex.status is OrderStatus.REJECTED and ex.reason == "insufficient_balance"
    assert not server.book.orders


# --- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        (KEY_NAME, pem(ec.generate_private_key(ec.SECP256R1()))),  # another key's signature
        ("organizations/loopback-org/apiKeys/other", pem(PRIVATE_KEY)),  # another key name
    ],
)
async def test_wrong_credentials_fail_start_as_an_authentication_error(
    server: LoopbackCoinbasePrivate, make_venue: VenueFactory, key: str, secret: str
) -> None:
    # ccxt's load_markets asks the signed transaction_summary once it has keys.
    with pytest.raises(VenueError, match="load_markets") as raised:
        async with make_venue(key=key, secret=secret):
            pass
    assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)
    assert server.book.order_posts == 0


async def test_an_expired_token_is_refused(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    await venue.balance()
    server.wall_s = lambda: time.time() + 600  # ccxt's tokens live 120 s
    with pytest.raises(VenueError) as raised:
        await venue.balance()
    assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)
    ex = await venue.submit(order("x1", Side.BUY, 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "authentication_failed"
    assert server.book.order_posts == 0


# --- unknown outcomes ---------------------------------------------------------------------------


async def test_accepted_then_timed_out_submit_resolves_by_client_id(
    server: LoopbackCoinbasePrivate, make_venue: VenueFactory
) -> None:
    server.book.order_faults.append(OrderFault(OrderFaultKind.ACCEPT_THEN_TIMEOUT))
    async with make_venue(timeout_ms=300) as venue:
        ex = await venue.submit(order("qt-t-1", Side.BUY, 2.0))
        assert ex.status is OrderStatus.FILLED
        assert ex.avg_price == pytest.approx(100.5) and ex.fees == pytest.approx(201.0 * FEE)
        again = await venue.submit(order("qt-t-1", Side.BUY, 2.0))
        assert again.venue_order_id == ex.venue_order_id
    assert server.book.order_posts == 1 and len(server.book.orders) == 1
    # Found in the product's list from shortly before the send; then queried by its id.
    (query,) = server.list_queries
    assert query["product_ids"] == ["BTC-USDT"] and query["start_date"]
    assert server.hits[ORDER] == 1


@pytest.mark.parametrize("kind", [OrderFaultKind.SERVER_ERROR, OrderFaultKind.RATE_LIMIT])
async def test_error_answer_after_acceptance_resolves_to_the_order(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate, kind: OrderFaultKind
) -> None:
    server.book.order_faults.append(OrderFault(kind, accept=True))
    ex = await venue.submit(order("e1", Side.SELL, 1.0))
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(99.0)
    assert server.book.order_posts == 1 and len(server.book.orders) == 1


async def test_error_answer_before_acceptance_is_rejected_after_the_list(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate
) -> None:
    # Other orders of the product, over more than one page, do not match.
    for i in range(3):
        await venue.submit_limit(order(f"other{i}", Side.BUY, 0.1, limit=90.0))
    server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR))
    ex = await venue.submit(order("r1", Side.SELL, 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "ExchangeNotAvailable"
    assert "r1" not in server.book.orders
    assert len(server.list_queries) == 2 and server.list_queries[1]["cursor"] == ["2"]


async def test_an_order_never_found_after_failed_queries_is_unknown(
    server: LoopbackCoinbasePrivate, make_venue: VenueFactory
) -> None:
    server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
    server.book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
    async with make_venue(resolve_attempts=2) as venue:
        with pytest.raises(OutcomeUnknown):
            await venue.submit(order("u1", Side.BUY, 1.0))
        ex = await venue.submit(order("u1", Side.BUY, 1.0))  # asks again, never resends
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(100.0)
    assert server.book.order_posts == 1 and server.hits[ORDERS] == 1


async def test_a_submit_of_unknown_outcome_reconciles_to_one_order_by_client_id(
    server: LoopbackCoinbasePrivate, make_venue: VenueFactory
) -> None:
    async with make_venue(resolve_attempts=2) as venue:
        world = World(venue)
        # The place is accepted (and filled) but answered 503; both queries fail too.
        server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
        server.book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
        cid = "qt-unknown-outcome-1"
        await world.router.on_intent(
            OrderIntent(ts_ns=1, client_order_id=cid, symbol="BTCUSDT", side=Side.BUY, quantity=1.0)
        )
        (submitted,) = world.seen
        assert isinstance(submitted, OrderSubmitted) and submitted.client_order_id == cid
        assert cid in world.ledger.open
        assert world.router.metrics()["venues"]["coinbase"]["outcome_unknown"] == 1

        await world.reconciler.run_once()
    (fill,) = world.of(OrderFilled)
    assert isinstance(fill, OrderFilled)
    assert (fill.client_order_id, fill.quantity, fill.price) == (cid, 1.0, 100.0)
    assert fill.fee == pytest.approx(100.0 * FEE)
    assert not world.ledger.open and not world.of(OrderRejected)
    assert not world.of(ExternalOrderFound)
    assert server.book.order_posts == 1 and list(server.book.orders) == [cid]


async def test_a_restarted_process_finds_an_order_in_the_whole_history(
    venue: CcxtVenue, server: LoopbackCoinbasePrivate, make_venue: VenueFactory
) -> None:
    first = await venue.submit(order("once", Side.BUY, 1.0))
    for i in range(3):  # newer orders push it to the second page
        await venue.submit_limit(order(f"later{i}", Side.BUY, 0.1, limit=90.0))
    async with make_venue() as restarted:
        found = await restarted.lookup("once", "BTCUSDT")
        assert found is not None and found.venue_order_id == first.venue_order_id
        assert found.status is OrderStatus.FILLED
        assert "start_date" not in server.list_queries[-1]  # no send time known: all of it
        assert await restarted.lookup("nobody", "BTCUSDT") is None
        again = await restarted.submit(order("once", Side.BUY, 1.0))  # asks, never resends
    assert again.venue_order_id == first.venue_order_id
    assert server.book.order_posts == 4


async def test_a_resting_order_left_in_the_log_is_cancelled_by_a_new_process(
    server: LoopbackCoinbasePrivate, venue: CcxtVenue
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
            "newClientOrderId": cid,
        }
    )  # an earlier process's order: 1 filled at 100, 2 resting
    assert not isinstance(placed, Exception)
    world = World(venue)
    world.ledger.apply(
        OrderSubmitted(
            ts_ns=1,
            seq=1,
            client_order_id=cid,
            venue="coinbase",
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
    assert server.book.orders[cid].status == "CANCELED"
    assert not world.ledger.open and not world.of(ExternalOrderFound)


# --- other kinds of key ---------------------------------------------------------------------


def ed25519_secret(key: ed25519.Ed25519PrivateKey) -> str:
    """An Ed25519 CDP secret as Coinbase hands it out: base64 of the seed and the public key."""
    raw = serialization.Encoding.Raw
    seed = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + public).decode()


@pytest.mark.parametrize("kind", ["ed25519", "legacy"])
async def test_ed25519_and_legacy_keys_trade_and_wrong_ones_fail(kind: str) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    right, wrong = (
        (ed25519_secret(ed_key), ed25519_secret(ed25519.Ed25519PrivateKey.generate()))
        if kind == "ed25519"
        else ("legacy-secret", "other-secret")
    )
    # A legacy key is a plain id (ccxt signs any key named organizations/... with a JWT).
    key, auth = (
        (KEY_NAME, {"public_key": ed_key.public_key()})
        if kind == "ed25519"
        else ("legacy-key-id", {"legacy_secret": right})
    )
    async with LoopbackCoinbasePrivate(
        book_markets(), key_name=key, balances=BALANCES, now_ms=lambda: START_MS, **auth
    ) as server:
        credentials = Credentials(api_key=key, secret=right)
        async with loopback_venue("coinbase", server.base_url, credentials) as venue:
            ex = await venue.submit(order("k1", Side.BUY, 1.0))
            assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(100.0)
            assert (await venue.balance())["BTC"] == pytest.approx(2.0)
        credentials = Credentials(api_key=key, secret=wrong)
        with pytest.raises(VenueError) as raised:
            async with loopback_venue("coinbase", server.base_url, credentials):
                pass
        assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)
        assert server.book.order_posts == 1
