"""Binance's signed spot endpoints for the loopback server: orders, open orders and the account.

``add_private_routes(server, api_key=..., secret=..., balances=...)`` registers ``POST/GET/DELETE
/api/v3/order``, ``GET /api/v3/openOrders`` and ``GET /api/v3/account`` and returns the
``PrivateBook`` that holds their state (also kept in ``server.state.extra["private"]``).

Every request must carry the API key in ``X-MBX-APIKEY`` (else -2015, HTTP 401) and a
``signature`` that is the HMAC-SHA256 of the rest of the query (or form body) with the secret
(else -1022, HTTP 400). Timestamps are not checked against ``recvWindow``: the server's clock is
often a test's manual clock, while ccxt stamps requests with wall time.

Matching: MARKET orders walk the opposite side of the server's book (``state.book``), limited to
``partial_fill_ratio`` of the quantity; what is left expires. LIMIT orders take the levels at or
better than their price; an IOC remainder expires, a GTC remainder rests (``NEW`` or
``PARTIALLY_FILLED``) until cancelled. The book itself is not consumed. Each fill pays
``taker_fee_bps`` in the quote asset, and balances move with the fills (a resting order locks
its funds). Orders are keyed by client order id: a second POST with an id already used answers
Binance's duplicate error (-2010 "Duplicate order sent.") and creates nothing.

Faults for the order POST (``PrivateBook.order_faults``, one consumed per POST): an
explicit reject, "accept then time out" (the order is created and filled, then the answer is
held back longer than any client waits), and a 5xx or 429 answered before (or, with
``accept=True``, after) the order is created. ``PrivateBook.query_faults`` answer order
queries (``GET /api/v3/order``) with a 5xx or 429, one per query, so a submit's outcome can be
left unknown.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.support.loopback_binance import (
    GATEWAY_BODIES,
    RATE_LIMIT_BODY,
    Handler,
    LoopbackBinance,
    LoopbackState,
    binance_error,
)

INSUFFICIENT_BALANCE = "Account has insufficient balance for requested action."
DUPLICATE_ORDER = "Duplicate order sent."
FILL_EPS = 1e-12


class OrderFaultKind(StrEnum):
    REJECT = "reject"
    """Answer -2010 "insufficient balance" whatever the balance; nothing is created."""
    ACCEPT_THEN_TIMEOUT = "accept_then_timeout"
    """Create (and fill) the order, then hold the answer for ``delay_s``."""
    SERVER_ERROR = "server_error"
    """Answer HTTP 503 from the gateway."""
    RATE_LIMIT = "rate_limit"
    """Answer HTTP 429 with Binance's -1003 body."""


@dataclass(frozen=True, slots=True)
class OrderFault:
    kind: OrderFaultKind
    accept: bool = False
    """For SERVER_ERROR and RATE_LIMIT: create the order before answering the error."""
    delay_s: float = 30.0
    """For ACCEPT_THEN_TIMEOUT: how long the answer is held (the client gives up first)."""


@dataclass(slots=True)
class ServerFill:
    price: float
    qty: float
    commission: float
    trade_id: int


@dataclass(slots=True)
class ServerOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: float
    orig_qty: float
    time_ms: int
    status: str = "NEW"
    fills: list[ServerFill] = field(default_factory=list)
    locked_asset: str = ""
    locked: float = 0.0

    @property
    def executed_qty(self) -> float:
        return sum(f.qty for f in self.fills)

    @property
    def quote_qty(self) -> float:
        return sum(f.qty * f.price for f in self.fills)


@dataclass(slots=True)
class Balance:
    free: float
    locked: float = 0.0


