"""What the CcxtVenue tests against the signed loopbacks (OKX, KuCoin, Kraken, Coinbase) share: a
small book with known levels, a venue built for a loopback server, the intents they send, and a
router with a reconciler over one venue."""

from __future__ import annotations

from typing import Any

import msgspec

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import Credentials
from quantumtrade.events import (
    Event,
    ExternalOrderFound,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderType,
    Side,
)
from quantumtrade.execution.ccxt_venue import CcxtVenue, CcxtVenueConfig
from quantumtrade.execution.reconcile import OrderLedger, Reconciler
from quantumtrade.execution.router import OrderRouter
from tests.support.loopback_binance import Market, market

START_MS = 1_700_000_000_000
ASKS = [(100.0, 1.0), (101.0, 2.0), (102.0, 5.0)]
BIDS = [(99.0, 1.0), (98.0, 2.0), (97.0, 5.0)]
BALANCES = {"USDT": 10_000.0, "BTC": 1.0}
SERVER_FEE_BPS = 8.0
"""The servers' taker fee: the venue is configured with 10 bps, so a fee that matches this one
came from the exchange."""


def book_markets() -> dict[str, Market]:
    """BTCUSDT with ``ASKS`` and ``BIDS`` as its book, and ETHUSDT."""
    bars = [(START_MS - i * 60_000, 100.0, 100.5, 99.5, 100.0, 10.0) for i in range(5)]
    return {
        "BTCUSDT": market("BTCUSDT", bars, BIDS, ASKS),
        "ETHUSDT": market("ETHUSDT", [(START_MS, 10.0, 10.0, 10.0, 10.0, 1.0)]),
    }


def loopback_venue(
    exchange: str, base_url: str, credentials: Credentials, **overrides: Any
) -> CcxtVenue:
    """A ``CcxtVenue`` (not started) on a loopback server: rate limiting off (the server has
    none to respect), no backoff between order queries (the manual clock is never advanced)."""
    fields: dict[str, Any] = {
        "exchange": exchange,
        "api_url": base_url,
        "enable_rate_limit": False,
        "timeout_ms": 2_000,
        "resolve_backoff_ms": 0,
        **overrides,
    }
    return CcxtVenue(
        msgspec.convert(fields, CcxtVenueConfig),
        credentials=credentials,
        clock=ManualClock(start_ns=START_MS * 1_000_000),
    )


def order(cid: str, side: Side, qty: float, limit: float | None = None) -> OrderIntent:
    """A BTCUSDT intent: MARKET, or LIMIT at ``limit``."""
    return OrderIntent(
        ts_ns=0,
        client_order_id=cid,
        symbol="BTCUSDT",
        side=side,
        quantity=qty,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=limit,
    )


class World:
    """A router and a reconciler over one venue, on one bus with the order ledger; ``seen``
    holds the order events in the order they were published."""

    def __init__(self, venue: CcxtVenue) -> None:
        clock = ManualClock(start_ns=START_MS * 1_000_000)
        self.bus = EventBus(clock=clock)
        self.ledger = OrderLedger()
        self.seen: list[Event] = []
        for event_type, handler in self.ledger.handlers():
            self.bus.subscribe(event_type, handler)
        for t in (OrderSubmitted, OrderFilled, OrderCancelled, OrderRejected, ExternalOrderFound):
            self.bus.subscribe(t, self.seen.append)
        self.router = OrderRouter(bus=self.bus, clock=clock, venues=[venue])
        self.reconciler = Reconciler(
            bus=self.bus, clock=clock, ledger=self.ledger, venues={venue.name: venue}
        )

    def of(self, event_type: type[Event]) -> list[Event]:
        return [e for e in self.seen if isinstance(e, event_type)]
