"""Kraken's signed spot endpoints on the loopback Kraken server: orders, open and closed orders,
the balance.

``LoopbackKrakenPrivate(markets, api_key=..., secret=..., balances=...)`` is the public
``LoopbackKraken`` plus what ccxt's ``kraken`` client calls for ``CcxtVenue``, all ``POST`` with
a form body: ``/0/private/AddOrder``, ``/OpenOrders`` and ``/ClosedOrders`` (both filter by
``cl_ord_id``), ``/QueryOrders`` (by ``txid``, which Kraken requires), ``/CancelOrder`` (by
``txid`` or ``cl_ord_id``) and ``/BalanceEx``. Orders, matching and balances are the Binance
loopback's ``PrivateBook`` (``server.book``); fees are charged in the quote asset, as the
``fciq`` flag Kraken reports on such orders says.

Authentication is Kraken's: ``API-Key`` and ``API-Sign`` = base64(HMAC-SHA512(base64-decoded
secret, URL path + SHA256(nonce + form body))), and every request's ``nonce`` must exceed the
last one the key used. Refusals keep HTTP 200 with Kraken's error list: ``EAPI:Invalid key``,
``EAPI:Invalid signature``, ``EAPI:Invalid nonce``.

Orders as Kraken takes them: ``cl_ord_id`` is a UUID or up to 18 ASCII characters of free text
(else ``EGeneral:Invalid arguments:cl_ord_id``), unique among the account's *open* orders only
(Kraken does not document the error text for a clash; ``EOrder:Duplicate cl_ord_id`` here). A
place answer only acknowledges (``txid``, a description). An order whose remainder was dropped
(IOC, or a market order short of liquidity) is ``canceled``. Faults for ``AddOrder`` are the
Binance loopback's ``OrderFault`` kinds in ``book.order_faults``; ``book.query_faults`` answer
requests that name an order (``QueryOrders``, and ``OpenOrders``/``ClosedOrders`` filtered by
``cl_ord_id``), one per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from aiohttp import web

from tests.support.loopback_binance_private import (
    OrderFault,
    OrderFaultKind,
    PrivateBook,
    ServerOrder,
)
from tests.support.loopback_exchange import Handler, LoopbackState, Market
from tests.support.loopback_kraken import LoopbackKraken, altname, asset_id, kraken_answer
from tests.support.loopback_kraken import kraken_error as _kraken_error
from tests.support.loopback_okx_private import Refused, answering

PRIVATE = "/0/private/"
ADD_ORDER = PRIVATE + "AddOrder"
OPEN_ORDERS = PRIVATE + "OpenOrders"
CLOSED_ORDERS = PRIVATE + "ClosedOrders"
QUERY_ORDERS = PRIVATE + "QueryOrders"
CLIENT_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{32}|[ -~]{1,18}"
)
"""Kraken's ``cl_ord_id``: a long or short UUID, or up to 18 printable ASCII characters."""
# PrivateBook's (Binance's) order states → Kraken's ``status``.
_STATUS = {
    "NEW": "open",
    "PARTIALLY_FILLED": "open",
    "FILLED": "closed",
    "CANCELED": "canceled",
    "EXPIRED": "canceled",
}
_OPEN = ("NEW", "PARTIALLY_FILLED")


def kraken_error(message: str) -> Refused:
    return Refused(_kraken_error(message))


def txid(order: ServerOrder) -> str:
    """A Kraken-shaped order id (``OQCLML-BW3P3-BUCMWZ``) for the book's order id."""
    return f"O{order.order_id:05d}-LOOPB-KRAKEN"


