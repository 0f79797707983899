"""EventBus delivery rules: seq stamping, inline and mailbox delivery, backpressure, retries and
dead letters, introspection, drain/stop, and the recorder (see the bus module docstring)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from quantumtrade.bus import BusConfig, EventBus, handler_name
from quantumtrade.clock import ManualClock
from quantumtrade.errors import BusClosed
from quantumtrade.events import Command, DeadLettered, Event, SourceFailed, TickerUpdated

# A deadlock must fail the test, not hang it (pytest-timeout's alarm cannot interrupt the loop).
DEADLINE_S = 10.0


def tick(i: int = 0, source: str = "test") -> TickerUpdated:
    return TickerUpdated(ts_ns=i, symbol="BTCUSDT", source=source, bid=1.0, ask=1.1, last=1.05)


def cmd(name: str = "ping") -> Command:
    return Command(ts_ns=0, name=name)


def failure(i: int = 0) -> SourceFailed:
    return SourceFailed(ts_ns=i, source="synthetic", symbol="ETHUSDT", error="timeout")


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(bus: EventBus) -> AsyncIterator[asyncio.TaskGroup]:
    """Start the bus's consumer tasks; drain and stop it when the block ends."""
    async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as tg:
        bus.start(tg)
        yield tg
        await bus.drain()
        await bus.stop()


class ListRecorder:
    """A bounded in-memory event log: past ``bound`` unflushed events it asks publishers to wait."""

    def __init__(self, bound: int = 1_000_000) -> None:
        self.bound = bound
        self.events: list[Event] = []
        self.pending: list[Event] = []
        self.waits = 0
        self._room = asyncio.Event()
        self._room.set()

    def record(self, event: Event) -> bool:
        self.events.append(event)
        self.pending.append(event)
        if len(self.pending) >= self.bound:
            self._room.clear()
            return False
        return True

    async def wait_room(self) -> None:
        self.waits += 1
        await self._room.wait()

    def flush(self) -> None:
        self.pending.clear()
        self._room.set()


# --- seq --------------------------------------------------------------------------------------


async def test_seq_is_strictly_increasing_across_types_from_first_seq() -> None:
    bus = EventBus(clock=ManualClock(), first_seq=100)
    assert bus.last_seq == 99
    seen: list[Event] = []
    for event_type in (TickerUpdated, Command, SourceFailed):
        bus.subscribe(event_type, seen.append)
    published: list[Event] = []
    for i in range(30):
        event = (tick(i), cmd(), failure(i))[i % 3]
        await bus.publish(event)
        published.append(event)
    assert [e.seq for e in published] == list(range(100, 130))
    assert seen == published
    assert bus.last_seq == 129
    assert bus.last_seq == 129  # reading it does not consume a seq
    next_event = cmd()
    await bus.publish(next_event)
    assert next_event.seq == 130


def test_first_seq_must_be_positive() -> None:
    async def build() -> None:
        EventBus(clock=ManualClock(), first_seq=0)

    with pytest.raises(ValueError, match="first_seq"):
        asyncio.run(build())


async def test_seq_is_stamped_before_any_handler_sees_the_event() -> None:
    recorder = ListRecorder()
    bus = EventBus(clock=ManualClock(), recorder=recorder)
    at_record: list[int] = []
    seen_inline: list[int] = []
    seen_async: list[int] = []
    original_record = recorder.record

    def record(event: Event) -> bool:
        at_record.append(event.seq)
        return original_record(event)

    recorder.record = record  # type: ignore[method-assign]

    async def on_tick(event: TickerUpdated) -> None:
        seen_async.append(event.seq)

    bus.subscribe(TickerUpdated, lambda e: seen_inline.append(e.seq))
    bus.subscribe(TickerUpdated, on_tick)
    async with running(bus):
        events = [tick(i) for i in range(5)]
        assert all(e.seq == 0 for e in events)
        for event in events:
            await bus.publish(event)
    assert at_record == seen_inline == seen_async == [1, 2, 3, 4, 5]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]


