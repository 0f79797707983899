"""One full refresh of N symbols x B bars through the orchestrator, beside bare generation.

* generation: a fresh ``SyntheticSource`` produces every symbol's B bars, in the same batches
  the workers ask for (``fetch_bar_batch`` of ``batch_size`` symbols).
* refresh: a fresh source with the same seed, through the orchestrator's workers, the circuit
  breaker, the market-data cache (L1; every symbol misses and is stored, as on a cold start),
  validation, ``MarketState`` and the bus (one ``BarsUpdated`` per batch), i.e.
  ``refresh_due()`` + ``join()`` on a manual clock.
Both run once untimed first, so numba's compile/cache load is not counted.
* peak RSS: a separate process holding N symbols x 1,000 bars in MarketState.

Goals (issue 4): refresh under 250 ms and at most 1.5x generation for 5,000 x 500; peak RSS
under 500 MB for 5,000 x 1,000. Last line: a JSON object with the figures.

Run: .venv/bin/python scripts/bench/orchestrator.py [--symbols N] [--bars B]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time

import uvloop

from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import EventBus
from quantumtrade.cache.l1 import L1Cache
from quantumtrade.cache.tiered import TieredCache
from quantumtrade.clock import ManualClock
from quantumtrade.data.bar_cache import CachedBars
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator, OrchestratorConfig
from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource
from quantumtrade.data.validation import validate_batch

START_NS = 1_735_689_600_000_000_000
BAR_MS = 60_000


def make_source(n: int, bars: int, clock: ManualClock) -> SyntheticSource:
    return SyntheticSource(
        SyntheticConfig(seed=11, symbols=n, bar_ms=BAR_MS, history_bars=bars), clock
    )


async def generation(n: int, bars: int, batch_size: int) -> float:
    clock = ManualClock(START_NS)
    source = make_source(n, bars, clock)
    until = clock.now_ns() // 1_000_000
    symbols = source.symbols()
    t0 = time.perf_counter()
    total = 0
    for i in range(0, n, batch_size):
        chunk = symbols[i : i + batch_size]
        total += (await source.fetch_bar_batch(chunk, [None] * len(chunk), until)).total
    elapsed = time.perf_counter() - t0
    assert total == n * bars, total
    return elapsed


async def refresh(n: int, bars: int, workers: int, batch_size: int) -> float:
    clock = ManualClock(START_NS)
    source = make_source(n, bars, clock)
    state = MarketState(source.symbols(), max(bars, 1_000))
    bus = EventBus(clock=clock)
    cache: TieredCache[CachedBars] = TieredCache(
        clock=clock,
        l1=L1Cache(clock=clock, ttl_ms=1_000, max_entries=max(n, 1)),
        l2=None,
        value_type=CachedBars,
    )
    orchestrator = Orchestrator(
        bus=bus,
        clock=clock,
        state=state,
        sources={source.name: source},
        config=OrchestratorConfig(max_workers=workers, queue_size=max(n, 1), batch_size=batch_size),
        breaker_config=BreakerConfig(),
        cache=cache,
    )
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        orchestrator.start(tg)
        t0 = time.perf_counter()
        orchestrator.refresh_due()
        await orchestrator.join()
        await bus.drain()
        elapsed = time.perf_counter() - t0
        await orchestrator.stop()
        await bus.stop()
    stored = orchestrator.metrics()["bars_stored"]
    assert stored == n * bars, stored
    assert len(cache.l1) == n, len(cache.l1)
    return elapsed


def hold(n: int, bars: int) -> None:
    """Child process: fill MarketState with n x bars, print peak RSS in MB."""

    async def fill() -> None:
        clock = ManualClock(START_NS)
        source = make_source(n, bars, clock)
        state = MarketState(source.symbols(), bars)
        until = clock.now_ns() // 1_000_000
        symbols = source.symbols()
        size = OrchestratorConfig().batch_size  # as the workers fetch
        for i in range(0, n, size):
            chunk = symbols[i : i + size]
            batch = await source.fetch_bar_batch(chunk, [None] * len(chunk), until)
            state.append_batch(batch, validate_batch(batch, state.last_ts_array(chunk)))
            del batch  # as a worker's batch ends with its refresh, not after the next fetch

    uvloop.run(fill())
    print(peak_rss_mb())


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the process image, whereas ru_maxrss keeps
    the parent's peak across fork + exec (the benchmark's parent is large by then)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=5_000)
    parser.add_argument("--bars", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=OrchestratorConfig().batch_size)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        hold(args.symbols, args.bars)
        return
    gen, ref = [], []
    uvloop.run(generation(args.symbols, 10, args.batch_size))  # warm-up: numba cache load
    uvloop.run(refresh(args.symbols, 10, args.workers, args.batch_size))
    for _ in range(args.rounds):
        gen.append(uvloop.run(generation(args.symbols, args.bars, args.batch_size)))
        ref.append(uvloop.run(refresh(args.symbols, args.bars, args.workers, args.batch_size)))
    rss = float(
        subprocess.run(
            [sys.executable, __file__, "--hold", "--symbols", str(args.symbols), "--bars", "1000"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
    )
    figures = {
        "refresh_ms": round(min(ref) * 1000, 1),
        "generation_ms": round(min(gen) * 1000, 1),
        "refresh_ratio_vs_generation": round(min(ref) / min(gen), 3),
        # Each round runs generation then refresh back to back: the median of those pairs'
        # ratios shows how much the best-of figures owe to load drifting between rounds.
        "paired_ratio_median": round(
            statistics.median(r / g for r, g in zip(ref, gen, strict=True)), 3
        ),
        "peak_rss_mb": round(rss, 1),
    }
    print(
        f"{args.symbols:,} symbols x {args.bars} bars, {args.workers} workers, batches of "
        f"{args.batch_size}, best of {args.rounds}"
    )
    print(
        f"full refresh {figures['refresh_ms']:,} ms   generation alone "
        f"{figures['generation_ms']:,} ms   ratio {figures['refresh_ratio_vs_generation']:.2f}"
        f"  (goal < 250 ms and <= 1.5)"
    )
    print(
        f"peak RSS holding {args.symbols:,} x 1,000 bars: {figures['peak_rss_mb']:.0f} MB"
        f"  (goal < 500 MB)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
