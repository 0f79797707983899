"""Scores of a backtest: performance of an equity curve, signal accuracy, a buy-and-hold benchmark,
the coverage of its VaR forecasts (Kupiec, Christoffersen).

Pure functions over NumPy arrays, no I/O. Every summary is strict-JSON safe: a value that is not
defined (division by zero, no trades, fewer than 2 returns, a non-finite result) is ``None``,
never NaN or inf, and every number is a Python ``float`` or ``int``. The definitions are written
out in each function's docstring; ``tests/unit/test_backtest_metrics.py`` checks each one against
arithmetic done by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, TypedDict

import numpy as np
from numpy.typing import NDArray

from quantumtrade.backtest.model import EquityCurve, SignalRecord, Trade

DEFAULT_HORIZONS: tuple[int, ...] = (1, 6, 24)
UNLABELLED = "UNLABELLED"
"""Group key of trades and signals whose regime is not known."""

# Returns are fractions per bar: a dispersion below this is the rounding noise of a constant
# return series (e.g. 100 * 1.01**k), not risk, and would give a Sharpe ratio near 1e15.
_ZERO_DISPERSION = 1e-12

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
SignArray = NDArray[np.int8] | NDArray[np.int64]


class GroupStats(TypedDict):
    """Trades and signal accuracy of one symbol or one regime."""

    trades: int
    pnl: float | None
    """Sum of the group's trade pnl (0.0 with none); None only if a pnl is not finite."""
    win_rate: float | None
    signal_accuracy: dict[str, float | None]


def _finite(x: float | np.floating[Any]) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0.0:
        return None
    return _finite(numerator / denominator)


def _longest_true_run(flags: NDArray[np.bool_]) -> int:
    if not flags.any():
        return 0
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return int((ends - starts).max())


