"""The event log: every published event, append-only, keyed by ``seq``, replayable.

``EventLog`` is the storage protocol; ``SqliteEventLog`` is the embedded default (a local file,
no server). ``EventLogWriter`` sits on the bus as its recorder: it buffers events in memory and
writes them in batches every ``batch_size`` events or ``flush_interval_ms``, whichever is first,
and once more at shutdown. Appends are idempotent on ``seq`` (a batch written twice leaves one
row per event). When a write fails, the buffer goes to the spool (kept in memory if there is
none) and, for as long as the database stays down, every later flush spools at the same cadence
(every ``flush_interval_ms`` or ``batch_size`` events), so a SIGKILL mid-outage loses no more
than it would with the database up. Only the reconnect attempts back off (``flush_interval_ms``
doubling to 5 s, timed on the injected clock); when the buffer reaches ``max_buffer``
publishers wait, so nothing is dropped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import structlog

from quantumtrade.clock import Clock, WallClock
from quantumtrade.events import Event, encode
from quantumtrade.store.rows import Row
from quantumtrade.store.spool import Spool

log = structlog.get_logger("quantumtrade.eventlog")


class StoredEvent(msgspec.Struct, frozen=True):
    seq: int
    ts_ns: int
    type: str
    payload: str


class EventLog(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, rows: Sequence[Row]) -> None:
        """Write rows; a row whose seq is already stored is skipped (idempotent)."""

    async def last_seq(self) -> int: ...

    async def count(self) -> int: ...

    def read(
        self,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        types: Sequence[str] | None = None,
        from_ts_ns: int | None = None,
        to_ts_ns: int | None = None,
    ) -> AsyncIterator[StoredEvent]: ...


# Numbered schema migrations; each runs once, in order, inside a transaction.
SQLITE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,
        ts_ns   INTEGER NOT NULL,
        type    TEXT    NOT NULL,
        payload TEXT    NOT NULL
    );
    CREATE INDEX events_ts_ns ON events (ts_ns);
    CREATE INDEX events_type_seq ON events (type, seq);
    """,
)


class SqliteEventLog:
    """The event log in a local SQLite file (WAL mode), driven from a worker thread."""

    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed batch survives a power loss
        self._conn = conn
        self._migrate(conn)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
            if version <= current:
                continue
            conn.execute("BEGIN")
            try:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("eventlog_migrated", backend="sqlite", version=version)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("event log is not open")
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    async def append(self, rows: Sequence[Row]) -> None:
        if rows:
            await asyncio.to_thread(self._append, rows)

    def _append(self, rows: Sequence[Row]) -> None:
        conn = self._db()
        with self._lock:
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _scalar(self, sql: str) -> int:
        with self._lock:
            row = self._db().execute(sql).fetchone()
        return int(row[0] or 0)

    async def last_seq(self) -> int:
        return await asyncio.to_thread(self._scalar, "SELECT MAX(seq) FROM events")

    async def count(self) -> int:
        return await asyncio.to_thread(self._scalar, "SELECT COUNT(*) FROM events")

    async def read(
        self,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        types: Sequence[str] | None = None,
        from_ts_ns: int | None = None,
        to_ts_ns: int | None = None,
        page: int = 5_000,
    ) -> AsyncIterator[StoredEvent]:
        """Events in seq order, filtered by seq range, time range and type names."""
        where = ["seq >= ?"]
        base: list[object] = []
        if to_seq is not None:
            where.append("seq <= ?")
            base.append(to_seq)
        if from_ts_ns is not None:
            where.append("ts_ns >= ?")
            base.append(from_ts_ns)
        if to_ts_ns is not None:
            where.append("ts_ns <= ?")
            base.append(to_ts_ns)
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            base.extend(types)
        sql = f"SELECT seq, ts_ns, type, payload FROM events WHERE {' AND '.join(where)} "
        sql += "ORDER BY seq LIMIT ?"
        cursor = from_seq
        while True:
            rows = await asyncio.to_thread(self._fetch, sql, [cursor, *base, page])
            for row in rows:
                yield StoredEvent(*row)
            if len(rows) < page:
                return
            cursor = rows[-1][0] + 1

    def _fetch(self, sql: str, params: list[object]) -> list[Row]:
        with self._lock:
            return self._db().execute(sql, params).fetchall()


RECONNECT_BACKOFF_MAX_S = 5.0


