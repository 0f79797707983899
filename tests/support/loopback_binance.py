"""A loopback Binance spot REST server that ccxt's real ``binance`` client can talk to.

It serves the public market-data endpoints ccxt calls (``exchangeInfo``, ``klines``,
``ticker/24hr``, ``depth``, ``ping``, ``time``) from a deterministic in-memory dataset, counts
requests per path, and injects faults at run time, per path or globally: added latency, an HTTP
error status (5xx, 429 and 418 with Binance's error body), a dropped connection (the transport is
closed without an answer) and corrupt klines (NaN or negative prices, duplicate or out-of-order
timestamps).

Routes are a dict keyed by (method, path) whose handlers receive the request and the shared
``LoopbackState``, looked up per request; the order router's signed endpoints (``POST/GET/DELETE
/api/v3/order``, ``GET /api/v3/account``) can be added with ``add_route`` and keep their books
in ``LoopbackState.extra``. Faults and request counting apply to every route, added ones too.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from quantumtrade.data.source import Source

BarRow = tuple[int, float, float, float, float, float]
"""(open time ms, open, high, low, close, volume): one kline of the dataset."""
Level = tuple[float, float]
Handler = Callable[[web.Request, "LoopbackState"], Awaitable[web.StreamResponse]]

INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
QUOTE_ASSETS: tuple[str, ...] = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB", "EUR")
ANY_PATH = "*"
DAY_MS = 86_400_000
# Binance's own bodies for rate limiting (HTTP 429) and an IP ban (HTTP 418).
RATE_LIMIT_BODY = {
    "code": -1003,
    "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
    "Please use WebSocket Streams for live updates to avoid polling the API.",
}
BANNED_BODY = {
    "code": -1003,
    "msg": "Way too many requests; IP(127.0.0.1) banned until 4102444800000. "
    "Please use WebSocket Streams for live updates to avoid bans.",
}
# What a load balancer in front of the API answers on a 5xx (not JSON, as in production).
GATEWAY_BODIES = {
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Unavailable",
    504: "504 Gateway Time-out",
}


class BadData(StrEnum):
    """Ways the klines endpoint can corrupt an answer."""

    NAN = "nan"  # the first row's close is NaN
    NEGATIVE = "negative"  # the second row's open and low are negative
    DUPLICATE = "duplicate"  # the third row is sent twice
    OUT_OF_ORDER = "out_of_order"  # the last two rows swap places


ALL_BAD_DATA: frozenset[BadData] = frozenset(BadData)


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to a request before (or instead of) answering it."""

    latency_ms: int = 0
    status: int | None = None
    """Answer with this HTTP status instead (429 and 418 carry Binance's error body)."""
    drop: bool = False
    """Close the connection without answering."""
    bad_data: frozenset[BadData] = frozenset()
    """Corruptions applied to klines answers (other endpoints ignore it)."""

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP error")


@dataclass(slots=True)
class Market:
    """One symbol's data: klines oldest first, and an optional fixed book."""

    symbol: str
    base: str
    quote: str
    bars: list[BarRow]
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)


def split_symbol(symbol: str) -> tuple[str, str]:
    """BTCUSDT → (BTC, USDT), by the quote assets Binance lists."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(f"cannot tell the quote asset of {symbol!r}")


def market(
    symbol: str, bars: Iterable[BarRow], bids: Sequence[Level] = (), asks: Sequence[Level] = ()
) -> Market:
    """A ``Market`` with base and quote taken from the symbol's name."""
    base, quote = split_symbol(symbol)
    return Market(symbol, base, quote, sorted(bars), list(bids), list(asks))


async def markets_from_source(
    source: Source, symbols: Iterable[str], until_ms: int, *, depth: int = 20
) -> dict[str, Market]:
    """Seed a dataset from any ``Source`` (e.g. ``SyntheticSource``): its bars and current book."""
    found: dict[str, Market] = {}
    for symbol in symbols:
        bars = await source.fetch_bars(symbol, None, until_ms)
        book = await source.fetch_order_book(symbol, depth)
        rows = [(b.ts_ms, b.open, b.high, b.low, b.close, b.volume) for b in bars]
        found[symbol] = market(symbol, rows, book.bids, book.asks)
    return found


