"""A live trading venue through ``ccxt.async_support``: orders, cancels, order state and balances.

Every order carries our ``client_order_id`` to the exchange (Binance: ``newClientOrderId``; OKX:
``clOrdId``; KuCoin: ``clientOid``; Kraken: ``cl_ord_id``; Coinbase: ``client_order_id``, which
replaces ccxt's own ``ccxt-<uuid>``), mapped by ``exchange_client_id`` to the characters and
length the exchange accepts, and that id is how the venue finds the order again (Kraken, whose
order query takes only its own order ids: in its open, then its closed order list, both filtered
by ``cl_ord_id``; Coinbase, likewise: by the order id its place answer gave, else by matching
``client_order_id`` in its order list of the product, from shortly before the order was sent, or
its whole history for an id this process did not send). An exchange that only acknowledges a
placed order (OKX, KuCoin, Kraken, Coinbase) is asked for the order's state and fills straight
away. A submit whose outcome is unknown (timeout, dropped connection, 5xx, 429, a garbled
answer) is never sent again: the venue queries the order by its client id, a few times, and
answers what the exchange holds. Only an answer that proves the exchange did not take the order
(an explicit reject, or "order does not exist" to that query) comes back REJECTED; when even the
queries fail, ``submit`` raises ``VenueError`` and the order stays known, so a later submit or
``fetch_order`` with the same id resolves it by querying again. A duplicate-id error from the
exchange means an earlier submit got through, and is resolved the same way.

Kraken's limit: it keeps a ``cl_ord_id`` unique among open orders only (and documents no
duplicate error), so that last guard does not hold there. A process that has forgotten an id (a
restart, or more than ``order_memory`` orders since) and is asked to submit it again sends a
second order when the first has closed, and reads Kraken's refusal as a reject when the first is
still open: ask ``lookup`` first for ids that may have been sent before (reconciliation does).

Coinbase's market buys are sized in the base asset (``market_market_ioc`` with ``base_size``)
instead of ccxt's quote-sized buy, which needs a price.

Fees, in the quote asset: a fill's fee is the exchange's commission (a trade's, or for fills
known only from an order query, which carries no trades, the order's total) when it is charged
in the quote asset, or in the base asset at the fill's price; else the configured taker fee on
the fill's notional.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import msgspec
import structlog

from quantumtrade.cache.l1 import L1Cache
from quantumtrade.clock import Clock
from quantumtrade.data.ccxt_source import EXCHANGE_IDS, ExchangeId, ExchangeSession, new_exchange
from quantumtrade.data.source import OrderBook
from quantumtrade.errors import VenueError
from quantumtrade.events import OrderIntent, OrderType, Side
from quantumtrade.execution.venue import (
    Execution,
    Fill,
    OrderStatus,
    OutcomeUnknown,
    VenueOrder,
    round_to_step,
)

if TYPE_CHECKING:  # config.py composes configs, so import it for types only
    from quantumtrade.config import Credentials

log = structlog.get_logger("quantumtrade.ccxt_venue")

# The exchange's own order states (Binance's names; ccxt keeps them in ``info``).
_VENUE_STATUS: dict[str, OrderStatus] = {
    "NEW": OrderStatus.NEW,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELLED,
    "PENDING_CANCEL": OrderStatus.CANCELLED,
    "EXPIRED": OrderStatus.CANCELLED,
    "EXPIRED_IN_MATCH": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
    # Coinbase's (its CANCELLED, EXPIRED and FAILED would all read "canceled" through ccxt).
    "PENDING": OrderStatus.NEW,
    "QUEUED": OrderStatus.NEW,
    "OPEN": OrderStatus.NEW,
    "CANCEL_QUEUED": OrderStatus.NEW,
    "CANCELLED": OrderStatus.CANCELLED,
    "FAILED": OrderStatus.REJECTED,
}
_OPEN = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
# ccxt's unified states, for exchanges whose raw status we do not know.
_UNIFIED_STATUS: dict[str, OrderStatus] = {
    "open": OrderStatus.NEW,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
}
# Binance's, OKX's (51016) and KuCoin's (400100) answers to a client order id already used.
DUPLICATE_MARKERS = ("duplicate order", "duplicated clordid", "clientoidduplicated")
# How each exchange's ccxt client takes our client order id: (create_order param, fetch_order
# and cancel_order param). Others take ccxt's unified ``clientOrderId`` (okx's client, given
# Binance's names, sends them on as unknown fields and a broker-prefixed id of its own).
_CLIENT_ID_PARAMS: dict[str, tuple[str, str]] = {
    "binance": ("newClientOrderId", "origClientOrderId"),
    # ccxt's coinbase client drops ``clientOrderId``; its request field, given as a param,
    # replaces the ``ccxt-<uuid>`` it makes up (Coinbase's queries never take it).
    "coinbase": ("client_order_id", "client_order_id"),
}
# What each exchange accepts as a client order id where the router's ids (letters, digits,
# ``.``, ``_``, ``-``, up to 36) may not pass: (a valid id, a refused character, longest id).
_CLIENT_ID_RULES: dict[str, tuple[re.Pattern[str], re.Pattern[str], int]] = {
    "okx": (re.compile(r"[A-Za-z0-9]{1,32}"), re.compile(r"[^A-Za-z0-9]"), 32),
    "kucoin": (re.compile(r"[A-Za-z0-9_-]{1,40}"), re.compile(r"[^A-Za-z0-9_-]"), 40),
    # Kraken's free-text ``cl_ord_id`` (its other form, a UUID, would not keep our ids legible).
    "kraken": (re.compile(r"[A-Za-z0-9_.-]{1,18}"), re.compile(r"[^A-Za-z0-9_.-]"), 18),
}
# Exchange answers that ccxt leaves as a plain ``ExchangeError`` but that mean the credentials are
# wrong: Kraken's wrong secret (ccxt maps its unknown key, "EAPI:Invalid key", already).
_AUTH_ERRORS: dict[str, tuple[str, ...]] = {"kraken": ("EAPI:Invalid signature",)}
# Coinbase: how far before our clock's send time its order list is searched (clock skew), and
# the orders asked per page of it.
_COINBASE_SKEW_MS = 300_000
_COINBASE_PAGE = 100
# ccxt's names for our order types and sides (looked up: an enum's ``.value`` costs more).
_CCXT_TYPE = {OrderType.MARKET: "market", OrderType.LIMIT: "limit"}
_CCXT_SIDE = {Side.BUY: "buy", Side.SELL: "sell"}
# ccxt's precision modes (ccxt.base.decimal_to_precision): how ``precision['amount']`` reads.
_DECIMAL_PLACES, _TICK_SIZE = 2, 4


class CcxtVenueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exchange: ExchangeId = "binance"
    """ccxt exchange id."""
    api_url: str = ""
    """Replaces the scheme and host of every ccxt API URL, paths kept (a loopback server or a
    proxy); empty: ccxt's defaults."""
    enable_rate_limit: bool = True
    """ccxt's own throttle to the exchange's published rate; keep it on against real venues."""
    timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    """ccxt's per-request timeout."""
    taker_fee_bps: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Expected fee for routing, and the fee charged on fills the exchange did not price."""
    resolve_attempts: Annotated[int, msgspec.Meta(ge=1)] = 4
    """Queries of an order whose submit outcome is unknown before giving up (VenueError)."""
    resolve_backoff_ms: Annotated[int, msgspec.Meta(ge=0)] = 250
    """Pause between those queries (doubled each time), slept on the injected clock."""
    order_memory: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Client order ids remembered (with their symbol) for resubmits, cancels and queries."""
    book_ttl_ms: Annotated[int, msgspec.Meta(ge=0)] = 250
    """How long a fetched order book serves routing decisions (0: fetch for every order);
    concurrent requests for one symbol share one fetch."""
    sandbox: bool = False
    """Trade on the exchange's testnet / sandbox (ccxt's ``set_sandbox_mode``); not together
    with ``api_url``."""

    def __post_init__(self) -> None:
        if self.exchange not in EXCHANGE_IDS:
            raise ValueError(f"exchange {self.exchange!r}: expected one of {list(EXCHANGE_IDS)}")
        if self.api_url and urlsplit(self.api_url).scheme not in ("http", "https"):
            raise ValueError(f"api_url {self.api_url!r}: expected an http(s) URL")
        if self.sandbox and self.api_url:
            raise ValueError("sandbox and api_url exclude each other: api_url names the host")