async def test_publishing_the_same_event_twice_raises() -> None:
    bus = EventBus(clock=ManualClock())
    seen: list[TickerUpdated] = []
    bus.subscribe(TickerUpdated, seen.append)
    event = tick()
    await bus.publish(event)
    with pytest.raises(ValueError, match="already published"):
        await bus.publish(event)
    assert event.seq == 1
    assert seen == [event]
    assert bus.counts() == {"TickerUpdated": 1}
    assert bus.last_seq == 1


async def test_publishing_after_stop_raises_bus_closed() -> None:
    bus = EventBus(clock=ManualClock())
    seen: list[TickerUpdated] = []
    bus.subscribe(TickerUpdated, seen.append)
    async with running(bus):
        await bus.publish(tick())
    assert bus.closed
    with pytest.raises(BusClosed):
        await bus.publish(tick())  # a subscribed type
    with pytest.raises(BusClosed):
        await bus.publish(cmd())  # a type never seen before
    assert len(seen) == 1
    assert bus.last_seq == 1


# --- inline subscribers ---------------------------------------------------------------------


async def test_plain_subscribers_run_inline_in_subscription_order() -> None:
    bus = EventBus(clock=ManualClock())
    calls: list[tuple[str, int]] = []

    def handler(name: str) -> Callable[[TickerUpdated], None]:
        return lambda event: calls.append((name, event.seq))

    for name in ("first", "second", "third"):
        bus.subscribe(TickerUpdated, handler(name))
    await bus.publish(tick())
    # No yield to the loop in between: the handlers ran inside publish.
    assert calls == [("first", 1), ("second", 1), ("third", 1)]
    await bus.publish(tick())
    assert calls[3:] == [("first", 2), ("second", 2), ("third", 2)]


async def test_only_subscribers_of_the_event_class_are_called() -> None:
    bus = EventBus(clock=ManualClock())
    ticks: list[Event] = []
    commands: list[Event] = []
    async_commands: list[Event] = []

    async def on_command(event: Command) -> None:
        async_commands.append(event)

    bus.subscribe(TickerUpdated, ticks.append)
    bus.subscribe(Command, commands.append)
    bus.subscribe(Command, on_command)
    async with running(bus):
        for i in range(10):
            await bus.publish(tick(i))
        await bus.publish(failure())  # nobody listens: counted, delivered nowhere
    assert len(ticks) == 10 and all(isinstance(e, TickerUpdated) for e in ticks)
    assert commands == [] and async_commands == []
    assert bus.counts() == {"TickerUpdated": 10, "SourceFailed": 1}


async def test_subscribe_refuses_what_is_not_an_event_class() -> None:
    bus = EventBus(clock=ManualClock())
    with pytest.raises(TypeError):
        bus.subscribe(int, print)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        bus.subscribe(tick(), print)  # type: ignore[arg-type]


# --- coroutine subscribers ------------------------------------------------------------------


async def test_coroutine_subscribers_see_concurrent_producers_in_publish_order() -> None:
    per_producer, producers = 2_000, 3
    bus = EventBus(clock=ManualClock(), config=BusConfig(queue_size=16))
    fast: list[TickerUpdated] = []
    slow: list[TickerUpdated] = []
    inline: list[TickerUpdated] = []

    async def on_tick_fast(event: TickerUpdated) -> None:
        fast.append(event)

    async def on_tick_slow(event: TickerUpdated) -> None:
        if event.seq % 7 == 0:
            await asyncio.sleep(0)
        slow.append(event)

    async def produce(name: str) -> None:
        for i in range(per_producer):
            await bus.publish(tick(i, source=name))
            if i % 5 == 0:
                await asyncio.sleep(0)

    bus.subscribe(TickerUpdated, on_tick_fast)
    bus.subscribe(TickerUpdated, on_tick_slow)
    bus.subscribe(TickerUpdated, inline.append)
    async with running(bus) as tg:
        for p in range(producers):
            tg.create_task(produce(f"p{p}"))
        await settle()
    every_seq = list(range(1, per_producer * producers + 1))
    for seen in (fast, slow, inline):
        assert [e.seq for e in seen] == every_seq
        for p in range(producers):
            assert [e.ts_ns for e in seen if e.source == f"p{p}"] == list(range(per_producer))
    assert bus.counts() == {"TickerUpdated": per_producer * producers}