def _num(x: float) -> str:
    # repr round-trips exactly, so what ccxt parses equals the dataset; NaN prints as "nan".
    return repr(float(x))


class LoopbackState:
    """Everything the handlers share: the dataset, the clock, faults and request counts."""

    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        interval: str,
        max_klines_limit: int,
        now_ms: Callable[[], int],
    ) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"unknown interval {interval!r}; expected one of {list(INTERVAL_MS)}")
        self.markets = dict(markets)
        self.interval = interval
        self.bar_ms = INTERVAL_MS[interval]
        self.max_klines_limit = max_klines_limit
        self.now_ms = now_ms
        self.faults: dict[str, Fault] = {}
        self.requests: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}
        """Room for the private endpoints' state (orders, balances)."""

    def fault_for(self, path: str) -> Fault | None:
        """The path's own fault, else the global one."""
        return self.faults.get(path) or self.faults.get(ANY_PATH)

    def visible_bars(self, symbol: str) -> list[BarRow]:
        """Bars that have opened by now (the newest may still be forming, as on Binance)."""
        now = self.now_ms()
        return [row for row in self.markets[symbol].bars if row[0] <= now]

    def book(self, symbol: str, depth: int) -> tuple[list[Level], list[Level]]:
        """The fixed book if the dataset has one, else 1 bp-spaced levels around the last close."""
        m = self.markets[symbol]
        if m.bids or m.asks:
            return m.bids[:depth], m.asks[:depth]
        bars = self.visible_bars(symbol)
        mid = bars[-1][4] if bars else 1.0
        bids = [(mid * (1.0 - 1e-4 * (i + 1)), 1.0 + i) for i in range(depth)]
        asks = [(mid * (1.0 + 1e-4 * (i + 1)), 1.0 + i) for i in range(depth)]
        return bids, asks


def binance_error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"code": -1100, "msg": f"Illegal characters found in '{name}'."}),
            content_type="application/json",
        ) from None


def _symbol_param(request: web.Request, state: LoopbackState) -> str:
    symbol = request.query.get("symbol", "")
    if not symbol:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, "
                    "or malformed.",
                }
            ),
            content_type="application/json",
        )
    if symbol not in state.markets:
        raise web.HTTPBadRequest(
            text=json.dumps({"code": -1121, "msg": "Invalid symbol."}),
            content_type="application/json",
        )
    return symbol


# --- public endpoints ---------------------------------------------------------------------


async def ping(request: web.Request, state: LoopbackState) -> web.StreamResponse:
    return web.json_response({})


async def server_time(request: web.Request, state: LoopbackState) -> web.StreamResponse:
    return web.json_response({"serverTime": state.now_ms()})


def _symbol_info(m: Market, state: LoopbackState) -> dict[str, Any]:
    price = m.bars[-1][4] if m.bars and math.isfinite(m.bars[-1][4]) else 1.0
    # About six significant digits of price, like Binance's tick sizes.
    tick = 10.0 ** (math.floor(math.log10(max(price, 1e-8))) - 5)
    return {
        "symbol": m.symbol,
        "status": "TRADING",
        "baseAsset": m.base,
        "baseAssetPrecision": 8,
        "quoteAsset": m.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": f"{tick:.10f}",
                "maxPrice": "1000000.00000000",
                "tickSize": f"{tick:.10f}",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001000",
                "maxQty": "9000000.00000000",
                "stepSize": "0.00001000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
    }


async def exchange_info(request: web.Request, state: LoopbackState) -> web.StreamResponse:
    return web.json_response(
        {
            "timezone": "UTC",
            "serverTime": state.now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                }
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(m, state) for m in state.markets.values()],
        }
    )