class EventLogWriter:
    """The bus's recorder: buffers events and writes them to the log in batches."""

    def __init__(
        self,
        eventlog: EventLog,
        *,
        batch_size: int = 1_000,
        flush_interval_ms: int = 200,
        max_buffer: int = 200_000,
        spool: Spool | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.eventlog = eventlog
        self.clock: Clock = clock or WallClock()
        self.spool = spool
        self._spool_pending = spool is not None and spool.exists()
        self.spooled = 0
        self.recovered = 0
        self._last_stored = 0
        self._marked = 0  # the seq last written to the spool's mark file
        self.batch_size = batch_size
        self.flush_interval = flush_interval_ms / 1000.0
        self.max_buffer = max(max_buffer, batch_size)
        self._buffer: list[Event] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.last_error = ""
        """The current write failure ("" once a write succeeds again)."""
        self.last_failure = ""
        """The most recent write failure, kept after recovery, with ``last_failure_ns``."""
        self.last_failure_ns = 0
        self._failing = False
        # The next reconnect attempt during an outage (clock ns; 0: attempt at the next flush).
        self._reconnect_at_ns = 0
        self._reconnect_delay = self.flush_interval
        self.reconnect_attempts = 0

    # --- Recorder -----------------------------------------------------------------------

    def record(self, event: Event) -> bool:
        buffer = self._buffer
        buffer.append(event)
        n = len(buffer)
        if n >= self.batch_size:
            self._wake.set()
            if n >= self.max_buffer:
                self._room.clear()
                return False
        return True

    async def wait_room(self) -> None:
        await self._room.wait()

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._task = tg.create_task(self._run(), name="eventlog-writer")

    async def _run(self) -> None:
        # No sleep here on failure: the backoff delays reconnect attempts only (in flush), never
        # the spool writes, which keep the flush cadence through an outage.
        while True:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self._flush(reconnect=self._reconnect_due())

    async def flush(self) -> bool:
        """Write everything buffered; False if the database is down (events spooled or kept)."""
        return await self._flush(reconnect=True)

    async def _flush(self, *, reconnect: bool) -> bool:
        """As ``flush``; during an outage the database is tried only if ``reconnect``, and
        otherwise the buffer goes straight to the spool."""
        async with self._flush_lock:
            if (self._failing or self._spool_pending) and not reconnect:
                await self._spool_buffer()
                return False
            if self._spool_pending and not await self._drain_spool():
                self._reconnect_later()
                await self._spool_buffer(failed=True)
                return False
            while self._buffer:
                batch = self._buffer[: self.batch_size]
                rows = [(e.seq, e.ts_ns, type(e).__name__, encode(e).decode()) for e in batch]
                try:
                    await self.eventlog.append(rows)
                except Exception as exc:
                    self._note_failure(exc)
                    log.error(
                        "eventlog_write_failed",
                        backend=self.eventlog.name,
                        pending=len(self._buffer),
                        error=self.last_error,
                    )
                    self._reconnect_later()
                    await self._spool_buffer(failed=True)
                    return False
                self._failing = False
                del self._buffer[: len(batch)]
                self._last_stored = batch[-1].seq
                self.written += len(batch)
                self.batches += 1
                if len(self._buffer) < self.max_buffer:
                    self._room.set()
            self._failing = False
            self.last_error = ""
            self._reconnect_at_ns = 0
            self._reconnect_delay = self.flush_interval
            if self.spool is not None and self._last_stored != self._marked:
                await asyncio.to_thread(self.spool.mark, self._last_stored)
                self._marked = self._last_stored
            return True

    def _reconnect_due(self) -> bool:
        return self.clock.now_ns() >= self._reconnect_at_ns

    def _reconnect_later(self) -> None:
        """Schedule the next reconnect attempt; the delay doubles up to 5 s."""
        self.reconnect_attempts += 1
        self._reconnect_at_ns = self.clock.now_ns() + int(self._reconnect_delay * 1e9)
        self._reconnect_delay = min(self._reconnect_delay * 2, RECONNECT_BACKOFF_MAX_S)

    def _note_failure(self, exc: Exception) -> None:
        self.failures += 1
        self._failing = True
        self.last_error = self.last_failure = f"{type(exc).__name__}: {exc}"
        self.last_failure_ns = self.clock.now_ns()

    async def _spool_buffer(self, *, failed: bool = False) -> None:
        """Move the whole buffer to the spool file (kept in memory if that fails too).

        Logged as a warning after a failed attempt, at debug level on the cadence in between.
        """
        if self.spool is None or not self._buffer:
            return
        batch = list(self._buffer)
        rows = [(e.seq, e.ts_ns, type(e).__name__, encode(e).decode()) for e in batch]
        try:
            await asyncio.to_thread(self.spool.append, rows)
        except OSError as exc:
            log.error(
                "spool_write_failed",
                path=str(self.spool.path),
                error=str(exc),
                pending=len(self._buffer),
            )
            return
        del self._buffer[: len(batch)]
        self._last_stored = batch[-1].seq
        self._spool_pending = True
        self.spooled += len(rows)
        self._room.set()
        (log.warning if failed else log.debug)(
            "eventlog_spooled", rows=len(rows), path=str(self.spool.path)
        )

    async def _drain_spool(self) -> bool:
        """Write the spooled rows to the database, then empty the spool; False if it failed."""
        assert self.spool is not None
        rows = await asyncio.to_thread(self.spool.load)
        try:
            for i in range(0, len(rows), self.batch_size * 10):
                await self.eventlog.append(rows[i : i + self.batch_size * 10])
        except Exception as exc:
            self._note_failure(exc)
            return False
        await asyncio.to_thread(self.spool.clear)
        self._spool_pending = False
        self.recovered += len(rows)
        if rows:
            log.info("spool_recovered", rows=len(rows), backend=self.eventlog.name)
        return True

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the timer loop and write what is left (bounded by ``timeout``)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        try:
            async with asyncio.timeout(timeout):
                # Done when written, or spooled (the next start writes the spool).
                while not await self.flush() and self._buffer:
                    await asyncio.sleep(0.1)
        except TimeoutError:
            log.error("eventlog_flush_timeout", unwritten=len(self._buffer))

    def health(self) -> dict[str, object]:
        return {
            "status": "degraded" if self._failing else "ok",
            "backend": self.eventlog.name,
            "written": self.written,
            "pending": self.pending,
            "write_failures": self.failures,
            "last_error": self.last_error,
            "last_failure": self.last_failure,
            "last_failure_ns": self.last_failure_ns,
            "spooled": self.spooled,
            "recovered_from_spool": self.recovered,
            "spool_pending": self._spool_pending,
            "spool_set_aside": self.spool.set_aside if self.spool else 0,
        }