def performance(
    curve: EquityCurve,
    trades: Sequence[Trade],
    *,
    initial_equity: float,
    bars_per_year: float,
    traded_notional: float,
    fees: float,
) -> dict[str, float | int | None]:
    """Score an equity curve and its trades; ``None`` wherever a value is not defined.

    Definitions (n = number of bars, r = the n bar-to-bar simple returns of the series
    ``[initial_equity, equity[0], ..., equity[n-1]]``, A = ``bars_per_year``):

    * total_return = equity[-1] / initial_equity - 1; final_equity = equity[-1]. An empty curve
      has final_equity = initial_equity and total_return 0.0.
    * cagr = (equity[-1] / initial_equity) ** (A / n) - 1; None if n == 0 or equity[-1] <= 0.
      Equity at or below 0 on any bar is ruin: cagr, volatility, sharpe, sortino and calmar are
      then None (returns through zero equity are not returns).
    * volatility = std(r, ddof=1) * sqrt(A).
    * sharpe = mean(r) / std(r, ddof=1) * sqrt(A), risk-free rate 0; None when std is 0.
    * sortino = mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(A), the mean over all n returns;
      None when that downside deviation is 0.
      volatility, sharpe and sortino are None with fewer than 2 returns; a dispersion below
      1e-12 per bar counts as 0 (rounding noise of a constant return).
    * max_drawdown = max over bars of 1 - equity / running peak, the peak including
      initial_equity: a positive fraction, 0.0 if never under water (or no bars).
    * max_drawdown_bars = the longest run of consecutive bars whose equity is below the peak
      of the bars before it (initial_equity included): the longest underwater spell, in bars.
    * calmar = cagr / max_drawdown; None if max_drawdown == 0 or cagr is None.
    * win_rate = share of trades with pnl > 0 (a pnl of exactly 0 is not a win).
    * profit_factor = sum of positive pnl / |sum of negative pnl|; None with no losing trade.
    * expectancy = mean pnl per trade (quote currency); avg_hold_bars = mean exit_bar - entry_bar.
      win_rate, profit_factor, expectancy and avg_hold_bars are None with no trades.
    * trades = number of trades.
    * exposure = share of bars with gross_exposure > 0; None with no bars.
    * turnover = traded_notional / initial_equity: how many times the initial book was traded.
    * fees = the ``fees`` argument.
    """
    if not initial_equity > 0.0:
        raise ValueError(f"initial_equity must be positive, got {initial_equity}")
    if not bars_per_year > 0.0:
        raise ValueError(f"bars_per_year must be positive, got {bars_per_year}")

    equity = np.asarray(curve.equity, dtype=np.float64)
    n = int(equity.shape[0])
    annualiser = math.sqrt(bars_per_year)

    final_equity = float(equity[-1]) if n else float(initial_equity)
    growth = final_equity / initial_equity
    total_return = growth - 1.0

    # Equity at or below zero is ruin: bar returns through it (and after it) are not returns.
    ruined = bool(n and float(equity.min()) <= 0.0)
    cagr: float | None = None
    if n and final_equity > 0.0 and not ruined:
        with np.errstate(over="ignore"):
            cagr = _finite(np.power(np.float64(growth), bars_per_year / n) - 1.0)

    volatility: float | None = None
    sharpe: float | None = None
    sortino: float | None = None
    series = np.concatenate(([float(initial_equity)], equity))
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = series[1:] / series[:-1] - 1.0
    if n >= 2 and not ruined and bool(np.isfinite(returns).all()):
        mean = float(returns.mean())
        std = float(returns.std(ddof=1))
        downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
        std = 0.0 if std < _ZERO_DISPERSION else std
        volatility = _finite(std * annualiser)
        if std > 0.0:
            sharpe = _finite(mean / std * annualiser)
        if downside >= _ZERO_DISPERSION:
            sortino = _finite(mean / downside * annualiser)

    peak = np.maximum.accumulate(series)[1:]
    drawdown = 1.0 - equity / peak  # peak >= initial_equity > 0
    max_drawdown = _finite(drawdown.max()) if n else 0.0
    max_drawdown_bars = _longest_true_run(equity < peak)
    calmar = None if cagr is None or not max_drawdown else _finite(cagr / max_drawdown)

    win_rate: float | None = None
    profit_factor: float | None = None
    expectancy: float | None = None
    avg_hold_bars: float | None = None
    if trades:
        pnl = np.fromiter((t.pnl for t in trades), dtype=np.float64, count=len(trades))
        hold = np.fromiter((t.hold_bars for t in trades), dtype=np.float64, count=len(trades))
        win_rate = float(np.count_nonzero(pnl > 0.0)) / len(trades)
        if np.any(pnl < 0.0):
            profit_factor = _ratio(float(pnl[pnl > 0.0].sum()), float(-pnl[pnl < 0.0].sum()))
        expectancy = _finite(pnl.mean())
        avg_hold_bars = _finite(hold.mean())

    exposure = float(np.count_nonzero(np.asarray(curve.gross_exposure) > 0.0)) / n if n else None

    return {
        "total_return": _finite(total_return),
        "cagr": cagr,
        "volatility": volatility,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "max_drawdown": max_drawdown,
        "max_drawdown_bars": max_drawdown_bars,
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "expectancy": expectancy,
        "avg_hold_bars": avg_hold_bars,
        "exposure": exposure,
        "turnover": _finite(traded_notional / initial_equity),
        "fees": _finite(fees),
        "trades": len(trades),
        "final_equity": _finite(final_equity),
    }


def _closes(close: FloatArray) -> FloatArray:
    prices = np.asarray(close, dtype=np.float64)
    if prices.ndim != 2:
        raise ValueError(f"close must be (symbols, bars), got shape {prices.shape}")
    return prices


def _signs(signs: SignArray) -> NDArray[np.int64]:
    s = np.asarray(signs, dtype=np.int64)
    if s.ndim != 1 or not np.isin(s, (-1, 1)).all():
        raise ValueError("signs must be a 1-D array of +1 and -1")
    return s


def _horizon(h: int) -> int:
    if h < 1:
        raise ValueError(f"a horizon must be at least 1 bar, got {h}")
    return int(h)


