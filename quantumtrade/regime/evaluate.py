"""Scoring the regime engine against labelled markets' true regimes, and CSV detection.

The classifier sees only bars; the true labels come from the generator (``FAMILIES``: the
synthetic source's ``true_regime``, or a family in ``regime.families``) and are used only to
score (and, in ``fit_model``, to fit the model on training seeds).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.clock import ManualClock
from quantumtrade.data.synthetic import REGIMES, SyntheticConfig, SyntheticSource
from quantumtrade.data.synthetic_kernel import SQUEEZE_BARS
from quantumtrade.regime.engine import classify, compute_features
from quantumtrade.regime.families import Generator, MarketSample, channel_sample, msgarch_sample
from quantumtrade.regime.model import N_FEATURES, NO_LABEL, REGIME_ORDER, STATE_REGIME, RegimeConfig
from quantumtrade.regime.real import read_labelled, write_labels

# Bars after a true switch that accuracy ignores, and the tolerance of switch matching.
SWITCH_WINDOW = 10
_BAR_MS = 60_000

assert tuple(REGIMES) == REGIME_ORDER, "engine codes must match the synthetic market's"

Labels = NDArray[np.int8]


class EvaluationReport(msgspec.Struct, frozen=True):
    family: str
    """Which labelled family was scored (a key of ``FAMILIES``)."""
    seeds: tuple[int, ...]
    symbols: int
    bars: int
    accuracy: float
    """Share of scored bars labelled right (bars within SWITCH_WINDOW after a true switch and
    bars before warm-up are not scored)."""
    recall: dict[str, float]
    """Per true regime: share of its scored bars labelled as it."""
    switch_precision: float
    switch_recall: float
    scored_bars: int
    true_switches: int
    detected_switches: int
    matched_switches: int


async def _fetch(seed: int, symbols: int, bars: int) -> MarketSample:
    clock = ManualClock()
    cfg = SyntheticConfig(seed=seed, symbols=symbols, bar_ms=_BAR_MS, history_bars=bars)
    source = SyntheticSource(cfg, clock)
    shape = (symbols, bars)
    close, high, low, volume = (np.full(shape, np.nan) for _ in range(4))
    truth = np.full(shape, NO_LABEL, dtype=np.int8)
    codes = {regime: code for code, regime in enumerate(REGIME_ORDER)}
    names = source.symbols()
    batch = await source.fetch_bar_batch(names, [None] * symbols, clock.now_ns() // 1_000_000)
    for i, symbol in enumerate(names):
        a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
        n = b - a
        block = batch.prices[a:b]  # open, high, low, close, volume
        high[i, :n], low[i, :n], close[i, :n], volume[i, :n] = block[:, 1:].T
        if n:
            # One call per symbol, not one per bar: each call regenerates from bar 0.
            regimes = source.true_regimes(symbol, int(batch.ts_ms[a]), n)
            truth[i, :n] = [codes[r] for r in regimes]
    return MarketSample(close=close, high=high, low=low, volume=volume, truth=truth)


def synthetic_sample(seed: int, symbols: int, bars: int) -> MarketSample:
    """Fetch ``bars`` bars of ``symbols`` symbols from a seeded SyntheticSource on a ManualClock."""
    return asyncio.run(_fetch(seed, symbols, bars))


FAMILIES: Mapping[str, Generator] = {
    "synthetic": synthetic_sample,
    "msgarch": msgarch_sample,
    "channel": channel_sample,
}
"""Labelled market families by name: (seed, symbols, bars) -> MarketSample. Each has its own
seed space. The shipped model ([regime] means, stds, transitions) was fitted on "synthetic"
seeds 1-3 only (``FITTED_ON``), so every other family is held out from it."""
FITTED_ON = "synthetic"


def family_sample(family: str, seed: int, symbols: int, bars: int) -> MarketSample:
    """A labelled market of ``family`` (a key of ``FAMILIES``)."""
    try:
        generate = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})") from None
    return generate(seed, symbols, bars)


# --- metrics (pure functions over label rows) ---------------------------------------------


def switches(row: Labels) -> NDArray[np.int64]:
    """Bars where a label differs from the previous bar's, both labelled (>= 0)."""
    r = np.asarray(row)
    change = (r[1:] != r[:-1]) & (r[1:] >= 0) & (r[:-1] >= 0)
    return np.flatnonzero(change).astype(np.int64) + 1


def scored_mask(truth: Labels, predicted: Labels, window: int = SWITCH_WINDOW) -> NDArray[np.bool_]:
    """Bars that count for accuracy: labelled, and not within ``window`` bars after a true
    switch (the switch bar and the ``window - 1`` bars after it)."""
    truth = np.asarray(truth)
    mask = (np.asarray(predicted) >= 0) & (truth >= 0)
    for s in switches(truth).tolist():
        mask[s : s + window] = False
    return mask


def accuracy(truth: Labels, predicted: Labels, window: int = SWITCH_WINDOW) -> tuple[int, int]:
    """(right, scored) bars of one row."""
    mask = scored_mask(truth, predicted, window)
    right = int(np.count_nonzero(np.asarray(truth)[mask] == np.asarray(predicted)[mask]))
    return right, int(np.count_nonzero(mask))


