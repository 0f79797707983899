"""The allocator: the strategy says what to hold and which way; the allocator sizes the book.

At every decision the strategy engine hands it the strategy's target weights (after the
engine's own short and per-symbol caps) and the book's current weights. The allocator

1. takes the **active set**: symbols the strategy wants to hold (a finite non-zero weight),
   and those it holds and keeps (NaN: no opinion). A zero is an exit and stays a zero;
2. spreads the strategy's own gross (the sum of its |weights|, at most ``strategy.max_gross``)
   over the active set by ``method``: ``equal_weight`` (the same for each), ``inverse_vol``
   (in proportion to 1 / volatility), ``risk_parity`` (equal contributions to the book's
   variance, from a Ledoit-Wolf covariance of ``lookback`` bars of log returns, signed by the
   side held), or ``none`` (the strategy's weights as they are: today's behaviour);
3. caps each symbol at ``max_asset_weight`` (the excess goes to the uncapped, in proportion),
   each correlation cluster's gross at ``max_cluster_weight`` (clusters by average linkage of
   the same correlations at ``cluster_threshold``; scaled down, not spread), and the net at
   ``max_net`` (the heavier side scaled down);
4. with ``hedge_symbol`` set, adds a position in it of ``-hedge_ratio`` times the book's beta
   to it (a short: ``strategy.allow_short`` must be on); the strategy's own weights for the
   hedge symbol are ignored;
5. decides whether to **rebalance** what is held: on the schedule (``rebalance_every`` bars),
   or when the held weights have drifted from the allocation by more than ``drift_threshold``
   of the gross (L1) *and* the drift costs more than trading it away: the certainty-equivalent
   loss of holding the drift, ``risk_aversion / 2 * horizon_bars * dᵀΣd``, beats the
   expected cost of trading it, ``sum |d| * cost_bps / 10⁴``. Entries and exits are the
   strategy's and happen at once; without a rebalance the held rows keep their size (NaN).

The output is target weights in the engine's terms (NaN: keep), so the engine's exits,
protections, gross budget, risk checks and router handle the allocator's orders as they do
every other order. Everything here is a function of the bars and the book: ``replay`` and
``backtest`` re-derive the same allocations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.allocation.covariance import (
    Covariance,
    correlation_clusters,
    log_returns,
    shrunk_covariance,
)
from quantumtrade.allocation.kernels import erc_weights

__all__ = ["HEDGE", "REBALANCE", "AllocationConfig", "AllocationMethod", "Allocator"]

REBALANCE = "rebalance"
"""Reason of a held position resized by the allocator."""
HEDGE = "hedge"
"""Reason of the beta hedge's targets."""
_ERC_TOL = 1e-8
_ERC_SWEEPS = 500


class AllocationMethod(StrEnum):
    NONE = "none"
    EQUAL_WEIGHT = "equal_weight"
    INVERSE_VOL = "inverse_vol"
    RISK_PARITY = "risk_parity"


class AllocationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[allocation]``: how the book is sized from the strategy's targets."""

    method: AllocationMethod = AllocationMethod.NONE
    lookback: Annotated[int, msgspec.Meta(ge=3)] = 168
    """Bars of log returns the covariance and volatilities are estimated on (at most
    ``scanner.window - 1``)."""
    min_observations: Annotated[int, msgspec.Meta(ge=3)] = 48
    """Fewer common bars than this: equal weights (counted as a fallback)."""
    max_asset_weight: Annotated[float, msgspec.Meta(gt=0, le=10)] | None = None
    """Largest |weight| of one symbol (None: ``strategy.max_weight``)."""
    max_net: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    """Largest |sum of signed weights| (None: no net budget beyond the gross)."""
    max_cluster_weight: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    """Largest gross of one correlation cluster (None: off)."""
    cluster_threshold: Annotated[float, msgspec.Meta(gt=-1, le=1)] = 0.7
    """Average correlation at which two clusters merge."""
    rebalance_every: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Resize what is held every this many decisions (0: only on drift)."""
    drift_threshold: Annotated[float, msgspec.Meta(ge=0)] = 0.1
    """Drift (sum of |held weight - allocated weight|) past this share of the gross is
    considered for a rebalance."""
    cost_bps: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Expected cost of trading one unit of notional (fees and slippage), in bps."""
    risk_aversion: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    horizon_bars: Annotated[int, msgspec.Meta(ge=1)] = 24
    """Bars a drift is expected to be held before the next chance to fix it."""
    hedge_symbol: str = ""
    """Hedge the book's beta to this symbol with a position in it ("": no hedge)."""
    hedge_ratio: Annotated[float, msgspec.Meta(ge=0, le=2)] = 1.0
    """Share of the book's beta hedged."""


