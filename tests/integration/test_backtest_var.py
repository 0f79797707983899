"""The VaR limit inside a backtest, and the VaR backtest's forecasts and realised P&L.

A synthetic market of three trending random walks through ``run_backtest`` (the daemon's
trading core). Oracles: each forecast recomputed from the candles' closes and the ledger's
positions at that bar; each bar's P&L from the closes. Negative control: the same run with
the limit off refuses nothing for VaR.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest

from quantumtrade.backtest.data import Candles, from_arrays
from quantumtrade.backtest.metrics import kupiec_pof
from quantumtrade.backtest.outputs import write_outputs
from quantumtrade.backtest.runner import BacktestResult, Ledger, run_backtest
from quantumtrade.config import AppConfig
from quantumtrade.core import TradingCore
from quantumtrade.risk.var import historical_var

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000
SYMBOLS = ("AAA/USDT", "BBB/USDT", "CCC/USDT")
BARS = 700
WARMUP = 300
WINDOW = 200


def market(seed: int = 3) -> Candles:
    """(bars, symbols, 5) random walks whose drift changes sign every 40 bars."""
    rng = np.random.default_rng(seed)
    out = np.empty((BARS, len(SYMBOLS), 5))
    for j in range(len(SYMBOLS)):
        drift = np.repeat(rng.choice([-0.006, 0.006, 0.0], size=BARS // 40 + 1), 40)[:BARS]
        close = 100.0 * np.exp(np.cumsum(drift + rng.normal(0, 0.01, BARS)))
        open_ = np.concatenate(([100.0], close[:-1]))
        top = np.maximum(open_, close) * 1.002
        bottom = np.minimum(open_, close) * 0.998
        volume = np.full(BARS, 1e6)
        out[:, j] = np.stack((open_, top, bottom, close, volume), axis=1)
    ts = START_MS + np.arange(BARS, dtype=np.int64) * HOUR_MS
    return from_arrays(SYMBOLS, ts, out, HOUR_MS)


def config(**risk: object) -> AppConfig:
    base = AppConfig()
    return msgspec.structs.replace(
        base,
        data=msgspec.structs.replace(base.data, capacity=WARMUP),
        scanner=msgspec.structs.replace(base.scanner, min_abs_score=0.05, min_bars=40),
        risk=msgspec.structs.replace(
            base.risk, var_window=WINDOW, var_min_observations=100, **risk
        ),
    )


async def run(cfg: AppConfig, candles: Candles) -> tuple[BacktestResult, list[np.ndarray]]:
    held: list[np.ndarray] = []

    def observe(bar: int, core: TradingCore, ledger: Ledger, equity: float) -> None:
        held.append(ledger.quantity.copy())

    result = await run_backtest(
        cfg, candles, initial_equity=100_000.0, trade_from=WARMUP, observe=observe
    )
    return result, held


@pytest.fixture(scope="module")
def candles() -> Candles:
    return market()


async def test_the_forecast_is_the_books_var_on_the_closes_and_the_pnl_is_the_next_bars(
    candles: Candles,
) -> None:
    result, held = await run(config(), candles)
    close = candles.prices[:, :, 3]
    returns = close[1:] / close[:-1] - 1.0  # returns[t - 1]: bar t over bar t - 1
    forecast = result.var_forecast[0.99]
    assert forecast.shape == (BARS - WARMUP,) and result.book_pnl.shape == forecast.shape
    checked = 0
    for i, qty in enumerate(held):
        t = WARMUP + i
        values = qty * close[t]
        if not values.any():
            assert forecast[i] == 0.0
            continue
        pnl = returns[t - WINDOW : t] @ values  # the newest WINDOW returns up to bar t
        assert forecast[i] == pytest.approx(historical_var(pnl, 0.99), rel=1e-9)
        assert result.var_forecast[0.95][i] == pytest.approx(historical_var(pnl, 0.95), rel=1e-9)
        if t + 1 < BARS:
            realised = float(qty @ (close[t + 1] - close[t]))
            assert result.book_pnl[i] == pytest.approx(realised, rel=1e-9, abs=1e-9)
        checked += 1
    assert checked > 100  # the strategy held something on most bars
    assert math.isnan(result.book_pnl[-1])


async def test_a_tight_var_limit_binds_in_the_backtest_and_is_counted_by_reason(
    candles: Candles,
) -> None:
    free, _ = await run(config(), candles)
    bound, held = await run(config(max_var_99=0.01), candles)
    # Negative control: no VaR refusal without the limit.
    assert "var_limit" not in free.rejected_orders and "es_limit" not in free.rejected_orders
    assert bound.rejected_orders.get("var_limit", 0) > 0
    assert bound.orders < free.orders
    # Held books stay near the limit: 1-day VaR (√24 one-bar VaRs) over 1 % of equity only by
    # what moved since the entries (marks and returns change after an order passes).
    one_day = np.sqrt(24.0) * bound.var_forecast[0.99]
    equity = bound.curve.equity
    over = one_day > 0.01 * equity * 1.5
    assert over.mean() < 0.05
    assert (np.sqrt(24.0) * free.var_forecast[0.99] > 0.01 * free.curve.equity).any()
    assert len(held) == BARS - WARMUP


async def test_summary_and_report_carry_the_var_backtest(candles: Candles, tmp_path: Path) -> None:
    result, _ = await run(config(), candles)
    summary = write_outputs(tmp_path, result, fee_bps=10.0, run={}, command="test")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["var_backtest"] == summary["var_backtest"]
    for level in (0.99, 0.95):
        var, pnl = result.var_forecast[level], result.book_pnl
        used = np.isfinite(var) & np.isfinite(pnl) & ((var != 0) | (pnl != 0))
        hits = int((pnl[used] < -var[used]).sum())
        got = on_disk["var_backtest"][f"{level:g}"]
        assert got["observations"] == int(used.sum()) > 100
        assert got["exceedances"] == hits
        assert got["kupiec_lr"] == pytest.approx(kupiec_pof(int(used.sum()), hits, level).statistic)
    html = (tmp_path / "report.html").read_text()
    assert "<h2>VaR backtest</h2>" in html and "Kupiec LR" in html
