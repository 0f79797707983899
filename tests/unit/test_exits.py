"""Price-level exits on hand-made bars: ``Levels`` says which exit a bar triggers and at what
price, ``stop_fill_price`` what the simulated stop-market order then receives.

Every expected price is worked out by hand from the entry, the distances and the bar."""

from __future__ import annotations

import math
from typing import Any

import pytest

from quantumtrade.events import Bar, Side
from quantumtrade.execution.bar_fill import BarFillConfig, stop_fill_price
from quantumtrade.strategy.exits import (
    STOP_LOSS,
    TAKE_PROFIT,
    TRAILING_STOP,
    ExitConfig,
    Levels,
    ProtectionConfig,
    Protections,
)

LONG, SHORT = 1, -1
FILLS = BarFillConfig(slippage_bps=2.0, range_share=0.05)


def bar(open_: float, high: float, low: float, close: float) -> Bar:
    return Bar(0, open_, high, low, close, 1e9)


def check(levels: Levels, b: Bar) -> tuple[str, float] | None:
    return levels.check(b.open, b.high, b.low)


def at(reason: str, price: float) -> Any:
    """The (reason, price) an exit is expected with, the price to float precision."""
    return (reason, pytest.approx(price))


def at_stop(price: float, reason: str) -> Any:
    """``Levels.effective_stop`` as expected: (price, reason)."""
    return (pytest.approx(price), reason)


# --- stop-loss ------------------------------------------------------------------------------


def test_a_long_stop_hit_intrabar_fills_at_the_stop_not_the_low() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(stop_loss_pct=0.05))
    assert levels.stop == pytest.approx(95.0)
    crash = bar(99.0, 99.5, 90.0, 96.0)  # opened above the stop, traded down to 90
    assert check(levels, crash) == at(STOP_LOSS, 95.0)
    # The sell-stop receives the stop less the bar-fill slippage, not the low.
    slip = 95.0 * 2.0 / 1e4 + 0.05 * (99.5 - 90.0)
    fill = stop_fill_price(Side.SELL, 95.0, crash, FILLS)
    assert fill == pytest.approx(95.0 - slip)
    assert fill > crash.low


def test_a_bar_that_only_touches_the_stop_triggers_it_and_one_above_does_not() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(stop_loss_pct=0.05))
    assert check(levels, bar(99.0, 99.5, 95.01, 97.0)) is None
    assert check(levels, bar(99.0, 99.5, 95.0, 97.0)) == at(STOP_LOSS, 95.0)


def test_a_long_gap_through_the_stop_fills_at_the_open() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(stop_loss_pct=0.05))
    gap = bar(90.0, 91.0, 88.0, 90.5)  # opened 5 below the stop
    assert check(levels, gap) == (STOP_LOSS, 90.0)
    slip = 90.0 * 2.0 / 1e4 + 0.05 * (91.0 - 88.0)
    assert stop_fill_price(Side.SELL, 90.0, gap, FILLS) == pytest.approx(90.0 - slip)


def test_the_stop_fill_never_goes_to_zero_or_below() -> None:
    wide = bar(10.0, 1_000.0, 1.0, 5.0)
    assert stop_fill_price(Side.SELL, 10.0, wide, FILLS) == pytest.approx(1.0)


# --- trailing stop --------------------------------------------------------------------------


def test_a_trailing_stop_ratchets_up_with_new_highs_and_never_loosens() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(trailing_pct=0.05))
    assert levels.trail == pytest.approx(95.0)
    assert check(levels, bar(100.0, 104.0, 99.0, 103.0)) is None
    assert levels.trail == pytest.approx(104.0 * 0.95)
    assert check(levels, bar(103.0, 110.0, 102.0, 109.0)) is None
    assert levels.trail == pytest.approx(104.5)
    # Falls back, lows above the trail, lower highs: the trail stays where it was.
    assert check(levels, bar(109.0, 109.5, 105.0, 106.0)) is None
    assert check(levels, bar(106.0, 107.0, 104.6, 105.0)) is None
    assert levels.trail == pytest.approx(104.5)
    assert levels.effective_stop == at_stop(104.5, TRAILING_STOP)
    hit = check(levels, bar(105.0, 105.5, 100.0, 101.0))
    assert hit == at(TRAILING_STOP, 104.5)


