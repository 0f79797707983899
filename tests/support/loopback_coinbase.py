"""A loopback Coinbase Advanced Trade (API v3, public market endpoints) server that ccxt's real
``coinbase`` client can talk to.

Serves ``GET /api/v3/brokerage/market/products`` (load_markets, and fetch_tickers: last price
and 24 h volume but no bid or ask), ``/market/products/{product_id}/candles``,
``/market/products/{product_id}/ticker`` (the latest trade with the best bid and ask) and
``/market/product_book``; also the v2 currency endpoints a default ccxt client asks for while
loading markets (``/v2/currencies``, ``/v2/currencies/crypto``, ``/v2/exchange-rates``).

Candles follow Coinbase: times in seconds, bars opened in [start, end] (both required), newest
first, dicts of strings; asking for more than ``max_candles`` (Coinbase: 350) is refused with
``INVALID_ARGUMENT``. Faults: HTTP 429 answers ``rate_limit_exceeded``, 5xx the gateway's text page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from tests.support.loopback_exchange import (
    Handler,
    LoopbackExchange,
    LoopbackState,
    Market,
    day_stats,
    gateway_error,
    newest_first,
    num,
    path_param,
    query_int,
)

GRANULARITIES: dict[str, str] = {"1m": "ONE_MINUTE", "5m": "FIVE_MINUTE"} | {
    "15m": "FIFTEEN_MINUTE",
    "30m": "THIRTY_MINUTE",
    "1h": "ONE_HOUR",
    "1d": "ONE_DAY",
}
"""Our interval → Coinbase's candle ``granularity``."""
MARKET = "/api/v3/brokerage/market"
CANDLES = MARKET + "/products/{product_id}/candles"


