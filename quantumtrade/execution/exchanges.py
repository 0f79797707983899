"""How each exchange differs from ccxt's unified API for trading: one adapter per exchange.

``CcxtVenue`` talks to every exchange through the ``ExchangeAdapter`` protocol and never names
one. ``UnifiedAdapter`` is ccxt's unified behaviour (and the adapter of an exchange not in
``ADAPTERS``); each exchange's class below lists all that exchange's differences, as class
attributes where they are data (client id names and shape, duplicate and auth error texts, raw
order states, ccxt options) and as overridden methods where the calls differ:

* Binance: ``newClientOrderId`` / ``origClientOrderId``; its raw order states.
* OKX: ``clOrdId`` of 1-32 letters and digits; ``51016`` duplicate.
* KuCoin: ``clientOid`` of 1-40; ``400100`` duplicate; a high-frequency account's open orders are
  listed one symbol at a time.
* Kraken: a free-text ``cl_ord_id`` of 1-18; wrong-signature error as an auth error; orders found
  by client id in its open, then closed order list (its order query takes its own ids only).
* Coinbase: ``client_order_id`` (replacing ccxt's ``ccxt-<uuid>``); market buys sized in the
  base asset; orders found and cancelled by Coinbase's order id, learnt from the place answer or
  from its paged order list; open orders from that list; its raw states; Advanced Trade balances;
  ``INSUFFICIENT_FUND`` refusals.

Fees are not here: every exchange's ccxt fee (in the quote or the base asset) is read alike.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import ccxt.async_support as ccxt_async

from quantumtrade.errors import VenueError
from quantumtrade.events import OrderIntent, OrderType, Side
from quantumtrade.execution.venue import OrderStatus

OPEN_STATUSES = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
# ccxt's unified order states.
UNIFIED_STATUS: dict[str, OrderStatus] = {
    "open": OrderStatus.NEW,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
}


class ExchangeAdapter(Protocol):
    """What ``CcxtVenue`` asks of one exchange beyond ccxt's unified calls.

    ``cid`` is always our client order id; ``unified`` a ccxt symbol (``BTC/USDT``). The fetch
    and cancel calls raise ccxt's errors (``OrderNotFound`` when the exchange has no such
    order), which the venue maps.
    """

    def client_id(self, cid: str) -> str:
        """Our client order id as the exchange accepts it (the same in every process)."""
        ...

    def order_params(self, intent: OrderIntent, unified: str, *, sent_ms: int) -> dict[str, Any]:
        """``create_order`` params for an order about to be sent (once per order)."""
        ...

    def placed(self, cid: str, order: dict[str, Any]) -> None:
        """The exchange's answer to a placed order (what it says may be kept for queries)."""
        ...

    def forget(self, cid: str) -> None:
        """The venue no longer remembers ``cid``: drop what was kept for it."""
        ...

    async def fetch_order(self, cid: str, unified: str) -> dict[str, Any]:
        """ccxt's order, found by our client order id."""
        ...

    async def cancel_order(self, cid: str, unified: str) -> None:
        """Cancel the order; ``OrderNotFound`` when nothing is open under ``cid``."""
        ...

    async def fetch_open_orders(self, unified_symbols: Collection[str]) -> list[dict[str, Any]]:
        """The account's open orders, at least those in ``unified_symbols``."""
        ...

    def status(self, order: dict[str, Any]) -> OrderStatus | None:
        """A ccxt order's state (None: a state we do not know)."""
        ...

    def is_duplicate(self, exc: BaseException) -> bool:
        """The place error says the client order id was taken (an earlier submit got through)."""
        ...

    def reject_reason(self, exc: BaseException) -> str:
        """Our reason code for an order the exchange refused with ``exc``."""
        ...


@dataclass(frozen=True, slots=True)
class ClientIdRule:
    """What an exchange accepts as a client order id where the router's ids (letters, digits,
    ``.``, ``_``, ``-``, up to 36) may not pass."""

    valid: re.Pattern[str]
    refused: re.Pattern[str]
    """One character the exchange refuses."""
    longest: int

    def shape(self, cid: str) -> str:
        """``cid`` if valid; else its accepted characters, cut to leave room, plus 12 hex digits
        of its digest: the same id maps to the same exchange id in every process (a restarted
        one finds its orders), and two ids collide only if 48 bits of their digests do."""
        if self.valid.fullmatch(cid):
            return cid
        digest = hashlib.blake2b(cid.encode(), digest_size=6).hexdigest()
        return self.refused.sub("", cid)[: self.longest - len(digest)] + digest


