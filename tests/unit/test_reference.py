"""Reference indicator kernels against slow, obvious references (and TA-Lib for the edge
cases)."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import talib
from numpy.typing import NDArray

from quantumtrade.scoring import reference

RTOL = 1e-9
Array = NDArray[np.float64]


def walks(seed: int, n_sym: int = 7, n_bar: int = 160) -> tuple[Array, Array, Array, Array]:
    """(high, low, close, volume) random walks: padded, very short, empty and full rows."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_sym, n_bar)), axis=1))
    high = close * (1.0 + rng.uniform(0.0, 0.02, close.shape))
    low = close * (1.0 - rng.uniform(0.0, 0.02, close.shape))
    volume = rng.lognormal(3.0, 1.0, close.shape)
    for a in (high, low, close, volume):
        a[1, :40] = np.nan  # padded
        a[2, : n_bar - 5] = np.nan  # shorter than every period used here
        a[3, :] = np.nan  # no bars at all
        a[4, : n_bar - 30] = np.nan  # just past the longest warm-up
    return high, low, close, volume


def start_of(*rows: Array) -> int:
    ok = ~np.any([np.isnan(r) for r in rows], axis=0)
    return int(np.argmax(ok)) if ok.any() else rows[0].size


def assert_close(ours: Array, ref: Array, atol: float = 0.0) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=atol, equal_nan=True)


def rows(ref: Callable[..., Array], *arrays: Array) -> Array:
    return np.vstack([ref(*r) for r in zip(*arrays, strict=True)])


# --- slow, obvious references -------------------------------------------------------------


def sma_ref(x: Array, p: int) -> Array:
    out = np.full(x.size, np.nan)
    s = start_of(x)
    for j in range(s + p - 1, x.size):
        out[j] = np.mean(x[j - p + 1 : j + 1])
    return out


def wilder(values: Array, p: int) -> Array:
    """Mean of the first p values, then avg = (avg * (p - 1) + v) / p."""
    out = np.full(values.size, np.nan)
    if values.size >= p:
        out[p - 1] = np.mean(values[:p])
        for j in range(p, values.size):
            out[j] = (out[j - 1] * (p - 1) + values[j]) / p
    return out


def rsi_ref(x: Array, p: int) -> Array:
    out = np.full(x.size, np.nan)
    s = start_of(x)
    change = np.diff(x[s:])
    gain = wilder(np.maximum(change, 0.0), p)
    loss = wilder(np.maximum(-change, 0.0), p)
    total = gain + loss
    out[s + 1 :] = np.where(total == 0.0, 0.0, 100.0 * gain / np.where(total == 0, 1, total))
    return out


def true_range(h: Array, lo: Array, c: Array) -> Array:
    """True range of bars 1.. (index k is bar k + 1)."""
    prev = c[:-1]
    tr: Array = np.maximum.reduce([h[1:] - lo[1:], np.abs(h[1:] - prev), np.abs(lo[1:] - prev)])
    return tr


def atr_ref(h: Array, lo: Array, c: Array, p: int) -> Array:
    out = np.full(c.size, np.nan)
    s = start_of(h, lo, c)
    out[s + 1 :] = wilder(true_range(h[s:], lo[s:], c[s:]), p)
    return out


def adx_ref(h: Array, lo: Array, c: Array, p: int) -> Array:
    """Wilder's ADX: DM/TR sums over p - 1 bars, then s - s/p + today; ADX = mean of p DX."""
    out = np.full(c.size, np.nan)
    s = start_of(h, lo, c)
    h, lo, c = h[s:], lo[s:], c[s:]
    n = c.size
    if n < 2 * p:
        return out
    up, down = np.diff(h), -np.diff(lo)
    plus = np.where((up > 0) & (up > down), up, 0.0)
    minus = np.where((down > 0) & (down > up), down, 0.0)
    tr = true_range(h, lo, c)
    sp, sm, st = plus[: p - 1].sum(), minus[: p - 1].sum(), tr[: p - 1].sum()
    dx = []
    for k in range(p - 1, n - 1):
        sp, sm, st = sp - sp / p + plus[k], sm - sm / p + minus[k], st - st / p + tr[k]
        pdi, mdi = 100 * sp / st, 100 * sm / st
        dx.append(100 * abs(pdi - mdi) / (pdi + mdi))
    adx = np.mean(dx[:p])
    out[s + 2 * p - 1] = adx
    for k in range(p, len(dx)):
        adx = (adx * (p - 1) + dx[k]) / p
        out[s + p + k] = adx
    return out


