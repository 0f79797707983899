"""The exchange adapters' registry, and adapter behaviours checked without an exchange.

The adapters' calls to an exchange are tested end to end against the loopback servers
(tests/integration/test_ccxt_venue*.py); these check the table and the pure parts.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from quantumtrade.credentials import EXCHANGES
from quantumtrade.data.ccxt_source import EXCHANGE_IDS
from quantumtrade.events import OrderIntent, OrderType, Side
from quantumtrade.execution.exchanges import (
    ADAPTERS,
    CoinbaseAdapter,
    KrakenAdapter,
    UnifiedAdapter,
    exchange_client_id,
    new_adapter,
)
from quantumtrade.execution.venue import OrderStatus

# Ids the router makes: a plain one, a split child, and one with a dot, up to 36 characters.
ROUTER_IDS = ("m1", "qt-7f3a9c-2", "qt_a.b-1", "x" * 30 + "-child")


def fake_client() -> Any:
    """What an adapter touches of a ccxt client when it is made and shapes an order."""
    return SimpleNamespace(
        options={},
        exceptions={"exact": {}},
        amount_to_precision=lambda symbol, amount: f"{amount:.8f}",
    )


def intent(side: Side, order_type: OrderType, cid: str = "qt-1") -> OrderIntent:
    return OrderIntent(
        ts_ns=0,
        client_order_id=cid,
        symbol="BTCUSDT",
        side=side,
        quantity=0.5,
        order_type=order_type,
        limit_price=100.0 if order_type is OrderType.LIMIT else None,
    )


def test_every_supported_exchange_has_its_own_adapter() -> None:
    assert set(ADAPTERS) == set(EXCHANGE_IDS) == set(EXCHANGES)
    for exchange in EXCHANGE_IDS:
        adapter = new_adapter(exchange, fake_client())
        assert type(adapter) is ADAPTERS[exchange]
        assert type(adapter) is not UnifiedAdapter, exchange


def test_an_unknown_exchange_gets_ccxt_s_unified_behaviour() -> None:
    client = fake_client()
    adapter = new_adapter("bitstamp", client)
    assert type(adapter) is UnifiedAdapter
    assert client.options == {} and client.exceptions == {"exact": {}}
    params = adapter.order_params(intent(Side.BUY, OrderType.MARKET), "BTC/USDT", sent_ms=0)
    assert params == {"clientOrderId": "qt-1"}
    assert all(exchange_client_id("bitstamp", cid) == cid for cid in ROUTER_IDS)


@pytest.mark.parametrize(
    ("exchange", "allowed", "longest"),
    [("okx", r"[A-Za-z0-9]+", 32), ("kucoin", r"[A-Za-z0-9_-]+", 40), ("kraken", r"[\w.-]+", 18)],
)
def test_client_ids_are_shaped_to_what_the_exchange_accepts(
    exchange: str, allowed: str, longest: int
) -> None:
    adapter = new_adapter(exchange, fake_client())
    shaped = [adapter.client_id(cid) for cid in ROUTER_IDS]
    assert all(re.fullmatch(allowed, s) and len(s) <= longest for s in shaped), shaped
    assert len(set(shaped)) == len(ROUTER_IDS)  # distinct ids stay distinct
    assert shaped == [exchange_client_id(exchange, cid) for cid in ROUTER_IDS]  # every process
    assert adapter.client_id("m1") == "m1"  # a valid id goes unchanged
    # The negative control: one an exchange refuses is changed, and not by Binance.
    assert adapter.client_id("qt_a.b-1" * 6) != "qt_a.b-1" * 6
    assert exchange_client_id("binance", "qt_a.b-1" * 6) == "qt_a.b-1" * 6


def test_duplicate_id_answers_are_each_exchange_s_own() -> None:
    binance = ccxt_async.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}')
    okx = ccxt_async.InvalidOrder('okx {"sCode":"51016","sMsg":"Duplicated clOrdId"}')
    kraken = ccxt_async.InvalidOrder("kraken EOrder:Duplicate cl_ord_id")  # undocumented
    adapters = {name: new_adapter(name, fake_client()) for name in EXCHANGE_IDS}
    assert adapters["binance"].is_duplicate(binance)
    assert adapters["okx"].is_duplicate(okx)
    assert not adapters["okx"].is_duplicate(binance)
    assert not any(a.is_duplicate(kraken) for a in adapters.values())


def test_reject_reasons_and_kraken_s_auth_error() -> None:
    refused = ccxt_async.ExchangeError('coinbase {"error":"INSUFFICIENT_FUND"}')
    assert new_adapter("coinbase", fake_client()).reject_reason(refused) == "insufficient_balance"
    assert new_adapter("binance", fake_client()).reject_reason(refused) == "venue_rejected"
    funds = ccxt_async.InsufficientFunds("binance -2010 Account has insufficient balance")
    assert new_adapter("binance", fake_client()).reject_reason(funds) == "insufficient_balance"
    client = fake_client()
    new_adapter("kraken", client)
    assert client.exceptions["exact"] == {"EAPI:Invalid signature": ccxt_async.AuthenticationError}
    assert KrakenAdapter.auth_errors and not CoinbaseAdapter.auth_errors


def test_coinbase_sizes_market_buys_in_the_base_asset() -> None:
    client = fake_client()
    adapter = new_adapter("coinbase", client)
    assert client.options == {"fetchBalance": "v3PrivateGetBrokerageAccounts"}
    buy = adapter.order_params(intent(Side.BUY, OrderType.MARKET), "BTC/USD", sent_ms=5)
    assert buy == {
        "client_order_id": "qt-1",
        "createMarketBuyOrderRequiresPrice": False,
        "order_configuration": {"market_market_ioc": {"base_size": "0.50000000"}},
    }
    # Sells and limit buys are sized in the base asset by ccxt already.
    for side, kind in ((Side.SELL, OrderType.MARKET), (Side.BUY, OrderType.LIMIT)):
        params = adapter.order_params(intent(side, kind), "BTC/USD", sent_ms=5)
        assert params == {"client_order_id": "qt-1"}
    binance = new_adapter("binance", fake_client())
    params = binance.order_params(intent(Side.BUY, OrderType.MARKET), "BTC/USDT", sent_ms=5)
    assert params == {"newClientOrderId": "qt-1"}


def test_raw_order_states_are_read_before_ccxt_s() -> None:
    # Coinbase's FAILED reads "canceled" through ccxt; the order never existed.
    failed = {"status": "canceled", "info": {"status": "FAILED"}}
    assert new_adapter("coinbase", fake_client()).status(failed) is OrderStatus.REJECTED
    assert new_adapter("okx", fake_client()).status(failed) is OrderStatus.CANCELLED
    pending_cancel = {"status": "canceling", "info": {"status": "PENDING_CANCEL"}}
    assert new_adapter("binance", fake_client()).status(pending_cancel) is OrderStatus.CANCELLED
    assert new_adapter("kraken", fake_client()).status(pending_cancel) is None
