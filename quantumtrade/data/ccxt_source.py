"""Live exchange market data through ``ccxt.async_support`` (REST polling).

``CcxtSource`` meets the ``Source`` protocol: our symbol names (``BTCUSDT``) are translated to
ccxt's unified ones (``BTC/USDT``) through the loaded markets (so Kraken's ``XBTUSDT`` and OKX's
``BTC-USDT`` are ``BTCUSDT`` too), bars come from ``fetch_ohlcv`` (paged, closed bars only), books
from ``fetch_order_book`` and tickers from ``fetch_tickers``. What differs between exchanges is
in ``QUIRKS``: which markets and currencies load, whether ccxt maps ``until`` to an end time,
which book depths exist, and whether the all-tickers answer carries bid and ask.
Transient exchange faults (timeouts, connection errors, 5xx, 418/429 rate limiting and bad
answers: ccxt's ``OperationFailed`` family) are raised as ``SourceUnavailable`` with ccxt's
message, so the orchestrator's circuit breaker sees one fault type. ccxt's own rate limiter
stays on unless the config turns it off.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import ccxt.async_support as ccxt_async
import msgspec
import structlog

from quantumtrade.clock import Clock, WallClock
from quantumtrade.credentials import Credentials
from quantumtrade.data.source import OrderBook, Ticker
from quantumtrade.errors import SourceUnavailable
from quantumtrade.events import Bar

log = structlog.get_logger("quantumtrade.ccxt_source")

ExchangeId = Literal["binance", "coinbase", "kraken", "kucoin", "okx"]
EXCHANGE_IDS: tuple[str, ...] = ("binance", "coinbase", "kraken", "kucoin", "okx")


@dataclass(frozen=True, slots=True)
class Quirks:
    """How one exchange differs, as far as market data goes (read from ccxt's source for it)."""

    options: dict[str, Any] = field(default_factory=dict)
    """ccxt options: spot markets only, and no lookups a market-data client does not need."""
    skip_currencies: bool = False
    """``CcxtSource`` fetches no currencies in ``load_markets`` (the markets carry base and quote
    already); Kraken needs them (they tell ccxt that ``XXBT`` is BTC), OKX skips them itself
    without keys."""
    ohlcv_until: bool = False
    """ccxt's ``fetch_ohlcv`` turns ``params['until']`` into the exchange's end time (Binance
    ``endTime``, OKX ``after``, Coinbase ``end``); the others ignore it or pass it on unknown."""
    book_limits: tuple[int, ...] = ()
    """The only depths the public book endpoint serves, ascending (empty: any)."""
    ticker_per_symbol: bool = False
    """The all-tickers answer lacks bid and ask (Coinbase's product list): ask per symbol."""


QUIRKS: dict[str, Quirks] = {
    # Without these, binance's load_markets also asks the futures, margin and (with keys) wallet
    # endpoints, on other hosts: 7 requests instead of one.
    "binance": Quirks(
        options={
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "adjustForTimeDifference": False,
        },
        ohlcv_until=True,
    ),
    # Spot instruments only (else futures, swaps and two option families: 5 requests).
    "okx": Quirks(
        options={"fetchMarkets": {"types": ["spot"]}, "adjustForTimeDifference": False},
        ohlcv_until=True,
    ),
    # Assets + AssetPairs; OHLC serves only the newest 720 bars, whatever ``since`` says.
    "kraken": Quirks(options={"adjustForTimeDifference": False}),
    # Spot symbols only, without the all-tickers call ccxt makes for fee rates; the public
    # partial book exists in depths 20 and 100 only.
    "kucoin": Quirks(
        options={
            "fetchMarkets": {"types": ["spot"], "fetchTickersFees": False},
            "adjustForTimeDifference": False,
        },
        skip_currencies=True,
        book_limits=(20, 100),
    ),
    # Advanced Trade: products (the futures list is asked too and may fail: ccxt ignores that);
    # the product list has last price and volume but no bid/ask, the per-product ticker has them.
    "coinbase": Quirks(
        options={"adjustForTimeDifference": False},
        skip_currencies=True,
        ohlcv_until=True,
        ticker_per_symbol=True,
    ),
}
EXCHANGE_OPTIONS: dict[str, dict[str, Any]] = {k: q.options for k, q in QUIRKS.items()}
"""ccxt options per exchange id (kept for callers that build their own client)."""
PLAIN_HTTP_CLOSE_WAIT_MS = 20
"""How long ccxt's close() lets closing sockets finish when no TLS is involved (ccxt: 250)."""
DEFAULT_PAGE_LIMIT = 500
"""Candles per request when ccxt does not state the exchange's maximum."""


class CcxtSourceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exchange: ExchangeId = "binance"
    """ccxt exchange id."""
    timeframe: str = "1m"
    """Bar length, in ccxt's notation (must be one the exchange serves)."""
    history_bars: Annotated[int, msgspec.Meta(ge=1)] = 500
    """Bars fetched when a symbol has none yet, and the most one fetch returns."""
    enable_rate_limit: bool = True
    """ccxt's own throttle to the exchange's published rate; keep it on against real venues."""
    api_url: str = ""
    """Replaces the scheme and host of every ccxt API URL, paths kept (a loopback server or a
    proxy); empty: ccxt's defaults."""
    timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    """ccxt's per-request timeout."""
    page_limit: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Candles asked per request; 0: the exchange's maximum as ccxt states it (set it when an
    exchange caps pages lower than ccxt believes)."""
    symbols: list[str] = msgspec.field(default_factory=list)
    """Symbols to serve (``BTCUSDT``); empty: every active spot market of the exchange."""

    def __post_init__(self) -> None:
        if self.exchange not in EXCHANGE_IDS:
            raise ValueError(f"exchange {self.exchange!r}: expected one of {list(EXCHANGE_IDS)}")
        if self.api_url and urlsplit(self.api_url).scheme not in ("http", "https"):
            raise ValueError(f"api_url {self.api_url!r}: expected an http(s) URL")


def _float(value: Any) -> float:
    """ccxt leaves missing numbers as None; we carry NaN (validation rejects it)."""
    return math.nan if value is None else float(value)


def _rebase(urls: Any, base: str) -> Any:
    """Every URL in ccxt's (possibly nested) ``urls['api']`` with its scheme and host replaced."""
    if isinstance(urls, dict):
        return {key: _rebase(value, base) for key, value in urls.items()}
    if isinstance(urls, str):
        target = urlsplit(base)
        path = target.path.rstrip("/") + urlsplit(urls).path
        return urlunsplit((target.scheme, target.netloc, path, "", ""))
    return urls


