"""Paper venue: book walking, partial fills, fees, IOC limits, idempotency, rejects, latency."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantumtrade.clock import ManualClock
from quantumtrade.data.source import OrderBook
from quantumtrade.events import OrderIntent, OrderType, Side
from quantumtrade.execution.paper import PaperVenue, PaperVenueConfig
from quantumtrade.execution.venue import OrderStatus, round_to_step, walk_book

BOOK = OrderBook(
    symbol="BTCUSDT",
    ts_ms=1,
    bids=((99.0, 1.0), (98.0, 2.0), (97.0, 3.0)),
    asks=((101.0, 1.0), (102.0, 2.0), (103.0, 3.0)),
)


class Books:
    """A book source the test can change; counts how often it was asked."""

    def __init__(self, *books: OrderBook) -> None:
        self.books = {b.symbol: b for b in books}
        self.calls = 0

    async def __call__(self, symbol: str) -> OrderBook | None:
        self.calls += 1
        return self.books.get(symbol)


def venue(books: Books | None = None, **config: float) -> PaperVenue:
    return PaperVenue(
        clock=ManualClock(),
        books=books or Books(BOOK),
        config=PaperVenueConfig(**config),  # type: ignore[arg-type]
    )


def intent(
    side: Side = Side.BUY,
    quantity: float = 1.0,
    *,
    coid: str = "c1",
    symbol: str = "BTCUSDT",
    limit: float | None = None,
) -> OrderIntent:
    return OrderIntent(
        ts_ns=1,
        client_order_id=coid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        limit_price=limit,
    )


def test_walk_book() -> None:
    assert walk_book(BOOK.asks, 2.5) == pytest.approx((2.5, (101.0 + 1.5 * 102.0) / 2.5))
    assert walk_book(BOOK.asks, 100.0) == pytest.approx((6.0, (101 + 204 + 309) / 6.0))
    assert walk_book((), 1.0) == (0.0, 0.0)


async def test_market_buy_walks_the_asks_with_fees() -> None:
    ex = await venue(taker_fee_bps=10.0).submit(intent(Side.BUY, 2.5))
    assert ex.status is OrderStatus.FILLED and ex.reason == ""
    assert [(f.quantity, f.price) for f in ex.fills] == [(1.0, 101.0), (1.5, 102.0)]
    assert [f.fee for f in ex.fills] == pytest.approx([0.101, 0.153])  # notional * 10 / 1e4
    assert ex.filled_quantity == 2.5
    assert ex.avg_price == pytest.approx((101.0 + 153.0) / 2.5)


async def test_market_sell_walks_the_bids() -> None:
    ex = await venue(taker_fee_bps=0.0).submit(intent(Side.SELL, 3.0))
    assert [(f.quantity, f.price) for f in ex.fills] == [(1.0, 99.0), (2.0, 98.0)]
    assert ex.fees == 0.0


async def test_short_depth_fills_partially_and_cancels_the_rest() -> None:
    ex = await venue().submit(intent(Side.BUY, 10.0))
    assert ex.status is OrderStatus.CANCELLED
    assert ex.reason == "insufficient_liquidity"
    assert ex.filled_quantity == 6.0


async def test_max_book_levels_limits_the_walk() -> None:
    ex = await venue(max_book_levels=2).submit(intent(Side.BUY, 5.0))
    assert ex.status is OrderStatus.CANCELLED and ex.filled_quantity == 3.0


async def test_limit_orders_are_immediate_or_cancel() -> None:
    v = venue()
    ex = await v.submit(intent(Side.BUY, 5.0, limit=102.0, coid="l1"))
    assert [(f.quantity, f.price) for f in ex.fills] == [(1.0, 101.0), (2.0, 102.0)]
    assert ex.status is OrderStatus.CANCELLED and ex.reason == "limit_price"
    ex = await v.submit(intent(Side.SELL, 1.0, limit=99.5, coid="l2"))
    assert ex.status is OrderStatus.CANCELLED and ex.fills == ()
    ex = await v.submit(intent(Side.SELL, 2.0, limit=98.0, coid="l3"))
    assert ex.status is OrderStatus.FILLED
    assert [f.price for f in ex.fills] == [99.0, 98.0]
    assert not await v.cancel("l1")


async def test_resubmit_returns_the_first_answer_without_filling_again() -> None:
    books = Books(BOOK)
    v = venue(books)
    first = await v.submit(intent(Side.BUY, 1.0, coid="dup"))
    again = await v.submit(intent(Side.BUY, 3.0, coid="dup"))
    assert again is first and books.calls == 1


async def test_concurrent_resubmit_during_latency_fills_once() -> None:
    clock = ManualClock()
    books = Books(BOOK)
    v = PaperVenue(clock=clock, books=books, config=PaperVenueConfig(latency_ms=50.0))
    a = asyncio.ensure_future(v.submit(intent(coid="x")))
    b = asyncio.ensure_future(v.submit(intent(coid="x")))
    while clock.sleepers == 0:
        await asyncio.sleep(0)
    assert books.calls == 0  # still travelling to the venue
    clock.advance(0.05)
    first, second = await asyncio.gather(a, b)
    assert first is second and books.calls == 1
    assert clock.sleepers == 0


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        (intent(symbol="NOPEUSDT"), "unknown_symbol"),
        (intent(quantity=0.0), "invalid_quantity"),
        (intent(quantity=float("nan")), "invalid_quantity"),
        (intent(limit=-1.0), "invalid_limit_price"),
        (intent(symbol="EMPTYUSDT"), "empty_book"),
    ],
)
async def test_rejects(order: OrderIntent, reason: str) -> None:
    empty = OrderBook(symbol="EMPTYUSDT", ts_ms=1, bids=(), asks=())
    ex = await venue(Books(BOOK, empty)).submit(order)
    assert ex.status is OrderStatus.REJECTED and ex.reason == reason and ex.fills == ()


async def test_listing_and_book_depth() -> None:
    v = PaperVenue("p2", clock=ManualClock(), books=Books(BOOK), symbols={"BTCUSDT"})
    assert v.listed("BTCUSDT") and not v.listed("ETHUSDT")
    book = await v.order_book("BTCUSDT", depth=2)
    assert book is not None and len(book.asks) == 2 and len(book.bids) == 2
    assert await v.order_book("ETHUSDT") is None
    ex = await v.submit(intent(symbol="ETHUSDT"))
    assert ex.status is OrderStatus.REJECTED and ex.reason == "unknown_symbol"


async def test_a_failing_book_source_raises_and_the_id_can_be_retried() -> None:
    class Flaky(Books):
        async def __call__(self, symbol: str) -> OrderBook | None:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("boom")
            return BOOK

    v = venue(Flaky())
    with pytest.raises(ConnectionError):
        await v.submit(intent(coid="r"))
    ex = await v.submit(intent(coid="r"))
    assert ex.status is OrderStatus.FILLED


async def test_a_quantity_off_the_lot_step_is_rejected_and_one_on_it_fills() -> None:
    v = venue(quantity_step=0.01)
    off = await v.submit(intent(quantity=0.015, coid="off"))
    assert off.status is OrderStatus.REJECTED and off.reason == "lot_size"
    assert v.tradable_quantity("BTCUSDT", 0.015) == 0.01
    assert v.tradable_quantity("BTCUSDT", 0.3) == 0.3  # 0.3 / 0.01 is 29.999…: still 30 steps
    assert v.tradable_quantity("BTCUSDT", 0.004) == 0.0
    on = await v.submit(intent(quantity=0.3, coid="on"))
    assert on.status is OrderStatus.FILLED and on.filled_quantity == pytest.approx(0.3)


async def test_balances_are_checked_and_moved_by_fills() -> None:
    v = PaperVenue(
        clock=ManualClock(),
        books=Books(BOOK),
        config=PaperVenueConfig(taker_fee_bps=10.0, balances={"USDT": 500.0, "BTC": 0.5}),
    )
    assert v.assets("BTCUSDT") == ("BTC", "USDT")
    assert v.free_balance("USDT") == 500.0 and v.free_balance("ETH") == 0.0
    # 1 @ 101 + 1.5 @ 102 = 254 USDT, plus 10 bps.
    bought = await v.submit(intent(Side.BUY, 2.5, coid="b1"))
    assert bought.status is OrderStatus.FILLED
    assert v.free_balance("USDT") == pytest.approx(500.0 - 254.0 * 1.001)
    assert v.free_balance("BTC") == pytest.approx(3.0)
    too_dear = await v.submit(intent(Side.BUY, 3.0, coid="b2"))  # 101 + 204 + 0: > 245.7
    assert too_dear.status is OrderStatus.REJECTED and too_dear.reason == "insufficient_balance"
    too_big = await v.submit(intent(Side.SELL, 3.5, coid="s1"))
    assert too_big.status is OrderStatus.REJECTED and too_big.reason == "insufficient_balance"
    sold = await v.submit(intent(Side.SELL, 3.0, coid="s2"))  # 99 + 196 + 0: the whole book
    assert sold.status is OrderStatus.FILLED and v.free_balance("BTC") == pytest.approx(0.0)
    assert v.balances() == pytest.approx(
        {"USDT": 500.0 - 254.0 * 1.001 + (99.0 + 196.0) * 0.999, "BTC": 0.0}
    )


async def test_without_balances_the_venue_reports_none() -> None:
    v = venue()
    assert v.free_balance("USDT") is None and v.balances() is None


@given(
    units=st.integers(min_value=0, max_value=10**9),
    dust=st.floats(min_value=0.0, max_value=0.999),
    step=st.sampled_from(["0.00000001", "0.00001", "0.001", "0.1", "1", "10", "0.25", "0.003"]),
)
def test_round_to_step_is_the_decimal_floor(units: int, dust: float, step: str) -> None:
    """The quantity an exchange would take: the decimal multiple of the step at or below it,
    as the float that prints as that decimal (what ccxt then sends unchanged)."""
    quantity = float((Decimal(units) + Decimal(repr(dust))) * Decimal(step))
    expected = float(Decimal(int(Decimal(repr(quantity)) / Decimal(step))) * Decimal(step))
    got = round_to_step(quantity, float(step))
    assert got == expected and repr(got) == repr(expected)
    assert got <= quantity


def test_round_to_step_edges() -> None:
    assert round_to_step(1.0 / 60.0, 1e-5) == 0.01666 and repr(0.01666) == "0.01666"
    assert round_to_step(0.3, 0.1) == 0.3  # 0.3 / 0.1 is 2.9999999999999996
    assert round_to_step(0.000009, 1e-5) == 0.0
    assert round_to_step(1.23, 0.0) == 1.23  # no step
