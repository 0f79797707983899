"""The in-process event bus: typed routes, sequence stamping, backpressure, retries, dead letters.

Delivery rules (DESIGN.md, "Events and the bus"):

* ``subscribe(EventType, fn)`` with a plain function: ``fn`` runs inline inside ``publish``, in
  subscription order. Inline handlers must be CPU-only; one that raises is retried at once (a
  sleep here would stall every publisher) up to ``max_attempts``, then dead-lettered.
* With a coroutine function: the handler gets its own bounded mailbox and consumer task, so it
  sees events in publish order. ``publish`` appends without suspending while the mailbox has
  room and waits (backpressure) when it is full; a waiting publisher keeps its place in line.
  A coroutine handler that raises is retried with exponential backoff, then dead-lettered.
* Dead letters are published as ``DeadLettered`` events (so the event log keeps them), counted,
  and the newest ``dead_letter_size`` are kept in memory for the admin API, each with a stable
  id, the event and the handler that failed: ``retry_dead_letter(id)`` re-delivers the event to
  that handler alone (once, out of publish order), drops the letter on success and keeps it with
  one more attempt on failure.
* Every published event is handed to the recorder (the event log) right after it is stamped,
  before any handler runs; a full recorder makes publishers wait. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import structlog

from quantumtrade.clock import Clock
from quantumtrade.errors import BusClosed
from quantumtrade.events import DeadLettered, Event, encode

log = structlog.get_logger("quantumtrade.bus")

E = TypeVar("E", bound=Event)
InlineHandler = Callable[[Any], None]
AsyncHandler = Callable[[Any], Awaitable[None]]

_force_setattr = msgspec.structs.force_setattr
# Handler time is measured on one event in 64 per event type / subscriber (timing every call
# would cost as much as the dispatch itself).
_TIMING_MASK = 63


class BusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    queue_size: int = msgspec.field(default=10_000)
    """Capacity of each coroutine subscriber's mailbox; when full, publishers wait."""
    max_attempts: int = 3
    """Tries per handler and event before the event is dead-lettered."""
    retry_backoff_ms: float = 10.0
    """First retry delay of a coroutine handler; doubles on each further try."""
    dead_letter_size: int = 1_000
    """Dead letters kept in memory for the admin API (all are counted and logged)."""


class Recorder(Protocol):
    """Receives every published event, in seq order (the event log's writer)."""

    def record(self, event: Event) -> bool:
        """Take the event; False when the recorder is past its bound and publishers must wait."""

    async def wait_room(self) -> None: ...


def handler_name(handler: Callable[..., Any]) -> str:
    owner = getattr(handler, "__self__", None)
    name = getattr(handler, "__qualname__", None) or repr(handler)
    if owner is not None and "." not in name:
        return f"{type(owner).__name__}.{name}"
    return str(name)


class _HandlerStats:
    __slots__ = ("calls_timed", "failures", "time_ns")

    def __init__(self) -> None:
        self.calls_timed = 0
        self.time_ns = 0
        self.failures = 0


@dataclass(slots=True)
class _PendingLetter:
    """A dead letter kept for retry: the event and the one handler that failed on it."""

    id: int
    event: Event
    handler: Callable[[Any], Any]
    name: str
    stats: _HandlerStats
    error: str
    attempts: int
    ts_ns: int


class _Route:
    __slots__ = ("count", "inline", "inline_stats", "mailboxes")

    def __init__(self) -> None:
        self.inline: list[InlineHandler] = []
        self.inline_stats: list[_HandlerStats] = []
        self.mailboxes: list[_Mailbox] = []
        self.count = 0