def bbw_ref(x: Array, p: int, nbdev: float) -> Array:
    out = np.full(x.size, np.nan)
    for j in range(start_of(x) + p - 1, x.size):
        w = x[j - p + 1 : j + 1]
        out[j] = 2.0 * nbdev * np.std(w) / np.mean(w)
    return out


def fma(a: float, b: float, c: float) -> float:
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def ema_fma(x: Array, p: int) -> Array:
    """TA-Lib 0.8's EMA: SMA seed, then fma(x - prev, k, prev)."""
    out = np.full(x.size, np.nan)
    out[p - 1] = sum(x[:p]) / p
    k = 2.0 / (p + 1)
    for j in range(p, x.size):
        out[j] = fma(x[j] - out[j - 1], k, out[j - 1])
    return out


def macd_ref(x: Array, fast: int, slow: int, signal: int) -> tuple[Array, Array, Array]:
    nan = np.full(x.size, np.nan)
    s = start_of(x)
    first = s + slow + signal - 2
    if first >= x.size:
        return nan, nan.copy(), nan.copy()
    x = x[s:]
    line = ema_fma(x[slow - fast :], fast)[fast - 1 :] - ema_fma(x, slow)[slow - 1 :]
    sig = ema_fma(line, signal)
    outs = [np.full(s + slow - 1, np.nan), np.full(s + slow - 1, np.nan)]
    line_out = np.concatenate([outs[0], line])
    sig_out = np.concatenate([outs[1], sig])
    line_out[:first] = np.nan
    return line_out, sig_out, line_out - sig_out


def vol_ref(x: Array, w: int) -> Array:
    out = np.full(x.size, np.nan)
    r = np.log(x[1:] / x[:-1])
    for j in range(start_of(x) + w, x.size):
        out[j] = np.std(r[j - w : j], ddof=1)
    return out


def zscore_ref(v: Array, w: int) -> Array:
    out = np.full(v.size, np.nan)
    for j in range(start_of(v) + w - 1, v.size):
        win = v[j - w + 1 : j + 1]
        sd = np.std(win)
        out[j] = 0.0 if sd == 0 else (v[j] - win.mean()) / sd
    return out


def roc_ref(x: Array, p: int) -> Array:
    out = np.full(x.size, np.nan)
    for j in range(start_of(x) + p, x.size):
        out[j] = 0.0 if x[j - p] == 0 else (x[j] / x[j - p] - 1.0) * 100.0
    return out


# --- kernels against the references -------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_price_indicators_match_references(seed: int) -> None:
    high, low, close, _ = walks(seed)
    for p in (1, 3, 14):
        assert_close(
            reference.compute_sma(close, period=p), rows(lambda x, p=p: sma_ref(x, p), close)
        )
        assert_close(
            reference.compute_roc(close, period=p), rows(lambda x, p=p: roc_ref(x, p), close)
        )
        assert_close(
            reference.compute_rsi(close, period=p), rows(lambda x, p=p: rsi_ref(x, p), close)
        )
        assert_close(
            reference.compute_atr(high, low, close, period=p),
            rows(lambda h, lo, c, p=p: atr_ref(h, lo, c, p), high, low, close),
        )
    for p in (2, 5, 14):
        assert_close(
            reference.compute_adx(high, low, close, period=p),
            rows(lambda h, lo, c, p=p: adx_ref(h, lo, c, p), high, low, close),
        )
        assert_close(
            reference.compute_bbands_width(close, period=p, nbdev=2.0),
            rows(lambda x, p=p: bbw_ref(x, p, 2.0), close),
        )


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (3, 5, 2), (1, 4, 1)])
def test_macd_matches_reference(fast: int, slow: int, signal: int) -> None:
    _, _, close, _ = walks(4)
    ours = reference.compute_macd(close, fast=fast, slow=slow, signal=signal)
    refs = [macd_ref(row, fast, slow, signal) for row in close]
    for k in range(3):
        np.testing.assert_array_equal(ours[k], np.vstack([r[k] for r in refs]))


@pytest.mark.parametrize("window", [2, 5, 20])
def test_vol_and_zscore_match_numpy(window: int) -> None:
    _, _, close, volume = walks(5)
    volume[0, 50:80] = 0.0  # a flat stretch: z = 0
    assert_close(
        reference.compute_realized_vol(close, window=window),
        rows(lambda x: vol_ref(x, window), close),
    )
    # z is O(1) and crosses 0: an absolute floor of 1e-9 beside the relative bound.
    assert_close(
        reference.compute_volume_zscore(volume, window=window),
        rows(lambda v: zscore_ref(v, window), volume),
        atol=1e-9,
    )


# --- edge cases ---------------------------------------------------------------------------


