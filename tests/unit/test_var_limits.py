"""VaR and expected shortfall as pre-trade limits, the book's scenarios, and their gauges.

The oracle throughout: the book's P&L per bar recomputed from the closes fed in (Σ value ·
return over the newest ``var_window`` bars), its quantile by ``historical_var`` /
``historical_cvar``, times √24 for a day of hourly bars.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import BarBlock, BarsUpdated, OrderIntent, OrderRejected, Side
from quantumtrade.metrics import Metrics, Snapshot
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.history import PriceHistory
from quantumtrade.risk.manager import RiskLimits, RiskManager
from quantumtrade.risk.var import (
    ScenarioBook,
    VarMethod,
    historical_cvar,
    historical_var,
    normal_quantile,
    portfolio_parametric_var,
    tail_risks,
)

HOUR_MS = 3_600_000
DAY = math.sqrt(24.0)  # one day of hourly bars


def random_closes(n: int, seed: int, vol: float = 0.01) -> dict[str, np.ndarray]:
    """A, and B moving mostly with A (correlation ~0.9), C on its own; n closes each."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, vol, n - 1)
    b = 0.9 * a + math.sqrt(1 - 0.81) * rng.normal(0.0, vol, n - 1)
    c = rng.normal(0.0, vol, n - 1)
    return {
        s: 100.0 * np.concatenate([[1.0], np.cumprod(1.0 + r)])
        for s, r in zip("ABC", (a, b, c), strict=True)
    }


class Desk:
    """A risk manager on a bus, fed hourly bars of A, B and C; orders stay in flight (they
    count in the book as the limits judge it)."""

    def __init__(self, limits: RiskLimits, closes: dict[str, np.ndarray]) -> None:
        self.clock = ManualClock()
        self.bus = EventBus(clock=self.clock)
        self.portfolio = Portfolio(bus=self.bus, clock=self.clock)
        self.risk = RiskManager(
            bus=self.bus,
            clock=self.clock,
            limits=limits,
            portfolio=self.portfolio,
            capital=100_000.0,
        )
        for event_type, handler in self.risk.order_handlers():
            self.bus.subscribe(event_type, handler)
        self.intents: list[OrderIntent] = []
        self.rejects: list[OrderRejected] = []
        self.bus.subscribe(OrderIntent, self.intents.append)
        self.bus.subscribe(OrderRejected, self.rejects.append)
        self.closes = closes
        self.fed = 0
        self._ids = 0

    async def feed(self, bars: int) -> None:
        symbols = tuple(self.closes)
        for _ in range(bars):
            t = self.fed
            prices = np.array([[self.closes[s][t]] * 4 + [1.0] for s in symbols]).T
            block = BarBlock.of(np.full(len(symbols), t * HOUR_MS, dtype=np.int64), prices)
            offsets = np.arange(len(symbols) + 1, dtype=np.int64)
            await self.bus.publish(BarsUpdated.of(0, "test", symbols, offsets, block))
            self.fed += 1

    def price(self, symbol: str) -> float:
        return float(self.closes[symbol][self.fed - 1])

    async def order(self, symbol: str, notional: float) -> OrderIntent | OrderRejected:
        """Buy (notional > 0) or sell ``|notional|`` of ``symbol`` at its last close."""
        self._ids += 1
        price = self.price(symbol)
        return await self.risk.submit_order(
            client_order_id=f"o{self._ids}",
            symbol=symbol,
            side=Side.BUY if notional > 0 else Side.SELL,
            quantity=abs(notional) / price,
            price=price,
        )

    def oracle(self, values: dict[str, float], window: int) -> np.ndarray:
        """The book's P&L on the newest ``window`` returns, from the closes fed in."""
        pnl = np.zeros(min(window, self.fed - 1))
        for s, v in values.items():
            c = self.closes[s][: self.fed]
            pnl += v * (c[1:] / c[:-1] - 1.0)[-window:]
        return pnl


def reason(outcome: OrderIntent | OrderRejected) -> str | None:
    return outcome.reason if isinstance(outcome, OrderRejected) else None


# --- the scenario book -------------------------------------------------------------------


def history_of(
    closes: dict[str, np.ndarray], window: int, gaps: dict[str, set[int]]
) -> PriceHistory:
    history = PriceHistory(window)
    for s, c in closes.items():
        keep = np.array([t for t in range(c.size) if t not in gaps.get(s, set())])
        history.update_row(int(history.rows((s,))[0]), keep * HOUR_MS, c[keep])
    return history


