"""SIGKILL while PostgreSQL is down: the spooled events reach the log exactly once at the next
start, and the new session continues the sequence after them."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import pytest

from quantumtrade.store.spool import Spool
from tests.integration.test_daemon_process import start
from tests.integration.test_eventlog_postgres import _can_control_postgres, _pg_ctl


async def _count(url: str, schema: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".events'))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def _wait_for(predicate, limit_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition on another process (bounded); not a timer the test controls."""
    async with asyncio.timeout(limit_s):
        while not await predicate():
            await asyncio.sleep(0.1)


async def test_sigkill_during_outage_loses_nothing_spooled(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    reason = _can_control_postgres()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    url, schema = pg_schema
    spool_path = tmp_path / "eventlog.spool"
    env = {
        "DATABASE_URL": url,
        "QT_DATABASE__SCHEMA": schema,
        "QT_DATABASE__SPOOL_PATH": str(spool_path),
        "QT_DATABASE__FLUSH_INTERVAL_MS": "20",
    }
    proc, _ = await start(tmp_path, **env)
    try:

        async def logged() -> bool:
            return await _count(url, schema) > 0

        await _wait_for(logged)
        await asyncio.to_thread(_pg_ctl, "stop")

        async def spooled() -> bool:
            return len(Spool(spool_path).load()) > 50

        await _wait_for(spooled)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.to_thread(_pg_ctl, "start")

    spooled_seqs = [row[0] for row in Spool(spool_path).load()]
    assert spooled_seqs
    before_restart = await _count(url, schema)

    proc, _ = await start(tmp_path, **env)
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await proc.wait() == 0

    conn = await asyncpg.connect(url)
    try:
        seqs = [r[0] for r in await conn.fetch(f'SELECT seq FROM "{schema}".events ORDER BY seq')]
    finally:
        await conn.close()
    assert len(seqs) == len(set(seqs))
    assert set(spooled_seqs) <= set(seqs), "a spooled event was lost"
    assert len(seqs) > before_restart + len(spooled_seqs) - 1
    assert not Spool(spool_path).exists()
    # The new session continued after everything the killed one had stored or spooled.
    new = [s for s in seqs if s > max(spooled_seqs)]
    assert new and min(new) == max(spooled_seqs) + 1