def exchange_client_id(exchange: str, cid: str) -> str:
    """Our client order id as ``exchange`` accepts it (OKX: 1-32 letters and digits; KuCoin: 1-40
    letters, digits, ``_`` and ``-``; Kraken: 1-18 of those or ``.``; the others: unchanged).

    An id the exchange accepts goes unchanged; any other (the router's ``parent-n`` children on
    OKX, ids with ``.``) becomes its accepted characters, cut to leave room, plus 12 hex digits
    of its digest: the same id maps to the same exchange id in every process (a restarted one
    finds its orders), and two ids collide only if 48 bits of their digests do.
    """
    rule = _CLIENT_ID_RULES.get(exchange)
    if rule is None:
        return cid
    valid, refused, longest = rule
    if valid.fullmatch(cid):
        return cid
    digest = hashlib.blake2b(cid.encode(), digest_size=6).hexdigest()
    return refused.sub("", cid)[: longest - len(digest)] + digest


def _quote_fee(
    fee: dict[str, Any] | None, pair: tuple[str, str], price: float, fallback: float
) -> float:
    """A ccxt fee in the quote asset: as charged in it, or charged in the base asset (OKX and
    Binance take a buy's fee from what it receives) at the fill's price; else ``fallback``."""
    if not fee or fee.get("cost") is None:
        return fallback
    currency = fee.get("currency")
    if currency == pair[1]:
        return float(fee["cost"])
    if currency == pair[0]:
        return float(fee["cost"]) * price
    return fallback


