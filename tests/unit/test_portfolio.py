"""Average-cost position arithmetic, checked against values worked out by hand."""

from __future__ import annotations

import asyncio

import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import OrderFilled, PositionChanged, Side
from quantumtrade.portfolio import Portfolio, Position, apply_fill


def test_long_add_partial_close_flip_and_close_short() -> None:
    p = Position(symbol="BTCUSDT")
    p = apply_fill(p, 2.0, 100.0, 0.2)  # open long 2 @ 100
    assert (p.quantity, p.avg_price, p.realized_pnl) == (2.0, 100.0, 0.0)
    p = apply_fill(p, 1.0, 130.0, 0.13)  # add: (2*100 + 1*130) / 3 = 110
    assert p.quantity == 3.0 and p.avg_price == pytest.approx(110.0)
    p = apply_fill(p, -1.0, 120.0, 0.12)  # reduce: 1 * (120 - 110) = +10, average kept
    assert p.quantity == 2.0 and p.avg_price == pytest.approx(110.0)
    assert p.realized_pnl == pytest.approx(10.0)
    p = apply_fill(p, -5.0, 100.0, 0.5)  # flip: close 2 at -10 each = -20, open short 3 @ 100
    assert p.quantity == -3.0 and p.avg_price == 100.0
    assert p.realized_pnl == pytest.approx(-10.0)
    p = apply_fill(p, 1.0, 90.0, 0.09)  # cover 1 of the short: (100 - 90) * 1 = +10
    assert p.quantity == -2.0 and p.avg_price == 100.0
    assert p.realized_pnl == pytest.approx(0.0)
    p = apply_fill(p, 2.0, 95.0, 0.19)  # close: (100 - 95) * 2 = +10, flat
    assert p.quantity == 0.0 and p.avg_price == 0.0
    assert p.realized_pnl == pytest.approx(10.0)
    assert p.fees == pytest.approx(0.2 + 0.13 + 0.12 + 0.5 + 0.09 + 0.19)


def test_short_add_moves_the_average() -> None:
    p = apply_fill(Position(symbol="X"), -1.0, 50.0)
    p = apply_fill(p, -3.0, 54.0)  # (50 + 3*54) / 4 = 53
    assert p.quantity == -4.0 and p.avg_price == pytest.approx(53.0)


def test_float_dust_closes_flat() -> None:
    p = apply_fill(Position(symbol="X"), 0.1 + 0.2, 10.0)
    p = apply_fill(p, -0.3, 11.0)
    assert p.quantity == 0.0 and p.avg_price == 0.0


def _fill(symbol: str, side: Side, qty: float, price: float, fee: float) -> OrderFilled:
    return OrderFilled(
        ts_ns=1,
        client_order_id=f"c-{symbol}-{qty}-{price}",
        venue="paper",
        symbol=symbol,
        side=side,
        quantity=qty,
        price=price,
        fee=fee,
        cumulative_quantity=qty,
        leaves_quantity=0.0,
    )


async def test_portfolio_applies_fills_publishes_and_marks() -> None:
    clock = ManualClock()
    bus = EventBus(clock=clock)
    portfolio = Portfolio(bus=bus, clock=clock)
    changes: list[PositionChanged] = []
    bus.subscribe(OrderFilled, portfolio.on_fill)
    bus.subscribe(PositionChanged, changes.append)
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        await bus.publish(_fill("BTCUSDT", Side.BUY, 2.0, 100.0, 0.2))
        await bus.publish(_fill("ETHUSDT", Side.SELL, 10.0, 20.0, 0.2))
        last = _fill("BTCUSDT", Side.SELL, 1.0, 120.0, 0.12)
        await bus.publish(last)
        await bus.drain()
        await bus.stop()

    assert [(c.symbol, c.quantity) for c in changes] == [
        ("BTCUSDT", 2.0),
        ("ETHUSDT", -10.0),
        ("BTCUSDT", 1.0),
    ]
    assert portfolio.last_fill_seq == last.seq
    btc = portfolio.position("BTCUSDT")
    assert btc.realized_pnl == pytest.approx(20.0) and btc.avg_price == 100.0
    assert set(portfolio.positions()) == {"BTCUSDT", "ETHUSDT"}
    assert portfolio.position("XRPUSDT") == Position(symbol="XRPUSDT")
    assert portfolio.notional("ETHUSDT", 25.0) == pytest.approx(250.0)

    unrealized = portfolio.mark({"BTCUSDT": 110.0, "ETHUSDT": 18.0})
    assert unrealized == pytest.approx({"BTCUSDT": 10.0, "ETHUSDT": 20.0})
    totals = portfolio.totals()
    assert totals["realized"] == pytest.approx(20.0)
    assert totals["unrealized"] == pytest.approx(30.0)
    assert totals["fees"] == pytest.approx(0.52)
    assert totals["net"] == pytest.approx(20.0 + 30.0 - 0.52)


async def test_marks_sum_the_same_in_any_row_order() -> None:
    """The daemon's rows come in the order symbols first arrived, a backtest's in file order:
    the running open PnL (equity, so every size) must not depend on it in the last bit. The
    marks give unrealised PnL of +1e16, +1 and -1e16, whose float sum depends on the order."""
    import numpy as np

    nets = []
    for order in (("AAA", "BBB", "CCC"), ("CCC", "AAA", "BBB")):
        clock = ManualClock()
        bus = EventBus(clock=clock)
        portfolio = Portfolio(bus=bus, clock=clock)
        bus.subscribe(OrderFilled, portfolio.on_fill)
        async with asyncio.TaskGroup() as tg:
            bus.start(tg)
            await bus.publish(_fill("AAA", Side.BUY, 1e14, 1.0, 0.0))
            await bus.publish(_fill("BBB", Side.BUY, 1.0, 1.0, 0.0))
            await bus.publish(_fill("CCC", Side.SELL, 1e14, 1.0, 0.0))
            await bus.drain()
            await bus.stop()
        price = {"AAA": 101.0, "BBB": 2.0, "CCC": 101.0}
        portfolio.set_marks(order, np.array([price[s] for s in order]))
        nets.append(portfolio.net_pnl())
    assert nets[0] == nets[1]
