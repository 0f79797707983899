"""The regime labels on real candles (``QT_DATA_DIR``/candles, every file): each separation
that meets its goal today must keep meeting it; each that misses it must not fall below its
regression floor (the measured figure minus a margin; a floor, NOT the goal). Also the
measures against hand arithmetic, and a negative control (labels shifted in time: the same
label counts, no separation).

Skips without the data, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from quantumtrade.cli import main
from quantumtrade.data.datadir import data_dir
from quantumtrade.regime.real import (
    GOALS,
    RealReport,
    after_over_before,
    candle_sets,
    efficiency,
    label_file,
    measure,
    realised_volatility,
    separations_of,
)

# Goals missed on 2026-12-04 (pooled over all six candle sets; README "Real candles"): the
# figure then, and a floor 0.05 below it so that a change making the labels worse fails
# here. These are regression floors, not the goals: the goals stay in GOALS and stay missed.
MEASURED_MISSED = {
    "efficiency_trailing": 1.236,
    "efficiency_forward": 0.913,
    "volatility_trailing": 1.427,
    "breakout_range": 1.215,
}
FLOOR_MARGIN = 0.05
CONTROL_SET = "binance-spot-1h-2024"


def _candles() -> Path:
    root = data_dir() / "candles"
    if root.is_dir():
        return root
    message = f"real candles not found at {root} (set QT_DATA_DIR to the shared data directory)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def report() -> RealReport:
    return measure(_candles())


def test_every_candle_set_is_measured(report: RealReport) -> None:
    assert {s.dataset for s in report.datasets} == set(candle_sets(_candles()))
    assert report.pooled.files == sum(s.files for s in report.datasets) >= 200
    assert report.pooled.labelled > 500_000 and report.pooled.breakout_onsets > 2_000
    # The data README promises clean rows; validation agrees.
    assert report.pooled.rejected == {}


@pytest.mark.parametrize("goal", GOALS, ids=[g.name for g in GOALS])
def test_separation_meets_its_goal_or_stays_above_its_floor(
    report: RealReport, goal: object
) -> None:
    name, target = goal.name, goal.goal  # type: ignore[attr-defined]
    value = report.pooled.ratios[name]
    if name in MEASURED_MISSED:
        floor = MEASURED_MISSED[name] - FLOOR_MARGIN
        assert value >= floor, f"{name} {value:.3f} fell below its regression floor {floor:.3f}"
        # Still missed: if it is met now, move it out of MEASURED_MISSED and README's "missed".
        assert value < target, f"{name} {value:.3f} now meets its goal {target}: update README"
    else:
        assert value >= target, f"{name} {value:.3f} is below its goal {target}"


def test_negative_control_labels_shifted_in_time_separate_nothing() -> None:
    files = candle_sets(_candles())[CONTROL_SET].values()
    labelled = [label_file(f) for f in files]
    own = separations_of(CONTROL_SET, labelled)
    shifted = separations_of(
        CONTROL_SET, [replace(b, labels=np.roll(b.labels, b.labels.size // 2)) for b in labelled]
    )
    assert shifted.share == own.share  # the same labels, at other bars
    for name in ("volatility_trailing", "volatility_forward", "breakout_volume"):
        assert own.ratios[name] >= 1.2
        assert shifted.ratios[name] < 1.1, name
    for name in ("efficiency_trailing", "breakout_range"):
        assert own.ratios[name] > shifted.ratios[name] + 0.1, name


def test_measures_against_hand_arithmetic() -> None:
    line = np.linspace(100.0, 200.0, 101)
    trailing, forward = efficiency(line, 48)
    assert np.isnan(trailing[:48]).all() and np.allclose(trailing[48:], 1.0)
    assert np.allclose(forward[:-48], 1.0) and np.isnan(forward[-48:]).all()
    zigzag = np.where(np.arange(101) % 2 == 0, 100.0, 101.0)
    assert np.allclose(efficiency(zigzag, 48)[0][48:], 0.0)  # back where it was, 48 moves
    assert np.allclose(efficiency(zigzag, 47)[0][47:], 1.0 / 47.0)  # net 1 of 47 moves

    rng = np.random.default_rng(1)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    vol_t, vol_f = realised_volatility(close, 24)
    r = np.diff(np.log(close))
    t = 100
    assert vol_t[t] == pytest.approx(np.std(r[t - 24 : t]))  # returns ending at t-23 .. t
    assert vol_f[t] == pytest.approx(np.std(r[t : t + 24]))  # returns ending at t+1 .. t+24
    assert np.isnan(vol_t[:24]).all() and np.isnan(vol_f[-24:]).all()

    step = np.concatenate([np.ones(60), np.full(40, 3.0)])
    ratio = after_over_before(step, after=12, before=48)
    assert ratio[59] == pytest.approx(3.0)  # 12 bars after bar 59 are all 3, the 48 before 1
    assert ratio[48] == pytest.approx((11 * 1.0 + 1 * 3.0) / 12)
    assert np.isnan(ratio[:48]).all() and np.isnan(ratio[-12:]).all()


def test_cli_prints_the_table_and_each_goal(capsys: pytest.CaptureFixture[str]) -> None:
    folder = _candles() / CONTROL_SET
    assert main(["regime", "evaluate", "--real", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    want = separations_of(
        CONTROL_SET, [label_file(f) for f in candle_sets(folder)[CONTROL_SET].values()]
    )
    assert out[1].split()[:2] == [CONTROL_SET, str(want.files)]
    for goal in GOALS:
        line = next(x for x in out if x.startswith(goal.name + " "))
        value = want.ratios[goal.name]
        verdict = "met" if value >= goal.goal else "MISSED"
        assert line.split()[1] == f"{value:.3f}" and f"(goal >= {goal.goal}: {verdict})" in line

    missing = folder / "nowhere"
    assert main(["regime", "evaluate", "--real", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count(str(missing)) == 1 and len(err.strip().splitlines()) == 1