def signal_accuracy(
    close: FloatArray,
    symbol_rows: IntArray,
    bars: IntArray,
    signs: SignArray,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
) -> dict[str, float | None]:
    """Share of signals whose forward return over h bars has the signal's sign, per horizon h.

    A signal on (row, bar) has forward return close[row, bar + h] / close[row, bar] - 1; a zero
    forward return counts as wrong. Signals whose bar + h is past the last bar, or whose return
    is not finite (a NaN close), are left out. Keyed ``str(h)``; None when no signal is left.
    """
    prices = _closes(close)
    rows = np.asarray(symbol_rows, dtype=np.int64)
    at = np.asarray(bars, dtype=np.int64)
    s = _signs(signs)
    if not rows.shape == at.shape == s.shape:
        raise ValueError("symbol_rows, bars and signs must have the same length")
    n_symbols, n_bars = prices.shape
    if rows.size and (rows.min() < 0 or rows.max() >= n_symbols):
        raise ValueError("a symbol row is outside close")
    if at.size and (at.min() < 0 or at.max() >= n_bars):
        raise ValueError("a signal bar is outside close")

    accuracy: dict[str, float | None] = {}
    for h in map(_horizon, horizons):
        inside = at + h < n_bars
        r, b, sign = rows[inside], at[inside], s[inside]
        with np.errstate(divide="ignore", invalid="ignore"):
            forward = prices[r, b + h] / prices[r, b] - 1.0
        defined = np.isfinite(forward)
        count = int(np.count_nonzero(defined))
        hits = int(np.count_nonzero(forward[defined] * sign[defined] > 0.0))
        accuracy[str(h)] = hits / count if count else None
    return accuracy


def baseline_accuracy(
    close: FloatArray,
    signs: SignArray,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
) -> dict[str, float | None]:
    """Accuracy of signalling every bar with the given long/short mix: sum_s w_s * p_s(h).

    p_s(h) is the share of all (symbol, bar) pairs with a finite h-bar forward return whose
    return has sign s (s = +1, -1); w_s is the share of ``signs`` equal to s. Keyed ``str(h)``;
    None with no signals or no defined forward return.
    """
    prices = _closes(close)
    s = _signs(signs)
    n_bars = prices.shape[1]
    accuracy: dict[str, float | None] = {}
    for h in map(_horizon, horizons):
        accuracy[str(h)] = None
        if s.size == 0 or h >= n_bars:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            forward = prices[:, h:] / prices[:, :-h] - 1.0
        forward = forward[np.isfinite(forward)]
        if forward.size == 0:
            continue
        p_up = np.count_nonzero(forward > 0.0) / forward.size
        p_down = np.count_nonzero(forward < 0.0) / forward.size
        w_up = np.count_nonzero(s == 1) / s.size
        accuracy[str(h)] = float(w_up * p_up + (1.0 - w_up) * p_down)
    return accuracy


class _BenchmarkBook(TypedDict):
    entry_bar: IntArray
    """First bar with a finite positive open per symbol; -1 when there is none (never bought)."""
    quantity: FloatArray
    entry_price: FloatArray
    fee: FloatArray
    marks: FloatArray
    """(symbols, bars): the last finite close at or before each bar (the fill price until one)."""


def _benchmark_book(
    open_: FloatArray,
    close: FloatArray,
    *,
    gross_fraction: float,
    initial_equity: float,
    fee_bps: float,
) -> _BenchmarkBook:
    opens = np.asarray(open_, dtype=np.float64)
    prices = _closes(close)
    if opens.shape != prices.shape:
        raise ValueError(f"open {opens.shape} and close {prices.shape} differ in shape")
    n_symbols, n_bars = prices.shape
    gross = min(max(float(gross_fraction), 0.0), 1.0)

    tradable = np.isfinite(opens) & (opens > 0.0)
    has_entry = tradable.any(axis=1) & (gross > 0.0)
    first = tradable.argmax(axis=1) if n_bars else np.zeros(n_symbols, dtype=np.int64)
    entry_bar = np.where(has_entry, first, -1).astype(np.int64)
    symbols = np.arange(n_symbols)
    entry_price = np.where(has_entry, opens[symbols, np.maximum(entry_bar, 0)], np.nan)
    notional = initial_equity * gross / n_symbols if n_symbols else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        quantity = np.where(has_entry, notional / entry_price, 0.0)
    fee = np.where(has_entry, notional * fee_bps / 1e4, 0.0)

    # Mark at the last finite close; on an entry bar without one, at the fill price.
    marks = prices.copy()
    fill_bar_unmarked = has_entry & ~np.isfinite(prices[symbols, np.maximum(entry_bar, 0)])
    marks[symbols[fill_bar_unmarked], entry_bar[fill_bar_unmarked]] = entry_price[fill_bar_unmarked]
    observed = np.where(np.isfinite(marks), np.arange(n_bars), 0)
    last_observed = np.maximum.accumulate(observed, axis=1)
    marks = np.take_along_axis(marks, last_observed, axis=1)
    return {
        "entry_bar": entry_bar,
        "quantity": quantity.astype(np.float64),
        "entry_price": entry_price.astype(np.float64),
        "fee": fee.astype(np.float64),
        "marks": marks,
    }