async def test_a_coroutine_subscriber_added_after_start_gets_its_own_task() -> None:
    bus = EventBus(clock=ManualClock())
    seen: list[int] = []

    async def on_command(event: Command) -> None:
        seen.append(event.seq)

    async with running(bus):
        bus.subscribe(Command, on_command)
        for _ in range(3):
            await bus.publish(cmd())
    assert seen == [1, 2, 3]


# --- backpressure ---------------------------------------------------------------------------


async def test_a_full_mailbox_makes_the_publisher_wait_and_drops_nothing() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(queue_size=2))
    release = asyncio.Event()
    seen: list[int] = []
    published: list[int] = []

    async def blocked(event: TickerUpdated) -> None:
        await release.wait()
        seen.append(event.seq)

    async def produce(n: int) -> None:
        for i in range(n):
            event = tick(i)
            await bus.publish(event)
            published.append(event.seq)

    bus.subscribe(TickerUpdated, blocked)
    key = f"TickerUpdated:{handler_name(blocked)}"
    async with running(bus) as tg:
        producer = tg.create_task(produce(10))
        await settle()
        # Event 1 is in the handler, 2 and 3 fill the mailbox, the 4th publish cannot complete.
        assert not producer.done()
        assert published == [1, 2, 3]
        assert bus.last_seq == 4
        assert bus.queue_depths() == {key: 3}  # two queued plus one publisher waiting
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(producer), timeout=0.01)
        assert published == [1, 2, 3]
        assert seen == []

        release.set()
        await producer
    assert seen == list(range(1, 11))
    assert published == seen
    assert bus.queue_depths() == {key: 0}
    assert bus.counts() == {"TickerUpdated": 10}


async def test_a_cancelled_blocked_publisher_leaves_the_bus_working() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(queue_size=2))
    release = asyncio.Event()
    seen: list[int] = []

    async def blocked(event: TickerUpdated) -> None:
        await release.wait()
        seen.append(event.seq)

    async def publish_one(event: Event) -> None:
        await bus.publish(event)

    bus.subscribe(TickerUpdated, blocked)
    key = f"TickerUpdated:{handler_name(blocked)}"
    async with running(bus) as tg:
        for i in range(3):
            await bus.publish(tick(i))  # 1 in the handler, 2 and 3 fill the mailbox
            await settle()
        doomed = tg.create_task(publish_one(tick(3)))  # seq 4: waits for room
        await settle()
        behind = tg.create_task(publish_one(tick(4)))  # seq 5: waits behind it
        await settle()
        assert not doomed.done() and not behind.done()
        assert bus.queue_depths() == {key: 4}

        doomed.cancel()
        await settle()
        assert doomed.cancelled()
        assert not behind.done()
        assert bus.queue_depths() == {key: 3}  # seq 4 was withdrawn, seq 5 keeps its place

        release.set()
        await behind
        await bus.publish(tick(5))  # seq 6: the bus still delivers
    assert seen == [1, 2, 3, 5, 6]
    assert bus.counts() == {"TickerUpdated": 6}


