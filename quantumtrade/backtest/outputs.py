"""A backtest's files: ``summary.json``, ``trades.csv``, ``equity.csv`` and ``report.html``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantumtrade.backtest.attribution import attribution_summary
from quantumtrade.backtest.baselines import Comparison, baselines, buy_and_hold, result_performance
from quantumtrade.backtest.metrics import (
    baseline_accuracy,
    exit_stats,
    group_stats,
    signal_accuracy,
    var_backtest,
)
from quantumtrade.backtest.model import EquityCurve
from quantumtrade.backtest.runner import BacktestResult
from quantumtrade.regime.model import NO_LABEL, REGIME_ORDER

YEAR_MS = 365 * 24 * 3_600_000
"""Crypto trades every hour of every day: a year is 365 days of bars."""
TOP_SYMBOLS = 4
"""Symbols drawn with their price, regimes and trades in the report (most traded first)."""


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bars_per_year(bar_ms: int) -> float:
    return YEAR_MS / bar_ms


def summarize(
    result: BacktestResult,
    *,
    fee_bps: float,
    run: Mapping[str, Any],
    compare: Comparison | None = None,
) -> tuple[dict[str, Any], EquityCurve]:
    """The summary (strategy and benchmark with the same keys, signal accuracy beside its
    baseline, by regime, by symbol, run info; with ``compare``, the baselines with the same
    keys again) and the benchmark's equity curve."""
    candles = result.candles
    per_year = bars_per_year(candles.bar_ms)
    strategy = result_performance(result, bars_per_year=per_year)
    bench = buy_and_hold(result, bars_per_year=per_year, fee_bps=fee_bps)
    benchmark = bench.metrics
    gross_fraction, strategy_gross = bench.gross_fraction, bench.strategy_gross
    compared: dict[str, Any] = {}
    if compare is not None:
        compared["baselines"], compared["random_spread"] = baselines(
            result, compare, bars_per_year=per_year, strategy=strategy, buy_and_hold=benchmark
        )
    close = candles.column(3)
    row_of = {s: i for i, s in enumerate(candles.symbols)}
    signals = result.signals
    rows = np.array([row_of[s.symbol] for s in signals], dtype=np.int64)
    bars = np.array([s.bar for s in signals], dtype=np.int64)
    signs = np.array([s.sign for s in signals], dtype=np.int64)
    summary: dict[str, Any] = {
        "strategy": strategy,
        "benchmark": benchmark,
        "attribution": attribution_summary(
            result.trades,
            result.attribution,
            initial_equity=result.initial_equity,
            final_equity=float(result.curve.equity[-1]) if len(result.curve) else None,
        ),
        **compared,
        "benchmark_gross_fraction": gross_fraction,
        "strategy_mean_gross_fraction": strategy_gross,
        "signal_accuracy": signal_accuracy(close, rows, bars, signs),
        "signal_accuracy_baseline": baseline_accuracy(close, signs),
        "signals": len(signals),
        "by_regime": group_stats(result.trades, signals, close, row_of, "regime"),
        "by_symbol": group_stats(result.trades, signals, close, row_of, "symbol"),
        "by_exit_reason": exit_stats(result.trades),
        "var_backtest": var_backtest(result.var_forecast, result.book_pnl),
        "allocation": result.allocation,
        "orders": result.orders,
        "fills": result.fills,
        "rejected_orders": result.rejected_orders,
        "rejected_bars": result.rejected_bars,
        "run": dict(run),
    }
    return summary, bench.curve


def write_trades(path: Path, result: BacktestResult) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "entry_time", "exit_time", "symbol", "side", "quantity", "entry_price",
                "exit_price", "fees", "pnl", "regime_at_entry", "exit_reason", "hold_bars",
            ]
        )  # fmt: skip
        for t in result.trades:
            w.writerow(
                [
                    iso(t.entry_ts_ms), iso(t.exit_ts_ms), t.symbol, t.side, repr(t.quantity),
                    repr(t.entry_price), repr(t.exit_price), f"{t.fees:.8f}", f"{t.pnl:.8f}",
                    t.regime or "", t.exit_reason, t.hold_bars,
                ]
            )  # fmt: skip


def write_equity(path: Path, curve: EquityCurve) -> None:
    dd = curve.drawdown
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "cash", "position_value", "equity", "gross_exposure", "drawdown"])
        for i in range(len(curve)):
            w.writerow(
                [
                    iso(int(curve.ts_ms[i])), f"{curve.cash[i]:.8f}",
                    f"{curve.position_value[i]:.8f}", f"{curve.equity[i]:.8f}",
                    f"{curve.gross_exposure[i]:.8f}", f"{dd[i]:.10f}",
                ]
            )  # fmt: skip


def write_outputs(
    out: Path,
    result: BacktestResult,
    *,
    fee_bps: float,
    run: Mapping[str, Any],
    command: str,
    title: str = "QuantumTrade backtest",
    compare: Comparison | None = None,
) -> dict[str, Any]:
    """Write the four files into ``out`` (created) and return the summary."""
    from quantumtrade.backtest.report import PriceTrack, write_report

    out.mkdir(parents=True, exist_ok=True)
    summary, bench = summarize(result, fee_bps=fee_bps, run=run, compare=compare)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_trades(out / "trades.csv", result)
    write_equity(out / "equity.csv", result.curve)
    candles = result.candles
    traded: dict[str, int] = {}
    for t in result.trades:
        traded[t.symbol] = traded.get(t.symbol, 0) + 1
    top = sorted(traded, key=lambda s: (-traded[s], s))[:TOP_SYMBOLS] or list(
        candles.symbols[:TOP_SYMBOLS]
    )
    close = candles.column(3)
    names: list[str | None] = [r.value for r in REGIME_ORDER]
    prices = {}
    for symbol in top:
        row = candles.symbols.index(symbol)
        codes = result.regimes[row]
        labels = [None if c == NO_LABEL else names[c] for c in codes.tolist()]
        prices[symbol] = PriceTrack(ts_ms=candles.ts_ms, close=close[row], regime=labels)
    write_report(
        out / "report.html",
        title=title,
        summary=summary,
        curve=result.curve,
        benchmark=bench,
        trades=result.trades,
        prices=prices,
        command=command,
    )
    return summary