def recall_counts(
    truth: Labels, predicted: Labels, window: int = SWITCH_WINDOW
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per regime code: (scored bars labelled right, scored bars) of one row."""
    mask = scored_mask(truth, predicted, window)
    t = np.asarray(truth)[mask].astype(np.int64)
    p = np.asarray(predicted)[mask].astype(np.int64)
    n = len(REGIME_ORDER)
    return np.bincount(t[t == p], minlength=n)[:n], np.bincount(t, minlength=n)[:n]


def match_switches(
    true_at: Sequence[int] | NDArray[np.int64],
    detected_at: Sequence[int] | NDArray[np.int64],
    tolerance: int = SWITCH_WINDOW,
) -> int:
    """Most one-to-one pairs (true, detected) with |detected - true| <= tolerance.

    Both sorted; the two-pointer sweep that pairs the earliest feasible ones is optimal here.
    """
    t = sorted(int(x) for x in true_at)
    d = sorted(int(x) for x in detected_at)
    i = k = matched = 0
    while i < len(t) and k < len(d):
        if abs(d[k] - t[i]) <= tolerance:
            matched += 1
            i += 1
            k += 1
        elif d[k] < t[i]:
            k += 1
        else:
            i += 1
    return matched


def switch_counts(
    truth: Labels, predicted: Labels, tolerance: int = SWITCH_WINDOW
) -> tuple[int, int, int]:
    """(true switches, detected switches, matched) of one row, over the labelled bars only."""
    t_row = np.asarray(truth)
    p_row = np.asarray(predicted)
    labelled = np.flatnonzero(p_row >= 0)
    if labelled.size == 0:
        return 0, 0, 0
    first = int(labelled[0])
    true_at = switches(t_row)
    true_at = true_at[true_at > first]  # a switch before the first label cannot be detected
    detected_at = switches(p_row)
    return int(true_at.size), int(detected_at.size), match_switches(true_at, detected_at, tolerance)


def score(truth: Labels, predicted: Labels) -> dict[str, Any]:
    """All the figures over (symbols, bars) label arrays."""
    right = scored = true_sw = det_sw = matched = 0
    hits = np.zeros(len(REGIME_ORDER), dtype=np.int64)
    totals = np.zeros(len(REGIME_ORDER), dtype=np.int64)
    for t_row, p_row in zip(np.asarray(truth), np.asarray(predicted), strict=True):
        r, s = accuracy(t_row, p_row)
        right, scored = right + r, scored + s
        h, n = recall_counts(t_row, p_row)
        hits += h
        totals += n
        a, b, c = switch_counts(t_row, p_row)
        true_sw, det_sw, matched = true_sw + a, det_sw + b, matched + c
    return {
        "accuracy": right / scored if scored else 0.0,
        "recall": {
            regime.value: (float(hits[k]) / float(totals[k]) if totals[k] else 0.0)
            for k, regime in enumerate(REGIME_ORDER)
        },
        "switch_precision": matched / det_sw if det_sw else 0.0,
        "switch_recall": matched / true_sw if true_sw else 0.0,
        "scored_bars": scored,
        "true_switches": true_sw,
        "detected_switches": det_sw,
        "matched_switches": matched,
    }


def evaluate(
    seeds: Sequence[int] = (1, 2, 3),
    symbols: int = 200,
    bars: int = 2000,
    config: RegimeConfig | None = None,
    family: str = "synthetic",
) -> EvaluationReport:
    """Classify the labelled market of ``family`` for each seed and score against its true
    regimes."""
    cfg = config if config is not None else RegimeConfig()
    truths: list[Labels] = []
    preds: list[Labels] = []
    for seed in seeds:
        sample = family_sample(family, seed, symbols, bars)
        result = classify(sample.close, sample.high, sample.low, sample.volume, cfg)
        truths.append(sample.truth)
        preds.append(result.labels)
    figures = score(np.concatenate(truths), np.concatenate(preds))
    return EvaluationReport(
        family=family, seeds=tuple(seeds), symbols=symbols, bars=bars, **figures
    )


def family_table(reports: Sequence[tuple[EvaluationReport, bool]]) -> list[str]:
    """Markdown lines, one row per (report, held out): accuracy, each regime's recall, switch
    precision and recall."""
    first = reports[0][0]
    regimes = list(first.recall)
    lines = [
        f"seeds {list(first.seeds)}, {first.symbols} symbols x {first.bars} bars each; "
        "goals: accuracy >= 0.95, each recall and switch figure >= 0.90",
        "| family | held out | accuracy | "
        + " | ".join(f"recall {r}" for r in regimes)
        + " | switch precision | switch recall |",
        "|" + " --- |" * (len(regimes) + 5),
    ]
    for report, held_out in reports:
        recalls = " | ".join(f"{report.recall[r]:.3f}" for r in regimes)
        lines.append(
            f"| {report.family} | {'yes' if held_out else 'no'} | {report.accuracy:.3f} | "
            f"{recalls} | {report.switch_precision:.3f} | {report.switch_recall:.3f} |"
        )
    return lines


def held_out_config(
    family: str,
    seeds: Sequence[int] = (1, 2, 3),
    symbols: int = 200,
    bars: int = 2000,
    config: RegimeConfig | None = None,
) -> RegimeConfig:
    """``config`` with the model (means, stds, transitions) refitted on every family but
    ``family``, training ``seeds``: the leave-one-family-out model for scoring ``family``."""
    cfg = config if config is not None else RegimeConfig()
    others = tuple(name for name in FAMILIES if name != family)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    means, stds = fit_model(seeds, symbols, bars, cfg, families=others)
    transitions = fit_transitions(seeds, symbols, bars, families=others)
    return msgspec.structs.replace(cfg, means=means, stds=stds, transitions=transitions)


def fit_model(
    seeds: Sequence[int] = (1, 2, 3),
    symbols: int = 200,
    bars: int = 2000,
    config: RegimeConfig | None = None,
    skip: int = 4,
    families: Sequence[str] = (FITTED_ON,),
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Per-state feature means and stds from labelled training seeds of ``families`` (for
    RegimeConfig).

    BREAKOUT bars split into the squeeze and the expansion (``phase_states``). The first
    ``skip`` bars of each phase, where the slower features still lag, are left out, except in
    the squeeze, which is shorter than that: all its bars count, lag included, as the filter
    sees them. Segments cut by the sample's edge are left out.
    """
    cfg = config if config is not None else RegimeConfig()
    n_state = len(STATE_REGIME)
    collected: list[list[NDArray[np.float64]]] = [[] for _ in range(n_state)]
    for family, seed in itertools.product(families, seeds):
        sample = family_sample(family, seed, symbols, bars)
        feats = compute_features(sample.close, sample.high, sample.low, sample.volume, cfg)
        for i in range(symbols):
            row = sample.truth[i]
            states = phase_states(row)
            edges = [0, *switches(row).tolist(), row.shape[0]]
            for a, b in itertools.pairwise(edges[1:-1]):  # whole segments only
                state, seg = states[a:b], feats[i, a:b]
                # Bars since the phase began (the expansion begins after the squeeze).
                age = np.arange(b - a) - np.where(state == 4, SQUEEZE_BARS, 0)
                keep = np.isfinite(seg).all(axis=1) & ((age >= skip) | (state == 3))
                for s in range(n_state):
                    collected[s].append(seg[keep & (state == s)])
    means: list[tuple[float, ...]] = []
    stds: list[tuple[float, ...]] = []
    for s in range(n_state):
        data = np.concatenate(collected[s]) if collected[s] else np.zeros((0, N_FEATURES))
        means.append(tuple(round(float(x), 4) for x in data.mean(axis=0)))
        stds.append(tuple(round(max(float(x), 1e-3), 4) for x in data.std(axis=0)))
    return tuple(means), tuple(stds)


def phase_states(row: Labels) -> NDArray[np.int64]:
    """A true label row as model states: BREAKOUT bars split into the squeeze (state 3: the
    first ``SQUEEZE_BARS`` of a segment, as the generator builds it) and the expansion (state
    4); segments cut by the row's edges are -1 (their phase is unknown)."""
    states = np.asarray(row).astype(np.int64)
    edges = [0, *switches(row).tolist(), states.shape[0]]
    for a, b in itertools.pairwise(edges):
        if states[a] != 3:
            continue
        if a == 0 or b == states.shape[0]:
            states[a:b] = -1
        else:
            states[a + SQUEEZE_BARS : b] = 4
    return states


def fit_transitions(
    seeds: Sequence[int] = (1, 2, 3),
    symbols: int = 200,
    bars: int = 2000,
    families: Sequence[str] = (FITTED_ON,),
) -> tuple[tuple[float, ...], ...]:
    """The per-bar state transition matrix counted on labelled training seeds of ``families`` (for
    ``RegimeConfig.transitions``): supervised HMM training, so the filter's priors on how long
    each regime lasts and what follows it are the market's, not guesses."""
    n = len(STATE_REGIME)
    counts = np.zeros((n, n))
    for family, seed in itertools.product(families, seeds):
        truth = family_sample(family, seed, symbols, bars).truth
        for row in truth:
            states = phase_states(row)
            ok = (states[:-1] >= 0) & (states[1:] >= 0)
            np.add.at(counts, (states[:-1][ok], states[1:][ok]), 1.0)
    rows = counts.sum(axis=1, keepdims=True)
    matrix = counts / np.where(rows > 0, rows, 1.0)
    return tuple(tuple(round(float(x), 4) for x in r) for r in matrix)


# --- CSV detection ----------------------------------------------------------------------------


def detect_csv(
    input_path: str | Path, output_path: str | Path, config: RegimeConfig | None = None
) -> int:
    """Label every accepted bar of a candle CSV (``real.read_labelled``, then
    ``real.write_labels``); returns the number of rows written."""
    return write_labels(read_labelled(input_path, config), output_path).written
