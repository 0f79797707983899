"""Regime classification over (symbols, bars) float64 arrays, full (``classify``) or one bar at
a time (``RegimeTracker``), and the market-wide regime: the Python layer in front of the
kernels in ``numerics``, which compute the model defined in ``model``.

``classify`` and ``RegimeTracker.update`` run the same block step, so a tracker's labels and
confidences are bit-identical to a full classification of the whole series.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import Regime
from quantumtrade.regime.model import N_FEATURES, NO_LABEL, REGIME_ORDER, RegimeConfig
from quantumtrade.regime.numerics import (
    LANES,
    block_size,
    classify_kernel,
    features_kernel,
    kernel_params,
    labels_kernel,
    new_state,
    place_lanes,
    update_kernel,
    update_kernel_serial,
)
from quantumtrade.scoring.jit import PARALLEL_MIN_ROWS, by_rows

Array = NDArray[np.float64]


class RegimeResult(msgspec.Struct, frozen=True):
    labels: NDArray[np.int8]
    """(symbols, bars) regime codes in REGIME_ORDER; -1 before warm-up."""
    confidence: NDArray[np.float32]
    """(symbols, bars) posterior of the published label, in [0, 1]; 0 before warm-up. float32:
    the filter computes it in float32, and a float64 copy would double the largest output of a
    full classification (40 MB at 5,000 x 1,000) for no information."""


# Blocks per chunk of a classification's threads: handed out one at a time as threads free up
# (numba's default splits the blocks into one equal share per thread up front, so a thread that
# the shared machine preempts holds the whole call back; measured: the same best time, a worst
# of 15 calls 52 ms instead of 91).
_CHUNK = 1


def _bars(name: str, a: NDArray[Any]) -> Array:
    if a.ndim != 2:
        raise ValueError(f"{name} must be (symbols, bars), got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)


def _columns(
    close: NDArray[Any], high: NDArray[Any], low: NDArray[Any], volume: NDArray[Any]
) -> tuple[Array, Array, Array, Array]:
    c, h, lo, v = (
        _bars("close", close),
        _bars("high", high),
        _bars("low", low),
        _bars("volume", volume),
    )
    if not (c.shape == h.shape == lo.shape == v.shape):
        raise ValueError("close, high, low and volume must have the same shape")
    return c, h, lo, v


def compute_features(
    close: NDArray[Any],
    high: NDArray[Any],
    low: NDArray[Any],
    volume: NDArray[Any],
    config: RegimeConfig,
) -> Array:
    """The (symbols, bars, 5) feature array (all five, whatever the weights); NaN before
    warm-up."""
    c, h, lo, v = _columns(close, high, low, volume)
    out = np.empty((c.shape[0], c.shape[1], N_FEATURES))
    features_kernel(c, h, lo, v, kernel_params(config, need_all=True), out)
    return out


def label_features(features: Array, config: RegimeConfig) -> RegimeResult:
    """Labels and confidence from precomputed features (see ``compute_features``)."""
    feats = np.ascontiguousarray(features, dtype=np.float64)
    if feats.ndim != 3 or feats.shape[2] != N_FEATURES:
        raise ValueError(f"features must be (symbols, bars, {N_FEATURES})")
    n_sym, n_bar, _ = feats.shape
    labels = np.empty((n_sym, n_bar), dtype=np.int8)
    confidence = np.empty((n_sym, n_bar), dtype=np.float32)
    labels_kernel(feats, kernel_params(config), labels, confidence)
    return RegimeResult(labels=labels, confidence=confidence)


def classify(
    close: NDArray[Any],
    high: NDArray[Any],
    low: NDArray[Any],
    volume: NDArray[Any],
    config: RegimeConfig | None = None,
) -> RegimeResult:
    """Regime label and confidence for every bar of every symbol."""
    cfg = config if config is not None else RegimeConfig()
    c, h, lo, v = _columns(close, high, low, volume)
    prm = kernel_params(cfg)
    labels = np.empty(c.shape, dtype=np.int8)
    confidence = np.empty(c.shape, dtype=np.float32)
    state = np.empty(((c.shape[0] + LANES - 1) // LANES, block_size(cfg)))
    with numba.parallel_chunksize(_CHUNK):
        classify_kernel(c, h, lo, v, prm, labels, confidence, state)
    return RegimeResult(labels=labels, confidence=confidence)


class RegimeTracker:
    """Each symbol's regime kept up to date one bar at a time, in O(symbols) per bar.

    ``reset`` classifies a window (like ``classify``) and keeps every symbol's final state;
    ``update`` then takes one new bar per symbol, shaped (symbols,), and returns the labels and
    confidences of that bar, equal to what ``classify`` over the whole series would give for it.
    The state is kept in ``classify``'s block layout (``LANES`` symbols per block), so the
    update runs the very same block step.
    """

    def __init__(self, config: RegimeConfig | None = None, symbols: int = 0) -> None:
        self.config = config if config is not None else RegimeConfig()
        self._prm = kernel_params(self.config)
        self._state = new_state(symbols, self.config)
        self.labels = np.full(symbols, NO_LABEL, dtype=np.int8)
        """Each symbol's current label (-1: none yet)."""
        self.confidence = np.zeros(symbols)
        """Each symbol's confidence on its newest bar (0 when that bar carried the label)."""
        self._all_active = np.ones(0, dtype=np.bool_)
        """``update``'s ``active`` when none is given (every row), kept between calls (writable,
        as the kernel's compiled signature takes it; the kernel only reads it)."""

    @property
    def symbols(self) -> int:
        return int(self.labels.shape[0])

    def resize(self, symbols: int) -> None:
        """Grow to ``symbols`` rows; the new rows start from an empty history."""
        n = self.symbols
        if symbols < n:
            raise ValueError(f"cannot shrink a tracker from {n} to {symbols} symbols")
        if symbols == n:
            return
        state = new_state(symbols, self.config)
        # Lanes past the last symbol never step, so the old blocks carry over as they are.
        state[: self._state.shape[0]] = self._state
        self._state = state
        self.labels = np.concatenate([self.labels, np.full(symbols - n, NO_LABEL, np.int8)])
        self.confidence = np.concatenate([self.confidence, np.zeros(symbols - n)])

    def reset(
        self,
        close: NDArray[Any],
        high: NDArray[Any],
        low: NDArray[Any],
        volume: NDArray[Any],
        rows: NDArray[np.int64] | None = None,
    ) -> None:
        """Classify (symbols, bars) windows from scratch and keep the state: of every symbol
        (``rows`` None; the tracker takes the arrays' symbol count) or of the given rows only,
        whose windows the arrays hold in that order."""
        c, h, lo, v = _columns(close, high, low, volume)
        n = c.shape[0]
        if rows is None:
            self._state = new_state(n, self.config)
            self.labels = np.full(n, NO_LABEL, dtype=np.int8)
            self.confidence = np.zeros(n)
        idx = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        if idx.shape != (n,) or (n and (idx.min() < 0 or idx.max() >= self.symbols)):
            raise ValueError("rows must name one existing tracker row per window")
        labels = np.empty((n, 1), dtype=np.int8)
        confidence = np.empty((n, 1), dtype=np.float32)
        state = new_state(n, self.config)
        if c.shape[1]:
            with numba.parallel_chunksize(_CHUNK):
                classify_kernel(c, h, lo, v, self._prm, labels, confidence, state)
        else:
            labels[:] = NO_LABEL
            confidence[:] = 0.0
        if rows is None:
            self._state = state
        else:
            place_lanes(self._state, state, idx, self.config)
        self.labels[idx] = labels[:, 0]
        self.confidence[idx] = confidence[:, 0]

    def update(
        self,
        close: NDArray[Any],
        high: NDArray[Any],
        low: NDArray[Any],
        volume: NDArray[Any],
        active: NDArray[np.bool_] | None = None,
    ) -> tuple[NDArray[np.int8], Array]:
        """One new bar per symbol (arrays shaped (symbols,)); symbols with ``active`` False (if
        given) have no new bar and keep their state. Returns (labels, confidence), the
        tracker's own arrays (copy them to keep them)."""
        n = self.symbols
        cols = []
        for name, a in (("close", close), ("high", high), ("low", low), ("volume", volume)):
            arr = np.ascontiguousarray(a, dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"{name} must be shaped ({n},), got {arr.shape}")
            cols.append(arr)
        if active is None:
            act = self._all_active
            if act.shape != (n,):
                act = self._all_active = np.ones(n, dtype=np.bool_)
        else:
            act = np.ascontiguousarray(active, dtype=np.bool_)
            if act.shape != (n,):
                raise ValueError(f"active must be shaped ({n},), got {act.shape}")
        c, h, lo, v = cols
        kernel = by_rows(update_kernel, update_kernel_serial, n)
        kernel(c, h, lo, v, act, self._prm, self.labels, self.confidence, self._state)
        return self.labels, self.confidence