class UnifiedAdapter:
    """ccxt's unified behaviour: an exchange whose client takes ``clientOrderId`` everywhere."""

    create_id_param: ClassVar[str] = "clientOrderId"
    """The ``create_order`` param carrying our client order id."""
    query_id_param: ClassVar[str] = "clientOrderId"
    """The ``fetch_order`` / ``cancel_order`` param naming an order by it."""
    client_id_rule: ClassVar[ClientIdRule | None] = None
    """The ids the exchange accepts (None: any the router makes)."""
    duplicate_markers: ClassVar[tuple[str, ...]] = ()
    """Lower-case texts of the exchange's answer to a client order id already used."""
    auth_errors: ClassVar[tuple[str, ...]] = ()
    """Exchange answers that ccxt leaves a plain ``ExchangeError`` but that mean the
    credentials are wrong."""
    raw_statuses: ClassVar[Mapping[str, OrderStatus]] = {}
    """The exchange's own order states (upper case, as ccxt keeps them in ``info['status']``),
    read before ccxt's unified state where that loses a distinction."""
    options: ClassVar[Mapping[str, Any]] = {}
    """ccxt options set on the client for trading."""

    def __init__(self, client: Any) -> None:
        self.client = client
        client.options.update(self.options)
        exact = client.exceptions["exact"]  # the client's own copy
        for message in self.auth_errors:
            exact[message] = ccxt_async.AuthenticationError

    def client_id(self, cid: str) -> str:
        rule = self.client_id_rule
        return cid if rule is None else rule.shape(cid)

    def order_params(self, intent: OrderIntent, unified: str, *, sent_ms: int) -> dict[str, Any]:
        return {self.create_id_param: self.client_id(intent.client_order_id)}

    def placed(self, cid: str, order: dict[str, Any]) -> None:
        return None

    def forget(self, cid: str) -> None:
        return None

    async def fetch_order(self, cid: str, unified: str) -> dict[str, Any]:
        order: dict[str, Any] = await self.client.fetch_order(None, unified, self._by_id(cid))
        return order

    async def cancel_order(self, cid: str, unified: str) -> None:
        await self.client.cancel_order(None, unified, self._by_id(cid))

    async def fetch_open_orders(self, unified_symbols: Collection[str]) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = await self.client.fetch_open_orders()
        return orders

    def status(self, order: dict[str, Any]) -> OrderStatus | None:
        raw_statuses = self.raw_statuses
        if raw_statuses:
            raw = str((order.get("info") or {}).get("status") or "").upper()
            found = raw_statuses.get(raw)
            if found is not None:
                return found
        return UNIFIED_STATUS.get(str(order.get("status")))

    def is_duplicate(self, exc: BaseException) -> bool:
        text = str(exc).lower()
        return any(marker in text for marker in self.duplicate_markers)

    def reject_reason(self, exc: BaseException) -> str:
        if isinstance(exc, ccxt_async.InsufficientFunds):
            return "insufficient_balance"
        if isinstance(exc, ccxt_async.AuthenticationError):
            return "authentication_failed"
        if isinstance(exc, ccxt_async.BadSymbol):
            return "unknown_symbol"
        return "venue_rejected"

    def _by_id(self, cid: str) -> dict[str, str]:
        """ccxt params naming an order by our client order id (fetch_order, cancel_order)."""
        return {self.query_id_param: self.client_id(cid)}


class BinanceAdapter(UnifiedAdapter):
    create_id_param = "newClientOrderId"
    query_id_param = "origClientOrderId"
    duplicate_markers = ("duplicate order",)  # -2010 "Duplicate order sent."
    raw_statuses: ClassVar[Mapping[str, OrderStatus]] = {
        "NEW": OrderStatus.NEW,
        "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
        "FILLED": OrderStatus.FILLED,
        "CANCELED": OrderStatus.CANCELLED,
        "PENDING_CANCEL": OrderStatus.CANCELLED,
        "EXPIRED": OrderStatus.CANCELLED,
        "EXPIRED_IN_MATCH": OrderStatus.CANCELLED,
        "REJECTED": OrderStatus.REJECTED,
    }
    # Reconciliation lists open orders across symbols; Binance's client refuses that unless told
    # the (heavier) request is meant.
    options: ClassVar[Mapping[str, Any]] = {"warnOnFetchOpenOrdersWithoutSymbol": False}


class OkxAdapter(UnifiedAdapter):
    # ccxt's ``clientOrderId`` becomes ``clOrdId`` (given Binance's names, okx's client sends
    # them on as unknown fields and a broker-prefixed id of its own).
    client_id_rule = ClientIdRule(re.compile(r"[A-Za-z0-9]{1,32}"), re.compile(r"[^A-Za-z0-9]"), 32)
    duplicate_markers = ("duplicated clordid",)  # 51016


