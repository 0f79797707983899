"""SIGKILL at seeded random moments, restart, check: the log stays consistent.

After every kill: the seqs stored (database, plus the spool for PostgreSQL) are exactly
1..n, no gap and no duplicate. After every restart: the new session's first event
(``session_started``) is n + 1, and every position the daemon reports equals the signed sum of
the logged fills. The daemon flushes every 2 ms in batches of 20 over a busy synthetic market
(12 symbols, 100 ms bars), so some kills land while a batch is being written or spooled; and
two of the ten (``MID_FLUSH``) surely do: the database is made to keep the daemon's write
waiting (SQLite: another connection's write lock; PostgreSQL: the proxy swallows traffic), the
test sees the daemon publish while nothing more is stored, and kills it there.
PostgreSQL runs behind a proxy; in about half the cycles it is cut at a random moment before
the kill (the daemon spools), and restored before the restart.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.integration.test_daemon_process import start
from tests.integration.test_loss_window import (
    Drain,
    contiguous_prefix,
    published,
    spool_seqs,
    trading_env,
)
from tests.support.pg_proxy import PgProxy

KILLS = 10
SEED = 20261215
MID_FLUSH = (2, 6)
"""Cycles killed while a batch is held inside its write (the database made to wait), so at
least these kills land mid-flush whatever the random moments do."""

Rows = list[tuple[int, str, str]]  # (seq, type, payload)
ReadLog = Callable[[], Awaitable[Rows]]
Hold = Callable[[], AbstractAsyncContextManager[None]]
"""Makes the database keep the daemon's next write waiting until the context exits."""


def sqlite_hold(path: Path) -> Hold:
    """A write lock taken by another connection: the daemon's next write waits on it (its busy
    timeout is 5 s) with its batch in flight."""

    @asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()

    return hold


def proxy_hold(proxy: PgProxy) -> Hold:
    """The proxy swallows traffic: the COPY in flight gets no answer (the write's bound is 5 s)."""

    @asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        proxy.hang()
        try:
            yield
        finally:
            proxy.restore()

    return hold


def sqlite_reader(path: Path) -> ReadLog:
    async def read() -> Rows:
        def rows() -> Rows:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return db.execute("SELECT seq, type, payload FROM events ORDER BY seq").fetchall()
            finally:
                db.close()

        return await asyncio.to_thread(rows)

    return read


def pg_reader(url: str, schema: str) -> ReadLog:
    async def read() -> Rows:
        conn = await asyncpg.connect(url)
        try:
            records = await conn.fetch(
                f'SELECT seq, type, payload::text FROM "{schema}".events ORDER BY seq'
            )
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()
        return [(r[0], r[1], r[2]) for r in records]

    return read


def signed_fills(rows: Rows, upto: int) -> dict[str, float]:
    net: dict[str, float] = {}
    for seq, type_name, payload in rows:
        if type_name == "OrderFilled" and seq <= upto:
            fill = json.loads(payload)
            sign = 1.0 if fill["side"] == "BUY" else -1.0
            net[fill["symbol"]] = net.get(fill["symbol"], 0.0) + sign * fill["quantity"]
    return net


async def check_positions(http: aiohttp.ClientSession, base: str, read: ReadLog) -> int:
    """Positions on /api/trading/positions equal the signed sum of logged fills; the fills
    compared (returned). Retried while a fill lands between the reads, which would race."""
    for _ in range(20):
        before = await published(http, base)
        await asyncio.sleep(0.3)  # fills published by `before` reach the portfolio
        async with http.get(f"{base}/api/trading/positions") as r:
            positions: dict[str, Any] = (await r.json())["positions"]
        after = await published(http, base)
        async with asyncio.timeout(20):
            while contiguous_prefix([row[0] for row in await read()]) < after:
                await asyncio.sleep(0.02)
        rows = await read()
        if any(before < s <= after for s, t, _ in rows if t == "OrderFilled"):
            continue
        expected = signed_fills(rows, after)
        for symbol in set(expected) | set(positions):
            have = positions.get(symbol, {}).get("quantity", 0.0)
            want = expected.get(symbol, 0.0)
            assert abs(have - want) <= 1e-9 * max(1.0, abs(want)), (symbol, have, want)
        return sum(1 for _, t, _ in rows if t == "OrderFilled")
    raise AssertionError("a fill landed between every pair of reads")


