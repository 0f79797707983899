"""The portfolio's live attribution: closed PnL stays with the labels its position opened
under, open PnL goes to the open position's labels, and every breakdown sums to the totals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import OrderFilled, Side
from quantumtrade.portfolio import UNLABELLED, Portfolio

DIMENSIONS = ("by_strategy", "by_symbol", "by_regime", "by_cluster")


class Labels:
    """What the strategy engine would say now: the regime and cluster can change at will."""

    def __init__(self) -> None:
        self.regime: dict[str, str] = {}
        self.cluster: dict[str, str] = {}

    def __call__(self, symbol: str) -> tuple[str, str, str]:
        return "ema", self.regime.get(symbol, UNLABELLED), self.cluster.get(symbol, symbol)


def fill(
    seq: int, symbol: str, side: Side, quantity: float, price: float, fee: float
) -> OrderFilled:
    return OrderFilled(
        ts_ns=seq, client_order_id=f"o{seq}", symbol=symbol, side=side, quantity=quantity,
        price=price, fee=fee, venue="paper", seq=seq, cumulative_quantity=quantity,
        leaves_quantity=0.0,
    )  # fmt: skip


def book() -> tuple[Portfolio, Labels]:
    clock = ManualClock(0)
    portfolio = Portfolio(bus=EventBus(clock=clock), clock=clock)
    labels = Labels()
    portfolio.label_positions(labels)
    return portfolio, labels


def assert_sums(portfolio: Portfolio) -> dict[str, dict[str, dict[str, float]]]:
    out = portfolio.attribution()
    totals = portfolio.totals()
    scale = 1e-9 * max(1.0, sum(abs(v) for v in totals.values()))
    for key in DIMENSIONS:
        groups = out[key]
        for field, want in (
            ("net", totals["net"]),
            ("unrealized", totals["unrealized"]),
            ("realized_after_fees", totals["realized"] - totals["fees"]),
        ):
            got = math.fsum(g[field] for g in groups.values())
            assert abs(got - want) <= scale, (key, field, got, want)
    return out


async def test_closed_pnl_stays_with_the_regime_it_opened_in() -> None:
    portfolio, labels = book()
    labels.regime["AAA"] = "TRENDING"
    labels.cluster["AAA"] = "corr:AAA"
    await portfolio.on_fill(fill(1, "AAA", Side.BUY, 2.0, 100.0, 0.2))
    labels.regime["AAA"] = "RANGING"  # the regime moved on while the position was held
    labels.cluster["AAA"] = "AAA"
    portfolio.set_mark("AAA", 110.0)
    out = assert_sums(portfolio)
    assert out["by_regime"] == {
        "TRENDING": {"realized_after_fees": -0.2, "unrealized": 20.0, "net": 19.8}
    }
    await portfolio.on_fill(fill(2, "AAA", Side.SELL, 2.0, 105.0, 0.3))
    out = assert_sums(portfolio)
    assert out["by_regime"]["TRENDING"]["net"] == pytest.approx(10.0 - 0.5)
    assert out["by_cluster"] == {"corr:AAA": out["by_regime"]["TRENDING"]}
    assert "RANGING" not in out["by_regime"]
    # The next position opens under the labels of its own time.
    await portfolio.on_fill(fill(3, "AAA", Side.BUY, 1.0, 100.0, 0.1))
    portfolio.set_mark("AAA", 99.0)
    out = assert_sums(portfolio)
    assert out["by_regime"]["RANGING"] == {
        "realized_after_fees": -0.1, "unrealized": -1.0, "net": -1.1,
    }  # fmt: skip
    assert out["by_strategy"]["ema"]["net"] == pytest.approx(portfolio.totals()["net"])


async def test_a_reversal_closes_under_the_old_labels_and_opens_under_the_new() -> None:
    portfolio, labels = book()
    labels.regime["BBB"] = "TRENDING"
    await portfolio.on_fill(fill(1, "BBB", Side.BUY, 1.0, 100.0, 0.0))
    labels.regime["BBB"] = "VOLATILE"
    # Sells 3: closes 1 (a third of the fill, a third of its fee) and opens a short of 2.
    await portfolio.on_fill(fill(2, "BBB", Side.SELL, 3.0, 90.0, 0.3))
    portfolio.set_mark("BBB", 80.0)
    out = assert_sums(portfolio)
    assert out["by_regime"]["TRENDING"]["net"] == pytest.approx(-10.0 - 0.1)
    assert out["by_regime"]["VOLATILE"]["realized_after_fees"] == pytest.approx(-0.2)
    assert out["by_regime"]["VOLATILE"]["unrealized"] == pytest.approx(20.0)


@pytest.mark.parametrize("seed", range(8))
async def test_random_fills_sum_to_the_totals(seed: int) -> None:
    rng = np.random.default_rng(seed)
    portfolio, labels = book()
    symbols = ["AAA", "BBB", "CCC", "DDD"]
    regimes = ["TRENDING", "RANGING", "VOLATILE", "BREAKOUT"]
    price = dict.fromkeys(symbols, 100.0)
    for seq in range(1, 300):
        symbol = symbols[int(rng.integers(len(symbols)))]
        labels.regime[symbol] = regimes[int(rng.integers(len(regimes)))]
        labels.cluster[symbol] = "corr:X" if rng.random() < 0.5 else symbol
        price[symbol] *= float(np.exp(rng.normal(0, 0.02)))
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        qty = float(rng.choice([0.5, 1.0, 2.5]))
        await portfolio.on_fill(fill(seq, symbol, side, qty, price[symbol], qty * 0.01))
        portfolio.set_mark(symbol, price[symbol])
    out = assert_sums(portfolio)
    for symbol, p in portfolio.positions().items():
        mark = portfolio.mark_price(symbol)
        unrealized = p.quantity * (mark - p.avg_price) if mark is not None else 0.0
        assert out["by_symbol"][symbol]["net"] == pytest.approx(
            p.realized_pnl - p.fees + unrealized, abs=1e-9
        )
    assert len(out["by_regime"]) > 1


async def test_without_a_labeller_regimes_are_unlabelled_and_clusters_the_symbols() -> None:
    clock = ManualClock(0)
    portfolio = Portfolio(bus=EventBus(clock=clock), clock=clock)
    await portfolio.on_fill(fill(1, "AAA", Side.BUY, 1.0, 10.0, 0.01))
    out = assert_sums(portfolio)
    assert set(out["by_regime"]) == {UNLABELLED}
    assert set(out["by_cluster"]) == {"AAA"}
