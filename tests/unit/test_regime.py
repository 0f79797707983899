"""Regime engine: metrics on hand-made label rows, the stability rule, classify, detect_csv."""

from __future__ import annotations

import asyncio
import csv
import gzip
from pathlib import Path

import msgspec
import numpy as np
import pytest

from quantumtrade.clock import ManualClock
from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource
from quantumtrade.data.synthetic_kernel import SQUEEZE_BARS
from quantumtrade.events import Regime
from quantumtrade.regime.engine import classify, label_features, market_regime
from quantumtrade.regime.evaluate import (
    accuracy,
    detect_csv,
    evaluate,
    match_switches,
    phase_states,
    recall_counts,
    scored_mask,
    switch_counts,
    switches,
    synthetic_sample,
)
from quantumtrade.regime.model import N_FEATURES, NO_LABEL, REGIME_ORDER, RegimeConfig

T, R, V, B = 0, 1, 2, 3


def row(*codes: int) -> np.ndarray:
    return np.asarray(codes, dtype=np.int8)


def test_regime_order_is_documented_one() -> None:
    assert REGIME_ORDER == (Regime.TRENDING, Regime.RANGING, Regime.VOLATILE, Regime.BREAKOUT)


def test_config_forbids_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"min_dwel": 3}, RegimeConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"min_confidence": 1.5}, RegimeConfig)


def test_switches_ignore_unlabelled_bars() -> None:
    assert switches(row(-1, -1, T, T, R, R, V)).tolist() == [4, 6]


def test_accuracy_excludes_window_after_true_switch() -> None:
    truth = row(*([T] * 5 + [R] * 15))
    # Wrong on the 10 bars from the switch (bars 5..14), right elsewhere.
    pred = row(*([T] * 15 + [R] * 5))
    mask = scored_mask(truth, pred, window=10)
    assert mask[:5].all() and not mask[5:15].any() and mask[15:].all()
    assert accuracy(truth, pred, window=10) == (10, 10)
    # One more wrong bar, just past the window, counts.
    pred2 = row(*([T] * 16 + [R] * 4))
    assert accuracy(truth, pred2, window=10) == (9, 10)


def test_accuracy_skips_warm_up_bars() -> None:
    truth = row(T, T, T, T)
    pred = row(-1, -1, T, R)
    assert accuracy(truth, pred) == (1, 2)


def test_recall_per_regime() -> None:
    truth = row(T, T, T, T, V, V, V, V)
    pred = row(T, T, R, T, V, V, V, V)
    hits, totals = recall_counts(truth, pred, window=0)
    assert totals.tolist() == [4, 0, 4, 0]
    assert hits.tolist() == [3, 0, 4, 0]


def test_match_switches_one_to_one_within_tolerance() -> None:
    assert match_switches([100], [105, 108], tolerance=10) == 1  # one true, only one match
    assert match_switches([100, 104], [105], tolerance=10) == 1
    assert match_switches([100, 104], [95, 112], tolerance=10) == 2
    assert match_switches([100], [111], tolerance=10) == 0
    assert match_switches([100], [90], tolerance=10) == 1
    assert match_switches([], [5], tolerance=10) == 0


def test_switch_counts_over_labelled_bars() -> None:
    truth = row(T, T, R, R, R, R, R, R, R, R, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)
    # A switch at bar 2 comes before the first label (bar 3): not counted.
    pred = row(-1, -1, -1, R, R, R, R, R, R, R, R, R, R, R, R, R, R, R, R, R, R, R, R, V, V, V)
    true_n, detected_n, matched = switch_counts(truth, pred, tolerance=10)
    assert (true_n, detected_n, matched) == (1, 1, 0)  # detected 13 bars late
    assert switch_counts(truth, pred, tolerance=13) == (1, 1, 1)


def _constant_features(codes: list[int], config: RegimeConfig) -> np.ndarray:
    """Features exactly on a state's means, bar by bar (with big weights, the raw label)."""
    means = np.asarray(config.means)
    return np.ascontiguousarray(means[codes][None, :, :])


def test_brief_flip_shorter_than_min_dwell_keeps_label() -> None:
    cfg = RegimeConfig(
        min_dwell=3,
        min_confidence=0.5,
        refractory_bars=0,
        transitions=(),
        switch_probability=0.3,
        weights=(5.0,) * 5,
    )
    states = [T] * 20 + [V, V] + [T] * 20 + [V] * 6
    feats = _constant_features(states, cfg)
    assert feats.shape == (1, len(states), N_FEATURES)
    labels = label_features(feats, cfg).labels[0]
    assert (labels[:42] == T).all()  # the two VOLATILE bars did not change the label
    assert labels[-1] == V  # six bars did
    # It changed exactly after the third bar of the new regime.
    assert labels.tolist()[42:] == [T, T, V, V, V, V]


