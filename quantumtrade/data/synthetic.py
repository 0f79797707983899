"""A seeded, regime-switching synthetic market that also knows the true regime of every bar.

Each symbol follows a semi-Markov chain over the four regimes: a segment lasts at least
``MIN_BARS[regime]`` plus a geometric number of extra bars, then a transition picks a different
regime (``TRANSITIONS``). Within a segment: TRENDING drifts (toward the symbol's base price),
RANGING mean-reverts around the level it started at with low volatility and volume, VOLATILE
triples the volatility, and BREAKOUT is the break itself: a squeeze of a few bars
(``synthetic_kernel.SQUEEZE_BARS``), then a jump out of it with expanding volatility and volume
(a compression that has not broken out yet is still a range). Every symbol has its own base
price, liquidity and volatility.

Generation runs in numba kernels (``synthetic_kernel``) for many symbols at once with
counter-based randomness, so bar ``k`` of a symbol depends only on (seed, symbol index, k),
never on how, when or with which other symbols it was fetched. The source keeps one row of state
per symbol (no bars): fetching forward resumes from it, fetching older bars regenerates them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.clock import Clock, ManualClock
from quantumtrade.data import synthetic_kernel as kernel
from quantumtrade.data.source import BarBatch, OrderBook, Ticker, tickers_from_books
from quantumtrade.events import Bar, Regime

REAL_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT", "ETHUSDT", "ADAUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "DOTUSDT", "AVAXUSDT",
    "LINKUSDT", "LTCUSDT", "BNBUSDT", "MATICUSDT", "ATOMUSDT", "UNIUSDT", "TRXUSDT", "ETCUSDT",
    "XLMUSDT", "NEARUSDT", "FILUSDT", "APTUSDT",
)  # fmt: skip
_REAL_PRICES = np.array(
    [
        60_000.0, 3_000.0, 0.45, 150.0, 0.6, 0.15, 7.0, 35.0, 15.0, 80.0,
        550.0, 0.7, 9.0, 8.0, 0.12, 25.0, 0.11, 5.0, 5.0, 9.0,
    ]
)  # fmt: skip

# Regime codes index this tuple (the generator emits codes as int8).
REGIMES: tuple[Regime, ...] = (Regime.TRENDING, Regime.RANGING, Regime.VOLATILE, Regime.BREAKOUT)
MIN_BARS: dict[Regime, int] = {
    regime: int(n) for regime, n in zip(REGIMES, kernel.MIN_BARS, strict=True)
}
# A fetch returns at most this multiple of history_bars (an exchange's page limit).
RETAIN_FACTOR = 2
_BOOK_SEED_TAG = 0xB00C


class SyntheticConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seed: Annotated[int, msgspec.Meta(ge=0)] = 7
    """Same seed, same market."""
    symbols: Annotated[int, msgspec.Meta(ge=1)] = 20
    """How many symbols: the real pairs in REAL_SYMBOLS order, then SYN0021USDT, …"""
    bar_ms: Annotated[int, msgspec.Meta(gt=0)] = 1000
    """Bar length."""
    history_bars: Annotated[int, msgspec.Meta(ge=1)] = 300
    """Bars of history available at start (and returned by a fetch without ``since_ms``)."""
    start_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Open time of bar 0; 0: (clock at construction) - history_bars·bar_ms, floored to bar_ms."""


def symbol_name(index: int) -> str:
    """Name of the symbol at ``index`` (0-based): a real pair, then SYN0021USDT, …"""
    if index < len(REAL_SYMBOLS):
        return REAL_SYMBOLS[index]
    return f"SYN{index + 1:04d}USDT"


