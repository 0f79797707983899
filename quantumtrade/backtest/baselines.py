"""What a strategy is judged against (``backtest --compare``): three baselines, scored alike.

* ``regime_blind``: the same config with ``[strategy] regime_blind = true``, run over the same
  bars (the command runs it; here it is only scored), so the difference is what knowing the
  regime was worth.
* ``random``: the strategy's trades re-drawn at random. Each trade keeps its side, its holding
  time in bars and its entry notional (quantity * entry_price); it gets a random symbol
  (uniform over the symbols that can hold it) and a random entry bar (uniform over that
  symbol's bars where it fits). Decided on bar d, it enters at bar d+1's open and exits at the
  open ``hold_bars`` later, both as market orders priced as ``[execution.bar_fill]`` prices
  them (``market_price``: slippage_bps of the open plus range_share of the bar's range, the
  taker fee on each fill; no volume cap). An entry bar and an exit bar must be bars the symbol
  has with finite prices; positions are marked at the last such close. The equity curve is
  built bar by bar (cash + marked positions, the runner's convention) and scored by the same
  ``performance``; each metric is the mean over seeds 0..N-1 (of the seeds where it is
  defined), and ``random_spread`` gives the spread of sharpe and total_return over seeds.
  A strategy trade still open at the end (``end_of_data``, marked, never sold) is mirrored by a
  trade that does sell, at the open, so the random book pays that exit's costs.
* ``buy_and_hold``: the benchmark summary.json has always had (``benchmark_curve``): equal
  weights at the strategy's mean gross exposure share (at most 1), bought at each symbol's
  first open and held.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.backtest.data import Candles
from quantumtrade.backtest.metrics import benchmark_curve, benchmark_trades, performance
from quantumtrade.backtest.model import EquityCurve, Trade
from quantumtrade.backtest.runner import BacktestResult
from quantumtrade.config import AppConfig
from quantumtrade.execution.bar_fill import BarFillConfig

DEFAULT_RANDOM_SEEDS = 20
RANDOM_EXIT_REASON = "random"
SPREAD_KEYS = ("sharpe", "total_return")
"""Metrics whose spread over the random seeds summary.json gives (``random_spread``)."""

Metrics = dict[str, float | int | None]
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def regime_blind_config(cfg: AppConfig) -> AppConfig:
    """``cfg`` with the regime withheld from the strategy (``[strategy] regime_blind = true``)."""
    return msgspec.structs.replace(
        cfg, strategy=msgspec.structs.replace(cfg.strategy, regime_blind=True)
    )


def result_performance(result: BacktestResult, *, bars_per_year: float) -> Metrics:
    """A run's metrics, as summary.json's ``strategy`` object gives them."""
    return performance(
        result.curve,
        result.trades,
        initial_equity=result.initial_equity,
        bars_per_year=bars_per_year,
        traded_notional=result.traded_notional,
        fees=result.fees,
    )


# --- buy and hold -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuyAndHold:
    metrics: Metrics
    curve: EquityCurve
    gross_fraction: float
    """The share of equity it holds: the strategy's mean gross share, clipped to [0, 1]."""
    strategy_gross: float
    """The strategy's mean gross exposure as a share of equity."""


def buy_and_hold(result: BacktestResult, *, bars_per_year: float, fee_bps: float) -> BuyAndHold:
    """The equal-weight buy-and-hold benchmark of ``result``'s symbols, at its mean gross."""
    candles, curve = result.candles, result.curve
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(curve.equity > 0, curve.gross_exposure / curve.equity, 0.0)
    # An unlevered buy-and-hold: a leveraged one wipes out in a sell-off, and its ratios mean
    # nothing past that. summary.json gives the strategy's own mean gross beside it.
    strategy_gross = float(share.mean()) if len(curve) else 0.0
    gross_fraction = min(max(strategy_gross, 0.0), 1.0)
    open_, close = candles.column(0), candles.column(3)
    args: dict[str, Any] = {
        "gross_fraction": gross_fraction,
        "initial_equity": result.initial_equity,
        "fee_bps": fee_bps,
        "ts_ms": candles.ts_ms,
    }
    bench_curve = benchmark_curve(open_, close, **args)
    trades = benchmark_trades(open_, close, symbols=candles.symbols, **args)
    metrics = performance(
        bench_curve,
        trades,
        initial_equity=result.initial_equity,
        bars_per_year=bars_per_year,
        traded_notional=sum(t.notional for t in trades),
        fees=sum(t.fees for t in trades),
    )
    return BuyAndHold(metrics, bench_curve, gross_fraction, strategy_gross)


