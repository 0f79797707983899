"""CcxtVenue against OKX: ccxt's real okx client talking to the loopback OKX server's signed v5
endpoints (tests/support/loopback_okx_private.py), which check the key, the passphrase, the
timestamp and the signature of every private request as OKX does.

The server charges 8 bps and the venue is configured with 10, so a fee that matches the server's
came from the exchange. Nothing here leaves 127.0.0.1; rate limiting is off as in
test_ccxt_venue.py.
"""

from __future__ import annotations

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
from tests.support.loopback_okx_private import CLIENT_ID, ORDER, LoopbackOkxPrivate, QueryLag

KEY, SECRET, PASSPHRASE = "okx-key", "okx-secret", "okx-passphrase"
FEE = SERVER_FEE_BPS / 1e4
# The router's child ids and the admin API's longest ids are not valid OKX clOrdIds.
LONG_ID = "api-" + "7" * 32  # 36 characters


@pytest.fixture
async def server() -> AsyncIterator[LoopbackOkxPrivate]:
    async with LoopbackOkxPrivate(
        book_markets(),
        api_key=KEY,
        secret=SECRET,
        passphrase=PASSPHRASE,
        balances=BALANCES,
        taker_fee_bps=SERVER_FEE_BPS,
        now_ms=lambda: START_MS,
    ) as srv:
        yield srv


VenueFactory = Callable[..., CcxtVenue]


@pytest.fixture
def make_venue(server: LoopbackOkxPrivate) -> VenueFactory:
    def make(*, secret: str = SECRET, passphrase: str = PASSPHRASE, **overrides: Any) -> CcxtVenue:
        credentials = Credentials(api_key=KEY, secret=secret, password=passphrase)
        return loopback_venue("okx", server.base_url, credentials, **overrides)

    return make


@pytest.fixture
async def venue(make_venue: VenueFactory) -> AsyncIterator[CcxtVenue]:
    async with make_venue() as v:
        yield v


# --- trading ------------------------------------------------------------------------------