class _Mailbox:
    """A bounded FIFO for one coroutine subscriber, drained by its own consumer task."""

    __slots__ = (
        "_bus",
        "_getter",
        "_idle",
        "_items",
        "_putters",
        "_task",
        "event_type",
        "handler",
        "maxsize",
        "name",
        "stats",
    )

    def __init__(self, bus: EventBus, event_type: type[Event], handler: AsyncHandler) -> None:
        self._bus = bus
        self.event_type = event_type
        self.handler = handler
        self.name = handler_name(handler)
        self.maxsize = bus.config.queue_size
        self._items: deque[Event] = deque()
        # Publishers waiting for room, with the event each will append (FIFO keeps publish order).
        self._putters: deque[tuple[Event, asyncio.Future[None]]] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.stats = _HandlerStats()

    def __len__(self) -> int:
        return len(self._items) + len(self._putters)

    def offer(self, event: Event) -> bool:
        """Append without waiting; False when the mailbox is full (or others already wait)."""
        if len(self._items) >= self.maxsize or self._putters:
            return False
        self._items.append(event)
        self._idle.clear()
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    async def put(self, event: Event) -> None:
        """Wait for room, then append (the consumer hands our event in on our behalf)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._putters.append((event, fut))
        self._idle.clear()
        try:
            await fut
        except asyncio.CancelledError:
            # Withdraw the event if it was not yet handed in; the publisher was cancelled.
            try:
                self._putters.remove((event, fut))
            except ValueError:
                pass
            raise

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._task = tg.create_task(self._consume(), name=f"bus:{self.name}")

    async def stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        # Publishers still waiting for room (the drain timed out) would otherwise wait forever.
        while self._putters:
            event, fut = self._putters.popleft()
            if not fut.done():
                fut.set_exception(
                    BusClosed(f"bus stopped before {self.name} took {type(event).__name__}")
                )

    async def wait_idle(self) -> None:
        await self._idle.wait()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def _consume(self) -> None:
        items = self._items
        putters = self._putters
        handler = self.handler
        bus = self._bus
        loop = asyncio.get_running_loop()
        stats = self.stats
        n = 0
        while True:
            if not items:
                self._idle.set()
                getter = loop.create_future()
                self._getter = getter
                await getter
                continue
            event = items.popleft()
            if putters:
                waiting_event, fut = putters.popleft()
                items.append(waiting_event)
                if not fut.done():
                    fut.set_result(None)
            n += 1
            try:
                if n & _TIMING_MASK:
                    await handler(event)
                else:
                    t0 = time.perf_counter_ns()
                    await handler(event)
                    stats.time_ns += time.perf_counter_ns() - t0
                    stats.calls_timed += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stats.failures += 1
                await bus._retry_async(self, event, exc)


class EventBus:
    """Typed publish/subscribe inside one process (create it inside the running loop)."""

    def __init__(
        self,
        *,
        clock: Clock,
        config: BusConfig | None = None,
        first_seq: int = 1,
        recorder: Recorder | None = None,
    ) -> None:
        if first_seq < 1:
            raise ValueError(f"first_seq must be at least 1 (seq 0 means unpublished): {first_seq}")
        self.clock = clock
        self.config = config or BusConfig()
        self._seq = itertools.count(first_seq)
        self._next_seq = self._seq.__next__
        self._recorder = recorder
        # Resolved when the last publisher held back by a full recorder goes on to deliver; while
        # one is held, later events queue behind it so handlers still see them in seq order.
        self._recorder_line: asyncio.Future[None] | None = None
        self._routes: dict[type[Event], _Route] = {}
        # The dispatch table publish() reads; emptied on stop so a late publish hits the
        # KeyError path, which refuses it (keeps the closed check off the hot path).
        self._live_routes = self._routes
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready.set_result(None)
        self._ready = ready
        self._inline_stats: dict[str, _HandlerStats] = {}
        self._mailboxes: list[_Mailbox] = []
        self._tg: asyncio.TaskGroup | None = None
        self._closed = False
        self.dead_letters: deque[DeadLettered] = deque(maxlen=self.config.dead_letter_size)
        self.dead_letter_count = 0
        # Letters that can be retried, by id (ids count up from 1 and are never reused); at
        # most dead_letter_size, the oldest dropped first (they stay counted and logged).
        self._pending: dict[int, _PendingLetter] = {}
        self._letter_ids = itertools.count(1)
        self.dead_letter_retries = {"ok": 0, "failed": 0}

    # --- wiring -------------------------------------------------------------------------

    def set_recorder(self, recorder: Recorder | None) -> None:
        self._recorder = recorder

    def subscribe(self, event_type: type[E], handler: Callable[[E], Any]) -> None:
        """Deliver every ``event_type`` to ``handler`` (inline if plain, own task if async)."""
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"subscribe() needs an Event subclass, got {event_type!r}")
        route = self._route(event_type)
        if inspect.iscoroutinefunction(handler):
            mailbox = _Mailbox(self, event_type, handler)
            route.mailboxes.append(mailbox)
            self._mailboxes.append(mailbox)
            if self._tg is not None:
                mailbox.start(self._tg)
        else:
            route.inline.append(handler)
            stats = self._inline_stats.setdefault(
                f"{event_type.__name__}:{handler_name(handler)}", _HandlerStats()
            )
            route.inline_stats.append(stats)

    def _route(self, event_type: type[Event]) -> _Route:
        route = self._routes.get(event_type)
        if route is None:
            route = self._routes[event_type] = _Route()
        return route

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Start one consumer task per coroutine subscriber inside ``tg``."""
        self._tg = tg
        for mailbox in self._mailboxes:
            mailbox.start(tg)

    # --- publishing ---------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the newest published event (0 when none)."""
        seq = self._next_seq()
        self._seq = itertools.count(seq)
        self._next_seq = self._seq.__next__
        return seq - 1

    def publish(self, event: Event) -> Awaitable[None]:
        """Stamp ``event`` with the next seq, record it, and deliver it; always ``await`` it.

        The common case (recorder and mailboxes have room, no handler fails) completes here,
        synchronously, and returns an already-finished future, which is several times cheaper
        to await than a coroutine. Anything that must wait (a full recorder or mailbox, a
        dead letter to publish) returns a coroutine that finishes the delivery in order.
        """
        try:
            route = self._live_routes[type(event)]
        except KeyError:
            route = self._new_route(type(event))
        if event.seq:
            raise ValueError(f"{type(event).__name__} seq={event.seq} was already published")
        seq = self._next_seq()
        _force_setattr(event, "seq", seq)
        count = route.count = route.count + 1
        recorder = self._recorder
        if recorder is not None:
            room = recorder.record(event)
            if not room or self._recorder_line is not None:
                return self._finish_delivery(event, route, 0, line=self._join_line(not room))
        inline = route.inline
        if inline:
            if count & _TIMING_MASK:
                for handler in inline:
                    try:
                        handler(event)
                    except Exception as exc:
                        # Rare: finish this event's delivery on the careful path.
                        return self._finish_delivery(
                            event, route, inline.index(handler), first_error=exc
                        )
            else:
                failed = self._deliver_timed(route, event)
                if failed is not None:
                    return self._finish_delivery(event, route, failed[0], first_error=failed[1])
        mailboxes = route.mailboxes
        if mailboxes:
            for mailbox in mailboxes:
                if not mailbox.offer(event):
                    return self._finish_delivery(event, route, len(inline), mailbox)
        return self._ready

    async def _finish_delivery(
        self,
        event: Event,
        route: _Route,
        first_inline: int,
        first_mailbox: _Mailbox | None = None,
        *,
        first_error: Exception | None = None,
        line: tuple[asyncio.Future[None] | None, asyncio.Future[None], bool] | None = None,
    ) -> None:
        """The careful tail of ``publish``: wait in the recorder's ``line``, run the inline
        handlers from ``first_inline`` on (timed, retried, dead-lettered; ``first_error`` is how
        the first of them already failed), then offer the event to the mailboxes from
        ``first_mailbox`` on, waiting for room.
        """
        if line is not None:
            await self._wait_in_line(*line)
        letters: list[tuple[InlineHandler, _HandlerStats, Exception]] = []
        for i in range(first_inline, len(route.inline)):
            handler = route.inline[i]
            try:
                if first_error is not None:
                    failed, first_error = first_error, None
                    raise failed
                handler(event)
            except Exception as exc:
                stats = route.inline_stats[i]
                failure = self._retry_inline(handler, stats, event, exc)
                if failure is not None:
                    letters.append((handler, stats, failure))
        mailboxes = route.mailboxes
        start = mailboxes.index(first_mailbox) if first_mailbox is not None else 0
        for mailbox in mailboxes[start:]:
            if not mailbox.offer(event):
                await mailbox.put(event)
        for failed_handler, stats, error in letters:
            await self._dead_letter(failed_handler, stats, event, error)

    def _join_line(
        self, wait_room: bool
    ) -> tuple[asyncio.Future[None] | None, asyncio.Future[None], bool]:
        """Take a place behind the publishers already held back by the recorder."""
        ahead = self._recorder_line
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recorder_line = mine
        return ahead, mine, wait_room

    async def _wait_in_line(
        self, ahead: asyncio.Future[None] | None, mine: asyncio.Future[None], wait_room: bool
    ) -> None:
        """Wait until those ahead have delivered and, if ours filled it, the recorder has room.

        Our place is released before we deliver, without suspending in between, so the next
        in line delivers after us; mailboxes keep that order by themselves.
        """
        try:
            if ahead is not None and not ahead.done():
                await asyncio.shield(ahead)
            recorder = self._recorder
            if wait_room and recorder is not None:
                await recorder.wait_room()
        except BaseException:
            # A cancelled publisher leaves the line, but those behind it still wait for those ahead.
            if ahead is not None and not ahead.done():
                ahead.add_done_callback(lambda _: self._leave_line(mine))
            else:
                self._leave_line(mine)
            raise
        self._leave_line(mine)

    def _leave_line(self, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._recorder_line is mine:
            self._recorder_line = None

    def _new_route(self, event_type: type[Event]) -> _Route:
        if self._closed:
            raise BusClosed(f"bus is stopped; cannot publish {event_type.__name__}")
        return self._route(event_type)

    @staticmethod
    def _deliver_timed(route: _Route, event: Event) -> tuple[int, Exception] | None:
        """Run the inline handlers, timing each; (index, error) of the first that raises."""
        for i, handler in enumerate(route.inline):
            stats = route.inline_stats[i]
            t0 = time.perf_counter_ns()
            try:
                handler(event)
            except Exception as exc:
                return i, exc
            stats.time_ns += time.perf_counter_ns() - t0
            stats.calls_timed += 1
        return None

    def _retry_inline(
        self, handler: InlineHandler, stats: _HandlerStats, event: Event, exc: Exception
    ) -> Exception | None:
        """Retry a failed inline handler at once; the last error to dead-letter, or None."""
        stats.failures += 1
        for _ in range(1, self.config.max_attempts):
            try:
                handler(event)
                return None
            except Exception as again:
                exc = again
                stats.failures += 1
        return exc

    async def _retry_async(self, mailbox: _Mailbox, event: Event, exc: Exception) -> None:
        delay = self.config.retry_backoff_ms / 1000.0
        for _ in range(1, self.config.max_attempts):
            await asyncio.sleep(delay)
            delay *= 2
            try:
                await mailbox.handler(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception as again:
                exc = again
                mailbox.stats.failures += 1
        await self._dead_letter(mailbox.handler, mailbox.stats, event, exc)

    async def _dead_letter(
        self,
        failed: Callable[[Any], Any],
        stats: _HandlerStats,
        event: Event,
        exc: Exception,
    ) -> None:
        self.dead_letter_count += 1
        handler = handler_name(failed)
        error = f"{type(exc).__name__}: {exc}"
        letter_id = next(self._letter_ids)
        log.error(
            "handler_failed_dead_lettered",
            letter_id=letter_id,
            handler=handler,
            event_type=type(event).__name__,
            seq=event.seq,
            error=error,
            attempts=self.config.max_attempts,
        )
        letter = DeadLettered(
            ts_ns=self.clock.now_ns(),
            event_type=type(event).__name__,
            event_seq=event.seq,
            handler=handler,
            error=error[:500],
            attempts=self.config.max_attempts,
        )
        self.dead_letters.append(letter)
        self._keep_pending(
            _PendingLetter(
                id=letter_id,
                event=event,
                handler=failed,
                name=handler,
                stats=stats,
                error=letter.error,
                attempts=letter.attempts,
                ts_ns=letter.ts_ns,
            )
        )
        if isinstance(event, DeadLettered) or self._closed:
            return  # a failing dead-letter handler must not loop; the log line above keeps it
        await self.publish(letter)

    def _keep_pending(self, letter: _PendingLetter) -> None:
        pending = self._pending
        pending[letter.id] = letter
        while len(pending) > self.config.dead_letter_size:
            del pending[min(pending)]

    def dead_letter_list(self) -> list[dict[str, Any]]:
        """The dead letters kept for retry, oldest first, as JSON-ready dicts."""
        return [self._describe(self._pending[i]) for i in sorted(self._pending)]

    @staticmethod
    def _describe(letter: _PendingLetter) -> dict[str, Any]:
        return {
            "id": letter.id,
            "event_type": type(letter.event).__name__,
            "event": json.loads(encode(letter.event)),
            "handler": letter.name,
            "error": letter.error,
            "attempts": letter.attempts,
            "ts_ns": letter.ts_ns,
        }

    async def retry_dead_letter(self, letter_id: int) -> dict[str, Any]:
        """Deliver dead letter ``letter_id`` once more to the handler that failed on it.

        Returns ``{"id", "outcome": "ok"|"failed", "attempts", "error"}``; on success the letter
        is dropped, on failure it stays with one more attempt and the new error. Raises
        ``KeyError`` for an id not kept (never assigned, dropped, retried already, or being
        retried right now: the letter is taken out while its handler runs).
        """
        letter = self._pending.pop(letter_id)
        try:
            result = letter.handler(letter.event)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            self._keep_pending(letter)
            raise
        except Exception as exc:
            letter.stats.failures += 1
            letter.attempts += 1
            letter.error = f"{type(exc).__name__}: {exc}"[:500]
            self._keep_pending(letter)
            self.dead_letter_retries["failed"] += 1
            log.warning(
                "dead_letter_retry_failed",
                letter_id=letter.id,
                handler=letter.name,
                event_type=type(letter.event).__name__,
                seq=letter.event.seq,
                error=letter.error,
                attempts=letter.attempts,
            )
            return {
                "id": letter.id,
                "outcome": "failed",
                "attempts": letter.attempts,
                "error": letter.error,
            }
        self.dead_letter_retries["ok"] += 1
        log.info(
            "dead_letter_retried",
            letter_id=letter.id,
            handler=letter.name,
            event_type=type(letter.event).__name__,
            seq=letter.event.seq,
        )
        return {"id": letter.id, "outcome": "ok", "attempts": letter.attempts + 1, "error": None}

    async def retry_dead_letters(self) -> list[dict[str, Any]]:
        """Retry every dead letter kept now, oldest first (see ``retry_dead_letter``)."""
        results = []
        for letter_id in sorted(self._pending):
            if letter_id in self._pending:  # a concurrent retry may have taken it
                results.append(await self.retry_dead_letter(letter_id))
        return results

    # --- lifecycle ----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until every mailbox is empty and its handler idle (handlers may publish more)."""
        while True:
            busy = [mb for mb in self._mailboxes if not mb.idle]
            if not busy:
                # One more pass: a consumer that just went idle may have published elsewhere.
                await asyncio.sleep(0)
                if all(mb.idle for mb in self._mailboxes):
                    return
                continue
            for mailbox in busy:
                await mailbox.wait_idle()

    async def stop(self, timeout: float = 5.0) -> None:
        """Drain (bounded by ``timeout``), refuse further publishing, stop the consumer tasks."""
        try:
            await asyncio.wait_for(self.drain(), timeout)
        except TimeoutError:
            stuck = {mb.name: len(mb) for mb in self._mailboxes if not mb.idle}
            log.error("bus_drain_timeout", pending=stuck)
        self._closed = True
        self._live_routes = {}
        for mailbox in self._mailboxes:
            await mailbox.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- introspection ------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Events published so far, by event type name."""
        return {t.__name__: r.count for t, r in self._routes.items() if r.count}

    def queue_depths(self) -> dict[str, int]:
        return {f"{mb.event_type.__name__}:{mb.name}": len(mb) for mb in self._mailboxes}

    def handler_stats(self) -> dict[str, dict[str, float]]:
        """Per handler: sampled mean handler time (µs), calls timed and their total time (s),
        failures (every failed attempt, retries included; not sampled)."""
        out: dict[str, dict[str, float]] = {}
        all_stats = list(self._inline_stats.items()) + [
            (f"{mb.event_type.__name__}:{mb.name}", mb.stats) for mb in self._mailboxes
        ]
        for name, s in all_stats:
            out[name] = {
                "mean_us": (s.time_ns / s.calls_timed / 1000.0) if s.calls_timed else 0.0,
                "calls_timed": float(s.calls_timed),
                "seconds_timed": s.time_ns / 1e9,
                "failures": float(s.failures),
            }
        return out
