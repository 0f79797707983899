"""Exits and protections every strategy gets, configured per strategy.

Price-level exits (``ExitConfig``): a stop-loss and a take-profit set at entry (ATR multiples or
a percentage of the entry price), and a trailing stop that follows the best price since entry
and never loosens. ``Levels`` holds one position's levels; ``Levels.check`` tests one bar
against the levels set before it: a long is stopped when the bar's low reaches its stop
(filled at the stop, or at the open when the bar opened through it) and takes profit when the
high reaches its target; when one bar reaches both, the stop is assumed first (the worse
case). Live and paper test every ticker's last price the same way (``check_price``).

Exits judged at a bar's close (by the engine): time stop (``max_hold_bars``), a regime change
since entry, the strategy's signal fading (its target weight back to 0) or reversing.

Protections (``ProtectionConfig``, freqtrade's are the model): a cooldown on a symbol after it
was stopped out, a pause of every entry after ``stopout_limit`` stop-outs within
``stopout_window`` bars, and a pause on a symbol whose closed trades drew down more than
``symbol_drawdown`` (a fraction: the fall of the sum of its trade returns from its peak).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Annotated

import msgspec

NonNegative = Annotated[float, msgspec.Meta(ge=0)]

STOP_LOSS = "stop_loss"
TAKE_PROFIT = "take_profit"
TRAILING_STOP = "trailing_stop"
TIME_STOP = "time_stop"
REGIME_CHANGE = "regime_change"
SIGNAL_FADE = "signal_fade"
REVERSE = "reverse"
END_OF_DATA = "end_of_data"
PRICE_EXITS = (STOP_LOSS, TAKE_PROFIT, TRAILING_STOP)
STOP_OUTS = (STOP_LOSS, TRAILING_STOP)
"""The exits protections count as a stop-out."""
EXIT_REASONS = (*PRICE_EXITS, TIME_STOP, REGIME_CHANGE, SIGNAL_FADE, REVERSE)


class ExitConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[strategy.exits]``: 0 turns an exit off; a strategy brings its own defaults."""

    stop_loss_atr: NonNegative = 0.0
    """Stop this many ATRs (the ATR when the entry was decided) past the entry price."""
    stop_loss_pct: NonNegative = 0.0
    """Stop this fraction past the entry price (with both, the nearer stop holds)."""
    take_profit_atr: NonNegative = 0.0
    take_profit_pct: NonNegative = 0.0
    """Take profit this many ATRs / this fraction beyond the entry (with both, the nearer)."""
    trailing_atr: NonNegative = 0.0
    trailing_pct: NonNegative = 0.0
    """Trailing stop this far behind the best price since entry; it only ratchets."""
    max_hold_bars: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Time stop: flat after this many bars held."""
    exit_on_regime_change: bool = False
    """Flat when the symbol's regime is no longer the one it was entered in."""
    exit_on_signal_fade: bool = True
    """Flat when the strategy's target weight for a held symbol goes back to 0 (False: only
    the other exits end a position)."""


class ProtectionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[strategy.protections]``: 0 turns a protection off."""

    cooldown_bars: Annotated[int, msgspec.Meta(ge=0)] = 0
    """No new entry in a symbol for this many bars after it was stopped out."""
    stopout_limit: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Pause every entry after this many stop-outs (any symbol) ..."""
    stopout_window: Annotated[int, msgspec.Meta(ge=1)] = 24
    """... within this many bars ..."""
    pause_bars: Annotated[int, msgspec.Meta(ge=1)] = 24
    """... for this many bars (the drawdown pause lasts as long)."""
    symbol_drawdown: NonNegative = 0.0
    """Pause a symbol when its closed trades' summed returns fall this far (a fraction, 0.1 =
    10 %) below their peak; the peak restarts after the pause."""