@dataclass(slots=True)
class AllocationStats:
    """What the allocator did, for ``/health``, the metrics and a backtest's summary."""

    decisions: int = 0
    rebalances: dict[str, int] = field(default_factory=dict)
    """By trigger: ``schedule``, ``drift``."""
    drift_below_cost: int = 0
    """Drifts past the threshold left alone because trading them would cost more."""
    fallbacks: int = 0
    """Decisions sized by equal weights for want of a covariance."""
    last: dict[str, Any] = field(default_factory=dict)
    """The newest allocation: gross, net, shrinkage, observations, hedge beta, clusters."""


@dataclass(frozen=True, slots=True)
class Allocation:
    weight: NDArray[np.float64]
    """(symbols,) target weights: NaN keep, 0 exit."""
    reason: list[str]
    """Per row: the strategy's reason, or ``rebalance`` / ``hedge``."""
    score: NDArray[np.float64]
    """Per row: ranks entries within the gross budget (the hedge first)."""


class Allocator:
    def __init__(self, config: AllocationConfig, *, max_weight: float, max_gross: float) -> None:
        self.config = config
        self.max_weight = config.max_asset_weight or max_weight
        self.max_gross = max_gross
        self.stats = AllocationStats()
        self.clusters: dict[str, str] = {}
        """Symbol -> cluster name ("corr:" + its first symbol), for the symbols of the newest
        allocation that share a cluster with another (the risk manager's cluster limits)."""
        self._since_rebalance = 0

    @property
    def active(self) -> bool:
        return self.config.method is not AllocationMethod.NONE or bool(self.config.hedge_symbol)

    def allocate(
        self,
        symbols: Sequence[str],
        want: NDArray[np.float64],
        reasons: Sequence[str],
        score: NDArray[np.float64],
        current: NDArray[np.float64],
        close: NDArray[np.float64],
    ) -> Allocation:
        """Size the book (see the module docstring). ``want``: the strategy's weights (NaN:
        keep); ``current``: each symbol's weight held now (0: flat); ``close``: (symbols, bars)
        newest last."""
        cfg = self.config
        n = len(symbols)
        self.stats.decisions += 1
        self._since_rebalance += 1
        out = np.array(want, dtype=np.float64, copy=True)
        why = list(reasons)
        rank = np.array(score, dtype=np.float64, copy=True)
        hedge_row = _row(symbols, cfg.hedge_symbol)
        if hedge_row is not None:
            out[hedge_row] = np.nan  # the hedge symbol is the hedge's alone
        held = current != 0.0
        keep = np.isnan(out) & held
        wants = np.isfinite(out) & (out != 0.0)
        flips = wants & held & (np.sign(out) != np.sign(current))
        if hedge_row is not None:
            keep[hedge_row] = wants[hedge_row] = False
        # In symbol order, not row order: rows come in the order symbols first arrived, which
        # differs between the daemon and replay, and sums in another order differ in the last
        # bits.
        active = _by_name((wants | keep).nonzero()[0], symbols)
        side = np.where(wants, np.sign(out), np.sign(current))[active]
        base = np.where(wants, out, current)[active]
        gross = min(float(np.abs(base).sum()), self.max_gross)
        lookback = min(cfg.lookback, close.shape[1] - 1)
        returns = log_returns(close[:, close.shape[1] - lookback - 1 :]) if lookback > 0 else None
        cov = (
            shrunk_covariance(returns, active, cfg.min_observations)
            if returns is not None and active.size
            else None
        )
        weight = self._size(active, side, base, gross, cov, symbols)
        alloc = np.full(n, np.nan)
        alloc[active] = weight
        # Entries (and reversals) take their allocation; exits stay zero; what is held keeps
        # its size until a rebalance.
        entering = wants & (~held | flips)
        out[entering] = alloc[entering]
        staying = (wants | keep) & held & ~flips
        if staying.any():
            rows = _by_name(staying.nonzero()[0], symbols)
            trigger = self._rebalance_trigger(rows, alloc[rows], current[rows], gross, cov)
            if trigger:
                self.stats.rebalances[trigger] = self.stats.rebalances.get(trigger, 0) + 1
                self._since_rebalance = 0
                out[rows] = alloc[rows]
                for i in rows.tolist():
                    why[i] = REBALANCE
            else:
                out[rows] = np.nan
        beta = math.nan
        if hedge_row is not None:
            book = np.where(np.isfinite(out), out, current)  # the book after this decision
            beta, hedge = self._hedge(hedge_row, book, active, returns, current, cfg)
            now = float(current[hedge_row])
            if math.isfinite(hedge) and now != 0.0 and hedge != 0.0 and (hedge > 0) == (now > 0):
                # Resized only past the drift threshold, as the rest of the book is.
                if abs(hedge - now) <= cfg.drift_threshold * max(abs(hedge), abs(now)):
                    hedge = math.nan
            out[hedge_row] = hedge
            why[hedge_row] = HEDGE
            rank[hedge_row] = np.inf
        self.stats.last = {
            "method": str(cfg.method),
            "symbols": int(active.size),
            "gross": float(np.abs(weight).sum()),
            "net": float(weight.sum()),
            "shrinkage": cov.shrinkage if cov is not None else None,
            "observations": cov.observations if cov is not None else 0,
            "hedge_beta": beta if math.isfinite(beta) else None,
            "clusters": _cluster_lists(self.clusters),
        }
        return Allocation(weight=out, reason=why, score=rank)

    def _size(
        self,
        rows: NDArray[np.intp],
        side: NDArray[np.float64],
        base: NDArray[np.float64],
        gross: float,
        cov: Covariance | None,
        symbols: Sequence[str],
    ) -> NDArray[np.float64]:
        """Signed weights of ``rows``; ``base``: the strategy's (or, kept, the held) ones."""
        cfg = self.config
        m = rows.size
        labels = (
            correlation_clusters(cov.correlation(), cfg.cluster_threshold)
            if cov is not None
            else np.arange(m)
        )
        self.clusters = _cluster_names(labels, [symbols[i] for i in rows.tolist()])
        method = cfg.method
        if m == 0 or method is AllocationMethod.NONE:
            return base.copy()  # the strategy's own sizes (a hedge alone was asked for)
        if cov is None and method in (AllocationMethod.INVERSE_VOL, AllocationMethod.RISK_PARITY):
            self.stats.fallbacks += 1
            method = AllocationMethod.EQUAL_WEIGHT
        if method is AllocationMethod.EQUAL_WEIGHT or cov is None:
            budget = np.full(m, 1.0 / m)
        elif method is AllocationMethod.INVERSE_VOL:
            inv = 1.0 / cov.vol
            budget = inv / inv.sum()
        else:
            signed = cov.cov * np.outer(side, side)
            budget, _ = erc_weights(signed, np.full(m, 1.0 / m), _ERC_TOL, _ERC_SWEEPS)
        weight = cap_each(budget * gross, self.max_weight)
        if cfg.max_cluster_weight is not None:
            weight = cap_clusters(weight, labels, cfg.max_cluster_weight)
        weight = weight * side
        if cfg.max_net is not None:
            weight = cap_net(weight, cfg.max_net)
        return weight

    def _rebalance_trigger(
        self,
        rows: NDArray[np.intp],
        target: NDArray[np.float64],
        held: NDArray[np.float64],
        gross: float,
        cov: Covariance | None,
    ) -> str:
        """``schedule``, ``drift`` or "" (hold)."""
        cfg = self.config
        if cfg.rebalance_every and self._since_rebalance >= cfg.rebalance_every:
            return "schedule"
        drift = target - held
        if float(np.abs(drift).sum()) <= cfg.drift_threshold * gross:
            return ""
        cost = float(np.abs(drift).sum()) * cfg.cost_bps / 1e4
        if cov is None:
            return "drift"  # no risk estimate to weigh the cost against: the drift decides
        d = _on(cov.rows, rows, drift)
        benefit = 0.5 * cfg.risk_aversion * cfg.horizon_bars * float(d @ cov.cov @ d)
        if benefit > cost:
            return "drift"
        self.stats.drift_below_cost += 1
        return ""

    def _hedge(
        self,
        hedge_row: int,
        book: NDArray[np.float64],
        active: NDArray[np.intp],
        returns: NDArray[np.float64] | None,
        current: NDArray[np.float64],
        cfg: AllocationConfig,
    ) -> tuple[float, float]:
        """(the book's beta to the hedge symbol, the hedge's weight); NaN weight (keep) while
        the beta cannot be estimated."""
        if active.size == 0:
            return 0.0, 0.0 if current[hedge_row] != 0.0 else math.nan
        if returns is None:
            return math.nan, math.nan
        h = returns[:, hedge_row]
        betas = np.full(active.size, np.nan)
        for k, i in enumerate(active.tolist()):
            r = returns[:, i]
            ok = np.isfinite(r) & np.isfinite(h)
            if int(ok.sum()) >= cfg.min_observations:
                hc = h[ok] - h[ok].mean()
                var = float(hc @ hc)
                if var > 0:
                    betas[k] = float((r[ok] - r[ok].mean()) @ hc) / var
        if not np.isfinite(betas).all():
            return math.nan, math.nan
        beta = float(book[active] @ betas)
        return beta, -cfg.hedge_ratio * beta


