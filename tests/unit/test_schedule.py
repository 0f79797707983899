"""The orchestrator's schedule: priority order, FIFO within a priority, batches, join."""

from __future__ import annotations

import asyncio

import pytest

from quantumtrade.data.schedule import Schedule


def test_take_returns_most_urgent_first_and_fifo_within_a_priority() -> None:
    schedule: Schedule[str] = Schedule(levels=3)
    schedule.put_many(2, ["r1", "r2"])
    schedule.put_many(0, ["v1"])
    schedule.put_many(1, ["t1", "t2", "t3"])
    schedule.put_many(0, ["v2"])
    assert schedule.qsize() == 7
    assert schedule.take_nowait(4) == ["v1", "v2", "t1", "t2"]
    assert schedule.take_nowait(10) == ["t3", "r1", "r2"]
    assert schedule.take_nowait(10) == []
    assert schedule.qsize() == 0


async def test_take_waits_for_an_item_and_join_waits_for_task_done() -> None:
    schedule: Schedule[int] = Schedule(levels=2)
    waiter = asyncio.create_task(schedule.take(5))
    await asyncio.sleep(0)
    assert not waiter.done()
    schedule.put_many(1, [1, 2])
    assert await waiter == [1, 2]
    joined = asyncio.create_task(schedule.join())
    await asyncio.sleep(0)
    assert not joined.done()  # taken but not done
    schedule.task_done(1)
    await asyncio.sleep(0)
    assert not joined.done()
    schedule.task_done(1)
    await asyncio.wait_for(joined, 1)


async def test_put_many_of_nothing_leaves_the_schedule_idle() -> None:
    schedule: Schedule[str] = Schedule(levels=1)
    schedule.put_many(0, [])
    assert schedule.qsize() == 0
    await asyncio.wait_for(schedule.join(), 1)


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_take_never_exceeds_its_limit(limit: int) -> None:
    schedule: Schedule[int] = Schedule(levels=2)
    schedule.put_many(0, [1, 2, 3])
    schedule.put_many(1, [4, 5, 6])
    taken: list[int] = []
    while batch := schedule.take_nowait(limit):
        assert len(batch) <= limit
        taken += batch
    assert taken == [1, 2, 3, 4, 5, 6]
