"""The orchestrator's schedule of flows due for a fetch."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Schedule(Generic[T]):
    """Items due for a fetch, most urgent priority first and FIFO within one.

    What ``asyncio.PriorityQueue`` did, for a few fixed priorities: a deque each, so a full
    refresh of thousands of symbols costs a deque append and pop per symbol, not a heap push,
    a heap pop and a waiter wake-up each; ``take`` hands a worker a whole batch in one call.
    ``join`` waits until every item taken is done.
    """

    def __init__(self, levels: int) -> None:
        self._levels: list[deque[T]] = [deque() for _ in range(levels)]
        self._size = 0
        self._unfinished = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def qsize(self) -> int:
        return self._size

    def put_many(self, priority: int, items: list[T]) -> None:
        if not items:
            return
        self._levels[priority].extend(items)
        self._size += len(items)
        self._unfinished += len(items)
        self._idle.clear()
        self._ready.set()

    async def take(self, limit: int) -> list[T]:
        """Up to ``limit`` (≥ 1) items, most urgent first, waiting until there is one."""
        while not self._size:
            self._ready.clear()
            await self._ready.wait()
        return self.take_nowait(limit)

    def take_nowait(self, limit: int) -> list[T]:
        """Up to ``limit`` items, most urgent first; empty when none is due."""
        taken: list[T] = []
        for level in self._levels:
            k = min(limit - len(taken), len(level))
            if k == len(level):
                taken.extend(level)
                level.clear()
            else:
                taken.extend(level.popleft() for _ in range(k))
            if len(taken) == limit:
                break
        self._size -= len(taken)
        return taken

    def task_done(self, n: int = 1) -> None:
        self._unfinished -= n
        if self._unfinished <= 0:
            self._unfinished = 0
            self._idle.set()

    async def join(self) -> None:
        await self._idle.wait()
