"""OKX v5's signed spot endpoints on the loopback OKX server: orders, open orders, the balance.

``LoopbackOkxPrivate(markets, api_key=..., secret=..., passphrase=..., balances=...)`` is the
public ``LoopbackOkx`` plus what ccxt's ``okx`` client calls for ``CcxtVenue``:
``POST /api/v5/trade/batch-orders`` (ccxt's default for ``create_order``) and
``/trade/order``, ``GET /api/v5/trade/order`` (by ``clOrdId`` or ``ordId``),
``POST /api/v5/trade/cancel-order``, ``GET /api/v5/trade/orders-pending``,
``GET /api/v5/account/balance``, and ``GET /api/v5/asset/currencies`` (ccxt's ``load_markets``
asks it once it has keys). Orders, matching and balances are the Binance loopback's
``PrivateBook`` (``server.book``): the same book walk and GTC remainders resting with their
funds locked; the taker fee is charged as OKX charges spot fees, in the asset received (a buy
pays it in the base asset).

Authentication is OKX's: ``OK-ACCESS-KEY``, ``OK-ACCESS-PASSPHRASE``, ``OK-ACCESS-TIMESTAMP``
(ISO 8601, milliseconds, ``Z``) and ``OK-ACCESS-SIGN`` = base64(HMAC-SHA256(secret, timestamp +
method + request path with its query + body)). A missing or wrong header is answered as OKX
does, HTTP 401 with ``50103``-``50113``; a wrong passphrase is ``50105``. Timestamps are not
checked against the server's clock (often a test's manual clock; ccxt stamps wall time).

Orders as OKX takes them: ``tdMode`` must be ``cash``, ``clOrdId`` is at most 32 letters and
digits (else ``51000``), and a spot market buy's ``sz`` must be in the base currency
(``tgtCcy=base_ccy``; OKX's default, the quote currency, is answered ``51000`` here, not
modelled). A place answer only acknowledges (``ordId``, ``clOrdId``, ``sCode``): fills are read
with ``GET /trade/order``. A ``clOrdId`` already used is ``51016`` "Duplicated clOrdId". Faults
for order placement and queries are the Binance loopback's ``OrderFault`` kinds, in
``book.order_faults`` and ``book.query_faults``; ``query_lags`` make order queries answer what
OKX may show just after acknowledging an order (matching runs after the answer): not there yet,
or there and not matched yet.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
from collections import deque
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar

from aiohttp import web

from tests.support.loopback_binance_private import (
    OrderFault,
    OrderFaultKind,
    PrivateBook,
    ServerOrder,
)
from tests.support.loopback_exchange import Handler, LoopbackState, Market
from tests.support.loopback_okx import LoopbackOkx, okx_answer, okx_error

BATCH_ORDERS = "/api/v5/trade/batch-orders"
ORDER = "/api/v5/trade/order"
CLIENT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
"""OKX's ``clOrdId``: case-sensitive letters and digits, 1 to 32 of them."""
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# PrivateBook's (Binance's) order states → OKX's ``state``.
_STATE = {
    "NEW": "live",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "canceled",
    "EXPIRED": "canceled",
}
# OKX ``ordType`` → PrivateBook's (type, time in force).
_ORD_TYPE = {"market": ("MARKET", "GTC"), "limit": ("LIMIT", "GTC"), "ioc": ("LIMIT", "IOC")}


class QueryLag(StrEnum):
    UNSEEN = "unseen"
    """The order is not visible yet: ``51603`` "Order does not exist"."""
    MATCHING = "matching"
    """The order is visible, not matched yet: ``live``, nothing filled."""


