"""The fused scan kernel (``indicators.compute_scan``) against the reference kernels, one per
indicator."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from quantumtrade.scoring import indicators, reference
from tests.unit.test_reference import walks

Array = NDArray[np.float64]

# RSI, ATR and ADX step with reciprocals in the fused kernel (a division per bar each costs
# more than the rest of the step): within a few ulps of the per-indicator kernels.
FUSED_RTOL = 1e-12
RECIPROCAL = ("rsi", "atr", "adx")


def gappy(seed: int, n_bar: int = 220) -> tuple[Array, Array, Array, Array]:
    """``walks`` plus NaN gaps inside the series, in one column or all."""
    high, low, close, volume = walks(seed, n_bar=n_bar)
    close[5, 100] = np.nan  # close only: every close indicator and the TR/ADX path
    high[6, 120] = np.nan  # high only
    volume[0, 150] = np.nan  # volume only
    for a in (high, low, close, volume):
        a[6, 60] = np.nan  # a whole bar missing
    return high, low, close, volume


def per_indicator(
    high: Array, low: Array, close: Array, volume: Array, p: indicators.ScanParams
) -> dict[str, Array]:
    """Each scan output computed by its own kernel (the TA-Lib-checked ones)."""
    ema_fast, ema_slow = np.empty_like(close), np.empty_like(close)
    reference.ema(close, p.ema_fast, ema_fast)
    reference.ema(close, p.ema_slow, ema_slow)
    macd, signal, hist = reference.compute_macd(
        close, fast=p.macd_fast, slow=p.macd_slow, signal=p.macd_signal
    )
    score = np.full_like(close, np.nan)
    for t in range(1, close.shape[1] + 1):
        score[:, t - 1] = reference.compute_scores(
            close[:, :t], volume[:, :t], fast=p.ema_fast, slow=p.ema_slow, vol_window=p.vol_window
        )[0]
    return {
        "score": score,
        "vol": reference.compute_realized_vol(close, window=p.vol_window),
        "ema_fast": ema_fast,
        "ema_slow": ema_slow,
        "sma": reference.compute_sma(close, period=p.bb_period),
        "rsi": reference.compute_rsi(close, period=p.rsi),
        "atr": reference.compute_atr(high, low, close, period=p.atr),
        "adx": reference.compute_adx(high, low, close, period=p.adx),
        "bb_width": reference.compute_bbands_width(close, period=p.bb_period, nbdev=p.bb_nbdev),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "volume_z": reference.compute_volume_zscore(volume, window=p.zscore_window),
        "roc": reference.compute_roc(close, period=p.roc),
        "bars": np.cumsum(~np.isnan(close), axis=1).astype(np.float64),
    }


PARAM_SETS = [
    indicators.ScanParams(),
    indicators.ScanParams(
        ema_fast=3, ema_slow=5, vol_window=2, rsi=1, atr=1, adx=1, bb_period=1, bb_nbdev=1.0,
        macd_fast=1, macd_slow=4, macd_signal=1, zscore_window=1, roc=1,
    ),
    indicators.ScanParams(
        ema_fast=5, ema_slow=40, vol_window=7, rsi=3, atr=5, adx=2, bb_period=9, bb_nbdev=0.5,
        macd_fast=26, macd_slow=12, macd_signal=5, zscore_window=4, roc=30,
    ),
]  # fmt: skip


@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize("params", PARAM_SETS, ids=["default", "shortest", "swapped_macd"])
def test_fused_scan_equals_the_per_indicator_kernels(
    seed: int, params: indicators.ScanParams
) -> None:
    high, low, close, volume = gappy(seed)
    scan, series = indicators.compute_scan(high, low, close, volume, params, series=True)
    assert series is not None
    expected = per_indicator(high, low, close, volume, params)
    assert set(expected) == set(indicators.OUTPUTS)
    for k, name in enumerate(indicators.OUTPUTS):
        got, want = series[k], expected[name]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        if name in RECIPROCAL:
            np.testing.assert_allclose(got, want, rtol=FUSED_RTOL, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert not np.isnan(series).all(axis=(1, 2)).any()  # every output is exercised
    # The last-bar pass (no series, logs only where read) gives the series' last column.
    last, _ = indicators.compute_scan(high, low, close, volume, params)
    np.testing.assert_array_equal(last.values, series[:, :, -1].T)
    np.testing.assert_array_equal(scan.values, last.values)


def test_fused_scan_python_layer() -> None:
    high, low, close, volume = walks(13)
    with pytest.raises(TypeError):
        indicators.compute_scan(high, low, close.astype(np.float32), volume)
    with pytest.raises(ValueError, match="shape"):
        indicators.compute_scan(high, low, close, volume[:, 1:])
    with pytest.raises(ValueError, match="vol_window"):
        indicators.compute_scan(high, low, close, volume, indicators.ScanParams(vol_window=1))
    with pytest.raises(ValueError, match="bb_nbdev"):
        indicators.compute_scan(high, low, close, volume, indicators.ScanParams(bb_nbdev=-1.0))
    with pytest.raises(ValueError, match="rsi"):
        indicators.compute_scan(high, low, close, volume, indicators.ScanParams(rsi=0))
    empty = np.empty((0, 50))
    scan, _ = indicators.compute_scan(empty, empty, empty, empty)
    assert scan.values.shape == (0, len(indicators.OUTPUTS))
    no_bars = np.empty((3, 0))
    scan, _ = indicators.compute_scan(no_bars, no_bars, no_bars, no_bars)
    assert np.isnan(scan.values[:, : indicators.OUT_BARS]).all()
    assert (scan.values[:, indicators.OUT_BARS] == 0).all()


def test_warm_up_scan_compiles_the_scan_kernels() -> None:
    indicators.warm_up_scan()
    assert indicators.scan_block_kernel.signatures
    assert indicators.resume_block_kernel.signatures
