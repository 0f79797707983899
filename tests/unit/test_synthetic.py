"""SyntheticSource: reproducible bars whatever the fetch pattern, regimes, valid OHLCV, books."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from quantumtrade.clock import ManualClock
from quantumtrade.data.synthetic import MIN_BARS, REAL_SYMBOLS, SyntheticConfig, SyntheticSource
from quantumtrade.data.synthetic_kernel import SQUEEZE_BARS
from quantumtrade.data.validation import validate_bars
from quantumtrade.events import Bar, Regime

START_MS = 1_000_000
BAR_MS = 1_000


def source(history_bars: int = 300, seed: int = 7, symbols: int = 25) -> SyntheticSource:
    cfg = SyntheticConfig(
        seed=seed, symbols=symbols, bar_ms=BAR_MS, history_bars=history_bars, start_ms=START_MS
    )
    return SyntheticSource(cfg, ManualClock())


def until(bars: int) -> int:
    return START_MS + bars * BAR_MS


def test_symbol_names_are_real_pairs_then_generated() -> None:
    names = source(symbols=23).symbols()
    assert names[:20] == list(REAL_SYMBOLS)
    assert names[:3] == ["BTCUSDT", "ETHUSDT", "ADAUSDT"] and names[19] == "APTUSDT"
    assert names[20:] == ["SYN0021USDT", "SYN0022USDT", "SYN0023USDT"]


def test_start_defaults_to_history_before_the_clock() -> None:
    clock = ManualClock(start_ns=1_700_000_000_123_000_000)
    src = SyntheticSource(SyntheticConfig(history_bars=300, bar_ms=1000), clock)
    assert src.start_ms == 1_700_000_000_123 - 300_000 - 123


async def test_fetch_window_semantics() -> None:
    src = source(history_bars=5)
    bars = await src.fetch_bars("BTCUSDT", None, until(10) + 500)  # bar 10 still open
    assert [b.ts_ms for b in bars] == [START_MS + k * BAR_MS for k in range(5, 10)]
    after = await src.fetch_bars("BTCUSDT", START_MS + 3 * BAR_MS + 1, until(10))
    assert [b.ts_ms for b in after] == [START_MS + k * BAR_MS for k in range(4, 10)]
    assert await src.fetch_bars("BTCUSDT", bars[-1].ts_ms, until(10) + 999) == []
    assert await src.fetch_bars("BTCUSDT", None, START_MS + 999) == []
    with pytest.raises(KeyError, match="NOPEUSDT"):
        await src.fetch_bars("NOPEUSDT", None, until(10))


async def test_same_seed_same_bars_whatever_the_chunking() -> None:
    n = 1_500
    whole = source(history_bars=n)
    reference = {s: await whole.fetch_bars(s, 0, until(n)) for s in ("BTCUSDT", "SYN0023USDT")}
    assert all(len(bars) == n for bars in reference.values())

    # Small retention (older bars dropped) and another symbol order and chunking.
    chunked = source(history_bars=40)
    rng = random.Random(1)
    got: dict[str, list[Bar]] = {"SYN0023USDT": [], "BTCUSDT": []}
    end = 0
    while end < n:
        end = min(n, end + rng.randint(1, 70))
        for symbol in got:
            last = got[symbol][-1].ts_ms if got[symbol] else 0
            got[symbol].extend(await chunked.fetch_bars(symbol, last, until(end)))
    assert got == reference

    other_seed = source(seed=8)
    assert await other_seed.fetch_bars("BTCUSDT", None, until(300)) != reference["BTCUSDT"][-300:]


async def test_bars_are_valid_ohlcv_with_own_price_and_liquidity() -> None:
    src = source(history_bars=3_000)
    closes = {}
    for symbol in src.symbols():
        bars = await src.fetch_bars(symbol, None, until(3_000))
        accepted, rejected = validate_bars(bars, None)
        assert rejected == [] and len(accepted) == 3_000
        assert all(b.volume > 0 and b.low > 0 for b in bars)
        assert all(b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close) for b in bars)
        assert all(b2.ts_ms - b1.ts_ms == BAR_MS for b1, b2 in itertools.pairwise(bars))
        assert all(b2.open == b1.close for b1, b2 in itertools.pairwise(bars))
        closes[symbol] = bars[-1].close
    assert 10_000 < closes["BTCUSDT"] < 400_000 and 0.01 < closes["DOGEUSDT"] < 1.5
    assert src.liquidity("BTCUSDT") > src.liquidity("ETHUSDT") > src.liquidity("APTUSDT") > 0


async def test_every_regime_occurs_with_its_minimum_duration_and_character() -> None:
    src = source(history_bars=6_000, symbols=6)
    log_returns: dict[Regime, list[float]] = {r: [] for r in Regime}
    for symbol in src.symbols():
        bars = await src.fetch_bars(symbol, None, until(6_000))
        labels = [src.true_regime(symbol, b.ts_ms) for b in bars]
        runs: list[tuple[Regime, int]] = []
        for label in labels:
            if runs and runs[-1][0] is label:
                runs[-1] = (label, runs[-1][1] + 1)
            else:
                runs.append((label, 1))
        for label, length in runs[:-1]:  # the last run may still be going on
            assert length >= MIN_BARS[label]
        for bar, label in zip(bars, labels, strict=True):
            log_returns[label].append(math.log(bar.close / bar.open))
    assert all(len(r) > 100 for r in log_returns.values())
    vol = {r: float(np.std(x)) for r, x in log_returns.items()}
    assert vol[Regime.VOLATILE] > vol[Regime.TRENDING] > vol[Regime.RANGING]


async def test_a_breakout_is_a_short_squeeze_then_the_break() -> None:
    """A BREAKOUT stretch starts SQUEEZE_BARS quiet bars before the break (a longer compression
    is still a range): the break's move dwarfs them, and volume expands after it."""
    src = source(history_bars=6_000, symbols=6)
    breakouts = 0
    for symbol in src.symbols():
        bars = await src.fetch_bars(symbol, None, until(6_000))
        labels = src.true_regimes(symbol, bars[0].ts_ms, len(bars))
        moves = np.abs(np.log([b.close / b.open for b in bars]))
        volume = np.asarray([b.volume for b in bars])
        start = 0
        for label, run in itertools.groupby(labels):
            n = len(list(run))
            if label is Regime.BREAKOUT and start > 0 and start + n < len(bars):  # whole ones
                squeeze = slice(start, start + SQUEEZE_BARS)
                after = slice(start + SQUEEZE_BARS + 1, start + n)
                assert moves[start + SQUEEZE_BARS] > 3.0 * moves[squeeze].max()
                assert volume[after].mean() > 2.0 * volume[squeeze].mean()
                breakouts += 1
            start += n
    assert breakouts > 20