def market_regime(
    labels_last: NDArray[Any], confidence_last: NDArray[Any]
) -> tuple[Regime | None, float]:
    """Market-wide regime: the confidence-weighted mode of the symbols' current labels.

    The confidence is the winner's share of the total weight; (None, 0.0) when no symbol has a
    label yet.
    """
    labels = np.asarray(labels_last).ravel()
    conf = np.asarray(confidence_last, dtype=np.float64).ravel()
    if labels.shape != conf.shape:
        raise ValueError("labels_last and confidence_last must have the same length")
    valid = (labels >= 0) & (labels < len(REGIME_ORDER)) & np.isfinite(conf)
    weights = np.bincount(
        labels[valid].astype(np.int64),
        weights=conf[valid].clip(0.0, 1.0),
        minlength=len(REGIME_ORDER),
    )
    total = float(weights.sum())
    if total <= 0.0:
        return None, 0.0
    winner = int(weights.argmax())
    return REGIME_ORDER[winner], float(weights[winner]) / total


def warm_up() -> None:
    """Compile the kernels on a tiny input."""
    rng = np.random.default_rng(0)
    close = np.exp(np.cumsum(0.01 * rng.standard_normal((1, 40)), axis=1))
    cfg = RegimeConfig(warmup=20, history=20)
    classify(close, close * 1.01, close * 0.99, np.ones_like(close), cfg)
    for n in (1, PARALLEL_MIN_ROWS):  # both builds of the per-bar update
        rows = np.repeat(close, n, axis=0)
        tracker = RegimeTracker(cfg)
        tracker.reset(rows, rows * 1.01, rows * 0.99, np.ones_like(rows))
        one = rows[:, -1].copy()
        tracker.update(one, one * 1.01, one * 0.99, np.ones_like(one))
