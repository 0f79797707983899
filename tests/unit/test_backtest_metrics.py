"""Backtest metrics against arithmetic done by hand on small curves, trades and closes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from quantumtrade.backtest.metrics import (
    baseline_accuracy,
    benchmark_curve,
    benchmark_trades,
    exit_stats,
    group_stats,
    performance,
    signal_accuracy,
)
from quantumtrade.backtest.model import EquityCurve, SignalRecord, Trade

KEYS = [
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_bars",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_hold_bars",
    "exposure",
    "turnover",
    "fees",
    "trades",
    "final_equity",
]
TIGHT = 1e-9


def curve_of(equity: list[float], gross: list[float] | None = None) -> EquityCurve:
    n = len(equity)
    eq = np.array(equity, dtype=np.float64)
    exposure = np.array(gross if gross is not None else [0.0] * n, dtype=np.float64)
    return EquityCurve(
        ts_ms=np.arange(n, dtype=np.int64) * 3_600_000,
        cash=eq - exposure,
        position_value=exposure,
        equity=eq,
        gross_exposure=exposure,
    )


def trade(
    pnl: float,
    entry_bar: int = 0,
    exit_bar: int = 1,
    symbol: str = "BTC",
    regime: str | None = None,
    exit_reason: str = "signal",
) -> Trade:
    return Trade(
        symbol=symbol,
        side="LONG",
        entry_ts_ms=entry_bar * 3_600_000,
        exit_ts_ms=exit_bar * 3_600_000,
        entry_bar=entry_bar,
        exit_bar=exit_bar,
        quantity=1.0,
        entry_price=100.0,
        exit_price=100.0 + pnl,
        fees=0.0,
        pnl=pnl,
        regime=regime,
        exit_reason=exit_reason,
    )


def score(
    equity: list[float],
    trades: list[Trade] | None = None,
    *,
    gross: list[float] | None = None,
    initial_equity: float = 100.0,
    bars_per_year: float = 25.0,
) -> dict[str, float | int | None]:
    return performance(
        curve_of(equity, gross),
        trades or [],
        initial_equity=initial_equity,
        bars_per_year=bars_per_year,
        traded_notional=0.0,
        fees=0.0,
    )


def assert_json_safe(summary: object) -> None:
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary


# --- performance: one fixture, every key by hand ----------------------------------------------

# Returns of [100, 110, 99, 99, 108.9, 119.79]: +0.1, -0.1, 0, +0.1, +0.1.
MAIN_EQUITY = [110.0, 99.0, 99.0, 108.9, 119.79]
MAIN_GROSS = [0.0, 50.0, 50.0, 0.0, 80.0]
# pnl 10, -5, 0, 15; holds 2, 1, 3, 1 bars.
MAIN_TRADES = [trade(10.0, 0, 2), trade(-5.0, 2, 3), trade(0.0, 1, 4), trade(15.0, 3, 4)]


@pytest.fixture
def main_summary() -> dict[str, float | int | None]:
    return performance(
        curve_of(MAIN_EQUITY, MAIN_GROSS),
        MAIN_TRADES,
        initial_equity=100.0,
        bars_per_year=25.0,  # sqrt(25) = 5 keeps the annualisation readable
        traded_notional=250.0,
        fees=1.25,
    )


def test_keys_are_exactly_the_documented_ones_in_order(main_summary: dict[str, object]) -> None:
    assert list(main_summary) == KEYS


def test_every_value_is_a_python_float_int_or_none(main_summary: dict[str, object]) -> None:
    for key, value in main_summary.items():
        assert value is None or type(value) in (float, int), (key, type(value))
    assert type(main_summary["trades"]) is int
    assert type(main_summary["max_drawdown_bars"]) is int


def test_returns_based_metrics_by_hand(main_summary: dict[str, float | None]) -> None:
    # mean r = (0.1 - 0.1 + 0 + 0.1 + 0.1) / 5 = 0.04
    # deviations 0.06, -0.14, -0.04, 0.06, 0.06: squares sum 3*0.0036 + 0.0196 + 0.0016 = 0.032
    # sample variance 0.032 / 4 = 0.008
    expected_volatility = math.sqrt(0.008) * 5  # = sqrt(0.2) = 0.4472135955
    expected_sharpe = 0.04 / math.sqrt(0.008) * 5  # = sqrt(5) = 2.2360679775
    # downside: only -0.1 is below 0 -> mean of squares over all 5 returns = 0.01 / 5 = 0.002
    expected_sortino = 0.04 / math.sqrt(0.002) * 5  # = sqrt(20) = 4.472135955
    assert main_summary["volatility"] == pytest.approx(0.4472135955, rel=TIGHT)
    assert main_summary["volatility"] == pytest.approx(expected_volatility, rel=TIGHT)
    assert main_summary["sharpe"] == pytest.approx(2.2360679775, rel=TIGHT)
    assert main_summary["sharpe"] == pytest.approx(expected_sharpe, rel=TIGHT)
    assert main_summary["sortino"] == pytest.approx(4.4721359550, rel=TIGHT)
    assert main_summary["sortino"] == pytest.approx(expected_sortino, rel=TIGHT)


def test_return_and_growth_by_hand(main_summary: dict[str, float | None]) -> None:
    assert main_summary["final_equity"] == pytest.approx(119.79, rel=TIGHT)
    assert main_summary["total_return"] == pytest.approx(0.1979, rel=TIGHT)
    # 5 bars at 25 bars a year: growth ** (25 / 5) - 1; 1.1979**5 = 2.46662327...
    assert main_summary["cagr"] == pytest.approx(1.1979**5 - 1, rel=TIGHT)
    assert main_summary["cagr"] == pytest.approx(1.46662327, rel=1e-8)


def test_drawdown_and_calmar_by_hand(main_summary: dict[str, float | None]) -> None:
    # peak 110 from bar 0; 99 -> 1 - 99/110 = 0.1; 108.9 -> 0.01; 119.79 is a new high.
    assert main_summary["max_drawdown"] == pytest.approx(0.1, rel=TIGHT)
    # bars 1, 2 and 3 (99, 99, 108.9) are below 110
    assert main_summary["max_drawdown_bars"] == 3
    assert main_summary["calmar"] == pytest.approx((1.1979**5 - 1) / 0.1, rel=TIGHT)


def test_trade_metrics_by_hand(main_summary: dict[str, float | None]) -> None:
    assert main_summary["trades"] == 4
    assert main_summary["win_rate"] == pytest.approx(2 / 4, rel=TIGHT)  # a pnl of 0 is no win
    assert main_summary["profit_factor"] == pytest.approx((10 + 15) / 5, rel=TIGHT)
    assert main_summary["expectancy"] == pytest.approx((10 - 5 + 0 + 15) / 4, rel=TIGHT)
    assert main_summary["avg_hold_bars"] == pytest.approx((2 + 1 + 3 + 1) / 4, rel=TIGHT)


def test_book_metrics_by_hand(main_summary: dict[str, float | None]) -> None:
    assert main_summary["exposure"] == pytest.approx(3 / 5, rel=TIGHT)  # gross > 0 on 3 of 5
    assert main_summary["turnover"] == pytest.approx(250 / 100, rel=TIGHT)
    assert main_summary["fees"] == pytest.approx(1.25, rel=TIGHT)


def test_main_summary_round_trips_through_strict_json(main_summary: dict[str, object]) -> None:
    assert_json_safe(main_summary)


# --- performance: edge cases ---------------------------------------------------------------------


def test_no_trades_leaves_trade_metrics_none() -> None:
    summary = score(MAIN_EQUITY)
    assert summary["trades"] == 0
    for key in ("win_rate", "profit_factor", "expectancy", "avg_hold_bars"):
        assert summary[key] is None, key
    assert summary["sharpe"] == pytest.approx(math.sqrt(5), rel=TIGHT)  # the curve still scores
    assert_json_safe(summary)


def test_flat_equity_has_no_sharpe_or_sortino() -> None:
    summary = score([100.0] * 6)
    assert summary["volatility"] == 0.0
    assert summary["sharpe"] is None
    assert summary["sortino"] is None
    assert summary["total_return"] == 0.0
    assert summary["cagr"] == 0.0
    assert summary["max_drawdown"] == 0.0
    assert summary["max_drawdown_bars"] == 0
    assert summary["calmar"] is None
    assert summary["exposure"] == 0.0
    assert_json_safe(summary)


def test_constant_return_is_not_given_a_huge_sharpe_by_rounding_noise() -> None:
    # +3% every bar: the float returns differ in the last bits, not by any risk.
    equity = (100.0 * np.cumprod(np.full(6, 1.03))).tolist()
    noisy = np.diff([100.0, *equity]) / np.array([100.0, *equity[:-1]])
    assert 0.0 < float(np.std(noisy, ddof=1)) < 1e-15  # the fixture does carry the noise
    summary = score(equity)
    assert summary["sharpe"] is None
    assert summary["volatility"] == 0.0
    assert summary["total_return"] == pytest.approx(1.03**6 - 1, rel=TIGHT)


def test_never_underwater_has_zero_drawdown_and_no_calmar() -> None:
    summary = score([101.0, 103.0, 104.0, 108.0])
    assert summary["max_drawdown"] == 0.0
    assert summary["max_drawdown_bars"] == 0
    assert summary["calmar"] is None
    assert summary["sortino"] is None  # no negative return: no downside deviation
    # growth 1.08 over 4 bars at 25 bars a year
    assert summary["cagr"] == pytest.approx(1.08 ** (25 / 4) - 1, rel=TIGHT)
    assert_json_safe(summary)


def test_known_drawdown_of_exactly_a_fifth_over_three_bars() -> None:
    # peak 125; 110, 100, 105 are under it (3 bars); trough 100 = 1 - 100/125 = 0.2
    summary = score([100.0, 125.0, 110.0, 100.0, 105.0, 130.0])
    assert summary["max_drawdown"] == pytest.approx(0.2, rel=TIGHT)
    assert summary["max_drawdown_bars"] == 3
    # negative control: a shallower, shorter dip scores differently
    shallow = score([100.0, 125.0, 110.0, 130.0])
    assert shallow["max_drawdown"] == pytest.approx(0.12, rel=TIGHT)  # 1 - 110/125
    assert shallow["max_drawdown_bars"] == 1


def test_peak_includes_initial_equity_and_longest_run_wins() -> None:
    # under 100 at bar 0 (run of 1), back at 100 on bar 1, then under for bars 2, 3, 4
    summary = score([90.0, 100.0, 95.0, 94.0, 93.0, 100.0])
    assert summary["max_drawdown"] == pytest.approx(0.1, rel=TIGHT)  # 1 - 90/100
    assert summary["max_drawdown_bars"] == 3


def test_fewer_than_two_returns_leave_dispersion_metrics_none() -> None:
    summary = score([110.0])
    assert summary["volatility"] is None
    assert summary["sharpe"] is None
    assert summary["sortino"] is None
    assert summary["cagr"] == pytest.approx(1.1**25 - 1, rel=TIGHT)
    assert_json_safe(summary)


def test_empty_curve() -> None:
    summary = score([])
    assert summary["final_equity"] == 100.0
    assert summary["total_return"] == 0.0
    assert summary["cagr"] is None
    assert summary["exposure"] is None
    assert summary["max_drawdown"] == 0.0
    assert summary["max_drawdown_bars"] == 0
    assert summary["volatility"] is None
    assert_json_safe(summary)


def test_equity_through_zero_gives_none_not_inf() -> None:
    # 100 -> 0 -> 50: the second return divides by 0
    summary = score([100.0, 0.0, 50.0])
    assert summary["sharpe"] is None
    assert summary["sortino"] is None
    assert summary["volatility"] is None
    assert summary["max_drawdown"] == pytest.approx(1.0, rel=TIGHT)
    assert summary["max_drawdown_bars"] == 2
    assert summary["cagr"] is None  # equity touched 0: ruin, no growth rate after it
    assert_json_safe(summary)


def test_negative_final_equity_has_no_cagr_or_calmar() -> None:
    summary = score([50.0, -10.0])
    assert summary["cagr"] is None
    assert summary["calmar"] is None
    assert summary["total_return"] == pytest.approx(-1.1, rel=TIGHT)
    assert_json_safe(summary)


def test_profit_factor_without_losers_is_none_and_without_winners_zero() -> None:
    no_losers = score(MAIN_EQUITY, [trade(3.0), trade(0.0)])
    assert no_losers["profit_factor"] is None
    assert no_losers["win_rate"] == pytest.approx(0.5, rel=TIGHT)
    no_winners = score(MAIN_EQUITY, [trade(-3.0), trade(-1.0)])
    assert no_winners["profit_factor"] == 0.0
    assert no_winners["win_rate"] == 0.0
    assert no_winners["expectancy"] == pytest.approx(-2.0, rel=TIGHT)


def test_non_positive_initial_equity_is_a_fault() -> None:
    with pytest.raises(ValueError, match="initial_equity"):
        score(MAIN_EQUITY, initial_equity=0.0)


# --- signal accuracy ----------------------------------------------------------------------------

NAN = math.nan
# row 0: 100, 101, 99, 99, 110;  row 1: 50, NaN, 45, 46, 44
CLOSE = np.array([[100.0, 101.0, 99.0, 99.0, 110.0], [50.0, NAN, 45.0, 46.0, 44.0]])
# a: row 0 bar 0 +1 | b: row 0 bar 2 -1 | c: row 1 bar 0 -1 | d: row 1 bar 2 +1 | e: row 1 bar 1 +1
ROWS = np.array([0, 0, 1, 1, 1], dtype=np.int64)
BARS = np.array([0, 2, 0, 2, 1], dtype=np.int64)
SIGNS = np.array([1, -1, -1, 1, 1], dtype=np.int8)


def test_signal_accuracy_by_hand() -> None:
    accuracy = signal_accuracy(CLOSE, ROWS, BARS, SIGNS, horizons=(1, 2, 4, 5))
    # h=1: a 101/100 up, right | b 99/99 = 0, wrong | c NaN, out | d 46/45 up, right | e NaN, out
    assert accuracy["1"] == pytest.approx(2 / 3, rel=TIGHT)
    # h=2: a 99/100 down, wrong | b 110/99 up, wrong | c 45/50 down, right | d 44/45, wrong
    assert accuracy["2"] == pytest.approx(1 / 4, rel=TIGHT)
    # h=4: a 110/100 up, right | c 44/50 down, right | b, d past the end | e NaN
    assert accuracy["4"] == pytest.approx(2 / 2, rel=TIGHT)
    # h=5: every bar + 5 is past the last bar (4)
    assert accuracy["5"] is None
    assert list(accuracy) == ["1", "2", "4", "5"]
    assert_json_safe(accuracy)


def test_signal_accuracy_default_horizons_past_the_end_are_none() -> None:
    accuracy = signal_accuracy(CLOSE, ROWS, BARS, SIGNS.astype(np.int64))
    assert accuracy == {"1": pytest.approx(2 / 3, rel=TIGHT), "6": None, "24": None}


def test_zero_forward_return_is_wrong_for_either_sign() -> None:
    # flipping every sign would give 1 - 2/3 if a zero return counted for one side; it gives 0
    flipped = signal_accuracy(CLOSE, ROWS, BARS, -SIGNS, horizons=(1,))
    assert flipped["1"] == 0.0


def test_signal_accuracy_rejects_a_zero_sign() -> None:
    with pytest.raises(ValueError, match="signs"):
        signal_accuracy(CLOSE, ROWS, BARS, np.array([1, 0, -1, 1, 1]), horizons=(1,))


def test_baseline_accuracy_by_hand() -> None:
    # long share w+ = 3/5, short share w- = 2/5
    baseline = baseline_accuracy(CLOSE, SIGNS, horizons=(1, 2, 4, 5))
    # h=1 pairs: row 0: up, down, zero, up; row 1: NaN, NaN, up, down -> 6 defined, 3 up, 2 down
    assert baseline["1"] == pytest.approx(3 / 5 * 3 / 6 + 2 / 5 * 2 / 6, rel=TIGHT)
    # h=2: row 0: 99/100 down, 99/101 down, 110/99 up; row 1: 45/50 down, NaN, 44/45 down
    assert baseline["2"] == pytest.approx(3 / 5 * 1 / 5 + 2 / 5 * 4 / 5, rel=TIGHT)  # 0.44
    # h=4: row 0 110/100 up, row 1 44/50 down
    assert baseline["4"] == pytest.approx(3 / 5 * 1 / 2 + 2 / 5 * 1 / 2, rel=TIGHT)
    assert baseline["5"] is None
    assert_json_safe(baseline)


def test_baseline_without_signals_is_none() -> None:
    baseline = baseline_accuracy(CLOSE, np.array([], dtype=np.int8))
    assert baseline == {"1": None, "6": None, "24": None}


# --- benchmark ---------------------------------------------------------------------------------

# BTC opens at 100 on bar 0; ETH has no open on bar 0 and enters at 20 on bar 1.
BENCH_OPEN = np.array([[100.0, 110.0, 120.0], [NAN, 20.0, 25.0]])
BENCH_CLOSE = np.array([[105.0, NAN, 130.0], [NAN, 22.0, 24.0]])
BENCH_TS = np.array([0, 3_600_000, 7_200_000], dtype=np.int64)


def bench(gross_fraction: float, open_: np.ndarray | None = None) -> EquityCurve:
    return benchmark_curve(
        BENCH_OPEN if open_ is None else open_,
        BENCH_CLOSE,
        gross_fraction=gross_fraction,
        initial_equity=1000.0,
        fee_bps=10.0,
        ts_ms=BENCH_TS,
    )


def bench_trades(gross_fraction: float) -> list[Trade]:
    return benchmark_trades(
        BENCH_OPEN,
        BENCH_CLOSE,
        symbols=["BTC", "ETH"],
        gross_fraction=gross_fraction,
        initial_equity=1000.0,
        fee_bps=10.0,
        ts_ms=BENCH_TS,
    )


def test_benchmark_curve_by_hand() -> None:
    curve = bench(0.5)
    # each symbol gets 1000 * 0.5 / 2 = 250 of notional and pays 250 * 10 / 10_000 = 0.25
    # BTC: 250 / 100 = 2.5 units, marked 105, 105 (NaN carries), 130
    # ETH: 250 / 20 = 12.5 units from bar 1, marked 22, 24
    np.testing.assert_allclose(curve.cash, [749.75, 499.5, 499.5], rtol=TIGHT)
    np.testing.assert_allclose(curve.position_value, [262.5, 262.5 + 275.0, 325.0 + 300.0])
    np.testing.assert_allclose(curve.gross_exposure, [262.5, 537.5, 625.0], rtol=TIGHT)
    np.testing.assert_allclose(curve.equity, [1012.25, 1037.0, 1124.5], rtol=TIGHT)
    np.testing.assert_array_equal(curve.ts_ms, BENCH_TS)


def test_benchmark_trades_by_hand_and_consistent_with_the_curve() -> None:
    btc, eth = bench_trades(0.5)
    assert (btc.symbol, btc.side, btc.exit_reason, btc.regime) == (
        "BTC",
        "LONG",
        "end_of_data",
        None,
    )
    assert (btc.entry_bar, btc.exit_bar, btc.entry_ts_ms, btc.exit_ts_ms) == (0, 2, 0, 7_200_000)
    assert btc.quantity == pytest.approx(2.5, rel=TIGHT)
    assert (btc.entry_price, btc.exit_price) == (100.0, 130.0)
    assert btc.fees == pytest.approx(0.25, rel=TIGHT)
    assert btc.pnl == pytest.approx(2.5 * (130 - 100) - 0.25, rel=TIGHT)  # 74.75
    assert (eth.entry_bar, eth.entry_ts_ms, eth.entry_price, eth.exit_price) == (
        1,
        3_600_000,
        20.0,
        24.0,
    )
    assert eth.pnl == pytest.approx(12.5 * (24 - 20) - 0.25, rel=TIGHT)  # 49.75
    assert btc.pnl + eth.pnl == pytest.approx(float(bench(0.5).equity[-1]) - 1000.0, rel=TIGHT)


def test_benchmark_scores_with_the_same_keys() -> None:
    trades = bench_trades(0.5)
    summary = performance(
        bench(0.5),
        trades,
        initial_equity=1000.0,
        bars_per_year=8760.0,
        traded_notional=sum(t.notional for t in trades),
        fees=sum(t.fees for t in trades),
    )
    assert list(summary) == KEYS
    assert summary["total_return"] == pytest.approx(0.1245, rel=TIGHT)  # 1124.5 / 1000 - 1
    assert summary["turnover"] == pytest.approx(500 / 1000, rel=TIGHT)
    assert summary["fees"] == pytest.approx(0.5, rel=TIGHT)
    assert summary["avg_hold_bars"] == pytest.approx((2 + 1) / 2, rel=TIGHT)
    assert summary["profit_factor"] is None
    assert summary["exposure"] == 1.0
    assert_json_safe(summary)


def test_benchmark_gross_is_clipped_to_one() -> None:
    curve = bench(1.5)
    # 500 per symbol: BTC 5 units, ETH 25 units, fee 0.5 each; cash 1000 - 500.5, then -1
    np.testing.assert_allclose(curve.cash, [499.5, -1.0, -1.0], rtol=TIGHT)
    np.testing.assert_allclose(
        curve.equity, [499.5 + 5 * 105, -1 + 5 * 105 + 25 * 22, -1 + 5 * 130 + 25 * 24], rtol=TIGHT
    )


def test_benchmark_with_zero_gross_is_flat_cash() -> None:
    curve = bench(0.0)
    np.testing.assert_array_equal(curve.equity, [1000.0, 1000.0, 1000.0])
    np.testing.assert_array_equal(curve.gross_exposure, [0.0, 0.0, 0.0])
    assert bench_trades(0.0) == []
    assert bench(-0.3).equity.tolist() == [1000.0, 1000.0, 1000.0]


def test_benchmark_marks_at_the_fill_until_a_close_and_skips_a_symbol_without_opens() -> None:
    # row 0: bought 100 / 50 = 2 units at 50 (no fee), no close on bar 0 -> marked at 50
    # row 1: never has an open -> its 100 stays in cash
    open_ = np.array([[50.0, 55.0, 60.0], [NAN, NAN, NAN]])
    close = np.array([[NAN, 60.0, NAN], [NAN, NAN, NAN]])
    curve = benchmark_curve(
        open_, close, gross_fraction=1.0, initial_equity=200.0, fee_bps=0.0, ts_ms=BENCH_TS
    )
    np.testing.assert_allclose(curve.equity, [100 + 2 * 50, 100 + 2 * 60, 100 + 2 * 60], rtol=TIGHT)
    trades = benchmark_trades(
        open_,
        close,
        symbols=["BTC", "ETH"],
        gross_fraction=1.0,
        initial_equity=200.0,
        fee_bps=0.0,
        ts_ms=BENCH_TS,
    )
    assert [t.symbol for t in trades] == ["BTC"]
    assert trades[0].exit_price == 60.0
    assert trades[0].pnl == pytest.approx(2 * (60 - 50), rel=TIGHT)


# --- group stats -------------------------------------------------------------------------------

ROW_OF = {"BTC": 0, "ETH": 1}
SIGNALS = [
    SignalRecord(symbol="BTC", bar=0, sign=1, regime="TREND"),  # a: h1 right, h2 wrong, h4 right
    SignalRecord(symbol="BTC", bar=2, sign=-1, regime="RANGE"),  # b: h1 zero wrong, h2 wrong
    SignalRecord(symbol="ETH", bar=0, sign=-1, regime="TREND"),  # c: h1 NaN, h2 right, h4 right
    SignalRecord(symbol="ETH", bar=2, sign=1, regime=None),  # d: h1 right, h2 wrong
    SignalRecord(symbol="ETH", bar=1, sign=1, regime="RANGE"),  # e: NaN close, always out
    SignalRecord(symbol="ETH", bar=3, sign=-1, regime="VOLATILE"),  # f: h1 44/46 right
]
GROUP_TRADES = [
    trade(10.0, symbol="BTC", regime="TREND"),
    trade(-4.0, symbol="BTC", regime="RANGE"),
    trade(6.0, symbol="ETH", regime=None),
    trade(-1.0, symbol="ETH", regime="TREND"),
    trade(3.0, symbol="ETH", regime="TREND"),
    trade(2.0, symbol="SOL", regime="RANGE"),
]
H = (1, 2, 4)


def test_group_stats_per_symbol_by_hand() -> None:
    stats = group_stats(GROUP_TRADES, SIGNALS, CLOSE, ROW_OF, "symbol", H)
    assert list(stats) == ["BTC", "ETH", "SOL"]
    assert stats["BTC"] == {
        "trades": 2,
        "pnl": pytest.approx(10 - 4, rel=TIGHT),
        "win_rate": pytest.approx(1 / 2, rel=TIGHT),
        "signal_accuracy": {"1": 1 / 2, "2": 0 / 2, "4": 1 / 1},  # a, b
    }
    assert stats["ETH"] == {
        "trades": 3,
        "pnl": pytest.approx(6 - 1 + 3, rel=TIGHT),
        "win_rate": pytest.approx(2 / 3, rel=TIGHT),
        "signal_accuracy": {"1": 2 / 2, "2": 1 / 2, "4": 1 / 1},  # h1 d, f; h2 c, d; h4 c
    }
    assert stats["SOL"] == {
        "trades": 1,
        "pnl": 2.0,
        "win_rate": 1.0,
        "signal_accuracy": {"1": None, "2": None, "4": None},
    }
    assert_json_safe(stats)


def test_group_stats_per_regime_by_hand() -> None:
    stats = group_stats(GROUP_TRADES, SIGNALS, CLOSE, ROW_OF, "regime", H)
    assert list(stats) == ["RANGE", "TREND", "UNLABELLED", "VOLATILE"]
    assert stats["TREND"] == {
        "trades": 3,
        "pnl": pytest.approx(10 - 1 + 3, rel=TIGHT),
        "win_rate": pytest.approx(2 / 3, rel=TIGHT),
        "signal_accuracy": {"1": 1 / 1, "2": 1 / 2, "4": 2 / 2},  # a, c
    }
    assert stats["RANGE"] == {
        "trades": 2,
        "pnl": pytest.approx(-4 + 2, rel=TIGHT),
        "win_rate": pytest.approx(1 / 2, rel=TIGHT),
        "signal_accuracy": {"1": 0 / 1, "2": 0 / 1, "4": None},  # b (e never counts)
    }
    assert stats["UNLABELLED"] == {
        "trades": 1,
        "pnl": 6.0,
        "win_rate": 1.0,
        "signal_accuracy": {"1": 1.0, "2": 0.0, "4": None},  # d
    }
    assert stats["VOLATILE"] == {
        "trades": 0,
        "pnl": 0.0,
        "win_rate": None,
        "signal_accuracy": {"1": 1.0, "2": None, "4": None},  # f
    }
    assert_json_safe(stats)


def test_group_stats_refuses_a_signal_without_a_close_row() -> None:
    stray = [*SIGNALS, SignalRecord(symbol="DOGE", bar=0, sign=1)]
    with pytest.raises(ValueError, match="DOGE"):
        group_stats(GROUP_TRADES, stray, CLOSE, ROW_OF, "symbol", H)


def test_ruin_leaves_the_return_ratios_undefined() -> None:
    """Leveraged books can go through zero equity: a 'return' from -50 to 10 is not one."""
    summary = score([100.0, 40.0, -50.0, 10.0])
    for key in ("cagr", "volatility", "sharpe", "sortino", "calmar"):
        assert summary[key] is None, key
    assert summary["total_return"] == pytest.approx(10.0 / 100.0 - 1.0, rel=TIGHT)
    assert summary["max_drawdown"] == pytest.approx(1.5, rel=TIGHT)  # 1 - (-50) / 100
    assert score([100.0, 40.0, 10.0])["sharpe"] is not None  # no ruin: defined


def test_exit_stats_group_trades_by_their_exit_reason() -> None:
    trades = [
        trade(5.0, 0, 4, exit_reason="trailing_stop"),
        trade(-3.0, 2, 3, exit_reason="stop_loss"),
        trade(-1.0, 5, 7, exit_reason="stop_loss"),
        trade(2.0, 1, 9, exit_reason="trailing_stop"),
        trade(-2.0, 6, 8, exit_reason="trailing_stop"),
    ]
    stats = exit_stats(trades)
    assert list(stats) == ["stop_loss", "trailing_stop"]
    assert stats["stop_loss"] == {"trades": 2, "pnl": -4.0, "win_rate": 0.0, "avg_hold_bars": 1.5}
    assert stats["trailing_stop"]["trades"] == 3
    assert stats["trailing_stop"]["pnl"] == pytest.approx(5.0)
    assert stats["trailing_stop"]["win_rate"] == pytest.approx(2 / 3)
    assert stats["trailing_stop"]["avg_hold_bars"] == pytest.approx((4 + 8 + 2) / 3)
    assert exit_stats([]) == {}
