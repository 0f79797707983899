"""A backtest's files: ``summary.json``, ``trades.csv``, ``equity.csv`` and ``report.html``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantumtrade.backtest.metrics import (
    baseline_accuracy,
    benchmark_curve,
    benchmark_trades,
    group_stats,
    performance,
    signal_accuracy,
)
from quantumtrade.backtest.model import EquityCurve
from quantumtrade.backtest.runner import BacktestResult
from quantumtrade.regime.engine import NO_LABEL, REGIME_ORDER

YEAR_MS = 365 * 24 * 3_600_000
"""Crypto trades every hour of every day: a year is 365 days of bars."""
TOP_SYMBOLS = 4
"""Symbols drawn with their price, regimes and trades in the report (most traded first)."""


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bars_per_year(bar_ms: int) -> float:
    return YEAR_MS / bar_ms


def summarize(
    result: BacktestResult, *, fee_bps: float, run: Mapping[str, Any]
) -> tuple[dict[str, Any], EquityCurve]:
    """The summary (strategy and benchmark with the same keys, signal accuracy beside its
    baseline, by regime, by symbol, run info) and the benchmark's equity curve."""
    candles, curve = result.candles, result.curve
    per_year = bars_per_year(candles.bar_ms)
    initial = result.initial_equity
    strategy = performance(
        curve,
        result.trades,
        initial_equity=initial,
        bars_per_year=per_year,
        traded_notional=result.traded_notional,
        fees=result.fees,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(curve.equity > 0, curve.gross_exposure / curve.equity, 0.0)
    # The benchmark holds the strategy's average gross exposure as a share of equity, up to 1:
    # an unlevered buy-and-hold (a leveraged one wipes out in a sell-off, and its ratios mean
    # nothing past that). summary.json gives the strategy's own mean gross beside it.
    strategy_gross = float(share.mean()) if len(curve) else 0.0
    gross_fraction = min(max(strategy_gross, 0.0), 1.0)
    open_, close = candles.column(0), candles.column(3)
    bench_args: dict[str, Any] = {
        "gross_fraction": gross_fraction,
        "initial_equity": initial,
        "fee_bps": fee_bps,
        "ts_ms": candles.ts_ms,
    }
    bench_curve = benchmark_curve(open_, close, **bench_args)
    bench_trades = benchmark_trades(open_, close, symbols=candles.symbols, **bench_args)
    benchmark = performance(
        bench_curve,
        bench_trades,
        initial_equity=initial,
        bars_per_year=per_year,
        traded_notional=sum(t.notional for t in bench_trades),
        fees=sum(t.fees for t in bench_trades),
    )
    row_of = {s: i for i, s in enumerate(candles.symbols)}
    signals = result.signals
    rows = np.array([row_of[s.symbol] for s in signals], dtype=np.int64)
    bars = np.array([s.bar for s in signals], dtype=np.int64)
    signs = np.array([s.sign for s in signals], dtype=np.int64)
    summary: dict[str, Any] = {
        "strategy": strategy,
        "benchmark": benchmark,
        "benchmark_gross_fraction": gross_fraction,
        "strategy_mean_gross_fraction": strategy_gross,
        "signal_accuracy": signal_accuracy(close, rows, bars, signs),
        "signal_accuracy_baseline": baseline_accuracy(close, signs),
        "signals": len(signals),
        "by_regime": group_stats(result.trades, signals, close, row_of, "regime"),
        "by_symbol": group_stats(result.trades, signals, close, row_of, "symbol"),
        "orders": result.orders,
        "fills": result.fills,
        "rejected_orders": result.rejected_orders,
        "rejected_bars": result.rejected_bars,
        "run": dict(run),
    }
    return summary, bench_curve


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
) -> dict[str, Any]:
    """Write the four files into ``out`` (created) and return the summary."""
    from quantumtrade.backtest.report import PriceTrack, write_report

    out.mkdir(parents=True, exist_ok=True)
    summary, bench = summarize(result, fee_bps=fee_bps, run=run)
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