def test_the_trail_is_judged_before_the_bar_that_moves_it() -> None:
    """A bar that makes a new high and then falls 6 % is judged against the trail as it stood
    before the bar (95), not one the bar's own high set (no look-ahead inside the bar)."""
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(trailing_pct=0.05))
    assert check(levels, bar(100.0, 110.0, 96.0, 97.0)) is None
    assert levels.trail == pytest.approx(104.5)
    assert check(levels, bar(97.0, 98.0, 96.0, 97.0)) == (TRAILING_STOP, 97.0)  # opened below


def test_the_tighter_of_the_fixed_and_the_trailing_stop_binds() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(stop_loss_pct=0.03, trailing_pct=0.05))
    assert levels.effective_stop == at_stop(97.0, STOP_LOSS)
    check(levels, bar(100.0, 104.0, 99.5, 103.5))  # trail to 98.8
    assert levels.effective_stop == at_stop(98.8, TRAILING_STOP)
    assert check(levels, bar(103.0, 103.5, 98.0, 99.0)) == at(TRAILING_STOP, 98.8)


# --- take-profit ----------------------------------------------------------------------------


def test_take_profit_on_the_high_fills_at_the_target() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(take_profit_pct=0.08))
    assert check(levels, bar(101.0, 107.9, 100.5, 107.0)) is None
    assert check(levels, bar(107.0, 109.0, 106.0, 108.5)) == at(TAKE_PROFIT, 108.0)


def test_take_profit_gapped_over_fills_at_the_better_open() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(take_profit_pct=0.08))
    assert check(levels, bar(112.0, 113.0, 111.0, 112.5)) == (TAKE_PROFIT, 112.0)


def test_a_bar_that_reaches_both_stop_and_target_is_the_stop() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(stop_loss_pct=0.05, take_profit_pct=0.05))
    assert check(levels, bar(100.0, 106.0, 94.0, 100.0)) == at(STOP_LOSS, 95.0)
    short = Levels(SHORT, 100.0, math.nan, ExitConfig(stop_loss_pct=0.05, take_profit_pct=0.05))
    assert check(short, bar(100.0, 106.0, 94.0, 100.0)) == at(STOP_LOSS, 105.0)


# --- shorts ---------------------------------------------------------------------------------


def test_a_short_stop_is_above_and_hit_on_the_high() -> None:
    levels = Levels(SHORT, 100.0, math.nan, ExitConfig(stop_loss_pct=0.05))
    assert levels.stop == pytest.approx(105.0)
    assert check(levels, bar(101.0, 104.9, 95.0, 100.0)) is None
    spike = bar(101.0, 110.0, 100.0, 104.0)
    assert check(levels, spike) == at(STOP_LOSS, 105.0)
    slip = 105.0 * 2.0 / 1e4 + 0.05 * (110.0 - 100.0)
    assert stop_fill_price(Side.BUY, 105.0, spike, FILLS) == pytest.approx(105.0 + slip)


def test_a_short_gap_up_through_the_stop_fills_at_the_open() -> None:
    levels = Levels(SHORT, 100.0, math.nan, ExitConfig(stop_loss_pct=0.05))
    assert check(levels, bar(112.0, 113.0, 111.0, 112.0)) == (STOP_LOSS, 112.0)


def test_a_short_trailing_stop_ratchets_down_and_never_loosens() -> None:
    levels = Levels(SHORT, 100.0, math.nan, ExitConfig(trailing_pct=0.05))
    assert levels.trail == pytest.approx(105.0)
    assert check(levels, bar(99.0, 99.5, 90.0, 91.0)) is None
    assert levels.trail == pytest.approx(94.5)
    assert check(levels, bar(91.0, 94.0, 90.5, 93.0)) is None  # bounce: lows higher
    assert levels.trail == pytest.approx(94.5)
    assert check(levels, bar(93.0, 95.0, 92.0, 94.0)) == at(TRAILING_STOP, 94.5)


def test_a_short_takes_profit_on_the_low() -> None:
    levels = Levels(SHORT, 100.0, math.nan, ExitConfig(take_profit_pct=0.1))
    assert check(levels, bar(95.0, 96.0, 90.1, 91.0)) is None
    assert check(levels, bar(91.0, 92.0, 89.0, 89.5)) == at(TAKE_PROFIT, 90.0)
    gapped = Levels(SHORT, 100.0, math.nan, ExitConfig(take_profit_pct=0.1))
    assert check(gapped, bar(85.0, 86.0, 84.0, 85.0)) == (TAKE_PROFIT, 85.0)


