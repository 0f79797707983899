"""Backtest speed, side by side with NautilusTrader's BacktestEngine, in one run.

(a) 5,000 symbols x 1,000 bars of the synthetic market through the whole decision path (a
    child process, so its peak RSS is its own). Goal: >= 1 M bars/s, peak RSS < 1 GB.
(b) the 21 pairs of candles/binance-spot-1h-2024 (125,954 bars): goal <= 2 s and >= 10x
    NautilusTrader running an EMA(12/26) crossover over the same bars (engine.run() only,
    its own venv, set up by scripts/bench/nautilus_setup.sh; skipped with the reason when it
    cannot be set up). Our figure is run_backtest only, the loading of the files apart, as
    Nautilus's is engine.run() only; best of --repeat runs after a warm-up run.

Also measured in the same run, for scale: a vectorised NumPy EMA(12/26) crossover over the same
bars (no events, no risk, no fills model: the floor a per-bar engine is compared against).

Ends with one JSON line: bars_per_s, nautilus_s, backtest_s, ratio_vs_nautilus, var_limit_s (part
(b) with [risk] max_var_99 on, --max-var-99), ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000


def quiet() -> None:
    from quantumtrade.logs import configure_logging

    configure_logging("warning", "console")


def synthetic_candles(symbols: int, bars: int):  # type: ignore[no-untyped-def]
    from quantumtrade.backtest.data import from_arrays
    from quantumtrade.clock import ManualClock
    from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource

    clock = ManualClock((START_MS + bars * HOUR_MS) * 1_000_000)
    config = SyntheticConfig(
        seed=11, symbols=symbols, bar_ms=HOUR_MS, history_bars=bars, start_ms=START_MS
    )
    source = SyntheticSource(config, clock)
    names = source.symbols()
    batch = asyncio.run(
        source.fetch_bar_batch(names, [None] * symbols, clock.now_ns() // 1_000_000)
    )
    if not np.all(np.diff(batch.offsets) == bars):
        raise RuntimeError("the synthetic source did not serve every bar")
    ts = batch.ts_ms[:bars].copy()
    # (bars, symbols, 5), the one copy the backtest holds; the source's batch is dropped here.
    prices = np.ascontiguousarray(batch.prices.reshape(symbols, bars, 5).transpose(1, 0, 2))
    del batch
    return from_arrays(names, ts, prices, HOUR_MS, sources=[f"synthetic seed 11, {symbols}x{bars}"])


def run(cfg, candles) -> float:  # type: ignore[no-untyped-def]
    from quantumtrade.backtest.runner import run_backtest

    result = asyncio.run(run_backtest(cfg, candles))
    return float(result.elapsed_s)


def numpy_ema_crossover(close: np.ndarray) -> float:
    """Seconds for a vectorised EMA(12/26) crossover over (symbols, bars) closes: signals and
    per-trade PnL, no per-bar events (vectorbt's approach)."""
    t0 = time.perf_counter()
    fast = np.empty_like(close)
    slow = np.empty_like(close)
    fast[:, 0] = slow[:, 0] = close[:, 0]
    af, as_ = 2 / 13, 2 / 27
    for t in range(1, close.shape[1]):  # the recursion runs along bars, vectorised over symbols
        fast[:, t] = fast[:, t - 1] + af * (close[:, t] - fast[:, t - 1])
        slow[:, t] = slow[:, t - 1] + as_ * (close[:, t] - slow[:, t - 1])
    above = fast > slow
    cross = np.diff(above.astype(np.int8), axis=1)
    entries, exits = cross == 1, cross == -1
    _ = float(
        np.nansum(np.where(exits, close[:, 1:], 0.0))
        - np.nansum(np.where(entries, close[:, 1:], 0.0))
    )
    return time.perf_counter() - t0


def child_synthetic(symbols: int, bars: int) -> None:
    """(a) in this process: print one JSON line with the time and the peak RSS."""
    quiet()
    from quantumtrade.config import AppConfig

    cfg = AppConfig()
    run(cfg, synthetic_candles(min(symbols, 500), 300))  # compile and warm up
    candles = synthetic_candles(symbols, bars)
    elapsed = run(cfg, candles)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    numpy_s = numpy_ema_crossover(candles.column(3))
    print(json.dumps({"elapsed_s": elapsed, "numpy_s": numpy_s, "peak_rss_mb": rss_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--bars", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default="candles/binance-spot-1h-2024")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-nautilus", action="store_true")
    parser.add_argument(
        "--max-var-99", type=float, default=0.02,
        help="(b) also with this [risk] max_var_99, runs interleaved with the default's (0: no)",
    )  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_synthetic(args.symbols, args.bars)
        return
    quiet()
    from quantumtrade.backtest.data import load_candles, resolve
    from quantumtrade.config import AppConfig

    out: dict[str, object] = {}
    # (b) real candles.
    t0 = time.perf_counter()
    candles = load_candles([args.data])
    load_s = time.perf_counter() - t0
    bars = int(candles.have.sum())
    cfg = AppConfig()
    limited = msgspec.structs.replace(
        cfg, risk=msgspec.structs.replace(cfg.risk, max_var_99=args.max_var_99 or None)
    )
    run(cfg, candles.window(0, 400))  # compile and warm up
    times: list[float] = []
    var_times: list[float] = []
    for _ in range(args.repeat):  # interleaved: a busy machine slows both alike
        times.append(run(cfg, candles))
        if args.max_var_99 > 0:
            var_times.append(run(limited, candles))
    backtest_s = min(times)
    numpy_s = numpy_ema_crossover(candles.column(3))
    print(
        f"(b) {args.data}: {len(candles.symbols)} pairs, {bars:,} bars: backtest "
        f"{backtest_s:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}; files loaded in "
        f"{load_s:.2f} s), {bars / backtest_s:,.0f} bars/s; numpy EMA crossover {numpy_s:.3f} s"
    )
    out.update(
        backtest_s=round(backtest_s, 3),
        backtest_runs_s=[round(t, 3) for t in times],
        load_s=round(load_s, 3),
        bars=bars,
        bars_per_s=round(bars / backtest_s),
        numpy_ema_s=round(numpy_s, 4),
        ratio_vs_numpy=round(backtest_s / numpy_s, 1),
    )
    if var_times:
        var_s = min(var_times)
        print(
            f"    with [risk] max_var_99 = {args.max_var_99}: {var_s:.2f} s (runs "
            f"{', '.join(f'{t:.2f}' for t in var_times)}), {var_s / backtest_s:.2f}x the default's"
        )
        out.update(var_limit_s=round(var_s, 3), var_limit_ratio=round(var_s / backtest_s, 2))
    nautilus_s = None
    if not args.skip_nautilus:
        from nautilus_peer import run_nautilus

        peer = run_nautilus(resolve(args.data), repeat=args.repeat)
        if peer is not None:
            nautilus_s = float(peer["run_s"])
            print(
                f"    NautilusTrader {peer.get('nautilus_version')}: {nautilus_s:.2f} s "
                f"(engine.run() only, {peer.get('orders')} orders); ours is "
                f"{nautilus_s / backtest_s:.2f}x faster (goal >= 10x, <= 2 s)"
            )
    out.update(
        nautilus_s=None if nautilus_s is None else round(nautilus_s, 3),
        ratio_vs_nautilus=None if nautilus_s is None else round(nautilus_s / backtest_s, 2),
    )
    # (a) synthetic, in a child for its own peak RSS.
    if not args.skip_synthetic:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--symbols", str(args.symbols),
             "--bars", str(args.bars)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        n = args.symbols * args.bars
        rate = n / figures["elapsed_s"]
        print(
            f"(a) synthetic {args.symbols:,} x {args.bars:,} = {n:,} bars: "
            f"{figures['elapsed_s']:.2f} s, {rate:,.0f} bars/s (goal >= 1,000,000), peak RSS "
            f"{figures['peak_rss_mb']:.0f} MB (goal < 1,024); numpy EMA crossover "
            f"{figures['numpy_s']:.3f} s"
        )
        out.update(
            synthetic_s=round(figures["elapsed_s"], 3),
            synthetic_bars_per_s=round(rate),
            synthetic_peak_rss_mb=round(figures["peak_rss_mb"], 1),
            synthetic_ratio_vs_numpy=round(figures["elapsed_s"] / figures["numpy_s"], 1),
            synthetic_ratio_vs_goal=round(rate / 1_000_000, 3),
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