class SyntheticSource:
    """A ``Source`` over the synthetic market; the clock decides which bars have closed."""

    name = "synthetic"

    def __init__(self, config: SyntheticConfig, clock: Clock) -> None:
        if config.symbols < 1 or config.bar_ms <= 0 or config.history_bars < 1 or config.seed < 0:
            raise ValueError(f"invalid SyntheticConfig: {config}")
        self.config = config
        self.clock = clock
        bar_ms = config.bar_ms
        if config.start_ms:
            self.start_ms = config.start_ms
        else:
            now_ms = clock.now_ns() // 1_000_000
            self.start_ms = max(0, (now_ms - config.history_bars * bar_ms) // bar_ms * bar_ms)
        self.retained_bars = RETAIN_FACTOR * config.history_bars
        self._names = [symbol_name(i) for i in range(config.symbols)]
        self._index = {name: i for i, name in enumerate(self._names)}
        # One row of generator state per symbol (row == symbol index); profiles drawn up front.
        self._fs, self._ints = kernel.new_state(config.symbols)
        kernel.init_rows(
            config.seed,
            np.arange(config.symbols, dtype=np.int64),
            bar_ms,
            _REAL_PRICES,
            self._fs,
            self._ints,
        )

    def symbols(self) -> list[str]:
        return list(self._names)

    def _row(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r} for source {self.name}") from None

    def _closed_bars(self, until_ms: int) -> int:
        """How many bars (indices 0..n-1) had closed by ``until_ms``."""
        return max(0, (until_ms - self.start_ms) // self.config.bar_ms)

    def _now_ms(self) -> int:
        return self.clock.now_ns() // 1_000_000

    def _window(self, since_ms: int | None, end: int) -> int:
        """Index of the first bar a fetch returns (bars opened after ``since_ms``)."""
        if since_ms is None:
            first = end - self.config.history_bars
        elif since_ms < self.start_ms:
            first = 0
        else:
            first = (since_ms - self.start_ms) // self.config.bar_ms + 1
        return max(first, 0, end - self.retained_bars)

    def _generate(
        self, rows: Sequence[int], first: Sequence[int], counts: Sequence[int]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64], NDArray[np.int8]]:
        """Bars [first[j], first[j] + counts[j]) of each row: (ts, prices, offsets, regimes)."""
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        ts = np.empty(total, dtype=np.int64)
        prices = np.empty((total, 5))
        regimes = np.empty(total, dtype=np.int8)
        kernel.generate(
            self.config.seed,
            self.config.bar_ms,
            self.start_ms,
            _REAL_PRICES,
            self._fs,
            self._ints,
            np.asarray(rows, dtype=np.int64),
            np.asarray(first, dtype=np.int64),
            offsets,
            ts,
            prices,
            regimes,
        )
        return ts, prices, offsets, regimes

    async def fetch_bar_batch(
        self, symbols: Sequence[str], since_ms: Sequence[int | None], until_ms: int
    ) -> BarBatch:
        """Every symbol's closed bars opened after its ``since_ms`` (None: the newest
        history_bars), oldest first, at most ``retained_bars`` each; symbols must be distinct."""
        if len(symbols) != len(since_ms):
            raise ValueError(f"{len(symbols)} symbols but {len(since_ms)} since_ms values")
        rows = [self._row(symbol) for symbol in symbols]
        if len(set(rows)) != len(rows):
            raise ValueError("fetch_bar_batch: symbols must be distinct")
        end = self._closed_bars(until_ms)
        first = [min(self._window(since, end), end) for since in since_ms]
        ts, prices, offsets, _ = self._generate(rows, first, [end - f for f in first])
        return BarBatch(tuple(symbols), ts, prices, offsets)

    async def fetch_bars(self, symbol: str, since_ms: int | None, until_ms: int) -> list[Bar]:
        """Closed bars opened after ``since_ms`` (None: the newest history_bars), oldest first.

        At most ``retained_bars`` are returned (like an exchange's page limit).
        """
        return (await self.fetch_bar_batch([symbol], [since_ms], until_ms)).bars(0)

    def true_regimes(self, symbol: str, first_ts_ms: int, count: int) -> list[Regime]:
        """The regimes that generated ``count`` bars from the one open at ``first_ts_ms``."""
        row = self._row(symbol)
        if first_ts_ms < self.start_ms:
            raise ValueError(f"{first_ts_ms} is before the market's first bar at {self.start_ms}")
        k = (first_ts_ms - self.start_ms) // self.config.bar_ms
        _, _, _, codes = self._generate([row], [k], [count])
        return [REGIMES[c] for c in codes.tolist()]

    def true_regime(self, symbol: str, ts_ms: int) -> Regime:
        """The regime that generated the bar open at ``ts_ms``."""
        return self.true_regimes(symbol, ts_ms, 1)[0]

    def liquidity(self, symbol: str) -> float:
        """Typical quote volume per bar (USDT)."""
        return float(self._fs[self._row(symbol), kernel.S_LIQ])

    def base_price(self, symbol: str) -> float:
        return float(self._fs[self._row(symbol), kernel.S_BASE])

    def _last_close(self, row: int, end: int) -> float:
        """Close of bar ``end - 1`` (the base price before the first bar)."""
        if end <= 0:
            return float(self._fs[row, kernel.S_BASE])
        if self._ints[row, kernel.I_NEXT] != end:
            self._generate([row], [end - 1], [1])
        return math.exp(float(self._fs[row, kernel.S_LOG_PRICE]))

    async def fetch_order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        """A book around the latest close; spread and depth follow the symbol's liquidity."""
        row = self._row(symbol)
        now_ms = self._now_ms()
        end = self._closed_bars(now_ms)
        mid = self._last_close(row, end)
        if depth <= 0:
            return OrderBook(symbol=symbol, ts_ms=now_ms, bids=(), asks=())
        # Deeper markets quote tighter: ~2 bps for BTC, tens of bps for thin pairs.
        per_bar = float(self._fs[row, kernel.S_LIQ])
        liquidity = per_bar * 1000.0 / self.config.bar_ms
        spread_bps = min(50.0, max(0.5, 10.0 / math.sqrt(liquidity / 1e5)))
        half = spread_bps / 2e4
        step = max(half, 0.5e-4)
        rng = np.random.default_rng([self.config.seed, row, end, _BOOK_SEED_TAG])
        offsets = half + step * np.arange(depth)
        quote = per_bar * 0.02 * (1.0 + 0.25 * np.arange(depth))
        bid_px = mid * np.exp(-offsets)  # stays positive however deep the book
        ask_px = 2.0 * mid - bid_px  # symmetric, so the book's mid is the last close
        bid_qty = quote * np.exp(0.3 * rng.standard_normal(depth)) / bid_px
        ask_qty = quote * np.exp(0.3 * rng.standard_normal(depth)) / ask_px
        return OrderBook(
            symbol=symbol,
            ts_ms=now_ms,
            bids=tuple(zip(bid_px.tolist(), bid_qty.tolist(), strict=True)),
            asks=tuple(zip(ask_px.tolist(), ask_qty.tolist(), strict=True)),
        )

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        """Top of each symbol's book; last = the last close."""
        return await tickers_from_books(self, [s for s in symbols if s in self._index])


def warm_up() -> None:
    """Compile (or load from numba's cache) the generator's kernels: a two-symbol market's
    state and a few of its bars (constructing the source runs them, in the caller's thread)."""
    source = SyntheticSource(SyntheticConfig(symbols=2, history_bars=4, start_ms=1), ManualClock(0))
    source._generate([0, 1], [0, 0], [4, 4])
