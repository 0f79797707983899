"""A loopback Kraken spot REST server that ccxt's real ``kraken`` client can talk to.

Serves ``GET /0/public/Assets`` and ``/AssetPairs`` (load_markets: ccxt learns from the assets
that ``XXBT`` is BTC), ``/OHLC``, ``/Ticker`` and ``/Depth``, in Kraken's envelope ``{"error":
[], "result": {...}}`` keyed by Kraken's pair ids (``XBTUSDT``, ``XXBTZUSD``). Business errors
keep HTTP 200 with an ``error`` list (``EQuery:Unknown asset pair``), as Kraken does.

OHLC follows Kraken's limits: whatever ``since`` says, only the ``max_candles`` (Kraken: 720) most
recent bars exist, the still-forming one included; ``since`` (seconds, exclusive) filters within
them, and there is no ``limit``. Times are in seconds. Faults: HTTP 429 answers Kraken's
``EAPI:Rate limit exceeded``, 5xx the gateway's text page.
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
    num,
    query_int,
)

INTERVALS: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240}
INTERVALS["1d"] = 1440
"""Our interval → Kraken's ``interval`` (minutes)."""
ASSET_IDS: dict[str, str] = {
    "BTC": "XXBT",
    "ETH": "XETH",
    "DOGE": "XXDG",
    "LTC": "XLTC",
    "XRP": "XXRP",
    "USD": "ZUSD",
    "EUR": "ZEUR",
}
"""Kraken's legacy X/Z-prefixed asset ids; newer assets use their code."""
ALTNAMES: dict[str, str] = {"BTC": "XBT", "DOGE": "XDG"}
OHLC = "/0/public/OHLC"


def kraken_answer(result: dict[str, Any]) -> web.Response:
    return web.json_response({"error": [], "result": result})


def kraken_error(message: str, status: int = 200) -> web.Response:
    return web.json_response({"error": [message]}, status=status)


def asset_id(code: str) -> str:
    return ASSET_IDS.get(code, code)


def altname(code: str) -> str:
    return ALTNAMES.get(code, code)


