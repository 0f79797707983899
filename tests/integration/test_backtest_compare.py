"""``quantumtrade backtest --compare`` on real candles: three BTC/ETH/SOL 1h files of 2024,
a few hundred bars (QT_DATA_DIR; skipped without it, failed under CI=true)."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from quantumtrade.backtest.baselines import random_trade_list, random_trades, regime_blind_config
from quantumtrade.backtest.data import Candles, load_candles
from quantumtrade.backtest.runner import BacktestResult, run_backtest
from quantumtrade.cli import main
from quantumtrade.config import AppConfig, load_config
from quantumtrade.data.datadir import data_dir, missing_data_reason

pytestmark = pytest.mark.data

FOLDER = "candles/binance-spot-1h-2024"
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
END = "2024-01-21"  # 480 bars
SUMMARY_KEYS = {
    "total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_bars", "win_rate", "profit_factor", "expectancy", "avg_hold_bars", "exposure",
    "turnover", "fees", "trades", "final_equity",
}  # fmt: skip


@pytest.fixture(autouse=True)
def need_data() -> None:
    reason = missing_data_reason(data_dir() / FOLDER)
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures structlog for the process; in pytest that would bind it to this
    test's captured stdout, closed once the test ends."""
    monkeypatch.setattr("quantumtrade.logs.configure_logging", lambda *a, **k: None)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Every default (not the working directory's quantumtrade.toml)."""
    path = tmp_path / "defaults.toml"
    path.write_text("")
    return path


def first_bars(n: int) -> Candles:
    return load_candles([FOLDER], symbols=SYMBOLS.split(",")).window(0, n)


def run(cfg: AppConfig, candles: Candles) -> BacktestResult:
    return asyncio.run(run_backtest(cfg, candles))


def backtest(config: Path, out: Path, *extra: str) -> dict[str, Any]:
    argv = ["backtest", "--data", FOLDER, "--symbols", SYMBOLS, "--config", str(config),
            "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_compare_writes_three_baselines_with_the_strategys_keys(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = backtest(config, tmp_path / "cmp", "--to", END, "--compare", "--random-seeds", "7")
    strategy = summary["strategy"]
    assert set(strategy) == SUMMARY_KEYS
    assert set(summary["baselines"]) == {"regime_blind", "random", "buy_and_hold"}
    for name, metrics in summary["baselines"].items():
        assert list(metrics) == list(strategy), name
    assert strategy["trades"] > 10
    random = summary["baselines"]["random"]
    assert random["trades"] == strategy["trades"]
    assert random["avg_hold_bars"] == pytest.approx(strategy["avg_hold_bars"])
    assert summary["baselines"]["buy_and_hold"] == summary["benchmark"]
    spread = summary["random_spread"]
    assert spread["seeds"] == 7
    assert spread["sharpe"]["defined_in"] == 7 and spread["sharpe"]["std"] > 0.0
    assert spread["total_return"]["min"] <= random["total_return"] <= spread["total_return"]["max"]
    printed = capsys.readouterr().out
    assert "regime-blind" in printed and "random (7)" in printed and "buy & hold" in printed

    # The regime-blind column is its own run of the same bars with regime_blind = true ...
    cfg = load_config(config)
    blind = run(regime_blind_config(cfg), first_bars(480))
    assert summary["baselines"]["regime_blind"]["trades"] == len(blind.trades)
    assert summary["baselines"]["regime_blind"]["final_equity"] == pytest.approx(
        float(blind.curve.equity[-1]), rel=1e-12
    )
    # ... and withholding the regime does change the decisions (else the column proves nothing).
    assert summary["baselines"]["regime_blind"] != strategy


def test_without_compare_there_are_no_baselines_and_nothing_else_moves(
    config: Path, tmp_path: Path
) -> None:
    plain = backtest(config, tmp_path / "plain", "--to", END)
    compared = backtest(config, tmp_path / "cmp", "--to", END, "--compare", "--random-seeds", "2")
    assert "baselines" not in plain and "random_spread" not in plain
    for key in ("strategy", "benchmark", "signal_accuracy", "by_symbol"):
        assert plain[key] == compared[key], key


def test_random_baseline_mirrors_the_real_strategys_trades(config: Path) -> None:
    cfg = load_config(config)
    result = run(cfg, first_bars(480))
    assert len(result.trades) > 10
    draws = random_trades(
        result.candles, result.trades, seeds=range(20), bar_fill=cfg.execution.bar_fill
    )
    for i in range(20):
        mine = random_trade_list(result.candles, draws, i)
        assert len(mine) == len(result.trades)
        assert Counter(t.side for t in mine) == Counter(t.side for t in result.trades)
        assert Counter(t.hold_bars for t in mine) == Counter(t.hold_bars for t in result.trades)
        assert sum(t.notional for t in mine) == pytest.approx(
            sum(t.notional for t in result.trades), rel=1e-9
        )


def test_walk_forward_compare_scores_the_test_window_only(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "wf"
    code = main(
        ["backtest", "--data", FOLDER, "--symbols", SYMBOLS, "--config", str(config),
         "--out", str(out), "--warmup", "150", "--compare", "--random-seeds", "3",
         "--train", "2024-01-08:2024-01-20", "--test", "2024-01-20:2024-02-01"]
    )  # fmt: skip
    assert code == 0
    inside = json.loads((out / "in_sample" / "summary.json").read_text())
    outside = json.loads((out / "out_of_sample" / "summary.json").read_text())
    assert "baselines" not in inside
    assert set(outside["baselines"]) == {"regime_blind", "random", "buy_and_hold"}
    assert outside["baselines"]["random"]["trades"] == outside["strategy"]["trades"]
    both = json.loads((out / "walk_forward.json").read_text())
    assert both["out_of_sample"]["baselines"] == outside["baselines"]
    assert "baselines" not in both["in_sample"]