class LoopbackKrakenPrivate(LoopbackKraken):
    """The loopback Kraken server with one account (the configured key) that trades."""

    name: ClassVar[str] = "kraken"

    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        api_key: str,
        secret: str,
        balances: Mapping[str, float],
        taker_fee_bps: float = 10.0,
        partial_fill_ratio: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(markets, **kwargs)
        self.book = PrivateBook(
            self.state,
            api_key=api_key,
            secret=secret,
            balances=balances,
            taker_fee_bps=taker_fee_bps,
            partial_fill_ratio=partial_fill_ratio,
        )
        self.last_nonce = 0
        self.order_bodies: list[dict[str, str]] = []
        """Every authenticated ``AddOrder`` form, as sent."""
        self.after_lookup: deque[Callable[[], None]] = deque()
        """Changes applied right after answering a request that names an order (one each): the
        book moving between two of a client's requests."""

    def routes(self) -> dict[tuple[str, str], Handler]:
        private = {
            ADD_ORDER: self.add_order,
            OPEN_ORDERS: self.open_orders,
            CLOSED_ORDERS: self.closed_orders,
            QUERY_ORDERS: self.query_orders,
            PRIVATE + "CancelOrder": self.cancel_order,
            PRIVATE + "BalanceEx": self.balance_ex,
        }
        return super().routes() | {("POST", p): answering(h) for p, h in private.items()}

    # --- authentication ----------------------------------------------------------------------

    async def _signed(self, request: web.Request) -> dict[str, str]:
        """The request's form once key, signature and nonce check out."""
        key = request.headers.get("API-Key", "")
        sign = request.headers.get("API-Sign", "")
        if key != self.book.api_key:
            raise kraken_error("EAPI:Invalid key")
        body = await request.text()
        form = dict(parse_qsl(body, keep_blank_values=True))
        nonce = form.get("nonce", "")
        if not nonce.isdigit():
            raise kraken_error("EAPI:Invalid nonce")
        digest = hashlib.sha256((nonce + body).encode()).digest()
        try:
            secret = base64.b64decode(self.book.secret, validate=True)
        except binascii.Error:
            raise kraken_error("EAPI:Invalid key") from None
        expected = hmac.new(secret, request.path.encode() + digest, hashlib.sha512).digest()
        if not hmac.compare_digest(sign, base64.b64encode(expected).decode()):
            raise kraken_error("EAPI:Invalid signature")
        if int(nonce) <= self.last_nonce:
            raise kraken_error("EAPI:Invalid nonce")
        self.last_nonce = int(nonce)
        return form

    # --- orders --------------------------------------------------------------------------------

    async def add_order(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        form = await self._signed(request)
        book = self.book
        self.order_bodies.append(form)
        book.order_posts += 1
        params = self._book_params(form)
        cid = params["newClientOrderId"]
        if any(o.client_order_id == cid and o.status in _OPEN for o in book.orders.values()):
            raise kraken_error("EOrder:Duplicate cl_ord_id")
        fault = book.order_faults.popleft() if book.order_faults else None
        if fault is not None:
            if fault.kind is OrderFaultKind.REJECT:
                raise kraken_error("EOrder:Insufficient funds")
            if fault.kind is not OrderFaultKind.ACCEPT_THEN_TIMEOUT and not fault.accept:
                return self._fault_answer(fault)  # nothing created
        # Kraken keeps closed orders under a reused cl_ord_id: the book keys by client id, so a
        # closed order of that id moves to a key of its own first.
        old = book.orders.pop(cid, None)
        if old is not None:
            book.orders[f"{cid}#{old.order_id}"] = old
        placed = book.place(params)
        if isinstance(placed, web.Response):
            if old is not None:
                book.orders[cid] = book.orders.pop(f"{cid}#{old.order_id}")
            # The form was checked above: funds are all the book can still refuse.
            raise kraken_error("EOrder:Insufficient funds")
        if fault is not None and fault.kind is OrderFaultKind.ACCEPT_THEN_TIMEOUT:
            await asyncio.sleep(fault.delay_s)  # the client hangs up first
        elif fault is not None:
            return self._fault_answer(fault)
        return kraken_answer(
            {"descr": {"order": self._description(placed)}, "txid": [txid(placed)]}
        )

    def _book_params(self, form: Mapping[str, str]) -> dict[str, str]:
        """A Kraken ``AddOrder`` form as ``PrivateBook.place`` takes it (else raises Kraken's
        refusal)."""
        symbol = self.symbol_of(form.get("pair"))
        if symbol is None:
            raise kraken_error("EQuery:Unknown asset pair")
        cid = form.get("cl_ord_id", "")
        if not CLIENT_ID.fullmatch(cid):
            # Orders without a client id are not ours to test: every CcxtVenue order has one.
            raise kraken_error("EGeneral:Invalid arguments:cl_ord_id")
        side, otype = form.get("type"), form.get("ordertype")
        if side not in ("buy", "sell") or otype not in ("market", "limit"):
            raise kraken_error("EGeneral:Invalid arguments:ordertype")
        tif = form.get("timeinforce", "GTC")
        if tif not in ("GTC", "IOC"):
            raise kraken_error("EGeneral:Invalid arguments:timeinforce")
        try:
            qty = float(form["volume"])
            price = float(form["price"]) if otype == "limit" else 0.0
        except (KeyError, ValueError):
            raise kraken_error("EGeneral:Invalid arguments:volume") from None
        if not (qty > 0 and price >= 0):
            raise kraken_error("EGeneral:Invalid arguments:volume")
        params = {
            "symbol": symbol,
            "side": side.upper(),
            "type": otype.upper(),
            "quantity": repr(qty),
            "newClientOrderId": cid,
        }
        if otype == "limit":
            params |= {"price": repr(price), "timeInForce": tif}
        return params

    def _description(self, order: ServerOrder) -> str:
        pair = self._altname(order)
        at = f"limit {order.price!r}" if order.type == "LIMIT" else "market"
        return f"{order.side.lower()} {order.orig_qty:.8f} {pair} @ {at}"

    def _altname(self, order: ServerOrder) -> str:
        m = self.state.markets[order.symbol]
        return altname(m.base) + altname(m.quote)

    def _named(self, form: Mapping[str, str]) -> list[ServerOrder]:
        """Orders whose ``cl_ord_id`` is the form's (all, if it names none), newest first."""
        cid = form.get("cl_ord_id")
        orders = self.book.orders.values()
        found = [o for o in orders if cid is None or o.client_order_id == cid]
        return sorted(found, key=lambda o: o.order_id, reverse=True)

    def _query_fault(self, form: Mapping[str, str]) -> web.Response | None:
        if (form.get("cl_ord_id") or form.get("txid")) and self.book.query_faults:
            return self._fault_answer(self.book.query_faults.popleft())
        return None

    def _answer_lookup(self, form: Mapping[str, str], result: dict[str, Any]) -> web.Response:
        answer = kraken_answer(result)
        if form.get("cl_ord_id") and self.after_lookup:
            self.after_lookup.popleft()()
        return answer

    async def open_orders(self, request: web.Request, state: LoopbackState) -> web.Response:
        form = await self._signed(request)
        fault = self._query_fault(form)
        if fault is not None:
            return fault
        found = [o for o in self._named(form) if o.status in _OPEN]
        return self._answer_lookup(form, {"open": {txid(o): self.order_json(o) for o in found}})

    async def closed_orders(self, request: web.Request, state: LoopbackState) -> web.Response:
        form = await self._signed(request)
        fault = self._query_fault(form)
        if fault is not None:
            return fault
        found = [o for o in self._named(form) if o.status not in _OPEN][:50]
        closed = {txid(o): self.order_json(o) for o in found}
        return self._answer_lookup(form, {"closed": closed, "count": len(closed)})

    async def query_orders(self, request: web.Request, state: LoopbackState) -> web.Response:
        form = await self._signed(request)
        fault = self._query_fault(form)
        if fault is not None:
            return fault
        ids = [i for i in form.get("txid", "").split(",") if i]
        userref = form.get("userref")
        if not ids or (userref is not None and not re.fullmatch(r"-?\d+", userref)):
            raise kraken_error("EGeneral:Invalid arguments")
        orders = {txid(o): o for o in self.book.orders.values()}
        if any(i not in orders for i in ids):
            raise kraken_error("EOrder:Invalid order")
        return kraken_answer({i: self.order_json(orders[i]) for i in ids})

    async def cancel_order(self, request: web.Request, state: LoopbackState) -> web.Response:
        form = await self._signed(request)
        cid, oid = form.get("cl_ord_id"), form.get("txid")
        if (cid is None) == (oid is None):
            raise kraken_error("EGeneral:Invalid arguments")
        found = [
            o
            for o in self.book.orders.values()
            if o.status in _OPEN and (o.client_order_id == cid or txid(o) == oid)
        ]
        if not found:
            raise kraken_error("EOrder:Unknown order")
        for order in found:
            self.book.cancel(order)
        return kraken_answer({"count": len(found)})

    def order_json(self, order: ServerOrder) -> dict[str, Any]:
        """An order as ``OpenOrders``, ``ClosedOrders`` and ``QueryOrders`` answer it."""
        filled = order.executed_qty
        opened = order.time_ms / 1000
        body: dict[str, Any] = {
            "refid": None,
            "userref": None,
            "cl_ord_id": order.client_order_id,
            "status": _STATUS[order.status],
            "opentm": opened,
            "starttm": 0,
            "expiretm": 0,
            "descr": {
                "pair": self._altname(order),
                "type": order.side.lower(),
                "ordertype": order.type.lower(),
                "price": repr(order.price) if order.type == "LIMIT" else "0",
                "price2": "0",
                "leverage": "none",
                "order": self._description(order),
                "close": "",
            },
            "vol": f"{order.orig_qty:.8f}",
            "vol_exec": f"{filled:.8f}",
            "cost": f"{order.quote_qty:.5f}",
            "fee": repr(sum(f.commission for f in order.fills)),
            "price": repr(order.quote_qty / filled) if filled > 0 else "0.00000",
            "stopprice": "0.00000",
            "limitprice": "0.00000",
            "misc": "",
            "oflags": "fciq",
        }
        if order.status not in _OPEN:
            body |= {"closetm": opened, "reason": None if order.status == "FILLED" else "IOC"}
        return body

    # --- account ---------------------------------------------------------------------------------

    async def balance_ex(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        return kraken_answer(
            {
                asset_id(asset): {"balance": repr(b.free + b.locked), "hold_trade": repr(b.locked)}
                for asset, b in self.book.balances.items()
            }
        )

    def _fault_answer(self, fault: OrderFault) -> web.Response:
        return self.error_response(429 if fault.kind is OrderFaultKind.RATE_LIMIT else 503)
