"""What the loopback exchange servers other than Binance share: the aiohttp app, routing with
path parameters, request counting, fault injection, and a dataset read from the real candle and
order-book files in ``../shared/data``.

Each exchange module (``loopback_okx``, ``loopback_kraken``, ``loopback_kucoin``,
``loopback_coinbase``) subclasses ``LoopbackExchange`` with its routes, its native symbol ids
and its own error bodies, so that ccxt's real client for that exchange parses every answer,
errors included, with its own code. The dataset types (``Market``, ``LoopbackState``, ``Fault``,
``BadData``) are the Binance server's, so one dataset and one fault vocabulary serve all of them.

Faults are keyed by route pattern (``/api/v5/market/candles``,
``/api/v3/brokerage/market/products/{product_id}/candles``) or ``ANY_PATH``; ``set_candle_fault``
covers every route that serves candles (OKX has two). ``Fault.bad_data`` corrupts candle answers
only.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from aiohttp import web

from tests.support.loopback_binance import (
    ANY_PATH,
    DAY_MS,
    GATEWAY_BODIES,
    BarRow,
    Fault,
    Handler,
    Level,
    LoopbackServer,
    LoopbackState,
    Market,
    corrupt,
    market,
)

__all__ = [
    "ANY_PATH",
    "DAY_MS",
    "BarRow",
    "Fault",
    "Handler",
    "Level",
    "LoopbackExchange",
    "LoopbackState",
    "Market",
    "day_stats",
    "gateway_error",
    "load_book_snapshot",
    "load_candles",
    "newest_first",
    "num",
    "path_param",
    "query_int",
    "real_markets",
]


def num(x: float) -> str:
    """A number as exchanges send it (a string); repr round-trips, so ccxt parses the dataset's
    value exactly, and NaN goes out as ``"nan"`` for validation to catch."""
    return repr(float(x))


# --- the dataset --------------------------------------------------------------------------


def load_candles(path: Path, *, first_ms: int, last_ms: int) -> list[BarRow]:
    """Rows of a ``timestamp,open,high,low,close,volume`` gzip CSV opened in [first_ms, last_ms]."""
    rows: list[BarRow] = []
    with gzip.open(path, "rt", newline="") as f:
        for rec in csv.DictReader(f):
            ts = int(rec["timestamp"])
            if first_ms <= ts <= last_ms:
                o, h, lo, c, v = (float(rec[k]) for k in ("open", "high", "low", "close", "volume"))
                rows.append((ts, o, h, lo, c, v))
    return rows


def load_book_snapshot(path: Path, depth: int) -> tuple[list[Level], list[Level]]:
    """The first REST depth snapshot (a line without ``stream``) of a Binance capture."""
    with gzip.open(path, "rt") as f:
        for line in f:
            _, _, raw = line.partition(" ")
            msg = json.loads(raw)
            if "lastUpdateId" in msg and "stream" not in msg:
                bids = [(float(p), float(q)) for p, q in msg["bids"][:depth]]
                asks = [(float(p), float(q)) for p, q in msg["asks"][:depth]]
                return bids, asks
    raise ValueError(f"{path}: no depth snapshot")


def real_markets(
    data: Path,
    symbols: Sequence[str],
    *,
    folder: str,
    first_ms: int,
    last_ms: int,
    depth: int = 50,
) -> dict[str, Market]:
    """Markets from ``data/candles/<folder>/<SYMBOL>.csv.gz``, with the captured book of the
    symbols that have one in ``data/orderbook`` (the others get the state's synthetic book)."""
    found: dict[str, Market] = {}
    for symbol in symbols:
        bars = load_candles(
            data / "candles" / folder / f"{symbol}.csv.gz", first_ms=first_ms, last_ms=last_ms
        )
        book = data / "orderbook" / f"binance-spot-{symbol.lower()}-20240808.jsonl.gz"
        bids, asks = load_book_snapshot(book, depth) if book.exists() else ([], [])
        found[symbol] = market(symbol, bars, bids, asks)
    return found


def day_stats(state: LoopbackState, symbol: str) -> dict[str, float]:
    """The 24 h figures a ticker reports, from the bars opened in the last day."""
    now = state.now_ms()
    day = [row for row in state.visible_bars(symbol) if row[0] > now - DAY_MS]
    if not day:
        return dict.fromkeys(("open", "high", "low", "last", "volume", "quote_volume"), 0.0)
    volume = sum(row[5] for row in day)
    return {
        "open": day[0][1],
        "high": max(row[2] for row in day),
        "low": min(row[3] for row in day),
        "last": day[-1][4],
        "volume": volume,
        "quote_volume": sum(row[5] * row[4] for row in day),
    }


# --- the server -----------------------------------------------------------------------------


_PARAM = re.compile(r"\{(\w+)\}")
ROUTE = web.RequestKey("route", str)
"""The route pattern a request matched (its path when none did)."""
PATH_PARAMS = web.RequestKey("path_params", dict[str, str])
"""The ``{param}`` segments of the matched pattern."""


def _compile(pattern: str) -> re.Pattern[str]:
    """``/a/{name}/b`` as a regex whose group ``name`` matches one path segment."""
    parts: list[str] = []
    pos = 0
    for found in _PARAM.finditer(pattern):
        parts.append(re.escape(pattern[pos : found.start()]))
        parts.append(f"(?P<{found.group(1)}>[^/]+)")
        pos = found.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(parts) + "$")


