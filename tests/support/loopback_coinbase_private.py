"""Coinbase Advanced Trade's signed endpoints on the loopback Coinbase server: orders, order
lists, cancels, accounts.

``LoopbackCoinbasePrivate(markets, key_name=..., public_key=..., balances=...)`` is the public
``LoopbackCoinbase`` plus what ccxt's ``coinbase`` client calls for ``CcxtVenue``:
``POST /api/v3/brokerage/orders``, ``GET /orders/historical/{order_id}`` (Coinbase's order id
only), ``GET /orders/historical/batch`` (filtered by ``product_id``/``product_ids``,
``order_status`` and ``start_date``, newest first, paged by ``cursor``), ``POST
/orders/batch_cancel``, ``GET /accounts`` and ``GET /transaction_summary`` (ccxt's
``load_markets`` asks it once it has keys). Orders, matching and balances are the Binance
loopback's ``PrivateBook`` (``server.book``); fees are charged in the quote asset.

Authentication is what ccxt 4.5 sends for the key it is given. A CDP key (``public_key``):
``Authorization: Bearer <JWT>`` (header ``kid`` = the key name, a ``nonce``; claims ``sub`` = the
key name, ``nbf``/``exp`` checked against the wall clock ``wall_s``, as ccxt stamps wall time),
either ES256 (an EC P-256 key in PEM: ``iss`` ``coinbase-cloud``, ``aud``
``["retail_rest_api_proxy"]``, ``uri``) or EdDSA (an Ed25519 key, base64: ``iss`` ``cdp``,
``aud`` ``["cdp_service"]``, ``uris``); the uri is ``"<METHOD> <host><path>"``, and as ccxt
strips only ``https://`` from it, against this plain HTTP server it reads ``GET
http://127.0.0.1:<port>/api/v3/...`` (the scheme is ignored, host and path must match). Any
failure answers HTTP 401 ``Unauthorized`` as plain text, as Coinbase's gateway does. A legacy
key (``legacy_secret``): ``CB-ACCESS-KEY``, ``CB-ACCESS-TIMESTAMP`` (seconds, within 30 s of
the wall clock) and ``CB-ACCESS-SIGN`` = hex HMAC-SHA256(secret, timestamp + method + path
without the query + body), refused with Coinbase's ``authentication_error``.

Orders as Coinbase takes them: ``client_order_id`` required; ``order_configuration`` one of
``market_market_ioc`` (``base_size`` only: the quote-sized buy ccxt sends by default is refused
``UNSUPPORTED_ORDER_CONFIGURATION`` here, not modelled), ``limit_limit_gtc`` or ``sor_limit_ioc``.
A ``client_order_id`` already used creates nothing and answers the existing order (Coinbase's
documented behaviour). The place answer only acknowledges (``order_id``); refusals are HTTP 200
with ``success: false`` and an ``error_response``. Faults for placing are the Binance loopback's
``OrderFault`` kinds in ``book.order_faults``; ``book.query_faults`` answer order queries and
order lists, one per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.loopback_binance_private import (
    OrderFault,
    OrderFaultKind,
    PrivateBook,
    ServerOrder,
)
from tests.support.loopback_coinbase import LoopbackCoinbase, coinbase_error, iso
from tests.support.loopback_exchange import Handler, LoopbackState, Market, num, path_param
from tests.support.loopback_okx_private import Refused, answering

BROKERAGE = "/api/v3/brokerage"
ORDERS = BROKERAGE + "/orders"
ORDER = ORDERS + "/historical/{order_id}"
ORDER_LIST = ORDERS + "/historical/batch"
CANCEL = ORDERS + "/batch_cancel"
ACCOUNTS = BROKERAGE + "/accounts"
# PrivateBook's (Binance's) order states → Coinbase's ``status``.
_STATUS = {
    "NEW": "OPEN",
    "PARTIALLY_FILLED": "OPEN",
    "FILLED": "FILLED",
    "CANCELED": "CANCELLED",
    "EXPIRED": "CANCELLED",
}
_TIF = {"GTC": "GOOD_UNTIL_CANCELLED", "IOC": "IMMEDIATE_OR_CANCEL"}
PAGE = 2
"""Orders per page of the order list (small, so that tests page through it)."""


def order_id(order: ServerOrder) -> str:
    """A Coinbase-shaped order id (a UUID) for the book's order id."""
    return str(uuid.UUID(int=0xC0BA5E << 64 | order.order_id))


def _unauthorized() -> Refused:
    return Refused(web.Response(status=401, text="Unauthorized\n"))


