"""A full scan of N symbols x B bars, beside the same indicators computed with TA-Lib and NumPy.

* full scan (ours): the fused numba kernel (every indicator at the newest bar in one pass per
  symbol: trend score = EMA 12/26 over realised vol 30, SMA 20, RSI 14, ATR 14, ADX 14,
  Bollinger width 20, MACD 12/26/9, volume z-score 20, ROC 10), regime classification of every
  bar (``regime.engine.classify``), then the filter stages with each symbol's newest regime and
  the top-N selection (``scanner.select``). Also timed without the regimes.
* TA-Lib loop: the same indicators with ``talib`` in a Python loop over symbols (every bar; no
  regimes, no selection: the baseline does less work than the scan).
* NumPy: the same indicators vectorised across symbols, looping over bars where the indicator is
  recursive (no regimes, no selection either).
* incremental: one new bar on every symbol through ``IncrementalIndicators`` (every indicator
  from saved state; bit-identical to the full recomputation) plus ``RegimeTracker.update`` when
  the regime engine has it; the filters and top-N on top are printed separately.
* strategy: the default strategy (``regime_adaptive``) turning that scan into target weights
  (``Strategy.targets`` on the newest 200 bars, regimes and indicators of every symbol, an
  empty book), timed on top of the incremental update and of the full scan: the scanner's
  goals hold with the default strategy in place only if the sums do.
* first scan after a restart: a fresh interpreter imports the package and runs one full scan,
  the kernels coming from numba's on-disk cache (data generation excluded).

Last line: a JSON object with the figures.

Run: .venv/bin/python scripts/bench/scoring.py [--symbols N] [--bars B] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import Regime
from quantumtrade.regime import engine as regime
from quantumtrade.regime.model import REGIME_ORDER
from quantumtrade.scoring import indicators as ind
from quantumtrade.scoring.incremental import IncrementalIndicators
from quantumtrade.scoring.scanner import ScannerConfig, select, select_from_values
from quantumtrade.strategy.base import Book, Features
from quantumtrade.strategy.builtin import RegimeAdaptive

Array = NDArray[np.float64]


def market(n: int, bars: int, seed: int = 5) -> tuple[Array, Array, Array, Array]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, bars)), axis=1))
    spread = np.abs(0.005 * rng.standard_normal((n, bars))) * close
    high, low = close + spread, close - spread
    volume = rng.gamma(2.0, 500.0, (n, bars))
    return close, high, low, volume


def symbols_for(n: int) -> list[str]:
    return [f"S{i}" for i in range(n)]


def regimes_from(labels_last: NDArray[Any]) -> list[Regime | None]:
    order = REGIME_ORDER
    return [order[k] if 0 <= k < len(order) else None for k in labels_last.tolist()]


def full_scan(
    close: Array, high: Array, low: Array, volume: Array, cfg: ScannerConfig, symbols: list[str]
) -> int:
    """Indicators, regimes of every bar, filters (with the newest regimes) and top-N."""
    labels = regime.classify(close, high, low, volume).labels
    regimes = regimes_from(labels[:, -1])
    return len(select(symbols, close, volume, cfg, regimes, high=high, low=low).selected)


def scan_without_regimes(
    close: Array, high: Array, low: Array, volume: Array, cfg: ScannerConfig, symbols: list[str]
) -> int:
    """Indicators, filters and top-N only: the part this module owns."""
    return len(select(symbols, close, volume, cfg, high=high, low=low).selected)


def talib_loop(close: Array, high: Array, low: Array, volume: Array) -> None:
    import talib

    for i in range(close.shape[0]):
        c, h, lo, v = close[i], high[i], low[i], volume[i]
        talib.EMA(c, 12)
        talib.EMA(c, 26)
        logret = np.diff(np.log(c))
        talib.STDDEV(logret, 30)  # realised vol (the score's and the indicator: the same)
        talib.RSI(c, 14)
        talib.ATR(h, lo, c, 14)
        talib.ADX(h, lo, c, 14)
        talib.BBANDS(c, 20, 2.0, 2.0)  # SMA 20 is its middle band
        talib.MACD(c, 12, 26, 9)
        talib.SMA(v, 20)
        talib.STDDEV(v, 20)
        talib.ROC(c, 10)


def _ema(x: Array, period: int) -> Array:
    out = np.full_like(x, np.nan)
    alpha = 2.0 / (period + 1)
    out[:, period - 1] = x[:, :period].mean(axis=1)
    for t in range(period, x.shape[1]):
        out[:, t] = alpha * x[:, t] + (1 - alpha) * out[:, t - 1]
    return out


def _wilder(x: Array, period: int) -> Array:
    out = np.full_like(x, np.nan)
    out[:, period - 1] = x[:, :period].mean(axis=1)
    for t in range(period, x.shape[1]):
        out[:, t] = (out[:, t - 1] * (period - 1) + x[:, t]) / period
    return out


def _rolling_std(x: Array, window: int) -> Array:
    c1 = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    c2 = np.cumsum(np.pad(x * x, ((0, 0), (1, 0))), axis=1)
    s1 = c1[:, window:] - c1[:, :-window]
    s2 = c2[:, window:] - c2[:, :-window]
    return np.sqrt(np.maximum(s2 / window - (s1 / window) ** 2, 0.0))


def numpy_indicators(close: Array, high: Array, low: Array, volume: Array) -> None:
    _ema(close, 12)
    _ema(close, 26)
    logret = np.diff(np.log(close), axis=1)
    _rolling_std(logret, 30)
    delta = np.diff(close, axis=1)
    gain, loss = _wilder(np.maximum(delta, 0), 14), _wilder(np.maximum(-delta, 0), 14)
    100 - 100 / (1 + gain / np.where(loss == 0, np.nan, loss))
    prev = close[:, :-1]
    tr = np.maximum(
        high[:, 1:] - low[:, 1:], np.maximum(abs(high[:, 1:] - prev), abs(low[:, 1:] - prev))
    )
    atr = _wilder(tr, 14)
    up, down = np.diff(high, axis=1), -np.diff(low, axis=1)
    plus = _wilder(np.where((up > down) & (up > 0), up, 0.0), 14) / atr
    minus = _wilder(np.where((down > up) & (down > 0), down, 0.0), 14) / atr
    dx = 100 * abs(plus - minus) / np.where(plus + minus == 0, np.nan, plus + minus)
    _wilder(np.nan_to_num(dx), 14)
    mid = np.cumsum(np.pad(close, ((0, 0), (1, 0))), axis=1)
    4 * _rolling_std(close, 20) / ((mid[:, 20:] - mid[:, :-20]) / 20)
    macd = _ema(close, 12) - _ema(close, 26)
    _ema(np.nan_to_num(macd), 9)
    _rolling_std(volume, 20)
    close[:, 10:] / close[:, :-10] - 1


def best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def first_scan_after_restart(n: int, bars: int) -> tuple[float, float]:
    """A fresh interpreter: (import seconds, first full scan seconds), data generation apart."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import sys; sys.argv = ['x']\n"
        f"sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})\n"
        "import scoring as s\n"
        "t1 = time.perf_counter()\n"
        f"c, h, l, v = s.market({n}, {bars})\n"
        f"names = s.symbols_for({n})\n"
        "t2 = time.perf_counter()\n"
        "s.full_scan(c, h, l, v, s.ScannerConfig(), names)\n"
        "t3 = time.perf_counter()\n"
        "print(t1 - t0, t3 - t2)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    imports, scan = out.stdout.split()[-2:]
    return float(imports), float(scan)


