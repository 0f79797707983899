"""ManualClock moves only when told to and wakes sleepers in deadline order; WallClock is real."""

from __future__ import annotations

import asyncio
import time

import pytest

from quantumtrade.clock import Clock, ManualClock, WallClock

START = 1_700_000_000_000_000_000
# A sleeper that never wakes must fail the test, not hang it.
DEADLINE_S = 10.0


async def settle() -> None:
    """Let every task that is ready run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_both_clocks_meet_the_protocol() -> None:
    clocks: list[Clock] = [ManualClock(), WallClock()]
    assert all(isinstance(c.now_ns(), int) for c in clocks)


def test_manual_clock_starts_where_told_and_moves_only_when_told() -> None:
    clock = ManualClock(start_ns=START)
    assert clock.now_ns() == START
    assert clock.now_ns() == START
    clock.advance(1.5)
    assert clock.now_ns() == START + 1_500_000_000
    clock.set(START + 2_000_000_000)
    assert clock.now_ns() == START + 2_000_000_000
    clock.set(START + 2_000_000_000)  # standing still is allowed
    assert clock.now_ns() == START + 2_000_000_000


def test_set_backwards_raises_and_leaves_the_time_alone() -> None:
    clock = ManualClock(start_ns=START)
    clock.advance(10)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(START + 1)
    assert clock.now_ns() == START + 10_000_000_000


async def test_sleepers_wake_in_deadline_order_and_not_before() -> None:
    clock = ManualClock(start_ns=START)
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now_ns()))

    async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as tg:
        # Started out of deadline order on purpose; "b2" shares b's deadline, started later.
        for name, seconds in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("b2", 2.0)]:
            tg.create_task(sleeper(name, seconds))
        await settle()
        assert clock.sleepers == 4
        assert woke == []

        clock.set(START + 1_000_000_000 - 1)  # one nanosecond short of the first deadline
        await settle()
        assert woke == []

        clock.advance(1e-9)  # exactly a's deadline
        await settle()
        assert [n for n, _ in woke] == ["a"]
        assert clock.sleepers == 3

        clock.advance(5.0)  # past every deadline at once: still woken in deadline order
        await settle()

    assert [n for n, _ in woke] == ["a", "b", "b2", "c"]
    assert clock.sleepers == 0


async def test_a_sleeper_added_later_measures_from_the_current_time() -> None:
    clock = ManualClock(start_ns=START)
    clock.advance(100)
    woke: list[int] = []

    async def sleeper() -> None:
        await clock.sleep(1.0)
        woke.append(clock.now_ns())

    async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as tg:
        tg.create_task(sleeper())
        await settle()
        clock.advance(0.999)
        await settle()
        assert woke == []
        clock.advance(0.001)
    assert woke == [START + 101_000_000_000]


async def test_zero_or_negative_sleep_returns_without_advancing() -> None:
    clock = ManualClock(start_ns=START)
    await asyncio.wait_for(clock.sleep(0), timeout=5)
    await asyncio.wait_for(clock.sleep(-1.0), timeout=5)
    assert clock.now_ns() == START
    assert clock.sleepers == 0


async def test_a_cancelled_sleeper_is_forgotten_and_does_not_break_the_others() -> None:
    clock = ManualClock(start_ns=START)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as tg:
        doomed = tg.create_task(sleeper("doomed", 1.0))
        tg.create_task(sleeper("kept", 2.0))
        await settle()
        doomed.cancel()
        await settle()
        assert clock.sleepers == 1
        clock.advance(2.0)
    assert doomed.cancelled()
    assert woke == ["kept"]


async def test_wall_clock_tracks_real_time_and_increases() -> None:
    clock = WallClock()
    before = time.time_ns()
    first = clock.now_ns()
    assert first >= before
    readings = [clock.now_ns() for _ in range(1_000)]
    assert readings == sorted(readings)  # never goes backwards between calls
    await clock.sleep(0.002)
    later = clock.now_ns()
    assert later > first
    assert later <= time.time_ns()