def new_exchange(
    exchange: str,
    *,
    api_url: str = "",
    enable_rate_limit: bool = True,
    timeout_ms: int = 10_000,
    credentials: Credentials | None = None,
) -> Any:
    """A ccxt.async_support client set up as QuantumTrade uses it: our options per exchange
    (spot markets only, no currency/margin lookups), optional keys, and ``api_url`` replacing
    the host of every API URL (a loopback server or a proxy)."""
    quirks = QUIRKS.get(exchange, Quirks())
    params: dict[str, Any] = {
        "enableRateLimit": enable_rate_limit,
        "timeout": timeout_ms,
        # A deep copy: ccxt keeps (and may update) the dicts it is given.
        "options": copy.deepcopy(quirks.options),
    }
    if credentials is not None:
        params["apiKey"] = credentials.api_key
        params["secret"] = credentials.secret
    client = getattr(ccxt_async, exchange)(params)
    if api_url:
        client.urls["api"] = _rebase(client.urls["api"], api_url)
        if urlsplit(api_url).scheme == "http":
            # ccxt's close() waits 250 ms for closing transports to finish (TLS shutdown needs
            # round trips); a plain TCP socket (a loopback server, a local proxy) is closed
            # within a few loop iterations, so 20 ms is plenty.
            client.timeout_on_exit = PLAIN_HTTP_CLOSE_WAIT_MS
    return client


