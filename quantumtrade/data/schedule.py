"""The orchestrator's schedule of symbols due for a fetch."""

from __future__ import annotations

import asyncio
from collections import deque


class Schedule:
    """Symbols due for a fetch, most urgent priority first and FIFO within one; bounded.

    What ``asyncio.PriorityQueue`` did, for three fixed priorities: a deque each, so a full
    refresh of thousands of symbols costs a deque append and pop per symbol, not a heap push,
    a heap pop and a waiter wake-up each. ``join`` waits until every symbol taken is done.
    """

    def __init__(self, levels: int) -> None:
        self._levels: list[deque[str]] = [deque() for _ in range(levels)]
        self._size = 0
        self._unfinished = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def qsize(self) -> int:
        return self._size

    def put(self, priority: int, symbol: str) -> None:
        self._levels[priority].append(symbol)
        self._size += 1
        self._unfinished += 1
        self._idle.clear()
        self._ready.set()

    async def get(self) -> str:
        """The most urgent symbol, waiting until there is one."""
        while not self._size:
            self._ready.clear()
            await self._ready.wait()
        return self._pop()

    def get_nowait(self) -> str | None:
        return self._pop() if self._size else None

    def _pop(self) -> str:
        for level in self._levels:
            if level:
                self._size -= 1
                return level.popleft()
        raise AssertionError("schedule size out of step with its levels")

    def task_done(self, n: int = 1) -> None:
        self._unfinished -= n
        if self._unfinished <= 0:
            self._unfinished = 0
            self._idle.set()

    async def join(self) -> None:
        await self._idle.wait()
