"""The spool: durable while the database is down, drained exactly once, corruption set aside."""

from __future__ import annotations

from pathlib import Path

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import Command
from quantumtrade.store.eventlog import EventLogWriter, SqliteEventLog
from quantumtrade.store.spool import Spool


class OutageLog(SqliteEventLog):
    """A real SQLite log that can be switched off, as a database outage would be."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down = False

    async def append(self, rows):  # type: ignore[no-untyped-def]
        if self.down:
            raise ConnectionRefusedError("database is down")
        await super().append(rows)


async def test_outage_spools_and_recovery_writes_each_event_once(tmp_path: Path) -> None:
    log = OutageLog(tmp_path / "e.sqlite")
    await log.open()
    spool = Spool(tmp_path / "spool.jsonl")
    writer = EventLogWriter(log, batch_size=10, spool=spool)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    for i in range(25):
        await bus.publish(Command(ts_ns=i, name="a"))
    assert await writer.flush()
    log.down = True
    for i in range(40):
        await bus.publish(Command(ts_ns=i, name="b"))
    assert not await writer.flush()
    assert writer.pending == 0 and spool.exists()
    assert len(spool.load()) == 40
    for i in range(5):
        await bus.publish(Command(ts_ns=i, name="c"))
    assert not await writer.flush()  # still down: the new batch joins the spool
    log.down = False
    assert await writer.flush()
    assert not spool.exists()
    assert [e.seq async for e in log.read()] == list(range(1, 71))
    assert writer.health()["recovered_from_spool"] == 45
    await log.close()


async def test_spool_left_by_a_crash_is_written_at_next_start(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    log = SqliteEventLog(path)
    await log.open()
    await log.append([(1, 1, "Command", '{"type":"Command","ts_ns":1,"seq":1,"name":"x"}')])
    spool = Spool(tmp_path / "spool.jsonl")
    # What a killed daemon leaves: rows spooled, one of them already written, a torn last line.
    spool.append(
        [
            (i, i, "Command", f'{{"type":"Command","ts_ns":{i},"seq":{i},"name":"x"}}')
            for i in range(1, 6)
        ]
    )
    with open(spool.path, "a") as fh:
        fh.write('[6, 6, "Comm')
    writer = EventLogWriter(log, spool=Spool(spool.path))
    assert await writer.flush()
    assert [e.seq async for e in log.read()] == [1, 2, 3, 4, 5]
    assert writer.spool is not None and writer.spool.torn_lines == 1
    await log.close()


def test_corrupt_spool_is_set_aside_not_fatal(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    spool.path.write_text('[1, 1, "A", "{}"]\nthis is not json\n[3, 3, "A", "{}"]\n')
    assert spool.load() == []
    assert spool.set_aside == 1
    assert not spool.path.exists()
    assert (tmp_path / "spool.jsonl.corrupt-1").exists()


async def test_mark_follows_what_was_stored(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "e.sqlite")
    await log.open()
    spool = Spool(tmp_path / "spool.jsonl")
    writer = EventLogWriter(log, batch_size=10, spool=spool)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    assert await writer.flush()
    assert spool.high_water() == 0 and not spool.mark_path.exists()  # nothing stored yet
    for i in range(7):
        await bus.publish(Command(ts_ns=i, name="a"))
    assert await writer.flush()
    assert spool.high_water() == 7
    await log.close()