def cap_each(weight: NDArray[np.float64], cap: float) -> NDArray[np.float64]:
    """Positive weights capped at ``cap``, each cap's excess spread over the uncapped in
    proportion to their weights (water-filling); the total is kept unless every one is capped."""
    w = weight.astype(np.float64, copy=True)
    for _ in range(w.size):
        over = w > cap * (1 + 1e-12)
        if not over.any():
            break
        excess = float((w[over] - cap).sum())
        w[over] = cap
        free = w < cap * (1 - 1e-12)
        room = float(w[free].sum())
        if room <= 0.0:
            break
        w[free] += excess * w[free] / room
    return w


def cap_clusters(
    weight: NDArray[np.float64], labels: NDArray[np.int64], cap: float
) -> NDArray[np.float64]:
    """Positive weights with each cluster's sum scaled down to at most ``cap`` (not spread:
    the excess would land in other clusters the strategy did not ask for)."""
    w = weight.copy()
    for label in np.unique(labels).tolist():
        members = labels == label
        total = float(w[members].sum())
        if total > cap:
            w[members] *= cap / total
    return w


def cap_net(weight: NDArray[np.float64], cap: float) -> NDArray[np.float64]:
    """Signed weights whose |sum| exceeds ``cap``: the heavier side scaled down to meet it."""
    net = float(weight.sum())
    if abs(net) <= cap:
        return weight
    heavy = weight > 0 if net > 0 else weight < 0
    light = float(np.abs(weight[~heavy]).sum())
    total = float(np.abs(weight[heavy]).sum())
    w = weight.copy()
    w[heavy] *= (cap + light) / total
    return w


