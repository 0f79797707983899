"""Dead letters kept for retry (issue 14, item 7): stable ids, the failing handler alone gets the
event again, success drops the letter, failure keeps it with one more attempt."""

from __future__ import annotations

import pytest

from quantumtrade.bus import BusConfig, EventBus, handler_name
from quantumtrade.clock import ManualClock
from quantumtrade.events import TickerUpdated
from tests.unit.test_bus import running, tick


class Flaky:
    """A handler that fails while ``broken`` is set; records the seqs it handled."""

    def __init__(self) -> None:
        self.broken = True
        self.handled: list[int] = []
        self.calls = 0

    def on_tick(self, event: TickerUpdated) -> None:
        self.calls += 1
        if self.broken:
            raise RuntimeError(f"down on {event.seq}")
        self.handled.append(event.seq)

    async def on_tick_async(self, event: TickerUpdated) -> None:
        self.on_tick(event)


async def test_a_dead_letter_is_listed_with_event_handler_error_and_attempts() -> None:
    clock = ManualClock(5_000)
    bus = EventBus(clock=clock, config=BusConfig(max_attempts=3))
    flaky = Flaky()
    bus.subscribe(TickerUpdated, flaky.on_tick)
    await bus.publish(tick(7))
    [letter] = bus.dead_letter_list()
    assert letter == {
        "id": 1,
        "event_type": "TickerUpdated",
        "event": letter["event"],
        "handler": handler_name(flaky.on_tick),
        "error": "RuntimeError: down on 1",
        "attempts": 3,
        "ts_ns": 5_000,
    }
    assert letter["event"]["seq"] == 1 and letter["event"]["ts_ns"] == 7
    assert letter["event"]["symbol"] == "BTCUSDT"


async def test_retry_goes_to_the_failed_handler_only_and_drops_the_letter_on_success() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=2))
    flaky = Flaky()
    healthy: list[int] = []
    bus.subscribe(TickerUpdated, flaky.on_tick)
    bus.subscribe(TickerUpdated, lambda e: healthy.append(e.seq))
    await bus.publish(tick(0))
    await bus.publish(tick(1))
    ids = [d["id"] for d in bus.dead_letter_list()]
    assert ids == [1, 2]
    assert flaky.calls == 4 and healthy == [1, 3]  # each tick's DeadLettered took a seq

    # Still broken: the letter stays, with one more attempt and the new error.
    assert await bus.retry_dead_letter(2) == {
        "id": 2,
        "outcome": "failed",
        "attempts": 3,
        "error": "RuntimeError: down on 3",
    }
    assert [(d["id"], d["attempts"]) for d in bus.dead_letter_list()] == [(1, 2), (2, 3)]

    flaky.broken = False
    result = await bus.retry_dead_letter(2)
    assert result == {"id": 2, "outcome": "ok", "attempts": 4, "error": None}
    assert flaky.handled == [3]
    assert healthy == [1, 3]  # the healthy handler was not called again
    assert [d["id"] for d in bus.dead_letter_list()] == [1]
    assert bus.dead_letter_retries == {"ok": 1, "failed": 1}
    with pytest.raises(KeyError):
        await bus.retry_dead_letter(2)  # retried already
    with pytest.raises(KeyError):
        await bus.retry_dead_letter(99)
    stats = bus.handler_stats()[f"TickerUpdated:{handler_name(flaky.on_tick)}"]
    assert stats["failures"] == 5  # 2 + 2 deliveries, 1 failed retry


async def test_retry_all_retries_every_letter_of_a_coroutine_handler() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=2, retry_backoff_ms=0.05))
    flaky = Flaky()
    bus.subscribe(TickerUpdated, flaky.on_tick_async)
    async with running(bus):
        for i in range(3):
            await bus.publish(tick(i))
        await bus.drain()
        assert [d["attempts"] for d in bus.dead_letter_list()] == [2, 2, 2]
        failed = await bus.retry_dead_letters()
        assert [r["outcome"] for r in failed] == ["failed"] * 3
        flaky.broken = False
        done = await bus.retry_dead_letters()
    assert [(r["id"], r["outcome"]) for r in done] == [(1, "ok"), (2, "ok"), (3, "ok")]
    assert flaky.handled == [1, 2, 3]
    assert bus.dead_letter_list() == []
    assert bus.dead_letter_retries == {"ok": 3, "failed": 3}


async def test_letters_kept_for_retry_are_bounded_with_ids_never_reused() -> None:
    bus = EventBus(clock=ManualClock(), config=BusConfig(max_attempts=1, dead_letter_size=2))
    flaky = Flaky()
    bus.subscribe(TickerUpdated, flaky.on_tick)
    for i in range(5):
        await bus.publish(tick(i))
    assert [d["id"] for d in bus.dead_letter_list()] == [4, 5]
    flaky.broken = False
    await bus.retry_dead_letter(4)
    await bus.publish(tick(9))  # handled: no new letter
    flaky.broken = True
    await bus.publish(tick(10))
    assert [d["id"] for d in bus.dead_letter_list()] == [5, 6]
    assert bus.dead_letter_count == 6