class Refused(Exception):
    """Raised inside a handler (wrapped by ``answering``) to answer ``response`` instead (the
    KuCoin loopback uses both too)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def _unauthorized(code: str, msg: str) -> Refused:
    return Refused(okx_error(code, msg, status=401))


def _order_failed(code: str, msg: str, cid: str = "") -> web.Response:
    """A place or cancel refused: OKX's ``code`` 1 with the order's ``sCode`` and ``sMsg``."""
    data = [{"clOrdId": cid, "ordId": "", "sCode": code, "sMsg": msg, "tag": ""}]
    return web.json_response({"code": "1", "msg": "", "data": data})


class LoopbackOkxPrivate(LoopbackOkx):
    """The loopback OKX server with one account (the configured key) that trades."""

    name: ClassVar[str] = "okx"

    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        api_key: str,
        secret: str,
        passphrase: str,
        balances: Mapping[str, float],
        taker_fee_bps: float = 10.0,
        partial_fill_ratio: float = 1.0,
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
            partial_fill_ratio=partial_fill_ratio,
        )
        self.order_bodies: list[dict[str, Any]] = []
        """Every authenticated place request's order, as sent (a batch gives one per order)."""
        self.query_lags: deque[QueryLag] = deque()
        """Lags for ``GET /api/v5/trade/order``, one consumed per query (after query_faults)."""

    def routes(self) -> dict[tuple[str, str], Handler]:
        private = {
            ("GET", "/api/v5/asset/currencies"): self.currencies,
            ("POST", BATCH_ORDERS): self.place_batch,
            ("POST", ORDER): self.place_one,
            ("GET", ORDER): self.get_order,
            ("POST", "/api/v5/trade/cancel-order"): self.cancel_order,
            ("GET", "/api/v5/trade/orders-pending"): self.orders_pending,
            ("GET", "/api/v5/account/balance"): self.account_balance,
        }
        return super().routes() | {k: answering(h) for k, h in private.items()}

    # --- authentication ----------------------------------------------------------------------

    async def _signed(self, request: web.Request) -> Any:
        """The request's JSON body (None for a GET) once OKX's four headers check out."""
        headers = request.headers
        key = headers.get("OK-ACCESS-KEY", "")
        passphrase = headers.get("OK-ACCESS-PASSPHRASE", "")
        stamp = headers.get("OK-ACCESS-TIMESTAMP", "")
        sign = headers.get("OK-ACCESS-SIGN", "")
        if not key:
            raise _unauthorized("50103", 'Request header "OK-ACCESS-KEY" can not be empty.')
        if not passphrase:
            raise _unauthorized("50104", 'Request header "OK-ACCESS-PASSPHRASE" can not be empty.')
        if not sign:
            raise _unauthorized("50106", 'Request header "OK-ACCESS-SIGN" can not be empty.')
        if key != self.book.api_key:
            raise _unauthorized("50111", "Invalid OK-ACCESS-KEY.")
        if not hmac.compare_digest(passphrase, self.passphrase):
            raise _unauthorized("50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.')
        if not _TIMESTAMP.fullmatch(stamp):
            raise _unauthorized("50112", "Invalid OK-ACCESS-TIMESTAMP.")
        body = await request.text() if request.method != "GET" else ""
        payload = stamp + request.method + request.raw_path + body
        digest = hmac.new(self.book.secret.encode(), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(sign, base64.b64encode(digest).decode()):
            raise _unauthorized("50113", "Invalid Sign")
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise Refused(okx_error("50002", "Json data format error.", status=400)) from None

    # --- orders --------------------------------------------------------------------------------

    async def place_batch(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        orders = await self._signed(request)
        if not isinstance(orders, list) or len(orders) != 1:
            # Real batches hold up to 20; ccxt sends one order a batch for create_order.
            return okx_error("50000", "This loopback serves batches of one order.", status=400)
        return await self._place(orders[0])

    async def place_one(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        order = await self._signed(request)
        if not isinstance(order, dict):
            return okx_error("50002", "Json data format error.", status=400)
        return await self._place(order)

    async def _place(self, body: dict[str, Any]) -> web.StreamResponse:
        book = self.book
        self.order_bodies.append(body)
        book.order_posts += 1
        cid = str(body.get("clOrdId") or "")
        params = self._book_params(body)
        if isinstance(params, web.Response):
            return params
        if cid in book.orders:
            return _order_failed("51016", "Duplicated clOrdId", cid)
        fault = book.order_faults.popleft() if book.order_faults else None
        if fault is not None:
            if fault.kind is OrderFaultKind.REJECT:
                return _order_failed("51008", "Order failed. Insufficient balance.", cid)
            if fault.kind is not OrderFaultKind.ACCEPT_THEN_TIMEOUT and not fault.accept:
                return self._fault_answer(fault)  # nothing created
        placed = book.place(params)
        if isinstance(placed, web.Response):
            # The body was checked above: funds are all the book can still refuse.
            return _order_failed("51008", "Order failed. Insufficient balance.", cid)
        if placed.side == "BUY":  # the book charged the quote asset: charge the base instead
            m = self.state.markets[placed.symbol]
            book.balances[m.quote].free += sum(f.commission for f in placed.fills)
            book.balances[m.base].free -= self._fee(placed)
        if fault is not None and fault.kind is OrderFaultKind.ACCEPT_THEN_TIMEOUT:
            await asyncio.sleep(fault.delay_s)  # the client hangs up first
        elif fault is not None:
            return self._fault_answer(fault)
        ack = {
            "clOrdId": placed.client_order_id,
            "ordId": str(placed.order_id),
            "tag": str(body.get("tag") or ""),
            "ts": str(placed.time_ms),
            "sCode": "0",
            "sMsg": "Order placed",
        }
        return okx_answer([ack])

    def _book_params(self, body: dict[str, Any]) -> dict[str, str] | web.Response:
        """An OKX order body as ``PrivateBook.place`` takes it, or OKX's refusal."""
        cid = str(body.get("clOrdId") or "")
        symbol = self.symbol_of(str(body.get("instId") or ""))
        if symbol is None:
            return _order_failed("51001", "Instrument ID does not exist.", cid)
        if not CLIENT_ID.fullmatch(cid):
            return _order_failed("51000", "Parameter clOrdId error", cid)
        if body.get("tdMode") != "cash":
            return _order_failed("51000", "Parameter tdMode error", cid)
        side, kind = body.get("side"), _ORD_TYPE.get(str(body.get("ordType")))
        if side not in ("buy", "sell"):
            return _order_failed("51000", "Parameter side error", cid)
        if kind is None:
            return _order_failed("51000", "Parameter ordType error", cid)
        otype, tif = kind
        if otype == "MARKET" and side == "buy" and body.get("tgtCcy") != "base_ccy":
            return _order_failed("51000", "Parameter tgtCcy error", cid)
        try:
            qty = float(body["sz"])
            price = float(body["px"]) if otype == "LIMIT" else 0.0
        except (KeyError, TypeError, ValueError):
            return _order_failed("51000", "Parameter sz error", cid)
        if not (qty > 0 and price >= 0):
            return _order_failed("51000", "Parameter sz error", cid)
        params = {
            "symbol": symbol,
            "side": side.upper(),
            "type": otype,
            "quantity": repr(qty),
            "newClientOrderId": cid,
        }
        if otype == "LIMIT":
            params |= {"price": repr(price), "timeInForce": tif}
        return params

    def _find(self, query: Mapping[str, str]) -> ServerOrder | None:
        symbol = self.symbol_of(query.get("instId"))
        if symbol is None:
            raise Refused(_order_failed("51001", "Instrument ID does not exist."))
        cid, oid = query.get("clOrdId"), query.get("ordId")
        if cid:
            order = self.book.orders.get(cid)
        elif oid and oid.isdigit():
            order = self.book.by_order_id(int(oid))
        else:
            raise Refused(okx_error("51000", "Parameter ordId error"))
        return order if order is not None and order.symbol == symbol else None

    async def get_order(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        await self._signed(request)
        if self.book.query_faults:
            return self._fault_answer(self.book.query_faults.popleft())
        lag = self.query_lags.popleft() if self.query_lags else None
        order = self._find(request.query)
        if order is None or lag is QueryLag.UNSEEN:
            return okx_error("51603", "Order does not exist")
        body = self.order_json(order)
        if lag is QueryLag.MATCHING:
            body |= {"state": "live", "accFillSz": "0", "avgPx": "", "fee": "0", "fillSz": "0"}
            body |= {"fillPx": "", "tradeId": "", "fillTime": ""}
        return okx_answer([body])

    async def cancel_order(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        body = await self._signed(request)
        if not isinstance(body, dict):
            return okx_error("50002", "Json data format error.", status=400)
        order = self._find({k: str(v) for k, v in body.items() if v is not None})
        cid = str(body.get("clOrdId") or "")
        if order is None:
            return _order_failed("51400", "Cancellation failed as the order does not exist.", cid)
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            return _order_failed(
                "51402", "Order cancellation failed as the order has been completed.", cid
            )
        self.book.cancel(order)
        ack = {"clOrdId": order.client_order_id, "ordId": str(order.order_id)}
        return okx_answer([ack | {"sCode": "0", "sMsg": ""}])

    async def orders_pending(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        native = request.query.get("instId")
        return okx_answer(
            [
                self.order_json(o)
                for o in self.book.orders.values()
                if o.status in ("NEW", "PARTIALLY_FILLED")
                and (native is None or self.symbol_of(native) == o.symbol)
            ]
        )

    def order_json(self, order: ServerOrder) -> dict[str, Any]:
        """An order as ``GET /api/v5/trade/order`` answers it (fees negative, as OKX's are)."""
        m = self.state.markets[order.symbol]
        filled = order.executed_qty
        last = order.fills[-1] if order.fills else None
        ord_type = "market" if order.type == "MARKET" else order.time_in_force.lower()
        return {
            "instType": "SPOT",
            "instId": self.native_id(m),
            "ccy": "",
            "ordId": str(order.order_id),
            "clOrdId": order.client_order_id,
            "tag": "",
            "px": repr(order.price) if order.type == "LIMIT" else "",
            "sz": repr(order.orig_qty),
            "pnl": "0",
            "ordType": "limit" if ord_type == "gtc" else ord_type,
            "side": order.side.lower(),
            "posSide": "net",
            "tdMode": "cash",
            "tgtCcy": "base_ccy" if order.type == "MARKET" else "",
            "accFillSz": repr(filled),
            "fillPx": repr(last.price) if last else "",
            "tradeId": str(last.trade_id) if last else "",
            "fillSz": repr(last.qty) if last else "0",
            "fillTime": str(order.time_ms) if last else "",
            "avgPx": repr(order.quote_qty / filled) if filled > 0 else "",
            "state": _STATE[order.status],
            "lever": "",
            "feeCcy": m.base if order.side == "BUY" else m.quote,
            "fee": repr(-self._fee(order)),
            "rebateCcy": m.base,
            "rebate": "0",
            "category": "normal",
            "uTime": str(order.time_ms),
            "cTime": str(order.time_ms),
        }

    def _fee(self, order: ServerOrder) -> float:
        """The order's fee in OKX's fee currency: the base asset for a buy, else the quote."""
        if order.side == "BUY":
            return order.executed_qty * self.book.taker_fee_bps / 1e4
        return sum(f.commission for f in order.fills)

    # --- account ---------------------------------------------------------------------------------

    async def account_balance(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        now = str(state.now_ms())
        details = [
            {
                "ccy": asset,
                "eq": repr(b.free + b.locked),
                "cashBal": repr(b.free + b.locked),
                "availBal": repr(b.free),
                "availEq": "",  # multi-currency margin only; a spot (cash) account leaves it empty
                "frozenBal": repr(b.locked),
                "ordFrozen": repr(b.locked),
                "uTime": now,
            }
            for asset, b in self.book.balances.items()
        ]
        return okx_answer([{"uTime": now, "totalEq": "", "details": details}])

    async def currencies(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._signed(request)
        assets = sorted({a for m in state.markets.values() for a in (m.base, m.quote)})
        return okx_answer(
            [
                {
                    "ccy": asset,
                    "chain": f"{asset}-{asset}",
                    "name": asset,
                    "canDep": True,
                    "canWd": True,
                    "canInternal": True,
                    "minWd": "0.0001",
                    "maxWd": "1000000",
                    "wdTickSz": "8",
                    "minFee": "0",
                    "maxFee": "0",
                    "mainNet": True,
                }
                for asset in assets
            ]
        )

    def _fault_answer(self, fault: OrderFault) -> web.Response:
        return self.error_response(429 if fault.kind is OrderFaultKind.RATE_LIMIT else 503)


def answering(handler: Handler) -> Handler:
    async def wrapped(request: web.Request, state: LoopbackState) -> web.StreamResponse:
        try:
            return await handler(request, state)
        except Refused as refused:
            return refused.response

    return wrapped
