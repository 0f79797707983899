"""L1 cache: TTL on the injected clock, LRU bound, single-flight loads."""

from __future__ import annotations

import asyncio

import pytest

from quantumtrade.cache.l1 import L1Cache
from quantumtrade.clock import ManualClock


def test_ttl_follows_the_clock() -> None:
    clock = ManualClock()
    cache: L1Cache[int] = L1Cache(clock=clock, ttl_ms=100, max_entries=10)
    cache.set("a", 1)
    clock.advance(0.099)
    assert cache.get("a") == 1
    clock.advance(0.002)
    assert cache.get("a") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_lru_eviction_keeps_recently_used() -> None:
    cache: L1Cache[int] = L1Cache(clock=ManualClock(), ttl_ms=1_000, max_entries=2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.set("c", 3)
    assert cache.get("b") is None
    assert cache.get("a") == 1 and cache.get("c") == 3
    assert cache.evictions == 1 and len(cache) == 2


async def test_concurrent_misses_make_one_load() -> None:
    cache: L1Cache[str] = L1Cache(clock=ManualClock(), ttl_ms=1_000, max_entries=10)
    release = asyncio.Event()
    calls = 0

    async def loader() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "book"

    waiters = [asyncio.ensure_future(cache.get_or_load("BTCUSDT", loader)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == ["book"] * 20
    assert calls == 1
    assert await cache.get_or_load("BTCUSDT", loader) == "book"
    assert calls == 1


async def test_failed_load_is_not_cached_and_reaches_every_waiter() -> None:
    cache: L1Cache[str] = L1Cache(clock=ManualClock(), ttl_ms=1_000, max_entries=10)
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise ConnectionError("exchange down")
        return "ok"

    first = asyncio.ensure_future(cache.get_or_load("k", flaky))
    second = asyncio.ensure_future(cache.get_or_load("k", flaky))
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await cache.get_or_load("k", flaky) == "ok"
    assert attempts == 2


def test_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        L1Cache(clock=ManualClock(), ttl_ms=0, max_entries=1)


def test_peek_neither_counts_nor_reorders() -> None:
    clock = ManualClock()
    cache: L1Cache[int] = L1Cache(clock=clock, ttl_ms=100, max_entries=2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.peek("a") == 1 and cache.peek("zz") is None
    assert (cache.hits, cache.misses) == (0, 0)
    cache.set("c", 3)  # "a" was not refreshed by peek, so it is the one evicted
    assert cache.peek("a") is None and cache.peek("b") == 2
    clock.advance(0.2)
    assert cache.peek("b") is None


def test_batch_get_and_set_behave_like_single_calls() -> None:
    """get_many/set_many (one clock reading per batch) keep TTL, LRU order and counters."""
    clocks = ManualClock(), ManualClock()
    single: L1Cache[int] = L1Cache(clock=clocks[0], ttl_ms=100, max_entries=4)
    batch: L1Cache[int] = L1Cache(clock=clocks[1], ttl_ms=100, max_entries=4)
    steps: list[tuple[str, list[str], float]] = [
        ("set", ["a", "b", "c"], 0.0),
        ("get", ["a", "x", "c"], 0.05),
        ("set", ["d", "e"], 0.0),  # five entries: the least recently used (b) goes
        ("get", ["a", "b", "c", "d", "e"], 0.06),  # a and c expired at 0.11
        ("set", ["f", "a"], 0.0),
        ("get", ["f", "a", "d", "e"], 0.0),
    ]
    for op, keys, advance in steps:
        for clock in clocks:
            clock.advance(advance)
        if op == "set":
            items = [(k, ord(k)) for k in keys]
            for k, v in items:
                single.set(k, v)
            batch.set_many(items)
        else:
            assert batch.get_many(keys) == [single.get(k) for k in keys]
    assert (batch.hits, batch.misses, batch.evictions) == (
        single.hits,
        single.misses,
        single.evictions,
    )
    assert batch.hits > 0 and batch.misses > 0 and batch.evictions > 0
    assert list(batch._entries) == list(single._entries)