def test_the_one_pass_book_pnl_is_the_aligned_sum_bit_for_bit() -> None:
    closes = random_closes(400, seed=1)
    history = history_of(closes, 300, {})
    values = {"A": 5_000.0, "B": -2_000.0, "C": 700.0}
    common = history.book_pnl(tuple(values), np.array(list(values.values())))
    assert common is not None and common[1].size == 300
    fast = ScenarioBook(values, history.returns, common=common)
    slow = ScenarioBook(values, history.returns)
    assert slow.axis is not None and np.array_equal(fast.axis, slow.axis)
    assert np.array_equal(fast.pnl, slow.pnl)  # same additions in the same order
    # A bar missing from C: the rows no longer share their times, the one pass says so, and
    # the aligned book drops that time (and keeps the rest).
    gapped = history_of(closes, 300, {"C": {350}})
    assert gapped.book_pnl(tuple(values), np.array(list(values.values()))) is None
    book = ScenarioBook(values, gapped.returns)
    # A has returns at 100 h ... 399 h; C none at 350 h (its 351 h return spans two bars, and
    # counts, as the risk manager's history records it): 299 common times.
    assert book.axis is not None and 350 * HOUR_MS not in book.axis.tolist()
    assert book.observations == 299 and 351 * HOUR_MS in book.axis.tolist()


def test_an_order_on_the_book_matches_a_book_built_with_it() -> None:
    closes = random_closes(300, seed=2)
    history = history_of(closes, 250, {"C": {120, 200}})
    rng = np.random.default_rng(5)
    values = {"A": 3_000.0, "B": -1_000.0}
    book = ScenarioBook(values, history.returns)
    for _ in range(30):
        symbol = str(rng.choice(["A", "B", "C"]))
        delta = float(rng.normal(0.0, 2_000.0))
        after = dict(values)
        after[symbol] = after.get(symbol, 0.0) + delta
        fresh = ScenarioBook(after, history.returns)
        for method in VarMethod:
            change = book.change(symbol, delta, 0.99, method)
            expect = fresh.risk(0.99, method)
            assert change.observations == fresh.observations
            assert change.after.var == pytest.approx(expect.var, rel=1e-9, abs=1e-9)
            assert change.after.expected_shortfall == pytest.approx(
                expect.expected_shortfall, rel=1e-9, abs=1e-9
            )
        book.add(symbol, delta)
        values = after
        assert book.pnl == pytest.approx(fresh.pnl, rel=1e-9, abs=1e-9)


def test_an_empty_book_judges_an_order_on_its_symbols_history() -> None:
    closes = random_closes(50, seed=3)
    history = history_of(closes, 100, {})
    book = ScenarioBook({}, history.returns)
    assert book.axis is None and book.risk(0.99, VarMethod.HISTORICAL) == (0.0, 0.0)
    change = book.change("A", 1_000.0, 0.99, VarMethod.HISTORICAL)
    r = closes["A"][1:] / closes["A"][:-1] - 1.0
    assert change.observations == 49 and change.before.var == 0.0
    assert change.after.var == pytest.approx(historical_var(1_000.0 * r, 0.99) * DAY)


