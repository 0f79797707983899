"""``backtest/baselines.py``: random entries that mirror the strategy's trades, buy-and-hold,
and how seeds are averaged. Oracles: ``bar_fill.market_price`` for prices and a slow book kept
bar by bar for the equity curve."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from quantumtrade.backtest.baselines import (
    RandomTrades,
    buy_and_hold,
    mean_metrics,
    random_curve,
    random_metrics,
    random_trade_list,
    random_trades,
    regime_blind_config,
    spread,
)
from quantumtrade.backtest.data import Candles, from_arrays
from quantumtrade.backtest.metrics import benchmark_curve, benchmark_trades, performance
from quantumtrade.backtest.model import EquityCurve, Trade
from quantumtrade.backtest.runner import BacktestResult
from quantumtrade.config import load_config
from quantumtrade.events import Bar, Side
from quantumtrade.execution.bar_fill import BarFillConfig, market_price

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
N_BARS = 300
LATE_START = 200
"""CCCUSDT has no bars before this one (listed late): no random trade may use it earlier."""
GAP = range(60, 64)
"""BBBUSDT has no bars here (an outage): no random trade may enter or exit in it."""
FILL = BarFillConfig(slippage_bps=3.0, range_share=0.1, taker_fee_bps=7.5)


def make_candles(seed: int = 1) -> Candles:
    rng = np.random.default_rng(seed)
    prices = np.empty((N_BARS, len(SYMBOLS), 5))
    for j in range(len(SYMBOLS)):
        close = 50.0 * (j + 1) * np.exp(np.cumsum(rng.normal(0, 0.01, N_BARS)))
        open_ = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0, 0.002, N_BARS))
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, N_BARS)))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, N_BARS)))
        prices[:, j] = np.stack((open_, high, low, close, np.full(N_BARS, 1e6)), axis=1)
    ts = START_MS + HOUR_MS * np.arange(N_BARS, dtype=np.int64)
    full = from_arrays(SYMBOLS, ts, prices, HOUR_MS)
    have = full.have.copy()
    have[:LATE_START, 2] = False
    have[GAP.start : GAP.stop, 1] = False
    prices = full.prices.copy()
    prices[~have] = np.nan
    return Candles(symbols=SYMBOLS, ts_ms=full.ts_ms, prices=prices, have=have, bar_ms=HOUR_MS)


def trade(side: str, entry: int, hold: int, notional: float, symbol: str = "AAAUSDT") -> Trade:
    return Trade(
        symbol=symbol,
        side=side,
        entry_ts_ms=START_MS + entry * HOUR_MS,
        exit_ts_ms=START_MS + (entry + hold) * HOUR_MS,
        entry_bar=entry,
        exit_bar=entry + hold,
        quantity=notional / 100.0,
        entry_price=100.0,
        exit_price=101.0,
        fees=1.0,
        pnl=5.0,
        regime=None,
        exit_reason="signal_fade",
    )


STRATEGY_TRADES = [
    trade("LONG", 10, 5, 10_000.0),
    trade("LONG", 12, 0, 5_000.0),  # in and out on one bar (a stop hit on the entry bar)
    trade("SHORT", 40, 30, 8_000.0, "BBBUSDT"),
    trade("LONG", 70, 5, 12_000.0),
    trade("SHORT", 100, 100, 3_000.0),  # CCCUSDT's 100 bars cannot hold 100 bars
    trade("LONG", 250, 49, 20_000.0, "CCCUSDT"),  # ends on the last bar (end_of_data)
    trade("LONG", 251, 1, 7_000.0),
]


@pytest.fixture(scope="module")
def candles() -> Candles:
    return make_candles()


def test_random_trades_mirror_count_sides_holds_and_notional(candles: Candles) -> None:
    draws = random_trades(candles, STRATEGY_TRADES, seeds=range(20), bar_fill=FILL)
    sides = [t.side for t in STRATEGY_TRADES]
    holds = Counter(t.hold_bars for t in STRATEGY_TRADES)
    for i in range(20):
        mine = random_trade_list(candles, draws, i)
        assert len(mine) == len(STRATEGY_TRADES)
        # Trade by trade: the same side, hold and notional as the trade it mirrors.
        assert [t.side for t in mine] == sides
        assert Counter(t.hold_bars for t in mine) == holds
        for r, s in zip(mine, STRATEGY_TRADES, strict=True):
            assert r.hold_bars == s.hold_bars
            assert r.notional == pytest.approx(s.quantity * s.entry_price, rel=1e-12)
            assert r.exit_reason == "random"
            row = SYMBOLS.index(r.symbol)
            assert 1 <= r.entry_bar <= r.exit_bar <= N_BARS - 1
            assert candles.have[r.entry_bar, row] and candles.have[r.exit_bar, row]
            if r.symbol == "CCCUSDT":
                assert r.entry_bar >= LATE_START
    # Random, not copied: entry bars and symbols vary across seeds.
    assert len({tuple(draws.entry_bar[i]) for i in range(20)}) == 20
    assert len(set(draws.row[:, 0].tolist())) == len(SYMBOLS)
    # The 100-bar hold never lands on CCCUSDT, which has only 100 bars.
    assert not np.any(draws.row[:, 4] == 2)


def test_entry_bars_are_uniform_over_where_the_trade_fits(candles: Candles) -> None:
    """One 5-bar hold, 2,000 draws: CCCUSDT entries spread over its 95 possible bars, and the
    three symbols are picked about equally (the draw is by symbol, then by bar)."""
    many = random_trades(
        candles, [trade("LONG", 10, 5, 1_000.0)], seeds=range(2_000), bar_fill=FILL
    )
    rows = many.row[:, 0]
    counts = np.bincount(rows, minlength=3)
    assert counts.min() > 2_000 / 3 * 0.85, counts
    late = many.entry_bar[rows == 2, 0]
    assert late.min() >= LATE_START and late.max() <= N_BARS - 1 - 5
    assert np.unique(late).size > 80


def test_a_seed_draws_the_same_trades_alone_or_among_others(candles: Candles) -> None:
    together = random_trades(candles, STRATEGY_TRADES, seeds=range(6), bar_fill=FILL)
    alone = random_trades(candles, STRATEGY_TRADES, seeds=[3], bar_fill=FILL)
    again = random_trades(candles, STRATEGY_TRADES, seeds=[3], bar_fill=FILL)
    for field in ("row", "entry_bar", "exit_bar", "quantity", "entry_price", "exit_price"):
        assert np.array_equal(getattr(alone, field)[0], getattr(together, field)[3]), field
        assert np.array_equal(getattr(alone, field), getattr(again, field)), field
    assert not np.array_equal(together.entry_bar[3], together.entry_bar[4])


def test_random_fills_are_priced_as_bar_fill_prices_market_orders(candles: Candles) -> None:
    draws = random_trades(candles, STRATEGY_TRADES, seeds=range(5), bar_fill=FILL)
    for i in range(5):
        for r in random_trade_list(candles, draws, i):
            row = SYMBOLS.index(r.symbol)
            enter, leave = (Side.BUY, Side.SELL) if r.side == "LONG" else (Side.SELL, Side.BUY)
            at_entry = Bar(0, *candles.prices[r.entry_bar, row].tolist())
            at_exit = Bar(0, *candles.prices[r.exit_bar, row].tolist())
            assert r.entry_price == pytest.approx(market_price(enter, at_entry, FILL), rel=1e-12)
            assert r.exit_price == pytest.approx(market_price(leave, at_exit, FILL), rel=1e-12)
            fees = r.quantity * (r.entry_price + r.exit_price) * FILL.taker_fee_bps / 1e4
            assert r.fees == pytest.approx(fees, rel=1e-12)
            sign = 1.0 if r.side == "LONG" else -1.0
            gain = sign * r.quantity * (r.exit_price - r.entry_price)
            assert r.pnl == pytest.approx(gain - fees, rel=1e-9)


def slow_curve(candles: Candles, trades: list[Trade], initial_equity: float) -> EquityCurve:
    """The obvious book: fills at each bar, then mark every open trade at the last close."""
    n = candles.bars
    cash = np.empty(n)
    value = np.empty(n)
    gross = np.empty(n)
    money = initial_equity
    last_close = dict.fromkeys(SYMBOLS, 0.0)
    for t in range(n):
        for j, s in enumerate(SYMBOLS):
            if candles.have[t, j]:
                last_close[s] = float(candles.prices[t, j, 3])
        for tr in trades:
            sign = 1.0 if tr.side == "LONG" else -1.0
            fee_rate = FILL.taker_fee_bps / 1e4
            if tr.entry_bar == t:
                money -= (
                    sign * tr.quantity * tr.entry_price + fee_rate * tr.quantity * tr.entry_price
                )
            if tr.exit_bar == t:
                money += sign * tr.quantity * tr.exit_price - fee_rate * tr.quantity * tr.exit_price
        held = dict.fromkeys(SYMBOLS, 0.0)
        for tr in trades:
            if tr.entry_bar <= t < tr.exit_bar:
                held[tr.symbol] += (1.0 if tr.side == "LONG" else -1.0) * tr.quantity
        cash[t] = money
        value[t] = sum(q * last_close[s] for s, q in held.items())
        gross[t] = sum(abs(q * last_close[s]) for s, q in held.items())
    return EquityCurve(
        ts_ms=candles.ts_ms, cash=cash, position_value=value, equity=cash + value,
        gross_exposure=gross,
    )  # fmt: skip


def test_random_curve_matches_a_book_kept_bar_by_bar(candles: Candles) -> None:
    draws = random_trades(candles, STRATEGY_TRADES, seeds=range(4), bar_fill=FILL)
    for i in range(4):
        fast = random_curve(candles, draws, i, initial_equity=50_000.0)
        trades = random_trade_list(candles, draws, i)
        slow = slow_curve(candles, trades, 50_000.0)
        np.testing.assert_allclose(fast.cash, slow.cash, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fast.position_value, slow.position_value, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fast.gross_exposure, slow.gross_exposure, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fast.equity, slow.equity, rtol=0, atol=1e-6)
        # Every trade is closed by the last bar: the pnls add up to the curve's gain.
        total = sum(t.pnl for t in trades)
        assert fast.equity[-1] - 50_000.0 == pytest.approx(total, abs=1e-6)
        assert fast.gross_exposure[0] == 0.0  # nothing can be held on the first bar


def test_random_metrics_score_each_seed_with_performance(candles: Candles) -> None:
    draws = random_trades(candles, STRATEGY_TRADES, seeds=range(3), bar_fill=FILL)
    runs = random_metrics(candles, draws, initial_equity=50_000.0, bars_per_year=8760.0)
    for i, run in enumerate(runs):
        curve = slow_curve(candles, random_trade_list(candles, draws, i), 50_000.0)
        expected = performance(
            curve,
            random_trade_list(candles, draws, i),
            initial_equity=50_000.0,
            bars_per_year=8760.0,
            traded_notional=float(
                (draws.quantity[i] * (draws.entry_price[i] + draws.exit_price[i])).sum()
            ),
            fees=float(draws.fees[i].sum()),
        )
        assert run.keys() == expected.keys()
        for key, value in expected.items():
            assert run[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        assert run["trades"] == len(STRATEGY_TRADES)
        assert run["avg_hold_bars"] == pytest.approx(
            np.mean([t.hold_bars for t in STRATEGY_TRADES])
        )


def test_a_hold_no_symbol_can_fit_is_refused(candles: Candles) -> None:
    with pytest.raises(ValueError, match="299 bars apart"):
        random_trades(candles, [trade("LONG", 0, N_BARS - 1, 1_000.0)], seeds=[0], bar_fill=FILL)


def test_no_trades_give_a_flat_book(candles: Candles) -> None:
    draws = random_trades(candles, [], seeds=range(2), bar_fill=FILL)
    assert isinstance(draws, RandomTrades) and draws.row.shape == (2, 0)
    (run, _) = random_metrics(candles, draws, initial_equity=1_000.0, bars_per_year=8760.0)
    assert run["trades"] == 0 and run["total_return"] == 0.0 and run["exposure"] == 0.0


def test_mean_metrics_average_defined_values_and_keep_a_constant_count() -> None:
    runs: list[dict[str, float | int | None]] = [
        {"sharpe": 1.0, "calmar": None, "trades": 7, "max_drawdown_bars": 10, "pf": None},
        {"sharpe": 2.0, "calmar": 4.0, "trades": 7, "max_drawdown_bars": 13, "pf": None},
        {"sharpe": 6.0, "calmar": 2.0, "trades": 7, "max_drawdown_bars": 13, "pf": None},
    ]
    mean = mean_metrics(runs)
    assert mean == {
        "sharpe": 3.0,
        "calmar": 3.0,
        "trades": 7,
        "max_drawdown_bars": 12.0,
        "pf": None,
    }
    assert isinstance(mean["trades"], int)
    got = spread(runs, {"sharpe": 1.5}, keys=("sharpe",))["sharpe"]
    assert got["std"] == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))
    assert (got["min"], got["max"], got["defined_in"]) == (1.0, 6.0, 3)
    assert got["strategy_beats"] == pytest.approx(1 / 3)
    assert spread(runs, {}, keys=("sharpe",))["sharpe"]["strategy_beats"] is None


def test_buy_and_hold_is_the_existing_benchmark_at_the_strategys_mean_gross(
    candles: Candles,
) -> None:
    n = candles.bars
    equity = np.full(n, 100_000.0)
    gross = np.where(np.arange(n) % 2 == 0, 60_000.0, 0.0)  # mean gross share 0.3
    curve = EquityCurve(
        ts_ms=candles.ts_ms, cash=equity - gross, position_value=gross, equity=equity,
        gross_exposure=gross,
    )  # fmt: skip
    result = BacktestResult(
        candles=candles, curve=curve, trades=[], signals=[],
        regimes=np.zeros((len(SYMBOLS), n), dtype=np.int8), initial_equity=100_000.0, fees=0.0,
        traded_notional=0.0, orders=0, fills=0, rejected_orders={}, rejected_bars={},
        elapsed_s=0.0, bars_fed=0,
    )  # fmt: skip
    got = buy_and_hold(result, bars_per_year=8760.0, fee_bps=10.0)
    assert got.strategy_gross == pytest.approx(0.3) and got.gross_fraction == pytest.approx(0.3)
    args = {"gross_fraction": 0.3, "initial_equity": 100_000.0, "fee_bps": 10.0}
    open_, close = candles.column(0), candles.column(3)
    bench = benchmark_curve(open_, close, ts_ms=candles.ts_ms, **args)
    trades = benchmark_trades(open_, close, symbols=SYMBOLS, ts_ms=candles.ts_ms, **args)
    expected = performance(
        bench, trades, initial_equity=100_000.0, bars_per_year=8760.0,
        traded_notional=sum(t.notional for t in trades), fees=sum(t.fees for t in trades),
    )  # fmt: skip
    assert got.metrics == expected
    np.testing.assert_array_equal(got.curve.equity, bench.equity)
    # Negative control: another gross is another benchmark.
    other = benchmark_curve(open_, close, ts_ms=candles.ts_ms, **{**args, "gross_fraction": 0.9})
    assert not np.allclose(other.equity, got.curve.equity)


def test_regime_blind_config_changes_that_flag_only() -> None:
    cfg = load_config(None, environ={})
    blind = regime_blind_config(cfg)
    assert blind.strategy.regime_blind and not cfg.strategy.regime_blind
    assert blind.strategy.name == cfg.strategy.name and blind.risk == cfg.risk
