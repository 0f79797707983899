"""How far apart the regime labels put, on real candles, the property each label claims.

There is no true label for a real market, so each label is scored on what it says about the
bars: TRENDING bars should move more efficiently than RANGING ones, VOLATILE bars should be
more volatile than the rest, and a BREAKOUT should be followed by wider bars and more volume
than before it. Each separation is a ratio of medians (or a median of per-event ratios), with
a goal stated before the figures were measured (``GOALS``).

Labels come from ``engine.classify`` over a file's bars, as ``quantumtrade regime detect``
labels them; labels are causal (bar t's label uses bars up to t). Trailing measures end at the
labelled bar; forward measures use the bars after it, for scoring only.
"""

from __future__ import annotations

import msgspec

EFFICIENCY_BARS = 48
"""Bars of the efficiency ratio |close_t - close_{t-n}| / sum |Δclose| (trailing and forward)."""
VOLATILITY_BARS = 24
"""Bars of realised volatility (stdev of log returns; trailing and forward)."""
BREAKOUT_AFTER = 12
"""Bars after a BREAKOUT onset whose range and volume are compared..."""
BREAKOUT_BEFORE = 48
"""...with the mean of these bars before it."""


class SeparationGoal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    what: str
    goal: float
    """The ratio must be at least this."""
    why: str


# Stated before any figure on real candles was computed (committed first), and kept so.
GOALS: tuple[SeparationGoal, ...] = (
    SeparationGoal(
        name="efficiency_trailing",
        what="median trailing 48-bar efficiency ratio, TRENDING / RANGING",
        goal=1.5,
        why="a label that says 'trend' must describe a market moving in one direction now; "
        "over 48 bars a random walk's efficiency is ~0.1, so half as much again is the least "
        "a reader would call a visible difference",
    ),
    SeparationGoal(
        name="efficiency_forward",
        what="median forward 48-bar efficiency ratio, TRENDING / RANGING",
        goal=1.1,
        why="trends on real markets persist only weakly, so the forward goal is lower; a label "
        "that tells nothing about the next 48 bars gives 1.0",
    ),
    SeparationGoal(
        name="volatility_trailing",
        what="median trailing 24-bar realised volatility, VOLATILE / the other labels",
        goal=1.5,
        why="VOLATILE must describe bars clearly more volatile than the rest now",
    ),
    SeparationGoal(
        name="volatility_forward",
        what="median forward 24-bar realised volatility, VOLATILE / the other labels",
        goal=1.2,
        why="volatility clusters, so it should persist over the next day of hourly bars, "
        "weaker than what the label saw",
    ),
    SeparationGoal(
        name="breakout_range",
        what="median over BREAKOUT onsets of mean (high-low)/close over the 12 bars after / "
        "the 48 bars before",
        goal=1.3,
        why="a breakout is an expansion out of a range: the bars after it must be wider",
    ),
    SeparationGoal(
        name="breakout_volume",
        what="median over BREAKOUT onsets of mean volume over the 12 bars after / the 48 "
        "bars before",
        goal=1.2,
        why="a break that volume does not follow is the usual false breakout",
    ),
)
