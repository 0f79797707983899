"""CcxtVenue against KuCoin: ccxt's real kucoin client talking to the loopback KuCoin server's
signed HF endpoints (tests/support/loopback_kucoin_private.py), which check KuCoin's v2 key
headers (the passphrase signed with the secret) on every private request.

The server charges 8 bps and the venue is configured with 10, so a fee that matches the server's
came from the exchange. Nothing here leaves 127.0.0.1; rate limiting is off as in
test_ccxt_venue.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import Credentials
from quantumtrade.errors import VenueError
from quantumtrade.events import OrderFilled, OrderIntent, OrderSubmitted, Side
from quantumtrade.execution.ccxt_venue import CcxtVenue, exchange_client_id
from quantumtrade.execution.reconcile import OrderLedger, Reconciler
from quantumtrade.execution.router import OrderRouter
from quantumtrade.execution.venue import OrderStatus
from tests.support.ccxt_venue_setup import (
    BALANCES,
    SERVER_FEE_BPS,
    START_MS,
    book_markets,
    loopback_venue,
    order,
)
from tests.support.loopback_binance_private import OrderFault, OrderFaultKind
from tests.support.loopback_kucoin_private import BY_CLIENT_ID, CLIENT_ID, LoopbackKucoinPrivate

KEY, SECRET, PASSPHRASE = "kc-key", "kc-secret", "kc-passphrase"
FEE = SERVER_FEE_BPS / 1e4
# What ccxt's kucoin client asks while loading markets once it has keys (signed ones included).
MARKET_LOADS = {
    "/api/ua/v1/account/mode": 1,
    "/api/v1/hf/accounts/opened": 1,
    "/api/v3/margin/symbols": 1,
    "/api/v1/isolated/symbols": 1,
    "/api/v2/symbols": 1,
    "/api/v3/currencies": 1,
}


@pytest.fixture
async def server() -> AsyncIterator[LoopbackKucoinPrivate]:
    async with LoopbackKucoinPrivate(
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
def make_venue(server: LoopbackKucoinPrivate) -> VenueFactory:
    def make(*, key: str = KEY, passphrase: str = PASSPHRASE, **overrides: Any) -> CcxtVenue:
        credentials = Credentials(api_key=key, secret=SECRET, password=passphrase)
        return loopback_venue("kucoin", server.base_url, credentials, **overrides)

    return make


@pytest.fixture
async def venue(make_venue: VenueFactory) -> AsyncIterator[CcxtVenue]:
    async with make_venue() as v:
        yield v


async def test_market_buy_fills_with_the_exchange_fee_and_moves_the_balance(
    venue: CcxtVenue, server: LoopbackKucoinPrivate
) -> None:
    assert {path: server.hits[path] for path in MARKET_LOADS} == MARKET_LOADS
    ex = await venue.submit(order("qt-m-1", Side.BUY, 2.0))
    assert ex.status is OrderStatus.FILLED and ex.client_order_id == "qt-m-1"
    assert ex.filled_quantity == pytest.approx(2.0) and ex.avg_price == pytest.approx(100.5)
    assert ex.fees == pytest.approx(201.0 * FEE)  # the server's 8 bps, not the configured 10
    (body,) = server.order_bodies
    assert (body["clientOid"], body["size"], body["type"]) == ("qt-m-1", "2", "market")
    assert server.hits[BY_CLIENT_ID] == 1  # the place answer only acknowledges
    balance = await venue.balance()
    assert balance["BTC"] == pytest.approx(3.0)
    assert balance["USDT"] == pytest.approx(10_000.0 - 201.0 * (1 + FEE))


async def test_limit_ioc_fills_what_it_can_and_ends(
    venue: CcxtVenue, server: LoopbackKucoinPrivate
) -> None:
    ex = await venue.submit(order("l1", Side.BUY, 5.0, limit=100.5))
    assert ex.status is OrderStatus.CANCELLED
    assert ex.filled_quantity == pytest.approx(1.0) and ex.avg_price == pytest.approx(100.0)
    assert server.order_bodies[-1]["timeInForce"] == "IOC"


async def test_gtc_limit_rests_is_listed_then_cancels(
    venue: CcxtVenue, server: LoopbackKucoinPrivate
) -> None:
    cid = "qt-sig.9-1"  # "." is not a clientOid character: sent mapped, found by ours
    assert not CLIENT_ID.fullmatch(cid)
    resting = await venue.submit_limit(order(cid, Side.BUY, 2.0, limit=99.5))
    assert resting.status is OrderStatus.NEW and not resting.fills
    assert list(server.book.orders) == [exchange_client_id("kucoin", cid)]
    # HF accounts list open orders per symbol: the venue asks which symbols have some first.
    (listed,) = await venue.open_orders()
    assert (listed.client_order_id, listed.quantity, listed.price) == (cid, 2.0, 99.5)
    assert server.hits["/api/v1/hf/orders/active/symbols"] == 1
    assert await venue.cancel(cid) is True
    assert (await venue.fetch_order(cid)).status is OrderStatus.CANCELLED
    assert await venue.cancel(cid) is False
    assert await venue.open_orders() == []


async def test_resubmit_from_a_fresh_venue_resolves_the_duplicate(
    venue: CcxtVenue, server: LoopbackKucoinPrivate, make_venue: VenueFactory
) -> None:
    first = await venue.submit(order("d1", Side.SELL, 1.0))
    async with make_venue() as restarted:
        again = await restarted.submit(order("d1", Side.SELL, 1.0))
    assert again.status is OrderStatus.FILLED and again.venue_order_id == first.venue_order_id
    assert server.book.order_posts == 2 and len(server.book.orders) == 1


async def test_insufficient_balance_is_rejected_with_the_reason(
    venue: CcxtVenue, server: LoopbackKucoinPrivate
) -> None:
    ex = await venue.submit(order("i1", Side.SELL, 5.0))  # holds 1 BTC
    assert ex.status is OrderStatus.REJECTED and ex.reason == "insufficient_balance"
    assert not server.book.orders


@pytest.mark.parametrize(
    ("key", "passphrase", "code"),
    [(KEY, "wrong-passphrase", "400004"), ("wrong-key", PASSPHRASE, "400003")],
)
async def test_wrong_credentials_fail_start_with_the_exchange_s_reason(
    make_venue: VenueFactory, key: str, passphrase: str, code: str
) -> None:
    with pytest.raises(VenueError, match=code) as raised:
        async with make_venue(key=key, passphrase=passphrase):
            pass
    assert isinstance(raised.value.__cause__, ccxt_async.AuthenticationError)


async def test_a_passphrase_changed_after_start_rejects_orders_without_sending_them(
    venue: CcxtVenue, server: LoopbackKucoinPrivate
) -> None:
    server.passphrase = "rotated"
    ex = await venue.submit(order("a1", Side.BUY, 1.0))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "authentication_failed"
    assert not server.book.orders and server.book.order_posts == 0


async def test_a_submit_of_unknown_outcome_reconciles_to_one_order_by_client_id(
    server: LoopbackKucoinPrivate, make_venue: VenueFactory
) -> None:
    async with make_venue(resolve_attempts=2) as venue:
        clock = ManualClock(start_ns=START_MS * 1_000_000)
        bus = EventBus(clock=clock)
        ledger = OrderLedger()
        for event_type, handler in ledger.handlers():
            bus.subscribe(event_type, handler)
        fills: list[OrderFilled] = []
        submitted: list[OrderSubmitted] = []
        bus.subscribe(OrderFilled, fills.append)
        bus.subscribe(OrderSubmitted, submitted.append)
        router = OrderRouter(bus=bus, clock=clock, venues=[venue])
        # The place is accepted (and filled) but answered 503; both queries fail too.
        server.book.order_faults.append(OrderFault(OrderFaultKind.SERVER_ERROR, accept=True))
        server.book.query_faults.extend([OrderFault(OrderFaultKind.SERVER_ERROR)] * 2)
        await router.on_intent(
            OrderIntent(
                ts_ns=1, client_order_id="unk.1", symbol="BTCUSDT", side=Side.BUY, quantity=1.0
            )
        )
        assert [(s.client_order_id, s.venue_order_id) for s in submitted] == [("unk.1", "")]
        assert "unk.1" in ledger.open and not fills  # in flight: neither filled nor rejected
        await Reconciler(bus=bus, clock=clock, ledger=ledger, venues={"kucoin": venue}).run_once()
    (fill,) = fills
    assert (fill.client_order_id, fill.quantity, fill.price) == ("unk.1", 1.0, 100.0)
    assert fill.fee == pytest.approx(100.0 * FEE)
    assert not ledger.open
    assert server.book.order_posts == 1 and len(server.book.orders) == 1
