"""Per-symbol market regime classifier over (symbols, bars) float64 arrays.

Each bar gets five features, each measured against the symbol's own rolling history so one set
of parameters serves a BTC and a thin altcoin alike:

0. volatility level: log of a fast EMA of the bar's log high/low range, minus the rolling
   median of the log range (a rolling quantile, so the threshold adapts per symbol);
1. volatility change: log(fast EMA of range / slow EMA of range), expansion > 0;
2. trend persistence: Kaufman efficiency ratio of the closes over ``er_window`` bars;
3. range compression: the percentile of the current Bollinger width within its rolling window;
4. volume surge: a fast EMA of log quote volume (volume · close) minus its rolling median.

A diagonal-Gaussian model of five market states (TRENDING, RANGING, VOLATILE, and BREAKOUT's
two phases: the compressed range, then the expansion), with a Huber penalty so one odd bar
cannot outvote a regime, feeds a forward filter (an HMM with sticky states), whose posterior
summed per regime gives the raw label (the most probable regime) and its confidence. The level
features also carry a per-symbol offset learnt online from the posterior-weighted residuals, which
removes the bias of a short history's median. The stability rule then holds the published label
until another one has been the raw label with confidence >= ``min_confidence`` for ``min_dwell``
consecutive bars. Everything is causal: bar ``j``'s label depends only on bars ``<= j``.

Label codes follow ``REGIME_ORDER`` (the synthetic market's order): 0 TRENDING, 1 RANGING,
2 VOLATILE, 3 BREAKOUT; -1 before warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

import msgspec
import numba
import numpy as np
from numpy.typing import NDArray

from quantumtrade.events import Regime
from quantumtrade.scoring.kernels import _JIT

F = TypeVar("F", bound=Callable[..., Any])
Array = NDArray[np.float64]

REGIME_ORDER: tuple[Regime, ...] = (
    Regime.TRENDING,
    Regime.RANGING,
    Regime.VOLATILE,
    Regime.BREAKOUT,
)
NO_LABEL = -1
N_FEATURES = 5
# The model's market states and the regime code each one reports (BREAKOUT has two phases).
STATE_REGIME: tuple[int, ...] = (0, 1, 2, 3, 3)

# Class-conditional means and standard deviations of the features, per state (rows: TRENDING,
# RANGING, VOLATILE, BREAKOUT compression, BREAKOUT expansion; columns: the features above),
# fitted on the labelled synthetic market, seeds 1-3 (see regime/evaluate.py: fit_model).
_MEANS: tuple[tuple[float, ...], ...] = (
    (0.0377, -0.1967, 0.3965, 0.5191, 0.0687),
    (-0.7118, -0.4317, 0.245, 0.2029, -0.5045),
    (1.0825, 0.0365, 0.3208, 0.823, 0.5413),
    (-1.0904, -0.7778, 0.2597, 0.1469, -0.6845),
    (0.9192, 0.2941, 0.4911, 0.8237, 1.139),
)
_STDS: tuple[tuple[float, ...], ...] = (
    (0.5593, 0.5425, 0.2554, 0.1877, 0.3723),
    (0.5637, 0.6304, 0.1865, 0.1514, 0.3755),
    (0.5685, 0.5272, 0.2273, 0.1365, 0.3761),
    (0.569, 0.7001, 0.205, 0.1778, 0.3748),
    (0.5535, 0.5051, 0.2647, 0.1524, 0.3838),
)


class RegimeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fast_span: Annotated[int, msgspec.Meta(ge=1)] = 1
    """EMA span of the fast volatility and volume measures (bars)."""
    slow_span: Annotated[int, msgspec.Meta(ge=2)] = 30
    """EMA span of the slow volatility measure that volatility change compares against."""
    er_window: Annotated[int, msgspec.Meta(ge=2)] = 10
    """Bars of the efficiency ratio."""
    bb_period: Annotated[int, msgspec.Meta(ge=2)] = 10
    """Bars of the Bollinger width (of log closes)."""
    history: Annotated[int, msgspec.Meta(ge=10)] = 1000
    """Rolling window (bars) of the per-symbol quantiles that features are measured against."""
    warmup: Annotated[int, msgspec.Meta(ge=10)] = 150
    """Bars before the first label: the rolling quantiles need this much history."""
    quantile: Annotated[float, msgspec.Meta(ge=0.05, le=0.95)] = 0.5
    """Which rolling quantile is a feature's baseline (0.5: the median)."""
    min_confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.8
    """A new label must reach this confidence on each bar of its dwell."""
    min_dwell: Annotated[int, msgspec.Meta(ge=1)] = 1
    """Consecutive bars a new label must hold before it replaces the current one."""
    switch_probability: Annotated[float, msgspec.Meta(gt=0.0, lt=0.5)] = 0.01
    """Per-bar probability that the market state changes (the forward filter's stickiness)."""
    breakout_expansion_probability: Annotated[float, msgspec.Meta(ge=0.0, lt=0.5)] = 0.1
    """Per-bar probability that a compressed BREAKOUT range starts expanding."""
    compression_entry_factor: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.3
    """Scales the probability of entering BREAKOUT's compressed phase."""
    offset_rate: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.015
    """Learning rate of the per-symbol offset of the level features (0: off)."""
    huber_threshold: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    """Beyond this many standard deviations a feature's penalty grows linearly, not squared."""
    weights: tuple[float, ...] = (1.2, 0.0, 0.6, 0.0, 1.2)
    """Weight of each feature in the state log-likelihood (0 drops a feature). Volatility
    change and the Bollinger percentile are computed but off by default: on the training
    seeds they lowered accuracy and switch precision."""
    means: tuple[tuple[float, ...], ...] = _MEANS
    """Per-state feature means (states: TRENDING, RANGING, VOLATILE, BREAKOUT x2)."""
    stds: tuple[tuple[float, ...], ...] = _STDS
    """Per-state feature standard deviations."""


