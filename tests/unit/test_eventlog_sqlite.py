"""The SQLite event log and its batched writer, on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import Command, Side, SignalGenerated, TickerUpdated, decode
from quantumtrade.store.eventlog import EventLogWriter, SqliteEventLog


@pytest.fixture
async def eventlog(tmp_path: Path):
    log = SqliteEventLog(tmp_path / "events.sqlite")
    await log.open()
    yield log
    await log.close()


def ticker(i: int) -> TickerUpdated:
    return TickerUpdated(ts_ns=i, symbol="BTCUSDT", source="t", bid=1.0, ask=1.1, last=float(i))


async def test_append_is_idempotent_on_seq(eventlog: SqliteEventLog) -> None:
    rows = [(i, i * 10, "TickerUpdated", "{}") for i in range(1, 6)]
    await eventlog.append(rows)
    await eventlog.append([*rows[2:], (6, 60, "TickerUpdated", "{}")])
    assert await eventlog.count() == 6
    assert await eventlog.last_seq() == 6


async def test_migrations_run_once(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    for _ in range(2):
        log = SqliteEventLog(path)
        await log.open()
        await log.append([(1, 1, "X", "{}")])
        await log.close()
    log = SqliteEventLog(path)
    await log.open()
    assert await log.count() == 1
    await log.close()


async def test_writer_records_every_event_once_and_reads_back_in_order(
    eventlog: SqliteEventLog,
) -> None:
    clock = ManualClock()
    writer = EventLogWriter(eventlog, batch_size=7, flush_interval_ms=5, max_buffer=1_000)
    bus = EventBus(clock=clock, recorder=writer)
    async with asyncio.TaskGroup() as tg:
        writer.start(tg)
        bus.start(tg)
        for i in range(100):
            await bus.publish(ticker(i))
        await bus.publish(
            SignalGenerated(
                ts_ns=5,
                signal_id="s1",
                symbol="ETHUSDT",
                side=Side.SELL,
                score=-1.5,
                price=3000.0,
                volatility=0.01,
            )
        )
        await bus.stop()
        await writer.stop()
    assert writer.pending == 0
    stored = [e async for e in eventlog.read()]
    assert [e.seq for e in stored] == list(range(1, 102))
    decoded = [decode(e.payload) for e in stored]
    assert decoded[-1] == SignalGenerated(
        ts_ns=5,
        seq=101,
        signal_id="s1",
        symbol="ETHUSDT",
        side=Side.SELL,
        score=-1.5,
        price=3000.0,
        volatility=0.01,
    )
    assert [e.type for e in stored[:3]] == ["TickerUpdated"] * 3
    only_signals = [e async for e in eventlog.read(types=["SignalGenerated"])]
    assert [e.seq for e in only_signals] == [101]
    window = [e async for e in eventlog.read(from_seq=10, to_seq=19, page=3)]
    assert [e.seq for e in window] == list(range(10, 20))


async def test_full_buffer_makes_publishers_wait_not_drop(eventlog: SqliteEventLog) -> None:
    writer = EventLogWriter(eventlog, batch_size=10, flush_interval_ms=1_000, max_buffer=20)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        for i in range(19):
            await bus.publish(ticker(i))
        # The 20th fills the buffer: its publish must wait until a flush makes room.
        blocked = tg.create_task(bus.publish(ticker(19)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not blocked.done()
        assert await writer.flush()
        await blocked
        await bus.stop()
    await writer.stop()
    assert await eventlog.count() == 20


class FailingLog(SqliteEventLog):
    """A real SQLite log whose first ``failures`` writes fail, as a database outage would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures_left = failures

    async def append(self, rows):  # type: ignore[no-untyped-def]
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("disk I/O error")
        await super().append(rows)


async def test_failed_write_keeps_events_for_the_next_try(tmp_path: Path) -> None:
    log = FailingLog(tmp_path / "e.sqlite", failures=2)
    await log.open()
    writer = EventLogWriter(log, batch_size=5, flush_interval_ms=1)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    for i in range(12):
        await bus.publish(Command(ts_ns=i, name="noop"))
    assert not await writer.flush()
    assert writer.health()["write_failures"] == 1
    assert not await writer.flush()
    assert await writer.flush()
    assert writer.pending == 0
    assert [e.seq async for e in log.read()] == list(range(1, 13))
    await log.close()


async def test_health_reports_degraded_while_writes_fail(tmp_path: Path) -> None:
    log = FailingLog(tmp_path / "e.sqlite", failures=1)
    await log.open()
    writer = EventLogWriter(log, batch_size=5)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    await bus.publish(Command(ts_ns=1, name="noop"))
    assert not await writer.flush()
    assert writer.health()["status"] == "degraded"
    assert await writer.flush()
    assert writer.health()["status"] == "ok"
    await log.close()
