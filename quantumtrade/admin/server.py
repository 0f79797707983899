"""The embedded admin HTTP API (aiohttp): health, Prometheus metrics and operator commands.

Bound to 127.0.0.1 by default. Every answer is JSON (``/metrics`` is Prometheus text); bad
requests get a 4xx with ``{"error": message}``, never a 500, and so do the HTTP parser's own
refusals (a request line or header over ``MAX_LINE_BYTES``, malformed HTTP). POSTs need
``Authorization: Bearer <admin token>``; with no token configured every POST is refused. A POST
body must be ``Content-Type: application/json`` (UTF-8; else 415), at most ``MAX_BODY_BYTES``
(413), sent within ``idle_timeout_s`` (408), nested at most ``MAX_NESTING`` deep (400); numbers
must be finite and in range (400 naming the field). A connection idle, or still sending its
request line and headers, after ``idle_timeout_s`` is closed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import web
from aiohttp.web_request import BaseRequest

from quantumtrade.admin.openapi import openapi_document
from quantumtrade.anomaly.detector import AnomalyDetector
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator
from quantumtrade.data.source import OrderBook
from quantumtrade.events import OrderIntent, OrderRejected, OrderType, Side, TradingState
from quantumtrade.execution.reconcile import Reconciler
from quantumtrade.execution.router import OrderRouter
from quantumtrade.execution.tracker import OrderTracker
from quantumtrade.metrics import Metrics
from quantumtrade.portfolio import Portfolio
from quantumtrade.regime.detector import RegimeDetector
from quantumtrade.risk.manager import RiskManager

log = structlog.get_logger("quantumtrade.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Listen = Callable[[Callable[[], asyncio.BaseProtocol]], Awaitable[asyncio.Server]]
"""Serves a protocol factory on a listener already bound (``admin/startup.py``'s hand-over)."""
MAX_SYMBOLS_PER_REQUEST = 1_000
MAX_BODY_BYTES = 64 * 1024
"""1,000 symbols of 30 characters fit; a bigger body is refused (413) before it is parsed."""
MAX_NESTING = 16
"""Deepest JSON nesting accepted; the bodies we read are two levels deep."""
MAX_LINE_BYTES = 8190
"""Longest request line or header field (aiohttp's own default, stated here)."""
IDLE_TIMEOUT_S = 10.0
"""A connection idle, or still sending its request line, headers or body, for this long is
closed (a half-sent request must not hold a connection open)."""
LINGER_S = 2.0
MAX_QUANTITY = 1e12
MAX_PRICE = 1e12
_INT_DIGITS = 18  # longer integer literals are read as floats (no 4,300-digit int parse)
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,36}")


class DeadLetters(Protocol):
    """The bus's dead letters kept for retry (``EventBus`` meets it)."""

    def dead_letter_list(self) -> list[dict[str, Any]]: ...

    async def retry_dead_letter(self, letter_id: int) -> dict[str, Any]:
        """Retry one letter; ``KeyError`` for an id not kept."""

    async def retry_dead_letters(self) -> list[dict[str, Any]]: ...


class ApiError(Exception):
    """A client error: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        """Close the connection after answering (the rest of the body is not worth reading)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


