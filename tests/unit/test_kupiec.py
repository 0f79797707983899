"""Kupiec's and Christoffersen's tests and the VaR backtest summary, against hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantumtrade.backtest.metrics import (
    chi2_1_sf,
    christoffersen_independence,
    kupiec_pof,
    var_backtest,
)


def test_chi_square_one_df_tail_matches_published_critical_values() -> None:
    # χ²(1) critical values from tables: 3.841 at 5 %, 6.635 at 1 %, 2.706 at 10 %.
    assert chi2_1_sf(3.841458820694124) == pytest.approx(0.05, rel=1e-9)
    assert chi2_1_sf(6.634896601021214) == pytest.approx(0.01, rel=1e-9)
    assert chi2_1_sf(2.705543454095404) == pytest.approx(0.10, rel=1e-9)
    assert chi2_1_sf(0.0) == 1.0


def test_kupiec_five_exceedances_in_250_days_at_99_percent() -> None:
    # ln L0 = 245 ln 0.99 + 5 ln 0.01; ln L1 = 245 ln 0.98 + 5 ln 0.02 (x/n = 0.02).
    null = 245 * math.log(0.99) + 5 * math.log(0.01)
    fitted = 245 * math.log(0.98) + 5 * math.log(0.02)
    lr = -2 * (null - fitted)
    assert lr == pytest.approx(1.9568, abs=5e-4)  # the textbook figure, ~1.96
    test = kupiec_pof(250, 5, 0.99)
    assert test.statistic == pytest.approx(lr, rel=1e-12)
    assert test.p_value == pytest.approx(0.1619, abs=5e-4)  # not rejected at 5 %


def test_kupiec_exactly_the_expected_rate_gives_zero() -> None:
    test = kupiec_pof(500, 25, 0.95)
    assert test.statistic == 0.0 and test.p_value == 1.0


def test_kupiec_rejects_too_many_exceedances() -> None:
    # 12 in 250 at 99 %: LR = -2[(238 ln .99 + 12 ln .01) - (238 ln(238/250) + 12 ln(12/250))].
    null = 238 * math.log(0.99) + 12 * math.log(0.01)
    fitted = 238 * math.log(238 / 250) + 12 * math.log(12 / 250)
    test = kupiec_pof(250, 12, 0.99)
    assert test.statistic == pytest.approx(-2 * (null - fitted), rel=1e-12)
    assert test.p_value < 0.001


def test_kupiec_edge_cases_no_exceedance_and_all_exceedances() -> None:
    # x = 0: 0 · ln 0 = 0, LR = -2 n ln(1 - p).
    zero = kupiec_pof(250, 0, 0.99)
    assert zero.statistic == pytest.approx(-2 * 250 * math.log(0.99), rel=1e-12)
    assert zero.p_value == pytest.approx(math.erfc(math.sqrt(zero.statistic / 2)), rel=1e-12)
    # x = n: LR = -2 n ln p.
    every = kupiec_pof(10, 10, 0.99)
    assert every.statistic == pytest.approx(-2 * 10 * math.log(0.01), rel=1e-12)
    assert every.p_value < 1e-20
    empty = kupiec_pof(0, 0, 0.99)
    assert math.isnan(empty.statistic) and math.isnan(empty.p_value)
    with pytest.raises(ValueError, match="exceedances"):
        kupiec_pof(10, 11, 0.99)
    with pytest.raises(ValueError, match="confidence"):
        kupiec_pof(10, 1, 1.0)


def test_christoffersen_independence_by_hand() -> None:
    # Clustered: 0 0 0 1 1 1 0 0 0 0 → transitions n00 = 5, n01 = 1, n11 = 2, n10 = 1.
    hits = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0], dtype=np.bool_)
    n00, n01, n10, n11 = 5, 1, 1, 2
    pi, pi0, pi1 = 3 / 9, 1 / 6, 2 / 3
    null = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    fitted = (
        n00 * math.log(1 - pi0)
        + n01 * math.log(pi0)
        + n10 * math.log(1 - pi1)
        + n11 * math.log(pi1)
    )
    test = christoffersen_independence(hits)
    assert test.statistic == pytest.approx(-2 * (null - fitted), rel=1e-12)
    assert test.p_value == pytest.approx(math.erfc(math.sqrt(test.statistic / 2)))
    # Negative control: 0 0 1 1 0 0 0 1 0 0 has n00 = 4, n01 = 2, n10 = 2, n11 = 1, so an
    # exceedance is followed by another as often as a quiet bar is (π0 = π1 = 1/3): LR = 0.
    even = christoffersen_independence(np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=np.bool_))
    assert even.statistic == pytest.approx(0.0, abs=1e-12) and test.statistic > 2.0
    none = christoffersen_independence(np.zeros(20, dtype=np.bool_))
    assert none.statistic == 0.0 and none.p_value == 1.0
    assert math.isnan(christoffersen_independence(np.array([True])).statistic)


def test_var_backtest_counts_exceedances_on_held_bars_only() -> None:
    pnl = np.array([-5.0, 1.0, -12.0, 0.0, 3.0, -11.0, np.nan])
    var99 = np.array([10.0, 10.0, 10.0, 0.0, 10.0, 10.0, 10.0])
    var95 = np.array([4.0, 4.0, 4.0, 0.0, np.nan, 4.0, 4.0])
    out = var_backtest({0.99: var99, 0.95: var95}, pnl)
    # 99 %: bars 0, 1, 2, 4, 5 count (bar 3 held nothing, bar 6 has no P&L); -12 and -11 exceed.
    assert out["0.99"]["observations"] == 5 and out["0.99"]["exceedances"] == 2
    assert out["0.99"]["rate"] == pytest.approx(0.4)
    assert out["0.99"]["expected_rate"] == 0.01
    assert out["0.99"]["kupiec_lr"] == pytest.approx(kupiec_pof(5, 2, 0.99).statistic)
    # 95 %: bar 4 has no forecast; -5, -12, -11 exceed 4 of 4 bars.
    assert out["0.95"]["observations"] == 4 and out["0.95"]["exceedances"] == 3
    assert out["0.95"]["mean_var"] == pytest.approx(4.0)
    # A loss equal to the VaR is not an exceedance (pnl < -VaR).
    edge = var_backtest({0.99: np.array([5.0])}, np.array([-5.0]))
    assert edge["0.99"]["exceedances"] == 0
    nothing = var_backtest({0.99: np.array([0.0, np.nan])}, np.array([0.0, 1.0]))
    assert nothing["0.99"]["observations"] == 0 and nothing["0.99"]["rate"] is None
    assert nothing["0.99"]["kupiec_p"] is None
