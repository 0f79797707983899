"""optimize's throughput: trials per minute with --jobs = cores against plain backtests in a row.

    QT_DATA_DIR=../shared/data .venv/bin/python scripts/bench/optimize.py [--trials 16]

Runs ``--trials`` TPE trials of ``regime_adaptive`` on candles/binance-spot-1h-2021 (38 pairs;
train 2020-12-01:2021-04-15) through optimize's own search with ``--jobs`` workers (worker
start-up and candle loading included), then the same number of plain ``run_backtest`` calls of
the same window one after another in this process (the defaults' parameters; candles loaded
once, not counted). The ratio of the two rates is the parallel speed-up.

Ends with one JSON line: trials_per_min, serial_backtests_per_min, speedup, jobs, trials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quantumtrade.backtest.command import _window  # noqa: E402
from quantumtrade.backtest.data import load_candles  # noqa: E402
from quantumtrade.backtest.optimize import (  # noqa: E402
    Pool,
    Search,
    Setup,
    _run_study,
    split_window,
)
from quantumtrade.backtest.runner import run_backtest  # noqa: E402
from quantumtrade.backtest.space import load_space  # noqa: E402
from quantumtrade.cli import _span  # noqa: E402
from quantumtrade.config import load_config  # noqa: E402
from quantumtrade.logs import configure_logging  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="candles/binance-spot-1h-2021")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configure_logging("warning", "console")
    cfg = load_config(None, {})
    candles = load_candles([args.data])
    train, test = _span("2020-12-01:2021-04-15"), _span("2021-04-15:2021-07-17")
    window = split_window(candles, train, test, cfg.data.capacity)
    search = Search(
        strategy=cfg.strategy, space=load_space(cfg.strategy, None), objective="sharpe",
        min_trades=0, trials=args.trials, seed=0, storage=None, key="bench",
    )  # fmt: skip
    setup = Setup(
        data=(args.data,), symbols=None, timeframe="", config=None,
        threads=max(1, (os.cpu_count() or 1) // args.jobs),
    )  # fmt: skip
    t0 = time.perf_counter()
    pool = Pool(setup, args.jobs)
    try:
        _run_study(search, window, candles, pool, "bench")
    finally:
        pool.close()
    parallel_s = time.perf_counter() - t0
    print(f"optimize: {args.trials} trials on {args.jobs} jobs in {parallel_s:.1f} s")

    bars, trade_from = _window(candles, *train, cfg.data.capacity)
    t0 = time.perf_counter()
    for _ in range(args.trials):
        asyncio.run(run_backtest(cfg, bars, trade_from=trade_from))
    serial_s = time.perf_counter() - t0
    print(f"plain backtests: {args.trials} in a row in {serial_s:.1f} s")
    per_min = 60.0 * args.trials / parallel_s
    serial_per_min = 60.0 * args.trials / serial_s
    print(
        f"{per_min:.1f} trials/min vs {serial_per_min:.1f} backtests/min one after another: "
        f"{per_min / serial_per_min:.2f}x on {args.jobs} jobs ({len(candles.symbols)} pairs, "
        f"{bars.bars - trade_from} traded bars each)"
    )
    figures = {
        "trials_per_min": round(per_min, 2),
        "serial_backtests_per_min": round(serial_per_min, 2),
        "speedup": round(per_min / serial_per_min, 3),
        "jobs": args.jobs,
        "trials": args.trials,
        "data": args.data,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