async def test_true_regime_before_the_first_bar_is_refused_and_old_bars_regenerate() -> None:
    src = source(history_bars=10)
    with pytest.raises(ValueError, match="before"):
        src.true_regime("BTCUSDT", START_MS - 1)
    labels = src.true_regimes("BTCUSDT", START_MS, 500)
    await src.fetch_bars("BTCUSDT", None, until(500))
    # Going back after the generator moved on regenerates the same bars and labels.
    assert src.true_regime("BTCUSDT", START_MS) is labels[0]
    assert src.true_regimes("BTCUSDT", START_MS + 250 * BAR_MS, 250) == labels[250:]
    old = await src.fetch_bars("BTCUSDT", START_MS + 479 * BAR_MS, until(490))
    assert old == (await source(history_bars=10).fetch_bars("BTCUSDT", None, until(490)))[-10:]


async def test_batch_fetch_equals_single_fetches() -> None:
    single, batched = source(history_bars=50), source(history_bars=50)
    symbols = ["SYN0023USDT", "BTCUSDT", "ETHUSDT"]
    since = [None, START_MS + 30 * BAR_MS, START_MS + 79 * BAR_MS]
    batch = await batched.fetch_bar_batch(symbols, since, until(80))
    assert [batch.count(j) for j in range(3)] == [50, 49, 0]
    for j, (symbol, s) in enumerate(zip(symbols, since, strict=True)):
        assert batch.bars(j) == await single.fetch_bars(symbol, s, until(80))
    with pytest.raises(ValueError, match="distinct"):
        await batched.fetch_bar_batch(["BTCUSDT", "BTCUSDT"], [None, None], until(80))


async def test_order_book_follows_the_last_close_and_liquidity() -> None:
    clock = ManualClock(start_ns=until(400) * 1_000_000)
    cfg = SyntheticConfig(symbols=25, history_bars=300, start_ms=START_MS)
    src, twin = SyntheticSource(cfg, clock), SyntheticSource(cfg, clock)
    last = (await src.fetch_bars("BTCUSDT", None, until(400)))[-1]
    book = await src.fetch_order_book("BTCUSDT", depth=10)
    assert book == await twin.fetch_order_book("BTCUSDT", depth=10)
    assert len(book.bids) == len(book.asks) == 10
    assert book.mid == pytest.approx(last.close, rel=1e-9)
    assert book.best_bid < book.mid < book.best_ask
    bid_prices = [p for p, _ in book.bids]
    ask_prices = [p for p, _ in book.asks]
    assert bid_prices == sorted(bid_prices, reverse=True) and ask_prices == sorted(ask_prices)
    assert all(q > 0 for _, q in book.bids + book.asks)

    thin = await src.fetch_order_book("SYN0025USDT", depth=10)
    spread = (book.best_ask - book.best_bid) / book.mid
    thin_spread = (thin.best_ask - thin.best_bid) / thin.mid
    assert spread < thin_spread
    depth_quote = sum(p * q for p, q in book.bids)
    assert depth_quote > sum(p * q for p, q in thin.bids)
    assert (await src.fetch_order_book("BTCUSDT", depth=0)).bids == ()
