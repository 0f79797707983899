"""Labelled market families for scoring the regime detector, each built by its own process.

A family turns (seed, symbols, bars) into bars and the true regime of every bar, taken from the
generator's own state. Every family labels by the same definitions, whatever its price level,
volatility, bar length or noise distribution:

* TRENDING: persistent directional drift;
* RANGING: mean reversion within bounds;
* VOLATILE: realised volatility high against the symbol's own history, without persistent
  direction;
* BREAKOUT: a move out of compression with expanding range and volume. As in the synthetic
  source, a BREAKOUT stretch is the break itself: the last ``SQUEEZE_BARS`` bars of the
  compression, then the jump and its expansion. The compression before them is still a range
  (it has not broken out, and might not), so it is labelled RANGING.

The families here were designed from those definitions alone, before the detector was scored
on them, and share no code or parameters with ``quantumtrade.data.synthetic`` (the family the
detector's model was fitted on). Each has its own seed space (a family tag in the seed), its
own volatility scales (spanning well over 20x across symbols) and bar lengths. Each symbol's
draws come from its own generators keyed by (family, seed, symbol index), and bar draws fill
(bars, k) arrays in order, so bar ``k`` of a symbol depends only on (seed, index, k), not on how
many symbols or bars were generated with it. Generation runs one vectorised NumPy step per bar
over all symbols (200 x 2,000 bars in well under a second).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.data.synthetic_kernel import SQUEEZE_BARS

Array = NDArray[np.float64]
Labels = NDArray[np.int8]

# Regime codes (REGIME_ORDER): what the truth arrays hold.
TRENDING, RANGING, VOLATILE, BREAKOUT = 0, 1, 2, 3

_MSGARCH_TAG = 0x6A5C
_CHANNEL_TAG = 0xC4A7


class MarketSample(msgspec.Struct, frozen=True):
    """Bars of a labelled market as (symbols, bars) arrays, and the true regime codes."""

    close: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    volume: NDArray[np.float64]
    truth: Labels


class _Plan(msgspec.Struct):
    """One symbol's regime path as per-bar arrays (filled segment by segment)."""

    state: NDArray[np.int64]
    """The generator's internal state per bar (family-specific codes)."""
    truth: Labels
    start: NDArray[np.bool_]
    """True on the first bar of a segment (and of a compression)."""
    strength: Array
    """Segment-constant magnitude (drift, volatility or width multiplier; family-specific)."""
    frac: Array
    """Position within the phase, 0 at its first bar, 1 at its last."""


def _new_plan(bars: int) -> _Plan:
    return _Plan(
        state=np.zeros(bars, dtype=np.int64),
        truth=np.zeros(bars, dtype=np.int8),
        start=np.zeros(bars, dtype=bool),
        strength=np.zeros(bars),
        frac=np.zeros(bars),
    )


def _fill(plan: _Plan, a: int, b: int, state: int, truth: int, strength: float) -> None:
    """Bars [a, b) of a phase (those before the plan's end)."""
    end = min(b, plan.state.shape[0])
    if a >= end:
        return
    plan.state[a:end] = state
    plan.truth[a:end] = truth
    plan.start[a] = True
    plan.strength[a:end] = strength
    # Over the whole phase, so a bar does not depend on where the sample ends.
    plan.frac[a:end] = np.arange(end - a) / max(b - a - 1, 1)


def _next_regime(rng: np.random.Generator, table: Array, current: int) -> int:
    return int(rng.choice(4, p=table[current]))


def _draw_chain(
    chain: np.random.Generator,
    table: Array,
    length: Callable[[np.random.Generator, int], int],
    bars: int,
) -> tuple[list[int], list[int]]:
    """A family's regime chain and each segment's length, drawn until the segments cover
    ``bars`` and one more segment (a range knows whether a breakout follows)."""
    regime = int(chain.integers(0, 3))
    regimes = [regime]
    lengths = [length(chain, regime)]
    while sum(lengths[:-1]) < bars + 1:
        regime = _next_regime(chain, table, regime)
        regimes.append(regime)
        lengths.append(length(chain, regime))
    return regimes, lengths


def _toward_base(log_price: Array, log_base: Array, u: Array) -> Array:
    """+1/-1 per symbol, biased back toward the symbol's base price (prices stay in a band)."""
    p_up = 1.0 / (1.0 + np.exp(2.0 * (log_price - log_base)))
    return np.where(u < p_up, 1.0, -1.0)


