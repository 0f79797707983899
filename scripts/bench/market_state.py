"""MarketState appends: one bar for every symbol per step (a backtest step, a heartbeat that
refreshes every symbol), the in-place layout against shifting every row, in one run.

Two states of N symbols x capacity C, full (C bars each), take the same S steps of one bar per
symbol through ``append_validated`` (rows given, as the backtest runner does):
* shift: ``slack=0``, every row's bars move left by one per step (the layout before the slack:
  O(C) per row per step, N x C x 48 bytes moved per step);
* in place: the default slack, the shared right edge moves and each bar is written in place,
  every window copied back once per ``slack`` steps (counted in).
The steps alternate between the two in blocks (a noisy shared machine drifts), and the two
states are checked to hold the same bits at the end. Last line: a JSON object with the figures.

Run: .venv/bin/python scripts/bench/market_state.py [--symbols N] [--capacity C] [--steps S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from quantumtrade.data.market_state import MarketState
from quantumtrade.data.source import BarBatch

BAR_MS = 60_000


def step_batch(
    symbols: tuple[str, ...], t: int, rng: np.random.Generator, bars: int = 1
) -> BarBatch:
    """``bars`` valid bars per symbol, the first at open time ``t``."""
    n = len(symbols)
    close = rng.uniform(90, 110, (n, bars))
    open_ = rng.uniform(90, 110, (n, bars))
    prices = np.stack(
        (open_, np.maximum(open_, close) + 1, np.minimum(open_, close) - 1, close,
         rng.uniform(0, 5, (n, bars))),
        axis=-1,
    ).reshape(n * bars, 5)  # fmt: skip
    ts = (t + BAR_MS * np.arange(bars, dtype=np.int64))[None, :].repeat(n, axis=0).ravel()
    offsets = np.arange(0, n * bars + 1, bars, dtype=np.int64)
    batch = BarBatch(symbols, ts, prices, offsets)
    batch.freeze()
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=5_000)
    parser.add_argument("--capacity", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--block", type=int, default=50, help="steps per turn")
    args = parser.parse_args()
    symbols = tuple(f"S{i}USDT" for i in range(args.symbols))
    rows = list(range(args.symbols))
    states = {
        "shift": MarketState(symbols, args.capacity, slack=0),
        "in_place": MarketState(symbols, args.capacity),
    }
    rng = np.random.default_rng(7)
    t = BAR_MS
    fill = max(args.capacity // 10, 1)
    while t < (args.capacity + 1) * BAR_MS:  # full rows, in chunks of a tenth
        batch = step_batch(symbols, t, rng, fill)
        for state in states.values():
            state.append_validated(batch, rows)
        t += fill * BAR_MS
    seconds = dict.fromkeys(states, 0.0)
    batches = [step_batch(symbols, t + i * BAR_MS, rng) for i in range(args.block)]
    for state in states.values():  # warm-up (numba's cache load), not counted
        state.append_validated(batches[0], rows)
    t += BAR_MS
    compactions = states["in_place"].compactions
    done = 0
    while done < args.steps:
        k = min(args.block, args.steps - done)
        batches = [step_batch(symbols, t + i * BAR_MS, rng) for i in range(k)]
        for name, state in states.items():
            t0 = time.perf_counter()
            for batch in batches:
                state.append_validated(batch, rows)
            seconds[name] += time.perf_counter() - t0
        t += k * BAR_MS
        done += k
    a, b = states["shift"].columns(), states["in_place"].columns()
    for field in ("open", "high", "low", "close", "volume", "ts_ms"):
        x, y = getattr(a, field), getattr(b, field)
        assert np.array_equal(np.ascontiguousarray(x).view(np.uint64), y.view(np.uint64)), field
    assert np.array_equal(a.lengths, b.lengths)
    per_step = {name: s / args.steps * 1000 for name, s in seconds.items()}
    figures = {
        "symbols": args.symbols,
        "capacity": args.capacity,
        "steps": args.steps,
        "slack": states["in_place"].slack,
        "compactions": states["in_place"].compactions - compactions,
        "shift_ms_per_step": round(per_step["shift"], 3),
        "in_place_ms_per_step": round(per_step["in_place"], 3),
        "speedup": round(per_step["shift"] / per_step["in_place"], 1),
    }
    print(
        f"{args.symbols:,} symbols x capacity {args.capacity:,}, {args.steps:,} steps of one bar "
        f"per symbol: shift {per_step['shift']:.2f} ms/step, in place "
        f"{per_step['in_place']:.3f} ms/step (slack {figures['slack']}, "
        f"{figures['compactions']} compactions counted in): {figures['speedup']}x"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