def _by_name(rows: NDArray[np.intp], symbols: Sequence[str]) -> NDArray[np.intp]:
    return np.array(sorted(rows.tolist(), key=symbols.__getitem__), dtype=np.intp)


def _row(symbols: Sequence[str], symbol: str) -> int | None:
    if not symbol:
        return None
    try:
        return list(symbols).index(symbol)
    except ValueError:
        return None


def _on(
    cov_rows: NDArray[np.intp], rows: NDArray[np.intp], values: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``values`` (given for ``rows``) laid out on the covariance's rows (0 elsewhere)."""
    out = np.zeros(cov_rows.size)
    where = {r: k for k, r in enumerate(cov_rows.tolist())}
    for v, r in zip(values.tolist(), rows.tolist(), strict=True):
        k = where.get(r)
        if k is not None:
            out[k] = v
    return out


def _cluster_names(labels: NDArray[np.int64], names: list[str]) -> dict[str, str]:
    groups: dict[int, list[str]] = {}
    for label, name in zip(labels.tolist(), names, strict=True):
        groups.setdefault(label, []).append(name)
    out: dict[str, str] = {}
    for members in groups.values():
        if len(members) > 1:
            first = min(members)
            for name in members:
                out[name] = f"corr:{first}"
    return out


def _cluster_lists(clusters: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for symbol, name in sorted(clusters.items()):
        out.setdefault(name, []).append(symbol)
    return out