def corrupt(rows: list[BarRow], modes: frozenset[BadData]) -> list[BarRow]:
    """Apply the ``BadData`` corruptions to a klines answer (rows too few for one are skipped)."""
    out = list(rows)
    if BadData.NAN in modes and len(out) >= 1:
        ts, o, h, lo, _, v = out[0]
        out[0] = (ts, o, h, lo, math.nan, v)
    if BadData.NEGATIVE in modes and len(out) >= 2:
        ts, o, h, lo, c, v = out[1]
        out[1] = (ts, -abs(o), h, -abs(lo), c, v)
    if BadData.DUPLICATE in modes and len(out) >= 3:
        out.insert(3, out[2])
    if BadData.OUT_OF_ORDER in modes and len(out) >= 2:
        out[-1], out[-2] = out[-2], out[-1]
    return out


async def klines(request: web.Request, state: LoopbackState) -> web.StreamResponse:
    symbol = _symbol_param(request, state)
    interval = request.query.get("interval", "")
    if interval != state.interval:
        return binance_error(400, -1120, "Invalid interval.")
    limit = _int_param(request, "limit") or 500
    if not 1 <= limit <= state.max_klines_limit:
        limit = max(1, min(limit, state.max_klines_limit))
    start = _int_param(request, "startTime")
    end = _int_param(request, "endTime")
    rows = [
        row
        for row in state.visible_bars(symbol)
        if (start is None or row[0] >= start) and (end is None or row[0] <= end)
    ]
    # With a start time Binance pages forward from it; without, it answers the newest bars.
    rows = rows[:limit] if start is not None else rows[-limit:]
    fault = state.fault_for(request.path)
    if fault is not None and fault.bad_data:
        rows = corrupt(rows, fault.bad_data)
    bar_ms = state.bar_ms
    return web.json_response(
        [
            [
                ts,
                _num(o),
                _num(h),
                _num(lo),
                _num(c),
                _num(v),
                ts + bar_ms - 1,
                _num(v * c),
                100,
                _num(v / 2.0),
                _num(v * c / 2.0),
                "0",
            ]
            for ts, o, h, lo, c, v in rows
        ]
    )


def _ticker(symbol: str, state: LoopbackState) -> dict[str, Any]:
    now = state.now_ms()
    day = [row for row in state.visible_bars(symbol) if row[0] > now - DAY_MS]
    bids, asks = state.book(symbol, 1)
    bid, bid_qty = bids[0] if bids else (0.0, 0.0)
    ask, ask_qty = asks[0] if asks else (0.0, 0.0)
    if day:
        first, last = day[0][1], day[-1][4]
        high = max(row[2] for row in day)
        low = min(row[3] for row in day)
        volume = sum(row[5] for row in day)
        quote_volume = sum(row[5] * row[4] for row in day)
        open_time, prev_close = day[0][0], (day[-2][4] if len(day) > 1 else first)
    else:
        first = last = high = low = volume = quote_volume = prev_close = 0.0
        open_time = now - DAY_MS
    change = last - first
    return {
        "symbol": symbol,
        "priceChange": _num(change),
        "priceChangePercent": _num(change / first * 100.0 if first else 0.0),
        "weightedAvgPrice": _num(quote_volume / volume if volume else 0.0),
        "prevClosePrice": _num(prev_close),
        "lastPrice": _num(last),
        "lastQty": "1.0",
        "bidPrice": _num(bid),
        "bidQty": _num(bid_qty),
        "askPrice": _num(ask),
        "askQty": _num(ask_qty),
        "openPrice": _num(first),
        "highPrice": _num(high),
        "lowPrice": _num(low),
        "volume": _num(volume),
        "quoteVolume": _num(quote_volume),
        "openTime": open_time,
        "closeTime": now,
        "firstId": 0,
        "lastId": len(day),
        "count": len(day),
    }