class RegimeResult(msgspec.Struct, frozen=True):
    labels: NDArray[np.int8]
    """(symbols, bars) regime codes in REGIME_ORDER; -1 before warm-up."""
    confidence: Array
    """(symbols, bars) posterior of the published label, in [0, 1]; 0 before warm-up."""


def _kernel(fn: F) -> F:
    return cast(F, numba.jit(**_JIT, parallel=True)(fn))


def _helper(fn: F) -> F:
    return cast(F, numba.jit(**_JIT)(fn))


@_helper
def _sorted_insert(buf: Array, count: int, value: float) -> None:
    """Insert ``value`` into the sorted ``buf[:count]`` (capacity > count)."""
    k = np.searchsorted(buf[:count], value)
    for m in range(count, k, -1):
        buf[m] = buf[m - 1]
    buf[k] = value


@_helper
def _sorted_remove(buf: Array, count: int, value: float) -> None:
    """Remove one occurrence of ``value`` from the sorted ``buf[:count]``."""
    k = np.searchsorted(buf[:count], value)
    for m in range(k, count - 1):
        buf[m] = buf[m + 1]


@_helper
def _sorted_replace(buf: Array, count: int, old: float, new: float) -> None:
    """Replace one ``old`` by ``new`` in the sorted ``buf[:count]``, moving only the values
    ranked between them (a remove then an insert would move about ``count`` values)."""
    r = np.searchsorted(buf[:count], old)
    k = np.searchsorted(buf[:count], new)
    if k > r:  # new ranks above old: shift (old, new) down one, new goes just below k
        for m in range(r, k - 1):
            buf[m] = buf[m + 1]
        buf[k - 1] = new
    else:  # new ranks at or below old: shift [new, old) up one, new goes at k
        for m in range(r, k, -1):
            buf[m] = buf[m - 1]
        buf[k] = new


