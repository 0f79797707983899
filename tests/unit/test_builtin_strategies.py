"""The built-ins' rules on hand-made features: which regime runs which rule, sizing, exits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantumtrade.scoring.indicators import OUTPUTS
from quantumtrade.strategy.base import (
    BREAKOUT,
    NO_LABEL,
    RANGING,
    TRENDING,
    VOLATILE,
    Book,
    Features,
)
from quantumtrade.strategy.builtin import (
    MeanReversion,
    RegimeAdaptive,
    RegimeAdaptiveParams,
    Trend,
    vol_scaled,
)

W = 60
HOUR_MS = 3_600_000


def features(
    closes: list[list[float]],
    *,
    regime: list[int],
    confidence: list[float] | None = None,
    score: list[float] | None = None,
    volume_z: list[float] | None = None,
    adx: list[float] | None = None,
    vol: float = 0.01,
    selected: tuple[int, ...] = (),
) -> Features:
    close = np.array(closes, dtype=np.float64)
    n = close.shape[0]
    values = np.zeros((n, len(OUTPUTS)))
    col = {name: k for k, name in enumerate(OUTPUTS)}
    values[:, col["vol"]] = vol
    values[:, col["atr"]] = 1.0
    values[:, col["score"]] = score if score is not None else 0.0
    values[:, col["volume_z"]] = volume_z if volume_z is not None else 0.0
    values[:, col["adx"]] = adx if adx is not None else 30.0
    values[:, col["bars"]] = W
    return Features(
        symbols=tuple(f"S{i}USDT" for i in range(n)),
        values=values,
        regime=np.array(regime, dtype=np.int8),
        confidence=np.array(confidence if confidence is not None else [1.0] * n),
        eligible=np.ones(n, dtype=bool),
        selected=selected,
        open=close,
        high=close * 1.001,
        low=close * 0.999,
        close=close,
        volume=np.ones_like(close),
        ts_ms=np.full(n, 10 * HOUR_MS, dtype=np.int64),
        bar_ms=HOUR_MS,
    )


def book(
    n: int, position: list[float] | None = None, entry_regime: list[int] | None = None
) -> Book:
    pos = np.array(position if position is not None else [0.0] * n)
    return Book(
        position=pos,
        weight=pos * 0.01,
        entry_price=np.where(pos != 0, 100.0, np.nan),
        bars_held=np.where(pos != 0, 3, -1).astype(np.int64),
        entry_weight=np.where(pos != 0, 0.05, 0.0),
        target_weight=np.where(pos != 0, 0.05, 0.0),
        entry_regime=np.array(
            entry_regime if entry_regime is not None else [NO_LABEL] * n, dtype=np.int8
        ),
        equity=100_000.0,
    )


def flat_row(level: float = 100.0) -> list[float]:
    return [level] * W


def breakout_row() -> list[float]:
    """Flat, then the newest close breaks well above every earlier high."""
    return [100.0] * (W - 1) + [110.0]


def test_each_regime_runs_its_own_rule() -> None:
    # Row 0: trend score up in TRENDING; row 1: a volume breakout in BREAKOUT; row 2: the same
    # breakout but TRENDING with a negative score (TRENDING runs the trend rule: a short, which
    # the engine drops unless shorts are allowed; not BREAKOUT's long); row 3: a trend in
    # VOLATILE (no entry); row 4: a stretched dip in RANGING (mean reversion is off by default).
    dip = [100.0] * (W - 1) + [90.0]
    f = features(
        [flat_row(), breakout_row(), breakout_row(), flat_row(), dip],
        regime=[TRENDING, BREAKOUT, TRENDING, VOLATILE, RANGING],
        score=[2.0, 0.0, -1.0, 2.0, 0.0],
        volume_z=[0.0, 3.0, 3.0, 0.0, 0.0],
        selected=(0, 2, 3),
    )
    t = RegimeAdaptive().targets(f, book(5))
    assert t.weight[0] > 0 and t.reason_of(0) == "trend"
    assert t.weight[1] > 0 and t.reason_of(1) == "breakout"
    assert t.weight[2] < 0 and t.reason_of(2) == "trend"
    assert t.weight[3] == 0.0
    assert t.weight[4] == 0.0
    # With trade_ranging the dip is bought in RANGING (and only there).
    on = RegimeAdaptive(RegimeAdaptiveParams(trade_ranging=True)).targets(f, book(5))
    assert on.weight[4] > 0 and on.reason_of(4) == "mean_reversion"


def test_entries_scale_with_confidence_and_stop_below_min_confidence() -> None:
    f = features(
        [flat_row(), flat_row(), flat_row()],
        regime=[TRENDING, TRENDING, TRENDING],
        confidence=[1.0, 0.9, 0.7],
        score=[2.0, 2.0, 2.0],
        selected=(0, 1, 2),
    )
    t = RegimeAdaptive().targets(f, book(3))
    full = vol_scaled(f, RegimeAdaptiveParams())[0]
    assert t.weight[0] == pytest.approx(full)
    assert t.weight[1] == pytest.approx(0.9 * full)
    assert t.weight[2] == 0.0  # below min_confidence 0.8


def test_vol_scaling_targets_annualised_volatility() -> None:
    calm = features([flat_row()], regime=[TRENDING], vol=0.002)
    wild = features([flat_row()], regime=[TRENDING], vol=0.02)
    p = RegimeAdaptiveParams(weight=0.1, target_volatility=0.6, max_leverage=1.0)
    annual = 0.02 * math.sqrt(365 * 24)
    assert vol_scaled(wild, p)[0] == pytest.approx(0.1 * 0.6 / annual)
    assert vol_scaled(calm, p)[0] == pytest.approx(0.1)  # capped at max_leverage


def test_a_held_position_follows_the_rule_it_was_entered_under() -> None:
    # Entered under TRENDING, now labelled RANGING: the trend rule still governs it (kept while
    # the score stays positive, out (or reversed, for a top-ranked short) when it turns
    # negative), not RANGING's "no entry".
    f = features(
        [flat_row(), flat_row()],
        regime=[RANGING, RANGING],
        score=[1.0, -1.0],
        selected=(0, 1),
    )
    t = RegimeAdaptive().targets(f, book(2, position=[5.0, 5.0], entry_regime=[TRENDING] * 2))
    assert math.isnan(t.weight[0])  # keep
    assert t.weight[1] < 0  # the trend turned: out (a reversal where shorts are allowed)
    faded = features([flat_row()], regime=[RANGING], score=[-1.0])  # not in the top N
    out = RegimeAdaptive().targets(faded, book(1, position=[5.0], entry_regime=[TRENDING]))
    assert out.weight[0] == 0.0


def test_unlabelled_symbols_apply_every_rule() -> None:
    fall = [100.0] * (W - 1) + [95.0]  # below every recent low: the breakout rule leaves
    f = features(
        [flat_row(), breakout_row(), fall],
        regime=[NO_LABEL, NO_LABEL, NO_LABEL],
        confidence=[0.0, 0.0, 0.0],
        score=[2.0, 0.0, -1.0],
        volume_z=[0.0, 3.0, 0.0],
        selected=(0,),
    )
    t = RegimeAdaptive().targets(f, book(3))
    assert t.weight[0] > 0 and t.reason_of(0) == "trend"
    assert t.weight[1] > 0 and t.reason_of(1) == "breakout"
    assert t.weight[2] == 0.0
    # Held and unlabelled: kept while any rule would keep it, out when none would.
    held = RegimeAdaptive().targets(f, book(3, position=[0.0, 0.0, 3.0]))
    assert held.weight[2] == 0.0
    f_up = features([flat_row()], regime=[NO_LABEL], confidence=[0.0], score=[1.0], selected=(0,))
    assert math.isnan(RegimeAdaptive().targets(f_up, book(1, position=[3.0])).weight[0])


def test_trend_and_mean_reversion_alone() -> None:
    f = features(
        [flat_row(), flat_row()], regime=[NO_LABEL] * 2, score=[1.5, -1.5], selected=(0, 1)
    )
    t = Trend().targets(f, book(2))
    assert t.weight[0] > 0 and t.weight[1] < 0  # the engine drops the short unless allowed
    dip = [100.0 + (k % 2) for k in range(W - 1)] + [95.0]
    m = features([dip, flat_row()], regime=[NO_LABEL] * 2, adx=[15.0, 15.0])
    assert MeanReversion().targets(m, book(2)).weight[0] > 0
    trending = features([dip], regime=[NO_LABEL], adx=[40.0])  # not a range: no fade
    assert MeanReversion().targets(trending, book(1)).weight[0] == 0.0
