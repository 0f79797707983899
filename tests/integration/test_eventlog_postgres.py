"""The PostgreSQL event log against the real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import Command, TickerUpdated, decode
from quantumtrade.store.eventlog import EventLogWriter
from quantumtrade.store.postgres import PostgresEventLog
from quantumtrade.store.spool import Spool
from tests.support.pg_proxy import PgProxy


async def test_copy_append_read_back_and_idempotent_retry(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    log = PostgresEventLog(url, schema=schema)
    await log.open()
    try:
        rows = [
            (i, i * 10, "Command", f'{{"type":"Command","name":"n{i}","ts_ns":{i * 10}}}')
            for i in range(1, 2_001)
        ]
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
            await bus.publish(
                TickerUpdated(
                    ts_ns=i, symbol="BTCUSDT", source="t", bid=1.0, ask=1.1, last=float(i)
                )
            )
        await bus.stop()
        await writer.stop()
    try:
        assert await log.count() == 5_000
        seqs = [e.seq async for e in log.read()]
        assert seqs == list(range(1, 5_001))
    finally:
        await log.close()


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _can_control_postgres() -> str | None:
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return "pg_ctlcluster is not available to stop and start PostgreSQL"
    if os.geteuid() != 0:
        return "stopping PostgreSQL needs root"
    return None


async def test_outage_mid_stream_loses_and_duplicates_nothing(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    reason = _can_control_postgres()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    url, schema = pg_schema
    log = PostgresEventLog(url, schema=schema)
    await log.open()
    spool = Spool(tmp_path / "spool.jsonl")
    writer = EventLogWriter(log, batch_size=1_000, flush_interval_ms=20, spool=spool)
    bus = EventBus(clock=ManualClock(), recorder=writer)
    total = 50_000
    try:
        async with asyncio.TaskGroup() as tg:
            writer.start(tg)
            bus.start(tg)
            for i in range(total):
                await bus.publish(
                    TickerUpdated(
                        ts_ns=i, symbol="BTCUSDT", source="t", bid=1.0, ask=1.1, last=float(i)
                    )
                )
                if i == 15_000:
                    await asyncio.to_thread(_pg_ctl, "stop")
                elif i == 35_000:
                    # Publishing never yields while the recorder has room, so give the writer
                    # (its failed write, then the spool append in a thread) time to run.
                    try:
                        async with asyncio.timeout(10):
                            while writer.health()["spooled"] == 0:
                                await asyncio.sleep(0.05)
                    except TimeoutError:
                        pytest.fail("the outage was not noticed within 10 s")
                    await asyncio.to_thread(_pg_ctl, "start")
            await bus.stop()
            await writer.stop(timeout=10)
        # The server may still be starting: keep flushing until the spool is drained.
        async with asyncio.timeout(60):
            while not await writer.flush() or spool.exists():
                await asyncio.sleep(0.2)
        assert await log.count() == total
        assert [e.seq async for e in log.read()] == list(range(1, total + 1))
        assert writer.health()["recovered_from_spool"] > 0
    finally:
        if os.system("pg_isready -q -h 127.0.0.1 -p 5432") != 0:
            await asyncio.to_thread(_pg_ctl, "start")
        await log.close()


async def test_migrate_command_uses_the_configured_schema(pg_schema: tuple[str, str]) -> None:
    import sys

    import asyncpg

    url, schema = pg_schema
    env = dict(os.environ, DATABASE_URL=url, QT_DATABASE__SCHEMA=schema)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quantumtrade",
        "migrate",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "schema version 1" in out.decode()
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 "
            "AND table_name = 'events'",
            schema,
        )
    finally:
        await conn.close()
    assert found == 1


async def test_a_hung_server_fails_the_write_and_events_reach_the_spool(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    """A server that stops answering (packets dropped, not refused) holds a write at most
    ``timeout_s``: the writer then spools, at its cadence, what it was given, and when the
    server answers again every event is in the log once. Before the bound, the COPY on the hung
    connection waited forever and nothing after it reached the spool."""
    url, schema = pg_schema
    async with PgProxy() as proxy:
        log = PostgresEventLog(proxy.url(url), schema=schema, timeout_s=0.5)
        await log.open()
        spool = Spool(tmp_path / "spool.jsonl")
        writer = EventLogWriter(log, batch_size=100, flush_interval_ms=20, spool=spool)
        bus = EventBus(clock=ManualClock(), recorder=writer)

        def ticker(i: int) -> TickerUpdated:
            return TickerUpdated(
                ts_ns=i, symbol="BTCUSDT", source="t", bid=1.0, ask=1.1, last=float(i)
            )

        try:
            async with asyncio.TaskGroup() as tg:
                writer.start(tg)
                bus.start(tg)
                for i in range(200):
                    await bus.publish(ticker(i))
                await asyncio.sleep(0.2)
                proxy.hang()
                for i in range(200, 400):
                    await bus.publish(ticker(i))
                # The bound is the behaviour under test: 0.5 s per attempt, given 10 s.
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    if spool.max_seq() == 400:
                        break
                assert spool.max_seq() == 400, "events never reached the spool"
                proxy.restore()
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    if writer.recovered and not spool.load():
                        break
                await bus.stop()
                await writer.stop()
            seqs = [e.seq async for e in log.read()]
            assert seqs == list(range(1, 401))
        finally:
            await log.close()
