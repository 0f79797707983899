"""L1: an in-memory cache with a TTL, an LRU size bound and single-flight loading.

``get_or_load(key, loader)`` answers from memory while the entry is fresh; on a miss, the
first caller runs ``loader`` and every concurrent caller for the same key awaits that one
result (one fetch per key, however many ask at once). A loader that raises is not cached:
its error goes to every waiter and the next call tries again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from quantumtrade.clock import Clock

V = TypeVar("V")


class L1Cache(Generic[V]):
    def __init__(self, *, clock: Clock, ttl_ms: int, max_entries: int) -> None:
        if ttl_ms <= 0 or max_entries <= 0:
            raise ValueError("ttl_ms and max_entries must be positive")
        self.clock = clock
        self.ttl_ns = ttl_ms * 1_000_000
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, V]] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Future[V]] = {}
        self.hits = 0
        self.misses = 0
        self.loads = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        """The fresh value for ``key``, or None (counted as a hit or a miss)."""
        entry = self._entries.get(key)
        if entry is not None:
            expires, value = entry
            if expires > self.clock.now_ns():
                self._entries.move_to_end(key)
                self.hits += 1
                return value
            del self._entries[key]
        self.misses += 1
        return None

    def get_many(self, keys: Sequence[Hashable]) -> list[V | None]:
        """``get`` for many keys with one clock reading (a batch of thousands of symbols)."""
        now = self.clock.now_ns()
        entries = self._entries
        out: list[V | None] = []
        hits = 0
        for key in keys:
            entry = entries.get(key)
            if entry is not None:
                if entry[0] > now:
                    entries.move_to_end(key)
                    hits += 1
                    out.append(entry[1])
                    continue
                del entries[key]
            out.append(None)
        self.hits += hits
        self.misses += len(keys) - hits
        return out

    def set_many(self, items: Sequence[tuple[Hashable, V]]) -> None:
        """``set`` for many entries with one clock reading."""
        expires = self.clock.now_ns() + self.ttl_ns
        entries = self._entries
        for key, value in items:
            entries[key] = (expires, value)
            entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    def peek(self, key: Hashable, *, stale_ok: bool = False) -> V | None:
        """The fresh value for ``key`` without counting a hit or miss or touching LRU order;
        with ``stale_ok`` also an expired value not yet evicted (to serve during an outage)."""
        entry = self._entries.get(key)
        if entry is not None and (stale_ok or entry[0] > self.clock.now_ns()):
            return entry[1]
        return None

    def set(self, key: Hashable, value: V) -> None:
        entries = self._entries
        entries[key] = (self.clock.now_ns() + self.ttl_ns, value)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    async def get_or_load(self, key: Hashable, loader: Callable[[], Awaitable[V]]) -> V:
        value = self.get(key)
        if value is not None:
            return value
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            self.loads += 1
            value = await loader()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here, so a failed load with no waiters is not logged
            raise
        else:
            self.set(key, value)
            fut.set_result(value)
            return value
        finally:
            del self._inflight[key]

    def stats(self) -> dict[str, float]:
        lookups = self.hits + self.misses
        return {
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / lookups if lookups else 0.0,
            "loads": self.loads,
            "evictions": self.evictions,
        }