class KucoinAdapter(UnifiedAdapter):
    client_id_rule = ClientIdRule(
        re.compile(r"[A-Za-z0-9_-]{1,40}"), re.compile(r"[^A-Za-z0-9_-]"), 40
    )
    duplicate_markers = ("clientoidduplicated",)  # 400100

    async def fetch_open_orders(self, unified_symbols: Collection[str]) -> list[dict[str, Any]]:
        client = self.client
        if not client.options.get("hf"):
            return await super().fetch_open_orders(unified_symbols)
        # A high-frequency account's open orders are listed one symbol at a time (ccxt refuses
        # the call without one): ask which symbols have any, then list those we trade.
        answer = await client.privateGetHfOrdersActiveSymbols()
        natives = (answer.get("data") or {}).get("symbols") or []
        found: list[dict[str, Any]] = []
        for native in natives:
            unified = client.safe_symbol(native, None, "-")
            if unified in unified_symbols:
                found += await client.fetch_open_orders(unified)
        return found


class KrakenAdapter(UnifiedAdapter):
    """Kraken keeps a ``cl_ord_id`` unique among open orders only (and documents no duplicate
    error), so the venue's duplicate-id guard does not hold there: a process that has forgotten
    an id (a restart, or more than ``order_memory`` orders since) and is asked to submit it again
    sends a second order when the first has closed, and reads Kraken's refusal as a reject when
    the first is still open (``CcxtVenue.lookup`` first, as reconciliation does)."""

    # Its free-text ``cl_ord_id`` (its other form, a UUID, would not keep our ids legible).
    client_id_rule = ClientIdRule(
        re.compile(r"[A-Za-z0-9_.-]{1,18}"), re.compile(r"[^A-Za-z0-9_.-]"), 18
    )
    # A wrong secret (ccxt maps its unknown key, "EAPI:Invalid key", already).
    auth_errors = ("EAPI:Invalid signature",)

    async def fetch_order(self, cid: str, unified: str) -> dict[str, Any]:
        # Kraken's order query needs its own order id (ccxt sends ours as an int32 ``userref``,
        # which Kraken refuses); its open and closed order lists filter by ``cl_ord_id``. Open
        # first: an order only moves from that list to the other, so it cannot slip between.
        client, params = self.client, self._by_id(cid)
        for listing in (client.fetch_open_orders, client.fetch_closed_orders):
            found: list[dict[str, Any]] = await listing(unified, None, None, params)
            if found:
                # Ours are never reused, but a closed order of the same id would be older.
                return max(found, key=lambda o: o.get("timestamp") or 0)
        raise ccxt_async.OrderNotFound(f"kraken: no order with cl_ord_id {self.client_id(cid)}")


