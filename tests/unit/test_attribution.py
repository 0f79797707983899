"""Backtest attribution: the Brinson-Fachler identity per bar, zero effects for the benchmark
itself, the effects' signs where the answer is known, a textbook reference, and PnL breakdowns
that sum to the total."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from quantumtrade.backtest.attribution import (
    BrinsonAccumulator,
    attribution_summary,
    bar_effects,
    pnl_attribution,
    segment_ids,
)
from quantumtrade.backtest.model import Trade

EPS = 1e-14


def reference(
    weight: NDArray[np.float64],
    ret: NDArray[np.float64],
    segment: NDArray[np.intp],
) -> tuple[float, float, float]:
    """The textbook formulas, one segment at a time, every symbol priced, no zero-weight
    segment: (allocation, selection, interaction)."""
    n = len(weight)
    bench = float(ret.mean())
    alloc = sel = inter = 0.0
    for s in np.unique(segment).tolist():
        rows = segment == s
        wp = float(weight[rows].sum())
        wb = float(rows.sum()) / n
        rb = float(ret[rows].mean())
        rp = float((weight[rows] * ret[rows]).sum()) / wp
        alloc += (wp - wb) * (rb - bench)
        sel += wb * (rp - rb)
        inter += (wp - wb) * (rp - rb)
    cash = 1.0 - float(weight.sum())
    alloc += cash * (0.0 - bench)
    return alloc, sel, inter


def random_bar(
    rng: np.random.Generator, n: int, n_segments: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    weight = rng.normal(0.0, 0.1, n)
    weight[rng.random(n) < 0.3] = 0.0
    ret = rng.normal(0.0, 0.02, n)
    segment = rng.integers(0, n_segments, n).astype(np.intp)
    return weight, ret, segment


@pytest.mark.parametrize("seed", range(20))
def test_effects_add_up_to_the_active_return_of_the_held_book(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 30, 6
    weight, ret, segment = random_bar(rng, n, k)
    priced = rng.random(n) > 0.1
    weight[~priced] = 0.0
    # A segment whose long and short cancel to zero weight yet earn something.
    segment[:2] = k
    weight[:2] = [0.05, -0.05]
    ret[:2] = [0.03, -0.01]
    priced[:2] = True
    rp = float(rng.normal(0.0, 0.01))
    e = bar_effects(weight, ret, priced, segment, k + 1, rp)
    held = float((weight * np.where(priced, ret, 0.0)).sum())
    bench = float(ret[priced].mean())
    assert e.benchmark_return == pytest.approx(bench, abs=EPS)
    assert e.allocation + e.selection + e.interaction == pytest.approx(held - bench, abs=EPS)
    assert e.allocation + e.selection + e.interaction + e.trading == pytest.approx(
        rp - bench, abs=EPS
    )
    assert e.active_return == pytest.approx(rp - bench, abs=EPS)


@pytest.mark.parametrize("seed", range(10))
def test_effects_match_the_textbook_formulas(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, k = 24, 5
    weight, ret, segment = random_bar(rng, n, k)
    segment[:k] = np.arange(k)  # every segment present
    weight[:k] = 0.05  # and held
    e = bar_effects(weight, ret, np.ones(n, dtype=np.bool_), segment, k, 0.0)
    alloc, sel, inter = reference(weight, ret, segment)
    assert (e.allocation, e.selection, e.interaction) == pytest.approx((alloc, sel, inter), abs=EPS)


@pytest.mark.parametrize("seed", range(10))
def test_one_symbol_segments_in_closed_form_match_the_general_path(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n = 16
    weight, ret, _ = random_bar(rng, n, 1)
    priced = rng.random(n) > 0.2
    if seed == 0:
        priced[:] = False  # the benchmark in cash
    rp = float(rng.normal(0.0, 0.01))
    fast = bar_effects(weight, ret, priced, None, n, rp)
    general = bar_effects(weight, ret, priced, np.arange(n, dtype=np.intp), n, rp)
    for key in ("allocation", "selection", "interaction", "trading", "benchmark_return"):
        assert getattr(fast, key) == pytest.approx(getattr(general, key), abs=EPS), key


def test_the_benchmark_itself_has_no_effects() -> None:
    rng = np.random.default_rng(7)
    n = 12
    ret = rng.normal(0.0, 0.02, n)
    segment = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4], dtype=np.intp)
    weight = np.full(n, 1.0 / n)
    bench = float(ret.mean())
    e = bar_effects(weight, ret, np.ones(n, dtype=np.bool_), segment, 5, bench)
    for value in (e.allocation, e.selection, e.interaction, e.trading, e.active_return):
        assert abs(value) < EPS


def test_overweighting_the_best_segment_is_a_positive_allocation() -> None:
    # Two segments of two symbols; segment 1 does better. Same picks within each segment.
    ret = np.array([0.00, 0.02, 0.05, 0.03])
    segment = np.array([0, 0, 1, 1], dtype=np.intp)
    priced = np.ones(4, dtype=np.bool_)
    over = np.array([0.1, 0.1, 0.4, 0.4])  # 20 % / 80 % instead of 50 % / 50 %
    e = bar_effects(over, ret, priced, segment, 2, float(over @ ret))
    assert e.allocation > 0.0
    assert abs(e.selection) < EPS
    under = over[[2, 3, 0, 1]]  # the worst segment overweighted: the control
    assert bar_effects(under, ret, priced, segment, 2, float(under @ ret)).allocation < 0.0


def test_picking_the_best_symbol_within_a_segment_is_a_positive_selection() -> None:
    ret = np.array([0.00, 0.02, 0.05, 0.03])
    segment = np.array([0, 0, 1, 1], dtype=np.intp)
    priced = np.ones(4, dtype=np.bool_)
    pick = np.array([0.0, 0.5, 0.5, 0.0])  # segment weights as the benchmark, the best in each
    e = bar_effects(pick, ret, priced, segment, 2, float(pick @ ret))
    assert abs(e.allocation) < EPS
    assert e.selection == pytest.approx(0.5 * 0.01 + 0.5 * 0.01, abs=EPS)
    worst = np.array([0.5, 0.0, 0.0, 0.5])
    assert bar_effects(worst, ret, priced, segment, 2, float(worst @ ret)).selection < 0.0


def test_cash_is_a_segment_at_a_zero_return() -> None:
    # All cash while the market rises: the whole shortfall is allocation (to cash).
    ret = np.array([0.01, 0.03])
    e = bar_effects(np.zeros(2), ret, np.ones(2, dtype=np.bool_), np.array([0, 1]), 2, 0.0)
    assert e.allocation == pytest.approx(-0.02, abs=EPS)
    assert e.selection == e.interaction == e.trading == 0.0


def test_without_a_priced_symbol_the_benchmark_is_cash() -> None:
    e = bar_effects(np.zeros(3), np.zeros(3), np.zeros(3, dtype=np.bool_), np.arange(3), 3, 0.0)
    assert (e.allocation, e.selection, e.interaction, e.benchmark_return) == (0.0, 0.0, 0.0, 0.0)


def test_segments_are_clusters_or_the_symbol_itself() -> None:
    ids, names = segment_ids(("A", "B", "C", "D"), {"B": "corr:B", "D": "corr:B"})
    assert names == ["A", "corr:B", "C"]
    assert ids.tolist() == [0, 1, 2, 1]


def test_the_accumulator_sums_the_bars_it_marks() -> None:
    rng = np.random.default_rng(3)
    symbols = ("A", "B", "C", "D")
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, (6, 4)), axis=0))
    closes[0, 3] = 0.0  # D not priced on the first bar: out of the benchmark on the second
    qty = rng.normal(0, 50, (6, 4))
    qty[:, 3] = 0.0
    equity = 100_000.0 + np.cumsum(rng.normal(0, 300, 6))
    clusters = [{}, {"A": "corr:A", "B": "corr:A"}, {}, {}, {"C": "corr:C", "D": "corr:C"}, {}]
    acc = BrinsonAccumulator(symbols)
    expected = []
    for t in range(6):
        acc.mark(qty[t], closes[t], float(equity[t]))
        acc.set_clusters(clusters[t])
        if t:
            prev = closes[t - 1]
            priced = prev > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                ret = np.where(priced, closes[t] / prev - 1.0, 0.0)
            seg, names = segment_ids(symbols, clusters[t - 1])
            expected.append(
                bar_effects(
                    qty[t - 1] * prev / equity[t - 1],
                    ret,
                    priced,
                    seg,
                    len(names),
                    float(equity[t] / equity[t - 1] - 1.0),
                )
            )
    out = acc.summary()
    assert out["bars"] == 5
    for key in ("allocation", "selection", "interaction", "trading"):
        assert out[key] == pytest.approx(sum(getattr(e, key) for e in expected), abs=EPS)
    assert out["portfolio_return"] == pytest.approx(
        float((equity[1:] / equity[:-1] - 1.0).sum()), abs=EPS
    )
    total = out["allocation"] + out["selection"] + out["interaction"] + out["trading"]
    assert total == pytest.approx(out["active_return"], abs=EPS)


def test_a_bar_starting_without_equity_is_skipped() -> None:
    acc = BrinsonAccumulator(("A",))
    acc.mark(np.array([1.0]), np.array([10.0]), 0.0)
    acc.mark(np.array([1.0]), np.array([11.0]), 5.0)
    assert acc.summary()["bars"] == 0
    assert acc.summary()["bars_skipped"] == 1


def trade(symbol: str, pnl: float, regime: str | None, cluster: str | None) -> Trade:
    return Trade(
        symbol=symbol, side="LONG", entry_ts_ms=0, exit_ts_ms=1, entry_bar=0, exit_bar=1,
        quantity=1.0, entry_price=1.0, exit_price=1.0, fees=0.1, pnl=pnl, regime=regime,
        exit_reason="signal_fade", cluster=cluster,
    )  # fmt: skip


def test_pnl_breakdowns_sum_to_the_total() -> None:
    trades = [
        trade("A", 10.0, "TRENDING", "corr:A"),
        trade("B", -4.0, None, "corr:A"),
        trade("C", 2.5, "BREAKOUT", "C"),
        trade("A", -1.25, "TRENDING", "A"),
    ]
    out = pnl_attribution(trades, "ema")
    assert out["total_pnl"] == 7.25
    assert out["by_strategy"] == {"ema": 7.25}
    assert out["by_symbol"] == {"A": 8.75, "B": -4.0, "C": 2.5}
    assert out["by_regime"] == {"BREAKOUT": 2.5, "TRENDING": 8.75, "UNLABELLED": -4.0}
    assert out["by_cluster"] == {"A": -1.25, "C": 2.5, "corr:A": 6.0}
    for key in ("by_strategy", "by_symbol", "by_regime", "by_cluster"):
        assert math.fsum(out[key].values()) == out["total_pnl"]
    summary = attribution_summary(
        trades, {"strategy": "ema", "brinson": {"bars": 3}}, initial_equity=100.0,
        final_equity=107.25,
    )  # fmt: skip
    assert summary["equity_change"] == 7.25
    assert summary["brinson"] == {"bars": 3}