async def test_stop_refuses_publishers_still_waiting_when_the_drain_times_out() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(queue_size=1))
    never = asyncio.Event()
    outcome: list[BaseException] = []

    async def stuck(event: TickerUpdated) -> None:
        await never.wait()

    async def produce() -> None:
        try:
            for i in range(5):
                await bus.publish(tick(i))
        except BusClosed as exc:
            outcome.append(exc)

    bus.subscribe(TickerUpdated, stuck)
    async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as tg:
        bus.start(tg)
        producer = tg.create_task(produce())
        await settle()
        assert not producer.done()
        await bus.stop(timeout=0.01)
        await producer
    assert len(outcome) == 1 and isinstance(outcome[0], BusClosed)
    assert bus.closed


# --- retries and dead letters ---------------------------------------------------------------


async def test_an_always_failing_plain_handler_is_dead_lettered_after_max_attempts() -> None:
    n = 70  # past 64, so both the untimed and the sampled (timed) dispatch paths fail
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=3))
    order: list[str] = []
    attempts: dict[int, int] = {}
    letters: list[DeadLettered] = []

    def before(event: TickerUpdated) -> None:
        order.append("before")

    def broken(event: TickerUpdated) -> None:
        order.append("broken")
        attempts[event.seq] = attempts.get(event.seq, 0) + 1
        raise RuntimeError(f"boom {event.seq}")

    def after(event: TickerUpdated) -> None:
        order.append("after")

    bus.subscribe(TickerUpdated, before)
    bus.subscribe(TickerUpdated, broken)
    bus.subscribe(TickerUpdated, after)
    bus.subscribe(DeadLettered, letters.append)

    await bus.publish(tick(0))
    assert order == ["before", "broken", "broken", "broken", "after"]
    assert len(letters) == 1  # published before publish returned
    letter = letters[0]
    assert letter.event_type == "TickerUpdated"
    assert letter.event_seq == 1
    assert letter.handler == handler_name(broken)
    assert letter.error == "RuntimeError: boom 1"
    assert letter.attempts == 3
    assert letter.seq == 2

    for i in range(1, n):
        await bus.publish(tick(i))
    ticks = list(attempts)
    assert ticks == [s for s in range(1, 2 * n, 2)]  # each tick's letter takes the next seq
    assert all(count == 3 for count in attempts.values())
    assert order.count("before") == order.count("after") == n
    assert [d.event_seq for d in letters] == ticks
    assert list(bus.dead_letters) == letters
    assert bus.dead_letter_count == n
    assert bus.counts() == {"TickerUpdated": n, "DeadLettered": n}
    stats = bus.handler_stats()
    assert stats[f"TickerUpdated:{handler_name(broken)}"]["failures"] == 3 * n
    assert stats[f"TickerUpdated:{handler_name(after)}"]["failures"] == 0


async def test_an_always_failing_coroutine_handler_is_dead_lettered_after_max_attempts() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=4, retry_backoff_ms=0.05))
    attempts: dict[int, int] = {}
    others: list[int] = []
    letters: list[DeadLettered] = []

    async def broken(event: TickerUpdated) -> None:
        attempts[event.seq] = attempts.get(event.seq, 0) + 1
        raise ValueError("bad payload")

    async def healthy(event: TickerUpdated) -> None:
        others.append(event.seq)

    bus.subscribe(TickerUpdated, broken)
    bus.subscribe(TickerUpdated, healthy)
    bus.subscribe(DeadLettered, letters.append)
    async with running(bus):
        for i in range(3):
            await bus.publish(tick(i))
    assert attempts == {1: 4, 2: 4, 3: 4}
    assert others == [1, 2, 3]
    assert [d.event_seq for d in letters] == [1, 2, 3]
    assert all(d.handler == handler_name(broken) and d.attempts == 4 for d in letters)
    assert all(d.error == "ValueError: bad payload" for d in letters)
    assert bus.dead_letter_count == 3
    assert list(bus.dead_letters) == letters
    stats = bus.handler_stats()
    assert stats[f"TickerUpdated:{handler_name(broken)}"]["failures"] == 12
    assert stats[f"TickerUpdated:{handler_name(healthy)}"]["failures"] == 0


