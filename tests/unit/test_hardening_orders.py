"""Orders to refuse: subnormal quantities, absurd LIMIT prices; negative paper balances."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig
from quantumtrade.events import OrderIntent, OrderRejected, OrderType, Side, TradingState
from quantumtrade.execution.paper import PaperVenueConfig
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.manager import (
    ProposedOrder,
    RiskLimits,
    RiskManager,
    RiskView,
    check_price_band,
)

_ids = itertools.count(1)


def _manager() -> tuple[RiskManager, list[OrderIntent], list[OrderRejected]]:
    clock = ManualClock()
    bus = EventBus(clock=clock)
    portfolio = Portfolio(bus=bus, clock=clock)
    risk = RiskManager(bus=bus, clock=clock, limits=RiskLimits(), portfolio=portfolio)
    intents: list[OrderIntent] = []
    rejects: list[OrderRejected] = []
    bus.subscribe(OrderIntent, intents.append)
    bus.subscribe(OrderRejected, rejects.append)
    return risk, intents, rejects


async def _submit(
    risk: RiskManager, *, quantity: float = 1.0, price: float = 100.0, limit: float | None = None
) -> OrderIntent | OrderRejected:
    return await risk.submit_order(
        client_order_id=f"h-{next(_ids)}",
        symbol="BTCUSDT",
        side=Side.BUY,
        quantity=quantity,
        price=price,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        limit_price=limit,
    )


@pytest.mark.parametrize("quantity", [1e-320, 5e-324, -1.0, 0.0])
async def test_subnormal_or_non_positive_quantity_is_refused(quantity: float) -> None:
    risk, intents, _ = _manager()
    out = await _submit(risk, quantity=quantity)
    assert isinstance(out, OrderRejected) and out.reason == "invalid_order"
    assert not intents


async def test_normal_small_quantity_passes() -> None:
    """Negative control: the smallest normal quantities are still orders."""
    risk, _intents, _ = _manager()
    out = await _submit(risk, quantity=1e-8)
    assert isinstance(out, OrderIntent)


@pytest.mark.parametrize("limit", [1e308, 1e-300, 200.0, 50.0])
async def test_limit_price_outside_the_band_is_refused(limit: float) -> None:
    risk, intents, _ = _manager()  # price_band_bps 1,000: ±10 % of the reference 100
    out = await _submit(risk, limit=limit)
    assert isinstance(out, OrderRejected)
    assert out.reason in {"price_band", "invalid_order"}
    assert not intents


async def test_limit_price_inside_the_band_passes() -> None:
    risk, _intents, _ = _manager()
    out = await _submit(risk, limit=105.0)
    assert isinstance(out, OrderIntent) and out.limit_price == 105.0


def test_price_band_applies_to_limit_price_around_last_close() -> None:
    view = RiskView(
        limits=RiskLimits(price_band_bps=100.0),
        state=TradingState.ACTIVE,
        exposure=0.0,
        orders_last_minute=0,
        last_price=100.0,
    )
    order = ProposedOrder(symbol="X", side=Side.BUY, quantity=1.0, price=100.0)
    assert check_price_band(order, view) is None
    assert check_price_band(msgspec.structs.replace(order, limit_price=100.5), view) is None
    assert check_price_band(msgspec.structs.replace(order, limit_price=1e308), view) == "price_band"
    assert check_price_band(msgspec.structs.replace(order, limit_price=98.9), view) == "price_band"


def test_negative_paper_balance_is_a_config_error() -> None:
    tree = {"execution": {"paper": {"balances": {"USDT": -5.0}}}}
    with pytest.raises(msgspec.ValidationError, match=r"balances"):
        msgspec.convert(tree, AppConfig)
    ok = msgspec.convert({"execution": {"paper": {"balances": {"USDT": 0.0}}}}, AppConfig)
    assert ok.execution.paper.balances == {"USDT": 0.0}
    assert PaperVenueConfig(balances={"USDT": 10.0}).balances["USDT"] == 10.0