class ExchangeSession:
    """The lifecycle a ccxt client's owner shares (``CcxtSource``, ``CcxtVenue``): ``start()``
    loads what the owner needs, ``close()`` ends ccxt's HTTP session, and ``async with``
    closes it even when ``start()`` fails."""

    _exchange: Any

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Close ccxt's HTTP session (ccxt warns about an unclosed client)."""
        await self._exchange.close()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class CcxtSource(ExchangeSession):
    """A ``Source`` over one ccxt exchange; ``start()`` loads its markets, ``close()`` ends it."""

    def __init__(
        self,
        config: CcxtSourceConfig,
        *,
        credentials: Credentials | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.name: str = config.exchange
        self.quirks: Quirks = QUIRKS.get(config.exchange, Quirks())
        self.clock: Clock = clock or WallClock()
        self._exchange: Any = new_exchange(
            config.exchange,
            api_url=config.api_url,
            enable_rate_limit=config.enable_rate_limit,
            timeout_ms=config.timeout_ms,
            credentials=credentials,
        )
        exchange = self._exchange
        if self.quirks.skip_currencies:
            # Market data needs no currency list (a venue may: new_exchange leaves it on).
            # ``has`` given to ccxt's constructor replaces the whole dict: amend the instance's.
            exchange.has = {**exchange.has, "fetchCurrencies": False}
        if config.timeframe not in (exchange.timeframes or {}):
            raise ValueError(
                f"timeframe {config.timeframe!r} is not served by {config.exchange}; "
                f"expected one of {sorted(exchange.timeframes or {})}"
            )
        self.bar_ms = int(exchange.parse_timeframe(config.timeframe)) * 1000
        features = (exchange.features or {}).get("spot") or {}
        ohlcv_features = features.get("fetchOHLCV") or {}
        self.page_limit = config.page_limit or int(
            ohlcv_features.get("limit") or DEFAULT_PAGE_LIMIT
        )
        self._unified: dict[str, str] = {}  # our name, ccxt id or unified symbol → unified
        self._ours: dict[str, str] = {}  # unified → our name
        self.requests = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the exchange's markets; raises ValueError naming configured symbols it lacks."""
        await self._load_markets()
        unknown = [s for s in self.config.symbols if s not in self._unified]
        if unknown:
            raise ValueError(f"{self.name} does not list {unknown}")
        log.info("ccxt_source_started", exchange=self.name, markets=len(self._ours))

    # --- the Source protocol --------------------------------------------------------------

    def symbols(self) -> list[str]:
        """The configured symbols, else every loaded spot market (none before ``start``)."""
        if self.config.symbols:
            return list(self.config.symbols)
        return sorted(self._ours.values())

    async def fetch_bars(self, symbol: str, since_ms: int | None, until_ms: int) -> list[Bar]:
        """Closed bars, oldest first: opened after ``since_ms`` (None: the newest
        ``history_bars``) and closed by ``until_ms``; at most ``history_bars`` (the newest).

        The exchange's rows are passed on unrepaired (validation judges them), except that ccxt
        sorts each answer by time and rows outside the asked window are dropped. Bars open at
        multiples of the bar length since the epoch (UTC), as every exchange here aligns them.
        """
        unified = await self._unified_symbol(symbol)
        bar_ms = self.bar_ms
        last_open = until_ms // bar_ms * bar_ms - bar_ms  # the newest bar closed by until_ms
        first = last_open - (self.config.history_bars - 1) * bar_ms
        if since_ms is not None:  # the first bar opened after since_ms
            first = max(first, (since_ms // bar_ms + 1) * bar_ms)
        bars: list[Bar] = []
        cursor = first
        while cursor <= last_open:
            limit = min((last_open - cursor) // bar_ms + 1, self.page_limit)
            page_last = cursor + (limit - 1) * bar_ms
            rows = await self._ohlcv_page(symbol, unified, cursor, page_last, limit)
            if not rows:  # a window without trades (or beyond what the exchange keeps)
                cursor = page_last + bar_ms
                continue
            for row in rows:
                ts = int(row[0])
                if cursor <= ts <= last_open:
                    o, h, lo, c, v = (_float(x) for x in row[1:6])
                    bars.append(Bar(ts, o, h, lo, c, v))
            newest = max(int(row[0]) for row in rows)
            if newest < cursor:  # no progress: the exchange ignores since
                break
            cursor = (newest // bar_ms + 1) * bar_ms  # the next bar's open
        return bars

    async def _ohlcv_page(
        self, symbol: str, unified: str, first: int, last: int, limit: int
    ) -> list[list[Any]]:
        """Up to ``limit`` candles opened in [first, last], as ccxt parses them.

        Where ccxt maps ``until`` to the exchange's end time, the page's window ends at the close
        of its last bar: OKX answers the *newest* bars of a window (so a window wider than the
        page would skip its oldest bars) and its end time is exclusive, Binance's inclusive; the
        bar's last millisecond is right for both.
        """
        params = {"until": last + self.bar_ms - 1} if self.quirks.ohlcv_until else {}
        with self._faults_as_unavailable("fetch_ohlcv", symbol):
            self.requests += 1
            rows: list[list[Any]] = await self._exchange.fetch_ohlcv(
                unified, self.config.timeframe, since=first, limit=limit, params=params
            )
        return rows

    async def fetch_order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        """The current book, at most ``depth`` levels a side (fewer where the exchange's public
        book is shallower: KuCoin's stops at 100)."""
        unified = await self._unified_symbol(symbol)
        limits = self.quirks.book_limits
        asked = next((n for n in limits if n >= depth), limits[-1]) if limits else depth
        with self._faults_as_unavailable("fetch_order_book", symbol):
            self.requests += 1
            book = await self._exchange.fetch_order_book(unified, asked)
        ts = book.get("timestamp")
        return OrderBook(
            symbol=symbol,
            ts_ms=int(ts) if ts is not None else self.clock.now_ns() // 1_000_000,
            bids=tuple((float(level[0]), float(level[1])) for level in book["bids"][:depth]),
            asks=tuple((float(level[0]), float(level[1])) for level in book["asks"][:depth]),
        )

    async def fetch_tickers(self, symbols: Sequence[str] | None = None) -> dict[str, Ticker]:
        """Tickers by our symbol name: of ``symbols``, or of ``symbols()`` when None."""
        wanted = list(symbols) if symbols is not None else self.symbols()
        if not self._ours:
            await self._load_markets()
        unified = [self._lookup(s) for s in wanted]
        with self._faults_as_unavailable("fetch_tickers", None):
            if self.quirks.ticker_per_symbol:
                answer = await self._tickers_one_by_one(unified)
            else:
                self.requests += 1
                answer = await self._exchange.fetch_tickers(unified or None)
        now_ms = self.clock.now_ns() // 1_000_000
        tickers: dict[str, Ticker] = {}
        for unified_symbol, ticker in answer.items():
            ours = self._ours.get(unified_symbol)
            if ours is None or (wanted and ours not in wanted):
                continue
            ts = ticker.get("timestamp")
            tickers[ours] = Ticker(
                symbol=ours,
                source=self.name,
                ts_ms=int(ts) if ts is not None else now_ms,
                bid=_float(ticker.get("bid")),
                ask=_float(ticker.get("ask")),
                last=_float(ticker.get("last")),
                base_volume=_float(ticker.get("baseVolume")),
            )
        return tickers

    # --- internals ------------------------------------------------------------------------

    async def _tickers_one_by_one(self, unified: list[str]) -> dict[str, Any]:
        """``fetch_ticker`` per symbol, concurrently (ccxt's rate limiter spaces them out).

        Every request is let finish before the first failure is raised: cancelling aiohttp
        requests in flight leaves their sockets to the garbage collector, unclosed."""
        self.requests += len(unified)
        answers = await asyncio.gather(
            *(self._exchange.fetch_ticker(u) for u in unified), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return dict(zip(unified, answers, strict=True))

    @contextmanager
    def _faults_as_unavailable(self, call: str, symbol: str | None) -> Iterator[None]:
        """ccxt's transient faults (network, timeout, 5xx, 418/429, bad answers) become
        ``SourceUnavailable`` with ccxt's message; other ccxt errors pass unchanged."""
        try:
            yield
        except ccxt_async.OperationFailed as exc:
            log.debug("ccxt_call_failed", exchange=self.name, call=call, symbol=symbol)
            raise SourceUnavailable(f"{self.name} {call}: {type(exc).__name__}: {exc}") from exc

    async def _load_markets(self) -> None:
        with self._faults_as_unavailable("load_markets", None):
            # ccxt shares one in-flight load between concurrent callers and caches the result.
            markets: dict[str, Any] = await self._exchange.load_markets()
        unified: dict[str, str] = {}
        ours: dict[str, str] = {}
        for symbol, m in markets.items():
            if not m.get("spot") or m.get("active") is False:
                continue
            name = f"{m['base']}{m['quote']}".upper()
            ours[symbol] = name
            unified[symbol] = symbol
            unified[str(m["id"])] = symbol
            unified[name] = symbol
        self._unified, self._ours = unified, ours

    async def _unified_symbol(self, symbol: str) -> str:
        if not self._ours:  # start() failed or was skipped: load now (the breaker sees faults)
            await self._load_markets()
        return self._lookup(symbol)

    def _lookup(self, symbol: str) -> str:
        try:
            return self._unified[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r} for source {self.name}") from None
