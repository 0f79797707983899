"""The outbox: events raised in synchronous callbacks, published on the bus in order.

A circuit breaker changes state inside plain (non-async) code paths, where ``await
bus.publish`` cannot run. Those callbacks ``post`` the event here; one task publishes them in
the order they came. A full outbox counts and logs the event it could not take: never silent.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog

from quantumtrade.bus import EventBus
from quantumtrade.events import Event

log = structlog.get_logger("quantumtrade.outbox")

OUTBOX_SIZE = 10_000


class Outbox:
    def __init__(self, bus: EventBus, *, size: int = OUTBOX_SIZE) -> None:
        self.bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self._task: asyncio.Task[None] | None = None
        self.overflow = 0

    def post(self, event: Event) -> None:
        """Queue ``event`` for publishing (from synchronous code)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflow += 1
            log.error("outbox_full_event_not_published", event_type=type(event).__name__)

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._task = tg.create_task(self._publish(), name="outbox")

    async def _publish(self) -> None:
        while True:
            event = await self._queue.get()
            await self.bus.publish(event)
            self._queue.task_done()

    async def stop(self, timeout: float) -> None:
        """Publish what is queued (within ``timeout`` seconds), then stop the task."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