def test_period_longer_than_the_row_is_all_nan() -> None:
    high, low, close, volume = walks(6, n_bar=10)
    assert np.isnan(reference.compute_sma(close, period=11)).all()
    assert np.isnan(reference.compute_rsi(close, period=10)).all()
    assert np.isnan(reference.compute_atr(high, low, close, period=10)).all()
    assert np.isnan(reference.compute_adx(high, low, close, period=6)).all()
    assert np.isnan(reference.compute_bbands_width(close, period=11, nbdev=2.0)).all()
    assert all(np.isnan(a).all() for a in reference.compute_macd(close, fast=3, slow=6, signal=6))
    assert np.isnan(reference.compute_realized_vol(close, window=10)).all()
    assert np.isnan(reference.compute_volume_zscore(volume, window=11)).all()
    assert np.isnan(reference.compute_roc(close, period=10)).all()


def test_constant_prices_follow_talib() -> None:
    """Flat prices: RSI 0 (TA-Lib's choice for 0/0), ATR 0, ADX 0, width 0, MACD 0, ROC 0."""
    c = np.full(60, 123.45)
    x = c[None, :]
    assert_close(reference.compute_rsi(x, period=14)[0], talib.RSI(c, 14))
    assert_close(reference.compute_atr(x, x, x, period=14)[0], talib.ATR(c, c, c, 14))
    assert_close(reference.compute_adx(x, x, x, period=14)[0], talib.ADX(c, c, c, 14))
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
    assert_close(
        reference.compute_bbands_width(x, period=20, nbdev=2.0)[0], (upper - lower) / middle
    )
    for ours, theirs in zip(
        reference.compute_macd(x, fast=12, slow=26, signal=9),
        talib.MACD(c, 12, 26, 9),
        strict=True,
    ):
        assert_close(ours[0], theirs)
    assert_close(reference.compute_roc(x, period=10)[0], talib.ROC(c, 10))


def test_zero_price_and_zero_volume() -> None:
    """ROC over a zero price is 0 as in TA-Lib; all-zero volume has z-score 0, not NaN."""
    c = np.array([0.0, 1.0, 2.0, 0.0, 3.0, 3.0, 0.0, 5.0])
    assert_close(reference.compute_roc(c[None, :], period=1)[0], talib.ROC(c, 1))
    z = reference.compute_volume_zscore(np.zeros((2, 30)), window=10)
    assert np.isnan(z[:, :9]).all() and (z[:, 9:] == 0.0).all()


def test_gap_inside_series_propagates_like_talib() -> None:
    high, low, close, _ = walks(7, n_bar=80)
    high, low, close = high[:1].copy(), low[:1].copy(), close[:1].copy()
    for a in (high, low, close):
        a[0, 50] = np.nan
    h, lo, c = high[0], low[0], close[0]
    assert_close(reference.compute_sma(close, period=5)[0], talib.SMA(c, 5))
    assert_close(reference.compute_rsi(close, period=5)[0], talib.RSI(c, 5))
    assert_close(reference.compute_atr(high, low, close, period=5)[0], talib.ATR(h, lo, c, 5))
    assert_close(reference.compute_adx(high, low, close, period=5)[0], talib.ADX(h, lo, c, 5))
    assert_close(reference.compute_roc(close, period=5)[0], talib.ROC(c, 5))


def test_python_layer_checks_and_copies() -> None:
    _, _, close, _ = walks(8)
    with pytest.raises(TypeError):
        reference.compute_sma(close.astype(np.float32), period=3)
    with pytest.raises(ValueError):
        reference.compute_sma(close[0], period=3)
    with pytest.raises(ValueError):
        reference.compute_sma(close, period=0)
    with pytest.raises(ValueError):
        reference.compute_atr(close, close[:, 1:], close, period=3)
    with pytest.raises(ValueError):
        reference.compute_realized_vol(close, window=1)
    strided = np.asfortranarray(close)[:, ::2]
    assert_close(
        reference.compute_sma(strided, period=3),
        reference.compute_sma(np.ascontiguousarray(strided), period=3),
    )


def test_warm_up_compiles_everything() -> None:
    reference.warm_up()
    kernels: tuple[Any, ...] = (
        reference.ema,
        reference.log_return_vol,
        reference.momentum,
        reference.score_last,
        reference.sma,
        reference.rsi,
        reference.atr,
        reference.adx,
        reference.bbands_width,
        reference.macd,
        reference.realized_vol,
        reference.volume_zscore,
        reference.roc,
    )
    for kernel in kernels:
        assert kernel.signatures, kernel
    assert math.isfinite(float(reference.compute_rsi(np.ones((1, 20)), period=3)[0, -1]))
