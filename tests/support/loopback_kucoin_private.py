"""KuCoin's signed spot (HF) endpoints on the loopback KuCoin server: orders, open orders, balances.

``LoopbackKucoinPrivate(markets, api_key=..., secret=..., passphrase=..., balances=...)`` is the
public ``LoopbackKucoin`` plus what ccxt's ``kucoin`` client calls for ``CcxtVenue`` on a
classic (not unified) account with high-frequency trading, KuCoin's default since its HF
migration: ``GET /api/ua/v1/account/mode``, ``/api/v1/hf/accounts/opened``,
``/api/v3/margin/symbols`` and ``/api/v1/isolated/symbols`` (``load_markets`` asks them once it
has keys; no margin markets here), ``POST /api/v1/hf/orders``, ``GET`` and ``DELETE
/api/v1/hf/orders/client-order/{clientOid}?symbol=``, ``GET /api/v1/hf/orders/active?symbol=``,
``GET /api/v1/hf/orders/active/symbols`` and ``GET /api/v1/accounts?type=trade_hf``. Orders,
matching and balances are the Binance loopback's ``PrivateBook`` (``server.book``).

Authentication is KuCoin's API key version 2: ``KC-API-KEY``, ``KC-API-TIMESTAMP`` (ms),
``KC-API-KEY-VERSION: 2``, ``KC-API-PASSPHRASE`` = base64(HMAC-SHA256(secret, passphrase)) and
``KC-API-SIGN`` = base64(HMAC-SHA256(secret, timestamp + method + path with query + body)); a
missing or wrong one is answered HTTP 401 with ``400001``-``400005`` (a wrong passphrase:
``400004``). ``clientOid`` is at most 40 letters, digits, ``_`` and ``-`` (else ``400100``); one
already used is ``400100`` "validation.createOrder.clientOidDuplicated". A place answer only
acknowledges (``orderId``, ``clientOid``). Faults: ``book.order_faults`` and
``book.query_faults`` as in the Binance loopback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web

from tests.support.loopback_binance_private import (
    OrderFault,
    OrderFaultKind,
    PrivateBook,
    ServerOrder,
)
from tests.support.loopback_exchange import Handler, LoopbackState, Market, path_param
from tests.support.loopback_kucoin import LoopbackKucoin, kucoin_answer, kucoin_error
from tests.support.loopback_okx_private import Refused, answering

HF_ORDERS = "/api/v1/hf/orders"
BY_CLIENT_ID = "/api/v1/hf/orders/client-order/{clientOid}"
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
"""KuCoin's ``clientOid``: letters, digits, ``_`` and ``-``, at most 40."""
NOT_FOUND = "order not exist."
_OPEN = ("NEW", "PARTIALLY_FILLED")


def _unauthorized(code: str, msg: str) -> Refused:
    return Refused(kucoin_error(code, msg, status=401))


