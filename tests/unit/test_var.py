"""VaR functions against values worked out by hand on tiny data sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantumtrade.risk.var import (
    historical_cvar,
    historical_var,
    normal_quantile,
    parametric_var,
    portfolio_parametric_var,
    portfolio_var,
    tail_count,
)

# Φ⁻¹(0.95) and Φ⁻¹(0.99), from published tables (more digits than the tests need).
Z95 = 1.6448536269514722
Z99 = 2.3263478740408408

# Sorted: -5, -3, -1, 0, 2, 4, 6, 8, 10, 12 (n = 10); shuffled so the code has to sort.
PNL = [4.0, -1.0, 12.0, -5.0, 8.0, 0.0, -3.0, 10.0, 2.0, 6.0]


def test_normal_quantiles() -> None:
    assert normal_quantile(0.95) == pytest.approx(Z95, rel=1e-12)
    assert normal_quantile(0.99) == pytest.approx(Z99, rel=1e-12)
    assert normal_quantile(0.5) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(
    ("confidence", "k", "var", "cvar"),
    [
        # k = ceil(10 * 0.10) = 1: the worst observation.
        (0.90, 1, 5.0, 5.0),
        # k = ceil(10 * 0.05) = ceil(0.5) = 1: still the worst one (no interpolation).
        (0.95, 1, 5.0, 5.0),
        # k = ceil(10 * 0.20) = 2: VaR is the 2nd worst; ES = (5 + 3) / 2.
        (0.80, 2, 3.0, (5.0 + 3.0) / 2),
        # k = ceil(10 * 0.25) = ceil(2.5) = 3: the lower observation, x(3) = -1; ES = (5+3+1)/3.
        (0.75, 3, 1.0, (5.0 + 3.0 + 1.0) / 3),
        # k = ceil(10 * 0.5) = 5: x(5) = 2 is a gain, so VaR is negative (not clipped).
        (0.50, 5, -2.0, (5.0 + 3.0 + 1.0 + 0.0 - 2.0) / 5),
    ],
)
def test_historical_var_is_the_lower_empirical_quantile(
    confidence: float, k: int, var: float, cvar: float
) -> None:
    assert tail_count(len(PNL), confidence) == k
    assert historical_var(np.array(PNL), confidence) == pytest.approx(var)
    assert historical_cvar(PNL, confidence) == pytest.approx(cvar)


def test_historical_var_matches_numpys_inverted_cdf_convention() -> None:
    rng = np.random.default_rng(3)
    # NumPy is given the tail share as a literal: from 1 - c it would inherit the float error
    # (20 · (1 - 0.95) = 1.0000000000000009 makes it take the 2nd worst, not the worst).
    for n in (1, 2, 7, 20, 99, 100, 101, 1000):
        x = rng.normal(size=n)
        for alpha in (0.1, 0.05, 0.025, 0.01):
            expected = -np.quantile(x, alpha, method="inverted_cdf")
            assert historical_var(x, 1 - alpha) == expected, (n, alpha)


def test_tail_count_is_not_fooled_by_float_error() -> None:
    # 1 - 0.95 = 0.050000000000000044 in floats; 100 of them must still make a tail of 5.
    assert tail_count(100, 0.95) == 5
    assert tail_count(100, 0.99) == 1
    # Losses 1..100: the 5th worst is -96.
    assert historical_var(-np.arange(1.0, 101.0), 0.95) == 96.0
    # ES = mean of 100, 99, 98, 97, 96.
    assert historical_cvar(-np.arange(1.0, 101.0), 0.95) == (100 + 99 + 98 + 97 + 96) / 5


def test_empty_history_is_nan_and_non_finite_observations_are_ignored() -> None:
    assert math.isnan(historical_var([], 0.95))
    assert math.isnan(historical_cvar(np.array([]), 0.99))
    assert math.isnan(historical_var([math.nan, math.inf], 0.95))
    # NaN dropped: the worst of [-2, 1] at k = ceil(2 * 0.05) = 1 is -2.
    assert historical_var([math.nan, -2.0, 1.0], 0.95) == 2.0


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        historical_var(PNL, 1.0)
    with pytest.raises(ValueError):
        historical_var([], 0.0)
    with pytest.raises(ValueError):
        historical_var(np.ones((2, 2)), 0.95)
    with pytest.raises(ValueError):
        parametric_var(0.0, -1.0, 0.95)
    with pytest.raises(ValueError):
        portfolio_parametric_var([1.0, 2.0], [[1.0]], confidence=0.95)


def test_parametric_var() -> None:
    # -(mu - z * sigma) with mu = 0.001, sigma = 0.02.
    assert parametric_var(0.001, 0.02, 0.95) == pytest.approx(0.02 * Z95 - 0.001, rel=1e-12)
    assert parametric_var(0.0, 0.02, 0.99) == pytest.approx(0.02 * Z99, rel=1e-12)
    assert parametric_var(0.0, 0.0, 0.99) == 0.0
    assert math.isnan(parametric_var(math.nan, 0.02, 0.95))


def test_portfolio_parametric_var_is_w_sigma_w() -> None:
    w = [100.0, 50.0]
    cov = [[0.0004, 0.0001], [0.0001, 0.0009]]
    # w'Σw = 100² · 0.0004 + 2 · 100 · 50 · 0.0001 + 50² · 0.0009 = 4 + 1 + 2.25 = 7.25
    sigma = math.sqrt(7.25)
    assert portfolio_parametric_var(w, cov, confidence=0.95) == pytest.approx(Z95 * sigma)
    # w'm = 100 · 0.001 + 50 · 0.002 = 0.2
    assert portfolio_parametric_var(w, cov, [0.001, 0.002], confidence=0.99) == pytest.approx(
        Z99 * sigma - 0.2
    )
    # A short leg: w'Σw = 4 - 1 + 2.25 = 5.25
    assert portfolio_parametric_var([100.0, -50.0], cov, confidence=0.95) == pytest.approx(
        Z95 * math.sqrt(5.25)
    )


# Returns of one asset; sample mean 0.002, deviations 0.008, -0.022, 0.028, -0.012, -0.002,
# squares sum to 0.000064 + 0.000484 + 0.000784 + 0.000144 + 0.000004 = 0.00148,
# sample variance 0.00148 / 4 = 0.00037.
R1 = np.array([0.01, -0.02, 0.03, -0.01, 0.0])
R1_STDEV = math.sqrt(0.00037)


def test_portfolio_var_single_asset() -> None:
    report = portfolio_var({"BTCUSDT": 1000.0}, {"BTCUSDT": R1})
    assert report.observations == 5 and report.gross_exposure == 1000.0
    # P&L = 1000 · R1 = [10, -20, 30, -10, 0]; k = ceil(5 · 0.05) = 1: the worst, -20.
    for c, z in ((0.95, Z95), (0.99, Z99)):
        level = report.at(c)
        assert level.historical == pytest.approx(20.0)
        assert level.expected_shortfall == pytest.approx(20.0)
        # Zero mean: z · 1000 · sd.
        assert level.parametric == pytest.approx(z * 1000.0 * R1_STDEV)
    # Short the same asset: P&L = [-10, 20, -30, 10, 0], worst -30.
    short = portfolio_var({"BTCUSDT": -1000.0}, {"BTCUSDT": R1})
    assert short.at(0.95).historical == pytest.approx(30.0)
    assert short.at(0.95).parametric == pytest.approx(Z95 * 1000.0 * R1_STDEV)


def test_portfolio_var_two_perfectly_correlated_assets() -> None:
    returns = {"A": R1, "B": 2.0 * R1}
    # P&L = 1000 · R1 + 500 · 2 · R1 = 2000 · R1 = [20, -40, 60, -20, 0]: worst -40.
    report = portfolio_var({"A": 1000.0, "B": 500.0}, returns, confidences=(0.95,))
    assert report.gross_exposure == 1500.0
    assert report.at(0.95).historical == pytest.approx(40.0)
    # Perfect correlation: sd_p = 1000 sd + 500 · 2 sd = 2000 sd.
    assert report.at(0.95).parametric == pytest.approx(Z95 * 2000.0 * R1_STDEV)
    # Long A, short B of equal risk: P&L = 1000 R1 - 500 · 2 R1 = 0 in every period.
    hedged = portfolio_var({"A": 1000.0, "B": -500.0}, returns, confidences=(0.95,))
    assert hedged.at(0.95).historical == pytest.approx(0.0, abs=1e-12)
    assert hedged.at(0.95).parametric == pytest.approx(0.0, abs=1e-9)


def test_portfolio_var_aligns_on_the_newest_observations() -> None:
    # A has one older return (-0.5) that B lacks; only the last 5 of each are used.
    a = np.concatenate(([-0.5], R1))
    report = portfolio_var({"A": 1000.0, "B": 0.0}, {"A": a, "B": R1[:2]})
    # B holds nothing, so it does not count: A alone with its 6 returns, worst -500.
    assert report.observations == 6 and report.at(0.95).historical == pytest.approx(500.0)
    both = portfolio_var({"A": 1000.0, "B": 1000.0}, {"A": a, "B": np.concatenate((R1, R1))})
    # B's last 6: [0.0 (end of first copy), 0.01, -0.02, 0.03, -0.01, 0.0]; A: [-0.5, R1...]
    # P&L: 1000·(-0.5+0) = -500, 1000·(0.01+0.01) = 20, -40, 60, -20, 0 → worst -500.
    assert both.observations == 6 and both.at(0.99).historical == pytest.approx(500.0)


def test_portfolio_var_edge_cases() -> None:
    empty = portfolio_var({}, {})
    assert empty.observations == 0 and empty.gross_exposure == 0.0
    assert [(lv.historical, lv.parametric) for lv in empty.levels] == [(0.0, 0.0), (0.0, 0.0)]
    flat = portfolio_var({"A": 0.0}, {})
    assert flat.at(0.99).historical == 0.0
    # Held but no history: unknown, not zero.
    unknown = portfolio_var({"A": 1000.0}, {})
    assert unknown.observations == 0
    assert math.isnan(unknown.at(0.95).historical) and math.isnan(unknown.at(0.95).parametric)
    # One observation: a historical VaR, but no sample variance.
    one = portfolio_var({"A": 1000.0}, {"A": np.array([-0.01])})
    assert one.at(0.95).historical == pytest.approx(10.0)
    assert math.isnan(one.at(0.95).parametric)
    # A period where one asset's return is NaN is dropped for the whole book.
    gap = portfolio_var({"A": 1.0, "B": 1.0}, {"A": [0.1, -0.2, 0.3], "B": [0.1, math.nan, 0.1]})
    assert gap.observations == 2 and gap.at(0.95).historical == pytest.approx(-0.2)
    with pytest.raises(KeyError):
        one.at(0.9)