async def test_a_handler_that_fails_once_then_succeeds_is_not_dead_lettered() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=3, retry_backoff_ms=0.05))
    plain_calls: list[int] = []
    async_calls: list[int] = []
    letters: list[DeadLettered] = []

    def flaky_plain(event: Command) -> None:
        plain_calls.append(event.seq)
        if plain_calls.count(event.seq) == 1:
            raise ConnectionError("transient")

    async def flaky_async(event: Command) -> None:
        async_calls.append(event.seq)
        if async_calls.count(event.seq) == 1:
            raise ConnectionError("transient")

    bus.subscribe(Command, flaky_plain)
    bus.subscribe(Command, flaky_async)
    bus.subscribe(DeadLettered, letters.append)
    async with running(bus):
        await bus.publish(cmd())
        await bus.publish(cmd())
    assert plain_calls == [1, 1, 2, 2]
    assert async_calls == [1, 1, 2, 2]
    assert letters == [] and bus.dead_letter_count == 0 and list(bus.dead_letters) == []
    assert "DeadLettered" not in bus.counts()
    stats = bus.handler_stats()
    assert stats[f"Command:{handler_name(flaky_plain)}"]["failures"] == 2
    assert stats[f"Command:{handler_name(flaky_async)}"]["failures"] == 2


async def test_a_failing_plain_dead_letter_handler_does_not_loop() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=2))
    letter_calls: list[int] = []

    def broken(event: TickerUpdated) -> None:
        raise RuntimeError("boom")

    def broken_letters(event: DeadLettered) -> None:
        letter_calls.append(event.seq)
        raise RuntimeError("cannot even dead-letter")

    bus.subscribe(TickerUpdated, broken)
    bus.subscribe(DeadLettered, broken_letters)
    await asyncio.wait_for(bus.publish(tick()), timeout=DEADLINE_S)
    assert letter_calls == [2, 2]
    assert bus.counts() == {"TickerUpdated": 1, "DeadLettered": 1}
    assert bus.dead_letter_count == 2
    kept = list(bus.dead_letters)
    assert [(d.event_type, d.event_seq) for d in kept] == [
        ("TickerUpdated", 1),
        ("DeadLettered", 2),
    ]
    assert bus.last_seq == 2


async def test_a_failing_coroutine_dead_letter_handler_does_not_loop() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=2, retry_backoff_ms=0.05))
    letter_calls: list[int] = []

    async def broken(event: TickerUpdated) -> None:
        raise RuntimeError("boom")

    async def broken_letters(event: DeadLettered) -> None:
        letter_calls.append(event.seq)
        raise RuntimeError("cannot even dead-letter")

    bus.subscribe(TickerUpdated, broken)
    bus.subscribe(DeadLettered, broken_letters)
    async with running(bus):
        await bus.publish(tick())
    assert letter_calls == [2, 2]
    assert bus.counts() == {"TickerUpdated": 1, "DeadLettered": 1}
    assert bus.dead_letter_count == 2
    assert [d.event_type for d in bus.dead_letters] == ["TickerUpdated", "DeadLettered"]


async def test_dead_letters_kept_in_memory_are_bounded_but_all_counted() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=1, dead_letter_size=2))

    def broken(event: Command) -> None:
        raise RuntimeError("boom")

    bus.subscribe(Command, broken)
    for _ in range(5):
        await bus.publish(cmd())
    assert bus.dead_letter_count == 5
    # Commands took the odd seqs 1..9; their letters the even ones.
    assert [d.event_seq for d in bus.dead_letters] == [7, 9]


# --- introspection --------------------------------------------------------------------------


