"""CcxtSource against OKX, Kraken, KuCoin and Coinbase: ccxt's real client for each exchange
talking to a loopback server that speaks that exchange's REST API (Binance has its own tests in
test_ccxt_source.py).

The data behind every server is real: Binance's 1 h candles of 2024 for BTC, ETH and DOGE
(``../shared/data``), and the captured BTC and ETH books of 8 Aug 2024; the test clock stands
half-way through the bar that opened at 23:00 that day, so that bar is still forming. Clients run
with ``enable_rate_limit=False`` (see test_ccxt_source.py); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import ccxt.async_support as ccxt
import msgspec
import pytest

from quantumtrade.clock import ManualClock
from quantumtrade.data.ccxt_source import CcxtSource, CcxtSourceConfig
from quantumtrade.data.datadir import data_dir, missing_data_reason
from quantumtrade.errors import SourceUnavailable
from quantumtrade.events import Bar
from tests.support.loopback_binance import BadData
from tests.support.loopback_coinbase import LoopbackCoinbase
from tests.support.loopback_exchange import Fault, LoopbackExchange, Market, day_stats, real_markets
from tests.support.loopback_kraken import LoopbackKraken
from tests.support.loopback_kucoin import LoopbackKucoin
from tests.support.loopback_okx import LoopbackOkx

BAR_MS = 3_600_000
START_MS = 1_723_158_000_000  # 2024-08-08 23:00 UTC, the forming bar's open
FOLDER = "binance-spot-1h-2024"
SYMBOLS = ["BTCUSDT", "DOGEUSDT", "ETHUSDT"]
HISTORY = 50
SERVERS: dict[str, type[LoopbackExchange]] = {
    "okx": LoopbackOkx,
    "kraken": LoopbackKraken,
    "kucoin": LoopbackKucoin,
    "coinbase": LoopbackCoinbase,
}
EXCHANGES = sorted(SERVERS)
# What each client asks while loading markets (with the source's per-exchange options).
MARKET_LOADS: dict[str, dict[str, int]] = {
    "okx": {"/api/v5/public/instruments": 1},
    "kraken": {"/0/public/Assets": 1, "/0/public/AssetPairs": 1},
    "kucoin": {"/api/v2/symbols": 1},
    "coinbase": {"/api/v3/brokerage/market/products": 2},  # spot, then futures (none here)
}


@functools.cache
def dataset() -> dict[str, Market]:
    """300 bars before START_MS and 100 after it (the servers show only those opened by now)."""
    path = data_dir()
    reason = missing_data_reason(path / "candles" / FOLDER)
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return real_markets(
        path,
        SYMBOLS,
        folder=FOLDER,
        first_ms=START_MS - 300 * BAR_MS,
        last_ms=START_MS + 100 * BAR_MS,
    )


def ms(clock: ManualClock) -> int:
    return clock.now_ns() // 1_000_000


def closed(symbol: str, now_ms: int) -> list[Bar]:
    """The dataset's bars of ``symbol`` closed by ``now_ms``, oldest first."""
    return [Bar(*row) for row in dataset()[symbol].bars if row[0] + BAR_MS <= now_ms]


def api_urls(tree: object) -> list[str]:
    if isinstance(tree, dict):
        return [u for v in tree.values() for u in api_urls(v)]
    return [tree] if isinstance(tree, str) else []


