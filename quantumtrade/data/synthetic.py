"""A seeded, regime-switching synthetic market that also knows the true regime of every bar.

Each symbol follows a semi-Markov chain over the four regimes (a segment lasts at least
``MIN_BARS[regime]``, then a transition picks a different regime) and its own numpy Generator
seeded from (seed, symbol index). Bars are generated one regime segment at a time, lazily, up to
the requested time, so bar ``k`` of a symbol depends only on (seed, symbol index, k), never on
how or when it was fetched. Only the newest ``retained_bars`` bars are cached; the generator
state carries on, so later bars stay identical.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.clock import Clock
from quantumtrade.data.source import OrderBook
from quantumtrade.events import Bar, Regime

REAL_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT", "ETHUSDT", "ADAUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "DOTUSDT", "AVAXUSDT",
    "LINKUSDT", "LTCUSDT", "BNBUSDT", "MATICUSDT", "ATOMUSDT", "UNIUSDT", "TRXUSDT", "ETCUSDT",
    "XLMUSDT", "NEARUSDT", "FILUSDT", "APTUSDT",
)  # fmt: skip
_REAL_PRICES: tuple[float, ...] = (
    60_000.0, 3_000.0, 0.45, 150.0, 0.6, 0.15, 7.0, 35.0, 15.0, 80.0,
    550.0, 0.7, 9.0, 8.0, 0.12, 25.0, 0.11, 5.0, 5.0, 9.0,
)  # fmt: skip

# Regime codes index this tuple (the cache stores codes as int8).
REGIMES: tuple[Regime, ...] = (Regime.TRENDING, Regime.RANGING, Regime.VOLATILE, Regime.BREAKOUT)
MIN_BARS: dict[Regime, int] = {
    Regime.TRENDING: 30,
    Regime.RANGING: 30,
    Regime.VOLATILE: 30,
    Regime.BREAKOUT: 15,
}
# Mean extra bars beyond the minimum (geometric), and a cap that bounds one segment's size.
_EXTRA_MEAN = (40, 40, 25, 10)
_EXTRA_CAP = 200
# Next-regime probabilities (rows: from, columns: to, in REGIMES order); the diagonal is zero
# because a segment's own length already encodes how long a regime persists.
_TRANSITIONS = np.array(
    [
        [0.00, 0.45, 0.30, 0.25],  # TRENDING → mostly consolidates
        [0.35, 0.00, 0.25, 0.40],  # RANGING → often breaks out
        [0.40, 0.50, 0.00, 0.10],  # VOLATILE → calms down
        [0.60, 0.10, 0.30, 0.00],  # BREAKOUT → usually becomes a trend
    ]
)
# Bars kept per symbol, as a multiple of history_bars (older ones are dropped).
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


def _toward_base(log_price: float, log_base: float, u: float) -> float:
    """A direction (+1/-1) biased back toward the base price, so prices stay in a sane band."""
    p_up = 1.0 / (1.0 + math.exp(2.0 * (log_price - log_base)))
    return 1.0 if u < p_up else -1.0


def _mean_revert(
    level: float, phi: float, scale: float, eps: NDArray[np.float64]
) -> NDArray[np.float64]:
    """AR(1) log prices around ``level`` (x_t = phi·x_{t-1} + scale·eps_t, x_{-1} = 0)."""
    out = np.empty(eps.shape[0])
    x = 0.0
    for i, e in enumerate(eps.tolist()):
        x = phi * x + scale * e
        out[i] = level + x
    return out


class _Path:
    """One symbol's generator state and its cache of the newest generated bars."""

    __slots__ = (
        "base_price",
        "close",
        "first_index",
        "high",
        "index",
        "liquidity",
        "log_base",
        "log_price",
        "low",
        "next_index",
        "next_regime",
        "open",
        "regime",
        "rng",
        "sigma",
        "volume",
    )

    def __init__(self, seed: int, index: int, bar_ms: int) -> None:
        self.index = index
        self.rng = np.random.default_rng([seed, index])
        rng = self.rng
        # The symbol's profile comes first from its own stream, so it never depends on bars.
        if index < len(_REAL_PRICES):
            self.base_price = _REAL_PRICES[index] * math.exp(0.05 * rng.standard_normal())
            per_second = 250_000.0 / float(index + 1) ** 1.2
        else:
            self.base_price = float(10.0 ** rng.uniform(-1.5, 2.5))
            per_second = float(10.0 ** rng.uniform(2.5, 4.0))
        self.liquidity: float = per_second * math.exp(0.2 * rng.standard_normal()) * bar_ms / 1000.0
        # Per-bar volatility of log price in a calm trend; smaller pairs move more.
        self.sigma: float = (
            0.0012 * math.exp(0.25 * rng.standard_normal()) * (1.0 + 0.02 * min(index, 40))
        )
        self.log_base = math.log(self.base_price)
        self.log_price = self.log_base
        self.next_regime = int(rng.integers(len(REGIMES)))
        self.next_index = 0
        self.first_index = 0
        empty = np.empty(0)
        self.open = self.high = self.low = self.close = self.volume = empty
        self.regime = np.empty(0, dtype=np.int8)

    def ensure(self, upto: int, keep: int) -> None:
        """Generate until bars [0, upto) exist, keeping at most the ``keep`` newest before upto."""
        while self.next_index < upto:
            self._segment()
            self.trim(upto - keep)

    def trim(self, oldest: int) -> None:
        drop = oldest - self.first_index
        if drop <= 0:
            return
        self.open, self.high, self.low = self.open[drop:], self.high[drop:], self.low[drop:]
        self.close, self.volume = self.close[drop:], self.volume[drop:]
        self.regime = self.regime[drop:]
        self.first_index = oldest

    def _segment(self) -> None:
        """Generate one regime segment (vectorised) and append it to the cache."""
        rng = self.rng
        code = self.next_regime
        regime = REGIMES[code]
        n = MIN_BARS[regime] + min(
            int(rng.geometric(1.0 / (_EXTRA_MEAN[code] + 1))) - 1, _EXTRA_CAP
        )
        eps = rng.standard_normal(n)
        wicks = np.abs(rng.standard_normal((2, n)))
        noise = rng.standard_normal(n)
        u = float(rng.random())
        strength = float(rng.uniform(0.15, 0.35))
        jump = float(rng.uniform(6.0, 10.0))
        sigma, lp = self.sigma, self.log_price
        vol = np.full(n, sigma)
        mult = np.ones(n)
        if regime is Regime.TRENDING:
            drift = _toward_base(lp, self.log_base, u) * strength * sigma
            log_close = lp + np.cumsum(drift + sigma * eps)
            mult *= 1.1
        elif regime is Regime.RANGING:
            log_close = _mean_revert(lp, 0.85, 0.45 * sigma, eps)
            vol *= 0.45
            mult *= 0.6
        elif regime is Regime.VOLATILE:
            log_close = lp + np.cumsum(3.0 * sigma * eps)
            vol *= 3.0
            mult *= 1.8
        else:  # BREAKOUT: a compressed range, then a jump out of it with expanding vol/volume
            m = max(5, (2 * n) // 5)
            side = _toward_base(lp, self.log_base, u)
            log_close = np.empty(n)
            log_close[:m] = _mean_revert(lp, 0.7, 0.3 * sigma, eps[:m])
            moves = side * 0.5 * sigma + 2.0 * sigma * eps[m:]
            moves[0] = side * jump * sigma
            log_close[m:] = log_close[m - 1] + np.cumsum(moves)
            vol[:m] *= 0.3
            vol[m:] *= np.linspace(2.0, 3.0, n - m)
            mult[:m] = 0.5
            mult[m:] = np.linspace(2.5, 3.5, n - m)
        log_open = np.empty(n)
        log_open[0] = lp
        log_open[1:] = log_close[:-1]
        close = np.exp(log_close)
        open_ = np.exp(log_open)
        high = np.maximum(open_, close) * np.exp(0.5 * vol * wicks[0])
        low = np.minimum(open_, close) * np.exp(-0.5 * vol * wicks[1])
        volume = self.liquidity / close * mult * np.exp(0.35 * noise - 0.06)
        self.open = np.concatenate((self.open, open_))
        self.high = np.concatenate((self.high, high))
        self.low = np.concatenate((self.low, low))
        self.close = np.concatenate((self.close, close))
        self.volume = np.concatenate((self.volume, volume))
        self.regime = np.concatenate((self.regime, np.full(n, code, dtype=np.int8)))
        self.log_price = float(log_close[-1])
        self.next_index += n
        self.next_regime = int(rng.choice(len(REGIMES), p=_TRANSITIONS[code]))


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
        self._paths: dict[int, _Path] = {}

    def symbols(self) -> list[str]:
        return list(self._names)

    def _path(self, symbol: str) -> _Path:
        try:
            index = self._index[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r} for source {self.name}") from None
        path = self._paths.get(index)
        if path is None:
            path = self._paths[index] = _Path(self.config.seed, index, self.config.bar_ms)
        return path

    def _closed_bars(self, until_ms: int) -> int:
        """How many bars (indices 0..n-1) had closed by ``until_ms``."""
        return max(0, (until_ms - self.start_ms) // self.config.bar_ms)

    def _now_ms(self) -> int:
        return self.clock.now_ns() // 1_000_000

    async def fetch_bars(self, symbol: str, since_ms: int | None, until_ms: int) -> list[Bar]:
        """Closed bars opened after ``since_ms`` (None: the newest history_bars), oldest first.

        At most ``retained_bars`` are returned: older ones are no longer kept.
        """
        path = self._path(symbol)
        bar_ms, start_ms = self.config.bar_ms, self.start_ms
        end = self._closed_bars(until_ms)
        if since_ms is None:
            first = end - self.config.history_bars
        elif since_ms < start_ms:
            first = 0
        else:
            first = (since_ms - start_ms) // bar_ms + 1
        first = max(first, 0, end - self.retained_bars)
        if first >= end:
            return []
        path.ensure(end, self.retained_bars)
        path.trim(end - self.retained_bars)
        a, b = first - path.first_index, end - path.first_index
        return [
            Bar(start_ms + k * bar_ms, o, h, lo, c, v)
            for k, o, h, lo, c, v in zip(
                range(first, end),
                path.open[a:b].tolist(),
                path.high[a:b].tolist(),
                path.low[a:b].tolist(),
                path.close[a:b].tolist(),
                path.volume[a:b].tolist(),
                strict=True,
            )
        ]

    def true_regime(self, symbol: str, ts_ms: int) -> Regime:
        """The regime that generated the bar open at ``ts_ms`` (within the retained history)."""
        path = self._path(symbol)
        if ts_ms < self.start_ms:
            raise ValueError(f"{ts_ms} is before the market's first bar at {self.start_ms}")
        k = (ts_ms - self.start_ms) // self.config.bar_ms
        if k < path.first_index:
            raise ValueError(f"bar {k} of {symbol} is older than the retained history")
        path.ensure(k + 1, self.retained_bars)
        return REGIMES[int(path.regime[k - path.first_index])]

    def liquidity(self, symbol: str) -> float:
        """Typical quote volume per bar (USDT)."""
        return self._path(symbol).liquidity

    def base_price(self, symbol: str) -> float:
        return self._path(symbol).base_price

    async def fetch_order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        """A book around the latest close; spread and depth follow the symbol's liquidity."""
        path = self._path(symbol)
        now_ms = self._now_ms()
        end = self._closed_bars(now_ms)
        if end > 0:
            path.ensure(end, self.retained_bars)
            path.trim(end - self.retained_bars)
            mid = float(path.close[end - 1 - path.first_index])
        else:
            mid = path.base_price
        if depth <= 0:
            return OrderBook(symbol=symbol, ts_ms=now_ms, bids=(), asks=())
        # Deeper markets quote tighter: ~2 bps for BTC, tens of bps for thin pairs.
        liquidity = path.liquidity * 1000.0 / self.config.bar_ms
        spread_bps = min(50.0, max(0.5, 10.0 / math.sqrt(liquidity / 1e5)))
        half = spread_bps / 2e4
        step = max(half, 0.5e-4)
        rng = np.random.default_rng([self.config.seed, path.index, end, _BOOK_SEED_TAG])
        offsets = half + step * np.arange(depth)
        quote = path.liquidity * 0.02 * (1.0 + 0.25 * np.arange(depth))
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
