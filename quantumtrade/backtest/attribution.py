"""Performance attribution of a backtest: where the PnL came from, and why it beat the benchmark.

**PnL by dimension.** Every round-trip trade's net PnL (realised, marked at the last close
when still open at the end, less its fees) goes to its strategy, its symbol, its regime at
entry and its cluster at entry. Each breakdown sums to the run's total PnL, which equals the
final equity less the initial one (the ledger's average-cost trades carry every fill's
cash flow and fee).

**Brinson-Fachler against the equal-weight benchmark.** The benchmark holds every symbol
with a price in equal weights, rebalanced each bar, fully invested: its bar return is the
mean of the symbols' close-to-close returns. Segments are clusters (a symbol outside any
correlation cluster is its own) plus cash (return 0). Per bar, with the portfolio's weights
``w_p,s`` (signed position value / equity at the bar's start, cash the rest), its segment
returns ``R_p,s`` (the held quantities' close-to-close return), the benchmark's weights
``w_b,s`` (share of the priced symbols in the segment) and returns ``R_b,s``:

- allocation  = sum_s (w_p,s - w_b,s) (R_b,s - R_b)
- selection   = sum_s w_b,s (R_p,s - R_b,s)
- interaction = sum_s (w_p,s - w_b,s) (R_p,s - R_b,s)

and allocation + selection + interaction = R_hold - R_b, where R_hold is the return of the
book held into the bar. What the bar's fills add (entries and exits at the open with
slippage, fees) is ``trading`` = R_p - R_hold, so active_return = R_p - R_b is the sum of
all four. Effects are summed over bars (arithmetic, not linked). A segment whose long and
short sides cancel to a zero weight yet earn something has no return to select with: its
contribution goes to interaction.

The accumulator is O(symbols) per bar and keeps no history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from quantumtrade.backtest.metrics import UNLABELLED
from quantumtrade.backtest.model import Trade

__all__ = [
    "BarEffects",
    "BrinsonAccumulator",
    "attribution_summary",
    "bar_effects",
    "pnl_attribution",
    "segment_ids",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BarEffects:
    """One bar's Brinson-Fachler effects, as fractions of the equity at the bar's start."""

    allocation: float
    selection: float
    interaction: float
    trading: float
    portfolio_return: float
    benchmark_return: float

    @property
    def active_return(self) -> float:
        return self.portfolio_return - self.benchmark_return


def bar_effects(
    weight: FloatArray,
    ret: FloatArray,
    priced: NDArray[np.bool_],
    segment: NDArray[np.intp] | None,
    n_segments: int,
    portfolio_return: float,
) -> BarEffects:
    """The effects of one bar (see the module docstring).

    ``weight``: (symbols,) signed position value / equity at the bar's start; ``ret``:
    (symbols,) close-to-close returns over the bar (ignored where not ``priced``);
    ``priced``: the symbols in the benchmark this bar; ``segment``: (symbols,) segment ids in
    ``[0, n_segments)`` (None: each symbol its own segment); ``portfolio_return``: the
    equity's return over the bar."""
    r = np.where(priced, ret, 0.0)
    if segment is None:
        return _one_symbol_segments(weight, r, priced, portfolio_return)
    contribution = weight * r
    wp = _sum_by(segment, weight, n_segments)
    cp = _sum_by(segment, contribution, n_segments)
    nb = _sum_by(segment, priced, n_segments)
    rsum = _sum_by(segment, r, n_segments)
    total = float(nb.sum())
    bench = float(rsum.sum()) / total if total else 0.0
    wb = nb / total if total else nb
    # A segment the benchmark does not hold gets the benchmark's return: no allocation
    # effect of its own, what it earns is selection-interaction (w_b,s = 0: interaction).
    rb = np.divide(rsum, nb, out=np.full(nb.shape, bench), where=nb > 0)
    rp = np.divide(cp, wp, out=rb.copy(), where=wp != 0.0)
    # Cash: the rest of each side's weight, at a zero return.
    wp_cash = 1.0 - float(wp.sum())
    wb_cash = 1.0 - float(wb.sum())
    active_w = wp - wb
    allocation = float(active_w @ (rb - bench)) - (wp_cash - wb_cash) * bench
    selection = float(wb @ (rp - rb))
    # cp - wp * rb is selection + interaction per segment (exact where wp != 0, and it keeps
    # a zero-weight segment's earnings where R_p,s is undefined).
    held = float(cp.sum())
    interaction = held - float(wp @ rb) - selection
    return BarEffects(
        allocation=allocation,
        selection=selection,
        interaction=interaction,
        trading=portfolio_return - held,
        portfolio_return=portfolio_return,
        benchmark_return=bench,
    )


def _one_symbol_segments(
    weight: FloatArray, r: FloatArray, priced: NDArray[np.bool_], portfolio_return: float
) -> BarEffects:
    """``bar_effects`` when each symbol is its own segment, in closed form (the backtest's
    usual case, a few array operations a bar): a segment's return is its symbol's, so
    selection is 0, allocation = sum w_i R_b,i - R_b and interaction = R_hold - sum w_i R_b,i
    (R_b,i = the symbol's return, or R_b for a symbol the benchmark does not hold)."""
    count = int(np.count_nonzero(priced))
    bench = float(r.sum()) / count if count else 0.0
    on_bench = float(weight @ np.where(priced, r, bench))
    held = float(weight @ r)
    return BarEffects(
        allocation=on_bench - bench,
        selection=0.0,
        interaction=held - on_bench,
        trading=portfolio_return - held,
        portfolio_return=portfolio_return,
        benchmark_return=bench,
    )