async def kill_cycles(
    tmp_path: Path,
    env: dict[str, str],
    read: ReadLog,
    *,
    hold: Hold,
    spool_path: Path | None = None,
    proxy: PgProxy | None = None,
) -> list[str]:
    """KILLS start/SIGKILL cycles and a last clean start; one line per kill."""
    rng = random.Random(SEED)
    report: list[str] = []
    stored = 0  # what the last kill left: seqs 1..stored
    async with aiohttp.ClientSession() as http:
        for cycle in range(KILLS + 1):
            proc, base = await start(tmp_path, **env)
            drain = Drain(proc)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(drain.run())
                try:
                    async with asyncio.timeout(20):
                        while not (new := [r for r in await read() if r[0] > stored]):
                            await asyncio.sleep(0.02)
                    seq, type_name, payload = new[0]
                    started = type_name == "Command" and json.loads(payload)["name"]
                    assert (seq, started) == (stored + 1, "session_started"), f"restart {cycle}"
                    fills = await check_positions(http, base, read)
                    if cycle == KILLS:
                        proc.send_signal(signal.SIGTERM)
                        async with asyncio.timeout(15):
                            assert await proc.wait() == 0
                        break
                    run_s = rng.uniform(0.3, 2.0)
                    cut_s = rng.uniform(0.0, run_s) if proxy and rng.random() < 0.5 else None
                    mid_flush = cycle in MID_FLUSH
                    if mid_flush:
                        cut_s = None
                        await asyncio.sleep(run_s)
                        async with hold():
                            before = contiguous_prefix([row[0] for row in await read()])
                            shown = await published(http, base)
                            await asyncio.sleep(0.8)  # 400 flush intervals of 2 ms
                            # The daemon went on publishing while nothing more was stored:
                            # its writer is inside a write with a batch in flight.
                            assert await published(http, base) > shown
                            stuck = contiguous_prefix([row[0] for row in await read()])
                            assert stuck == before, f"cycle {cycle}: the hold did not hold"
                            proc.send_signal(signal.SIGKILL)
                            await proc.wait()
                    elif cut_s is not None:
                        assert proxy is not None
                        await asyncio.sleep(cut_s)
                        proxy.cut()
                        await asyncio.sleep(run_s - cut_s)
                    else:
                        await asyncio.sleep(run_s)
                    if not mid_flush:
                        proc.send_signal(signal.SIGKILL)
                        await proc.wait()
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
            if proxy is not None:
                proxy.restore()
            in_db = [row[0] for row in await read()]
            assert len(in_db) == len(set(in_db)), "a seq is stored twice"
            spooled = spool_seqs(spool_path) if spool_path else []
            durable = set(in_db) | set(spooled)
            stored = contiguous_prefix(list(durable))
            assert durable == set(range(1, stored + 1)), f"kill {cycle}: a gap in the log"
            report.append(
                f"kill {cycle}: after {run_s:.2f} s"
                + (f" (database cut at {cut_s:.2f} s)" if cut_s is not None else "")
                + (" (killed mid-flush)" if cycle in MID_FLUSH else "")
                + f", seqs 1..{stored} ({len(spooled)} spooled), {fills} fills at restart"
            )
    return report


async def test_sigkill_at_random_moments_keeps_sqlite_consistent(tmp_path: Path) -> None:
    env = trading_env(
        QT_DATA__SYMBOLS="12",
        QT_DATABASE__FLUSH_INTERVAL_MS="2",
        QT_DATABASE__BATCH_SIZE="20",
    )
    path = tmp_path / "events.sqlite"
    report = await kill_cycles(tmp_path, env, sqlite_reader(path), hold=sqlite_hold(path))
    print("\n".join(report))
    assert sum("mid-flush" in line for line in report) == len(MID_FLUSH)


async def test_sigkill_at_random_moments_keeps_postgres_consistent_down_and_up(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_schema
    spool_path = tmp_path / "eventlog.spool"
    async with PgProxy() as proxy:
        env = trading_env(
            DATABASE_URL=proxy.url(url),
            QT_DATABASE__SCHEMA=schema,
            QT_DATABASE__SPOOL_PATH=str(spool_path),
            QT_DATA__SYMBOLS="12",
            QT_DATABASE__FLUSH_INTERVAL_MS="2",
            QT_DATABASE__BATCH_SIZE="20",
        )
        report = await kill_cycles(
            tmp_path,
            env,
            pg_reader(url, schema),
            hold=proxy_hold(proxy),
            spool_path=spool_path,
            proxy=proxy,
        )
    print("\n".join(report))
    assert any("cut" in line for line in report), "no cycle had the database down"
    assert any("cut" in line and "(0 spooled)" not in line for line in report)