def _generators(tag: int, seed: int, index: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators of one symbol (its profile, its regime plan, one per array
    of bar draws), keyed by (family, seed, index) only."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([tag, seed, index]).spawn(n)]


def _check(seed: int, symbols: int, bars: int) -> None:
    if seed < 0 or symbols < 1 or bars < 1:
        raise ValueError(f"need seed >= 0, symbols >= 1, bars >= 1 (got {seed}, {symbols}, {bars})")


# --- msgarch ----------------------------------------------------------------------------------

# Internal states of the msgarch family.
_G_TREND, _G_RANGE, _G_VOLATILE, _G_COMPRESS, _G_BREAK = 0, 1, 2, 3, 4
# Next regime (rows: from TRENDING, RANGING, VOLATILE, BREAKOUT). A breakout needs a compression
# to break out of, and a compression is a narrowing range: BREAKOUT follows RANGING only.
_G_TABLE = np.array(
    [
        [0.00, 0.60, 0.40, 0.00],
        [0.35, 0.00, 0.20, 0.45],
        [0.45, 0.55, 0.00, 0.00],
        [0.70, 0.00, 0.30, 0.00],
    ]
)


def _msgarch_length(rng: np.random.Generator, regime: int) -> int:
    if regime == BREAKOUT:  # the jump and its expansion
        return 12 + min(int(rng.geometric(1.0 / 12.0)) - 1, 60)
    return int(np.clip(round(math.exp(rng.normal(math.log(70.0), 0.45))), 30, 400))


def _msgarch_plan(chain: np.random.Generator, rng: np.random.Generator, bars: int) -> _Plan:
    """Regimes and lengths from ``chain``, each segment's parameters from ``rng`` in segment
    order; one segment past the end is drawn, so the last one knows what follows it."""
    plan = _new_plan(bars)
    regimes, lengths = _draw_chain(chain, _G_TABLE, _msgarch_length, bars)
    a = 0
    for k, (regime, n) in enumerate(zip(regimes, lengths, strict=True)):
        b = a + n
        following = regimes[k + 1] if k + 1 < len(regimes) else -1
        if regime == TRENDING:
            _fill(plan, a, b, _G_TREND, TRENDING, rng.uniform(0.15, 0.45))
        elif regime == VOLATILE:
            _fill(plan, a, b, _G_VOLATILE, VOLATILE, rng.uniform(2.5, 4.0))
        elif regime == RANGING:
            width = rng.uniform(0.45, 0.7)
            squeeze = int(rng.integers(8, 17)) if following == BREAKOUT else 0
            _fill(plan, a, b - squeeze, _G_RANGE, RANGING, width)
            if squeeze and b - squeeze < bars:
                # The compression: the same range (its level stays), shrinking volatility.
                _fill(plan, b - squeeze, b, _G_COMPRESS, RANGING, width)
                plan.start[b - squeeze] = False
                plan.truth[b - SQUEEZE_BARS : min(b, bars)] = BREAKOUT
        else:
            _fill(plan, a, b, _G_BREAK, BREAKOUT, rng.uniform(4.0, 8.0))
        a = b
    return plan


def msgarch_sample(seed: int, symbols: int, bars: int) -> MarketSample:
    """The "msgarch" family: Markov-switching regimes over a GARCH(1,1) with Student-t shocks.

    Design (from the regime definitions, before any scoring):

    * Regimes follow a semi-Markov chain: TRENDING, RANGING and VOLATILE last a log-normal
      number of bars (median 70, 30 to 400), a break 12 + geometric (mean 12) bars; BREAKOUT
      only follows a RANGING stretch (``_G_TABLE``).
    * Shocks are Student-t (``df`` 3.5 to 8 per symbol, scaled to unit variance) through a unit
      GARCH(1,1) ``g`` (alpha 0.04-0.12, persistence 0.85-0.95 per symbol); a bar's volatility
      is ``sigma * m * sqrt(g)``, with the regime's multiplier ``m`` (the Haas-style switching
      scale, so a regime's volatility holds from its first bar).
    * TRENDING: drift of 0.15-0.45 sigma per bar in one direction for the whole stretch, m 1.
    * RANGING: an AR(1) (phi 0.75-0.92) around the level where the range began, reflected at
      2.5 stationary deviations, m 0.45-0.7, volume 30 % lower.
    * VOLATILE: no drift, m 2.5-4, volume up by a factor of two.
    * Compression (the last 8-16 bars of a RANGING stretch that a breakout follows): the range
      goes on while m shrinks to a fifth and volume dries up; its last ``SQUEEZE_BARS`` bars
      are labelled BREAKOUT, the rest RANGING.
    * BREAKOUT: a jump of 4-8 sigma out of the range (direction toward the base price's side),
      then drift 0.3 sigma per bar with m rising from 1.5 to 3 and volume from 2.2x to 3.7x.
    * Symbols: base price 0.01 to 50,000 (log-uniform), bar length 1, 5, 15 or 60 minutes,
      per-bar sigma = s * sqrt(minutes / 15) with s log-uniform over 0.0008-0.02 (25x; with the
      bar lengths the per-bar sigma spans ~200x); quote volume per minute log-uniform over
      1e3-1e6 with an AR(1) log noise and a response to the size of the shock.
    * Wicks: exponential in units of the bar's volatility; open = the previous close.
    """
    _check(seed, symbols, bars)
    shape = (symbols, bars)
    state = np.zeros(shape, dtype=np.int64)
    truth = np.zeros(shape, dtype=np.int8)
    start = np.zeros(shape, dtype=bool)
    strength = np.zeros(shape)
    frac = np.zeros(shape)
    z = np.zeros(shape)
    draws = np.zeros((symbols, bars, 4))  # wick up, wick down, volume noise, direction
    sigma, alpha, beta, phi, log_base, liq, minutes = (np.zeros(symbols) for _ in range(7))
    for i in range(symbols):
        profile, chain, plan_rng, shock_rng, bar_rng = _generators(_MSGARCH_TAG, seed, i, 5)
        minutes[i] = float(profile.choice([1.0, 5.0, 15.0, 60.0]))
        sigma[i] = math.exp(profile.uniform(math.log(0.0008), math.log(0.02)))
        sigma[i] *= math.sqrt(minutes[i] / 15.0)
        df = profile.uniform(3.5, 8.0)
        alpha[i] = profile.uniform(0.04, 0.12)
        beta[i] = profile.uniform(0.85, 0.95) - alpha[i]
        phi[i] = profile.uniform(0.75, 0.92)
        log_base[i] = profile.uniform(math.log(0.01), math.log(50_000.0))
        liq[i] = math.exp(profile.uniform(math.log(1e3), math.log(1e6))) * minutes[i]
        plan = _msgarch_plan(chain, plan_rng, bars)
        state[i], truth[i], start[i] = plan.state, plan.truth, plan.start
        strength[i], frac[i] = plan.strength, plan.frac
        z[i] = shock_rng.standard_t(df, size=bars) / math.sqrt(df / (df - 2.0))
        draws[i] = bar_rng.random((bars, 4))

    close, high, low, volume = (np.zeros(shape) for _ in range(4))
    g = np.ones(symbols)
    lp = log_base.copy()
    level = lp.copy()
    x = np.zeros(symbols)
    side = np.ones(symbols)
    drift = np.zeros(symbols)
    vol_noise = np.zeros(symbols)
    range_width = np.ones(symbols)
    for t in range(bars):
        st, new, s, f = state[:, t], start[:, t], strength[:, t], frac[:, t]
        ranging = (st == _G_RANGE) | (st == _G_COMPRESS)
        # Segment starts: a range anchors its level, a trend or break picks its direction.
        anchor = new & ranging
        level = np.where(anchor, lp, level)
        x = np.where(anchor, 0.0, x)
        range_width = np.where(new & (st == _G_RANGE), s, range_width)
        pick = new & ((st == _G_TREND) | (st == _G_BREAK))
        side = np.where(pick, _toward_base(lp, log_base, draws[:, t, 3]), side)
        drift = np.where(new & (st == _G_TREND), s, np.where(new, 0.0, drift))
        m = np.select(
            [st == _G_TREND, st == _G_RANGE, st == _G_VOLATILE, st == _G_COMPRESS],
            [np.ones(symbols), range_width, s, range_width * 0.25 ** (f + 0.15)],
            default=1.5 + 1.5 * f,
        )
        bar_sd = sigma * m * np.sqrt(g)
        shock = bar_sd * z[:, t]
        # Range: AR(1) around the level, reflected at its bounds.
        band = 2.5 * sigma * m / np.sqrt(1.0 - phi * phi)
        x_new = phi * x + shock
        x_new = np.where(np.abs(x_new) > band, np.sign(x_new) * (2.0 * band - np.abs(x_new)), x_new)
        x_new = np.clip(x_new, -band, band)
        brk = st == _G_BREAK
        jump = brk & new
        move = np.where(
            jump,
            side * s * sigma,
            np.where(brk, side * 0.3 * sigma, side * drift * sigma),
        )
        lc = np.where(ranging, level + x_new, lp + move + shock)
        x = np.where(ranging, x_new, x)
        level_shift = np.select(
            [st == _G_TREND, st == _G_RANGE, st == _G_VOLATILE, st == _G_COMPRESS],
            [np.zeros(symbols), np.full(symbols, -0.35), np.full(symbols, 0.7), -0.35 - 0.7 * f],
            default=0.8 + 0.5 * f + np.where(jump, 0.7, 0.0),
        )
        vol_noise = 0.5 * vol_noise + 0.25 * (draws[:, t, 2] - 0.5) * math.sqrt(12.0)
        response = 0.35 * (np.abs(z[:, t]) - 0.8)
        open_ = np.exp(lp)
        close_t = np.exp(lc)
        wick_up = -np.log1p(-draws[:, t, 0]) * 0.6 * bar_sd
        wick_down = -np.log1p(-draws[:, t, 1]) * 0.6 * bar_sd
        close[:, t] = close_t
        high[:, t] = np.maximum(open_, close_t) * np.exp(wick_up)
        low[:, t] = np.minimum(open_, close_t) * np.exp(-wick_down)
        volume[:, t] = liq * np.exp(level_shift + response + vol_noise) / close_t
        g = (1.0 - alpha - beta) + alpha * z[:, t] ** 2 * g + beta * g
        lp = lc
    return MarketSample(close=close, high=high, low=low, volume=volume, truth=truth)


# --- channel ----------------------------------------------------------------------------------

# Internal states of the channel family.
_C_TREND, _C_CHANNEL, _C_TURBULENT, _C_NARROW, _C_BREAK = 0, 1, 2, 3, 4
_C_TABLE = np.array(
    [
        [0.00, 0.60, 0.40, 0.00],
        [0.30, 0.00, 0.20, 0.50],
        [0.45, 0.55, 0.00, 0.00],
        [0.60, 0.20, 0.20, 0.00],
    ]
)
_SUBSTEPS = 4


def _channel_length(rng: np.random.Generator, regime: int) -> int:
    if regime == BREAKOUT:
        return int(rng.integers(15, 46)) - SQUEEZE_BARS  # the squeeze is the channel's end
    return int(rng.integers(30, 161))


def _channel_plan(chain: np.random.Generator, rng: np.random.Generator, bars: int) -> _Plan:
    """As ``_msgarch_plan``, with the channel family's lengths and table."""
    plan = _new_plan(bars)
    regimes, lengths = _draw_chain(chain, _C_TABLE, _channel_length, bars)
    a = 0
    for k, (regime, n) in enumerate(zip(regimes, lengths, strict=True)):
        b = a + n
        following = regimes[k + 1] if k + 1 < len(regimes) else -1
        if regime == TRENDING:
            _fill(plan, a, b, _C_TREND, TRENDING, rng.uniform(0.2, 0.5))
        elif regime == VOLATILE:
            _fill(plan, a, b, _C_TURBULENT, VOLATILE, rng.uniform(2.0, 3.5))
        elif regime == RANGING:
            width = rng.uniform(1.5, 3.0)
            narrow = int(rng.integers(10, 26)) if following == BREAKOUT else 0
            narrow = min(narrow, n - 10)
            _fill(plan, a, b - narrow, _C_CHANNEL, RANGING, width)
            if narrow > 0 and b - narrow < bars:
                _fill(plan, b - narrow, b, _C_NARROW, RANGING, width)
                plan.start[b - narrow] = False
                plan.truth[b - SQUEEZE_BARS : min(b, bars)] = BREAKOUT
        else:
            _fill(plan, a, b, _C_BREAK, BREAKOUT, rng.uniform(3.0, 6.0))
        a = b
    return plan


def channel_sample(seed: int, symbols: int, bars: int) -> MarketSample:
    """The "channel" family: a stochastic trend plus channel-bound deviations and jumps.

    Design (from the regime definitions, before any scoring): log price = trend line ``tau`` +
    deviation ``x``; each bar is four sub-steps, whose path gives the high and the low.

    * Regimes: semi-Markov with uniform lengths (30 to 160 bars; a break 15 to 45 bars with its
      squeeze), BREAKOUT only after a channel (``_C_TABLE``).
    * TRENDING: the trend line's slope is an AR(1) (rho 0.9) around 0.2-0.5 sigma per bar in one
      direction; x an AR(1) (0.5) with 0.8 sigma noise around the line.
    * RANGING: the line is flat at the price where the channel began; x mean-reverts (theta
      0.1-0.3) with 0.6 sigma noise and is reflected at walls 1.5-3 sigma away; volume 35 %
      lower.
    * VOLATILE: a driftless jump diffusion: Laplace shocks of 2-3.5 sigma, and jumps (12 % of
      bars) of 3-6 sigma either way; volume doubles.
    * Narrowing (the last 10-25 bars of a channel that a breakout follows): the walls and the
      noise contract (a pennant) and volume dries up; its last ``SQUEEZE_BARS`` bars are
      labelled BREAKOUT, the rest RANGING.
    * BREAKOUT: the price jumps through a wall by 3-6 sigma (toward the base price's side), then
      the line slopes 0.4 sigma per bar that way while the noise grows from 1.5 to 3 sigma and
      volume from 2.5x to 4x (5x on the jump).
    * Symbols: base price 0.001 to 100,000, bar length 1, 3, 5, 15, 30 or 60 minutes, per-bar
      sigma = s * sqrt(minutes / 15) with s log-uniform over 0.0006-0.018 (30x); volume per
      minute log-uniform over 500-5e5 quote units, gamma noise (shape 3), growing with the bar's
      move.
    """
    _check(seed, symbols, bars)
    shape = (symbols, bars)
    state = np.zeros(shape, dtype=np.int64)
    truth = np.zeros(shape, dtype=np.int8)
    start = np.zeros(shape, dtype=bool)
    strength = np.zeros(shape)
    frac = np.zeros(shape)
    normal = np.zeros((symbols, bars, _SUBSTEPS + 1))
    uniform = np.zeros((symbols, bars, 4))  # jump, jump sign, direction, jump size
    laplace = np.zeros(shape)
    gamma = np.zeros(shape)
    sigma, theta, log_base, liq = (np.zeros(symbols) for _ in range(4))
    for i in range(symbols):
        profile, chain, plan_rng, *bar_rng = _generators(_CHANNEL_TAG, seed, i, 7)
        minutes = float(profile.choice([1.0, 3.0, 5.0, 15.0, 30.0, 60.0]))
        sigma[i] = math.exp(profile.uniform(math.log(0.0006), math.log(0.018)))
        sigma[i] *= math.sqrt(minutes / 15.0)
        theta[i] = profile.uniform(0.1, 0.3)
        log_base[i] = profile.uniform(math.log(0.001), math.log(100_000.0))
        liq[i] = math.exp(profile.uniform(math.log(500.0), math.log(5e5))) * minutes
        plan = _channel_plan(chain, plan_rng, bars)
        state[i], truth[i], start[i] = plan.state, plan.truth, plan.start
        strength[i], frac[i] = plan.strength, plan.frac
        normal[i] = bar_rng[0].standard_normal((bars, _SUBSTEPS + 1))
        uniform[i] = bar_rng[1].random((bars, 4))
        laplace[i] = bar_rng[2].laplace(0.0, 1.0 / math.sqrt(2.0), size=bars)  # unit variance
        gamma[i] = bar_rng[3].gamma(3.0, 1.0 / 3.0, size=bars)

    close, high, low, volume = (np.zeros(shape) for _ in range(4))
    tau = log_base.copy()
    x = np.zeros(symbols)
    slope = np.zeros(symbols)
    side = np.ones(symbols)
    mean_slope = np.zeros(symbols)
    width = np.full(symbols, 2.0)
    for t in range(bars):
        st, new, s, f = state[:, t], start[:, t], strength[:, t], frac[:, t]
        lp = tau + x
        eps = normal[:, t, 0]
        channel = (st == _C_CHANNEL) | (st == _C_NARROW)
        # A channel freezes the line where the price is; a trend or a break picks a direction.
        tau = np.where(new & channel, lp, tau)
        x = np.where(new & channel, 0.0, x)
        width = np.where(new & (st == _C_CHANNEL), s, width)
        pick = new & ((st == _C_TREND) | (st == _C_BREAK))
        side = np.where(pick, _toward_base(lp, log_base, uniform[:, t, 2]), side)
        mean_slope = np.where(new & (st == _C_TREND), s, mean_slope)
        slope = np.where(new, 0.0, slope)
        # Trend: stochastic slope around a persistent mean, noise around the line.
        trend_slope = side * mean_slope * sigma + 0.9 * (slope - side * mean_slope * sigma)
        trend_slope += 0.08 * sigma * normal[:, t, 1]
        trend_x = 0.5 * x + 0.8 * sigma * eps
        # Channel: reverting deviation between walls (contracting while narrowing).
        squeeze = np.where(st == _C_NARROW, 1.0 - 0.75 * f, 1.0)
        wall = width * sigma * squeeze
        chan_x = (1.0 - theta) * x + 0.6 * sigma * squeeze * eps
        chan_x = np.where(
            np.abs(chan_x) > wall, np.sign(chan_x) * (2.0 * wall - np.abs(chan_x)), chan_x
        )
        chan_x = np.clip(chan_x, -wall, wall)
        # Turbulence: Laplace shocks and symmetric jumps, no drift.
        jumps = uniform[:, t, 0] < 0.12
        jump_size = np.where(uniform[:, t, 1] < 0.5, -1.0, 1.0) * (3.0 + 3.0 * uniform[:, t, 3])
        turb_move = s * sigma * laplace[:, t] + np.where(jumps, jump_size * sigma, 0.0)
        # Break: a jump through the wall, then a slope with growing noise.
        brk = st == _C_BREAK
        first = brk & new
        brk_noise = (1.5 + 1.5 * f) * sigma
        brk_move = np.where(first, side * (width * sigma + s * sigma), side * 0.4 * sigma)
        brk_x = 0.5 * x + brk_noise * eps
        tau = np.select(
            [st == _C_TREND, brk, st == _C_TURBULENT],
            [tau + trend_slope, tau + brk_move, tau + turb_move + x],
            default=tau,
        )
        slope = np.where(st == _C_TREND, trend_slope, 0.0)
        x = np.select(
            [st == _C_TREND, channel, brk], [trend_x, chan_x, brk_x], default=np.zeros(symbols)
        )
        lc = tau + x
        # The bar's path: four sub-steps that end at the close.
        bar_sd = np.select(
            [st == _C_TREND, channel, st == _C_TURBULENT],
            [0.8 * sigma, 0.6 * sigma * squeeze, s * sigma],
            default=brk_noise,
        )
        steps = normal[:, t, 1 : _SUBSTEPS + 1]
        steps = steps - steps.mean(axis=1, keepdims=True)
        path = np.cumsum((lc - lp)[:, None] / _SUBSTEPS + 0.5 * bar_sd[:, None] * steps, axis=1)
        path[:, -1] = lc - lp
        level_mult = np.select(
            [st == _C_TREND, st == _C_CHANNEL, st == _C_TURBULENT, st == _C_NARROW],
            [np.ones(symbols), np.full(symbols, 0.65), np.full(symbols, 2.0), 0.6 - 0.3 * f],
            default=np.where(first, 5.0, 2.5 + 1.5 * f),
        )
        move = np.abs(lc - lp) / sigma
        close[:, t] = np.exp(lc)
        high[:, t] = np.exp(lp + np.maximum(path.max(axis=1), 0.0))
        low[:, t] = np.exp(lp + np.minimum(path.min(axis=1), 0.0))
        volume[:, t] = liq * level_mult * (1.0 + 0.3 * move) * gamma[:, t] / close[:, t]
    return MarketSample(close=close, high=high, low=low, volume=volume, truth=truth)


Generator = Callable[[int, int, int], MarketSample]
"""(seed, symbols, bars) -> a labelled market."""
