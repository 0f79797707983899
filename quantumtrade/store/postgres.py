"""The event log in PostgreSQL through asyncpg: batched COPY, idempotent on ``seq``.

A batch is COPYed straight into ``events`` (the fast path). If any of its rows is already
stored (a batch retried after a lost acknowledgement, a spool replayed at start), the COPY
fails as a whole on the primary key and the batch goes through a temporary staging table and
``INSERT … ON CONFLICT (seq) DO NOTHING`` instead, so every event ends up stored exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import asyncpg
import structlog

from quantumtrade.errors import StoreUnavailable
from quantumtrade.redaction import redact_url
from quantumtrade.store.eventlog import StoredEvent
from quantumtrade.store.rows import Row

log = structlog.get_logger("quantumtrade.eventlog.postgres")

# Numbered schema migrations; each runs once, in order, in its own transaction.
PG_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS events (
        seq     bigint PRIMARY KEY,
        ts_ns   bigint NOT NULL,
        type    text   NOT NULL,
        payload jsonb  NOT NULL
    );
    -- ts_ns grows with seq, so a BRIN index serves time-range reads at almost no write cost;
    -- reads by type scan a seq range (replay reads most types anyway).
    CREATE INDEX IF NOT EXISTS events_ts_ns_brin ON events USING brin (ts_ns);
    """,
)

_COLUMNS = ("seq", "ts_ns", "type", "payload")


class PostgresEventLog:
    name = "postgres"

    def __init__(
        self, url: str, *, schema: str = "public", pool_size: int = 4, timeout_s: float = 5.0
    ) -> None:
        self.url = url
        self.schema = schema
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        """Bound on a connect (with its migrations) and on each write: a server that stops
        answering (packets dropped, not refused) fails the write instead of holding the
        writer, which spools meanwhile."""
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresEventLog({redact_url(self.url)!r}, schema={self.schema!r})"

    async def open(self) -> None:
        """Connect and migrate; raises StoreUnavailable when the server cannot be reached."""
        await self._connect()

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                server_settings={"search_path": self.schema},
                timeout=self.timeout_s,
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        self._pool = pool
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.migrate()
        except TimeoutError as exc:
            self._pool = None
            pool.terminate()
            raise StoreUnavailable(f"PostgreSQL did not answer the migration: {exc}") from exc
        except BaseException:
            self._pool = None
            pool.terminate()  # close() would wait on a server that may not answer
            raise
        return pool

    async def migrate(self) -> int:
        """Apply the migrations not yet applied; the schema version afterwards."""
        pool = self._require()
        async with pool.acquire() as conn:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            # One migrator at a time, even with several daemons sharing the database.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.schema)
                current = await conn.fetchval("SELECT max(version) FROM schema_migrations") or 0
                for version, script in enumerate(PG_MIGRATIONS, start=1):
                    if version > current:
                        await conn.execute(script)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version) VALUES ($1)", version
                        )
                        log.info("eventlog_migrated", backend="postgres", version=version)
                return len(PG_MIGRATIONS)

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("event log is not open")
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def append(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        pool = await self._connect()  # reconnects after an outage
        timeout = self.timeout_s
        try:
            conn = await pool.acquire(timeout=timeout)
            try:
                try:
                    await conn.copy_records_to_table(
                        "events", records=rows, columns=_COLUMNS, timeout=timeout
                    )
                except asyncpg.UniqueViolationError:
                    await self._append_deduplicated(conn, rows, timeout)
            except BaseException:
                # Never wait on a connection that failed mid-write (it may not answer):
                # closed first, its release is bookkeeping only.
                conn.terminate()
                await pool.release(conn)
                raise
            await pool.release(conn, timeout=timeout)
        except (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            TimeoutError,
        ) as exc:
            # Drop the pool: the next append reconnects from scratch.
            self._pool = None
            pool.terminate()
            raise StoreUnavailable(f"PostgreSQL write failed: {exc}") from exc

    @staticmethod
    async def _append_deduplicated(
        conn: asyncpg.Connection, rows: Sequence[Row], timeout: float
    ) -> None:
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS events_staging "
                "(seq bigint, ts_ns bigint, type text, payload jsonb) ON COMMIT DELETE ROWS",
                timeout=timeout,
            )
            await conn.copy_records_to_table(
                "events_staging", records=rows, columns=_COLUMNS, timeout=timeout
            )
            await conn.execute(
                "INSERT INTO events SELECT DISTINCT ON (seq) * FROM events_staging "
                "ON CONFLICT (seq) DO NOTHING",
                timeout=timeout,
            )

    async def last_seq(self) -> int:
        pool = await self._connect()
        return int(await pool.fetchval("SELECT coalesce(max(seq), 0) FROM events"))

    async def count(self) -> int:
        pool = await self._connect()
        return int(await pool.fetchval("SELECT count(*) FROM events"))

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
        sql = (
            "SELECT seq, ts_ns, type, payload::text FROM events WHERE seq >= $1 "
            "AND ($2::bigint IS NULL OR seq <= $2) "
            "AND ($3::text[] IS NULL OR type = ANY($3)) "
            "AND ($4::bigint IS NULL OR ts_ns >= $4) "
            "AND ($5::bigint IS NULL OR ts_ns <= $5) "
            "ORDER BY seq LIMIT $6"
        )
        pool = await self._connect()  # StoreUnavailable if the server is down, as append
        cursor = from_seq
        type_list = list(types) if types else None
        while True:
            rows = await pool.fetch(sql, cursor, to_seq, type_list, from_ts_ns, to_ts_ns, page)
            for r in rows:
                yield StoredEvent(r[0], r[1], r[2], r[3])
            if len(rows) < page:
                return
            cursor = rows[-1][0] + 1
