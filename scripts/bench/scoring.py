"""A full scan of N symbols x B bars, beside the same indicators computed with TA-Lib and NumPy.

* full scan (ours): the numba kernels for the trend score (EMA 12/26 + realised vol), RSI 14,
  ATR 14, ADX 14, Bollinger width 20, MACD 12/26/9, realised vol 30, volume z-score 20,
  ROC 10, then regime classification of every bar and the top-N selection.
* TA-Lib loop: the same indicators with ``talib`` in a Python loop over symbols (no regimes, no
  selection: the baseline does less work than the scan).
* NumPy: the same indicators vectorised across symbols, looping over bars where the indicator is
  recursive (no regimes, no selection either).
* first scan after a restart: a fresh process that imports, warms the kernels from numba's
  on-disk cache and runs one scan.

* incremental: one new bar on every symbol through ``IncrementalScores`` (the trend score and
  its volatility from saved state; bit-identical to the full recomputation). Indicators other
  than the trend score, and regimes, are not incremental yet.
Last line: a JSON object with the figures.

Run: .venv/bin/python scripts/bench/scoring.py [--symbols N] [--bars B]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from numpy.typing import NDArray

from quantumtrade.regime import engine as regime
from quantumtrade.scoring import indicators as ind
from quantumtrade.scoring import kernels
from quantumtrade.scoring.incremental import IncrementalScores
from quantumtrade.scoring.scanner import ScannerConfig, select

Array = NDArray[np.float64]


def market(n: int, bars: int, seed: int = 5) -> tuple[Array, Array, Array, Array]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, bars)), axis=1))
    spread = np.abs(0.005 * rng.standard_normal((n, bars))) * close
    high, low = close + spread, close - spread
    volume = rng.gamma(2.0, 500.0, (n, bars))
    return close, high, low, volume


def full_scan(close: Array, high: Array, low: Array, volume: Array, cfg: ScannerConfig) -> int:
    kernels.compute_scores(close, volume, fast=12, slow=26, vol_window=30)
    ind.compute_rsi(close, period=14)
    ind.compute_atr(high, low, close, period=14)
    ind.compute_adx(high, low, close, period=14)
    ind.compute_bbands_width(close, period=20, nbdev=2.0)
    ind.compute_macd(close, fast=12, slow=26, signal=9)
    ind.compute_realized_vol(close, window=30)
    ind.compute_volume_zscore(volume, window=20)
    ind.compute_roc(close, period=10)
    regime.classify(close, high, low, volume)
    symbols = [f"S{i}" for i in range(close.shape[0])]
    return len(select(symbols, close, volume, cfg).selected)


def talib_loop(close: Array, high: Array, low: Array, volume: Array) -> None:
    import talib

    for i in range(close.shape[0]):
        c, h, lo, v = close[i], high[i], low[i], volume[i]
        talib.EMA(c, 12)
        talib.EMA(c, 26)
        logret = np.diff(np.log(c))
        talib.STDDEV(logret, 30)
        talib.RSI(c, 14)
        talib.ATR(h, lo, c, 14)
        talib.ADX(h, lo, c, 14)
        talib.BBANDS(c, 20, 2.0, 2.0)
        talib.MACD(c, 12, 26, 9)
        talib.STDDEV(logret, 30)
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
    _rolling_std(logret, 30)
    _rolling_std(volume, 20)
    close[:, 10:] / close[:, :-10] - 1


def best(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def first_scan_after_restart(n: int, bars: int) -> float:
    """A fresh interpreter: import, warm from numba's cache, one scan (seconds)."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import sys; sys.argv = ['x']\n"
        f"sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})\n"
        "import scoring as s\n"
        "from quantumtrade.scoring import kernels, indicators\n"
        "from quantumtrade.regime import engine\n"
        "kernels.warm_up(); indicators.warm_up(); engine.warm_up()\n"
        f"c, h, l, v = s.market({n}, {bars})\n"
        "t1 = time.perf_counter()\n"
        "s.full_scan(c, h, l, v, s.ScannerConfig())\n"
        "t2 = time.perf_counter()\n"
        "print((t2 - t0) - (t1 - t0 - (t1 - t0)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=5_000)
    parser.add_argument("--bars", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    close, high, low, volume = market(args.symbols, args.bars)
    cfg = ScannerConfig()
    kernels.warm_up()
    ind.warm_up()
    regime.warm_up()
    full_scan(close, high, low, volume, cfg)  # first call: compile for these shapes' types
    ours = best(lambda: full_scan(close, high, low, volume, cfg), args.rounds)
    talib_s = best(lambda: talib_loop(close, high, low, volume), args.rounds)
    numpy_s = best(lambda: numpy_indicators(close, high, low, volume), args.rounds)
    restart = first_scan_after_restart(args.symbols, args.bars)
    inc = IncrementalScores(args.symbols, fast=12, slow=26, vol_window=30)
    inc.replay(close[:, :-1])
    step_times = []
    for _ in range(args.rounds * 5):
        new_bar = close[:, -1] * (
            1.0 + 0.001 * np.random.default_rng(len(step_times)).standard_normal(args.symbols)
        )
        t0 = time.perf_counter()
        inc.update(new_bar)
        step_times.append(time.perf_counter() - t0)
    incremental = min(step_times)
    figures = {
        "full_scan_ms": round(ours * 1000, 1),
        "talib_loop_ms": round(talib_s * 1000, 1),
        "numpy_ms": round(numpy_s * 1000, 1),
        "ratio_vs_talib_loop": round(talib_s / ours, 2),
        "ratio_vs_numpy": round(numpy_s / ours, 2),
        "incremental_ms": round(incremental * 1000, 3),
        "first_scan_after_restart_s": round(restart, 2),
    }
    print(f"{args.symbols:,} symbols x {args.bars:,} bars, best of {args.rounds}")
    print(f"full scan (indicators + regimes + top-N): {figures['full_scan_ms']} ms (goal < 50 ms)")
    print(
        f"TA-Lib loop, indicators only: {figures['talib_loop_ms']} ms -> "
        f"{figures['ratio_vs_talib_loop']}x faster (goal >= 3x)"
    )
    print(
        f"NumPy, indicators only: {figures['numpy_ms']} ms -> {figures['ratio_vs_numpy']}x faster"
    )
    print(
        f"incremental one-bar update, trend score only: {figures['incremental_ms']} ms "
        "(goal < 2 ms for all indicators and regimes)"
    )
    print(
        f"first scan after a restart (fresh process, numba cache): "
        f"{figures['first_scan_after_restart_s']} s (goal < 2 s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