def benchmark_curve(
    open_: FloatArray,
    close: FloatArray,
    *,
    gross_fraction: float,
    initial_equity: float,
    fee_bps: float,
    ts_ms: IntArray,
) -> EquityCurve:
    """Equal-weight buy-and-hold of the same symbols at the same gross, marked at each close.

    Each symbol buys initial_equity * clip(gross_fraction, 0, 1) / n_symbols at its first bar
    with a finite positive open, paying fee_bps of that notional from cash, and holds to the end
    (a symbol with no such open keeps its share in cash). Cash starts at initial_equity. A NaN
    close carries the last finite close (the fill price on an entry bar without one).
    """
    book = _benchmark_book(
        open_,
        close,
        gross_fraction=gross_fraction,
        initial_equity=initial_equity,
        fee_bps=fee_bps,
    )
    stamps = np.asarray(ts_ms, dtype=np.int64)
    n_bars = book["marks"].shape[1]
    if stamps.shape != (n_bars,):
        raise ValueError(f"ts_ms has shape {stamps.shape}, close has {n_bars} bars")

    entry_bar = book["entry_bar"]
    held = (entry_bar[:, None] >= 0) & (np.arange(n_bars)[None, :] >= entry_bar[:, None])
    value = np.where(held, book["quantity"][:, None] * book["marks"], 0.0)
    position_value = value.sum(axis=0)
    outlay = book["quantity"] * book["entry_price"] + book["fee"]
    cash = initial_equity - np.where(held, outlay[:, None], 0.0).sum(axis=0)
    return EquityCurve(
        ts_ms=stamps,
        cash=cash.astype(np.float64),
        position_value=position_value.astype(np.float64),
        equity=(cash + position_value).astype(np.float64),
        gross_exposure=np.abs(value).sum(axis=0).astype(np.float64),
    )


def benchmark_trades(
    open_: FloatArray,
    close: FloatArray,
    *,
    symbols: Sequence[str],
    gross_fraction: float,
    initial_equity: float,
    fee_bps: float,
    ts_ms: IntArray,
) -> list[Trade]:
    """One LONG ``end_of_data`` trade per symbol the benchmark bought, matching benchmark_curve.

    Entry at the first finite open, exit at the last bar marked at its last finite close; fees
    are the entry fee only (the hold is marked, not sold), so the pnls sum to the curve's gain.
    """
    book = _benchmark_book(
        open_,
        close,
        gross_fraction=gross_fraction,
        initial_equity=initial_equity,
        fee_bps=fee_bps,
    )
    stamps = np.asarray(ts_ms, dtype=np.int64)
    n_symbols, n_bars = book["marks"].shape
    if len(symbols) != n_symbols:
        raise ValueError(f"{len(symbols)} symbol names for {n_symbols} rows")
    if stamps.shape != (n_bars,):
        raise ValueError(f"ts_ms has shape {stamps.shape}, close has {n_bars} bars")

    trades: list[Trade] = []
    for row in np.flatnonzero(book["entry_bar"] >= 0).tolist():
        entry_bar = int(book["entry_bar"][row])
        quantity = float(book["quantity"][row])
        entry_price = float(book["entry_price"][row])
        exit_price = float(book["marks"][row, -1])
        fee = float(book["fee"][row])
        trades.append(
            Trade(
                symbol=symbols[row],
                side="LONG",
                entry_ts_ms=int(stamps[entry_bar]),
                exit_ts_ms=int(stamps[-1]),
                entry_bar=entry_bar,
                exit_bar=n_bars - 1,
                quantity=quantity,
                entry_price=entry_price,
                exit_price=exit_price,
                fees=fee,
                pnl=quantity * (exit_price - entry_price) - fee,
                regime=None,
                exit_reason="end_of_data",
            )
        )
    return trades