@pytest.fixture(params=EXCHANGES)
def exchange(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=(START_MS + BAR_MS // 2) * 1_000_000)


@pytest.fixture
async def server(exchange: str, clock: ManualClock) -> AsyncIterator[LoopbackExchange]:
    # The server's "now" is the test's clock: bars that have not opened yet are not served.
    # Copies of the markets: a test may edit its server's data.
    markets = {s: replace(m, bars=list(m.bars)) for s, m in dataset().items()}
    async with SERVERS[exchange](markets, interval="1h", now_ms=lambda: ms(clock)) as srv:
        yield srv


def make_config(server: LoopbackExchange, **overrides: Any) -> CcxtSourceConfig:
    fields: dict[str, Any] = {
        "exchange": server.name,
        "api_url": server.base_url,
        "timeframe": "1h",
        "history_bars": HISTORY,
        "enable_rate_limit": False,
        **overrides,
    }
    return msgspec.convert(fields, CcxtSourceConfig)


@pytest.fixture
async def source(server: LoopbackExchange, clock: ManualClock) -> AsyncIterator[CcxtSource]:
    async with CcxtSource(make_config(server), clock=clock) as src:
        yield src


# --- markets, bars ----------------------------------------------------------------------------


async def test_markets_load_with_few_requests_and_native_ids_map_to_ours(
    exchange: str, server: LoopbackExchange, source: CcxtSource
) -> None:
    assert source.name == exchange
    assert source.symbols() == SYMBOLS  # XBTUSDT / XDGUSDT / BTC-USDT are BTCUSDT, DOGEUSDT
    assert dict(server.hits) == MARKET_LOADS[exchange]
    assert all(u.startswith(server.base_url) for u in api_urls(source._exchange.urls["api"]))
    # The exchange's own id is accepted as well as ours.
    native = server.native_id(dataset()["BTCUSDT"])
    book = await source.fetch_order_book(native, 3)
    assert book.bids == tuple(dataset()["BTCUSDT"].bids[:3])


async def test_newest_history_is_the_servers_closed_bars(
    source: CcxtSource, clock: ManualClock
) -> None:
    now = ms(clock)
    for symbol in SYMBOLS:
        bars = await source.fetch_bars(symbol, None, now)
        assert bars == closed(symbol, now)[-HISTORY:]
    assert bars[-1].ts_ms == START_MS - BAR_MS  # the bar open since START_MS has not closed
    clock.set((START_MS + BAR_MS) * 1_000_000)  # now it has
    newest = await source.fetch_bars("BTCUSDT", None, ms(clock))
    assert newest[-1].ts_ms == START_MS and newest == closed("BTCUSDT", ms(clock))[-HISTORY:]


async def test_since_returns_only_bars_opened_after_it(
    source: CcxtSource, clock: ManualClock
) -> None:
    now = ms(clock)
    since = START_MS - 10 * BAR_MS
    bars = await source.fetch_bars("ETHUSDT", since, now)
    assert [b.ts_ms for b in bars] == [since + k * BAR_MS for k in range(1, 10)]
    assert bars == [b for b in closed("ETHUSDT", now) if b.ts_ms > since]
    assert await source.fetch_bars("ETHUSDT", START_MS - BAR_MS, now) == []
    old = await source.fetch_bars("ETHUSDT", START_MS - 150 * BAR_MS, now)
    assert old == closed("ETHUSDT", now)[-HISTORY:]  # capped at history_bars


async def test_history_is_paged_when_the_exchange_caps_a_page(
    exchange: str, server: LoopbackExchange, clock: ManualClock
) -> None:
    server.max_candles = 7
    config = make_config(server, history_bars=40, page_limit=7)
    async with CcxtSource(config, clock=clock) as src:
        bars = await src.fetch_bars("BTCUSDT", None, ms(clock))
    expected = closed("BTCUSDT", ms(clock))
    if exchange == "kraken":
        # Kraken keeps only its newest bars (720; 7 here, the forming one included), whatever
        # ``since`` asks: what it has arrives in one request, the older history cannot.
        assert bars == expected[-6:] and server.candle_requests == 1
    else:
        assert bars == expected[-40:]
        assert server.candle_requests == -(-40 // 7)  # 6 pages, none repeated


@pytest.mark.parametrize("exchange", ["coinbase", "kucoin", "okx"], indirect=True)
async def test_a_window_without_bars_does_not_end_paging(
    server: LoopbackExchange, clock: ManualClock
) -> None:
    # Coinbase leaves out candles without trades; a page that comes back empty is skipped.
    btc = server.state.markets["BTCUSDT"]
    gap = range(START_MS - 30 * BAR_MS, START_MS - 15 * BAR_MS, BAR_MS)
    btc.bars = [row for row in btc.bars if row[0] not in gap]
    server.max_candles = 7
    async with CcxtSource(make_config(server, history_bars=40, page_limit=7), clock=clock) as src:
        bars = await src.fetch_bars("BTCUSDT", None, ms(clock))
    expected = [b for b in closed("BTCUSDT", ms(clock))[-40:] if b.ts_ms not in gap]
    assert bars == expected and len(bars) == 25


# --- books and tickers ----------------------------------------------------------------------


async def test_order_book_levels_match_the_server(
    exchange: str, server: LoopbackExchange, source: CcxtSource, clock: ManualClock
) -> None:
    book = await source.fetch_order_book("BTCUSDT", 5)
    btc = dataset()["BTCUSDT"]
    assert book.symbol == "BTCUSDT" and book.ts_ms == ms(clock)
    assert book.bids == tuple(btc.bids[:5]) and book.asks == tuple(btc.asks[:5])
    assert book.best_bid < book.best_ask
    # A depth the exchange does not serve as such (KuCoin: 20 or 100) is cut from a deeper one.
    doge = await source.fetch_order_book("DOGEUSDT", 30)
    bids, asks = server.state.book("DOGEUSDT", 30)
    assert doge.bids == tuple(bids) and doge.asks == tuple(asks) and len(doge.bids) == 30
    deep = await source.fetch_order_book("DOGEUSDT", 150)  # KuCoin's public book stops at 100
    assert len(deep.bids) == len(deep.asks) == (100 if exchange == "kucoin" else 150)


async def test_tickers_match_the_server(
    exchange: str, server: LoopbackExchange, source: CcxtSource, clock: ManualClock
) -> None:
    tickers = await source.fetch_tickers()
    assert sorted(tickers) == SYMBOLS
    for symbol, ticker in tickers.items():
        bids, asks = server.state.book(symbol, 1)
        stats = day_stats(server.state, symbol)
        forming = next(row for row in dataset()[symbol].bars if row[0] == START_MS)
        assert ticker.source == exchange and ticker.symbol == symbol
        assert (ticker.bid, ticker.ask, ticker.last) == (bids[0][0], asks[0][0], forming[4])
        assert ticker.ts_ms == ms(clock)
        if exchange == "coinbase":  # the per-product ticker (the one with bid/ask) has no volume
            assert math.isnan(ticker.base_volume)
        else:
            assert ticker.base_volume == stats["volume"] > 0
    only_eth = await source.fetch_tickers(["ETHUSDT"])
    assert list(only_eth) == ["ETHUSDT"] and only_eth["ETHUSDT"] == tickers["ETHUSDT"]


# --- faults ---------------------------------------------------------------------------------

FAULTS: dict[str, tuple[Fault, str]] = {
    "http_500": (Fault(status=500), "ExchangeNotAvailable"),
    "http_503": (Fault(status=503), "ExchangeNotAvailable"),
    "http_429": (Fault(status=429), "RateLimitExceeded|DDoSProtection"),
    "dropped": (Fault(drop=True), "ExchangeNotAvailable"),
}


@pytest.mark.parametrize("fault_name", sorted(FAULTS))
async def test_exchange_faults_become_source_unavailable(
    fault_name: str, server: LoopbackExchange, source: CcxtSource, clock: ManualClock
) -> None:
    fault, ccxt_error = FAULTS[fault_name]
    server.set_fault(fault)
    with pytest.raises(SourceUnavailable, match=ccxt_error) as info:
        await source.fetch_bars("BTCUSDT", None, ms(clock))
    assert info.value.__cause__ is not None  # ccxt's exception, its message kept
    with pytest.raises(SourceUnavailable, match=ccxt_error):
        await source.fetch_order_book("BTCUSDT")
    with pytest.raises(SourceUnavailable, match=ccxt_error):
        await source.fetch_tickers()
    server.clear_faults()
    assert len(await source.fetch_bars("BTCUSDT", None, ms(clock))) == HISTORY  # and recovers


async def test_a_refused_request_is_not_an_outage(
    server: LoopbackExchange, source: CcxtSource, clock: ManualClock
) -> None:
    # A 4xx with the exchange's error body says our request was wrong, not that the exchange is
    # down: ccxt's error passes unchanged (the orchestrator still counts it as a failure).
    server.set_candle_fault(Fault(status=400))
    with pytest.raises(ccxt.ExchangeError) as info:
        await source.fetch_bars("BTCUSDT", None, ms(clock))
    assert not isinstance(info.value, SourceUnavailable)
    assert len((await source.fetch_order_book("BTCUSDT", 5)).bids) == 5  # other routes answer


async def test_a_slow_exchange_is_a_request_timeout(
    server: LoopbackExchange, clock: ManualClock
) -> None:
    async with CcxtSource(make_config(server, timeout_ms=100), clock=clock) as src:
        server.set_candle_fault(Fault(latency_ms=2_000))
        with pytest.raises(SourceUnavailable, match="RequestTimeout"):
            await src.fetch_bars("BTCUSDT", None, ms(clock))


async def test_a_dead_exchange_fails_start(exchange: str, clock: ManualClock) -> None:
    async with SERVERS[exchange](dataset(), interval="1h") as gone:
        config = make_config(gone)
    with pytest.raises(SourceUnavailable, match="load_markets"):
        async with CcxtSource(config, clock=clock):
            pass  # pragma: no cover


async def test_bad_candles_reach_the_caller_for_validation(
    server: LoopbackExchange, source: CcxtSource, clock: ManualClock
) -> None:
    now = ms(clock)
    expected = closed("BTCUSDT", now)[-HISTORY:]
    server.set_candle_fault(Fault(bad_data=frozenset({BadData.NAN, BadData.NEGATIVE})))
    bars = await source.fetch_bars("BTCUSDT", None, now)
    # The first row's close is NaN, the second's open and low negative: passed on, not dropped.
    assert len(bars) == HISTORY and [b.ts_ms for b in bars] == [b.ts_ms for b in expected]
    assert math.isnan(bars[0].close) and bars[0].open == expected[0].open
    assert bars[1].open == -expected[1].open and bars[1].low == -expected[1].low
    assert bars[2:] == expected[2:]

    server.set_candle_fault(Fault(bad_data=frozenset({BadData.DUPLICATE})))
    twice = await source.fetch_bars("ETHUSDT", None, now)
    counts = Counter(b.ts_ms for b in twice)
    assert set(counts) == {b.ts_ms for b in closed("ETHUSDT", now)[-HISTORY:]}
    assert counts.most_common(1)[0][1] == 2  # the duplicate row is there for validation to see