def _is_duplicate(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in DUPLICATE_MARKERS)


def _reason(exc: BaseException) -> str:
    # ccxt raises Coinbase's refused orders as a plain ExchangeError carrying its answer.
    if isinstance(exc, ccxt_async.InsufficientFunds) or "INSUFFICIENT_FUND" in str(exc):
        return "insufficient_balance"
    if isinstance(exc, ccxt_async.AuthenticationError):
        return "authentication_failed"
    if isinstance(exc, ccxt_async.BadSymbol):
        return "unknown_symbol"
    return "venue_rejected"


class CcxtVenue(ExchangeSession):
    """A ``Venue`` over one ccxt exchange with credentials; ``start()`` loads its markets."""

    def __init__(
        self,
        config: CcxtVenueConfig,
        *,
        credentials: Credentials,
        clock: Clock,
    ) -> None:
        self.config = config
        self.name: str = config.exchange
        self.taker_fee_bps = config.taker_fee_bps
        self.clock = clock
        self._exchange: Any = new_exchange(
            config.exchange,
            api_url=config.api_url,
            enable_rate_limit=config.enable_rate_limit,
            timeout_ms=config.timeout_ms,
            credentials=credentials,
        )
        self._books: L1Cache[OrderBook] | None = (
            L1Cache(clock=clock, ttl_ms=config.book_ttl_ms, max_entries=10_000)
            if config.book_ttl_ms
            else None
        )
        exact = self._exchange.exceptions["exact"]  # the client's own copy
        for message in _AUTH_ERRORS.get(config.exchange, ()):
            exact[message] = ccxt_async.AuthenticationError
        # Reconciliation lists open orders across symbols; Binance's client refuses that
        # unless told the (heavier) request is meant.
        self._exchange.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        self._create_id_param, self._query_id_param = _CLIENT_ID_PARAMS.get(
            config.exchange, ("clientOrderId", "clientOrderId")
        )
        if config.sandbox:
            self._exchange.set_sandbox_mode(True)
        if credentials.password:
            self._exchange.password = credentials.password
        # Coinbase: client order id → (our clock's send time in ms, or None for an id sent by
        # another process; Coinbase's order id once known): its order query needs that id.
        self._coinbase: dict[str, tuple[int | None, str]] | None = None
        if config.exchange == "coinbase":
            self._coinbase = {}
            # Advanced Trade's accounts (available and held), not ccxt's default v2 wallets.
            self._exchange.options["fetchBalance"] = "v3PrivateGetBrokerageAccounts"
        self._unified: dict[str, str] = {}  # our name (BTCUSDT) → ccxt's (BTC/USDT)
        self._assets: dict[str, tuple[str, str]] = {}  # our name → (base, quote)
        self._steps: dict[str, float] = {}  # our name → lot step (absent: not known)
        # Free balance by asset as last fetched, moved by our own fills since (None: never
        # fetched, so the router does not check balances for this venue).
        self._free: dict[str, float] | None = None
        # client order id → our symbol: every order this venue sent, for cancels and queries.
        self._symbols: OrderedDict[str, str] = OrderedDict()
        # The exchange's client order id → ours, for the ids ``exchange_client_id`` changed.
        self._ours: dict[str, str] = {}
        # client order id → the first submit's answer, shared by concurrent resubmits.
        self._answers: dict[str, asyncio.Future[Execution]] = {}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the exchange's spot markets (raises VenueError when it cannot)."""
        try:
            markets: dict[str, Any] = await self._exchange.load_markets()
        except ccxt_async.BaseError as exc:
            raise VenueError(f"{self.name} load_markets: {type(exc).__name__}: {exc}") from exc
        self._unified = {}
        for symbol, m in markets.items():
            if not m.get("spot") or m.get("active") is False:
                continue
            ours = f"{m['base']}{m['quote']}".upper()
            self._unified[ours] = symbol
            self._assets[ours] = (str(m["base"]), str(m["quote"]))
            step = self._lot_step(m)
            if step is not None:
                self._steps[ours] = step
        log.info("ccxt_venue_started", exchange=self.name, markets=len(self._unified))

    def _lot_step(self, market: dict[str, Any]) -> float | None:
        """The market's amount step, as ccxt's precision mode spells it (None: unknown)."""
        amount = (market.get("precision") or {}).get("amount")
        if amount is None:
            return None
        mode = self._exchange.precisionMode
        if mode == _TICK_SIZE:
            return float(amount)
        if mode == _DECIMAL_PLACES:
            return 10.0 ** -int(amount)
        return None  # significant digits: no fixed step

    # --- the Venue protocol ---------------------------------------------------------------

    def listed(self, symbol: str) -> bool:
        return symbol in self._unified

    def tradable_quantity(self, symbol: str, quantity: float) -> float:
        step = self._steps.get(symbol)
        return quantity if step is None else round_to_step(quantity, step)

    def assets(self, symbol: str) -> tuple[str, str] | None:
        return self._assets.get(symbol)

    def free_balance(self, asset: str) -> float | None:
        free = self._free
        return None if free is None else free.get(asset, 0.0)

    async def order_book(self, symbol: str, depth: int = 20) -> OrderBook | None:
        if not self.listed(symbol):
            return None
        books = self._books
        if books is None:
            return await self._fetch_book(symbol, depth)
        key = (symbol, depth)
        cached = books.peek(key)  # the common case, without the loader's coroutine
        if cached is not None:
            return cached
        return await books.get_or_load(key, lambda: self._fetch_book(symbol, depth))

    async def _fetch_book(self, symbol: str, depth: int) -> OrderBook:
        with self._as_venue_error("fetch_order_book", symbol):
            book = await self._exchange.fetch_order_book(self._unified[symbol], depth)
        ts = book.get("timestamp")
        return OrderBook(
            symbol=symbol,
            ts_ms=int(ts) if ts is not None else self.clock.now_ns() // 1_000_000,
            bids=tuple((float(lv[0]), float(lv[1])) for lv in book["bids"][:depth]),
            asks=tuple((float(lv[0]), float(lv[1])) for lv in book["asks"][:depth]),
        )

    async def submit(self, intent: OrderIntent) -> Execution:
        """Send an order once; a resubmitted id is answered from the exchange, never resent.

        LIMIT orders are immediate-or-cancel, as ``PaperVenue``'s are (``submit_limit`` rests).
        """
        return await self._submit_once(intent, "IOC")

    async def submit_limit(self, intent: OrderIntent, *, time_in_force: str = "GTC") -> Execution:
        """A LIMIT order with an explicit time in force (``GTC`` rests until cancelled)."""
        if intent.order_type is not OrderType.LIMIT:
            raise ValueError("submit_limit needs a LIMIT intent")
        return await self._submit_once(intent, time_in_force)

    async def cancel(self, client_order_id: str) -> bool:
        """Cancel a resting order; False when the exchange has nothing open under that id."""
        symbol = self._symbols.get(client_order_id)
        if symbol is None:
            return False
        try:
            with self._as_venue_error("cancel_order", symbol):
                if self._coinbase is not None:
                    await self._coinbase_cancel(client_order_id, symbol)
                else:
                    await self._exchange.cancel_order(
                        None, self._unified[symbol], self._query_params(client_order_id)
                    )
        except VenueError as exc:
            if isinstance(exc.__cause__, ccxt_async.OrderNotFound):
                return False
            raise
        return True

    async def fetch_order(self, client_order_id: str, symbol: str | None = None) -> Execution:
        """The exchange's current state of an order; ``symbol`` is needed for ids not sent here.

        Raises KeyError for an id of unknown symbol, VenueError when the exchange cannot answer
        (``OrderNotFound`` as its cause when the exchange does not know the id).
        """
        symbol = symbol or self._symbols.get(client_order_id)
        if symbol is None:
            raise KeyError(f"no symbol known for client order id {client_order_id!r}")
        with self._as_venue_error("fetch_order", symbol):
            order = await self._query_order(client_order_id, symbol)
        return self._execution(client_order_id, order)

    async def lookup(self, client_order_id: str, symbol: str) -> Execution | None:
        """The exchange's state of an order; None when the exchange does not know the id.

        The id is remembered with its symbol (an order sent before a restart can then be
        cancelled, and a resubmit of it is answered by a query).
        """
        if client_order_id not in self._symbols:
            self._remember(client_order_id, symbol)
        try:
            return await self.fetch_order(client_order_id, symbol)
        except VenueError as exc:
            if isinstance(exc.__cause__, ccxt_async.OrderNotFound):
                return None
            raise

    async def open_orders(self) -> list[VenueOrder]:
        """Every order open at the exchange on this account, in any listed symbol."""
        ours = {unified: symbol for symbol, unified in self._unified.items()}
        with self._as_venue_error("fetch_open_orders", None):
            orders = await self._fetch_open_orders(ours)
        found: list[VenueOrder] = []
        for order in orders:
            symbol = ours.get(str(order.get("symbol")))
            raw = order.get("clientOrderId")
            if symbol is None or not raw:
                continue  # a market we do not trade, or an order without our kind of id
            cid = self._ours.get(str(raw), str(raw))
            price = order.get("price")
            found.append(
                VenueOrder(
                    client_order_id=cid,
                    venue_order_id=str(order.get("id") or ""),
                    symbol=symbol,
                    side=Side(str(order.get("side")).upper()),
                    quantity=float(order.get("amount") or 0.0),
                    filled_quantity=float(order.get("filled") or 0.0),
                    price=float(price) if price else None,
                    status=self._execution(cid, order).status,
                )
            )
        return found

    async def _fetch_open_orders(self, ours: dict[str, str]) -> list[dict[str, Any]]:
        exchange = self._exchange
        if self._coinbase is not None:  # ccxt's reads one page of 100 only
            listed = self._coinbase_list({"order_status": "OPEN"})
            return [exchange.parse_order(raw) async for raw in listed]
        if self.name != "kucoin" or not exchange.options.get("hf"):
            orders: list[dict[str, Any]] = await exchange.fetch_open_orders()
            return orders
        # KuCoin lists a high-frequency account's open orders one symbol at a time (ccxt refuses
        # the call without one): ask which symbols have any, then list those we trade.
        answer = await exchange.privateGetHfOrdersActiveSymbols()
        natives = (answer.get("data") or {}).get("symbols") or []
        found = []
        for native in natives:
            unified = exchange.safe_symbol(native, None, "-")
            if unified in ours:
                found += await exchange.fetch_open_orders(unified)
        return found

    async def balance(self) -> dict[str, float]:
        """Total holdings by asset (free plus locked in open orders), zero balances left out.

        The free part is kept for the router's balance check (reconciliation calls this at
        start and periodically, which keeps it current).
        """
        with self._as_venue_error("fetch_balance", None):
            answer = await self._exchange.fetch_balance()
        free: dict[str, Any] = answer.get("free") or {}
        self._free = {asset: float(qty) for asset, qty in free.items() if qty is not None}
        totals: dict[str, Any] = answer.get("total") or {}
        return {asset: float(qty) for asset, qty in totals.items() if qty}

    def _spend(self, symbol: str, side: Side, execution: Execution) -> None:
        """Move the cached free balances by an order's fills (until the next fetch)."""
        free = self._free
        pair = self._assets.get(symbol)
        if free is None or pair is None or not execution.fills:
            return
        base, quote = pair
        qty = cost = fees = 0.0
        for f in execution.fills:
            qty += f.quantity
            cost += f.quantity * f.price
            fees += f.fee
        sign = side.sign
        free[base] = free.get(base, 0.0) + sign * qty
        free[quote] = free.get(quote, 0.0) - sign * cost - fees

    # --- internals ------------------------------------------------------------------------

    async def _submit_once(self, intent: OrderIntent, time_in_force: str) -> Execution:
        cid = intent.client_order_id
        if cid in self._answers or cid in self._symbols:
            return await self._resubmitted(cid, self._answers.get(cid))
        refusal = self._invalid(intent)
        if refusal:  # refused here: nothing was sent, so the id is not taken
            return self._rejected(cid, refusal)
        answer: asyncio.Future[Execution] = asyncio.get_running_loop().create_future()
        self._answers[cid] = answer
        # Remembered for good, rejected or not: a resubmit asks the exchange, never resends.
        self._remember(cid, intent.symbol)
        params: dict[str, Any] = {self._create_id_param: self._exchange_id(cid)}
        if intent.order_type is OrderType.LIMIT:
            params["timeInForce"] = time_in_force
        if self._coinbase is not None:
            self._coinbase[cid] = (self.clock.now_ns() // 1_000_000, "")
            if intent.order_type is OrderType.MARKET and intent.side is Side.BUY:
                # ccxt sends a market buy as ``quote_size`` (amount times a price it demands);
                # Coinbase takes the size in the base asset, as ccxt sends a sell.
                size = self._exchange.amount_to_precision(
                    self._unified[intent.symbol], intent.quantity
                )
                params["createMarketBuyOrderRequiresPrice"] = False
                params["order_configuration"] = {"market_market_ioc": {"base_size": size}}
        try:
            execution = await self._place(intent, params)
        except BaseException as exc:
            if isinstance(exc, Exception):
                answer.set_exception(exc)
                answer.exception()  # mark retrieved: the raise below reports it
            else:
                answer.cancel()
            raise
        finally:
            self._answers.pop(cid, None)
        self._spend(intent.symbol, intent.side, execution)
        answer.set_result(execution)
        return execution

    def _invalid(self, intent: OrderIntent) -> str:
        if not self.listed(intent.symbol):
            return "unknown_symbol"
        if not (math.isfinite(intent.quantity) and intent.quantity > 0):
            return "invalid_quantity"
        price = intent.limit_price
        if intent.order_type is OrderType.LIMIT and not (
            price is not None and math.isfinite(price) and price > 0
        ):
            return "invalid_limit_price"
        return ""

    async def _place(self, intent: OrderIntent, params: dict[str, Any]) -> Execution:
        price = intent.limit_price if intent.order_type is OrderType.LIMIT else None
        cid = intent.client_order_id
        try:
            order = await self._exchange.create_order(
                self._unified[intent.symbol],
                _CCXT_TYPE[intent.order_type],
                _CCXT_SIDE[intent.side],
                intent.quantity,
                price,
                params,
            )
        except ccxt_async.OperationFailed as exc:
            # Timeout, disconnect, 5xx, 429, garbled answer: the order may be at the exchange.
            self._log(intent).warning(
                "submit_outcome_unknown", error=f"{type(exc).__name__}: {exc}"
            )
            return await self._resolve(cid, intent.symbol, absent_reason=type(exc).__name__)
        except ccxt_async.ExchangeError as exc:
            if _is_duplicate(exc):
                self._log(intent).warning("submit_duplicate_id")
                return await self._resolve(cid, intent.symbol, absent_reason="duplicate_id")
            self._log(intent).info("submit_rejected", error=f"{type(exc).__name__}: {exc}")
            return self._rejected(cid, _reason(exc), detail=str(exc))
        if self._coinbase is not None and order.get("id"):
            sent_ms = self._coinbase.get(cid, (None, ""))[0]
            self._coinbase[cid] = (sent_ms, str(order["id"]))
        if order.get("status") is None:
            # An acknowledgement only (OKX, KuCoin answer a place with ids, no state): ask for the
            # order, and ask again while an order that cannot rest is still matching.
            settle = params.get("timeInForce") != "GTC"
            return await self._resolve(cid, intent.symbol, absent_reason=None, settle=settle)
        return self._execution(cid, order)

    def _log(self, intent: OrderIntent) -> Any:
        """A logger bound to the order (built on the rare paths that log, not per order)."""
        return log.bind(
            exchange=self.name, symbol=intent.symbol, client_order_id=intent.client_order_id
        )

    async def _resubmitted(self, cid: str, first: asyncio.Future[Execution] | None) -> Execution:
        if first is not None:
            try:
                execution = await asyncio.shield(first)
            except Exception:  # the first submit's outcome was unknown: ask the exchange
                execution = None
            if execution is not None and execution.status is OrderStatus.REJECTED:
                return execution
        return await self._resolve(cid, self._symbols[cid], absent_reason="not_found")

    async def _resolve(
        self, cid: str, symbol: str, *, absent_reason: str | None, settle: bool = False
    ) -> Execution:
        """Query the order until the exchange says what it holds; REJECTED if it holds none.

        ``absent_reason`` None: the exchange acknowledged the order, so "not found" only means
        not visible yet and is asked again. ``settle``: an open answer is asked again too (the
        last attempt's answer stands).
        """
        attempts = self.config.resolve_attempts
        backoff_s = self.config.resolve_backoff_ms / 1000.0
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await self.clock.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                order = await self._query_order(cid, symbol)
            except ccxt_async.OrderNotFound as exc:
                if absent_reason is None:
                    last = exc
                    continue
                return self._rejected(cid, absent_reason, detail="order not found at the venue")
            except ccxt_async.OperationFailed as exc:
                last = exc
                log.warning(
                    "order_query_failed",
                    exchange=self.name,
                    client_order_id=cid,
                    attempt=attempt + 1,
                    error=f"{type(exc).__name__}: {exc}",
                )
                continue
            except ccxt_async.ExchangeError as exc:
                raise VenueError(f"{self.name} fetch_order {cid}: {exc}") from exc
            execution = self._execution(cid, order)
            if settle and execution.status in _OPEN and attempt + 1 < attempts:
                continue
            return execution
        raise OutcomeUnknown(
            f"{self.name}: outcome of order {cid} unknown after {attempts} queries: {last}"
        ) from last

    def _execution(self, cid: str, order: dict[str, Any]) -> Execution:
        info = order.get("info") or {}
        raw = str(info.get("status") or "").upper()
        status = _VENUE_STATUS.get(raw) or _UNIFIED_STATUS.get(str(order.get("status")))
        if status is None:
            raise VenueError(f"{self.name}: order {cid} has unknown status {raw or order!r}")
        fills = self._fills(order)
        if status is OrderStatus.NEW and fills:
            status = OrderStatus.PARTIALLY_FILLED
        return Execution(
            client_order_id=cid,
            venue_order_id=str(order.get("id") or ""),
            status=status,
            fills=fills,
        )

    def _fills(self, order: dict[str, Any]) -> tuple[Fill, ...]:
        fee_rate = self.config.taker_fee_bps / 1e4
        base, _, rest = str(order.get("symbol") or "").partition("/")
        pair = (base, rest.partition(":")[0])
        fills: list[Fill] = []
        for trade in order.get("trades") or ():
            qty, price = float(trade["amount"]), float(trade["price"])
            fee = _quote_fee(trade.get("fee"), pair, price, qty * price * fee_rate)
            fills.append(Fill(quantity=qty, price=price, fee=fee))
        filled = float(order.get("filled") or 0.0)
        if not fills and filled > 0:
            # An order query carries totals only: one fill at the average price, with the
            # order's own fee if it has one (OKX's has).
            average = order.get("average")
            price = float(average) if average else float(order.get("cost") or 0.0) / filled
            fee = _quote_fee(order.get("fee"), pair, price, filled * price * fee_rate)
            fills.append(Fill(quantity=filled, price=price, fee=fee))
        return tuple(fills)

    def _rejected(self, cid: str, reason: str, *, detail: str = "") -> Execution:
        if detail:
            log.debug("order_rejected", exchange=self.name, client_order_id=cid, detail=detail)
        return Execution(
            client_order_id=cid, venue_order_id="", status=OrderStatus.REJECTED, reason=reason
        )

    def _remember(self, cid: str, symbol: str) -> None:
        self._symbols[cid] = symbol
        theirs = self._exchange_id(cid)
        if theirs != cid:
            self._ours[theirs] = cid
        while len(self._symbols) > self.config.order_memory:
            forgotten, _ = self._symbols.popitem(last=False)
            self._ours.pop(self._exchange_id(forgotten), None)
            if self._coinbase is not None:
                self._coinbase.pop(forgotten, None)

    def _exchange_id(self, cid: str) -> str:
        """Our client order id as the exchange takes it."""
        return exchange_client_id(self.name, cid)

    async def _query_order(self, cid: str, symbol: str) -> dict[str, Any]:
        """ccxt's order, found by our client order id (raises ccxt's ``OrderNotFound``)."""
        exchange, unified = self._exchange, self._unified[symbol]
        if self._coinbase is not None:
            return await self._coinbase_order(cid, unified)
        params = self._query_params(cid)
        if self.name != "kraken":
            order: dict[str, Any] = await exchange.fetch_order(None, unified, params)
            return order
        # Kraken's order query needs its own order id (ccxt sends ours as an int32 ``userref``,
        # which Kraken refuses); its open and closed order lists filter by ``cl_ord_id``. Open
        # first: an order only moves from that list to the other, so it cannot slip between.
        for listing in (exchange.fetch_open_orders, exchange.fetch_closed_orders):
            found: list[dict[str, Any]] = await listing(unified, None, None, params)
            if found:
                # Kraken keeps cl_ord_ids unique among open orders only; ours are never reused,
                # but a closed order of the same id would be older: take the newest.
                return max(found, key=lambda o: o.get("timestamp") or 0)
        raise ccxt_async.OrderNotFound(f"kraken: no order with cl_ord_id {self._exchange_id(cid)}")

    async def _coinbase_order(self, cid: str, unified: str) -> dict[str, Any]:
        """Coinbase's order by its order id when known, else found in its order list by our
        client order id (its id is then kept); raises ccxt's ``OrderNotFound``."""
        assert self._coinbase is not None
        exchange = self._exchange
        sent_ms, order_id = self._coinbase.get(cid, (None, ""))
        if order_id:
            order: dict[str, Any] = await exchange.fetch_order(order_id, unified)
            return order
        market = exchange.market(unified)
        request: dict[str, Any] = {"product_ids": market["id"]}
        if sent_ms is not None:  # sent by this process: nothing older can be it
            request["start_date"] = exchange.iso8601(sent_ms - _COINBASE_SKEW_MS)
        theirs = self._exchange_id(cid)
        async for raw in self._coinbase_list(request):
            if raw.get("client_order_id") == theirs:
                order = exchange.parse_order(raw, market)
                self._coinbase[cid] = (sent_ms, str(order["id"]))
                return order
        raise ccxt_async.OrderNotFound(f"coinbase: no order with client_order_id {theirs}")

    async def _coinbase_cancel(self, cid: str, symbol: str) -> None:
        """Cancel by Coinbase's order id; ccxt's ``OrderNotFound`` when nothing is open under
        ``cid`` (Coinbase's refusal reaches us as a bare ``BadRequest``: asking tells)."""
        order = await self._query_order(cid, symbol)
        if self._execution(cid, order).status in _OPEN:
            try:
                await self._exchange.cancel_order(order["id"], self._unified[symbol])
                return
            except ccxt_async.BadRequest:
                order = await self._query_order(cid, symbol)
                if self._execution(cid, order).status in _OPEN:
                    raise
        raise ccxt_async.OrderNotFound(f"coinbase: order {cid} is not open")

    async def _coinbase_list(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every order of Coinbase's order list that ``request`` filters, page after page
        (ccxt's ``fetch_orders`` reads one page only, and nothing short of the last page proves
        an order absent)."""
        request = {**request, "limit": _COINBASE_PAGE}
        while True:
            page = await self._exchange.v3PrivateGetBrokerageOrdersHistoricalBatch(request)
            for raw in page.get("orders") or ():
                yield raw
            cursor = page.get("cursor")
            if not page.get("has_next") or not cursor:
                return
            request["cursor"] = cursor

    def _query_params(self, cid: str) -> dict[str, str]:
        """ccxt params naming an order by our client order id (fetch_order, cancel_order)."""
        return {self._query_id_param: self._exchange_id(cid)}

    def _as_venue_error(self, call: str, symbol: str | None) -> _VenueErrors:
        return _VenueErrors(f"{self.name} {call}" + (f" {symbol}" if symbol else ""))


class _VenueErrors:
    """ccxt's errors become ``VenueError`` with ccxt's message (the ccxt error as its cause)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, ccxt_async.BaseError):
            raise VenueError(f"{self.what}: {type(exc).__name__}: {exc}") from exc
