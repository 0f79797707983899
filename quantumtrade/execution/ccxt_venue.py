"""A live trading venue through ``ccxt.async_support``: orders, cancels, order state and balances.

Every order carries our ``client_order_id`` to the exchange, shaped to the characters and length
the exchange accepts, and that id is how the venue finds the order again. What differs between
exchanges (the id's name and shape, how an order is found, cancelled and listed, market-buy
sizing, error texts, raw order states) is in ``execution/exchanges.py``, one adapter per
exchange: nothing here depends on which exchange it is. An exchange that only acknowledges a
placed order (OKX, KuCoin, Kraken, Coinbase) is asked for the order's state and fills straight
away. A submit whose outcome is unknown (timeout, dropped connection, 5xx, 429, a garbled
answer) is never sent again: the venue queries the order by its client id, a few times, and
answers what the exchange holds. Only an answer that proves the exchange did not take the order
(an explicit reject, or "order does not exist" to that query) comes back REJECTED; when even the
queries fail, ``submit`` raises ``VenueError`` and the order stays known, so a later submit or
``fetch_order`` with the same id resolves it by querying again. A duplicate-id error from the
exchange means an earlier submit got through, and is resolved the same way (not on Kraken: see
``KrakenAdapter``).

Fees, in the quote asset: a fill's fee is the exchange's commission (a trade's, or for fills
known only from an order query, which carries no trades, the order's total) when it is charged
in the quote asset, or in the base asset at the fill's price; else the configured taker fee on
the fill's notional.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from types import TracebackType
from typing import Annotated, Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import msgspec
import structlog

from quantumtrade.cache.l1 import L1Cache
from quantumtrade.clock import Clock
from quantumtrade.credentials import Credentials
from quantumtrade.data.ccxt_source import EXCHANGE_IDS, ExchangeId, ExchangeSession, new_exchange
from quantumtrade.data.source import OrderBook
from quantumtrade.errors import VenueError
from quantumtrade.events import OrderIntent, OrderType, Side
from quantumtrade.execution.exchanges import OPEN_STATUSES, new_adapter
from quantumtrade.execution.exchanges import exchange_client_id as exchange_client_id
from quantumtrade.execution.venue import (
    Execution,
    Fill,
    OrderStatus,
    OutcomeUnknown,
    VenueOrder,
    round_to_step,
)

log = structlog.get_logger("quantumtrade.ccxt_venue")

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
        if config.sandbox:
            self._exchange.set_sandbox_mode(True)
        if credentials.password:
            self._exchange.password = credentials.password
        # Everything this exchange does its own way (it configures the client for trading).
        self._adapter = new_adapter(config.exchange, self._exchange)
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
                await self._adapter.cancel_order(client_order_id, self._unified[symbol])
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
            orders = await self._adapter.fetch_open_orders(ours)
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
        params = self._adapter.order_params(
            intent, self._unified[intent.symbol], sent_ms=self.clock.now_ns() // 1_000_000
        )
        if intent.order_type is OrderType.LIMIT:
            params["timeInForce"] = time_in_force
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
            if self._adapter.is_duplicate(exc):
                self._log(intent).warning("submit_duplicate_id")
                return await self._resolve(cid, intent.symbol, absent_reason="duplicate_id")
            self._log(intent).info("submit_rejected", error=f"{type(exc).__name__}: {exc}")
            return self._rejected(cid, self._adapter.reject_reason(exc), detail=str(exc))
        self._adapter.placed(cid, order)
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
            if settle and execution.status in OPEN_STATUSES and attempt + 1 < attempts:
                continue
            return execution
        raise OutcomeUnknown(
            f"{self.name}: outcome of order {cid} unknown after {attempts} queries: {last}"
        ) from last

    def _execution(self, cid: str, order: dict[str, Any]) -> Execution:
        status = self._adapter.status(order)
        if status is None:
            raise VenueError(f"{self.name}: order {cid} has unknown status {order!r}")
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
            self._adapter.forget(forgotten)

    def _exchange_id(self, cid: str) -> str:
        """Our client order id as the exchange takes it."""
        return self._adapter.client_id(cid)

    async def _query_order(self, cid: str, symbol: str) -> dict[str, Any]:
        """ccxt's order, found by our client order id (raises ccxt's ``OrderNotFound``)."""
        return await self._adapter.fetch_order(cid, self._unified[symbol])

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
