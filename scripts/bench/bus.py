"""Events per second through the EventBus, each figure beside a naive baseline from the same run.

* sync: 3 plain-function subscribers; baseline: a naive bus, a dict of handler lists behind the
  same ``await bus.publish(event)`` call (so the ratio isolates what our bus does more per event:
  seq stamping, counting, sampled timing, retries). The same dict looped inline with no call at
  all is printed too, as ``sync_raw_loop_events_per_s``.
* async: 3 coroutine subscribers; baseline: one ``asyncio.Queue`` per subscriber, ``await put``,
  each drained by its own task that awaits the handler.

Every subscriber does the same small piece of work (adds the event's price to a running sum), so
the baselines and the bus do equal handler work. Each measurement is the best of several rounds
(the machine is shared and noisy). The last line is a JSON object with the figures.

Run: .venv/bin/python scripts/bench/bus.py [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from quantumtrade.bus import BusConfig, EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import Event, TickerUpdated

SUBSCRIBERS = 3


def make_events(n: int) -> list[TickerUpdated]:
    return [
        TickerUpdated(ts_ns=i, symbol="BTCUSDT", source="bench", bid=1.0, ask=1.1, last=1.05)
        for i in range(n)
    ]


class Sink:
    """A subscriber's work: keep a running sum of prices and a count."""

    def __init__(self) -> None:
        self.total = 0.0
        self.n = 0

    def on_event(self, event: TickerUpdated) -> None:
        self.total += event.last
        self.n += 1

    async def on_event_async(self, event: TickerUpdated) -> None:
        self.total += event.last
        self.n += 1


class NaiveBus:
    """The simplest bus there is: a dict of handler lists."""

    def __init__(self) -> None:
        self.handlers: dict[type[Event], list[Callable[[Any], None]]] = {}

    def subscribe(self, event_type: type[Event], handler: Callable[[Any], None]) -> None:
        self.handlers.setdefault(event_type, []).append(handler)

    async def publish(self, event: Event) -> None:
        for handler in self.handlers[type(event)]:
            handler(event)


async def naive_dict(n: int) -> float:
    bus = NaiveBus()
    sinks = [Sink() for _ in range(SUBSCRIBERS)]
    for s in sinks:
        bus.subscribe(TickerUpdated, s.on_event)
    events = make_events(n)
    publish = bus.publish
    t0 = time.perf_counter()
    for event in events:
        await publish(event)
    elapsed = time.perf_counter() - t0
    assert all(s.n == n for s in sinks)
    return n / elapsed


async def raw_loop(n: int) -> float:
    sinks = [Sink() for _ in range(SUBSCRIBERS)]
    handlers: dict[type[Event], list[Callable[[Any], None]]] = {
        TickerUpdated: [s.on_event for s in sinks]
    }
    events = make_events(n)
    t0 = time.perf_counter()
    for event in events:
        for handler in handlers[type(event)]:
            handler(event)
    elapsed = time.perf_counter() - t0
    assert all(s.n == n for s in sinks)
    return n / elapsed


async def bus_sync(n: int) -> float:
    bus = EventBus(clock=ManualClock())
    sinks = [Sink() for _ in range(SUBSCRIBERS)]
    for s in sinks:
        bus.subscribe(TickerUpdated, s.on_event)
    events = make_events(n)
    publish = bus.publish
    t0 = time.perf_counter()
    for event in events:
        await publish(event)
    elapsed = time.perf_counter() - t0
    assert all(s.n == n for s in sinks)
    return n / elapsed


async def naive_queues(n: int, queue_size: int) -> float:
    sinks = [Sink() for _ in range(SUBSCRIBERS)]
    queues: list[asyncio.Queue[TickerUpdated | None]] = [
        asyncio.Queue(maxsize=queue_size) for _ in sinks
    ]

    async def consume(q: asyncio.Queue[TickerUpdated | None], sink: Sink) -> None:
        while True:
            event = await q.get()
            if event is None:
                return
            await sink.on_event_async(event)

    events = make_events(n)
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for q, s in zip(queues, sinks, strict=True):
            tg.create_task(consume(q, s))
        for event in events:
            for q in queues:
                await q.put(event)
        for q in queues:
            await q.put(None)
    elapsed = time.perf_counter() - t0
    assert all(s.n == n for s in sinks)
    return n / elapsed


async def bus_async(n: int, queue_size: int) -> float:
    bus = EventBus(clock=ManualClock(), config=BusConfig(queue_size=queue_size))
    sinks = [Sink() for _ in range(SUBSCRIBERS)]
    for s in sinks:
        bus.subscribe(TickerUpdated, s.on_event_async)
    events = make_events(n)
    publish = bus.publish
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        t0 = time.perf_counter()
        for event in events:
            await publish(event)
        await bus.drain()
        elapsed = time.perf_counter() - t0
        await bus.stop()
    assert all(s.n == n for s in sinks)
    return n / elapsed


async def best_of(rounds: int, fn: Callable[[], Coroutine[Any, Any, float]]) -> float:
    return max([await fn() for _ in range(rounds)])


async def main(n: int, rounds: int, queue_size: int) -> dict[str, float]:
    # Interleave bus and baseline rounds so both see the same machine load.
    sync_bus, sync_naive, sync_raw, async_bus, async_naive = [], [], [], [], []
    for _ in range(rounds):
        sync_raw.append(await raw_loop(n))
        sync_naive.append(await naive_dict(n))
        sync_bus.append(await bus_sync(n))
        async_naive.append(await naive_queues(n, queue_size))
        async_bus.append(await bus_async(n, queue_size))
    figures = {
        "sync_events_per_s": round(max(sync_bus)),
        "sync_naive_events_per_s": round(max(sync_naive)),
        "sync_ratio_vs_naive": round(max(sync_bus) / max(sync_naive), 3),
        "sync_raw_loop_events_per_s": round(max(sync_raw)),
        "sync_ratio_vs_raw_loop": round(max(sync_bus) / max(sync_raw), 3),
        "async_events_per_s": round(max(async_bus)),
        "async_naive_events_per_s": round(max(async_naive)),
        "async_ratio_vs_naive": round(max(async_bus) / max(async_naive), 3),
    }
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queue-size", type=int, default=10_000)
    args = parser.parse_args()
    figures = uvloop.run(main(args.events, args.rounds, args.queue_size))
    print(f"events per round: {args.events:,}, {SUBSCRIBERS} subscribers, best of {args.rounds}")
    print(
        f"plain-function subscribers: bus {figures['sync_events_per_s']:>12,} ev/s   "
        f"naive dict bus {figures['sync_naive_events_per_s']:>10,} ev/s   "
        f"ratio {figures['sync_ratio_vs_naive']:.2f}  (goal >= 1,000,000 ev/s and >= 0.5)"
    )
    print(
        f"  (the same dict looped inline, no publish call: "
        f"{figures['sync_raw_loop_events_per_s']:,} ev/s, "
        f"ratio {figures['sync_ratio_vs_raw_loop']:.2f})"
    )
    print(
        f"coroutine subscribers:      bus {figures['async_events_per_s']:>12,} ev/s   "
        f"naive queues   {figures['async_naive_events_per_s']:>10,} ev/s   "
        f"ratio {figures['async_ratio_vs_naive']:.2f}  (goal >= 1.0)"
    )
    print(json.dumps(figures))