class PrivateBook:
    """Accounts and orders of the loopback exchange (one account: the configured key)."""

    def __init__(
        self,
        state: LoopbackState,
        *,
        api_key: str,
        secret: str,
        balances: Mapping[str, float],
        taker_fee_bps: float,
        partial_fill_ratio: float,
    ) -> None:
        if not 0.0 <= partial_fill_ratio <= 1.0:
            raise ValueError("partial_fill_ratio must be within [0, 1]")
        self.state = state
        self.api_key = api_key
        self.secret = secret
        self.balances = {asset: Balance(float(qty)) for asset, qty in balances.items()}
        self.taker_fee_bps = taker_fee_bps
        self.partial_fill_ratio = partial_fill_ratio
        self.orders: dict[str, ServerOrder] = {}  # by client order id
        self.order_faults: deque[OrderFault] = deque()
        self.query_faults: deque[OrderFault] = deque()
        """Faults for ``GET /api/v3/order`` (SERVER_ERROR / RATE_LIMIT), one per query."""
        self.order_posts = 0
        """POST /api/v3/order requests that passed authentication."""
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)

    def free(self, asset: str) -> float:
        return self.balances.setdefault(asset, Balance(0.0)).free

    def by_order_id(self, order_id: int) -> ServerOrder | None:
        return next((o for o in self.orders.values() if o.order_id == order_id), None)

    # --- matching -------------------------------------------------------------------------

    def _walk(self, symbol: str, side: str, qty: float, limit: float | None) -> list[ServerFill]:
        bids, asks = self.state.book(symbol, 5000)
        levels = asks if side == "BUY" else bids
        fills: list[ServerFill] = []
        remaining = qty
        fee_rate = self.taker_fee_bps / 1e4
        for price, size in levels:
            if remaining <= FILL_EPS:
                break
            if limit is not None and (price > limit if side == "BUY" else price < limit):
                break
            take = min(size, remaining)
            if take <= 0:
                continue
            fills.append(ServerFill(price, take, take * price * fee_rate, next(self._trade_ids)))
            remaining -= take
        return fills

    def place(self, params: Mapping[str, str]) -> ServerOrder | web.Response:
        """Validate, check funds, match; the created order, or Binance's error answer."""
        symbol = params.get("symbol", "")
        if symbol not in self.state.markets:
            return binance_error(400, -1121, "Invalid symbol.")
        side, otype = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL") or otype not in ("MARKET", "LIMIT"):
            return binance_error(400, -1116, "Invalid orderType.")
        try:
            qty = float(params["quantity"])
            price = float(params["price"]) if otype == "LIMIT" else 0.0
        except (KeyError, ValueError):
            return binance_error(
                400,
                -1102,
                "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
            )
        tif = params.get("timeInForce", "GTC") if otype == "LIMIT" else "GTC"
        m = self.state.markets[symbol]
        fee_rate = self.taker_fee_bps / 1e4
        wanted = qty * self.partial_fill_ratio if otype == "MARKET" else qty
        fills = self._walk(symbol, side, wanted, price if otype == "LIMIT" else None)
        cost = sum(f.qty * f.price for f in fills)
        if side == "BUY":
            needed = cost * (1 + fee_rate)
            if otype == "LIMIT" and tif == "GTC":  # the resting remainder locks its cost too
                needed += price * (qty - sum(f.qty for f in fills))
            if needed > self.free(m.quote) + FILL_EPS:
                return binance_error(400, -2010, INSUFFICIENT_BALANCE)
        elif qty > self.free(m.base) + FILL_EPS:
            return binance_error(400, -2010, INSUFFICIENT_BALANCE)
        order = ServerOrder(
            order_id=next(self._order_ids),
            client_order_id=params["newClientOrderId"],
            symbol=symbol,
            side=side,
            type=otype,
            time_in_force=tif,
            price=price,
            orig_qty=qty,
            time_ms=self.state.now_ms(),
            fills=fills,
        )
        quote, base = (
            self.balances.setdefault(m.quote, Balance(0.0)),
            self.balances.setdefault(m.base, Balance(0.0)),
        )
        filled = order.executed_qty
        if side == "BUY":
            base.free += filled
            quote.free -= cost + sum(f.commission for f in fills)
        else:
            base.free -= filled
            quote.free += cost - sum(f.commission for f in fills)
        remaining = qty - filled
        if remaining <= qty * 1e-9:
            order.status = "FILLED"
        elif otype == "LIMIT" and tif == "GTC":
            order.status = "PARTIALLY_FILLED" if filled > 0 else "NEW"
            if side == "BUY":
                order.locked_asset, order.locked = m.quote, remaining * price
                quote.free -= order.locked
                quote.locked += order.locked
            else:
                order.locked_asset, order.locked = m.base, remaining
                base.free -= remaining
                base.locked += remaining
        else:
            order.status = "EXPIRED"  # IOC or MARKET remainder
        self.orders[order.client_order_id] = order
        return order

    def cancel(self, order: ServerOrder) -> None:
        order.status = "CANCELED"
        if order.locked:
            bal = self.balances[order.locked_asset]
            bal.locked -= order.locked
            bal.free += order.locked
            order.locked = 0.0

    # --- answers --------------------------------------------------------------------------

    def order_json(self, order: ServerOrder) -> dict[str, Any]:
        return {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "price": f"{order.price:.8f}",
            "origQty": f"{order.orig_qty:.8f}",
            "executedQty": f"{order.executed_qty:.8f}",
            "cummulativeQuoteQty": f"{order.quote_qty:.8f}",
            "status": order.status,
            "timeInForce": order.time_in_force,
            "type": order.type,
            "side": order.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": order.time_ms,
            "updateTime": order.time_ms,
            "isWorking": True,
            "workingTime": order.time_ms,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def new_order_json(self, order: ServerOrder) -> dict[str, Any]:
        """The FULL answer to a new order: the order plus its fills."""
        body = self.order_json(order)
        quote = self.state.markets[order.symbol].quote
        body["transactTime"] = order.time_ms
        body["fills"] = [
            {
                "price": repr(f.price),
                "qty": repr(f.qty),
                "commission": repr(f.commission),
                "commissionAsset": quote,
                "tradeId": f.trade_id,
            }
            for f in order.fills
        ]
        return body


# --- request handling ---------------------------------------------------------------------


async def _signed_params(request: web.Request, book: PrivateBook) -> dict[str, str]:
    """The request's parameters once key and signature check out (else raises Binance's error)."""
    if request.headers.get("X-MBX-APIKEY") != book.api_key:
        raise _Refused(401, -2015, "Invalid API-key, IP, or permissions for action.")
    raw = await request.text() if request.method == "POST" else request.query_string
    payload, sep, signature = raw.rpartition("&signature=")
    expected = hmac.new(book.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not sep or not hmac.compare_digest(signature, expected):
        raise _Refused(400, -1022, "Signature for this request is not valid.")
    return dict(parse_qsl(payload, keep_blank_values=True))


class _Refused(Exception):
    """Raised inside a handler to answer Binance's error body instead."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.response = binance_error(status, code, msg)


def _answering(handler: Handler) -> Handler:
    async def wrapped(request: web.Request, state: LoopbackState) -> web.StreamResponse:
        try:
            return await handler(request, state)
        except _Refused as refused:
            return refused.response

    return wrapped


def _find(book: PrivateBook, params: Mapping[str, str]) -> ServerOrder | None:
    cid = params.get("origClientOrderId")
    if cid:
        order = book.orders.get(cid)
    elif params.get("orderId"):
        order = book.by_order_id(int(params["orderId"]))
    else:
        raise _Refused(
            400,
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        )
    if order is not None and order.symbol != params.get("symbol"):
        return None
    return order


def add_private_routes(
    server: LoopbackBinance,
    *,
    api_key: str,
    secret: str,
    balances: Mapping[str, float],
    taker_fee_bps: float = 10.0,
    partial_fill_ratio: float = 1.0,
) -> PrivateBook:
    """Serve Binance's signed order and account endpoints on ``server``; returns their state."""
    book = PrivateBook(
        server.state,
        api_key=api_key,
        secret=secret,
        balances=balances,
        taker_fee_bps=taker_fee_bps,
        partial_fill_ratio=partial_fill_ratio,
    )
    server.state.extra["private"] = book

    async def post_order(request: web.Request, state: LoopbackState) -> web.StreamResponse:
        params = await _signed_params(request, book)
        book.order_posts += 1
        cid = params.get("newClientOrderId", "")
        if not cid:
            return binance_error(400, -1102, "Mandatory parameter 'newClientOrderId' was empty.")
        if cid in book.orders:
            return binance_error(400, -2010, DUPLICATE_ORDER)
        fault = book.order_faults.popleft() if book.order_faults else None
        if fault is not None and fault.kind is OrderFaultKind.REJECT:
            return binance_error(400, -2010, INSUFFICIENT_BALANCE)
        if (
            fault is not None
            and not fault.accept
            and fault.kind is not (OrderFaultKind.ACCEPT_THEN_TIMEOUT)
        ):
            return _fault_answer(fault)
        placed = book.place(params)
        if isinstance(placed, web.Response):
            return placed
        if fault is not None and fault.kind is OrderFaultKind.ACCEPT_THEN_TIMEOUT:
            # The client times out first; the server cancels this handler when it hangs up.
            await asyncio.sleep(fault.delay_s)
        elif fault is not None:
            return _fault_answer(fault)
        return web.json_response(book.new_order_json(placed))

    async def get_order(request: web.Request, state: LoopbackState) -> web.StreamResponse:
        params = await _signed_params(request, book)
        if book.query_faults:
            return _fault_answer(book.query_faults.popleft())
        order = _find(book, params)
        if order is None:
            return binance_error(400, -2013, "Order does not exist.")
        return web.json_response(book.order_json(order))

    async def delete_order(request: web.Request, state: LoopbackState) -> web.StreamResponse:
        order = _find(book, await _signed_params(request, book))
        if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
            return binance_error(400, -2011, "Unknown order sent.")
        book.cancel(order)
        body = book.order_json(order)
        body["origClientOrderId"] = order.client_order_id
        return web.json_response(body)

    async def open_orders(request: web.Request, state: LoopbackState) -> web.StreamResponse:
        params = await _signed_params(request, book)
        symbol = params.get("symbol")
        return web.json_response(
            [
                book.order_json(o)
                for o in book.orders.values()
                if o.status in ("NEW", "PARTIALLY_FILLED")
                and (symbol is None or o.symbol == symbol)
            ]
        )

    async def account(request: web.Request, state: LoopbackState) -> web.StreamResponse:
        await _signed_params(request, book)
        return web.json_response(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "updateTime": state.now_ms(),
                "accountType": "SPOT",
                "balances": [
                    {"asset": a, "free": f"{b.free:.8f}", "locked": f"{b.locked:.8f}"}
                    for a, b in book.balances.items()
                ],
                "permissions": ["SPOT"],
            }
        )

    server.add_route("POST", "/api/v3/order", _answering(post_order))
    server.add_route("GET", "/api/v3/order", _answering(get_order))
    server.add_route("DELETE", "/api/v3/order", _answering(delete_order))
    server.add_route("GET", "/api/v3/openOrders", _answering(open_orders))
    server.add_route("GET", "/api/v3/account", _answering(account))
    return book


def _fault_answer(fault: OrderFault) -> web.Response:
    if fault.kind is OrderFaultKind.RATE_LIMIT:
        return web.json_response(RATE_LIMIT_BODY, status=429, headers={"Retry-After": "1"})
    return web.Response(status=503, text=GATEWAY_BODIES[503])