class CoinbaseAdapter(UnifiedAdapter):
    """Coinbase Advanced Trade. Its order query and cancel take only Coinbase's order id: the
    place answer's, else the one found by matching ``client_order_id`` in its order list of the
    product, from shortly before the order was sent (or its whole history for an id this
    process did not send)."""

    # ccxt's coinbase client drops ``clientOrderId``; its request field, given as a param,
    # replaces the ``ccxt-<uuid>`` it makes up (Coinbase's queries never take it).
    create_id_param = "client_order_id"
    query_id_param = "client_order_id"
    # Its CANCELLED, EXPIRED and FAILED would all read "canceled" through ccxt.
    raw_statuses: ClassVar[Mapping[str, OrderStatus]] = {
        "PENDING": OrderStatus.NEW,
        "QUEUED": OrderStatus.NEW,
        "OPEN": OrderStatus.NEW,
        "CANCEL_QUEUED": OrderStatus.NEW,
        "FILLED": OrderStatus.FILLED,
        "CANCELLED": OrderStatus.CANCELLED,
        "EXPIRED": OrderStatus.CANCELLED,
        "FAILED": OrderStatus.REJECTED,
    }
    # Advanced Trade's accounts (available and held), not ccxt's default v2 wallets.
    options: ClassVar[Mapping[str, Any]] = {"fetchBalance": "v3PrivateGetBrokerageAccounts"}
    skew_ms: ClassVar[int] = 300_000
    """How far before our clock's send time its order list is searched (clock skew)."""
    page: ClassVar[int] = 100
    """Orders asked per page of its order list."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        # client order id → (our clock's send time in ms, or None for an id sent by another
        # process; Coinbase's order id once known).
        self._orders: dict[str, tuple[int | None, str]] = {}

    def order_params(self, intent: OrderIntent, unified: str, *, sent_ms: int) -> dict[str, Any]:
        params = super().order_params(intent, unified, sent_ms=sent_ms)
        self._orders[intent.client_order_id] = (sent_ms, "")
        if intent.order_type is OrderType.MARKET and intent.side is Side.BUY:
            # ccxt sends a market buy as ``quote_size`` (amount times a price it demands);
            # Coinbase takes the size in the base asset, as ccxt sends a sell.
            size = self.client.amount_to_precision(unified, intent.quantity)
            params["createMarketBuyOrderRequiresPrice"] = False
            params["order_configuration"] = {"market_market_ioc": {"base_size": size}}
        return params

    def placed(self, cid: str, order: dict[str, Any]) -> None:
        if order.get("id"):
            sent_ms = self._orders.get(cid, (None, ""))[0]
            self._orders[cid] = (sent_ms, str(order["id"]))

    def forget(self, cid: str) -> None:
        self._orders.pop(cid, None)

    async def fetch_order(self, cid: str, unified: str) -> dict[str, Any]:
        """By Coinbase's order id when known, else found in its order list by our client order
        id (its order id is then kept)."""
        client = self.client
        sent_ms, order_id = self._orders.get(cid, (None, ""))
        if order_id:
            order: dict[str, Any] = await client.fetch_order(order_id, unified)
            return order
        market = client.market(unified)
        request: dict[str, Any] = {"product_ids": market["id"]}
        if sent_ms is not None:  # sent by this process: nothing older can be it
            request["start_date"] = client.iso8601(sent_ms - self.skew_ms)
        theirs = self.client_id(cid)
        async for raw in self._list(request):
            if raw.get("client_order_id") == theirs:
                order = client.parse_order(raw, market)
                self._orders[cid] = (sent_ms, str(order["id"]))
                return order
        raise ccxt_async.OrderNotFound(f"coinbase: no order with client_order_id {theirs}")

    async def cancel_order(self, cid: str, unified: str) -> None:
        """By Coinbase's order id (its refusal reaches us as a bare ``BadRequest``: asking
        tells whether the order is still open)."""
        order = await self.fetch_order(cid, unified)
        if self._is_open(cid, order):
            try:
                await self.client.cancel_order(order["id"], unified)
                return
            except ccxt_async.BadRequest:
                order = await self.fetch_order(cid, unified)
                if self._is_open(cid, order):
                    raise
        raise ccxt_async.OrderNotFound(f"coinbase: order {cid} is not open")

    async def fetch_open_orders(self, unified_symbols: Collection[str]) -> list[dict[str, Any]]:
        # ccxt's reads one page of 100 only.
        listed = self._list({"order_status": "OPEN"})
        return [self.client.parse_order(raw) async for raw in listed]

    def reject_reason(self, exc: BaseException) -> str:
        # ccxt raises its refused orders as a plain ExchangeError carrying its answer.
        if "INSUFFICIENT_FUND" in str(exc):
            return "insufficient_balance"
        return super().reject_reason(exc)

    def _is_open(self, cid: str, order: dict[str, Any]) -> bool:
        status = self.status(order)
        if status is None:
            raise VenueError(f"coinbase: order {cid} has unknown status {order!r}")
        return status in OPEN_STATUSES

    async def _list(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every order of its order list that ``request`` filters, page after page (ccxt's
        ``fetch_orders`` reads one page only, and nothing short of the last page proves an
        order absent)."""
        request = {**request, "limit": self.page}
        while True:
            page = await self.client.v3PrivateGetBrokerageOrdersHistoricalBatch(request)
            for raw in page.get("orders") or ():
                yield raw
            cursor = page.get("cursor")
            if not page.get("has_next") or not cursor:
                return
            request["cursor"] = cursor


ADAPTERS: dict[str, type[UnifiedAdapter]] = {
    "binance": BinanceAdapter,
    "coinbase": CoinbaseAdapter,
    "kraken": KrakenAdapter,
    "kucoin": KucoinAdapter,
    "okx": OkxAdapter,
}
"""The adapter of each exchange id; any other exchange gets ``UnifiedAdapter``."""


def new_adapter(exchange: str, client: Any) -> ExchangeAdapter:
    """The adapter for ``exchange`` over its ccxt client (which it configures for trading)."""
    return ADAPTERS.get(exchange, UnifiedAdapter)(client)


def exchange_client_id(exchange: str, cid: str) -> str:
    """Our client order id as ``exchange`` accepts it (OKX: 1-32 letters and digits; KuCoin: 1-40
    letters, digits, ``_`` and ``-``; Kraken: 1-18 of those or ``.``; the others: unchanged)."""
    rule = ADAPTERS.get(exchange, UnifiedAdapter).client_id_rule
    return cid if rule is None else rule.shape(cid)