def _sum_by(segment: NDArray[np.intp], values: NDArray[Any], n: int) -> FloatArray:
    """Per segment, the sum of ``values`` (float64: bincount with weights)."""
    return np.asarray(np.bincount(segment, weights=values, minlength=n), dtype=np.float64)


def segment_ids(
    symbols: Sequence[str], clusters: Mapping[str, str]
) -> tuple[NDArray[np.intp], list[str]]:
    """(segment id per symbol, segment names): each symbol's cluster, itself when in none."""
    names: dict[str, int] = {}
    ids = np.empty(len(symbols), dtype=np.intp)
    for i, symbol in enumerate(symbols):
        ids[i] = names.setdefault(clusters.get(symbol, symbol), len(names))
    return ids, list(names)


class BrinsonAccumulator:
    """Sums the bars' effects as a backtest goes: ``set_clusters`` after each decision,
    ``mark`` after each bar's equity row (the first only records the book)."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self.segment: NDArray[np.intp] | None = None  # each symbol its own segment
        self.n_segments = len(self.symbols)
        self._clusters: dict[str, str] = {}
        self._value = np.zeros(len(self.symbols))
        self._marks = np.zeros(len(self.symbols))
        self._equity = 0.0
        self._started = False
        self._all_priced = False
        self.allocation = self.selection = self.interaction = self.trading = 0.0
        self.portfolio_return = self.benchmark_return = 0.0
        self.bars = 0
        self.skipped = 0
        """Bars not attributed: the equity at their start was not positive."""

    def set_clusters(self, clusters: Mapping[str, str]) -> None:
        """The segments of the next bar: the clusters the risk manager judges by now."""
        if clusters != self._clusters:
            self._clusters = dict(clusters)
            segment, names = segment_ids(self.symbols, clusters)
            self.n_segments = len(names)
            self.segment = segment if self.n_segments < len(self.symbols) else None

    def mark(self, quantity: FloatArray, marks: FloatArray, equity: float) -> None:
        """The bar ends with ``quantity`` held, ``marks`` (0: not priced yet), ``equity``."""
        if self._started:
            if self._equity > 0.0 and self.segment is None and self._all_priced:
                self._add_all_priced(marks, equity)
            elif self._equity > 0.0:
                priced = self._marks > 0.0
                ret = np.divide(marks, self._marks, out=np.ones_like(marks), where=priced)
                ret -= 1.0
                self.add(
                    bar_effects(
                        self._value / self._equity,
                        ret,
                        priced,
                        self.segment,
                        self.n_segments,
                        equity / self._equity - 1.0,
                    )
                )
            else:
                self.skipped += 1
        np.multiply(quantity, marks, out=self._value)
        self._marks[:] = marks
        self._equity = equity
        self._started = True
        if not self._all_priced:  # a symbol once priced stays priced (marks carry forward)
            self._all_priced = bool((marks > 0.0).all())

    def _add_all_priced(self, marks: FloatArray, equity: float) -> None:
        """``bar_effects`` of one-symbol segments (``_one_symbol_segments``) when every symbol
        was priced at the bar's start, in the fewest array operations: the usual bar of a
        backtest without clusters (the unit tests hold it to the general path)."""
        ret = marks / self._marks
        ret -= 1.0
        bench = float(ret.sum()) / ret.size
        held = float(self._value @ ret) / self._equity
        portfolio_return = equity / self._equity - 1.0
        self.allocation += held - bench
        self.trading += portfolio_return - held
        self.portfolio_return += portfolio_return
        self.benchmark_return += bench
        self.bars += 1

    def add(self, effects: BarEffects) -> None:
        self.allocation += effects.allocation
        self.selection += effects.selection
        self.interaction += effects.interaction
        self.trading += effects.trading
        self.portfolio_return += effects.portfolio_return
        self.benchmark_return += effects.benchmark_return
        self.bars += 1

    def summary(self) -> dict[str, Any]:
        return {
            "segments": "cluster",
            "benchmark": "equal_weight_rebalanced",
            "allocation": self.allocation,
            "selection": self.selection,
            "interaction": self.interaction,
            "trading": self.trading,
            "active_return": self.portfolio_return - self.benchmark_return,
            "portfolio_return": self.portfolio_return,
            "benchmark_return": self.benchmark_return,
            "bars": self.bars,
            "bars_skipped": self.skipped,
        }


def _sums(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, pnl in pairs:
        out[key] = out.get(key, 0.0) + pnl
    return dict(sorted(out.items()))


def pnl_attribution(trades: Sequence[Trade], strategy: str) -> dict[str, Any]:
    """Net PnL by strategy, symbol, regime at entry and cluster at entry (each sums to
    ``total_pnl``); a trade without a regime or cluster is keyed ``UNLABELLED``."""
    return {
        "total_pnl": float(sum(t.pnl for t in trades)),
        "by_strategy": _sums((strategy, t.pnl) for t in trades),
        "by_symbol": _sums((t.symbol, t.pnl) for t in trades),
        "by_regime": _sums((t.regime or UNLABELLED, t.pnl) for t in trades),
        "by_cluster": _sums((t.cluster or UNLABELLED, t.pnl) for t in trades),
    }


def attribution_summary(
    trades: Sequence[Trade],
    run: Mapping[str, Any],
    *,
    initial_equity: float,
    final_equity: float | None,
) -> dict[str, Any]:
    """summary.json's ``attribution``: the PnL breakdowns (``run["strategy"]`` names the
    strategy), the equity change they reconcile with (0 without bars), and ``run["brinson"]``."""
    return {
        **pnl_attribution(trades, str(run.get("strategy", "strategy"))),
        "equity_change": final_equity - initial_equity if final_equity is not None else 0.0,
        "brinson": dict(run.get("brinson", {})),
    }
