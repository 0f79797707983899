"""CcxtSource end to end: ccxt's real binance client against a loopback Binance server.

Nothing here leaves 127.0.0.1. Every client is built with ``enable_rate_limit=False``: ccxt's
throttle paces binance at ~48 requests/s of wall time, which would only slow these tests down
(the loopback server has no limit to respect); production keeps it on (the config default).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import pytest

from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data.ccxt_source import CcxtSource, CcxtSourceConfig, Ticker
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator, OrchestratorConfig
from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource
from quantumtrade.data.validation import DUPLICATE_TIMESTAMP, NON_FINITE, NON_POSITIVE_PRICE
from quantumtrade.errors import SourceUnavailable
from quantumtrade.events import (
    Bar,
    BarBlock,
    BarsUpdated,
    BreakerState,
    CircuitBreakerChanged,
    DataRejected,
    Event,
    SourceFailed,
    TickerUpdated,
)
from tests.support.loopback_binance import (
    ALL_BAD_DATA,
    BadData,
    Fault,
    LoopbackBinance,
    Market,
    markets_from_source,
)

BAR_MS = 60_000
START_MS = 28_333_334 * BAR_MS  # a minute boundary near the ManualClock's default epoch
DATASET_BARS = 400  # 200 minutes of history before START_MS and 200 after it
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KLINES = "/api/v3/klines"
HISTORY = 50
COOLDOWN_MS = 300_000
E = TypeVar("E", bound=Event)


def ms(clock: ManualClock) -> int:
    return clock.now_ns() // 1_000_000


def last_closed_open(now_ms: int) -> int:
    return now_ms // BAR_MS * BAR_MS - BAR_MS


def api_urls(tree: object) -> list[str]:
    """Every URL in ccxt's (nested) ``urls['api']``."""
    if isinstance(tree, dict):
        return [u for v in tree.values() for u in api_urls(v)]
    return [tree] if isinstance(tree, str) else []


def as_bars(m: Market) -> list[Bar]:
    return [Bar(*row) for row in m.bars]


@pytest.fixture
def clock() -> ManualClock:
    """Half-way through the bar that opened at START_MS (so it is still forming)."""
    return ManualClock(start_ns=(START_MS + 30_000) * 1_000_000)


