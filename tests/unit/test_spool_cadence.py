"""During a database outage the spool is written at the flush cadence; only reconnects back off.

Issue 15, item 1: the writer used to sleep its reconnect backoff (doubling to 5 s) before the
next spool write too, so a SIGKILL mid-outage lost up to 5 s of events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import Command
from quantumtrade.store.eventlog import EventLogWriter, SqliteEventLog
from quantumtrade.store.rows import Row
from quantumtrade.store.spool import Spool


class OutageLog(SqliteEventLog):
    """A real SQLite log that can be switched off; counts the write attempts."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down = False
        self.attempts = 0

    async def append(self, rows: Sequence[Row]) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionRefusedError("database is down")
        await super().append(rows)


async def _until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Poll the writer's own loop (bounded); the test sets no timer of its own."""
    async with asyncio.timeout(limit_s):
        while not predicate():
            await asyncio.sleep(0.002)


async def _with_writer(writer: EventLogWriter, body: Callable[[], Awaitable[None]]) -> None:
    async with asyncio.TaskGroup() as tg:
        writer.start(tg)
        try:
            await body()
        finally:
            assert writer._task is not None
            writer._task.cancel()


async def test_reconnects_back_off_on_the_clock_but_every_flush_tick_spools(
    tmp_path: Path,
) -> None:
    """Manual clock for the backoff: frozen, the writer never retries the database, yet each
    event it records reaches the spool within a few ticks; retries come at 1, 2, 4 intervals."""
    log = OutageLog(tmp_path / "e.sqlite")
    await log.open()
    log.down = True
    spool = Spool(tmp_path / "spool.jsonl")
    clock = ManualClock()
    writer = EventLogWriter(log, flush_interval_ms=5, spool=spool, clock=clock)
    bus = EventBus(clock=clock, recorder=writer)

    async def body() -> None:
        for i in range(30):
            await bus.publish(Command(ts_ns=i, name="during-outage"))
            await _until(lambda: writer.pending == 0)
            assert writer.spooled == i + 1
        # One attempt, then none while the clock stands still (the ticks kept spooling).
        assert log.attempts == 1
        seen = log.attempts
        for delay_ms, due in ((4, False), (1, True), (9, False), (1, True), (19, False), (1, True)):
            clock.advance(delay_ms / 1000)
            await bus.publish(Command(ts_ns=0, name="tick"))
            await _until(lambda: writer.pending == 0)
            await asyncio.sleep(0.03)  # several real flush ticks: an attempt would happen here
            assert log.attempts == seen + due, (delay_ms, log.attempts)
            seen = log.attempts
        log.down = False
        clock.advance(60)
        await _until(lambda: not writer.health()["spool_pending"])

    await _with_writer(writer, body)
    assert [e.seq async for e in log.read()] == list(range(1, 37))
    assert not spool.exists()
    await log.close()


async def test_spool_latency_stays_near_the_flush_interval_in_real_time(tmp_path: Path) -> None:
    """Real clock, database down for 3 s: each event reaches the spool well within 0.75 s.

    The old writer slept 20, 40, ... 1280 ms between spool writes (flush_interval 20 ms), so an
    event recorded at the start of the 1.28 s sleep (due at 1.26 s into the outage) waited
    about 1.28 s. The bound leaves 37x the interval of slack for a loaded machine.
    """
    log = OutageLog(tmp_path / "e.sqlite")
    await log.open()
    log.down = True
    spool = Spool(tmp_path / "spool.jsonl")
    writer = EventLogWriter(log, flush_interval_ms=20, spool=spool)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    latencies: list[float] = []

    async def body() -> None:
        start = time.monotonic()
        while time.monotonic() - start < 3.0:
            await bus.publish(Command(ts_ns=0, name="during-outage"))
            published = time.monotonic()
            await _until(lambda: writer.pending == 0)
            latencies.append(time.monotonic() - published)
            await asyncio.sleep(0.03)

    await _with_writer(writer, body)
    assert max(latencies) < 0.75, f"max spool latency {max(latencies):.3f} s"
    assert len(spool.load()) == len(latencies) > 20
    await log.close()


async def test_health_clears_the_error_once_a_write_succeeds(tmp_path: Path) -> None:
    """Issue 15, item 6: /health kept showing the outage's error after recovery. last_error is
    the current failure; last_failure keeps the most recent one, with its time."""
    log = OutageLog(tmp_path / "e.sqlite")
    await log.open()
    clock = ManualClock(1_000)
    writer = EventLogWriter(log, flush_interval_ms=10, spool=Spool(tmp_path / "s"), clock=clock)
    bus = EventBus(clock=clock, recorder=writer)
    log.down = True
    await bus.publish(Command(ts_ns=1, name="a"))
    await writer.flush()
    down = writer.health()
    assert down["status"] == "degraded"
    assert "database is down" in str(down["last_error"])
    log.down = False
    await bus.publish(Command(ts_ns=2, name="b"))
    assert await writer.flush()
    up = writer.health()
    assert up["status"] == "ok" and up["last_error"] == ""
    assert "database is down" in str(up["last_failure"]) and up["last_failure_ns"] == 1_000
    await log.close()