async def test_counts_by_event_type() -> None:
    bus = EventBus(clock=ManualClock())
    bus.subscribe(TickerUpdated, lambda e: None)
    bus.subscribe(SourceFailed, lambda e: None)  # subscribed but never published: not listed
    assert bus.counts() == {}
    for i in range(3):
        await bus.publish(tick(i))
    for _ in range(2):
        await bus.publish(cmd())  # no subscriber: still counted
    assert bus.counts() == {"TickerUpdated": 3, "Command": 2}


async def test_queue_depths_per_coroutine_subscriber() -> None:
    bus = EventBus(clock=ManualClock())
    release = asyncio.Event()

    async def on_tick(event: TickerUpdated) -> None:
        await release.wait()

    async def on_command(event: Command) -> None:
        await release.wait()

    bus.subscribe(TickerUpdated, on_tick)
    bus.subscribe(Command, on_command)
    bus.subscribe(Command, lambda e: None)  # inline handlers have no mailbox
    tick_key = f"TickerUpdated:{handler_name(on_tick)}"
    command_key = f"Command:{handler_name(on_command)}"
    assert bus.queue_depths() == {tick_key: 0, command_key: 0}
    async with running(bus):
        await settle()
        for i in range(5):
            await bus.publish(tick(i))
        await bus.publish(cmd())
        assert bus.queue_depths() == {tick_key: 5, command_key: 1}
        await settle()  # each consumer takes its first event into the handler
        assert bus.queue_depths() == {tick_key: 4, command_key: 0}
        release.set()
    assert bus.queue_depths() == {tick_key: 0, command_key: 0}


async def test_handler_stats_sample_one_call_in_64_and_count_failures() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=1))

    def ok(event: TickerUpdated) -> None:
        pass

    async def ok_async(event: TickerUpdated) -> None:
        pass

    def fails_on_odd(event: TickerUpdated) -> None:
        if event.ts_ns % 2:
            raise RuntimeError("odd")

    bus.subscribe(TickerUpdated, ok)
    bus.subscribe(TickerUpdated, ok_async)
    bus.subscribe(Command, fails_on_odd)  # type: ignore[arg-type]
    async with running(bus):
        for i in range(128):
            await bus.publish(tick(i))
        for i in range(10):
            await bus.publish(Command(ts_ns=i, name="x"))
    stats = bus.handler_stats()
    for key in (f"TickerUpdated:{handler_name(ok)}", f"TickerUpdated:{handler_name(ok_async)}"):
        assert stats[key]["calls_timed"] == 2
        assert stats[key]["failures"] == 0
        assert stats[key]["mean_us"] >= 0
    assert stats[f"Command:{handler_name(fails_on_odd)}"]["failures"] == 5
    assert bus.dead_letter_count == 5


async def test_drain_waits_for_handlers_that_publish_further_events() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(queue_size=4))
    ends: list[int] = []

    async def stage_one(event: TickerUpdated) -> None:
        await asyncio.sleep(0)
        await bus.publish(Command(ts_ns=event.ts_ns, name="stage-two"))

    async def stage_two(event: Command) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await bus.publish(failure(event.ts_ns))

    async def stage_three(event: SourceFailed) -> None:
        await asyncio.sleep(0)
        ends.append(event.ts_ns)

    bus.subscribe(TickerUpdated, stage_one)
    bus.subscribe(Command, stage_two)
    bus.subscribe(SourceFailed, stage_three)
    async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as tg:
        bus.start(tg)
        for i in range(50):
            await bus.publish(tick(i))
        await bus.drain()
        assert ends == list(range(50))  # checked before stop, which drains too
        assert all(depth == 0 for depth in bus.queue_depths().values())
        await bus.stop()
    assert bus.counts() == {"TickerUpdated": 50, "Command": 50, "SourceFailed": 50}


# --- recorder -------------------------------------------------------------------------------