@pytest.fixture
async def markets() -> dict[str, Market]:
    """The synthetic market's first 400 one-minute bars and books, served by the loopback."""
    end_ms = START_MS + (DATASET_BARS // 2) * BAR_MS
    seed_clock = ManualClock(start_ns=end_ms * 1_000_000)
    synthetic = SyntheticSource(
        SyntheticConfig(
            symbols=len(SYMBOLS),
            bar_ms=BAR_MS,
            history_bars=DATASET_BARS,
            start_ms=START_MS - (DATASET_BARS // 2) * BAR_MS,
        ),
        seed_clock,
    )
    assert synthetic.symbols() == SYMBOLS
    return await markets_from_source(synthetic, SYMBOLS, end_ms, depth=20)


@pytest.fixture
async def server(markets: dict[str, Market], clock: ManualClock) -> AsyncIterator[LoopbackBinance]:
    # The server's "now" is the test's clock: bars that have not opened yet are not served.
    async with LoopbackBinance(markets, now_ms=lambda: ms(clock)) as srv:
        yield srv


def make_config(server: LoopbackBinance, **overrides: object) -> CcxtSourceConfig:
    fields: dict[str, object] = {
        "api_url": server.base_url,
        "history_bars": HISTORY,
        "enable_rate_limit": False,  # see the module docstring
        **overrides,
    }
    return msgspec.convert(fields, CcxtSourceConfig)


@pytest.fixture
async def source(server: LoopbackBinance, clock: ManualClock) -> AsyncIterator[CcxtSource]:
    async with CcxtSource(make_config(server), clock=clock) as src:
        yield src


# --- the source on its own ----------------------------------------------------------------


async def test_markets_load_once_and_every_api_url_is_the_loopback(
    server: LoopbackBinance, source: CcxtSource
) -> None:
    assert source.name == "binance"
    assert source.symbols() == SYMBOLS
    assert server.requests == {"/api/v3/exchangeInfo": 1}

    api = source._exchange.urls["api"]
    assert api["public"] == f"{server.base_url}/api/v3"
    assert all(u.startswith(server.base_url + "/") for u in api_urls(api))


async def test_configured_symbols_are_checked_at_start(server: LoopbackBinance) -> None:
    async with CcxtSource(make_config(server, symbols=["ETHUSDT"])) as src:
        assert src.symbols() == ["ETHUSDT"]
    with pytest.raises(ValueError, match="NOPEUSDT"):
        async with CcxtSource(make_config(server, symbols=["ETHUSDT", "NOPEUSDT"])):
            pass


async def test_newest_history_bars_are_closed_bars_only(
    markets: dict[str, Market], source: CcxtSource, clock: ManualClock
) -> None:
    now = ms(clock)
    bars = await source.fetch_bars("BTCUSDT", None, now)
    expected = [b for b in as_bars(markets["BTCUSDT"]) if b.ts_ms + BAR_MS <= now][-HISTORY:]
    assert bars == expected
    assert bars[-1].ts_ms == START_MS - BAR_MS  # the bar open since START_MS has not closed
    # The same at the instant that bar closes, and with the ccxt id or unified symbol.
    clock.set((START_MS + BAR_MS) * 1_000_000)
    newest = await source.fetch_bars("BTC/USDT", None, ms(clock))
    assert newest[-1].ts_ms == START_MS and len(newest) == HISTORY


async def test_since_returns_only_bars_opened_after_it(
    markets: dict[str, Market], source: CcxtSource, clock: ManualClock
) -> None:
    now = ms(clock)
    since = START_MS - 10 * BAR_MS
    bars = await source.fetch_bars("ETHUSDT", since, now)
    assert [b.ts_ms for b in bars] == [since + k * BAR_MS for k in range(1, 10)]
    assert bars == [b for b in as_bars(markets["ETHUSDT"]) if since < b.ts_ms < START_MS]
    assert await source.fetch_bars("ETHUSDT", START_MS - BAR_MS, now) == []
    # A since older than the history window is capped at the newest history_bars.
    old = await source.fetch_bars("ETHUSDT", START_MS - 150 * BAR_MS, now)
    assert len(old) == HISTORY and old[-1].ts_ms == START_MS - BAR_MS


async def test_history_is_paged_when_the_exchange_caps_a_page(
    markets: dict[str, Market], server: LoopbackBinance, clock: ManualClock
) -> None:
    server.state.max_klines_limit = 7  # Binance caps at 1000; a small cap makes paging visible
    async with CcxtSource(make_config(server, history_bars=120), clock=clock) as src:
        bars = await src.fetch_bars("BTCUSDT", None, ms(clock))
    expected = [b for b in as_bars(markets["BTCUSDT"]) if b.ts_ms < START_MS][-120:]
    assert bars == expected
    assert server.requests[KLINES] == -(-120 // 7)  # 18 pages, none repeated


async def test_order_book_and_tickers(
    markets: dict[str, Market], source: CcxtSource, clock: ManualClock
) -> None:
    book = await source.fetch_order_book("BTCUSDT", 5)
    m = markets["BTCUSDT"]
    assert book.symbol == "BTCUSDT" and book.ts_ms == ms(clock)  # binance spot sends no time
    assert book.bids == tuple(m.bids[:5]) and book.asks == tuple(m.asks[:5])
    assert book.best_bid < book.best_ask

    tickers = await source.fetch_tickers()
    assert sorted(tickers) == SYMBOLS
    btc = tickers["BTCUSDT"]
    assert isinstance(btc, Ticker) and btc.source == "binance"
    forming = next(row for row in m.bars if row[0] == START_MS)
    assert (btc.bid, btc.ask, btc.last) == (m.bids[0][0], m.asks[0][0], forming[4])
    assert btc.base_volume > 0
    only_eth = await source.fetch_tickers(["ETHUSDT"])
    assert list(only_eth) == ["ETHUSDT"]
    event = only_eth["ETHUSDT"].to_event(clock.now_ns())
    assert isinstance(event, TickerUpdated) and event.bid == markets["ETHUSDT"].bids[0][0]


async def test_unknown_symbol_is_a_key_error(source: CcxtSource, clock: ManualClock) -> None:
    with pytest.raises(KeyError, match="DOGEUSDT"):
        await source.fetch_bars("DOGEUSDT", None, ms(clock))


FAULTS: dict[str, tuple[Fault, str]] = {
    "http_500": (Fault(status=500), "ExchangeNotAvailable"),
    "http_502": (Fault(status=502), "ExchangeNotAvailable"),
    "http_503": (Fault(status=503), "ExchangeNotAvailable"),
    "http_429": (Fault(status=429), "DDoSProtection"),
    "http_418": (Fault(status=418), "DDoSProtection"),
    "dropped": (Fault(drop=True), "ExchangeNotAvailable"),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
async def test_exchange_faults_become_source_unavailable(
    name: str, server: LoopbackBinance, source: CcxtSource, clock: ManualClock
) -> None:
    fault, ccxt_error = FAULTS[name]
    server.set_fault(fault)
    with pytest.raises(SourceUnavailable, match=ccxt_error) as info:
        await source.fetch_bars("BTCUSDT", None, ms(clock))
    assert info.value.__cause__ is not None  # ccxt's exception, message kept
    with pytest.raises(SourceUnavailable):
        await source.fetch_order_book("BTCUSDT")
    with pytest.raises(SourceUnavailable):
        await source.fetch_tickers()
    if fault.status == 429:
        assert "-1003" in str(info.value)  # Binance's error body is in the message


async def test_a_slow_exchange_is_a_request_timeout(
    server: LoopbackBinance, clock: ManualClock
) -> None:
    async with CcxtSource(make_config(server, timeout_ms=100), clock=clock) as src:
        server.set_fault(Fault(latency_ms=2_000), KLINES)
        with pytest.raises(SourceUnavailable, match="RequestTimeout"):
            await src.fetch_bars("BTCUSDT", None, ms(clock))


async def test_start_against_a_dead_exchange_fails_and_closes_the_client(
    markets: dict[str, Market],
) -> None:
    async with LoopbackBinance(markets) as gone:
        config = make_config(gone)
    with pytest.raises(SourceUnavailable, match="load_markets"):
        async with CcxtSource(config):
            pass  # pragma: no cover


async def test_out_of_order_rows_are_sorted_by_ccxt(
    markets: dict[str, Market], server: LoopbackBinance, source: CcxtSource, clock: ManualClock
) -> None:
    server.set_fault(Fault(bad_data=frozenset({BadData.OUT_OF_ORDER})), KLINES)
    bars = await source.fetch_bars("BTCUSDT", None, ms(clock))
    # ccxt's parse_ohlcvs sorts every answer by time, so the swap never reaches validation.
    assert bars == [b for b in as_bars(markets["BTCUSDT"]) if b.ts_ms < START_MS][-HISTORY:]


def test_config_is_strict() -> None:
    with pytest.raises(msgspec.ValidationError, match="exchange"):
        msgspec.convert({"exchange": "ftx"}, CcxtSourceConfig)
    with pytest.raises(msgspec.ValidationError, match="api_key"):
        msgspec.convert({"api_key": "x"}, CcxtSourceConfig)
    with pytest.raises(ValueError, match="timeframe"):
        CcxtSource(CcxtSourceConfig(timeframe="7m"))
    assert CcxtSourceConfig().enable_rate_limit is True


# --- wired into the orchestrator ----------------------------------------------------------


@dataclass
class Rig:
    clock: ManualClock
    server: LoopbackBinance
    source: CcxtSource
    state: MarketState
    orch: Orchestrator
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def stored(self) -> list[tuple[str, BarBlock]]:
        """(symbol, bars) of every ``BarsUpdated``, in order (an event holds many symbols)."""
        return [pair for e in self.of(BarsUpdated) for pair in e.blocks()]

    async def tick(self, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)
        self.orch.refresh_due()
        await self.orch.join()

    def breaker(self) -> str:
        state: str = self.orch.metrics()["breakers"]["binance"]["state"]
        return state


@pytest.fixture
async def rig(
    server: LoopbackBinance, source: CcxtSource, clock: ManualClock
) -> AsyncIterator[Rig]:
    bus = EventBus(clock=clock)
    state = MarketState(SYMBOLS, capacity=500)
    orch = Orchestrator(
        bus=bus,
        clock=clock,
        state=state,
        sources={source.name: source},
        # One worker: the failures arrive in a known order, so the breaker opens on the third.
        config=OrchestratorConfig(max_workers=1, fetch_timeout_ms=200),
        breaker_config=BreakerConfig(failure_threshold=3, cooldown_ms=COOLDOWN_MS),
    )
    r = Rig(clock, server, source, state, orch)
    for kind in (BarsUpdated, DataRejected, SourceFailed, CircuitBreakerChanged):
        bus.subscribe(kind, r.events.append)
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        orch.start(tg)
        yield r
        await orch.stop()
        await bus.stop()


async def test_bars_flow_from_the_exchange_into_market_state(rig: Rig) -> None:
    await rig.tick()
    assert [rig.state.length(s) for s in SYMBOLS] == [HISTORY, HISTORY]
    assert rig.state.last_ts_ms("BTCUSDT") == START_MS - BAR_MS
    await rig.tick(60)  # the bar open since START_MS has closed
    assert rig.state.last_ts_ms("BTCUSDT") == START_MS
    assert all(len(b) == 1 for _, b in rig.stored()[2:])
    book = await rig.orch.order_book("ETHUSDT")
    assert book is not None and book.symbol == "ETHUSDT" and len(book.bids) == 20
    assert rig.orch.health()["status"] == "ok"


ORCHESTRATOR_FAULTS: dict[str, Fault] = {
    # Slower than the orchestrator's fetch_timeout_ms (200) but inside ccxt's own timeout.
    "timeout": Fault(latency_ms=500),
    "dropped": Fault(drop=True),
    "http_500": Fault(status=500),
    "http_502": Fault(status=502),
    "http_503": Fault(status=503),
    "http_429": Fault(status=429),
    "http_418": Fault(status=418),
}


@pytest.mark.parametrize("name", sorted(ORCHESTRATOR_FAULTS))
async def test_a_failing_exchange_opens_the_breaker_then_recovers(name: str, rig: Rig) -> None:
    await rig.tick()
    assert rig.breaker() == "CLOSED"
    rig.server.set_fault(ORCHESTRATOR_FAULTS[name], KLINES)

    await rig.tick(60)  # BTCUSDT and ETHUSDT fail: two consecutive failures
    assert rig.breaker() == "CLOSED" and rig.of(CircuitBreakerChanged) == []
    await rig.tick(60)  # the third failure opens it; ETHUSDT is skipped without a request
    opened = rig.of(CircuitBreakerChanged)
    assert [(e.previous, e.state) for e in opened] == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert opened[0].name == "binance" and opened[0].failures == 3
    failed = rig.of(SourceFailed)
    assert len(failed) == 3 and all(e.source == "binance" for e in failed)
    if name == "timeout":
        assert rig.orch.metrics()["timeouts"] == 3
        assert failed[0].error == "bars: timeout after 200 ms"
    else:
        assert all(
            e.error.startswith("bars: SourceUnavailable: binance fetch_ohlcv") for e in failed
        )
    assert rig.orch.stale_symbols == SYMBOLS
    metrics = rig.orch.metrics()
    assert metrics["stale"] == SYMBOLS and metrics["breakers"]["binance"]["state"] == "OPEN"
    assert rig.orch.health()["status"] == "degraded"

    # While open, refreshing costs the exchange nothing.
    before = sum(rig.server.requests.values())
    skipped = metrics["skipped_open"]
    await rig.tick(60)
    assert sum(rig.server.requests.values()) == before
    assert rig.orch.metrics()["skipped_open"] == skipped + 2

    # The exchange recovers; after the cool-down one probe closes the breaker.
    rig.server.clear_faults()
    rig.events.clear()
    await rig.tick(COOLDOWN_MS / 1000)
    assert [(e.previous, e.state) for e in rig.of(CircuitBreakerChanged)] == [
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert rig.breaker() == "CLOSED" and rig.orch.stale_symbols == []
    newest = last_closed_open(ms(rig.clock))
    assert [rig.state.last_ts_ms(s) for s in SYMBOLS] == [newest, newest]
    # The bars missed while the exchange was down arrive in one catch-up fetch, with no gap.
    missed = (newest - (START_MS - BAR_MS)) // BAR_MS
    assert [rig.state.length(s) for s in SYMBOLS] == [HISTORY + missed] * 2
    assert sorted(s for s, _ in rig.stored()) == SYMBOLS
    assert rig.orch.health()["status"] == "ok"


async def test_bad_klines_are_rejected_by_reason_and_the_worker_survives(rig: Rig) -> None:
    await rig.tick()
    last = rig.state.last_ts_ms("BTCUSDT")
    assert last is not None
    rig.server.set_fault(Fault(bad_data=ALL_BAD_DATA), KLINES)
    rig.events.clear()
    await rig.tick(5 * 60)  # five new closed bars per symbol, corrupted on the way
    rejected = rig.of(DataRejected)
    assert sorted({e.reason for e in rejected}) == sorted(
        [NON_FINITE, NON_POSITIVE_PRICE, DUPLICATE_TIMESTAMP]
    )
    # Per symbol: the answer for bars 1-5 has bar 1's close NaN, bar 2 negative and bar 3 twice;
    # ccxt trims it to the 5 rows asked for, so bar 5 is asked for again and that one-row
    # answer is corrupted too (its close is NaN). Bars 3 and 4 are kept.
    assert rig.orch.metrics()["rejects"] == {
        NON_FINITE: 4,
        NON_POSITIVE_PRICE: 2,
        DUPLICATE_TIMESTAMP: 2,
    }
    assert [len(b) for _, b in rig.stored()] == [2, 2]
    assert rig.state.last_ts_ms("BTCUSDT") == last + 4 * BAR_MS
    assert rig.breaker() == "CLOSED" and rig.of(SourceFailed) == []  # bad data is no outage

    rig.server.clear_faults()
    await rig.tick(60)  # bar 5 (rejected before) and bar 6 arrive clean
    assert rig.state.last_ts_ms("BTCUSDT") == last + 6 * BAR_MS
    assert rig.state.length("BTCUSDT") == HISTORY + 4
    metrics = rig.orch.metrics()
    assert metrics["workers_running"] == 1 and metrics["crashes"] == 0


@pytest.mark.parametrize("exchange", ["binance", "coinbase", "kraken", "kucoin", "okx"])
def test_api_url_replaces_every_host_and_keeps_the_paths(exchange: str) -> None:
    base = "http://127.0.0.1:9/proxy"
    src = CcxtSource(CcxtSourceConfig(exchange=exchange, api_url=base))  # type: ignore[arg-type]

    found = api_urls(src._exchange.urls["api"])
    assert found and all(u.startswith(base) and "{hostname}" not in u for u in found)
    assert src.name == exchange and src.page_limit >= 100 and src.bar_ms == BAR_MS
    assert src.symbols() == []  # no markets until start()
