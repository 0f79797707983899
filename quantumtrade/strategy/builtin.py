"""The built-in strategies: ``trend``, ``mean_reversion``, ``breakout`` and ``regime_adaptive``.

Each is a few array expressions over ``Features`` (no loop over symbols), sized the same way:
a weight of ``weight`` * min(``target_volatility`` / the symbol's annualised volatility,
``max_leverage``), so a calm symbol gets a larger position than a wild one. A held position's
weight is NaN ("keep") while its own exit condition is not met and 0 when it is (the engine's
``signal_fade``); the engine adds the price-level exits, time stops and protections.

* ``trend``: the scanner's top N by trend score (EMA fast - slow over volatility), long when the
  score is positive; out when it turns negative.
* ``mean_reversion``: inside a range (ADX below ``max_adx``), long when the close is
  ``entry_z`` standard deviations below its ``window``-bar mean; out when it is back at
  ``exit_z``.
* ``breakout``: long when the close breaks the highest high of the previous ``channel`` bars
  on volume (volume z-score at least ``min_volume_z``); out below the lowest low of the last
  ``exit_channel`` bars.
* ``regime_adaptive`` (the default): the trend rule in TRENDING, the breakout rule in
  BREAKOUT, the mean-reversion rule in RANGING (``trade_ranging``; off by default, see its
  docstring), no entry in VOLATILE (a held position's weight is cut to ``volatile_scale`` of
  its entry weight, 0: out). A position is governed by the rule of the regime
  it was entered in; entry weights are scaled by the regime's confidence. Without regime labels
  (``NO_LABEL``: warm-up, or the ``regime_blind`` comparison) every rule applies everywhere.

Shorts are proposed as negative weights where a rule has a short side; the engine drops them
unless ``[strategy] allow_short = true``.

Each also declares ``SPACE``, the ranges ``quantumtrade optimize`` searches by default: a
dotted name (a key of ``[strategy.params]``, nested with dots, or ``exits.<key>`` /
``protections.<key>``) to ``(low, high)`` (uniform), ``(low, high, step)`` (a grid; an int
parameter's step is an int), ``(low, high, "log")`` (log-uniform) or a tuple of choices
(``(False, True)``). ``--space FILE.toml`` replaces it (``backtest/space.py`` reads both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, ClassVar, overload

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.strategy.base import (
    BREAKOUT,
    NO_LABEL,
    RANGING,
    TRENDING,
    VOLATILE,
    Book,
    Features,
    Targets,
)
from quantumtrade.strategy.exits import ExitConfig, ProtectionConfig

_YEAR_MS = 365.0 * 86_400_000
Space = dict[str, tuple[float | int | bool | str, ...]]
"""A default search space (see the module docstring)."""
Positive = Annotated[float, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]


class Sizing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How every built-in sizes an entry (its ``Params`` extend this)."""

    weight: Fraction = 0.1
    """Weight of an entry at the target volatility (before the regime confidence)."""
    target_volatility: Positive = 0.6
    """Annualised volatility an entry of ``weight`` is sized for."""
    max_leverage: Positive = 1.0
    """Most the volatility scale may lift ``weight`` by (a calm symbol's cap)."""


def vol_scaled(features: Features, p: Sizing) -> NDArray[np.float64]:
    """``weight`` * min(target / annualised volatility, ``max_leverage``) per symbol (0 where
    the volatility is unknown)."""
    vol = features.feature("vol")
    bars_per_year = _YEAR_MS / features.bar_ms if features.bar_ms > 0 else 8_760.0
    annual = vol * math.sqrt(bars_per_year)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.minimum(p.target_volatility / annual, p.max_leverage)
    return np.where(np.isfinite(scale) & (scale > 0), p.weight * scale, 0.0)


