"""The PostgreSQL event log against the real server on 127.0.0.1."""

from __future__ import annotations

import asyncio

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import Command, TickerUpdated, decode
from quantumtrade.store.eventlog import EventLogWriter
from quantumtrade.store.postgres import PostgresEventLog


async def test_copy_append_read_back_and_idempotent_retry(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    log = PostgresEventLog(url, schema=schema)
    await log.open()
    try:
        rows = [(i, i * 10, "Command", f'{{"type":"Command","name":"n{i}","ts_ns":{i * 10}}}')
                for i in range(1, 2_001)]
        await log.append(rows[:1_500])
        # A retried batch overlapping what is stored: each event ends up there once.
        await log.append(rows[1_000:])
        assert await log.count() == 2_000
        assert await log.last_seq() == 2_000
        got = [e async for e in log.read(from_seq=1_990, page=4)]
        assert [e.seq for e in got] == list(range(1_990, 2_001))
        assert decode(got[0].payload) == Command(ts_ns=19_900, name="n1990", seq=0)
        assert [e.seq async for e in log.read(from_ts_ns=100, to_ts_ns=130)] == [10, 11, 12, 13]
        assert [e.seq async for e in log.read(types=["Nope"])] == []
        # Migrations are recorded and not re-applied.
        assert await log.migrate() == 1
    finally:
        await log.close()


async def test_writer_into_postgres_every_event_once(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    log = PostgresEventLog(url, schema=schema)
    await log.open()
    writer = EventLogWriter(log, batch_size=500, flush_interval_ms=20)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    async with asyncio.TaskGroup() as tg:
        writer.start(tg)
        bus.start(tg)
        for i in range(5_000):
            await bus.publish(TickerUpdated(ts_ns=i, symbol="BTCUSDT", source="t", bid=1.0,
                                            ask=1.1, last=float(i)))
        await bus.stop()
        await writer.stop()
    try:
        assert await log.count() == 5_000
        seqs = [e.seq async for e in log.read()]
        assert seqs == list(range(1, 5_001))
    finally:
        await log.close()