class LoopbackKraken(LoopbackExchange):
    name: ClassVar[str] = "kraken"
    candle_routes: ClassVar[tuple[str, ...]] = (OHLC,)
    default_max_candles: ClassVar[int] = 720

    def native_id(self, m: Market) -> str:
        """Two legacy assets pair as ``XXBTZUSD``; any other pair by altnames (``XBTUSDT``)."""
        if m.base in ASSET_IDS and m.quote in ASSET_IDS:
            return asset_id(m.base) + asset_id(m.quote)
        return altname(m.base) + altname(m.quote)

    def error_response(self, status: int) -> web.Response:
        if status == 429:
            return kraken_error("EAPI:Rate limit exceeded", status=429)
        return gateway_error(status) or kraken_error("EGeneral:Invalid arguments", status)

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/0/public/Assets"): self.assets,
            ("GET", "/0/public/AssetPairs"): self.asset_pairs,
            ("GET", OHLC): self.ohlc,
            ("GET", "/0/public/Ticker"): self.ticker,
            ("GET", "/0/public/Depth"): self.depth,
        }

    # --- handlers ---------------------------------------------------------------------------

    def _pair(self, request: web.Request) -> str | web.Response:
        symbol = self.symbol_of(request.query.get("pair"))
        return symbol if symbol is not None else kraken_error("EQuery:Unknown asset pair")

    async def assets(self, request: web.Request, state: LoopbackState) -> web.Response:
        codes = {c for m in state.markets.values() for c in (m.base, m.quote)}
        return kraken_answer(
            {
                asset_id(code): {
                    "aclass": "currency",
                    "altname": altname(code),
                    "decimals": 10,
                    "display_decimals": 5,
                    "collateral_value": 1.0,
                    "status": "enabled",
                }
                for code in sorted(codes)
            }
        )

    async def asset_pairs(self, request: web.Request, state: LoopbackState) -> web.Response:
        return kraken_answer(
            {self.native_id(m): self._pair_info(m) for m in state.markets.values()}
        )

    def _pair_info(self, m: Market) -> dict[str, Any]:
        return {
            "altname": altname(m.base) + altname(m.quote),
            "wsname": f"{altname(m.base)}/{altname(m.quote)}",
            "aclass_base": "currency",
            "base": asset_id(m.base),
            "aclass_quote": "currency",
            "quote": asset_id(m.quote),
            "lot": "unit",
            "cost_decimals": 5,
            "pair_decimals": 5,
            "lot_decimals": 8,
            "lot_multiplier": 1,
            "leverage_buy": [],
            "leverage_sell": [],
            "fees": [[0, 0.26], [50000, 0.24]],
            "fees_maker": [[0, 0.16], [50000, 0.14]],
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": "0.0001",
            "costmin": "0.5",
            "tick_size": "0.00001",
            "status": "online",
        }

    async def ohlc(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._pair(request)
        if isinstance(found, web.Response):
            return found
        try:
            interval = query_int(request, "interval") or 1
            since_s = query_int(request, "since")
        except ValueError:
            return kraken_error("EGeneral:Invalid arguments")
        if interval != INTERVALS.get(state.interval):
            return kraken_error("EGeneral:Invalid arguments")
        window = state.visible_bars(found)[-state.max_klines_limit :]
        rows = [r for r in window if since_s is None or r[0] // 1000 > since_s]
        rows = self.corrupted(request, rows)
        # "last": the newest committed bar (the forming one is sent, but is not committed).
        last = window[-2][0] // 1000 if len(window) > 1 else 0
        native = self.native_id(state.markets[found])
        return kraken_answer(
            {
                native: [
                    [ts // 1000, num(o), num(h), num(lo), num(c), num(c), num(v), 10]
                    for ts, o, h, lo, c, v in rows
                ],
                "last": last,
            }
        )

    def _ticker(self, symbol: str) -> dict[str, Any]:
        stats = day_stats(self.state, symbol)
        bids, asks = self.state.book(symbol, 1)
        bid, bid_qty = bids[0] if bids else (0.0, 0.0)
        ask, ask_qty = asks[0] if asks else (0.0, 0.0)
        vwap = stats["quote_volume"] / stats["volume"] if stats["volume"] else 0.0
        return {
            "a": [num(ask), "1", num(ask_qty)],
            "b": [num(bid), "1", num(bid_qty)],
            "c": [num(stats["last"]), "0.1"],
            "v": [num(stats["volume"]), num(stats["volume"])],
            "p": [num(vwap), num(vwap)],
            "t": [100, 100],
            "l": [num(stats["low"]), num(stats["low"])],
            "h": [num(stats["high"]), num(stats["high"])],
            "o": num(stats["open"]),
        }

    async def ticker(self, request: web.Request, state: LoopbackState) -> web.Response:
        raw = request.query.get("pair")
        if raw is None:
            wanted = list(state.markets)
        else:
            found = [self.symbol_of(p) for p in raw.split(",")]
            if None in found:
                return kraken_error("EQuery:Unknown asset pair")
            wanted = [s for s in found if s is not None]
        return kraken_answer({self.native_id(state.markets[s]): self._ticker(s) for s in wanted})

    async def depth(self, request: web.Request, state: LoopbackState) -> web.Response:
        found = self._pair(request)
        if isinstance(found, web.Response):
            return found
        try:
            count = query_int(request, "count") or 100
        except ValueError:
            return kraken_error("EGeneral:Invalid arguments")
        count = max(1, min(count, 500))
        bids, asks = state.book(found, count)
        ts = state.now_ms() // 1000
        return kraken_answer(
            {
                self.native_id(state.markets[found]): {
                    "asks": [[num(p), num(q), ts] for p, q in asks],
                    "bids": [[num(p), num(q), ts] for p, q in bids],
                }
            }
        )