@_helper
def _push(buf: Array, ring: Array, count: int, j: int, value: float) -> int:
    """Add bar ``j``'s value to a rolling sorted window; returns the new count."""
    window = ring.shape[0]
    if count == window:
        _sorted_replace(buf, count, ring[j % window], value)
        ring[j % window] = value
        return count
    _sorted_insert(buf, count, value)
    ring[j % window] = value
    return count + 1


@_helper
def _quantile(buf: Array, count: int, q: float) -> float:
    pos = q * (count - 1)
    lo = int(pos)
    hi = min(lo + 1, count - 1)
    frac = pos - lo
    return float(buf[lo] * (1.0 - frac) + buf[hi] * frac)


@_kernel
def regime_features(
    close: Array,
    high: Array,
    low: Array,
    volume: Array,
    params: NDArray[np.int64],
    q: float,
    out: Array,
) -> None:
    """Features per bar into ``out`` (symbols, bars, 5); NaN before warm-up or at a bad bar.

    ``params`` = (fast_span, slow_span, er_window, bb_period, history, warmup).
    """
    fast_span, slow_span, er_window, bb_period, history, warmup = (
        params[0],
        params[1],
        params[2],
        params[3],
        params[4],
        params[5],
    )
    a_fast = 2.0 / (fast_span + 1.0)
    a_slow = 2.0 / (slow_span + 1.0)
    n_sym, n_bar = close.shape
    for i in numba.prange(n_sym):
        out[i, :, :] = np.nan
        buf_r = np.empty(history)
        ring_r = np.empty(history)
        buf_v = np.empty(history)
        ring_v = np.empty(history)
        buf_b = np.empty(history)
        ring_b = np.empty(history)
        n_r = 0
        n_v = 0
        n_b = 0
        b_seen = 0
        logc = np.full(n_bar, np.nan)
        ema_fast = np.nan
        ema_slow = np.nan
        ema_vol = np.nan
        seen = 0
        for j in range(n_bar):
            c = close[i, j]
            h = high[i, j]
            lo = low[i, j]
            v = volume[i, j]
            if not (c > 0.0 and h > 0.0 and lo > 0.0 and h >= lo and v >= 0.0):
                continue  # a bad or padded bar: skip it, the label carries
            logc[j] = math.log(c)
            rng = max(math.log(h / lo), 1e-12)
            qv = math.log(max(v * c, 1e-300))
            if seen == 0:
                ema_fast = rng
                ema_slow = rng
                ema_vol = qv
            else:
                ema_fast += a_fast * (rng - ema_fast)
                ema_slow += a_slow * (rng - ema_slow)
                ema_vol += a_fast * (qv - ema_vol)
            seen += 1
            n_r = _push(buf_r, ring_r, n_r, seen, math.log(rng))
            n_v = _push(buf_v, ring_v, n_v, seen, qv)
            # Bollinger width of log closes over bb_period (needs that many valid bars).
            bbw = np.nan
            if j >= bb_period - 1:
                s = 0.0
                s2 = 0.0
                ok = True
                for k in range(j - bb_period + 1, j + 1):
                    x = logc[k]
                    if math.isnan(x):
                        ok = False
                        break
                    s += x
                    s2 += x * x
                if ok:
                    mean = s / bb_period
                    var = max(s2 / bb_period - mean * mean, 0.0)
                    bbw = math.log(max(math.sqrt(var), 1e-12))
            pct = np.nan
            if not math.isnan(bbw):
                if n_b > 0:
                    pct = np.searchsorted(buf_b[:n_b], bbw) / n_b
                n_b = _push(buf_b, ring_b, n_b, b_seen, bbw)
                b_seen += 1
            er = np.nan
            if j >= er_window:
                path = 0.0
                ok = True
                for k in range(j - er_window + 1, j + 1):
                    d = logc[k] - logc[k - 1]
                    if math.isnan(d):
                        ok = False
                        break
                    path += abs(d)
                if ok:
                    net = abs(logc[j] - logc[j - er_window])
                    er = net / path if path > 0.0 else 0.0
            if seen < warmup:
                continue
            out[i, j, 0] = math.log(ema_fast) - _quantile(buf_r, n_r, q)
            out[i, j, 1] = math.log(ema_fast / ema_slow)
            out[i, j, 2] = er
            out[i, j, 3] = pct
            out[i, j, 4] = ema_vol - _quantile(buf_v, n_v, q)