def test_min_dwell_one_follows_raw_label() -> None:
    cfg = RegimeConfig(
        min_dwell=1,
        min_confidence=0.5,
        refractory_bars=0,
        transitions=(),
        switch_probability=0.3,
        weights=(5.0,) * 5,
    )
    labels = label_features(_constant_features([T] * 5 + [V] * 3, cfg), cfg).labels[0]
    assert labels.tolist() == [T] * 5 + [V] * 3


def test_refractory_bars_need_more_confidence_after_a_switch() -> None:
    """Within ``refractory_bars`` of a switch the bar-by-bar evidence (confidence ~0.9 here)
    is not enough for another switch; after them it is."""
    base = dict(min_confidence=0.5, transitions=(), switch_probability=0.3, weights=(0.4,) * 5)
    states = [T] * 30 + [V] * 30 + [T] * 30
    quick = RegimeConfig(refractory_bars=0, **base)  # type: ignore[arg-type]
    slow = RegimeConfig(refractory_bars=40, refractory_confidence=0.999, **base)  # type: ignore[arg-type]
    feats = _constant_features(states, quick)
    fast_labels = label_features(feats, quick)
    assert fast_labels.labels[0, 35] == V and fast_labels.labels[0, -1] == T
    assert fast_labels.confidence[0, 35] < 0.999
    held = label_features(feats, slow).labels[0]
    # The first label is T at bar 0: the switch to V is refused until bar 40, then allowed.
    assert (held[:40] == T).all() and held[45] == V


def test_transitions_are_validated() -> None:
    bad = RegimeConfig(transitions=((0.5,) * 5,) * 4)
    with pytest.raises(ValueError, match="transitions"):
        classify(np.ones((1, 20)), np.ones((1, 20)), np.ones((1, 20)), np.ones((1, 20)), bad)


def test_phase_states_split_breakouts_and_drop_cut_segments() -> None:
    truth = row(*([B] * 6 + [R] * 4 + [B] * 15 + [T] * 3))
    states = phase_states(truth).tolist()
    assert states[:6] == [-1] * 6  # cut by the row's start: phase unknown
    assert states[6:10] == [R] * 4
    # The squeeze is the segment's first SQUEEZE_BARS, the rest is the expansion.
    assert states[10 : 10 + SQUEEZE_BARS] == [3] * SQUEEZE_BARS
    assert states[10 + SQUEEZE_BARS : 25] == [4] * (15 - SQUEEZE_BARS)
    assert states[25:] == [T] * 3