class Levels:
    """One position's price levels (NaN: none). ``side`` is +1 long, -1 short."""

    __slots__ = ("best", "side", "stop", "take", "trail", "trail_offset")

    def __init__(self, side: int, entry: float, atr: float, config: ExitConfig) -> None:
        self.side = side
        atr = atr if math.isfinite(atr) and atr > 0 else math.nan
        self.stop = _nearest(entry, -side, config.stop_loss_atr * atr, config.stop_loss_pct)
        self.take = _nearest(entry, side, config.take_profit_atr * atr, config.take_profit_pct)
        # The trailing distance in price (ATR) or as a fraction (pct); the nearer one holds.
        self.trail_offset = (
            config.trailing_atr * atr if config.trailing_atr > 0 else math.nan,
            config.trailing_pct,
        )
        self.best = entry
        self.trail = self._trail_from(entry)

    def _trail_from(self, best: float) -> float:
        by_atr, pct = self.trail_offset
        candidates = []
        if math.isfinite(by_atr):
            candidates.append(best - self.side * by_atr)
        if pct > 0:
            candidates.append(best * (1.0 - self.side * pct))
        if not candidates:
            return math.nan
        return max(candidates) if self.side > 0 else min(candidates)

    @property
    def effective_stop(self) -> tuple[float, str]:
        """The binding stop (the tighter of the fixed and the trailing one) and its reason."""
        stop, trail = self.stop, self.trail
        if math.isnan(trail):
            return stop, STOP_LOSS
        if math.isnan(stop) or (trail - stop) * self.side > 0:
            return trail, TRAILING_STOP
        return stop, STOP_LOSS

    def check(self, open_: float, high: float, low: float) -> tuple[str, float] | None:
        """The exit one bar triggers, with the price it triggers at, or None. Checks the
        levels as they stood before the bar, then ratchets the trailing stop with it."""
        hit = self._hit(open_, high, low)
        if hit is None:
            self.follow(high if self.side > 0 else low)
        return hit

    def check_price(self, price: float) -> tuple[str, float] | None:
        """As ``check`` for a single traded price (a ticker's last)."""
        return self.check(price, price, price)

    def _hit(self, open_: float, high: float, low: float) -> tuple[str, float] | None:
        stop, reason = self.effective_stop
        adverse, favourable = (low, high) if self.side > 0 else (high, low)
        if not math.isnan(stop) and (adverse - stop) * self.side <= 0:
            # Opened through the stop: the open is the first price it could fill at.
            return reason, open_ if (open_ - stop) * self.side <= 0 else stop
        take = self.take
        if not math.isnan(take) and (favourable - take) * self.side >= 0:
            return TAKE_PROFIT, open_ if (open_ - take) * self.side >= 0 else take
        return None

    def follow(self, price: float) -> None:
        """A new best price since entry moves the trailing stop with it (never back)."""
        if (price - self.best) * self.side > 0:
            self.best = price
            trail = self._trail_from(price)
            if math.isnan(self.trail) or (trail - self.trail) * self.side > 0:
                self.trail = trail


def _nearest(entry: float, direction: int, by_atr: float, pct: float) -> float:
    """The level ``direction`` (+1 above, -1 below) of the entry nearest to it, of an ATR
    distance (NaN or 0: none) and a fractional one (0: none)."""
    candidates = []
    if math.isfinite(by_atr) and by_atr > 0:
        candidates.append(entry + direction * by_atr)
    if pct > 0:
        candidates.append(entry * (1.0 + direction * pct))
    if not candidates:
        return math.nan
    return min(candidates) if direction > 0 else max(candidates)


class Protections:
    """Which symbols may open a position now, from the stop-outs and trade returns so far."""

    def __init__(self, config: ProtectionConfig) -> None:
        self.config = config
        self._cooldown_until: dict[str, int] = {}
        self._stopouts: deque[int] = deque()
        self.paused_until = -1
        self._cum: dict[str, float] = {}
        self._peak: dict[str, float] = {}
        self._symbol_paused_until: dict[str, int] = {}
        self.blocked: dict[str, int] = {"cooldown": 0, "stopout_pause": 0, "drawdown_pause": 0}

    def on_exit(self, symbol: str, reason: str, trade_return: float, bar: int) -> None:
        """A position closed at ``bar`` (the engine's bar count) for ``reason``."""
        c = self.config
        if reason in STOP_OUTS:
            if c.cooldown_bars:
                self._cooldown_until[symbol] = bar + c.cooldown_bars
            if c.stopout_limit:
                window = self._stopouts
                window.append(bar)
                while window and window[0] <= bar - c.stopout_window:
                    window.popleft()
                if len(window) >= c.stopout_limit:
                    self.paused_until = bar + c.pause_bars
                    window.clear()
        if c.symbol_drawdown > 0 and math.isfinite(trade_return):
            cum = self._cum.get(symbol, 0.0) + trade_return
            peak = max(self._peak.get(symbol, 0.0), cum)
            self._cum[symbol] = cum
            self._peak[symbol] = peak
            if peak - cum >= c.symbol_drawdown:
                self._symbol_paused_until[symbol] = bar + c.pause_bars
                self._peak[symbol] = cum

    def why_blocked(self, symbol: str, bar: int) -> str | None:
        """The protection that keeps ``symbol`` from a new entry at ``bar``, or None."""
        if bar < self.paused_until:
            reason = "stopout_pause"
        elif bar < self._cooldown_until.get(symbol, -1):
            reason = "cooldown"
        elif bar < self._symbol_paused_until.get(symbol, -1):
            reason = "drawdown_pause"
        else:
            return None
        self.blocked[reason] += 1
        return reason
