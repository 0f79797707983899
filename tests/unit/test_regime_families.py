"""Labelled market families: the generators against the regime definitions (independently of
the detector, each check with a negative control: the same bars under another seed's labels),
determinism, and `regime evaluate --family`.

The held-out accuracy floors are in tests/unit/test_regime_family_floor.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from quantumtrade.cli import main
from quantumtrade.data.synthetic_kernel import SQUEEZE_BARS
from quantumtrade.regime.evaluate import (
    FAMILIES,
    EvaluationReport,
    family_sample,
    family_table,
    switches,
)
from quantumtrade.regime.families import (
    BREAKOUT,
    RANGING,
    TRENDING,
    VOLATILE,
    MarketSample,
    channel_sample,
    msgarch_sample,
)

NEW_FAMILIES = ("msgarch", "channel")
SYMBOLS, BARS = 50, 1000


def _stretches(row: np.ndarray) -> list[tuple[int, int, int]]:
    """(first bar, end, code) of each whole stretch (the ones cut by the row's edges left out)."""
    edges = [0, *switches(row).tolist(), row.shape[0]]
    return [(a, b, int(row[a])) for a, b in itertools.pairwise(edges)][1:-1]


def _properties(sample: MarketSample, truth: np.ndarray) -> dict[str, float]:
    """Median per stretch of what each regime's definition says, under the labels ``truth``.

    er_*: Kaufman efficiency ratio of the stretch's closes (persistent direction -> near 1);
    vr_ranging: 10-bar variance ratio (mean reversion -> below 1); rv_volatile: the stretch's
    median high/low range over the symbol's own median; breakout_range / breakout_volume: mean
    range and quote volume of the break (after the squeeze) over the 10 bars before the stretch;
    breakout_move: how far the first 5 bars of the break get from the compression's centre, in
    heights of the compression's box."""
    log_close = np.log(sample.close)
    bar_range = np.log(sample.high / sample.low)
    own_range = np.median(bar_range, axis=1)
    quote_volume = sample.volume * sample.close
    found: dict[str, list[float]] = {}
    for i, row in enumerate(truth):
        for a, b, code in _stretches(row):
            if code in (TRENDING, RANGING, VOLATILE) and b - a >= 30:
                seg = log_close[i, a + 5 : b]  # past the first bars, where the change settles
                steps = np.diff(seg)
                name = {TRENDING: "trending", RANGING: "ranging", VOLATILE: "volatile"}[code]
                er = abs(seg[-1] - seg[0]) / np.abs(steps).sum()
                found.setdefault(f"er_{name}", []).append(er)
                if code == RANGING:
                    ten = seg[10:] - seg[:-10]
                    found.setdefault("vr_ranging", []).append(ten.var() / (10 * steps.var()))
                if code == VOLATILE:
                    rv = np.median(bar_range[i, a + 5 : b]) / own_range[i]
                    found.setdefault("rv_volatile", []).append(rv)
            if code == BREAKOUT and a >= 10 and b - a > SQUEEZE_BARS + 5:
                before, brk = slice(a - 10, a), slice(a + SQUEEZE_BARS, b)
                found.setdefault("breakout_range", []).append(
                    bar_range[i, brk].mean() / bar_range[i, before].mean()
                )
                found.setdefault("breakout_volume", []).append(
                    quote_volume[i, brk].mean() / quote_volume[i, before].mean()
                )
                box = log_close[i, a - 10 : a + SQUEEZE_BARS]
                first = log_close[i, a + SQUEEZE_BARS : a + SQUEEZE_BARS + 5]
                height = max(float(box.max() - box.min()), 1e-12)
                found.setdefault("breakout_move", []).append(
                    float(np.abs(first - box.mean()).max()) / height
                )
    return {name: float(np.median(values)) for name, values in found.items()}


def _definitions_hold(p: dict[str, float]) -> dict[str, bool]:
    """Each regime's definition as a test on the properties (thresholds from the definitions,
    not from any detector: directional or not, bounded rather than diffusing, twice the
    symbol's own volatility, twice the range and volume, a move of two compression heights)."""
    return {
        "TRENDING: persistent direction": p["er_trending"] >= 0.25,
        "RANGING: mean reversion within bounds": p["er_ranging"] <= 0.10
        and p["vr_ranging"] <= 0.60,
        "VOLATILE: high own volatility, no direction": p["rv_volatile"] >= 2.0
        and p["er_volatile"] <= 0.20,
        "BREAKOUT: out of compression, range and volume expanding": p["breakout_range"] >= 2.0
        and p["breakout_volume"] >= 2.0
        and p["breakout_move"] >= 2.0,
    }


@pytest.mark.parametrize("family", list(FAMILIES))
def test_labelled_stretches_have_their_definitions_properties(family: str) -> None:
    sample = family_sample(family, 11, SYMBOLS, BARS)
    held = _definitions_hold(_properties(sample, sample.truth))
    assert all(held.values()), held
    # Negative control: the same bars under another seed's labels fail every definition.
    other = family_sample(family, 12, SYMBOLS, BARS).truth
    assert not any(_definitions_hold(_properties(sample, other)).values())


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_volatility_scales_span_over_20x_across_symbols(family: str) -> None:
    sample = family_sample(family, 3, SYMBOLS, BARS)
    per_bar = np.median(np.abs(np.diff(np.log(sample.close), axis=1)), axis=1)
    assert per_bar.max() / per_bar.min() >= 20.0
    # Control: the synthetic family, whose symbols differ far less, does not reach it.
    synthetic = family_sample("synthetic", 3, SYMBOLS, BARS)
    flat = np.median(np.abs(np.diff(np.log(synthetic.close), axis=1)), axis=1)
    assert flat.max() / flat.min() < 20.0


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_breakout_follows_a_compressing_range_and_starts_with_the_squeeze(family: str) -> None:
    sample = family_sample(family, 5, SYMBOLS, BARS)
    count = 0
    for row in sample.truth:
        for a, b, code in _stretches(row):
            if code == BREAKOUT:
                count += 1
                assert row[a - 1] == RANGING
                assert b - a >= SQUEEZE_BARS + 9
    assert count > 20


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_bars_are_consistent_and_every_regime_occurs(family: str) -> None:
    s = family_sample(family, 2, SYMBOLS, BARS)
    for a in (s.close, s.high, s.low, s.volume):
        assert np.isfinite(a).all() and (a > 0).all()
    opens = np.concatenate([s.close[:, :1], s.close[:, :-1]], axis=1)
    assert (s.high >= np.maximum(opens, s.close) * (1 - 1e-12)).all()
    assert (s.low <= np.minimum(opens, s.close) * (1 + 1e-12)).all()
    shares = np.bincount(s.truth.ravel(), minlength=4) / s.truth.size
    assert (shares[:3] > 0.15).all() and shares[3] > 0.02


@pytest.mark.parametrize("generate", [msgarch_sample, channel_sample])
def test_a_symbols_bars_depend_only_on_seed_index_and_bar(generate: object) -> None:
    assert callable(generate)
    big = generate(7, 5, 400)
    small = generate(7, 3, 250)
    for name in ("close", "high", "low", "volume", "truth"):
        assert np.array_equal(getattr(big, name)[:3, :250], getattr(small, name)), name
    other = generate(8, 3, 250)
    assert not np.array_equal(other.close, small.close)


def test_families_have_their_own_seed_spaces() -> None:
    a, b = msgarch_sample(4, 3, 300), channel_sample(4, 3, 300)
    assert not np.array_equal(a.truth, b.truth)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown family"):
        family_sample("nope", 1, 1, 10)
    assert main(["regime", "evaluate", "--family", "nope"]) == 2


def test_regime_evaluate_family_prints_its_scores(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["regime", "evaluate", "--seeds", "4", "--symbols", "4", "--bars", "600"]
    assert main([*argv, "--family", "msgarch"]) == 0
    out = capsys.readouterr().out
    assert "family msgarch: held out" in out
    assert "accuracy" in out and "switch precision" in out
    assert main([*argv, "--family", "synthetic"]) == 0
    assert "family synthetic: NOT held out" in capsys.readouterr().out
    assert main([*argv, "--family", "all"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0][2:] for r in rows[2:]] == list(FAMILIES)


def test_family_table_has_one_row_per_report() -> None:
    report = EvaluationReport(
        family="channel",
        seeds=(4,),
        symbols=1,
        bars=10,
        accuracy=0.5,
        recall={"TRENDING": 1.0, "RANGING": 0.25, "VOLATILE": 0.0, "BREAKOUT": 0.125},
        switch_precision=0.75,
        switch_recall=0.5,
        scored_bars=10,
        true_switches=2,
        detected_switches=1,
        matched_switches=1,
    )
    lines = family_table([(report, True)])
    assert lines[-1] == "| channel | yes | 0.500 | 1.000 | 0.250 | 0.000 | 0.125 | 0.750 | 0.500 |"
