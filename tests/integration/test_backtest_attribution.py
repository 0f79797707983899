"""Attribution of a whole backtest: PnL breakdowns that reconcile with the equity, trades
labelled with the cluster the risk manager had when they were opened, and Brinson effects
whose returns are the equity curve's and the candles' own; summary.json and report.html."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest

from quantumtrade.allocation.allocator import AllocationMethod
from quantumtrade.backtest.data import load_candles
from quantumtrade.backtest.outputs import summarize, write_outputs
from quantumtrade.backtest.runner import BacktestResult, Ledger, run_backtest
from quantumtrade.config import load_config
from quantumtrade.core import TradingCore
from tests.integration.test_allocation_backtest import ALLOCATION, correlated_prices
from tests.integration.test_backtest import SYMBOLS, config_file, write_candles

BREAKDOWNS = ("by_strategy", "by_symbol", "by_regime", "by_cluster")


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("quantumtrade.logs.configure_logging", lambda *a, **k: None)


def assert_reconciles(attribution: dict[str, object], result: BacktestResult) -> None:
    change = float(result.curve.equity[-1]) - result.initial_equity
    scale = sum(abs(t.pnl) for t in result.trades) + result.fees
    tolerance = 1e-9 * scale  # float error of the sums only
    total = attribution["total_pnl"]
    assert isinstance(total, float)
    assert abs(total - change) <= tolerance, (total, change)
    assert abs(attribution["equity_change"] - change) <= tolerance  # type: ignore[operator]
    for key in BREAKDOWNS:
        parts = attribution[key]
        assert isinstance(parts, dict) and parts, key
        assert abs(math.fsum(parts.values()) - total) <= tolerance, key
    assert list(attribution["by_strategy"]) == [result.attribution["strategy"]]  # type: ignore[call-overload]


def assert_brinson_is_the_curves(brinson: dict[str, float], result: BacktestResult) -> None:
    equity = result.curve.equity
    strategy = float((equity[1:] / equity[:-1] - 1.0).sum())
    close = result.candles.column(3)  # (symbols, bars), every symbol priced on every bar
    bench = float((close[:, 1:] / close[:, :-1] - 1.0).mean(axis=0).sum())
    assert brinson["bars"] == len(equity) - 1
    assert brinson["portfolio_return"] == pytest.approx(strategy, abs=1e-12)
    assert brinson["benchmark_return"] == pytest.approx(bench, abs=1e-12)
    parts = sum(brinson[k] for k in ("allocation", "selection", "interaction", "trading"))
    assert parts == pytest.approx(brinson["active_return"], abs=1e-12)
    assert brinson["active_return"] == pytest.approx(strategy - bench, abs=1e-12)


async def test_clustered_run_attributes_to_the_clusters_at_entry(tmp_path: Path) -> None:
    data = write_candles(tmp_path / "candles", correlated_prices(360, seed=11), SYMBOLS)
    cfg = load_config(config_file(tmp_path, data, ALLOCATION))
    candles = load_candles([str(data)], symbols=SYMBOLS)
    clusters_at: dict[int, dict[str, str]] = {}

    def observe(bar: int, core: TradingCore, ledger: Ledger, equity: float) -> None:
        # Before this bar's decision: the clusters of the decision whose orders filled here.
        clusters_at[bar] = dict(core.risk.clusters)

    result = await run_backtest(cfg, candles, observe=observe)
    assert len(result.trades) > 10
    for t in result.trades:
        if t.exit_reason == "end_of_data" and t.entry_bar == t.exit_bar and not t.quantity:
            continue
        assert t.cluster == clusters_at[t.entry_bar].get(t.symbol, t.symbol), t
    clustered = [t for t in result.trades if t.cluster != t.symbol]
    assert clustered, "no trade was opened inside a correlation cluster"
    summary, _ = summarize(result, fee_bps=10.0, run={})
    attribution = summary["attribution"]
    assert_reconciles(attribution, result)
    assert any(name.startswith("corr:") for name in attribution["by_cluster"])
    brinson = attribution["brinson"]
    assert_brinson_is_the_curves(brinson, result)
    # Clusters of several symbols: a choice within one is selection (or interaction).
    assert abs(brinson["selection"]) + abs(brinson["interaction"]) > 1e-6


async def test_unclustered_run_has_one_symbol_segments(tmp_path: Path) -> None:
    data = write_candles(tmp_path / "candles", correlated_prices(360, seed=11), SYMBOLS)
    cfg = load_config(config_file(tmp_path, data, ALLOCATION))
    plain = msgspec.structs.replace(
        cfg,
        allocation=msgspec.structs.replace(
            cfg.allocation, method=AllocationMethod.NONE, hedge_symbol=""
        ),
    )
    candles = load_candles([str(data)], symbols=SYMBOLS)
    result = await run_backtest(plain, candles)
    assert result.trades
    assert all(t.cluster == t.symbol for t in result.trades)
    summary, _ = summarize(result, fee_bps=10.0, run={})
    attribution = summary["attribution"]
    assert_reconciles(attribution, result)
    assert set(attribution["by_cluster"]) == {t.symbol for t in result.trades}
    brinson = attribution["brinson"]
    assert_brinson_is_the_curves(brinson, result)
    # A one-symbol segment's return is its symbol's: nothing to select.
    assert abs(brinson["selection"]) < 1e-12
    assert abs(brinson["interaction"]) < 1e-12


async def test_summary_json_and_report_carry_the_attribution(tmp_path: Path) -> None:
    data = write_candles(tmp_path / "candles", correlated_prices(360, seed=11), SYMBOLS)
    cfg = load_config(config_file(tmp_path, data, ALLOCATION))
    result = await run_backtest(cfg, load_candles([str(data)], symbols=SYMBOLS))
    out = tmp_path / "out"
    write_outputs(out, result, fee_bps=10.0, run={}, command="quantumtrade backtest")
    summary = json.loads((out / "summary.json").read_text())
    attribution = summary["attribution"]
    assert set(attribution) >= {*BREAKDOWNS, "total_pnl", "equity_change", "brinson"}
    assert set(attribution["brinson"]) >= {
        "segments", "allocation", "selection", "interaction", "active_return",
    }  # fmt: skip
    assert attribution["brinson"]["segments"] == "cluster"
    html = (out / "report.html").read_text()
    section = html.split("<h2>Attribution</h2>", 1)[1].split("</section>", 1)[0]
    assert "<svg" in section
    assert "Allocation" in section and "Selection" in section
    for name in attribution["by_cluster"]:
        assert name in section
    assert np.isfinite(attribution["brinson"]["active_return"])