# --- random entries ---------------------------------------------------------------------


def market_prices(
    sign: IntArray, open_: FloatArray, high: FloatArray, low: FloatArray, config: BarFillConfig
) -> FloatArray:
    """``bar_fill.market_price`` element-wise: sign +1 a BUY at the open, -1 a SELL."""
    slip = open_ * config.slippage_bps / 1e4 + config.range_share * (high - low)
    buy = open_ + slip
    sell = np.maximum(open_ - slip, open_ * 0.1)
    return np.asarray(np.where(sign > 0, buy, sell), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class RandomTrades:
    """Random round trips mirroring a strategy's K trades: one row per seed, (seeds, K)."""

    seeds: tuple[int, ...]
    row: IntArray
    """Symbol row of each trade."""
    entry_bar: IntArray
    exit_bar: IntArray
    sign: IntArray
    """(K,): +1 LONG, -1 SHORT (the mirrored trade's side)."""
    quantity: FloatArray
    entry_price: FloatArray
    exit_price: FloatArray
    entry_fee: FloatArray
    exit_fee: FloatArray

    @property
    def fees(self) -> FloatArray:
        return np.asarray(self.entry_fee + self.exit_fee, dtype=np.float64)

    @property
    def pnl(self) -> FloatArray:
        gain = self.sign * self.quantity * (self.exit_price - self.entry_price)
        return np.asarray(gain - self.fees, dtype=np.float64)


def _tradable(candles: Candles) -> NDArray[np.bool_]:
    """(symbols, bars): the symbol has a bar there with finite prices and a positive open."""
    ohlc = candles.prices[:, :, :4]
    ok = candles.have & np.isfinite(ohlc).all(axis=2) & (candles.prices[:, :, 0] > 0.0)
    return np.ascontiguousarray(ok.T)


def random_trades(
    candles: Candles,
    trades: Sequence[Trade],
    *,
    seeds: Sequence[int],
    bar_fill: BarFillConfig,
) -> RandomTrades:
    """Draw each seed's mirror of ``trades`` (see the module docstring for the rules).

    Seed s uses ``numpy.random.default_rng(s)`` alone, so a seed's trades do not depend on
    which other seeds are drawn. Raises ``ValueError`` when no symbol has two tradable bars a
    trade's holding time apart (after the first bar)."""
    n_seeds, k = len(seeds), len(trades)
    n_bars = candles.bars
    tradable = _tradable(candles)
    sign = np.fromiter((1 if t.side == "LONG" else -1 for t in trades), np.int64, count=k)
    hold = np.fromiter((t.exit_bar - t.entry_bar for t in trades), np.int64, count=k)
    notional = np.fromiter((t.quantity * t.entry_price for t in trades), np.float64, count=k)
    if k and hold.min() < 0:
        raise ValueError("a trade exits before it enters")
    # Two uniforms per trade per seed: one picks the symbol, one the bar within its choices.
    pick_symbol = np.empty((n_seeds, k))
    pick_bar = np.empty((n_seeds, k))
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        pick_symbol[i] = rng.random(k)
        pick_bar[i] = rng.random(k)
    row = np.zeros((n_seeds, k), dtype=np.int64)
    entry = np.zeros((n_seeds, k), dtype=np.int64)
    for h in np.unique(hold).tolist():
        # Entry bars e in [1, n_bars - 1 - h] (bar e - 1 decides), tradable at e and at e + h.
        width = n_bars - 1 - h
        valid = (
            tradable[:, 1 : 1 + width] & tradable[:, 1 + h : 1 + h + width]
            if width > 0
            else np.zeros((tradable.shape[0], 0), dtype=bool)
        )
        counts = valid.sum(axis=1)
        eligible = np.flatnonzero(counts)
        if eligible.size == 0:
            raise ValueError(f"no symbol has tradable bars {h} bars apart to mirror a trade")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        flat = np.flatnonzero(valid)
        mine = hold == h
        symbols = eligible[(pick_symbol[:, mine] * eligible.size).astype(np.int64)]
        nth = (pick_bar[:, mine] * counts[symbols]).astype(np.int64)
        row[:, mine] = symbols
        entry[:, mine] = flat[starts[symbols] + nth] % width + 1
    exit_ = entry + hold
    prices = candles.prices
    opens, highs, lows = (prices[:, :, f].T for f in (0, 1, 2))
    signs = np.broadcast_to(sign, (n_seeds, k))
    entry_price = market_prices(
        signs, opens[row, entry], highs[row, entry], lows[row, entry], bar_fill
    )
    exit_price = market_prices(
        -signs, opens[row, exit_], highs[row, exit_], lows[row, exit_], bar_fill
    )
    quantity = notional / entry_price
    fee_rate = bar_fill.taker_fee_bps / 1e4
    return RandomTrades(
        seeds=tuple(seeds),
        row=row,
        entry_bar=entry,
        exit_bar=exit_,
        sign=sign,
        quantity=quantity,
        entry_price=entry_price,
        exit_price=exit_price,
        entry_fee=quantity * entry_price * fee_rate,
        exit_fee=quantity * exit_price * fee_rate,
    )


def _marks(candles: Candles) -> FloatArray:
    """(symbols, bars): the last tradable bar's close at or before each bar (0 before one)."""
    tradable = _tradable(candles)
    close = np.where(tradable, candles.column(3), 0.0)
    seen = np.where(tradable, np.arange(candles.bars), 0)
    last = np.maximum.accumulate(seen, axis=1)
    return np.asarray(np.take_along_axis(close, last, axis=1), dtype=np.float64)


def random_curve(
    candles: Candles,
    draws: RandomTrades,
    seed_index: int,
    *,
    initial_equity: float,
    marks: FloatArray | None = None,
) -> EquityCurve:
    """The equity curve of one seed's trades: after each bar's fills, marked at its close."""
    n_symbols, n_bars = len(candles.symbols), candles.bars
    marks = _marks(candles) if marks is None else marks
    i = seed_index
    row, entry, exit_ = draws.row[i], draws.entry_bar[i], draws.exit_bar[i]
    signed = draws.sign * draws.quantity[i]
    cells = n_symbols * n_bars
    at_entry, at_exit = row * n_bars + entry, row * n_bars + exit_
    change = np.bincount(at_entry, weights=signed, minlength=cells) - np.bincount(
        at_exit, weights=signed, minlength=cells
    )
    position = np.cumsum(change.reshape(n_symbols, n_bars), axis=1)
    # The same quantity in and out can leave a rounding crumb: no trade open is flat.
    open_trades = np.bincount(at_entry, minlength=cells) - np.bincount(at_exit, minlength=cells)
    position[np.cumsum(open_trades.reshape(n_symbols, n_bars), axis=1) == 0] = 0.0
    value = position * marks
    paid = signed * draws.entry_price[i] + draws.entry_fee[i]
    received = signed * draws.exit_price[i] - draws.exit_fee[i]
    flows = np.bincount(exit_, weights=received, minlength=n_bars) - np.bincount(
        entry, weights=paid, minlength=n_bars
    )
    cash = initial_equity + np.cumsum(flows)
    position_value = value.sum(axis=0)
    return EquityCurve(
        ts_ms=np.asarray(candles.ts_ms, dtype=np.int64).copy(),
        cash=cash.astype(np.float64),
        position_value=position_value.astype(np.float64),
        equity=(cash + position_value).astype(np.float64),
        gross_exposure=np.abs(value).sum(axis=0).astype(np.float64),
    )


def random_trade_list(candles: Candles, draws: RandomTrades, seed_index: int) -> list[Trade]:
    """One seed's trades as ``Trade`` records (exit_reason ``random``, regime unknown)."""
    i = seed_index
    ts = candles.ts_ms
    pnl = draws.pnl[i]
    fees = draws.fees[i]
    return [
        Trade(
            symbol=candles.symbols[r],
            side="LONG" if s > 0 else "SHORT",
            entry_ts_ms=int(ts[e]),
            exit_ts_ms=int(ts[x]),
            entry_bar=e,
            exit_bar=x,
            quantity=q,
            entry_price=pi,
            exit_price=po,
            fees=f,
            pnl=p,
            regime=None,
            exit_reason=RANDOM_EXIT_REASON,
        )
        for r, s, e, x, q, pi, po, f, p in zip(
            draws.row[i].tolist(),
            draws.sign.tolist(),
            draws.entry_bar[i].tolist(),
            draws.exit_bar[i].tolist(),
            draws.quantity[i].tolist(),
            draws.entry_price[i].tolist(),
            draws.exit_price[i].tolist(),
            fees.tolist(),
            pnl.tolist(),
            strict=True,
        )
    ]


def random_metrics(
    candles: Candles,
    draws: RandomTrades,
    *,
    initial_equity: float,
    bars_per_year: float,
) -> list[Metrics]:
    """``performance`` of each seed's random book, in the order of ``draws.seeds``."""
    marks = _marks(candles)
    out: list[Metrics] = []
    for i in range(len(draws.seeds)):
        curve = random_curve(candles, draws, i, initial_equity=initial_equity, marks=marks)
        traded = draws.quantity[i] * (draws.entry_price[i] + draws.exit_price[i])
        out.append(
            performance(
                curve,
                random_trade_list(candles, draws, i),
                initial_equity=initial_equity,
                bars_per_year=bars_per_year,
                traded_notional=float(traded.sum()),
                fees=float(draws.fees[i].sum()),
            )
        )
    return out


def mean_metrics(runs: Sequence[Mapping[str, float | int | None]]) -> Metrics:
    """Each key's mean over the runs where it is defined (None where it never is); a count that
    is the same in every run (``trades``) stays an int."""
    if not runs:
        raise ValueError("no runs to average")
    out: Metrics = {}
    for key in runs[0]:
        values = [v for v in (run[key] for run in runs) if v is not None]
        if not values:
            out[key] = None
        elif all(isinstance(v, int) for v in values) and len(set(values)) == 1:
            out[key] = values[0]
        else:
            mean = float(np.mean(values))
            out[key] = mean if math.isfinite(mean) else None
    return out


def spread(
    runs: Sequence[Mapping[str, float | int | None]],
    strategy: Mapping[str, float | int | None],
    keys: Sequence[str] = SPREAD_KEYS,
) -> dict[str, dict[str, float | int | None]]:
    """Per key: std (ddof 1), min and max over the runs, and the share of runs the strategy's
    value beats (None where the strategy's is not defined); runs without the value are left out."""
    out: dict[str, dict[str, float | int | None]] = {}
    for key in keys:
        values = np.array([v for v in (run[key] for run in runs) if v is not None], dtype=float)
        mine = strategy.get(key)
        out[key] = {
            "defined_in": int(values.size),
            "std": float(values.std(ddof=1)) if values.size >= 2 else None,
            "min": float(values.min()) if values.size else None,
            "max": float(values.max()) if values.size else None,
            "strategy_beats": (
                float(np.count_nonzero(values < mine)) / values.size
                if mine is not None and values.size
                else None
            ),
        }
    return out


# --- all three --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """What ``--compare`` hands the summary: the regime-blind run and the random draw's set-up."""

    regime_blind: BacktestResult
    bar_fill: BarFillConfig
    random_seeds: int = DEFAULT_RANDOM_SEEDS


def baselines(
    result: BacktestResult,
    compare: Comparison,
    *,
    bars_per_year: float,
    strategy: Metrics,
    buy_and_hold: Metrics,
) -> tuple[dict[str, Metrics], dict[str, Any]]:
    """(``baselines``, ``random_spread``) for summary.json: every baseline has the keys of
    ``strategy``; the spread says how far the random seeds scatter and where the strategy sits."""
    if compare.random_seeds < 1:
        raise ValueError(f"random_seeds must be at least 1, got {compare.random_seeds}")
    t0 = time.perf_counter()
    seeds = tuple(range(compare.random_seeds))
    draws = random_trades(result.candles, result.trades, seeds=seeds, bar_fill=compare.bar_fill)
    runs = random_metrics(
        result.candles, draws, initial_equity=result.initial_equity, bars_per_year=bars_per_year
    )
    elapsed = time.perf_counter() - t0
    found = {
        "regime_blind": result_performance(compare.regime_blind, bars_per_year=bars_per_year),
        "random": mean_metrics(runs),
        "buy_and_hold": dict(buy_and_hold),
    }
    return found, {
        "seeds": len(seeds),
        **spread(runs, strategy),
        "elapsed_s": round(elapsed, 3),
    }