@_kernel
def regime_labels(
    features: Array,
    means: Array,
    inv_stds: Array,
    log_norm: Array,
    weights: Array,
    transition: Array,
    state_regime: NDArray[np.int64],
    min_confidence: float,
    min_dwell: int,
    offset_rate: float,
    huber: float,
    labels: NDArray[np.int8],
    confidence: Array,
) -> None:
    """Forward-filtered state posterior, raw label, and the stability rule, per bar.

    The level features (0 and 4) also get a per-symbol offset learnt online (an EM step on the
    posterior-weighted residual): a short history's median is biased by whichever regimes it
    happened to hold, and the offset removes that bias as evidence accumulates.
    """
    n_sym, n_bar, n_feat = features.shape
    n_state = means.shape[0]
    for i in numba.prange(n_sym):
        loglik = np.empty(n_state)
        belief = np.full(n_state, 1.0 / n_state)
        prior = np.empty(n_state)
        post = np.zeros(4)
        current = -1
        candidate = -1
        held = 0
        offset = np.zeros(n_feat)
        n_seen = 0
        x_adj = np.empty(n_feat)
        for j in range(n_bar):
            f = features[i, j]
            if math.isnan(f[0]):
                labels[i, j] = current
                confidence[i, j] = 0.0
                continue
            for k in range(n_feat):
                x_adj[k] = f[k] - offset[k]
            best = -np.inf
            for s in range(n_state):
                ll = 0.0
                for k in range(n_feat):
                    x = x_adj[k]
                    if math.isnan(x):
                        continue
                    z = abs(x - means[s, k]) * inv_stds[s, k]
                    # Huber: a single odd bar (a doji's tiny range) must not outvote a regime.
                    penalty = 0.5 * z * z if z <= huber else huber * (z - 0.5 * huber)
                    ll += weights[k] * (log_norm[s, k] - penalty)
                loglik[s] = ll
                best = max(best, ll)
            total = 0.0
            for s in range(n_state):
                acc = 0.0
                for r in range(n_state):
                    acc += belief[r] * transition[r, s]
                prior[s] = acc * math.exp(loglik[s] - best)
                total += prior[s]
            post[:] = 0.0
            for s in range(n_state):
                belief[s] = prior[s] / total if total > 0.0 else 1.0 / n_state
                post[state_regime[s]] += belief[s]
            for k in (0, 4):
                if math.isnan(x_adj[k]):
                    continue
                residual = 0.0
                for s in range(n_state):
                    residual += belief[s] * (x_adj[k] - means[s, k])
                # A running mean at first (fast to converge), then an EMA (tracks changes).
                offset[k] += max(offset_rate, 1.0 / (n_seen + 20.0)) * residual
            n_seen += 1
            raw = 0
            for r in range(4):
                if post[r] > post[raw]:
                    raw = r
            if current < 0:
                current = raw
                held = 0
            elif raw != current and post[raw] >= min_confidence:
                if raw == candidate:
                    held += 1
                else:
                    candidate = raw
                    held = 1
                if held >= min_dwell:
                    current = raw
                    held = 0
                    candidate = -1
            else:
                candidate = -1
                held = 0
            labels[i, j] = current
            confidence[i, j] = min(max(post[current], 0.0), 1.0)