class _JsonErrorConnection(web.RequestHandler):
    """aiohttp's connection handler with one change: the errors it answers itself, before any
    route or middleware runs (a request line or header too long, malformed HTTP), are JSON
    ``{"error": ...}`` instead of text/plain."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The base class logs the error and refuses if a response has already started.
        super().handle_error(request, status, exc, message)
        if status >= 500 or not message:
            message = "internal error (logged)" if status >= 500 else "bad request"
        response = _json({"error": message}, status=status)
        response.force_close()
        return response


def _parse_int(text: str) -> int | float:
    """An integer literal; a long one becomes a float (inf past 1e308) for the range checks,
    never an int too big to convert (``OverflowError``) or to parse (``ValueError``)."""
    return int(text) if len(text) <= _INT_DIGITS else float(text)


def _refuse_constant(text: str) -> Any:
    raise ApiError(400, f"request body is not valid JSON: {text} is not a JSON value")


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """True if ``value`` holds containers more than ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _number(raw: Any, field: str, *, maximum: float) -> float:
    """A JSON number for ``field``: finite, positive, at most ``maximum``; else a 400."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ApiError(400, f"{field} must be a number")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise ApiError(400, f"{field} must be a positive number of at most {maximum:g}")
    return value


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = _json({"error": exc.message}, status=exc.status)
        if exc.close:
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _json({"error": exc.reason}, status=exc.status)
        if "Allow" in exc.headers:  # a 405 names the methods the path has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("admin_handler_failed", path=request.path, method=request.method)
        return _json({"error": "internal error (logged)"}, status=500)


class AdminServer:
    """Routes requests to the components it is given; owns nothing but the HTTP listener."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        token: str,
        health: Callable[[], dict[str, Any]],
        metrics: Metrics,
        orchestrator: Orchestrator,
        state: MarketState,
        router: OrderRouter,
        portfolio: Portfolio,
        risk: RiskManager,
        cache_stats: Callable[[], dict[str, Any]],
        cached_book: Callable[[str], OrderBook | None] | None = None,
        regime: RegimeDetector | None = None,
        tracker: OrderTracker | None = None,
        order_timeout_s: float = 10.0,
        reconciler: Reconciler | None = None,
        anomaly: AnomalyDetector | None = None,
        strategy: Callable[[], dict[str, Any]] | None = None,
        dead_letters: DeadLetters | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._health = health
        self._metrics = metrics
        self._orchestrator = orchestrator
        self._state = state
        self._router = router
        self._portfolio = portfolio
        self._risk = risk
        self._cache_stats = cache_stats
        self._cached_book = cached_book
        self._tracker = tracker or OrderTracker()
        self._reconciler = reconciler
        self._regime = regime
        self._anomaly = anomaly
        self._strategy = strategy
        self._dead_letters = dead_letters
        self.order_timeout_s = order_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.bound_port: int | None = None

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/health", self.get_health)
        app.router.add_get("/metrics", self.get_metrics)
        app.router.add_get("/api/openapi.json", self.get_openapi)
        app.router.add_get("/api/trading/data-orchestrator", self.get_orchestrator)
        app.router.add_post("/api/trading/data-orchestrator", self.post_orchestrator)
        app.router.add_post(
            "/api/trading/data-orchestrator/reset-circuit-breaker", self.post_reset_breakers
        )
        app.router.add_get("/api/trading/market-regime", self.get_regime)
        app.router.add_post("/api/trading/market-regime", self.post_regime)
        app.router.add_get("/api/trading/order-router", self.get_router)
        app.router.add_post("/api/trading/order-router", self.post_router)
        app.router.add_get("/api/trading/anomalies", self.get_anomalies)
        app.router.add_get("/api/trading/strategy", self.get_strategy)
        app.router.add_get("/api/trading/positions", self.get_positions)
        app.router.add_get("/api/trading/risk", self.get_risk)
        app.router.add_post("/api/trading/risk/state", self.post_risk_state)
        app.router.add_get("/api/trading/dead-letters", self.get_dead_letters)
        app.router.add_post("/api/trading/dead-letters", self.post_dead_letters)
        return app

    async def start(self, listen: Listen | None = None) -> None:
        """Listen with our own connection handler (``_JsonErrorConnection``) instead of a
        ``TCPSite``'s, so that aiohttp's parser-level errors are JSON too. ``listen``: take
        over a listener already bound (the start-up one); default: bind host and port."""
        runner = web.AppRunner(
            self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        server = runner.server
        assert server is not None  # set by setup()
        loop = asyncio.get_running_loop()
        # keepalive_timeout is armed when a connection opens and re-armed after each answer;
        # it closes a connection whose handler still waits for a whole request line and
        # headers, which makes it the header-read timeout too.
        options: dict[str, Any] = {
            "loop": loop,
            "access_log": None,
            "keepalive_timeout": self.idle_timeout_s,
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_LINE_BYTES,
            # After answering early (408, 413), read what is left of a body for at most this
            # long, so the client sees the answer, not a reset (aiohttp's default: 10 s).
            "lingering_time": LINGER_S,
        }

        def connection() -> asyncio.BaseProtocol:
            return _JsonErrorConnection(server, **options)

        try:
            if listen is not None:
                listener = await listen(connection)
            else:
                listener = await loop.create_server(connection, self.host, self.port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._listener = runner, listener
        sockets = listener.sockets
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port

    async def stop(self) -> None:
        """Stop accepting, close the connections (the runner's server tracks them), then the
        listener."""
        runner, self._runner = self._runner, None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.bound_port or self.port}"

    # --- helpers ------------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> None:
        if not self._token:
            raise ApiError(403, "POST requests are disabled: set [admin] token (QT_ADMIN__TOKEN)")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing 'Authorization: Bearer <admin token>' header")
        if not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            raise ApiError(401, "invalid admin token")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object, or an ``ApiError`` (415, 413, 408, 400): the one place a
        body is read."""
        if request.content_type != "application/json":
            raise ApiError(
                415, f"Content-Type must be application/json, not '{request.content_type}'"
            )
        charset = (request.charset or "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise ApiError(415, f"charset must be utf-8, not '{charset[:40]}'")
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                raw = await request.read()
        except TimeoutError:
            raise ApiError(408, "request body not received in time", close=True) from None
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes", close=True) from None
        try:
            body = json.loads(
                raw.decode("utf-8"), parse_int=_parse_int, parse_constant=_refuse_constant
            )
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "request body is not valid JSON") from None
        except RecursionError:
            raise ApiError(400, f"request body nested more than {MAX_NESTING} deep") from None
        if _nesting_exceeds(body, MAX_NESTING):
            raise ApiError(400, f"request body nested more than {MAX_NESTING} deep")
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def _symbols(self, raw: Any, *, known_only: bool) -> list[str]:
        if isinstance(raw, str):
            raw = [s for s in raw.split(",") if s.strip()]
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "'symbols' must be a non-empty list of symbol names")
        if len(raw) > MAX_SYMBOLS_PER_REQUEST:
            raise ApiError(400, f"at most {MAX_SYMBOLS_PER_REQUEST} symbols per request")
        if not all(isinstance(s, str) and s.strip() for s in raw):
            raise ApiError(400, "'symbols' must hold only non-empty strings")
        symbols = [s.strip().upper() for s in raw]
        if known_only:
            unknown = [s for s in symbols if s not in self._state.symbols]
            if unknown:
                raise ApiError(404, f"unknown symbols: {', '.join(unknown[:10])}")
        return symbols

    @staticmethod
    def _endpoint(request: web.Request, allowed: tuple[str, ...]) -> str:
        endpoint = request.query.get("endpoint", allowed[0])
        if endpoint not in allowed:
            raise ApiError(400, f"unknown endpoint '{endpoint}'; expected one of {list(allowed)}")
        return endpoint

    # --- handlers -----------------------------------------------------------------------

    async def get_health(self, request: web.Request) -> web.Response:
        health = self._health()
        return _json(health, status=200 if health["status"] != "stopping" else 503)

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def get_openapi(self, request: web.Request) -> web.Response:
        return _json(OPENAPI)

    async def get_orchestrator(self, request: web.Request) -> web.Response:
        endpoint = self._endpoint(request, ("metrics", "market-data"))
        if endpoint == "metrics":
            return _json(self._orchestrator.metrics() | {"cache": self._cache_stats()})
        symbols = self._symbols(request.query.get("symbols", ""), known_only=True)
        stale = set(self._orchestrator.stale_symbols)
        data = {}
        for symbol in symbols:
            bar = self._state.latest(symbol)
            data[symbol] = {
                "bar": None
                if bar is None
                else {
                    "ts_ms": bar.ts_ms,
                    "open": bar.open,
                    "high": bar.high,
                    "low": bar.low,
                    "close": bar.close,
                    "volume": bar.volume,
                },
                "bars": self._state.length(symbol),
                "ticker": self._ticker(symbol),
                "stale": symbol in stale,
            }
        return _json({"symbols": data})

    def _ticker(self, symbol: str) -> dict[str, float] | None:
        """The last fetched ticker, else best bid/ask from a fresh cached book (never fetches)."""
        ticker = self._orchestrator.ticker(symbol)
        if ticker is not None:
            return {
                "bid": ticker.bid,
                "ask": ticker.ask,
                "mid": (ticker.bid + ticker.ask) / 2.0,
                "last": ticker.last,
                "ts_ms": ticker.ts_ms,
            }
        book = self._cached_book(symbol) if self._cached_book is not None else None
        if book is None or not book.bids or not book.asks:
            return None
        return {"bid": book.best_bid, "ask": book.best_ask, "mid": book.mid, "ts_ms": book.ts_ms}

    async def post_orchestrator(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._body(request)
        action = body.get("action")
        if action not in ("start-flow", "stop-flow"):
            raise ApiError(400, "'action' must be 'start-flow' or 'stop-flow'")
        symbols = self._symbols(body.get("symbols"), known_only=action == "stop-flow")
        try:
            if action == "start-flow":
                changed = self._orchestrator.start_flow(symbols)
            else:
                changed = self._orchestrator.stop_flow(symbols)
        except KeyError as exc:
            raise ApiError(404, f"unknown symbols: {exc.args[0] if exc.args else exc}") from None
        return _json({"action": action, "symbols": changed})

    async def post_reset_breakers(self, request: web.Request) -> web.Response:
        self._authorize(request)
        self._orchestrator.reset_breakers()
        return _json({"reset": True, "breakers": self._orchestrator.metrics().get("breakers")})

    def _detector(self) -> RegimeDetector:
        if self._regime is None:
            raise ApiError(503, "regime detection is not running")
        return self._regime

    async def get_regime(self, request: web.Request) -> web.Response:
        endpoint = self._endpoint(request, ("current-regime", "regime-confidence"))
        detector = self._detector()
        if endpoint == "current-regime":
            return _json(detector.current())
        return _json({"market": detector.current(), "symbols": detector.confidences()})

    async def post_regime(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._body(request)
        symbols = self._symbols(body.get("symbols"), known_only=True)
        detector = self._detector()
        answer = {}
        for symbol in symbols:
            regime, confidence = detector.regime(symbol)
            answer[symbol] = {
                "regime": regime.value if regime is not None else None,
                "confidence": confidence,
            }
        return _json({"symbols": answer})

    async def get_router(self, request: web.Request) -> web.Response:
        """``metrics`` (per venue) or ``reconciliation`` (open and external orders, balances)."""
        endpoint = self._endpoint(request, ("metrics", "reconciliation"))
        if endpoint == "reconciliation":
            if self._reconciler is None:
                raise ApiError(404, "reconciliation is not configured")
            return _json(self._reconciler.status())
        return _json(self._router.metrics())

    async def post_router(self, request: web.Request) -> web.Response:
        """Route an operator's order through the risk manager and the router; answer with the
        routing decision and the order's outcome."""
        self._authorize(request)
        body = await self._body(request)
        if body.get("action") != "route":
            raise ApiError(400, "'action' must be 'route'")
        req = body.get("orderRequest")
        if not isinstance(req, dict):
            raise ApiError(400, "'orderRequest' must be an object")
        symbol = req.get("symbol")
        if not isinstance(symbol, str) or not symbol.strip():
            raise ApiError(400, "orderRequest.symbol must be a symbol name")
        symbol = symbol.strip().upper()
        if symbol not in self._state.symbols:
            raise ApiError(404, f"unknown symbol: {symbol}")
        try:
            side = Side(str(req.get("side", "")).upper())
        except ValueError:
            raise ApiError(400, "orderRequest.side must be 'BUY' or 'SELL'") from None
        try:
            order_type = OrderType(str(req.get("orderType", "MARKET")).upper())
        except ValueError:
            raise ApiError(400, "orderRequest.orderType must be 'MARKET' or 'LIMIT'") from None
        quantity = _number(req.get("quantity"), "orderRequest.quantity", maximum=MAX_QUANTITY)
        limit_price: float | None = None
        if order_type is OrderType.LIMIT:
            if req.get("price") is None:
                raise ApiError(400, "orderRequest.price is required for a LIMIT order")
            limit_price = _number(req.get("price"), "orderRequest.price", maximum=MAX_PRICE)
        client_order_id = req.get("clientOrderId") or f"api-{uuid.uuid4().hex[:20]}"
        if not isinstance(client_order_id, str) or not _CLIENT_ID.fullmatch(client_order_id):
            raise ApiError(400, "orderRequest.clientOrderId: 1-36 of A-Z a-z 0-9 . _ -")
        bar = self._state.latest(symbol)
        if bar is None:
            raise ApiError(409, f"no market data for {symbol} yet")
        probe = OrderIntent(
            ts_ns=0,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type=order_type,
            limit_price=limit_price,
            reference_price=bar.close,
        )
        decision = await self._router.route(probe)
        done = self._tracker.watch(client_order_id)
        outcome = await self._risk.submit_order(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=bar.close,
            order_type=order_type,
            limit_price=probe.limit_price,
        )
        routing = msgspec.to_builtins(decision)
        if isinstance(outcome, OrderRejected):
            self._tracker.forget(client_order_id)
            order = {
                "client_order_id": client_order_id,
                "status": "REJECTED",
                "reason": outcome.reason,
            }
            error = f"refused by the risk manager: {outcome.reason}"
            return _json({"error": error, "routing": routing, "order": order}, status=422)
        try:
            async with asyncio.timeout(self.order_timeout_s):
                result = await done
        except TimeoutError:
            self._tracker.forget(client_order_id)
            order = {"client_order_id": client_order_id, "status": "IN_FLIGHT"}
            return _json({"routing": routing, "order": order}, status=202)
        return _json({"routing": routing, "order": msgspec.to_builtins(result)})

    async def get_positions(self, request: web.Request) -> web.Response:
        portfolio = self._portfolio
        positions = {}
        for symbol, p in portfolio.positions().items():
            mark = portfolio.mark_price(symbol)
            positions[symbol] = {
                "quantity": p.quantity,
                "avg_price": p.avg_price,
                "mark_price": mark,
                "unrealized_pnl": p.quantity * (mark - p.avg_price)
                if mark is not None and p.quantity
                else 0.0,
                "realized_pnl": p.realized_pnl,
                "fees": p.fees,
            }
        return _json(
            {
                "positions": positions,
                "totals": portfolio.totals(),
                "attribution": portfolio.attribution(),
            }
        )

    async def get_anomalies(self, request: web.Request) -> web.Response:
        """Active anomalies by symbol (``?symbols=A,B``: only those), with kind, score and
        since when, and whether the risk manager pauses entries on them."""
        symbols: list[str] | None = None
        if "symbols" in request.query:
            symbols = self._symbols(request.query["symbols"], known_only=True)
        detector = self._anomaly
        if detector is None:
            return _json({"enabled": False, "pause_entries": False, "symbols": {}, "active": 0})
        found = (
            detector.active()
            if symbols is None
            else [a for s in symbols for a in detector.active(s)]
        )
        by_symbol: dict[str, list[dict[str, Any]]] = {}
        for a in found:
            by_symbol.setdefault(a.pop("symbol"), []).append(a)
        return _json(
            {
                "enabled": True,
                "pause_entries": self._risk.pause_on_anomaly,
                "symbols": by_symbol,
                "active": len(found),
                "detected": dict(detector.detected),
            }
        )

    async def get_strategy(self, request: web.Request) -> web.Response:
        """The strategy's parameters in force (after any ``ParametersChanged``) and the
        ``[adapt]`` runner: runs by outcome, the last run's evidence."""
        if self._strategy is None:
            raise ApiError(404, "no strategy status in this process")
        return _json(self._strategy())

    async def get_risk(self, request: web.Request) -> web.Response:
        return _json(self._risk.metrics())

    async def post_risk_state(self, request: web.Request) -> web.Response:
        """Set the trading state (re-arms a tripped kill switch): {"state": ..., "reason": ...}."""
        self._authorize(request)
        body = await self._body(request)
        raw = body.get("state")
        try:
            state = TradingState(str(raw).upper())
        except ValueError:
            raise ApiError(
                400, f"'state' must be one of {[s.value for s in TradingState]}"
            ) from None
        reason = body.get("reason", "admin")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
            raise ApiError(400, "'reason' must be a non-empty string of at most 200 characters")
        changed = await self._risk.set_state(state, f"admin: {reason.strip()}")
        return _json({"state": str(self._risk.state), "changed": changed})

    def _letters(self) -> DeadLetters:
        if self._dead_letters is None:
            raise ApiError(404, "no event bus dead letters in this process")
        return self._dead_letters

    async def get_dead_letters(self, request: web.Request) -> web.Response:
        """Dead letters kept for retry, oldest first: id, event, handler, error, attempts."""
        letters = self._letters().dead_letter_list()
        for letter in letters:
            letter["time"] = _iso_time(letter["ts_ns"])
        return _json({"dead_letters": letters, "count": len(letters)})

    async def post_dead_letters(self, request: web.Request) -> web.Response:
        """Retry one dead letter ({"id": n}) or every one ({"all": true}) on the handler that
        failed; each result says ok (dropped) or failed (kept, attempts + 1)."""
        self._authorize(request)
        letters = self._letters()
        body = await self._body(request)
        letter_id, retry_all = body.get("id"), body.get("all")
        if retry_all is not None and not isinstance(retry_all, bool):
            raise ApiError(400, "'all' must be true or false")
        if (letter_id is None) == (retry_all is not True):
            raise ApiError(400, "give exactly one of 'id' (a dead letter's id) or 'all': true")
        if retry_all:
            results = await letters.retry_dead_letters()
        else:
            if isinstance(letter_id, bool) or not isinstance(letter_id, int) or letter_id < 1:
                raise ApiError(400, "'id' must be a positive integer")
            try:
                results = [await letters.retry_dead_letter(letter_id)]
            except KeyError:
                raise ApiError(404, f"no dead letter with id {letter_id}") from None
        outcomes = [r["outcome"] for r in results]
        return _json(
            {
                "results": results,
                "ok": outcomes.count("ok"),
                "failed": outcomes.count("failed"),
                "remaining": len(letters.dead_letter_list()),
            }
        )


def _iso_time(ts_ns: int) -> str:
    """UTC ISO 8601 time of a nanosecond timestamp, to the millisecond."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{ns // 1_000_000:03d}Z"


OPENAPI: dict[str, Any] = openapi_document(
    max_body_bytes=MAX_BODY_BYTES,
    max_nesting=MAX_NESTING,
    max_line_bytes=MAX_LINE_BYTES,
    idle_timeout_s=IDLE_TIMEOUT_S,
    max_symbols=MAX_SYMBOLS_PER_REQUEST,
    max_quantity=MAX_QUANTITY,
    max_price=MAX_PRICE,
)
"""The document ``GET /api/openapi.json`` serves (built in ``admin/openapi.py``)."""