# --- distances ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("atr", "expected_stop"),
    [
        (1.0, 98.0),  # 2 ATR = 2 is nearer than 5 %
        (4.0, 95.0),  # 2 ATR = 8 is farther: 5 % holds
        (math.nan, 95.0),  # no ATR yet: the percentage alone
        (0.0, 95.0),
    ],
)
def test_with_an_atr_and_a_pct_distance_the_nearer_stop_holds(
    atr: float, expected_stop: float
) -> None:
    config = ExitConfig(stop_loss_atr=2.0, stop_loss_pct=0.05)
    assert Levels(LONG, 100.0, atr, config).stop == pytest.approx(expected_stop)
    short = Levels(SHORT, 100.0, atr, config)
    assert short.stop == pytest.approx(200.0 - expected_stop)


def test_take_profit_and_trail_take_the_nearer_distance_too() -> None:
    config = ExitConfig(
        take_profit_atr=3.0, take_profit_pct=0.1, trailing_atr=1.0, trailing_pct=0.05
    )
    near_atr = Levels(LONG, 100.0, 2.0, config)
    assert near_atr.take == pytest.approx(106.0)  # 3 ATR = 6 < 10
    assert near_atr.trail == pytest.approx(98.0)  # 1 ATR = 2 < 5
    far_atr = Levels(LONG, 100.0, 6.0, config)
    assert far_atr.take == pytest.approx(110.0)
    assert far_atr.trail == pytest.approx(95.0)
    short = Levels(SHORT, 100.0, 2.0, config)
    assert short.take == pytest.approx(94.0)
    assert short.trail == pytest.approx(102.0)


def test_atr_only_exits_are_off_until_an_atr_is_known() -> None:
    levels = Levels(LONG, 100.0, math.nan, ExitConfig(stop_loss_atr=2.0, trailing_atr=3.0))
    assert math.isnan(levels.stop) and math.isnan(levels.trail) and math.isnan(levels.take)
    assert check(levels, bar(100.0, 101.0, 1.0, 2.0)) is None


def test_no_exit_configured_never_triggers() -> None:
    levels = Levels(LONG, 100.0, 2.0, ExitConfig())
    assert check(levels, bar(100.0, 1_000.0, 0.01, 50.0)) is None


def test_symbol_drawdown_pauses_only_that_symbol_and_the_peak_restarts() -> None:
    guard = Protections(ProtectionConfig(symbol_drawdown=0.1, pause_bars=5))
    guard.on_exit("BTC", "signal_fade", 0.08, bar=10)  # peak 0.08
    guard.on_exit("BTC", "signal_fade", -0.05, bar=12)  # 0.03: 5 % below the peak
    assert guard.why_blocked("BTC", 13) is None
    guard.on_exit("BTC", "signal_fade", -0.06, bar=14)  # -0.03: 11 % below the peak
    assert guard.why_blocked("BTC", 15) == "drawdown_pause"
    assert guard.why_blocked("ETH", 15) is None  # another symbol trades on
    assert guard.why_blocked("BTC", 19) is None  # paused for pause_bars
    # The peak restarted at the pause: a further 5 % loss is not a new 10 % drawdown.
    guard.on_exit("BTC", "signal_fade", -0.05, bar=20)
    assert guard.why_blocked("BTC", 21) is None
    assert guard.blocked["drawdown_pause"] == 1


def test_only_stop_outs_count_towards_cooldown_and_the_global_pause() -> None:
    guard = Protections(
        ProtectionConfig(cooldown_bars=3, stopout_limit=2, stopout_window=10, pause_bars=4)
    )
    guard.on_exit("BTC", "take_profit", 0.02, bar=1)
    guard.on_exit("BTC", "time_stop", -0.01, bar=2)
    assert guard.why_blocked("BTC", 3) is None  # neither is a stop-out
    guard.on_exit("BTC", "stop_loss", -0.02, bar=5)
    assert guard.why_blocked("BTC", 7) == "cooldown"
    assert guard.why_blocked("ETH", 7) is None
    assert guard.why_blocked("BTC", 8) is None
    guard.on_exit("ETH", "trailing_stop", -0.01, bar=20)  # first stop-out left the window
    assert guard.why_blocked("SOL", 21) is None
    guard.on_exit("SOL", "stop_loss", -0.01, bar=22)  # two within 10 bars: everyone pauses
    assert guard.why_blocked("XRP", 23) == "stopout_pause"
    assert guard.why_blocked("XRP", 26) is None