def _market(kind: str, bars: int, seed: int) -> tuple[np.ndarray, ...]:
    """One row whose second half is a clear trend or a clear range, the first half mixed."""
    rng = np.random.default_rng(seed)
    half = bars // 2
    # A history with all kinds of volatility, so the rolling baselines have something to hold.
    sigma = np.concatenate([np.repeat([0.01, 0.0045, 0.03, 0.01], half // 4), np.zeros(0)])
    mult = np.concatenate([np.repeat([1.1, 0.6, 1.8, 1.1], half // 4)])
    r = sigma * rng.standard_normal(half) + 0.0025 * (sigma == 0.01)
    log_close = np.cumsum(r)
    if kind == "trend":
        tail = log_close[-1] + np.cumsum(0.0025 + 0.01 * rng.standard_normal(half))
        tail_sigma, tail_mult = np.full(half, 0.01), np.full(half, 1.1)
    else:
        x = np.zeros(half)
        for j in range(1, half):
            x[j] = 0.85 * x[j - 1] + 0.0045 * rng.standard_normal()
        tail = log_close[-1] + x
        tail_sigma, tail_mult = np.full(half, 0.0045), np.full(half, 0.6)
    log_close = np.concatenate([log_close, tail])
    sig = np.concatenate([sigma, tail_sigma])
    mul = np.concatenate([mult, tail_mult])
    log_open = np.concatenate([[0.0], log_close[:-1]])
    close, open_ = np.exp(log_close), np.exp(log_open)
    wick = np.abs(rng.standard_normal((2, bars)))
    high = np.maximum(open_, close) * np.exp(0.5 * sig * wick[0])
    low = np.minimum(open_, close) * np.exp(-0.5 * sig * wick[1])
    volume = 1e5 / close * mul * np.exp(0.35 * rng.standard_normal(bars))
    return tuple(a[None, :] for a in (close, high, low, volume))


@pytest.mark.parametrize(("kind", "expected"), [("trend", T), ("range", R)])
def test_classify_clear_trend_and_range(kind: str, expected: int) -> None:
    bars = 1200
    close, high, low, volume = _market(kind, bars, seed=11)
    result = classify(close, high, low, volume, RegimeConfig())
    labels, conf = result.labels[0], result.confidence[0]
    assert result.labels.dtype == np.int8
    assert result.confidence.dtype == np.float32  # as the filter computes it
    assert (labels[: RegimeConfig().warmup - 1] == NO_LABEL).all()
    assert ((conf >= 0.0) & (conf <= 1.0)).all()
    tail = labels[bars // 2 + 20 :]
    assert np.mean(tail == expected) > 0.9


def test_classify_rejects_mismatched_shapes() -> None:
    a = np.ones((2, 50))
    with pytest.raises(ValueError, match="same shape"):
        classify(a, a, a, np.ones((2, 49)))
    with pytest.raises(ValueError, match="symbols, bars"):
        classify(np.ones(50), np.ones(50), np.ones(50), np.ones(50))


def test_market_regime_is_confidence_weighted_mode() -> None:
    labels = row(T, T, R, R, R, -1)
    conf = np.array([0.9, 0.9, 0.3, 0.3, 0.3, 1.0])
    regime, confidence = market_regime(labels, conf)
    assert regime is Regime.TRENDING
    assert confidence == pytest.approx(1.8 / 2.7)
    assert market_regime(row(-1, -1), np.zeros(2)) == (None, 0.0)


def _write_csv(
    path: Path, close: np.ndarray, high: np.ndarray, low: np.ndarray, vol: np.ndarray
) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for k in range(close.shape[0]):
            w.writerow(
                [1_700_000_000_000 + 3_600_000 * k, close[k], high[k], low[k], close[k], vol[k]]
            )


@pytest.mark.parametrize("name", ["bars.csv", "bars.csv.gz"])
def test_detect_csv_writes_one_row_per_bar(tmp_path: Path, name: str) -> None:
    close, high, low, volume = (a[0] for a in _market("trend", 400, seed=3))
    src = tmp_path / name
    _write_csv(src, close, high, low, volume)
    out = tmp_path / "out.csv"
    cfg = RegimeConfig(warmup=100, history=300)
    assert detect_csv(src, out, cfg) == 400
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["timestamp", "regime", "confidence"]
    assert len(rows) == 401
    assert rows[1][1:] == ["", ""]  # before warm-up
    names = {r.value for r in REGIME_ORDER}
    labelled = [r for r in rows[1:] if r[1]]
    assert labelled and all(r[1] in names and 0.0 <= float(r[2]) <= 1.0 for r in labelled)
    assert rows[-1][0] == str(1_700_000_000_000 + 3_600_000 * 399)


def test_detect_csv_names_missing_columns(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("timestamp,close\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        detect_csv(src, tmp_path / "out.csv")


def test_synthetic_sample_is_the_sources_bars_and_true_regimes() -> None:
    sample = synthetic_sample(seed=3, symbols=3, bars=120)
    cfg = SyntheticConfig(seed=3, symbols=3, bar_ms=60_000, history_bars=120)
    clock = ManualClock()
    src = SyntheticSource(cfg, clock)
    for i, symbol in enumerate(src.symbols()):
        bars = asyncio.run(src.fetch_bars(symbol, None, clock.now_ns() // 1_000_000))
        assert len(bars) == 120
        assert sample.close[i].tolist() == [b.close for b in bars]
        assert sample.high[i].tolist() == [b.high for b in bars]
        assert sample.low[i].tolist() == [b.low for b in bars]
        assert sample.volume[i].tolist() == [b.volume for b in bars]
        truth = [REGIME_ORDER[c] for c in sample.truth[i].tolist()]
        assert truth == [src.true_regime(symbol, b.ts_ms) for b in bars]


def test_evaluate_small_market_runs_and_scores() -> None:
    report = evaluate(seeds=(9,), symbols=4, bars=600)
    assert report.scored_bars > 0
    assert 0.0 <= report.accuracy <= 1.0
    assert set(report.recall) == {r.value for r in REGIME_ORDER}
    assert report.matched_switches <= min(report.true_switches, report.detected_switches)


def test_leading_nan_padding_is_unlabelled() -> None:
    close, high, low, volume = (a.copy() for a in _market("range", 800, seed=5))
    for a in (close, high, low, volume):
        a[0, :100] = np.nan
    result = classify(close, high, low, volume, RegimeConfig(warmup=100, history=300))
    labels = result.labels[0]
    assert (labels[:199] == NO_LABEL).all()
    assert (labels[200:] >= 0).all()
    assert np.isfinite(result.confidence).all()
