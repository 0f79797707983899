"""A loopback KuCoin spot REST server that ccxt's real ``kucoin`` client can talk to.

Serves ``GET /api/v3/currencies`` and ``/api/v2/symbols`` (load_markets),
``/api/v1/market/allTickers`` (the only tickers endpoint: every symbol at once),
``/api/v1/market/candles`` and the partial books ``/api/v1/market/orderbook/level2_20`` and
``level2_100`` (KuCoin serves no other depth without keys). Answers use KuCoin's envelope
``{"code": "200000", "data": ...}``; business errors keep HTTP 200 with another code.

Candles follow KuCoin: times in seconds, bars opened in [startAt, endAt), newest first, at most
``max_candles`` (KuCoin: 1,500), each row ``[time, open, close, high, low, volume, turnover]``
(close before high and low). Faults: HTTP 429 answers KuCoin's ``429000`` body, 5xx the gateway's
text page.
"""

from __future__ import annotations

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

TYPES: dict[str, str] = {"1m": "1min", "3m": "3min", "5m": "5min", "15m": "15min"} | {
    "30m": "30min",
    "1h": "1hour",
    "4h": "4hour",
    "1d": "1day",
}
"""Our interval → KuCoin's candle ``type``."""
CANDLES = "/api/v1/market/candles"
OK = "200000"


def kucoin_answer(data: Any) -> web.Response:
    return web.json_response({"code": OK, "data": data})


def kucoin_error(code: str, msg: str, status: int = 200) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


class LoopbackKucoin(LoopbackExchange):
    name: ClassVar[str] = "kucoin"
    candle_routes: ClassVar[tuple[str, ...]] = (CANDLES,)
    default_max_candles: ClassVar[int] = 1500

    def native_id(self, m: Market) -> str:
        return f"{m.base}-{m.quote}"

    def error_response(self, status: int) -> web.Response:
        if status == 429:
            return kucoin_error(
                "429000", "Too many requests in a short period of time, please retry later.", 429
            )
        return gateway_error(status) or kucoin_error("400000", "Bad Request", status)

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/api/v3/currencies"): self.currencies,
            ("GET", "/api/v2/symbols"): self.symbols,
            ("GET", "/api/v1/market/allTickers"): self.all_tickers,
            ("GET", CANDLES): self.candles,
            ("GET", "/api/v1/market/orderbook/level2_{limit}"): self.orderbook,
        }

    # --- handlers ---------------------------------------------------------------------------

    def _symbol(self, request: web.Request) -> str | web.Response:
        symbol = self.symbol_of(request.query.get("symbol"))
        return symbol if symbol is not None else kucoin_error("400100", "Unsupported trading pair.")

    async def currencies(self, request: web.Request, state: LoopbackState) -> web.Response:
        codes = sorted({c for m in state.markets.values() for c in (m.base, m.quote)})
        return kucoin_answer(
            [
                {
                    "currency": code,
                    "name": code,
                    "fullName": code,
                    "precision": 8,
                    "confirms": None,
                    "contractAddress": None,
                    "isMarginEnabled": True,
                    "isDebitEnabled": True,
                    "chains": [],
                }
                for code in codes
            ]
        )

    async def symbols(self, request: web.Request, state: LoopbackState) -> web.Response:
        return kucoin_answer([self._symbol_info(m) for m in state.markets.values()])

    def _symbol_info(self, m: Market) -> dict[str, Any]:
        return {
            "symbol": self.native_id(m),
            "name": self.native_id(m),
            "baseCurrency": m.base,
            "quoteCurrency": m.quote,
            "feeCurrency": m.quote,
            "market": "USDS",
            "baseMinSize": "0.00001",
            "quoteMinSize": "0.1",
            "baseMaxSize": "10000000000",
            "quoteMaxSize": "99999999",
            "baseIncrement": "0.00000001",
            "quoteIncrement": "0.000001",
            "priceIncrement": "0.00001",
            "priceLimitRate": "0.1",
            "minFunds": "0.1",
            "isMarginEnabled": False,
            "enableTrading": True,
            "feeCategory": 1,
            "makerFeeCoefficient": "1.00",
            "takerFeeCoefficient": "1.00",
            "st": False,
        }

    def _ticker(self, symbol: str) -> dict[str, Any]:
        stats = day_stats(self.state, symbol)
        bids, asks = self.state.book(symbol, 1)
        bid, bid_qty = bids[0] if bids else (0.0, 0.0)
        ask, ask_qty = asks[0] if asks else (0.0, 0.0)
        native = self.native_id(self.state.markets[symbol])
        change = stats["last"] - stats["open"]
        return {
            "symbol": native,
            "symbolName": native,
            "buy": num(bid),
            "bestBidSize": num(bid_qty),
            "sell": num(ask),
            "bestAskSize": num(ask_qty),
            "changeRate": num(change / stats["open"] if stats["open"] else 0.0),
            "changePrice": num(change),
            "high": num(stats["high"]),
            "low": num(stats["low"]),
            "vol": num(stats["volume"]),
            "volValue": num(stats["quote_volume"]),
            "last": num(stats["last"]),
            "averagePrice": num(stats["last"]),
            "takerFeeRate": "0.001",
            "makerFeeRate": "0.001",
            "takerCoefficient": "1",
            "makerCoefficient": "1",
        }

    async def all_tickers(self, request: web.Request, state: LoopbackState) -> web.Response:
        return kucoin_answer(
            {"time": state.now_ms(), "ticker": [self._ticker(s) for s in state.markets]}
        )

    async def candles(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._symbol(request)
        if isinstance(found, web.Response):
            return found
        if request.query.get("type") != TYPES.get(state.interval):
            return kucoin_error("400100", "Unsupported candle type.")
        try:
            start, end = query_int(request, "startAt"), query_int(request, "endAt")
        except ValueError:
            return kucoin_error("400100", "Invalid startAt or endAt.")
        rows = [
            row
            for row in state.visible_bars(found)
            if (start is None or row[0] // 1000 >= start) and (end is None or row[0] // 1000 < end)
        ][-state.max_klines_limit :]
        rows = self.corrupted(request, rows)
        return kucoin_answer(
            [
                [str(ts // 1000), num(o), num(c), num(h), num(lo), num(v), num(v * c)]
                for ts, o, h, lo, c, v in newest_first(rows)
            ]
        )

    async def orderbook(self, request: web.Request, state: LoopbackState) -> web.Response:
        limit = path_param(request, "limit")
        if limit not in ("20", "100"):
            return web.Response(status=404, text="<html><body>404 Not Found</body></html>")
        found = self._symbol(request)
        if isinstance(found, web.Response):
            return found
        bids, asks = state.book(found, int(limit))
        return kucoin_answer(
            {
                "time": state.now_ms(),
                "sequence": str(state.now_ms()),
                "bids": [[num(p), num(q)] for p, q in bids],
                "asks": [[num(p), num(q)] for p, q in asks],
            }
        )