def zscore(close: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """(close - mean) / standard deviation over each row's last ``window`` closes."""
    w = close[:, -window:]
    mean = w.mean(axis=1)
    std = w.std(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, (close[:, -1] - mean) / std, 0.0)


def channel(
    features: Features, bars: int, rows: NDArray[np.intp] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Highest high and lowest low of the ``bars`` bars before the newest (NaN: too few), for
    every symbol, or only for ``rows`` (NaN elsewhere: the reductions are the costly part)."""
    high, low = features.high, features.low
    enough = high.shape[1] >= bars + 1
    if rows is None and enough:
        return high[:, -bars - 1 : -1].max(axis=1), low[:, -bars - 1 : -1].min(axis=1)
    hi, lo = extremes = np.empty((2, high.shape[0]))
    extremes.fill(np.nan)
    if enough and rows is not None and rows.size:
        hi[rows] = high[rows, -bars - 1 : -1].max(axis=1)
        lo[rows] = low[rows, -bars - 1 : -1].min(axis=1)
    return hi, lo


def _sides(
    enter_long: NDArray[np.bool_],
    leave_long: NDArray[np.bool_],
    enter_short: NDArray[np.bool_],
    leave_short: NDArray[np.bool_],
    position: NDArray[np.float64],
) -> NDArray[np.float64]:
    """One signed direction from a long rule and a short rule: a flat symbol enters (1 long,
    -1 short, 0 when neither or both fire); a held one is kept (NaN) until its own side's
    leave condition holds, then gets its side's entry (1 long, -1 short) or 0."""
    out = np.subtract(enter_long, enter_short, dtype=np.float64)
    long_held = position > 0
    short_held = position < 0
    np.copyto(out, enter_long, where=long_held)
    np.copyto(out, np.negative(enter_short, dtype=np.float64), where=short_held)
    out[long_held & ~leave_long] = np.nan
    out[short_held & ~leave_short] = np.nan
    return out


# --- trend ----------------------------------------------------------------------------------


class TrendParams(Sizing, frozen=True, forbid_unknown_fields=True):
    min_score: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Enter only on a trend score at least this (the scanner's own threshold applies too)."""


def _trend(features: Features, book: Book, p: TrendParams) -> NDArray[np.float64]:
    score = features.feature("score")
    direction = np.sign(score)
    enter = np.zeros(score.shape[0], dtype=bool)
    enter[list(features.selected)] = True
    enter &= features.eligible
    enter &= np.abs(score) >= p.min_score
    w = np.where(enter, direction, 0.0)
    # Held: keep while the score keeps the position's sign.
    w[np.sign(book.position) * direction > 0] = np.nan
    return w


class Trend:
    """The scanner's trend score, with exits (see the module docstring)."""

    name = "trend"
    Params = TrendParams
    exits: ClassVar[ExitConfig] = ExitConfig(stop_loss_atr=3.0, trailing_atr=4.0)
    protections: ClassVar[ProtectionConfig] = ProtectionConfig(cooldown_bars=6)
    SPACE: ClassVar[Space] = {
        "min_score": (0.0, 2.0),
        "weight": (0.03, 0.3, "log"),
        "exits.stop_loss_atr": (1.5, 6.0),
        "exits.trailing_atr": (2.0, 10.0),
        "protections.cooldown_bars": (0, 24, 6),
    }

    def __init__(self, params: TrendParams | None = None) -> None:
        self.params = params or TrendParams()

    def targets(self, features: Features, book: Book) -> Targets:
        direction = _trend(features, book, self.params)
        return Targets(weight=direction * vol_scaled(features, self.params), reason="trend")


# --- mean reversion -------------------------------------------------------------------------


class MeanReversionParams(Sizing, frozen=True, forbid_unknown_fields=True):
    window: Annotated[int, msgspec.Meta(ge=3)] = 20
    entry_z: Positive = 2.0
    exit_z: float = 0.0
    """Out once the close is back this many deviations from the mean (0: at the mean)."""
    max_adx: Positive = 25.0
    """A range: ADX below this (trend strength)."""


def _mean_reversion(
    features: Features, book: Book, p: MeanReversionParams, ranging: NDArray[np.bool_]
) -> NDArray[np.float64]:
    if features.close.shape[1] < p.window:
        return np.zeros(len(features.symbols))
    z = zscore(features.close, p.window)
    rangy = ranging & features.eligible
    return _sides(
        rangy & (z <= -p.entry_z), z >= -p.exit_z, rangy & (z >= p.entry_z), z <= p.exit_z,
        book.position,
    )  # fmt: skip


class MeanReversion:
    """Fades stretched moves inside a range (see the module docstring)."""

    name = "mean_reversion"
    Params = MeanReversionParams
    exits: ClassVar[ExitConfig] = ExitConfig(stop_loss_atr=3.0, max_hold_bars=48)
    protections: ClassVar[ProtectionConfig] = ProtectionConfig(cooldown_bars=12)
    SPACE: ClassVar[Space] = {
        "window": (10, 60, 5),
        "entry_z": (1.0, 3.5),
        "exit_z": (-0.5, 1.0),
        "max_adx": (15.0, 35.0),
        "exits.stop_loss_atr": (1.5, 6.0),
        "exits.max_hold_bars": (12, 96, 12),
    }

    def __init__(self, params: MeanReversionParams | None = None) -> None:
        self.params = params or MeanReversionParams()

    def targets(self, features: Features, book: Book) -> Targets:
        ranging = features.feature("adx") < self.params.max_adx
        w = _mean_reversion(features, book, self.params, ranging)
        return Targets(weight=w * vol_scaled(features, self.params), reason="mean_reversion")


# --- breakout -------------------------------------------------------------------------------


class BreakoutParams(Sizing, frozen=True, forbid_unknown_fields=True):
    channel: Annotated[int, msgspec.Meta(ge=2)] = 48
    """Bars whose highest high (lowest low, short) the close must break."""
    exit_channel: Annotated[int, msgspec.Meta(ge=2)] = 24
    """Out when the close falls below the lowest low of this many bars (long)."""
    min_volume_z: float = 1.0
    """The breaking bar's volume z-score at least this."""


def _breakout(
    features: Features, book: Book, p: BreakoutParams, where: NDArray[np.bool_] | None = None
) -> NDArray[np.float64]:
    """The breakout rule's direction (as ``_sides``), entering only ``where`` (None: anywhere)."""
    close = features.last.copy()  # contiguous: a column of the window is strided
    position = book.position
    ok = features.eligible & (features.feature("volume_z") >= p.min_volume_z)
    if where is not None:
        ok &= where
    # Channels only where they can matter: entry channels on the loud candidates, exit
    # channels on the held rows (a few of thousands, most bars).
    hi, lo = channel(features, p.channel, ok.nonzero()[0])
    exit_hi, exit_lo = channel(features, p.exit_channel, position.nonzero()[0])
    with np.errstate(invalid="ignore"):
        return _sides(
            ok & (close > hi), close < exit_lo, ok & (close < lo), close > exit_hi, position
        )


class Breakout:
    """Range breaks on volume (see the module docstring)."""

    name = "breakout"
    Params = BreakoutParams
    exits: ClassVar[ExitConfig] = ExitConfig(stop_loss_atr=2.0, trailing_atr=3.0)
    protections: ClassVar[ProtectionConfig] = ProtectionConfig(cooldown_bars=6)
    SPACE: ClassVar[Space] = {
        "channel": (12, 120, 12),
        "exit_channel": (6, 60, 6),
        "min_volume_z": (0.0, 3.0),
        "exits.stop_loss_atr": (1.0, 5.0),
        "exits.trailing_atr": (1.5, 8.0),
    }

    def __init__(self, params: BreakoutParams | None = None) -> None:
        self.params = params or BreakoutParams()

    def targets(self, features: Features, book: Book) -> Targets:
        w = _breakout(features, book, self.params)
        return Targets(weight=w * vol_scaled(features, self.params), reason="breakout")


# --- regime adaptive ------------------------------------------------------------------------

_REASONS = ("regime_adaptive", "mean_reversion", "breakout", "trend", "volatile")
_MEAN_REVERSION, _BREAKOUT, _TREND, _VOLATILE = 1, 2, 3, 4


class _Reasons(Sequence[str]):
    """Each symbol's reason, kept as codes: the engine reads only the rows that change."""

    __slots__ = ("_codes",)

    def __init__(self, codes: NDArray[np.int8]) -> None:
        self._codes = codes

    def __len__(self) -> int:
        return int(self._codes.size)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [_REASONS[c] for c in self._codes[index].tolist()]
        return _REASONS[int(self._codes[index])]


class RegimeAdaptiveParams(Sizing, frozen=True, forbid_unknown_fields=True):
    """Defaults chosen on binance-spot-1h-2021 only (``scripts/research/strategy_grid.py``)."""

    trend: TrendParams = TrendParams()
    mean_reversion: MeanReversionParams = MeanReversionParams()
    breakout: BreakoutParams = BreakoutParams()
    trade_ranging: bool = False
    """Mean reversion in RANGING; off by default: on the in-sample data it lost after costs
    (alone: Sharpe -4.6), so the default stands aside in RANGING as in VOLATILE."""
    volatile_scale: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    """A held position's weight in VOLATILE: at most this share of its entry weight (0: out,
    1: kept). The engine resizes only past ``[strategy] rebalance_threshold``, so a cut
    smaller than it does not trade (the in-sample grid's 0.5 at threshold 0.5 was a keep)."""
    min_confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.8
    """No entry when the regime's confidence is below this."""


class RegimeAdaptive:
    """Trend in TRENDING, breakouts in BREAKOUT, mean reversion in RANGING, aside in VOLATILE."""

    name = "regime_adaptive"
    Params = RegimeAdaptiveParams
    exits: ClassVar[ExitConfig] = ExitConfig(stop_loss_atr=5.0, trailing_atr=8.0)
    protections: ClassVar[ProtectionConfig] = ProtectionConfig(cooldown_bars=6)
    SPACE: ClassVar[Space] = {
        "trend.min_score": (0.0, 2.0),
        "breakout.channel": (12, 120, 12),
        "breakout.exit_channel": (6, 60, 6),
        "breakout.min_volume_z": (0.0, 3.0),
        "min_confidence": (0.5, 0.95),
        "volatile_scale": (0.0, 1.0),
        "trade_ranging": (False, True),
        "exits.stop_loss_atr": (2.0, 8.0),
        "exits.trailing_atr": (3.0, 12.0),
        "protections.cooldown_bars": (0, 24, 6),
    }

    def __init__(self, params: RegimeAdaptiveParams | None = None) -> None:
        self.params = params or RegimeAdaptiveParams()

    def targets(self, features: Features, book: Book) -> Targets:
        p = self.params
        n = len(features.symbols)
        regime = features.regime
        position = book.position
        blind = regime == NO_LABEL
        # A held position answers to the rule of the regime it was entered in.
        flat = position == 0
        rule_regime = np.where(flat, regime, book.entry_regime)
        rule_blind = rule_regime == NO_LABEL
        trend = _trend(features, book, p.trend)
        breakout = _breakout(features, book, p.breakout)
        if p.trade_ranging:
            ranging = features.feature("adx") < p.mean_reversion.max_adx
            mean_rev = _mean_reversion(features, book, p.mean_reversion, ranging | ~blind)
        else:  # aside: never an entry, and no reason to hold
            mean_rev = np.zeros(n)
        direction = np.zeros(n)
        reason = np.zeros(n, dtype=np.int8)  # an index in _REASONS
        rules = (
            (RANGING, mean_rev, _MEAN_REVERSION),
            (BREAKOUT, breakout, _BREAKOUT),
            (TRENDING, trend, _TREND),
        )
        for code, rule, name in rules:
            pick = rule_regime == code
            np.copyto(direction, rule, where=pick)
            reason[pick] = name
        if rule_blind.any():
            # Unlabelled (warm-up, or the regime-blind comparison): a flat symbol enters on the
            # first rule that fires, trend first; a held one is kept while any rule would keep
            # it (or enter on its side), and leaves when none would.
            side = np.sign(position)
            keep = np.zeros(n, dtype=bool)
            waiting = rule_blind & flat  # no rule has fired for it yet
            for _, rule, name in reversed(rules):
                keep |= np.isnan(rule)
                keep |= rule * side > 0
                fire = waiting & (np.abs(rule) > 0)  # neither 0 nor NaN
                np.copyto(direction, rule, where=fire)
                reason[fire] = name
                waiting &= ~fire
            held_blind = rule_blind & ~flat
            direction[held_blind & keep] = np.nan
            direction[held_blind & ~keep] = 0.0
        weight = direction * vol_scaled(features, p)
        # An entry (flat, a non-zero, non-NaN direction) is scaled by its regime's confidence
        # (1 without a label) and dropped below min_confidence.
        labelled_entry = flat & ~blind & (np.abs(direction) > 0)
        confidence = features.confidence
        np.multiply(weight, confidence, out=weight, where=labelled_entry)
        weight[labelled_entry & (confidence < p.min_confidence)] = 0.0
        # VOLATILE: no entry; a held position is cut to volatile_scale of its entry weight.
        volatile = regime == VOLATILE
        weight[flat & volatile] = 0.0
        cut = ~flat & volatile
        if cut.any():
            cap = np.abs(book.entry_weight[cut]) * p.volatile_scale
            now = np.where(np.isnan(weight[cut]), book.target_weight[cut], weight[cut])
            weight[cut] = np.sign(now) * np.minimum(np.abs(now), cap)
            reason[cut] = _VOLATILE
        return Targets(weight=weight, reason=_Reasons(reason))


BUILTINS: dict[str, type] = {
    cls.name: cls for cls in (Trend, MeanReversion, Breakout, RegimeAdaptive)
}