def exit_stats(trades: Sequence[Trade]) -> dict[str, dict[str, float | int | None]]:
    """Trades, PnL, win rate and mean bars held per exit reason (sorted by reason)."""
    out: dict[str, dict[str, float | int | None]] = {}
    for reason in sorted({t.exit_reason for t in trades}):
        mine = [t for t in trades if t.exit_reason == reason]
        pnl = np.fromiter((t.pnl for t in mine), dtype=np.float64, count=len(mine))
        out[reason] = {
            "trades": len(mine),
            "pnl": _finite(pnl.sum()),
            "win_rate": float(np.count_nonzero(pnl > 0.0)) / len(mine),
            "avg_hold_bars": float(np.mean([t.hold_bars for t in mine])),
        }
    return out


def group_stats(
    trades: Sequence[Trade],
    signals: Sequence[SignalRecord],
    close: FloatArray,
    row_of: Mapping[str, int],
    key: Literal["symbol", "regime"],
    horizons: Sequence[int] = DEFAULT_HORIZONS,
) -> dict[str, GroupStats]:
    """Trades, pnl, win rate and signal accuracy per symbol, or per regime at entry.

    A trade's group is its symbol or its ``regime`` (None is keyed ``UNLABELLED``); a signal's
    likewise. Every group with a trade or a signal appears, sorted by key; win_rate is None with
    no trades and accuracy (as in ``signal_accuracy``) None with no signals.
    """
    if key not in ("symbol", "regime"):
        raise ValueError(f"key must be 'symbol' or 'regime', got {key!r}")

    def group(item: Trade | SignalRecord) -> str:
        if key == "symbol":
            return item.symbol
        return item.regime if item.regime is not None else UNLABELLED

    unknown = sorted({s.symbol for s in signals} - set(row_of))
    if unknown:
        raise ValueError(f"signals for symbols without a close row: {unknown}")
    prices = _closes(close)

    stats: dict[str, GroupStats] = {}
    for name in sorted({group(t) for t in trades} | {group(s) for s in signals}):
        mine = [t for t in trades if group(t) == name]
        picked = [s for s in signals if group(s) == name]
        pnl = np.fromiter((t.pnl for t in mine), dtype=np.float64, count=len(mine))
        stats[name] = {
            "trades": len(mine),
            "pnl": _finite(pnl.sum()),
            "win_rate": float(np.count_nonzero(pnl > 0.0)) / len(mine) if mine else None,
            "signal_accuracy": signal_accuracy(
                prices,
                np.array([row_of[s.symbol] for s in picked], dtype=np.int64),
                np.array([s.bar for s in picked], dtype=np.int64),
                np.array([s.sign for s in picked], dtype=np.int64),
                horizons,
            ),
        }
    return stats


# --- backtesting a VaR forecast -------------------------------------------------------------


class CoverageTest(NamedTuple):
    statistic: float
    """Likelihood-ratio statistic, χ²(1) under the null."""
    p_value: float


def chi2_1_sf(statistic: float) -> float:
    """P(χ²₁ > statistic) = erfc(√(statistic / 2))."""
    return math.erfc(math.sqrt(max(statistic, 0.0) / 2.0))


def _xlogy(x: float, y: float) -> float:
    """x · ln y with 0 · ln 0 = 0 (a likelihood term of a count that did not happen)."""
    return 0.0 if x == 0 else x * math.log(y)


