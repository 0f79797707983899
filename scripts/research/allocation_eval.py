"""The same signals under each allocation method, with the VaR limit on, on real candles.

Runs the real backtest (``run_backtest``: the trading core the daemon runs) with the default
strategy (``regime_adaptive``, whose parameters ``strategy_grid.py`` chose on
``binance-spot-1h-2021`` only: that set is the strategy's in-sample data, 2024 is out of
sample) under ``[allocation] method`` = none / equal_weight / inverse_vol / risk_parity, and
prints volatility, max drawdown, Sharpe, turnover, and how often the VaR limit bound (orders
refused ``var_limit`` / ``es_limit`` over orders submitted to the risk manager), each method
without and then with the limit. The allocator has no fitted parameter: its
settings below are declared here before any run and are the same on both sets. A
buy-and-hold row (the strategy's mean gross in every pair, equal weights) is the baseline.

    QT_DATA_DIR=../shared/data .venv/bin/python scripts/research/allocation_eval.py \
        [--data candles/binance-spot-1h-2024 candles/binance-spot-1h-2021] [--jobs 2]

The last line is a JSON object with every run's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quantumtrade.backtest.baselines import buy_and_hold, result_performance  # noqa: E402
from quantumtrade.backtest.data import load_candles  # noqa: E402
from quantumtrade.backtest.outputs import bars_per_year  # noqa: E402
from quantumtrade.backtest.runner import run_backtest  # noqa: E402
from quantumtrade.config import AppConfig, load_config  # noqa: E402
from quantumtrade.logs import configure_logging  # noqa: E402

METHODS = ("none", "equal_weight", "inverse_vol", "risk_parity")
# Declared before any run, the same for every method and data set.
ALLOCATION: dict[str, Any] = {"max_asset_weight": 0.25, "lookback": 168}
"""A cap above the strategy's own 0.1 per symbol, so the methods can differ in what they give
each pair (at 0.1 every method is pinned to the strategy's equal 0.1 weights)."""
RISK: dict[str, Any] = {"max_var_99": 0.03}
"""1-day 99 % historical VaR at most 3 % of equity: a round risk setting, not fitted."""


def _config(method: str, var_limit: bool) -> AppConfig:
    cfg = load_config(None, {})
    alloc = msgspec.convert(
        {**msgspec.to_builtins(cfg.allocation), **ALLOCATION, "method": method},
        type(cfg.allocation),
    )
    risk = cfg.risk
    if var_limit:
        risk = msgspec.convert({**msgspec.to_builtins(cfg.risk), **RISK}, type(cfg.risk))
    return msgspec.structs.replace(cfg, allocation=alloc, risk=risk)


def _run(args: tuple[str, str, bool, float]) -> dict[str, Any]:
    method, data, var_limit, equity = args
    configure_logging("warning", "console")  # each refusal is an info line
    cfg = _config(method, var_limit)
    candles = load_candles([data])
    warm = min(cfg.data.capacity, candles.bars // 4)
    result = asyncio.run(run_backtest(cfg, candles, initial_equity=equity, trade_from=warm))
    per_year = bars_per_year(candles.bar_ms)
    metrics = result_performance(result, bars_per_year=per_year)
    refused = result.rejected_orders
    bound = refused.get("var_limit", 0) + refused.get("es_limit", 0)
    row: dict[str, Any] = {
        "method": method,
        "var_limit": var_limit,
        "metrics": metrics,
        "orders": result.orders,
        "submitted": result.orders + sum(refused.values()),
        "var_refusals": bound,
        "refused": dict(refused),
        "allocation": result.allocation,
    }
    if method == "none" and not var_limit:
        fee = cfg.execution.bar_fill.taker_fee_bps
        row["buy_and_hold"] = buy_and_hold(result, bars_per_year=per_year, fee_bps=fee).metrics
    return row


def _line(name: str, m: Any, orders: str, bound: str) -> str:
    return (
        f"  {name:26} {m['volatility']:7.3f} {m['max_drawdown']:7.3f} {m['sharpe'] or 0:7.2f} "
        f"{m['turnover'] or 0:8.1f} {m['total_return']:8.3f} {orders:>7} {bound:>16}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        nargs="+",
        default=["candles/binance-spot-1h-2024", "candles/binance-spot-1h-2021"],
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--initial-equity", type=float, default=100_000.0)
    args = parser.parse_args()
    base = Path(os.environ.get("QT_DATA_DIR", ROOT.parent / "shared" / "data"))
    jobs = [
        (method, str(base / data), var_limit, args.initial_equity)
        for data in args.data
        for var_limit in (False, True)
        for method in METHODS
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(_run, jobs))
    out: dict[str, Any] = {"allocation": ALLOCATION, "risk": RISK, "data": {}}
    per = 2 * len(METHODS)
    for k, data in enumerate(args.data):
        group = rows[k * per : (k + 1) * per]
        out["data"][data] = group
        sample = "in-sample for the strategy" if data.endswith("2021") else "out of sample"
        print(f"{data} ({sample})")
        print(
            f"  {'':26} {'vol':>7} {'maxdd':>7} {'sharpe':>7} {'turnover':>8} {'return':>8} "
            f"{'orders':>7} {'VaR refused':>16}"
        )
        for r in group:
            name = r["method"] + (", VaR 3 %" if r["var_limit"] else ", no VaR limit")
            refused, submitted = r["var_refusals"], r["submitted"]
            share = f"{refused}/{submitted} ({refused / max(submitted, 1):.0%})"
            print(_line(name, r["metrics"], str(r["orders"]), share if r["var_limit"] else "-"))
            if "buy_and_hold" in r:
                print(_line("buy and hold (same gross)", r["buy_and_hold"], "-", "-"))
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
