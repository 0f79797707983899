"""The allocator's parts against references: Ledoit-Wolf against scikit-learn, risk parity
against the definition (equal risk contributions) and a brute-force search, clusters against
a planted block structure, caps, the rebalancing rule, the hedge."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantumtrade.allocation.allocator import (
    HEDGE,
    REBALANCE,
    AllocationConfig,
    AllocationMethod,
    Allocator,
    cap_clusters,
    cap_each,
    cap_net,
)
from quantumtrade.allocation.covariance import (
    correlation_clusters,
    ledoit_wolf,
    log_returns,
    shrunk_covariance,
)
from quantumtrade.allocation.kernels import erc_weights


def _sklearn() -> object:
    try:
        from sklearn.covariance import LedoitWolf
    except ImportError:  # pragma: no cover - installed by the test extra
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("scikit-learn (the Ledoit-Wolf reference) is not installed")
    return LedoitWolf


@pytest.mark.parametrize(("t", "n"), [(30, 10), (200, 5), (12, 40), (500, 2)])
def test_ledoit_wolf_matches_scikit_learn(t: int, n: int) -> None:
    reference = _sklearn()
    rng = np.random.default_rng(t * 100 + n)
    x = rng.normal(size=(t, n)) @ rng.normal(size=(n, n)) * 0.01
    cov, shrinkage = ledoit_wolf(x)
    fitted = reference().fit(x)  # type: ignore[operator]
    assert shrinkage == pytest.approx(fitted.shrinkage_, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(cov, fitted.covariance_, rtol=1e-9, atol=1e-15)


def test_ledoit_wolf_shrinks_more_when_data_are_few() -> None:
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(30, 30))  # a covariance far from the scaled identity
    few = ledoit_wolf(rng.normal(size=(15, 30)) @ mix)[1]
    many = ledoit_wolf(rng.normal(size=(3000, 30)) @ mix)[1]
    assert few > 0.3 > 0.05 > many


def _risk_shares(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    rc = w * (cov @ w)
    return rc / rc.sum()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000))
def test_erc_gives_equal_risk_contributions(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n + 5, n))
    cov = a.T @ a / (n + 5) + 1e-3 * np.eye(n)
    w, sweeps = erc_weights(cov, np.full(n, 1.0 / n), 1e-10, 2000)
    assert sweeps <= 2000
    assert (w > 0).all() and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(_risk_shares(w, cov), np.full(n, 1.0 / n), atol=1e-8)


def test_erc_on_uncorrelated_assets_is_inverse_vol() -> None:
    vol = np.array([0.01, 0.02, 0.04])
    w, _ = erc_weights(np.diag(vol**2), np.full(3, 1 / 3), 1e-12, 1000)
    np.testing.assert_allclose(w, (1 / vol) / (1 / vol).sum(), rtol=1e-8)


def test_erc_three_assets_brute_force() -> None:
    vol = np.array([0.2, 0.1, 0.15])
    corr = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, -0.2], [0.0, -0.2, 1.0]])
    cov = corr * np.outer(vol, vol)
    w, _ = erc_weights(cov, np.full(3, 1 / 3), 1e-12, 1000)
    grid = np.linspace(0.005, 0.99, 198)
    best, best_gap = None, np.inf
    for a in grid:
        for b in grid:
            if a + b < 0.995:
                x = np.array([a, b, 1 - a - b])
                gap = float(np.ptp(_risk_shares(x, cov)))
                if gap < best_gap:
                    best, best_gap = x, gap
    assert best is not None
    np.testing.assert_allclose(w, best, atol=0.01)
    # The correlations matter (with two assets ERC is always inverse vol; with three it is not).
    inv = (1 / vol) / (1 / vol).sum()
    assert np.abs(w - inv).max() > 0.02


def test_clusters_recover_planted_blocks() -> None:
    rng = np.random.default_rng(7)
    t = 400
    f1, f2 = rng.normal(size=t), rng.normal(size=t)
    cols = [f1 + 0.3 * rng.normal(size=t) for _ in range(4)]
    cols += [f2 + 0.3 * rng.normal(size=t) for _ in range(3)]
    cols += [rng.normal(size=t)]
    corr = np.corrcoef(np.array(cols))
    labels = correlation_clusters(corr, 0.7)
    assert labels.tolist() == [0, 0, 0, 0, 4, 4, 4, 7]
    # Everything merges at a threshold below the cross-block correlation (about 0).
    assert len(set(correlation_clusters(corr, -0.5).tolist())) == 1


def test_average_linkage_does_not_chain() -> None:
    # A~B 0.8, B~C 0.8, A~C 0.0: single linkage would chain all three at 0.7.
    corr = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.8], [0.0, 0.8, 1.0]])
    labels = correlation_clusters(corr, 0.7)
    assert len(set(labels.tolist())) == 2


def test_caps() -> None:
    w = cap_each(np.array([0.5, 0.3, 0.1, 0.1]), 0.3)
    assert w.max() <= 0.3 + 1e-12 and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w, [0.3, 0.3, 0.2, 0.2])
    assert cap_each(np.array([0.5, 0.5]), 0.2).tolist() == [0.2, 0.2]  # all capped: less
    clustered = cap_clusters(np.array([0.2, 0.2, 0.2]), np.array([0, 0, 2]), 0.3)
    np.testing.assert_allclose(clustered, [0.15, 0.15, 0.2])
    net = cap_net(np.array([0.3, 0.3, -0.1]), 0.2)
    assert net.sum() == pytest.approx(0.2) and net[2] == -0.1


def _walk(seed: int, n: int, bars: int, vols: list[float]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(n, bars)) * np.array(vols)[:, None]
    return 100 * np.exp(np.cumsum(r, axis=1))


def _alloc(method: str, **kw: object) -> Allocator:
    cfg = AllocationConfig(method=AllocationMethod(method), lookback=150, **kw)  # type: ignore[arg-type]
    return Allocator(cfg, max_weight=1.0, max_gross=1.0)


def test_methods_size_by_their_rule() -> None:
    close = _walk(1, 3, 200, [0.01, 0.02, 0.04])
    want = np.array([0.1, 0.1, 0.1])
    zero = np.zeros(3)
    reasons = ["signal"] * 3
    eq = _alloc("equal_weight").allocate(("A", "B", "C"), want, reasons, want, zero, close)
    np.testing.assert_allclose(eq.weight, [0.1, 0.1, 0.1])
    iv = _alloc("inverse_vol").allocate(("A", "B", "C"), want, reasons, want, zero, close)
    assert iv.weight.sum() == pytest.approx(0.3)  # the strategy's gross, spread
    assert iv.weight[0] > iv.weight[1] > iv.weight[2]
    assert iv.weight[0] / iv.weight[2] == pytest.approx(4.0, rel=0.25)
    rp = _alloc("risk_parity").allocate(("A", "B", "C"), want, reasons, want, zero, close)
    cov = shrunk_covariance(log_returns(close[:, -151:]), np.arange(3), 10)
    assert cov is not None
    shares = _risk_shares(rp.weight, cov.cov)
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=1e-6)


def test_exit_and_no_opinion_are_kept() -> None:
    close = _walk(2, 3, 200, [0.01, 0.01, 0.01])
    want = np.array([0.0, np.nan, 0.2])  # A exits, B has no opinion and is flat, C enters
    out = _alloc("equal_weight").allocate(
        ("A", "B", "C"), want, ["fade", "x", "sig"], want, np.array([0.1, 0.0, 0.0]), close
    )
    assert out.weight[0] == 0.0 and math.isnan(out.weight[1]) and out.weight[2] == 0.2


def test_rebalance_weighs_cost_against_drift() -> None:
    close = _walk(3, 2, 200, [0.02, 0.02])
    want = np.array([0.5, 0.5])
    held = np.array([0.6, 0.4])  # drifted 0.2 L1 from the equal-weight book
    # Cheap trading, strong aversion: the drift is traded away.
    cheap = _alloc("equal_weight", cost_bps=0.0, drift_threshold=0.05)
    out = cheap.allocate(("A", "B"), want, ["s", "s"], want, held, close)
    np.testing.assert_allclose(out.weight, [0.5, 0.5])
    assert out.reason == [REBALANCE, REBALANCE] and cheap.stats.rebalances == {"drift": 1}
    # Dear trading: the same drift is held (NaN: keep).
    dear = _alloc("equal_weight", cost_bps=500.0, drift_threshold=0.05)
    out = dear.allocate(("A", "B"), want, ["s", "s"], want, held, close)
    assert np.isnan(out.weight).all() and dear.stats.drift_below_cost == 1
    # Below the drift threshold nothing is weighed at all.
    calm = _alloc("equal_weight", cost_bps=0.0, drift_threshold=0.5)
    out = calm.allocate(("A", "B"), want, ["s", "s"], want, held, close)
    assert np.isnan(out.weight).all() and calm.stats.drift_below_cost == 0
    # The schedule rebalances regardless of cost.
    sched = _alloc("equal_weight", cost_bps=500.0, rebalance_every=1)
    out = sched.allocate(("A", "B"), want, ["s", "s"], want, held, close)
    np.testing.assert_allclose(out.weight, [0.5, 0.5])
    assert sched.stats.rebalances == {"schedule": 1}


def test_hedge_offsets_the_books_beta() -> None:
    rng = np.random.default_rng(5)
    bars = 200
    market = rng.normal(size=bars) * 0.02
    rets = np.array([1.5 * market + 0.002 * rng.normal(size=bars), market])
    close = 100 * np.exp(np.cumsum(rets, axis=1))
    alloc = _alloc("equal_weight", hedge_symbol="BTC")
    want = np.array([0.2, 0.1])  # the strategy's BTC weight is ignored: it is the hedge
    out = alloc.allocate(("ALT", "BTC"), want, ["s", "s"], want, np.zeros(2), close)
    assert out.weight[0] == pytest.approx(0.2)
    assert out.weight[1] == pytest.approx(-0.3, rel=0.05)  # -beta (1.5) x 0.2
    assert out.reason[1] == HEDGE and math.isinf(out.score[1])
    # Flat book: the held hedge goes.
    flat = np.array([0.0, np.nan])
    out = alloc.allocate(("ALT", "BTC"), flat, ["x", "x"], flat, np.array([0.0, -0.3]), close)
    assert out.weight[1] == 0.0


def test_clusters_reach_the_allocator_output() -> None:
    rng = np.random.default_rng(9)
    f = rng.normal(size=200) * 0.02
    rets = np.array([f + 0.002 * rng.normal(size=200), f + 0.002 * rng.normal(size=200)])
    rets = np.vstack([rets, rng.normal(size=(1, 200)) * 0.02])
    close = 100 * np.exp(np.cumsum(rets, axis=1))
    alloc = _alloc("equal_weight", max_cluster_weight=0.2)
    want = np.array([0.2, 0.2, 0.2])
    out = alloc.allocate(("A", "B", "C"), want, ["s"] * 3, want, np.zeros(3), close)
    assert alloc.clusters == {"A": "corr:A", "B": "corr:A"}
    np.testing.assert_allclose(out.weight, [0.1, 0.1, 0.2])


@pytest.mark.parametrize("method", ["equal_weight", "inverse_vol", "risk_parity"])
def test_allocation_is_bitwise_the_same_in_any_row_order(method: str) -> None:
    """The daemon's rows come in the order symbols first arrived, replay's may differ: the
    allocation must not change in the last bit (replay compares quantities exactly)."""
    names = ("EEE", "AAA", "DDD", "BBB", "CCC")
    close = _walk(4, 5, 200, [0.011, 0.017, 0.013, 0.029, 0.023])
    want = np.array([0.07, np.nan, 0.13, 0.0, 0.11])
    current = np.array([0.05, 0.09, 0.0, 0.03, 0.12])
    kw = {"cost_bps": 0.0, "drift_threshold": 0.0}
    base = _alloc(method, **kw).allocate(names, want, ["s"] * 5, want, current, close)
    perm = np.array([3, 0, 4, 1, 2])
    other = _alloc(method, **kw).allocate(
        tuple(names[i] for i in perm), want[perm], ["s"] * 5, want[perm], current[perm],
        close[perm],
    )  # fmt: skip
    assert np.isfinite(base.weight[[0, 1, 2, 4]]).all()
    assert base.weight[perm].tobytes() == other.weight.tobytes()


def test_kernels_compile_without_scipy(tmp_path: object) -> None:
    """The daemon does not depend on SciPy, and numba's matrix product needs its BLAS: a
    kernel using ``@`` compiles in the test environment (SciPy comes with scikit-learn) and
    fails on a fresh install. Compile the allocation kernels with SciPy hidden, on an empty
    numba cache."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from quantumtrade.allocation import kernels\n"
        "kernels.warm_up()\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
