"""Time as a dependency: the wall clock in live mode, a manual clock in tests and replay."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the epoch (UTC)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class WallClock:
    """Real time: ``time.time_ns`` and ``asyncio.sleep``."""

    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; sleepers wake when ``advance`` passes their deadline.

    Used by tests (no real sleeps) and by replay, where the data drives time.
    """

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._now = start_ns
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_ns(self) -> int:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + int(seconds * 1e9), next(self._order), fut))
        await fut

    def set(self, now_ns: int) -> None:
        """Move to ``now_ns`` (never backwards) and wake every sleeper that is due."""
        if now_ns < self._now:
            raise ValueError(f"clock cannot go backwards: {now_ns} < {self._now}")
        self._now = now_ns
        while self._sleepers and self._sleepers[0][0] <= now_ns:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        self.set(self._now + int(seconds * 1e9))

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())