async def test_the_recorder_sees_every_event_in_seq_order_before_the_handlers() -> None:
    recorder = ListRecorder()
    bus = EventBus(clock=ManualClock(), recorder=recorder)
    recorded_first: list[bool] = []

    def check(event: Event) -> None:
        recorded_first.append(any(r is event for r in recorder.events))

    async def check_async(event: Event) -> None:
        check(event)

    bus.subscribe(TickerUpdated, check)
    bus.subscribe(Command, check_async)
    async with running(bus):
        for i in range(20):
            await bus.publish(tick(i) if i % 2 else cmd())
    assert [e.seq for e in recorder.events] == list(range(1, 21))
    assert recorded_first == [True] * 20
    assert recorder.waits == 0


async def test_a_full_recorder_holds_the_publisher_before_any_handler() -> None:
    recorder = ListRecorder(bound=2)
    bus = EventBus(clock=ManualClock(), recorder=recorder)
    seen: list[int] = []
    seen_async: list[int] = []

    async def on_tick(event: TickerUpdated) -> None:
        seen_async.append(event.seq)

    bus.subscribe(TickerUpdated, lambda e: seen.append(e.seq))
    bus.subscribe(TickerUpdated, on_tick)
    async with running(bus) as tg:
        await bus.publish(tick(0))
        await settle()
        assert seen == seen_async == [1]
        second = tg.create_task(bus_publish(bus, tick(1)))
        await settle()
        assert not second.done()
        assert recorder.waits == 1
        assert [e.seq for e in recorder.events] == [1, 2]  # recorded, not yet delivered
        assert seen == seen_async == [1]
        assert bus.counts() == {"TickerUpdated": 2}

        recorder.flush()
        await second
        await settle()
    assert seen == seen_async == [1, 2]


async def test_events_behind_a_held_publisher_wait_their_turn() -> None:
    recorder = ListRecorder(bound=2)
    bus = EventBus(clock=ManualClock(), recorder=recorder)
    seen: list[int] = []
    seen_async: list[int] = []

    async def on_tick(event: TickerUpdated) -> None:
        seen_async.append(event.seq)

    bus.subscribe(TickerUpdated, lambda e: seen.append(e.seq))
    bus.subscribe(TickerUpdated, on_tick)
    async with running(bus) as tg:
        await bus.publish(tick(0))  # seq 1
        held = tg.create_task(bus_publish(bus, tick(1)))  # seq 2 fills the recorder
        await settle()
        assert not held.done()
        # The recorder gets room; before the held publisher resumes, another event comes in
        # that the recorder takes without complaint. It must still reach handlers after seq 2.
        recorder.flush()
        await bus.publish(tick(2))  # seq 3
        await held
    assert seen == [1, 2, 3]
    assert seen_async == [1, 2, 3]


async def test_a_cancelled_publisher_in_the_recorder_line_does_not_reorder_the_rest() -> None:
    recorder = ListRecorder(bound=1)
    bus = EventBus(clock=ManualClock(), recorder=recorder)
    seen: list[int] = []
    bus.subscribe(TickerUpdated, lambda e: seen.append(e.seq))
    async with running(bus) as tg:
        first = tg.create_task(bus_publish(bus, tick(0)))  # seq 1: the recorder is full at once
        await settle()
        middle = tg.create_task(bus_publish(bus, tick(1)))  # seq 2
        await settle()
        recorder.bound = 100  # seq 3 is taken without complaint: only the line holds it back
        last = tg.create_task(bus_publish(bus, tick(2)))
        await settle()
        assert seen == []
        middle.cancel()
        await settle()
        assert middle.cancelled()
        assert not last.done()
        assert seen == []  # the last in line still waits for the first
        recorder.flush()
        await first
        await last
        assert seen == [1, 3]

        pending = bus.publish(tick(3))  # the line is empty again: delivered at once
        assert seen == [1, 3, 4]
        await pending
    assert [e.seq for e in recorder.events] == [1, 2, 3, 4]


async def bus_publish(bus: EventBus, event: Event) -> None:
    await bus.publish(event)