def kupiec_pof(n: int, exceedances: int, confidence: float) -> CoverageTest:
    """Kupiec's proportion-of-failures test: are ``exceedances`` in ``n`` periods what a VaR at
    ``confidence`` promises (rate 1 - c)?

    LR = -2 ln[(1-p)^(n-x) p^x] + 2 ln[(1-x/n)^(n-x) (x/n)^x], p = 1 - c, χ²(1) under the null
    (0·ln 0 = 0, so x = 0 gives -2n ln(1-p) and x = n gives -2n ln p). n = 0: NaN, NaN.
    """
    if not 0 <= exceedances <= n:
        raise ValueError(f"need 0 <= exceedances <= n, got {exceedances} of {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p = 1.0 - confidence
    if n == 0:
        return CoverageTest(math.nan, math.nan)
    x = exceedances
    rate = x / n
    null = _xlogy(n - x, 1.0 - p) + _xlogy(x, p)
    fitted = _xlogy(n - x, 1.0 - rate) + _xlogy(x, rate)
    lr = max(0.0, -2.0 * (null - fitted))
    return CoverageTest(lr, chi2_1_sf(lr))


def christoffersen_independence(hits: NDArray[np.bool_]) -> CoverageTest:
    """Christoffersen's independence test: does an exceedance make the next one likelier?

    From the transition counts n_ij (state i then j, 1 = exceedance) of consecutive periods:
    LR = -2 ln[(1-π)^(n00+n10) π^(n01+n11)] + 2 ln[(1-π0)^n00 π0^n01 (1-π1)^n10 π1^n11], with
    π0 = n01/(n00+n01), π1 = n11/(n10+n11), π = (n01+n11)/(n - 1), χ²(1) under the null.
    Periods are taken in order (the caller's, e.g. bars that held a position). NaN, NaN with
    fewer than 2 periods; no exceedance at all gives LR = 0 (0·ln 0 = 0)."""
    h = np.asarray(hits, dtype=np.bool_)
    if h.size < 2:
        return CoverageTest(math.nan, math.nan)
    prev, nxt = h[:-1], h[1:]
    n01 = int(np.count_nonzero(~prev & nxt))
    n11 = int(np.count_nonzero(prev & nxt))
    n00 = int(np.count_nonzero(~prev & ~nxt))
    n10 = int(np.count_nonzero(prev & ~nxt))
    pi = (n01 + n11) / (h.size - 1)
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    null = _xlogy(n00 + n10, 1.0 - pi) + _xlogy(n01 + n11, pi)
    fitted = _xlogy(n00, 1.0 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1.0 - pi1) + _xlogy(n11, pi1)
    lr = max(0.0, -2.0 * (null - fitted))
    return CoverageTest(lr, chi2_1_sf(lr))


def var_backtest(
    forecast: Mapping[float, FloatArray], pnl: FloatArray
) -> dict[str, dict[str, float | int | None]]:
    """Exceedances of one-period VaR forecasts by the realised P&L, per confidence.

    ``forecast[c][t]`` is the VaR (a positive loss) forecast for period t, ``pnl[t]`` the P&L
    of the same book over it. A period counts when its forecast is finite and the book held
    something (a VaR of exactly 0 with a P&L of 0 says nothing); an exceedance is
    ``pnl < -VaR``. JSON-safe: a value that is not defined is None.
    """
    realised = np.asarray(pnl, dtype=np.float64)
    out: dict[str, dict[str, float | int | None]] = {}
    for confidence, values in forecast.items():
        var = np.asarray(values, dtype=np.float64)
        if var.shape != realised.shape:
            raise ValueError(f"forecast {var.shape} and pnl {realised.shape} differ")
        used = np.isfinite(var) & np.isfinite(realised) & ((var != 0.0) | (realised != 0.0))
        hits = realised[used] < -var[used]
        n, x = int(used.sum()), int(hits.sum())
        pof = kupiec_pof(n, x, confidence)
        ind = christoffersen_independence(hits)
        out[f"{confidence:g}"] = {
            "observations": n,
            "exceedances": x,
            "rate": x / n if n else None,
            "expected_rate": round(1.0 - confidence, 12),
            "kupiec_lr": _finite(pof.statistic),
            "kupiec_p": _finite(pof.p_value),
            "christoffersen_lr": _finite(ind.statistic),
            "christoffersen_p": _finite(ind.p_value),
            "mean_var": float(var[used].mean()) if n else None,
        }
    return out
