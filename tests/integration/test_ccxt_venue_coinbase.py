"""CcxtVenue and Coinbase: refused for live trading (see ``UNSUPPORTED`` in ccxt_venue.py).

ccxt's coinbase client (4.5) sends ``ccxt-<uuid>`` as the ``client_order_id`` whatever it is
given, and Coinbase Advanced Trade looks an order up by its own ``order_id`` only, so the venue
could neither find an order again after a submit of unknown outcome nor reconcile it by our id.
The config says so instead of trading blind; market data from Coinbase is unaffected.
"""

from __future__ import annotations

import msgspec
import pytest

from quantumtrade.data.ccxt_source import EXCHANGE_IDS, CcxtSourceConfig
from quantumtrade.execution.ccxt_venue import UNSUPPORTED, CcxtVenueConfig


def test_a_coinbase_venue_is_refused_with_the_reason() -> None:
    with pytest.raises(msgspec.ValidationError, match="'coinbase' cannot trade live") as raised:
        msgspec.convert({"exchange": "coinbase"}, CcxtVenueConfig)
    assert "client order id" in str(raised.value)
    # Market data from Coinbase stays available.
    assert msgspec.convert({"exchange": "coinbase"}, CcxtSourceConfig).exchange == "coinbase"


def test_every_other_exchange_is_a_venue() -> None:
    tradable = [e for e in EXCHANGE_IDS if e not in UNSUPPORTED]
    assert tradable == ["binance", "kraken", "kucoin", "okx"]
    for exchange in tradable:
        assert msgspec.convert({"exchange": exchange}, CcxtVenueConfig).exchange == exchange
