"""Regime classification speed, beside the previous implementation measured in the same run.

* full: ``engine.classify`` on N symbols x B bars (every bar labelled), against the previous
  engine (one symbol at a time through a scalar per-bar step with libm logs and exps), loaded
  from git at commit ``BASELINE_COMMIT``; also how often both engines give the same label
  (the new one runs the filter in float32 and approximates log/exp, so a few borderline bars
  may differ);
* current only: the same classification writing only the newest bar (``RegimeTracker.reset``);
* incremental: one new bar on every symbol through ``RegimeTracker.update``, against
  reclassifying the whole window as the detector did before (with the new engine).

Each figure is the best of ``--repeat`` runs (the machine is shared). Last line: a JSON object.

Run: .venv/bin/python scripts/bench/regime.py [--symbols N] [--bars B] [--repeat R]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from quantumtrade.regime import engine

Array = NDArray[np.float64]
BASELINE_COMMIT = "546051f"  # the engine before the lock-step blocks
ROOT = Path(__file__).resolve().parents[2]


def market(n: int, bars: int, seed: int = 5) -> tuple[Array, Array, Array, Array]:
    rng = np.random.default_rng(seed)
    sigma = 0.01 * np.exp(0.5 * rng.standard_normal((n, 1)))
    close = 100.0 * np.exp(np.cumsum(sigma * rng.standard_normal((n, bars)), axis=1))
    spread = np.abs(0.5 * sigma * rng.standard_normal((n, bars))) * close
    high, low = close + spread, close - spread
    volume = rng.gamma(2.0, 500.0, (n, bars))
    return close, high, low, volume


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def previous_engine() -> ModuleType | None:
    """The engine as it was at BASELINE_COMMIT, imported from a temporary copy."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:quantumtrade/regime/engine.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"baseline unavailable ({exc}); only our figures are printed")
        return None
    # The baseline's one import from the package: the shared jit flags, since moved (unchanged).
    source = source.replace(
        "from quantumtrade.scoring.kernels import _JIT",
        "from quantumtrade.scoring.jit import JIT_FLAGS as _JIT",
    )
    # One directory per baseline commit, reused: numba caches the baseline's compiled kernels
    # beside it, and runs do not leave a directory each behind.
    folder = Path(tempfile.gettempdir()) / f"qt_regime_baseline_{BASELINE_COMMIT}"
    folder.mkdir(exist_ok=True)
    path = folder / "regime_engine_baseline.py"
    if not path.exists() or path.read_text() != source:
        path.write_text(source)
    spec = importlib.util.spec_from_file_location("regime_engine_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--bars", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, bars, repeat = args.symbols, args.bars, args.repeat
    close, high, low, volume = market(n, bars + 1)
    # Contiguous copies, made once: a strided view would make every call (both engines) copy
    # 160 MB first, which is not the classification's cost.
    window: tuple[Array, Array, Array, Array] = (
        np.ascontiguousarray(close[:, :bars]),
        np.ascontiguousarray(high[:, :bars]),
        np.ascontiguousarray(low[:, :bars]),
        np.ascontiguousarray(volume[:, :bars]),
    )
    last: tuple[Array, Array, Array, Array] = (
        close[:, bars].copy(),
        high[:, bars].copy(),
        low[:, bars].copy(),
        volume[:, bars].copy(),
    )
    engine.warm_up()
    full_ms = best_ms(lambda: engine.classify(*window), repeat)
    tracker = engine.RegimeTracker()
    current_ms = best_ms(lambda: tracker.reset(*window), repeat)

    def one_bar() -> None:
        # Each timed update starts from the same state (reset is outside the timing).
        tracker.update(*last)

    incremental: list[float] = []
    for _ in range(max(repeat, 20)):
        tracker.reset(*window)
        incremental.append(best_ms(one_bar, 1))
    incremental_ms = min(incremental)
    # The incremental result equals the full recomputation of the longer series.
    full_next = engine.classify(close, high, low, volume)
    tracker.reset(*window)
    labels, conf = tracker.update(*last)
    same = bool(
        np.array_equal(labels, full_next.labels[:, -1])
        and np.array_equal(conf, full_next.confidence[:, -1])
    )

    old = previous_engine()
    baseline_ms = float("nan")
    agreement = float("nan")
    if old is not None:
        old.classify(*(a[:2, :200] for a in window))  # compile (or load its cache)
        baseline_ms = best_ms(lambda: old.classify(*window), max(2, repeat // 2))
        ours, theirs = engine.classify(*window), old.classify(*window)
        agreement = float(np.mean(ours.labels == theirs.labels))
    print(f"{n} symbols x {bars} bars, best of {repeat}")
    print(
        f"full classify (every bar): {full_ms:9.1f} ms   previous engine {baseline_ms:9.1f} ms"
        f"   ({baseline_ms / full_ms:.1f}x; same label on {agreement:.4%} of bars)"
    )
    print(f"current regime only:       {current_ms:9.1f} ms")
    print(
        f"incremental, one bar:      {incremental_ms:9.3f} ms   full reclassify {full_ms:9.1f} ms"
        f"   (equal to the full result: {same})"
    )
    print(
        json.dumps(
            {
                "full_classify_ms": round(full_ms, 2),
                "previous_full_classify_ms": round(baseline_ms, 2),
                "ratio_vs_previous": round(baseline_ms / full_ms, 2),
                "label_agreement_vs_previous": round(agreement, 6),
                "baseline_commit": BASELINE_COMMIT,
                "current_only_ms": round(current_ms, 2),
                "incremental_ms": round(incremental_ms, 4),
                "ratio_incremental_vs_full": round(full_ms / incremental_ms, 1),
                "incremental_equals_full": same,
                "symbols": n,
                "bars": bars,
            }
        )
    )


if __name__ == "__main__":
    main()