def iso(ms: int) -> str:
    """RFC 3339 with milliseconds, as Coinbase stamps books and trades."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def coinbase_error(status: int, error: str, message: str) -> web.Response:
    body = {"error": error, "error_details": message, "message": message}
    return web.json_response(body, status=status)


class LoopbackCoinbase(LoopbackExchange):
    name: ClassVar[str] = "coinbase"
    candle_routes: ClassVar[tuple[str, ...]] = (CANDLES,)
    default_max_candles: ClassVar[int] = 350

    def native_id(self, m: Market) -> str:
        return f"{m.base}-{m.quote}"

    def error_response(self, status: int) -> web.Response:
        if status == 429:
            return coinbase_error(429, "rate_limit_exceeded", "Too many requests")
        return gateway_error(status) or coinbase_error(status, "unknown", "Unknown error")

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/v2/currencies"): self.fiat_currencies,
            ("GET", "/v2/currencies/crypto"): self.crypto_currencies,
            ("GET", "/v2/exchange-rates"): self.exchange_rates,
            ("GET", MARKET + "/products"): self.products,
            ("GET", CANDLES): self.candles,
            ("GET", MARKET + "/products/{product_id}/ticker"): self.ticker,
            ("GET", MARKET + "/product_book"): self.product_book,
        }

    # --- handlers ---------------------------------------------------------------------------

    def _product(self, native: str | None) -> str | web.Response:
        symbol = self.symbol_of(native)
        if symbol is None:
            return coinbase_error(404, "NOT_FOUND", "ProductID is invalid")
        return symbol

    def _codes(self) -> list[str]:
        return sorted({c for m in self.state.markets.values() for c in (m.base, m.quote)})

    async def fiat_currencies(self, request: web.Request, state: LoopbackState) -> web.Response:
        return web.json_response({"data": [{"id": "USD", "name": "US Dollar", "min_size": "0.01"}]})

    async def crypto_currencies(self, request: web.Request, state: LoopbackState) -> web.Response:
        return web.json_response(
            {
                "data": [
                    {"asset_id": f"asset-{code.lower()}", "code": code, "name": code}
                    for code in self._codes()
                ]
            }
        )

    async def exchange_rates(self, request: web.Request, state: LoopbackState) -> web.Response:
        rates = dict.fromkeys(self._codes(), "1")
        return web.json_response({"data": {"currency": "USD", "rates": rates}})

    def _product_info(self, m: Market) -> dict[str, Any]:
        stats = day_stats(self.state, m.symbol)
        change = stats["last"] - stats["open"]
        native = self.native_id(m)
        return {
            "product_id": native,
            "price": num(stats["last"]),
            "price_percentage_change_24h": num(
                change / stats["open"] * 100 if stats["open"] else 0
            ),
            "volume_24h": num(stats["volume"]),
            "volume_percentage_change_24h": "0",
            "base_increment": "0.00000001",
            "quote_increment": "0.00001",
            "quote_min_size": "1",
            "quote_max_size": "150000000",
            "base_min_size": "0.00000001",
            "base_max_size": "42000",
            "base_name": m.base,
            "quote_name": m.quote,
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": m.quote,
            "base_currency_id": m.base,
            "fcm_trading_session_details": None,
            "mid_market_price": "",
            "alias": "",
            "alias_to": [],
            "base_display_symbol": m.base,
            "quote_display_symbol": m.quote,
            "view_only": False,
            "price_increment": "0.00001",
            "display_name": native,
            "product_venue": "CBE",
            "approximate_quote_24h_volume": num(stats["quote_volume"]),
        }

    async def products(self, request: web.Request, state: LoopbackState) -> web.Response:
        if request.query.get("product_type", "SPOT") != "SPOT":
            return web.json_response({"products": [], "num_products": 0})
        wanted = request.query.getall("product_ids", [])
        if wanted:
            symbols = [self.symbol_of(p) for p in wanted]
            if None in symbols:
                return coinbase_error(400, "INVALID_ARGUMENT", "invalid product_ids")
        else:
            symbols = list(state.markets)
        found = [self._product_info(state.markets[s]) for s in symbols if s is not None]
        return web.json_response({"products": found, "num_products": len(found)})

    async def candles(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._product(path_param(request, "product_id"))
        if isinstance(found, web.Response):
            return found
        if request.query.get("granularity") != GRANULARITIES.get(state.interval):
            return coinbase_error(400, "INVALID_ARGUMENT", "unsupported granularity")
        try:
            start, end = query_int(request, "start"), query_int(request, "end")
        except ValueError:
            start = end = None
        if start is None or end is None or end < start:
            return coinbase_error(400, "INVALID_ARGUMENT", "start and end are required")
        bar_s = state.bar_ms // 1000
        if (end - start) // bar_s + 1 > state.max_klines_limit:
            return coinbase_error(
                400,
                "INVALID_ARGUMENT",
                f"number of candles requested should be less than {state.max_klines_limit}",
            )
        rows = [r for r in state.visible_bars(found) if start <= r[0] // 1000 <= end]
        rows = self.corrupted(request, rows)
        return web.json_response(
            {
                "candles": [
                    {
                        "start": str(ts // 1000),
                        "low": num(lo),
                        "high": num(h),
                        "open": num(o),
                        "close": num(c),
                        "volume": num(v),
                    }
                    for ts, o, h, lo, c, v in newest_first(rows)
                ]
            }
        )

    async def ticker(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._product(path_param(request, "product_id"))
        if isinstance(found, web.Response):
            return found
        stats = day_stats(state, found)
        bids, asks = state.book(found, 1)
        now = state.now_ms()
        trade = {
            "trade_id": str(now),
            "product_id": path_param(request, "product_id"),
            "price": num(stats["last"]),
            "size": "0.1",
            "time": iso(now),
            "side": "BUY",
            "bid": "",
            "ask": "",
        }
        return web.json_response(
            {
                "trades": [trade],
                "best_bid": num(bids[0][0]) if bids else "",
                "best_ask": num(asks[0][0]) if asks else "",
            }
        )

    async def product_book(self, request: web.Request, state: LoopbackState) -> web.Response:
        native = request.query.get("product_id")
        found = self._product(native)
        if isinstance(found, web.Response):
            return found
        try:
            limit = query_int(request, "limit") or 50
        except ValueError:
            return coinbase_error(400, "INVALID_ARGUMENT", "invalid limit")
        bids, asks = state.book(found, limit)
        return web.json_response(
            {
                "pricebook": {
                    "product_id": native,
                    "bids": [{"price": num(p), "size": num(q)} for p, q in bids],
                    "asks": [{"price": num(p), "size": num(q)} for p, q in asks],
                    "time": iso(state.now_ms()),
                },
                "last": num(day_stats(state, found)["last"]),
            }
        )