def _bars(name: str, a: NDArray[Any]) -> Array:
    if a.ndim != 2:
        raise ValueError(f"{name} must be (symbols, bars), got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)


def compute_features(
    close: NDArray[Any],
    high: NDArray[Any],
    low: NDArray[Any],
    volume: NDArray[Any],
    config: RegimeConfig,
) -> Array:
    """The (symbols, bars, 5) feature array; NaN before warm-up."""
    c, h, lo, v = (
        _bars("close", close),
        _bars("high", high),
        _bars("low", low),
        _bars("volume", volume),
    )
    if not (c.shape == h.shape == lo.shape == v.shape):
        raise ValueError("close, high, low and volume must have the same shape")
    params = np.array(
        [
            config.fast_span,
            config.slow_span,
            config.er_window,
            config.bb_period,
            config.history,
            config.warmup,
        ],
        dtype=np.int64,
    )
    out = np.empty((c.shape[0], c.shape[1], N_FEATURES))
    regime_features(c, h, lo, v, params, config.quantile, out)
    return out


def _transition(config: RegimeConfig) -> Array:
    """State transition matrix of the forward filter: sticky states, and BREAKOUT's compressed
    phase leading to its expansion."""
    n = len(STATE_REGIME)
    p = config.switch_probability
    a = np.full((n, n), p / (n - 1))
    np.fill_diagonal(a, 1.0 - p)
    # A compressed range is hard to tell from RANGING bar by bar, so entering it is made rarer.
    a[:, 3] *= config.compression_entry_factor
    a[3, 3] = 0.0
    a[3, 4] = 0.0
    a[3, 3] = 1.0 - a[3].sum() - config.breakout_expansion_probability
    a[3, 4] = config.breakout_expansion_probability
    for r in (0, 1, 2, 4):
        a[r, r] = 0.0
        a[r, r] = 1.0 - a[r].sum()
    return a


def _model(config: RegimeConfig) -> tuple[Array, Array, Array, Array]:
    means = np.asarray(config.means, dtype=np.float64)
    stds = np.asarray(config.stds, dtype=np.float64)
    weights = np.asarray(config.weights, dtype=np.float64)
    shape = (len(STATE_REGIME), N_FEATURES)
    if means.shape != shape or stds.shape != shape or weights.shape != (N_FEATURES,):
        raise ValueError(f"means and stds must be {shape}, weights ({N_FEATURES},)")
    if not (stds > 0).all():
        raise ValueError("stds must be positive")
    return means, 1.0 / stds, -np.log(stds), weights


def label_features(features: Array, config: RegimeConfig) -> RegimeResult:
    """Labels and confidence from precomputed features (see ``compute_features``)."""
    means, inv_stds, log_norm, weights = _model(config)
    n_sym, n_bar, _ = features.shape
    labels = np.empty((n_sym, n_bar), dtype=np.int8)
    confidence = np.empty((n_sym, n_bar))
    regime_labels(
        np.ascontiguousarray(features),
        means,
        inv_stds,
        log_norm,
        weights,
        _transition(config),
        np.asarray(STATE_REGIME, dtype=np.int64),
        config.min_confidence,
        config.min_dwell,
        config.offset_rate,
        config.huber_threshold,
        labels,
        confidence,
    )
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
    return label_features(compute_features(close, high, low, volume, cfg), cfg)


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
        labels[valid].astype(np.int64), weights=np.clip(conf[valid], 0.0, 1.0), minlength=4
    )
    total = float(weights.sum())
    if total <= 0.0:
        return None, 0.0
    winner = int(np.argmax(weights))
    return REGIME_ORDER[winner], float(weights[winner]) / total


def warm_up() -> None:
    """Compile the kernels on a tiny input."""
    rng = np.random.default_rng(0)
    close = np.exp(np.cumsum(0.01 * rng.standard_normal((1, 40)), axis=1))
    classify(
        close, close * 1.01, close * 0.99, np.ones_like(close), RegimeConfig(warmup=20, history=20)
    )