class LoopbackExchange(LoopbackServer):
    """A loopback REST exchange: ``async with Sub(markets, now_ms=...) as server: server.base_url``.

    Subclasses set ``name``, ``candle_routes`` and ``default_max_candles`` and implement
    ``routes`` ((method, pattern) → handler; a pattern may hold ``{param}`` segments, read with
    ``path_param(request, name)``), ``native_id`` and ``error_response``. ``max_candles`` is the
    most candles one answer holds (settable while running, to make paging visible).
    """

    name: ClassVar[str] = ""
    candle_routes: ClassVar[tuple[str, ...]] = ()
    """Route patterns that serve candles (bad data applies there; ``candle_requests`` counts)."""
    default_max_candles: ClassVar[int] = 300

    def __init__(
        self,
        markets: Mapping[str, Market],
        *,
        interval: str = "1m",
        max_candles: int | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.state = LoopbackState(
            markets,
            interval=interval,
            max_klines_limit=max_candles or self.default_max_candles,
            now_ms=now_ms or (lambda: time.time_ns() // 1_000_000),
        )
        self.by_native: dict[str, str] = {self.native_id(m): s for s, m in markets.items()}
        self.hits: Counter[str] = Counter()
        """Requests by route pattern (faulted ones included; unrouted paths by path)."""
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = [
            (method, pattern, _compile(pattern), handler)
            for (method, pattern), handler in self.routes().items()
        ]
        super().__init__()

    # --- what a subclass provides ------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], Handler]:
        raise NotImplementedError

    def native_id(self, m: Market) -> str:
        """The exchange's id for a market (``BTC-USDT``, ``XBTUSDT``)."""
        raise NotImplementedError

    def error_response(self, status: int) -> web.Response:
        """What the exchange (or its gateway) answers with ``status`` when a fault asks for it."""
        raise NotImplementedError

    # --- helpers for handlers ------------------------------------------------------------------

    def symbol_of(self, native: str | None) -> str | None:
        """Our dataset symbol for the exchange's id (None: unknown)."""
        return self.by_native.get(native or "")

    @property
    def max_candles(self) -> int:
        return self.state.max_klines_limit

    @max_candles.setter
    def max_candles(self, value: int) -> None:
        self.state.max_klines_limit = value

    def bars_between(self, symbol: str, first_ms: int | None, last_ms: int | None) -> list[BarRow]:
        """Visible bars opened in [first_ms, last_ms] (None: unbounded), oldest first."""
        return [
            row
            for row in self.state.visible_bars(symbol)
            if (first_ms is None or row[0] >= first_ms) and (last_ms is None or row[0] <= last_ms)
        ]

    def corrupted(self, request: web.Request, rows: list[BarRow]) -> list[BarRow]:
        """``rows`` (oldest first) with the route's (or the global) bad-data fault applied."""
        fault = self._fault_for(request[ROUTE])
        return corrupt(rows, fault.bad_data) if fault is not None and fault.bad_data else rows

    # --- control --------------------------------------------------------------------------------

    @property
    def candle_requests(self) -> int:
        return sum(self.hits[p] for p in self.candle_routes)

    def set_fault(self, fault: Fault, route: str | None = None) -> None:
        """Inject ``fault`` on a route pattern (None: every route without its own fault)."""
        self.state.faults[route or ANY_PATH] = fault

    def set_candle_fault(self, fault: Fault) -> None:
        for route in self.candle_routes:
            self.set_fault(fault, route)

    def clear_faults(self) -> None:
        self.state.faults.clear()

    # --- dispatch -------------------------------------------------------------------------------

    def _fault_for(self, pattern: str) -> Fault | None:
        return self.state.fault_for(pattern)

    def _resolve(self, method: str, path: str) -> tuple[str, Handler | None, dict[str, str]]:
        for m, pattern, regex, handler in self._routes:
            found = regex.match(path)
            if found is not None and m == method:
                return pattern, handler, found.groupdict()
        return path, None, {}

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        pattern, handler, params = self._resolve(request.method, request.path)
        self.hits[pattern] += 1
        self.state.requests[request.path] += 1
        fault = self._fault_for(pattern)
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000.0)
            if fault.drop:
                assert request.transport is not None
                request.transport.close()  # nothing reaches the client
                return web.Response()
            if fault.status is not None:
                return self.error_response(fault.status)
        if handler is None:
            return web.Response(status=404, text="<html><body>404 Not Found</body></html>")
        request[ROUTE] = pattern
        request[PATH_PARAMS] = params
        return await handler(request, self.state)


def gateway_error(status: int) -> web.Response | None:
    """The load balancer's plain-text page for a 5xx (None for other statuses)."""
    if status >= 500:
        return web.Response(status=status, text=GATEWAY_BODIES.get(status, f"{status} Error"))
    return None


def path_param(request: web.Request, name: str) -> str:
    return request[PATH_PARAMS][name]


def query_int(request: web.Request, name: str) -> int | None:
    """An integer query parameter (None when absent; ValueError when malformed)."""
    raw = request.query.get(name)
    return None if raw is None or raw == "" else int(raw)


def newest_first(rows: Iterable[BarRow]) -> list[BarRow]:
    """Reversed, not sorted: a corrupted answer keeps its duplicates and misplaced rows."""
    return list(reversed(list(rows)))