def strategy_inputs(
    close: Array, high: Array, low: Array, volume: Array, values: Array, labels: Any, conf: Array
) -> tuple[Features, Book]:
    """What the engine hands the strategy: the newest 200 bars, indicators, regimes, no book."""
    n, w = close.shape[0], min(200, close.shape[1])
    features = Features(
        symbols=tuple(symbols_for(n)), values=values, regime=np.asarray(labels, dtype=np.int8),
        confidence=conf, eligible=np.ones(n, dtype=bool), selected=tuple(range(3)),
        open=close[:, -w:], high=high[:, -w:], low=low[:, -w:], close=close[:, -w:],
        volume=volume[:, -w:], ts_ms=np.zeros(n, dtype=np.int64), bar_ms=3_600_000,
    )  # fmt: skip
    zero = np.zeros(n)
    book = Book(
        position=zero, weight=zero, entry_price=np.full(n, np.nan),
        bars_held=np.full(n, -1, dtype=np.int64), entry_weight=zero, target_weight=zero,
        entry_regime=np.full(n, -1, dtype=np.int8), equity=100_000.0,
    )  # fmt: skip
    return features, book


def incremental_step(
    close: Array, high: Array, low: Array, volume: Array, rounds: int
) -> tuple[float, float | None, float, float]:
    """Best seconds for one new bar on every symbol: (indicators, regimes or None, filters,
    the default strategy's targets)."""
    inc = IncrementalIndicators.from_history(
        high[:, :-1], low[:, :-1], close[:, :-1], volume[:, :-1]
    )
    tracker_cls = getattr(regime, "RegimeTracker", None)
    tracker = None
    if tracker_cls is not None and hasattr(tracker_cls, "update"):
        tracker = tracker_cls()
        tracker.reset(close[:, :-1], high[:, :-1], low[:, :-1], volume[:, :-1])
    symbols = symbols_for(close.shape[0])
    cfg = ScannerConfig()
    ind_t, reg_t, sel_t, strat_t = [], [], [], []
    strategy = RegimeAdaptive()
    rng = np.random.default_rng(1)
    for _ in range(rounds * 10):
        factor = 1.0 + 0.001 * rng.standard_normal(close.shape[0])
        c, h, lo, v = (np.ascontiguousarray(a[:, -1]) for a in (close, high, low, volume))
        c, h, lo = c * factor, h * factor, lo * factor
        t0 = time.perf_counter()
        values = inc.update(h, lo, c, v)
        t1 = time.perf_counter()
        regimes: list[Regime | None] | None = None
        labels, conf = np.full(c.size, -1), np.zeros(c.size)
        if tracker is not None:
            labels, conf = tracker.update(c, h, lo, v)
            regimes = regimes_from(labels)
        t2 = time.perf_counter()
        select_from_values(symbols, values, close, volume, cfg, regimes)
        t3 = time.perf_counter()
        features, book = strategy_inputs(close, high, low, volume, values, labels, conf)
        t4 = time.perf_counter()
        strategy.targets(features, book)
        t5 = time.perf_counter()
        ind_t.append(t1 - t0)
        reg_t.append(t2 - t1)
        sel_t.append(t3 - t2)
        strat_t.append(t5 - t4)
    return min(ind_t), (min(reg_t) if tracker is not None else None), min(sel_t), min(strat_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--symbols", type=int, default=5_000)
    parser.add_argument("--bars", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    close, high, low, volume = market(args.symbols, args.bars)
    symbols = symbols_for(args.symbols)
    cfg = ScannerConfig()
    full_scan(close, high, low, volume, cfg, symbols)  # compile, or load numba's cache
    ours = best(lambda: full_scan(close, high, low, volume, cfg, symbols), args.rounds)
    no_regimes = best(
        lambda: scan_without_regimes(close, high, low, volume, cfg, symbols), args.rounds
    )
    fused = best(lambda: ind.compute_scan(high, low, close, volume), args.rounds)
    talib_s = best(lambda: talib_loop(close, high, low, volume), args.rounds)
    numpy_s = best(lambda: numpy_indicators(close, high, low, volume), args.rounds)
    imports_s, first_s = first_scan_after_restart(args.symbols, args.bars)
    inc_ind, inc_reg, inc_sel, strat = incremental_step(close, high, low, volume, args.rounds)
    incremental = inc_ind + (inc_reg or 0.0)
    figures = {
        "full_scan_ms": round(ours * 1000, 1),
        "scan_without_regimes_ms": round(no_regimes * 1000, 1),
        "fused_indicators_ms": round(fused * 1000, 1),
        "talib_loop_ms": round(talib_s * 1000, 1),
        "numpy_ms": round(numpy_s * 1000, 1),
        "ratio_vs_talib_loop": round(talib_s / ours, 2),
        "ratio_vs_numpy": round(numpy_s / ours, 2),
        "ratio_without_regimes_vs_talib_loop": round(talib_s / no_regimes, 2),
        "incremental_ms": round(incremental * 1000, 3),
        "incremental_indicators_ms": round(inc_ind * 1000, 3),
        "incremental_regimes_ms": None if inc_reg is None else round(inc_reg * 1000, 3),
        "incremental_filters_ms": round(inc_sel * 1000, 3),
        "first_scan_after_restart_s": round(imports_s + first_s, 2),
        "strategy_targets_ms": round(strat * 1000, 3),
        "full_scan_with_strategy_ms": round((ours + strat) * 1000, 1),
        "incremental_with_strategy_ms": round((incremental + inc_sel + strat) * 1000, 3),
    }
    print(f"{args.symbols:,} symbols x {args.bars:,} bars, best of {args.rounds}")
    print(
        f"full scan (indicators + regimes + filters + top-N): {figures['full_scan_ms']} ms "
        "(goal < 50 ms)"
    )
    print(
        f"  without regimes (indicators + filters + top-N): {figures['scan_without_regimes_ms']}"
        f" ms, of which the fused indicator kernel {figures['fused_indicators_ms']} ms"
    )
    print(
        f"TA-Lib loop, indicators only: {figures['talib_loop_ms']} ms -> "
        f"{figures['ratio_vs_talib_loop']}x faster (goal >= 3x); without regimes "
        f"{figures['ratio_without_regimes_vs_talib_loop']}x"
    )
    print(
        f"NumPy, indicators only: {figures['numpy_ms']} ms -> {figures['ratio_vs_numpy']}x faster"
    )
    regimes_note = (
        f"regimes {figures['incremental_regimes_ms']} ms"
        if inc_reg is not None
        else "regimes: no incremental API in regime.engine yet (not included)"
    )
    print(
        f"incremental one-bar update: {figures['incremental_ms']} ms (goal < 2 ms) = indicators "
        f"{figures['incremental_indicators_ms']} ms + {regimes_note}; filters + top-N on top: "
        f"{figures['incremental_filters_ms']} ms"
    )
    print(
        f"default strategy (regime_adaptive) targets: {figures['strategy_targets_ms']} ms; "
        f"with it, full scan {figures['full_scan_with_strategy_ms']} ms (goal < 50 ms), one-bar "
        f"update + filters + strategy {figures['incremental_with_strategy_ms']} ms (goal < 2 ms)"
    )
    print(
        f"first scan after a restart (fresh process, numba cache): "
        f"{figures['first_scan_after_restart_s']} s = imports {imports_s:.2f} s + first scan "
        f"{first_s:.2f} s (goal < 2 s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