def test_tail_risks_match_the_reference_functions_and_scale_by_root_bars_per_day() -> None:
    rng = np.random.default_rng(4)
    returns = rng.normal(0.0, 0.01, (3, 200))
    w = np.array([2_000.0, -500.0, 1_000.0])
    pnl = w @ returns
    for c in (0.95, 0.99, 0.975):
        (hist,) = tail_risks(pnl, (c,), VarMethod.HISTORICAL)
        assert hist.var == historical_var(pnl, c)
        assert hist.expected_shortfall == pytest.approx(historical_cvar(pnl, c), rel=1e-12)
        (norm,) = tail_risks(pnl, (c,), VarMethod.PARAMETRIC)
        cov = np.cov(returns, ddof=1)
        assert norm.var == pytest.approx(portfolio_parametric_var(w, cov, confidence=c))
        sigma = float(pnl.std(ddof=1))
        z = normal_quantile(c)
        density = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        assert norm.expected_shortfall == pytest.approx(sigma * density / (1 - c))
    # Hourly bars: 1 day = √24 one-bar figures; 15-minute bars: √96.
    for bar_ms, per_day in ((HOUR_MS, 24), (HOUR_MS // 4, 96)):
        history = PriceHistory(300)
        c = random_closes(201, seed=6)["A"]
        history.update_row(int(history.rows(("A",))[0]), np.arange(201) * bar_ms, c)
        book = ScenarioBook({"A": 1_000.0}, history.returns)
        one_bar = book.risk(0.99, VarMethod.HISTORICAL, horizon=False)
        assert book.risk(0.99, VarMethod.HISTORICAL).var == pytest.approx(
            one_bar.var * math.sqrt(per_day)
        )


# --- the limits in the risk manager ------------------------------------------------------


async def test_an_entry_that_lifts_var_over_the_limit_is_refused_and_counted() -> None:
    closes = random_closes(301, seed=7)
    limits = RiskLimits(max_var_99=0.015, var_window=300, max_order_notional=50_000.0)
    desk = Desk(limits, closes)
    await desk.feed(301)
    # 1-day 99 % VaR of 10,000 of A: the oracle's, on 300 hourly returns.
    var_10k = historical_var(desk.oracle({"A": 10_000.0}, 300), 0.99) * DAY
    assert 1_000.0 < var_10k < 1_500.0  # ~2.33 · 1 % · √24 · 10,000 ≈ 1,140 < 0.015 · 100k
    assert reason(await desk.order("A", 10_000.0)) is None
    # Another 10,000 doubles it, over 1,500: refused as var_limit.
    assert reason(await desk.order("A", 10_000.0)) == "var_limit"
    assert desk.risk.rejects == {"var_limit": 1}
    assert desk.risk.metrics()["rejects"] == {"var_limit": 1}
    # C, independent of A: 4,000 of C adds little (√(1,140² + 456²) ≈ 1,230 < 1,500).
    assert reason(await desk.order("C", 4_000.0)) is None
    # Selling A (a reduction) passes.
    assert reason(await desk.order("A", -5_000.0)) is None
    # The book as the limit saw it matches the oracle after the accepted orders.
    book = desk.risk.scenario_book()
    values = {"A": 5_000.0, "C": 4_000.0}  # in flight, valued at the order prices
    assert book.risk(0.99, VarMethod.HISTORICAL).var == pytest.approx(
        historical_var(desk.oracle(values, 300), 0.99) * DAY, rel=1e-9
    )


async def test_the_same_entries_pass_with_the_limit_off_or_looser() -> None:
    # Negative control for the test above: only the limit differs.
    for limits in (
        RiskLimits(var_window=300, max_order_notional=50_000.0),
        RiskLimits(max_var_99=0.03, var_window=300, max_order_notional=50_000.0),
    ):
        desk = Desk(limits, random_closes(301, seed=7))
        await desk.feed(301)
        assert reason(await desk.order("A", 10_000.0)) is None
        assert reason(await desk.order("A", 10_000.0)) is None
        assert desk.risk.rejects == {}


async def test_above_the_limit_an_order_that_lowers_var_passes_and_one_that_raises_it_not() -> None:
    closes = random_closes(301, seed=8)
    # The last 100 bars five times as volatile: a book accepted in calm bars ends above.
    calm = closes["A"][:201]
    rng = np.random.default_rng(9)
    wild = rng.normal(0.0, 0.05, 100)
    closes["A"] = np.concatenate([calm, calm[-1] * np.cumprod(1.0 + wild)])
    closes["B"] = np.concatenate(
        [closes["B"][:201], closes["B"][200] * np.cumprod(1.0 + 0.95 * wild)]
    )
    limits = RiskLimits(
        max_var_99=0.015, var_window=200, var_min_observations=100, max_order_notional=50_000.0
    )
    desk = Desk(limits, closes)
    await desk.feed(201)
    assert reason(await desk.order("A", 10_000.0)) is None
    await desk.feed(100)
    var = desk.risk.scenario_book().risk(0.99, VarMethod.HISTORICAL).var
    assert var > 0.015 * 100_000.0  # above the limit now
    assert reason(await desk.order("A", 1_000.0)) == "var_limit"  # more: refused
    assert reason(await desk.order("A", -1_000.0)) is None  # less: passes above the limit
    # A short of B, which moves with A, hedges: VaR falls, so it passes although the book is
    # still over the limit; a long of B would add to it.
    assert reason(await desk.order("B", 2_000.0)) == "var_limit"
    assert reason(await desk.order("B", -2_000.0)) is None
    assert desk.risk.scenario_book().risk(0.99, VarMethod.HISTORICAL).var > 1_500.0


async def test_expected_shortfall_limit_alone() -> None:
    closes = random_closes(301, seed=7)
    desk = Desk(RiskLimits(max_es_99=0.02, var_window=300, max_order_notional=50_000.0), closes)
    await desk.feed(301)
    es_10k = historical_cvar(desk.oracle({"A": 10_000.0}, 300), 0.99) * DAY
    assert es_10k < 2_000.0 < 2 * es_10k
    assert reason(await desk.order("A", 10_000.0)) is None
    assert reason(await desk.order("A", 10_000.0)) == "es_limit"


async def test_parametric_method_judges_on_the_normal_var() -> None:
    closes = random_closes(301, seed=7)
    limits = RiskLimits(
        max_var_99=0.015, var_window=300, var_method=VarMethod.PARAMETRIC, max_order_notional=5e4
    )
    desk = Desk(limits, closes)
    await desk.feed(301)
    assert reason(await desk.order("A", 10_000.0)) is None
    change = desk.risk.scenario_book().change("A", 10_000.0, 0.99, VarMethod.PARAMETRIC)
    sigma = float(desk.oracle({"A": 20_000.0}, 300).std(ddof=1))
    assert change.after.var == pytest.approx(normal_quantile(0.99) * sigma * DAY, rel=1e-9)
    assert reason(await desk.order("A", 10_000.0)) == "var_limit"


async def test_too_little_history_refuses_entries_not_exits() -> None:
    closes = random_closes(301, seed=7)
    limits = RiskLimits(max_var_99=0.01, var_window=300, var_min_observations=100)
    desk = Desk(limits, closes)
    await desk.feed(50)  # 49 returns < 100
    assert reason(await desk.order("A", 1_000.0)) == "var_warmup"
    assert desk.risk.rejects == {"var_warmup": 1}
    # With the limits off nothing is refused for want of history (negative control).
    off = Desk(RiskLimits(var_window=300), closes)
    await off.feed(50)
    assert reason(await off.order("A", 1_000.0)) is None
    # Enough history: the same entry passes.
    await desk.feed(60)
    assert reason(await desk.order("A", 1_000.0)) is None


def test_limits_are_config_with_typos_and_contradictions_refused() -> None:
    limits = msgspec.convert(
        {"max_var_99": 0.02, "max_es_99": 0.03, "var_method": "parametric"}, RiskLimits
    )
    assert limits.var_limited and limits.var_method is VarMethod.PARAMETRIC
    assert not RiskLimits().var_limited  # off by default
    with pytest.raises(msgspec.ValidationError, match="max_var99"):
        msgspec.convert({"max_var99": 0.02}, RiskLimits)
    with pytest.raises(msgspec.ValidationError, match="var_min_observations"):
        msgspec.convert({"var_window": 50, "var_min_observations": 100}, RiskLimits)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_var_99": 0.0}, RiskLimits)


# --- the gauges --------------------------------------------------------------------------


async def test_var_and_es_gauges_are_the_books_one_day_figures() -> None:
    closes = random_closes(301, seed=11)
    desk = Desk(RiskLimits(var_window=300, max_order_notional=50_000.0), closes)
    metrics = Metrics()
    metrics.attach(
        Snapshot(
            health=lambda: 1.0, bus_counts=dict, bus_queue_depths=dict, dead_letters=lambda: 0,
            breakers=dict, rejects=dict, stale_symbols=lambda: 0, risk_state=lambda: "ACTIVE",
            pnl=dict, eventlog=dict, cache=dict, regime=dict,
            tail_risk=desk.risk.tail_risk_1d,
        )
    )  # fmt: skip

    def gauge(name: str, method: str, level: str) -> float | None:
        labels = {"method": method, "level": level}
        return metrics.registry.get_sample_value(f"quantumtrade_{name}", labels)

    await desk.feed(301)
    # Nothing held: nothing to lose.
    assert gauge("var", "historical", "0.99") == 0.0
    assert reason(await desk.order("A", 8_000.0)) is None
    assert reason(await desk.order("C", -3_000.0)) is None
    pnl = desk.oracle({"A": 8_000.0, "C": -3_000.0}, 300)
    for level in (0.95, 0.99):
        key = f"{level:g}"
        assert gauge("var", "historical", key) == pytest.approx(
            historical_var(pnl, level) * DAY, rel=1e-9
        )
        assert gauge("expected_shortfall", "historical", key) == pytest.approx(
            historical_cvar(pnl, level) * DAY, rel=1e-9
        )
        sigma = float(pnl.std(ddof=1))
        assert gauge("var", "parametric", key) == pytest.approx(
            normal_quantile(level) * sigma * DAY, rel=1e-9
        )
    text = metrics.render().decode()
    assert 'quantumtrade_var{level="0.99",method="historical"}' in text
    # A new bar moves the book's scenarios: the gauge follows (the cache is not stale).
    before = gauge("var", "historical", "0.99")
    desk.closes = {s: np.concatenate([c, [c[-1] * 1.2]]) for s, c in closes.items()}
    await desk.feed(1)
    assert gauge("var", "historical", "0.99") != before
