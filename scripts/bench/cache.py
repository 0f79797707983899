"""Cache speed and hit rate, each figure beside a baseline from the same run.

* L1 gets/s (fresh entries, 5,000 keys) against a plain ``dict`` lookup of the same keys.
* Tiered gets that miss L1 and hit L2 (Redis on 127.0.0.1:6379 unless QT_BENCH_REDIS_URL),
  including msgpack decoding of a 20-level order book, against a raw redis ``GET`` of the
  same keys on the same connection settings.
* Steady replay hit rate: 5,000 symbols, each symbol's 200-bar window read again on every
  one of 20 replay passes (a parameter sweep over the same history), through L1 bounded at
  2,500 entries (half the working set, so LRU eviction is real) and L2 Redis. Counted over
  all lookups: a hit in either tier is a hit; the first pass can only miss.

Last line: a JSON object with the figures.

Run: .venv/bin/python scripts/bench/cache.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

import redis.asyncio as redis
import uvloop

from quantumtrade.cache.l1 import L1Cache
from quantumtrade.cache.tiered import RedisL2, TieredCache
from quantumtrade.clock import ManualClock, WallClock
from quantumtrade.data.source import OrderBook

URL = os.environ.get("QT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SYMBOLS = [f"SYM{i:05d}USDT" for i in range(5_000)]


def book(symbol: str) -> OrderBook:
    return OrderBook(
        symbol=symbol,
        ts_ms=1,
        bids=tuple((100.0 - i * 0.01, 1.0 + i) for i in range(20)),
        asks=tuple((100.01 + i * 0.01, 1.0 + i) for i in range(20)),
    )


def l1_vs_dict(rounds: int) -> tuple[float, float]:
    cache: L1Cache[OrderBook] = L1Cache(clock=WallClock(), ttl_ms=3_600_000, max_entries=10_000)
    plain: dict[str, OrderBook] = {}
    for s in SYMBOLS:
        cache.set(s, book(s))
        plain[s] = book(s)
    best_l1 = best_dict = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(40):
            for s in SYMBOLS:
                cache.get(s)
        best_l1 = max(best_l1, 40 * len(SYMBOLS) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(40):
            for s in SYMBOLS:
                plain.get(s)
        best_dict = max(best_dict, 40 * len(SYMBOLS) / (time.perf_counter() - t0))
    return best_l1, best_dict


async def l2_vs_raw(prefix: str, rounds: int, n: int) -> tuple[float, float]:
    clock = ManualClock()
    writer = RedisL2.from_url(URL, prefix=prefix)
    encoded = TieredCache(
        clock=clock,
        l1=L1Cache(clock=clock, ttl_ms=60_000, max_entries=1),
        l2=writer,
        value_type=OrderBook,
    )
    keys = SYMBOLS[:n]
    for s in keys:
        await encoded.get_or_load(s, _loader(s))  # fills Redis
    raw = redis.Redis.from_url(URL)
    best_tiered = best_raw = 0.0
    for _ in range(rounds):
        # A fresh L1 holding one entry: every get misses L1 and is served by L2.
        cache = TieredCache(
            clock=clock,
            l1=L1Cache(clock=clock, ttl_ms=60_000, max_entries=1),
            l2=RedisL2.from_url(URL, prefix=prefix),
            value_type=OrderBook,
        )
        await cache.get_or_load(keys[0], _loader(keys[0]))  # connect outside the timing
        t0 = time.perf_counter()
        for s in keys:
            await cache.get_or_load(s, _loader(s))
        best_tiered = max(best_tiered, n / (time.perf_counter() - t0))
        assert cache.loads == 0, "a get fell through to the loader"
        assert cache.l2 is not None
        await cache.l2.close()
        await raw.get(prefix + keys[0])
        t0 = time.perf_counter()
        for s in keys:
            await raw.get(prefix + s)
        best_raw = max(best_raw, n / (time.perf_counter() - t0))
    await raw.aclose()
    await writer.close()
    return best_tiered, best_raw


def _loader(symbol: str):  # type: ignore[no-untyped-def]
    async def load() -> OrderBook:
        return book(symbol)

    return load


async def steady_replay(prefix: str, passes: int) -> float:
    clock = ManualClock()
    cache = TieredCache(
        clock=clock,
        l1=L1Cache(clock=clock, ttl_ms=3_600_000, max_entries=2_500),
        l2=RedisL2.from_url(URL, prefix=prefix + "replay:"),
        value_type=OrderBook,
    )
    lookups = hits = 0
    for _ in range(passes):
        for s in SYMBOLS:
            before = cache.loads
            await cache.get_or_load(f"bars:{s}:200", _loader(s))
            lookups += 1
            hits += cache.loads == before
            clock.advance(0.0001)
    assert cache.l2 is not None
    await cache.l2.close()
    return hits / lookups


async def main(rounds: int, n: int, passes: int) -> dict[str, float]:
    prefix = f"qt-bench-{uuid.uuid4().hex[:8]}:"
    l1, plain = l1_vs_dict(rounds)
    try:
        tiered, raw = await l2_vs_raw(prefix, rounds, n)
        hit_rate = await steady_replay(prefix, passes)
    finally:
        client = redis.Redis.from_url(URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1_000)]
        for i in range(0, len(keys), 1_000):
            await client.delete(*keys[i : i + 1_000])
        await client.aclose()
    return {
        "l1_gets_per_s": round(l1),
        "dict_gets_per_s": round(plain),
        "l1_ratio_vs_dict": round(l1 / plain, 3),
        "l2_gets_per_s": round(tiered),
        "raw_get_per_s": round(raw),
        "l2_ratio_vs_raw_get": round(tiered / raw, 3),
        "steady_hit_rate": round(hit_rate, 4),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--l2-gets", type=int, default=5_000)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    f = uvloop.run(main(args.rounds, args.l2_gets, args.passes))
    print(
        f"L1 get:      {f['l1_gets_per_s']:>12,}/s   dict {f['dict_gets_per_s']:>12,}/s   "
        f"ratio {f['l1_ratio_vs_dict']:.2f}"
    )
    print(
        f"L2 hit get:  {f['l2_gets_per_s']:>12,}/s   raw redis GET {f['raw_get_per_s']:>8,}/s   "
        f"ratio {f['l2_ratio_vs_raw_get']:.2f}  (goal >= 0.8)"
    )
    print(
        f"steady replay of 5,000 symbols x {args.passes} passes: hit rate "
        f"{f['steady_hit_rate']:.2%}  (goal >= 95%)"
    )
    print(json.dumps(f))