class LoopbackKucoinPrivate(LoopbackKucoin):
    """The loopback KuCoin server with one HF trading account (the configured key)."""

    name: ClassVar[str] = "kucoin"

    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        api_key: str,
        secret: str,
        passphrase: str,
        balances: Mapping[str, float],
        taker_fee_bps: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(markets, **kwargs)
        self.passphrase = passphrase
        self.book = PrivateBook(
            self.state,
            api_key=api_key,
            secret=secret,
            balances=balances,
            taker_fee_bps=taker_fee_bps,
            partial_fill_ratio=1.0,
        )
        self.order_bodies: list[dict[str, Any]] = []
        """Every authenticated place request's body, as sent."""

    def routes(self) -> dict[tuple[str, str], Handler]:
        private = {
            ("GET", "/api/ua/v1/account/mode"): self.account_mode,
            ("GET", "/api/v1/hf/accounts/opened"): self.hf_opened,
            ("GET", "/api/v3/margin/symbols"): self.margin_symbols,
            ("GET", "/api/v1/isolated/symbols"): self.isolated_symbols,
            ("POST", HF_ORDERS): self.place,
            ("GET", BY_CLIENT_ID): self.get_order,
            ("DELETE", BY_CLIENT_ID): self.cancel_order,
            ("GET", "/api/v1/hf/orders/active"): self.active_orders,
            ("GET", "/api/v1/hf/orders/active/symbols"): self.active_symbols,
            ("GET", "/api/v1/accounts"): self.accounts,
        }
        return super().routes() | {k: answering(h) for k, h in private.items()}

    # --- authentication ----------------------------------------------------------------------

    async def _signed(self, request: web.Request) -> Any:
        """The request's JSON body (None without one) once KuCoin's v2 headers check out."""
        headers = request.headers
        key, stamp = headers.get("KC-API-KEY", ""), headers.get("KC-API-TIMESTAMP", "")
        passphrase, sign = headers.get("KC-API-PASSPHRASE", ""), headers.get("KC-API-SIGN", "")
        if not (key and stamp and passphrase and sign):
            raise _unauthorized(
                "400001",
                "Please check the header of your request for KC-API-KEY, KC-API-SIGN, "
                "KC-API-TIMESTAMP, KC-API-PASSPHRASE",
            )
        if not stamp.isdigit():
            raise _unauthorized("400002", "KC-API-TIMESTAMP Invalid")
        if key != self.book.api_key:
            raise _unauthorized("400003", "KC-API-KEY not exists")
        secret = self.book.secret.encode()
        expected = hmac.new(secret, self.passphrase.encode(), hashlib.sha256).digest()
        if headers.get("KC-API-KEY-VERSION") != "2" or not hmac.compare_digest(
            passphrase, base64.b64encode(expected).decode()
        ):
            raise _unauthorized("400004", "Invalid KC-API-PASSPHRASE")
        body = await request.text() if request.method == "POST" else ""
        payload = stamp + request.method + request.raw_path + body
        digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(sign, base64.b64encode(digest).decode()):
            raise _unauthorized("400005", "Invalid KC-API-SIGN")
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise Refused(kucoin_error("400100", "Invalid request body.", status=400)) from None

    # --- account ---------------------------------------------------------------------------------

    async def account_mode(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        return kucoin_answer({"selfAccountMode": "CLASSIC"})

    async def hf_opened(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        return kucoin_answer(True)

    async def margin_symbols(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        return kucoin_answer({"timestamp": state.now_ms(), "items": []})

    async def isolated_symbols(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        return kucoin_answer([])

    async def accounts(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        if request.query.get("type") != "trade_hf":
            return kucoin_answer([])  # this server holds the HF trading account only
        return kucoin_answer(
            [
                {
                    "id": f"acc-{asset}",
                    "currency": asset,
                    "type": "trade_hf",
                    "balance": repr(b.free + b.locked),
                    "available": repr(b.free),
                    "holds": repr(b.locked),
                }
                for asset, b in self.book.balances.items()
            ]
        )

    # --- orders ----------------------------------------------------------------------------------

    async def place(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        body = await self._signed(request)
        if not isinstance(body, dict):
            return kucoin_error("400100", "Invalid request body.", status=400)
        book = self.book
        self.order_bodies.append(body)
        book.order_posts += 1
        params = self._book_params(body)
        if isinstance(params, web.Response):
            return params
        if params["newClientOrderId"] in book.orders:
            return kucoin_error("400100", "validation.createOrder.clientOidDuplicated")
        fault = book.order_faults.popleft() if book.order_faults else None
        if fault is not None:
            if fault.kind is OrderFaultKind.REJECT:
                return kucoin_error("200004", "Balance insufficient!")
            if fault.kind is not OrderFaultKind.ACCEPT_THEN_TIMEOUT and not fault.accept:
                return self._fault_answer(fault)  # nothing created
        placed = book.place(params)
        if isinstance(placed, web.Response):
            return kucoin_error("200004", "Balance insufficient!")  # the body was checked
        if fault is not None and fault.kind is OrderFaultKind.ACCEPT_THEN_TIMEOUT:
            await asyncio.sleep(fault.delay_s)  # the client hangs up first
        elif fault is not None:
            return self._fault_answer(fault)
        return kucoin_answer({"orderId": str(placed.order_id), "clientOid": placed.client_order_id})

    def _book_params(self, body: dict[str, Any]) -> dict[str, str] | web.Response:
        """A KuCoin order body as ``PrivateBook.place`` takes it, or KuCoin's refusal."""
        cid = str(body.get("clientOid") or "")
        symbol = self.symbol_of(str(body.get("symbol") or ""))
        if symbol is None:
            return kucoin_error("400100", "Unsupported trading pair.")
        if not CLIENT_ID.fullmatch(cid):
            return kucoin_error("400100", "validation.createOrder.clientOidInvalid")
        side, otype = body.get("side"), body.get("type")
        if side not in ("buy", "sell") or otype not in ("market", "limit"):
            return kucoin_error("400100", "Parameter error.")
        tif = str(body.get("timeInForce") or "GTC")
        if tif not in ("GTC", "IOC"):
            return kucoin_error("400100", "Parameter error: timeInForce.")
        try:
            qty = float(body["size"])  # market buys by ``funds`` are not served here
            price = float(body["price"]) if otype == "limit" else 0.0
        except (KeyError, TypeError, ValueError):
            return kucoin_error("400100", "Parameter error: size.")
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

    def _find(self, request: web.Request) -> ServerOrder | None:
        symbol = self.symbol_of(request.query.get("symbol"))
        if symbol is None:
            raise Refused(kucoin_error("400100", "Unsupported trading pair."))
        order = self.book.orders.get(path_param(request, "clientOid"))
        return order if order is not None and order.symbol == symbol else None

    async def get_order(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        await self._signed(request)
        if self.book.query_faults:
            return self._fault_answer(self.book.query_faults.popleft())
        order = self._find(request)
        if order is None:
            return kucoin_error("400100", NOT_FOUND)
        return kucoin_answer(self.order_json(order))

    async def cancel_order(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        order = self._find(request)
        if order is None or order.status not in _OPEN:
            return kucoin_error("400100", NOT_FOUND)
        self.book.cancel(order)
        return kucoin_answer({"clientOid": order.client_order_id})

    async def active_orders(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        symbol = self.symbol_of(request.query.get("symbol"))
        if symbol is None:
            return kucoin_error("400100", "Unsupported trading pair.")
        orders = self.book.orders.values()
        return kucoin_answer(
            [self.order_json(o) for o in orders if o.status in _OPEN and o.symbol == symbol]
        )

    async def active_symbols(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        found = {o.symbol for o in self.book.orders.values() if o.status in _OPEN}
        return kucoin_answer({"symbols": [self.native_id(state.markets[s]) for s in sorted(found)]})

    def order_json(self, order: ServerOrder) -> dict[str, Any]:
        """An order as KuCoin's HF order detail gives it."""
        m = self.state.markets[order.symbol]
        filled, funds = order.executed_qty, order.quote_qty
        active = order.status in _OPEN
        return {
            "id": str(order.order_id),
            "clientOid": order.client_order_id,
            "symbol": self.native_id(m),
            "opType": "DEAL",
            "type": order.type.lower(),
            "side": order.side.lower(),
            "price": repr(order.price),
            "size": repr(order.orig_qty),
            "funds": "0",
            "dealSize": repr(filled),
            "dealFunds": repr(funds),
            "remainSize": repr(order.orig_qty - filled if active else 0.0),
            "fee": repr(sum(f.commission for f in order.fills)),
            "feeCurrency": m.quote,
            "stp": "",
            "timeInForce": order.time_in_force,
            "postOnly": False,
            "hidden": False,
            "iceberg": False,
            "tradeType": "TRADE",
            "inOrderBook": active,
            "active": active,
            "cancelExist": order.status in ("CANCELED", "EXPIRED"),
            "createdAt": order.time_ms,
            "lastUpdatedAt": order.time_ms,
        }

    def _fault_answer(self, fault: OrderFault) -> web.Response:
        return self.error_response(429 if fault.kind is OrderFaultKind.RATE_LIMIT else 503)
