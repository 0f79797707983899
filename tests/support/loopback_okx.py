"""A loopback OKX (API v5) spot server that ccxt's real ``okx`` client can talk to.

Serves what ``CcxtSource`` needs: ``GET /api/v5/public/instruments`` (load_markets),
``/api/v5/market/candles`` and ``/market/history-candles`` (ccxt picks the history endpoint for a
``since`` older than 1,440 bars of wall time, so both serve the same data), ``/market/tickers``,
``/market/ticker`` and ``/market/books``. Every answer is OKX's envelope ``{"code": "0", "msg":
"", "data": [...]}``; business errors keep HTTP 200 with a non-zero ``code`` as OKX does.

Candles follow OKX's paging: newest first, at most ``limit`` (capped at ``max_candles``) of the
bars opened strictly between ``before`` and ``after`` (both exclusive, ms), the newest ones when
more match. Faults: HTTP 429 answers OKX's ``50011`` body, 5xx the gateway's text page.
"""

from __future__ import annotations

import math
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
    query_int,
)

BARS: dict[str, str] = {"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m"} | {
    "1h": "1H",
    "4h": "4H",
    "1d": "1Dutc",
}
"""Our interval → OKX's ``bar`` (ccxt appends ``utc`` from 6 h up)."""
CANDLES = "/api/v5/market/candles"
HISTORY_CANDLES = "/api/v5/market/history-candles"


def okx_answer(data: list[Any]) -> web.Response:
    return web.json_response({"code": "0", "msg": "", "data": data})


def okx_error(code: str, msg: str, status: int = 200) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "data": []}, status=status)


class LoopbackOkx(LoopbackExchange):
    name: ClassVar[str] = "okx"
    candle_routes: ClassVar[tuple[str, ...]] = (CANDLES, HISTORY_CANDLES)
    default_max_candles: ClassVar[int] = 300

    def native_id(self, m: Market) -> str:
        return f"{m.base}-{m.quote}"

    def error_response(self, status: int) -> web.Response:
        if status == 429:
            return okx_error("50011", "Too Many Requests", status=429)
        return gateway_error(status) or okx_error("50000", "Body can not be empty.", status)

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/api/v5/public/instruments"): self.instruments,
            ("GET", CANDLES): self.candles,
            ("GET", HISTORY_CANDLES): self.candles,
            ("GET", "/api/v5/market/tickers"): self.tickers,
            ("GET", "/api/v5/market/ticker"): self.ticker,
            ("GET", "/api/v5/market/books"): self.books,
        }

    # --- handlers ---------------------------------------------------------------------------

    def _inst(self, request: web.Request) -> str | web.Response:
        symbol = self.symbol_of(request.query.get("instId"))
        if symbol is None:
            return okx_error("51001", "Instrument ID does not exist.")
        return symbol

    async def instruments(self, request: web.Request, state: LoopbackState) -> web.Response:
        if request.query.get("instType") != "SPOT":
            return okx_answer([])  # this server lists spot markets only
        return okx_answer([self._instrument(m) for m in state.markets.values()])

    def _instrument(self, m: Market) -> dict[str, Any]:
        price = m.bars[-1][4] if m.bars and math.isfinite(m.bars[-1][4]) else 1.0
        tick = 10.0 ** (math.floor(math.log10(max(price, 1e-8))) - 5)
        return {
            "instType": "SPOT",
            "instId": self.native_id(m),
            "instFamily": "",
            "uly": "",
            "baseCcy": m.base,
            "quoteCcy": m.quote,
            "settleCcy": "",
            "ctVal": "",
            "ctMult": "",
            "ctValCcy": "",
            "ctType": "",
            "alias": "",
            "category": "1",
            "expTime": "",
            "listTime": "1548133413000",
            "lever": "10",
            "lotSz": "0.00000001",
            "minSz": "0.00001",
            "maxLmtSz": "9999999999",
            "maxMktSz": "1000000",
            "tickSz": f"{tick:.10f}",
            "state": "live",
            "optType": "",
            "stk": "",
        }

    async def candles(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._inst(request)
        if isinstance(found, web.Response):
            return found
        if request.query.get("bar", "1m") != BARS.get(state.interval):
            return okx_error("51000", "Parameter bar error")
        try:
            limit = query_int(request, "limit") or 100
            before, after = query_int(request, "before"), query_int(request, "after")
        except ValueError:
            return okx_error("51000", "Parameter limit error")
        limit = max(1, min(limit, state.max_klines_limit))
        visible = state.visible_bars(found)
        rows = [
            row
            for row in visible
            if (before is None or row[0] > before) and (after is None or row[0] < after)
        ][-limit:]
        rows = self.corrupted(request, rows)
        last_open = visible[-1][0] if visible else None
        return okx_answer(
            [
                [
                    str(ts),
                    num(o),
                    num(h),
                    num(lo),
                    num(c),
                    num(v),
                    num(v * c),
                    num(v * c),
                    "0" if ts == last_open else "1",  # confirm: the newest bar is still forming
                ]
                for ts, o, h, lo, c, v in newest_first(rows)
            ]
        )

    def _ticker(self, symbol: str) -> dict[str, Any]:
        state = self.state
        stats = day_stats(state, symbol)
        bids, asks = state.book(symbol, 1)
        bid, bid_qty = bids[0] if bids else (0.0, 0.0)
        ask, ask_qty = asks[0] if asks else (0.0, 0.0)
        return {
            "instType": "SPOT",
            "instId": self.native_id(state.markets[symbol]),
            "last": num(stats["last"]),
            "lastSz": "0.1",
            "askPx": num(ask),
            "askSz": num(ask_qty),
            "bidPx": num(bid),
            "bidSz": num(bid_qty),
            "open24h": num(stats["open"]),
            "high24h": num(stats["high"]),
            "low24h": num(stats["low"]),
            "volCcy24h": num(stats["quote_volume"]),
            "vol24h": num(stats["volume"]),
            "ts": str(state.now_ms()),
            "sodUtc0": num(stats["open"]),
            "sodUtc8": num(stats["open"]),
        }

    async def tickers(self, request: web.Request, state: LoopbackState) -> web.Response:
        if request.query.get("instType") != "SPOT":
            return okx_answer([])
        return okx_answer([self._ticker(s) for s in state.markets])

    async def ticker(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._inst(request)
        if isinstance(found, web.Response):
            return found
        return okx_answer([self._ticker(found)])

    async def books(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._inst(request)
        if isinstance(found, web.Response):
            return found
        try:
            size = query_int(request, "sz") or 1
        except ValueError:
            return okx_error("51000", "Parameter sz error")
        if not 1 <= size <= 400:
            return okx_error("51000", "Parameter sz error")
        bids, asks = state.book(found, size)
        return okx_answer(
            [
                {
                    "asks": [[num(p), num(q), "0", "1"] for p, q in asks],
                    "bids": [[num(p), num(q), "0", "1"] for p, q in bids],
                    "ts": str(state.now_ms()),
                }
            ]
        )