def _legacy_refused(message: str) -> Refused:
    body = {"errors": [{"id": "authentication_error", "message": message}]}
    return Refused(web.json_response(body, status=401))


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _order_failed(error: str, message: str) -> web.Response:
    body = {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": "",
        "error_response": {
            "error": error,
            "message": message,
            "error_details": "",
            "new_order_failure_reason": error,
        },
    }
    return web.json_response(body)


class LoopbackCoinbasePrivate(LoopbackCoinbase):
    """The loopback Coinbase server with one account (the configured CDP key) that trades."""

    name: ClassVar[str] = "coinbase"

    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        key_name: str,
        public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | None = None,
        legacy_secret: str = "",
        balances: Mapping[str, float],
        taker_fee_bps: float = 10.0,
        wall_s: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(markets, **kwargs)
        self.public_key = public_key
        self.wall_s = wall_s
        self.book = PrivateBook(
            self.state,
            api_key=key_name,
            secret=legacy_secret,
            balances=balances,
            taker_fee_bps=taker_fee_bps,
            partial_fill_ratio=1.0,
        )
        self.order_bodies: list[dict[str, Any]] = []
        """Every authenticated place request's body, as sent."""
        self.list_queries: list[dict[str, list[str]]] = []
        """Every authenticated order list request's query."""
        self.after_lookup: deque[Callable[[], None]] = deque()
        """Changes applied right after answering an order query (one each): the book moving
        between two of a client's requests."""

    def routes(self) -> dict[tuple[str, str], Handler]:
        private = {
            ("POST", ORDERS): self.create_order,
            ("GET", ORDER_LIST): self.list_orders,  # before ORDER: "batch" is no order id
            ("GET", ORDER): self.get_order,
            ("POST", CANCEL): self.batch_cancel,
            ("GET", ACCOUNTS): self.accounts,
            ("GET", BROKERAGE + "/transaction_summary"): self.transaction_summary,
        }
        return super().routes() | {route: answering(h) for route, h in private.items()}

    # --- authentication ----------------------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> None:
        if self.book.secret:
            await self._legacy(request)
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        parts = token.split(".")
        if scheme != "Bearer" or len(parts) != 3:
            raise _unauthorized()
        try:
            header, claims = json.loads(_b64url(parts[0])), json.loads(_b64url(parts[1]))
            signature = _b64url(parts[2])
        except (binascii.Error, ValueError):
            raise _unauthorized() from None
        signed = f"{parts[0]}.{parts[1]}".encode()
        eddsa = isinstance(self.public_key, ed25519.Ed25519PublicKey)
        key = self.book.api_key
        if header.get("alg") != ("EdDSA" if eddsa else "ES256") or header.get("kid") != key:
            raise _unauthorized()
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(signature, signed)
            elif isinstance(self.public_key, ec.EllipticCurvePublicKey) and len(signature) == 64:
                r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                self.public_key.verify(
                    encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256())
                )
            else:
                raise InvalidSignature
        except InvalidSignature:
            raise _unauthorized() from None
        now = self.wall_s()
        uris = claims.get("uris") if eddsa else [claims.get("uri")]
        method, _, url = str((uris or [""])[0]).partition(" ")
        if (
            claims.get("sub") != key
            or claims.get("iss") != ("cdp" if eddsa else "coinbase-cloud")
            or claims.get("aud") != (["cdp_service"] if eddsa else ["retail_rest_api_proxy"])
            or not float(claims.get("nbf", now + 1)) <= now < float(claims.get("exp", 0))
            or len(uris or ()) != 1
            or method != request.method
            or url.removeprefix("http://") != request.host + request.path
        ):
            raise _unauthorized()

    async def _legacy(self, request: web.Request) -> None:
        headers = request.headers
        stamp = headers.get("CB-ACCESS-TIMESTAMP", "")
        payload = stamp + request.method + request.path + await request.text()
        expected = hmac.new(self.book.secret.encode(), payload.encode(), hashlib.sha256)
        if headers.get("CB-ACCESS-KEY") != self.book.api_key or not hmac.compare_digest(
            headers.get("CB-ACCESS-SIGN", ""), expected.hexdigest()
        ):
            raise _legacy_refused("invalid signature")
        if not stamp.isdigit() or abs(int(stamp) - self.wall_s()) > 30:
            raise _legacy_refused("request timestamp expired")

    # --- orders --------------------------------------------------------------------------------

    async def create_order(self, request: web.Request, state: LoopbackState) -> web.StreamResponse:
        await self._authenticate(request)
        body = await request.json()
        self.order_bodies.append(body)
        book = self.book
        book.order_posts += 1
        params = self._book_params(body)
        if isinstance(params, web.Response):
            return params
        existing = book.orders.get(params["newClientOrderId"])
        if existing is not None:
            return self._acknowledged(existing)
        fault = book.order_faults.popleft() if book.order_faults else None
        if fault is not None:
            if fault.kind is OrderFaultKind.REJECT:
                return _order_failed("INSUFFICIENT_FUND", "Insufficient balance in source account")
            if fault.kind is not OrderFaultKind.ACCEPT_THEN_TIMEOUT and not fault.accept:
                return self._fault_answer(fault)  # nothing created
        placed = book.place(params)
        if isinstance(placed, web.Response):
            # The body was checked above: funds are all the book can still refuse.
            return _order_failed("INSUFFICIENT_FUND", "Insufficient balance in source account")
        if fault is not None and fault.kind is OrderFaultKind.ACCEPT_THEN_TIMEOUT:
            await asyncio.sleep(fault.delay_s)  # the client hangs up first
        elif fault is not None:
            return self._fault_answer(fault)
        return self._acknowledged(placed)

    def _acknowledged(self, order: ServerOrder) -> web.Response:
        native = self.native_id(self.state.markets[order.symbol])
        ack = {
            "order_id": order_id(order),
            "product_id": native,
            "side": order.side,
            "client_order_id": order.client_order_id,
        }
        return web.json_response(
            {
                "success": True,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": order_id(order),
                "success_response": ack,
                "order_configuration": None,
            }
        )

    def _book_params(self, body: Mapping[str, Any]) -> dict[str, str] | web.Response:
        """A Coinbase order body as ``PrivateBook.place`` takes it (else Coinbase's refusal)."""
        symbol = self.symbol_of(body.get("product_id"))
        cid = body.get("client_order_id")
        side = body.get("side")
        config = body.get("order_configuration")
        if symbol is None:
            return _order_failed("INVALID_ARGUMENT", "ProductID is invalid")
        if not isinstance(cid, str) or not cid or side not in ("BUY", "SELL"):
            return _order_failed("INVALID_ARGUMENT", "client_order_id and side are required")
        if not isinstance(config, dict) or len(config) != 1:
            return _order_failed("INVALID_ARGUMENT", "one order_configuration is required")
        ((kind, spec),) = config.items()
        params = {"symbol": symbol, "side": side, "newClientOrderId": cid}
        try:
            if kind == "market_market_ioc" and set(spec) == {"base_size"}:
                params |= {"type": "MARKET", "quantity": repr(float(spec["base_size"]))}
            elif kind in ("limit_limit_gtc", "sor_limit_ioc"):
                tif = "GTC" if kind == "limit_limit_gtc" else "IOC"
                params |= {
                    "type": "LIMIT",
                    "quantity": repr(float(spec["base_size"])),
                    "price": repr(float(spec["limit_price"])),
                    "timeInForce": tif,
                }
            else:
                return _order_failed(
                    "UNSUPPORTED_ORDER_CONFIGURATION", f"{kind} {sorted(spec)} is not modelled"
                )
        except (KeyError, TypeError, ValueError):
            return _order_failed("INVALID_ARGUMENT", "invalid base_size or limit_price")
        if float(params["quantity"]) <= 0:
            return _order_failed("INVALID_ARGUMENT", "base_size must be positive")
        return params

    def _query_fault(self) -> web.Response | None:
        if self.book.query_faults:
            return self._fault_answer(self.book.query_faults.popleft())
        return None

    async def get_order(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._authenticate(request)
        fault = self._query_fault()
        if fault is not None:
            return fault
        wanted = path_param(request, "order_id")
        found = next((o for o in self.book.orders.values() if order_id(o) == wanted), None)
        if found is None:
            return coinbase_error(404, "NOT_FOUND", "order with this orderID was not found")
        answer = web.json_response({"order": self.order_json(found)})
        if self.after_lookup:
            self.after_lookup.popleft()()
        return answer

    async def list_orders(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._authenticate(request)
        query = {k: request.query.getall(k) for k in request.query}
        self.list_queries.append(query)
        fault = self._query_fault()
        if fault is not None:
            return fault
        products = query.get("product_ids", []) + query.get("product_id", [])
        statuses = query.get("order_status", [])
        start = query.get("start_date", [""])[0]
        found = [
            o
            for o in sorted(self.book.orders.values(), key=lambda o: o.order_id, reverse=True)
            if (not products or self.native_id(state.markets[o.symbol]) in products)
            and (not statuses or _STATUS[o.status] in statuses)
            and (not start or iso(o.time_ms) >= start)
        ]
        offset = int(query.get("cursor", ["0"])[0] or 0)
        limit = min(int(query.get("limit", [str(PAGE)])[0]), PAGE)
        page = found[offset : offset + limit]
        more = offset + limit < len(found)
        return web.json_response(
            {
                "orders": [self.order_json(o) for o in page],
                "sequence": "0",
                "has_next": more,
                "cursor": str(offset + limit) if more else "",
            }
        )

    async def batch_cancel(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._authenticate(request)
        body = await request.json()
        by_id = {order_id(o): o for o in self.book.orders.values()}
        results = []
        for wanted in body.get("order_ids") or []:
            found = by_id.get(wanted)
            if found is None or _STATUS[found.status] != "OPEN":
                results.append(
                    {"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": wanted}
                )
                continue
            self.book.cancel(found)
            results.append(
                {
                    "success": True,
                    "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                    "order_id": wanted,
                }
            )
        return web.json_response({"results": results})

    def order_json(self, order: ServerOrder) -> dict[str, Any]:
        """An order as the order query and the order list answer it."""
        native = self.native_id(self.state.markets[order.symbol])
        size = num(order.orig_qty)
        if order.type == "MARKET":
            config: dict[str, Any] = {"market_market_ioc": {"base_size": size}}
        elif order.time_in_force == "GTC":
            config = {
                "limit_limit_gtc": {
                    "base_size": size,
                    "limit_price": num(order.price),
                    "post_only": False,
                }
            }
        else:
            config = {"sor_limit_ioc": {"base_size": size, "limit_price": num(order.price)}}
        filled = order.executed_qty
        fees = sum(f.commission for f in order.fills)
        return {
            "order_id": order_id(order),
            "product_id": native,
            "user_id": "loopback-user",
            "order_configuration": config,
            "side": order.side,
            "client_order_id": order.client_order_id,
            "status": _STATUS[order.status],
            "time_in_force": _TIF[order.time_in_force]
            if order.type == "LIMIT"
            else "IMMEDIATE_OR_CANCEL",
            "created_time": iso(order.time_ms),
            "completion_percentage": num(100 * filled / order.orig_qty),
            "filled_size": num(filled),
            "average_filled_price": num(order.quote_qty / filled) if filled else "0",
            "fee": "",
            "number_of_fills": str(len(order.fills)),
            "filled_value": num(order.quote_qty),
            "pending_cancel": False,
            "size_in_quote": False,
            "total_fees": num(fees),
            "size_inclusive_of_fees": False,
            "total_value_after_fees": num(order.quote_qty + fees),
            "trigger_status": "INVALID_ORDER_TYPE",
            "order_type": order.type,
            "reject_reason": "REJECT_REASON_UNSPECIFIED",
            "settled": _STATUS[order.status] != "OPEN",
            "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": "",
        }

    # --- account ---------------------------------------------------------------------------------

    async def accounts(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._authenticate(request)
        accounts = [
            {
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"loopback/{asset}")),
                "name": f"{asset} Wallet",
                "currency": asset,
                "available_balance": {"value": num(b.free), "currency": asset},
                "default": True,
                "active": True,
                "type": "ACCOUNT_TYPE_FIAT" if asset == "USD" else "ACCOUNT_TYPE_CRYPTO",
                "ready": True,
                "hold": {"value": num(b.locked), "currency": asset},
            }
            for asset, b in sorted(self.book.balances.items())
        ]
        return web.json_response(
            {"accounts": accounts, "has_next": False, "cursor": "", "size": len(accounts)}
        )

    async def transaction_summary(self, request: web.Request, state: LoopbackState) -> web.Response:
        await self._authenticate(request)
        rate = num(self.book.taker_fee_bps / 1e4)
        return web.json_response(
            {
                "total_volume": 0,
                "total_fees": 0,
                "fee_tier": {
                    "pricing_tier": "Advanced 1",
                    "usd_from": "0",
                    "usd_to": "10000",
                    "taker_fee_rate": rate,
                    "maker_fee_rate": rate,
                },
            }
        )

    def _fault_answer(self, fault: OrderFault) -> web.Response:
        return self.error_response(429 if fault.kind is OrderFaultKind.RATE_LIMIT else 503)