async def ticker_24hr(request: web.Request, state: LoopbackState) -> web.StreamResponse:
    if "symbol" in request.query:
        return web.json_response(_ticker(_symbol_param(request, state), state))
    raw = request.query.get("symbols")
    if raw is None:
        return web.json_response([_ticker(s, state) for s in state.markets])
    try:
        wanted = json.loads(raw)
    except ValueError:
        return binance_error(400, -1100, "Illegal characters found in parameter 'symbols'.")
    unknown = [s for s in wanted if s not in state.markets]
    if unknown:
        return binance_error(400, -1121, "Invalid symbol.")
    return web.json_response([_ticker(s, state) for s in wanted])


async def depth(request: web.Request, state: LoopbackState) -> web.StreamResponse:
    symbol = _symbol_param(request, state)
    limit = _int_param(request, "limit") or 100
    if not 1 <= limit <= 5000:
        return binance_error(400, -1100, "Illegal characters found in parameter 'limit'.")
    bids, asks = state.book(symbol, limit)
    return web.json_response(
        {
            "lastUpdateId": state.now_ms(),
            "bids": [[_num(p), _num(q)] for p, q in bids],
            "asks": [[_num(p), _num(q)] for p, q in asks],
        }
    )


PUBLIC_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/api/v3/ping"): ping,
    ("GET", "/api/v3/time"): server_time,
    ("GET", "/api/v3/exchangeInfo"): exchange_info,
    ("GET", "/api/v3/klines"): klines,
    ("GET", "/api/v3/ticker/24hr"): ticker_24hr,
    ("GET", "/api/v3/depth"): depth,
}


# --- the server ---------------------------------------------------------------------------


class LoopbackServer:
    """An aiohttp server on 127.0.0.1 (a free port) that sends every request to ``_dispatch``;
    ``async with`` starts and stops it. The exchange servers subclass it."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the loopback server is not running")
        return f"http://127.0.0.1:{self._port}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the loopback server is already running")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client that gives up (timeout) cancels the sleeping handler, so
        # shutdown does not wait out injected latency.
        runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class LoopbackBinance(LoopbackServer):
    """The server: ``async with LoopbackBinance(markets) as server: server.base_url``."""

    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        interval: str = "1m",
        max_klines_limit: int = 1000,
        now_ms: Callable[[], int] | None = None,
        routes: Mapping[tuple[str, str], Handler] | None = None,
    ) -> None:
        self.state = LoopbackState(
            markets,
            interval=interval,
            max_klines_limit=max_klines_limit,
            now_ms=now_ms or (lambda: time.time_ns() // 1_000_000),
        )
        self.routes: dict[tuple[str, str], Handler] = {**PUBLIC_ROUTES, **(routes or {})}
        super().__init__()

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler`` (also while running)."""
        self.routes[(method.upper(), path)] = handler

    @property
    def requests(self) -> Counter[str]:
        """Requests received, by path (faulted ones included)."""
        return self.state.requests

    def set_fault(self, fault: Fault, path: str | None = None) -> None:
        """Inject ``fault`` on ``path`` (None: every path without its own fault)."""
        self.state.faults[path or ANY_PATH] = fault

    def clear_faults(self) -> None:
        self.state.faults.clear()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        path = request.path
        state.requests[path] += 1
        fault = state.fault_for(path)
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000.0)
            if fault.drop:
                assert request.transport is not None
                request.transport.close()
                # Nothing reaches the client: the transport is gone before any byte is written.
                return web.Response()
            if fault.status is not None:
                return _fault_response(fault.status)
        handler = self.routes.get((request.method, path))
        if handler is None:
            return web.Response(status=404, text="<html><body>404 Not Found</body></html>")
        return await handler(request, state)


def _fault_response(status: int) -> web.Response:
    if status == 429:
        return web.json_response(RATE_LIMIT_BODY, status=429, headers={"Retry-After": "1"})
    if status == 418:
        return web.json_response(BANNED_BODY, status=418, headers={"Retry-After": "120"})
    if status >= 500:
        return web.Response(status=status, text=GATEWAY_BODIES.get(status, f"{status} Error"))
    return web.json_response({"code": -1000, "msg": "An unknown error occurred."}, status=status)