async def test_start_loads_spot_markets_and_the_signed_currency_list(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    assert venue.listed("BTCUSDT") and venue.listed("ETHUSDT")
    assert venue.assets("BTCUSDT") == ("BTC", "USDT")
    # ccxt's okx asks the private currency list once it has keys: signed, passphrase included.
    assert server.hits["/api/v5/asset/currencies"] == 1
    ob = await venue.order_book("BTCUSDT", depth=2)
    assert ob is not None and ob.asks == tuple(ASKS[:2]) and ob.bids == tuple(BIDS[:2])


async def test_market_buy_fills_with_the_exchange_fee_and_moves_the_balance(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    ex = await venue.submit(order("m1", Side.BUY, 2.0))
    assert ex.status is OrderStatus.FILLED
    assert (ex.client_order_id, ex.venue_order_id) == ("m1", "1")
    assert ex.filled_quantity == pytest.approx(2.0)
    assert ex.avg_price == pytest.approx(100.5)
    # OKX took the fee from the BTC bought (2 * 8 bps); the venue tells it in USDT at the fill
    # price: the server's 8 bps, not the configured 10.
    assert server.order_json(server.book.orders["m1"])["feeCcy"] == "BTC"
    assert ex.fees == pytest.approx(201.0 * FEE)
    # Our id reached OKX as the clOrdId (not ccxt's broker-prefixed one), sized in BTC.
    (body,) = server.order_bodies
    assert (body["clOrdId"], body["tdMode"], body["sz"]) == ("m1", "cash", "2")
    assert list(server.book.orders) == ["m1"]
    # The place answer is an acknowledgement: the fills come from one query by clOrdId.
    assert server.hits[ORDER] == 1
    balance = await venue.balance()
    assert balance["BTC"] == pytest.approx(3.0 - 2.0 * FEE)
    assert balance["USDT"] == pytest.approx(10_000.0 - 201.0)
    assert venue.free_balance("BTC") == pytest.approx(3.0 - 2.0 * FEE)


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
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    partial = await venue.submit(order("l1", Side.BUY, 5.0, limit=100.5))
    assert partial.status is OrderStatus.CANCELLED
    assert partial.filled_quantity == pytest.approx(1.0)
    assert partial.avg_price == pytest.approx(100.0)
    assert server.order_bodies[-1]["ordType"] == "ioc"
    assert await venue.open_orders() == []


async def test_gtc_limit_rests_is_listed_then_cancels(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    resting = await venue.submit_limit(order("g1", Side.BUY, 2.0, limit=99.5))
    assert resting.status is OrderStatus.NEW and not resting.fills
    assert server.order_bodies[-1]["ordType"] == "limit"
    (listed,) = await venue.open_orders()
    assert (listed.client_order_id, listed.quantity, listed.price) == ("g1", 2.0, 99.5)
    assert (await venue.balance())["USDT"] == pytest.approx(10_000.0)  # locked counts in total
    assert venue.free_balance("USDT") == pytest.approx(10_000.0 - 199.0)

    assert await venue.cancel("g1") is True
    assert (await venue.fetch_order("g1")).status is OrderStatus.CANCELLED
    assert server.book.balances["USDT"].free == pytest.approx(10_000.0)
    assert await venue.cancel("g1") is False  # OKX 51402: completed, nothing open
    assert await venue.cancel("never-sent") is False


async def test_fetch_order_of_an_unknown_id(venue: CcxtVenue) -> None:
    with pytest.raises(VenueError) as raised:
        await venue.fetch_order("nobody", symbol="BTCUSDT")
    assert isinstance(raised.value.__cause__, ccxt_async.OrderNotFound)  # OKX 51603


async def test_insufficient_balance_is_rejected_with_the_reason(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    ex = await venue.submit(order("i1", Side.SELL, 5.0))  # holds 1 BTC
    assert ex.status is OrderStatus.REJECTED and ex.reason == "insufficient_balance"
    assert not server.book.orders


# --- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "passphrase", "code"),
    [(SECRET, "wrong-passphrase", "50105"), ("wrong-secret", PASSPHRASE, "50113")],
)
async def test_wrong_credentials_fail_start_with_the_exchange_s_reason(
    server: LoopbackOkxPrivate, make_venue: VenueFactory, secret: str, passphrase: str, code: str
) -> None:
    venue = make_venue(secret=secret, passphrase=passphrase)
    with pytest.raises(VenueError, match=code) as raised:
        async with venue:
            pass
    assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)
    assert server.hits["/api/v5/asset/currencies"] == 1  # one refused request, no retries


async def test_a_passphrase_changed_after_start_rejects_orders_without_sending_them(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    server.passphrase = "rotated"
    with pytest.raises(VenueError) as raised:
        await venue.balance()
    assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)
    ex = await venue.submit(order("a1", Side.BUY, 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "authentication_failed"
    assert not server.book.orders and server.book.order_posts == 0


# --- client order ids -------------------------------------------------------------------------


def test_okx_client_ids_are_valid_deterministic_and_distinct() -> None:
    ids = ["m1", "qt-abc", child_order_id("qt-abc", 1), child_order_id("qt-abc", 2), LONG_ID]
    ids += [child_order_id(LONG_ID, 1), "qt_a.b-1", "qta.b_1", "a" * 33]
    mapped = [exchange_client_id("okx", cid) for cid in ids]
    assert all(CLIENT_ID.fullmatch(m) for m in mapped)
    assert len(set(mapped)) == len(ids)
    assert exchange_client_id("okx", "m1") == "m1"  # already valid: unchanged
    assert [exchange_client_id("okx", cid) for cid in ids] == mapped


@pytest.mark.parametrize("cid", [child_order_id("qt-sig.7", 1), LONG_ID])
async def test_ids_okx_refuses_are_mapped_and_found_again(
    venue: CcxtVenue, server: LoopbackOkxPrivate, make_venue: VenueFactory, cid: str
) -> None:
    assert not CLIENT_ID.fullmatch(cid)
    resting = await venue.submit_limit(order(cid, Side.BUY, 1.0, limit=90.0))
    assert resting.status is OrderStatus.NEW and resting.client_order_id == cid
    assert list(server.book.orders) == [exchange_client_id("okx", cid)]
    assert (await venue.fetch_order(cid)).status is OrderStatus.NEW
    assert [o.client_order_id for o in await venue.open_orders()] == [cid]
    # A restarted process maps the id the same way: its resubmit meets OKX's duplicate error
    # (51016) and resolves to the order, and it can cancel it by our id.
    async with make_venue() as restarted:
        again = await restarted.submit_limit(order(cid, Side.BUY, 1.0, limit=90.0))
        assert again.status is OrderStatus.NEW
        assert again.venue_order_id == resting.venue_order_id
        assert await restarted.cancel(cid) is True
    assert server.book.order_posts == 2 and len(server.book.orders) == 1


# --- unknown outcomes ---------------------------------------------------------------------------


async def test_an_acknowledged_order_is_asked_until_it_has_matched(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    # Just after the acknowledgement OKX may not show the order yet, then show it unmatched.
    server.query_lags.extend([QueryLag.UNSEEN, QueryLag.MATCHING])
    ex = await venue.submit(order("lag1", Side.BUY, 2.0))
    assert ex.status is OrderStatus.FILLED and ex.filled_quantity == pytest.approx(2.0)
    assert ex.avg_price == pytest.approx(100.5)
    assert server.hits[ORDER] == 3


async def test_a_resting_order_is_not_asked_again_while_it_rests(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    server.query_lags.append(QueryLag.MATCHING)
    ex = await venue.submit_limit(order("lag2", Side.BUY, 1.0, limit=90.0))
    assert ex.status is OrderStatus.NEW and server.hits[ORDER] == 1


async def test_an_acknowledged_order_never_seen_is_unknown_not_rejected(
    server: LoopbackOkxPrivate, make_venue: VenueFactory
) -> None:
    server.query_lags.extend([QueryLag.UNSEEN] * 2)
    async with make_venue(resolve_attempts=2) as venue:
        with pytest.raises(OutcomeUnknown, match="51603"):
            await venue.submit(order("lag3", Side.BUY, 1.0))
        # Acknowledged means placed: a later resubmit finds it instead of sending it again.
        ex = await venue.submit(order("lag3", Side.BUY, 1.0))
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(100.0)
    assert server.book.order_posts == 1


async def test_accepted_then_timed_out_submit_resolves_by_client_id(
    server: LoopbackOkxPrivate, make_venue: VenueFactory
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
    venue: CcxtVenue, server: LoopbackOkxPrivate, kind: OrderFaultKind
) -> None:
    server.book.order_faults.append(OrderFault(kind, accept=True))
    ex = await venue.submit(order("e1", Side.SELL, 1.0))
    assert ex.status is OrderStatus.FILLED and ex.avg_price == pytest.approx(99.0)
    assert server.book.order_posts == 1 and len(server.book.orders) == 1


async def test_error_answer_before_acceptance_is_rejected_after_the_query(
    venue: CcxtVenue, server: LoopbackOkxPrivate
) -> None:
    server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR))
    ex = await venue.submit(order("r1", Side.SELL, 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "ExchangeNotAvailable"
    assert not server.book.orders and server.hits[ORDER] == 1  # proof: OKX said 51603


async def test_a_submit_of_unknown_outcome_reconciles_to_one_order_by_client_id(
    server: LoopbackOkxPrivate, make_venue: VenueFactory
) -> None:
    async with make_venue(resolve_attempts=2) as venue:
        world = World(venue)
        # The place is accepted (and filled) but answered 503; both queries fail too.
        server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
        server.book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
        cid = "qt-unk-1"  # not a valid clOrdId: found again through the mapping
        await world.router.on_intent(
            OrderIntent(ts_ns=1, client_order_id=cid, symbol="BTCUSDT", side=Side.BUY, quantity=1.0)
        )
        (submitted,) = world.seen
        assert isinstance(submitted, OrderSubmitted) and submitted.client_order_id == cid
        assert cid in world.ledger.open
        assert world.router.metrics()["venues"]["okx"]["outcome_unknown"] == 1

        await world.reconciler.run_once()
    (fill,) = world.of(OrderFilled)
    assert isinstance(fill, OrderFilled)
    assert (fill.client_order_id, fill.quantity, fill.price) == (cid, 1.0, 100.0)
    assert fill.fee == pytest.approx(100.0 * FEE)
    assert not world.ledger.open and not world.of(OrderRejected)
    assert not world.of(ExternalOrderFound)
    assert server.book.order_posts == 1 and list(server.book.orders) == [
        exchange_client_id("okx", cid)
    ]


async def test_a_resting_order_left_in_the_log_is_cancelled_by_a_new_process(
    server: LoopbackOkxPrivate, venue: CcxtVenue
) -> None:
    cid = child_order_id("qt-left", 1)
    placed = server.book.place(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "quantity": "3",
            "price": "100",
            "timeInForce": "GTC",
            "newClientOrderId": exchange_client_id("okx", cid),
        }
    )  # an earlier process's order: 1 filled at 100, 2 resting
    assert not isinstance(placed, Exception)
    world = World(venue)
    world.ledger.apply(
        OrderSubmitted(
            ts_ns=1,
            seq=1,
            client_order_id=cid,
            venue="okx",
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
    assert server.book.orders[exchange_client_id("okx", cid)].status == "CANCELED"
    assert not world.ledger.open and not world.of(ExternalOrderFound)
