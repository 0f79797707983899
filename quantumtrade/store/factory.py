"""Open the configured event log and work out where the event sequence continues."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import structlog

from quantumtrade.config import DatabaseConfig, sqlite_path_problem
from quantumtrade.errors import ConfigError, EventLogMissing, StoreUnavailable
from quantumtrade.redaction import redact_url
from quantumtrade.store.eventlog import EventLog, SqliteEventLog
from quantumtrade.store.postgres import PostgresEventLog
from quantumtrade.store.spool import Spool

log = structlog.get_logger("quantumtrade.store")


async def open_event_log(cfg: DatabaseConfig) -> tuple[EventLog, Spool, int]:
    """(event log, spool, first seq for the bus).

    PostgreSQL when ``url`` is set, else SQLite. If PostgreSQL cannot be reached, the daemon
    still starts (events spool locally until it answers) provided the local high-water mark
    says where the sequence continues; on a first start with no local state it cannot know,
    and raises StoreUnavailable rather than risk reusing sequence numbers.
    """
    spool = Spool(cfg.spool_path or Path(cfg.sqlite_path).with_name("eventlog.spool"))
    local_last = spool.high_water()
    eventlog: EventLog
    if cfg.url:
        eventlog = PostgresEventLog(cfg.url, schema=cfg.schema)
        try:
            await eventlog.open()
            db_last: int | None = await eventlog.last_seq()
        except StoreUnavailable as exc:
            if not local_last:
                raise StoreUnavailable(
                    f"PostgreSQL at {redact_url(cfg.url)} is unreachable and there is no local "
                    f"record of the event sequence ({spool.mark_path}): {exc}"
                ) from exc
            log.error(
                "eventlog_unreachable_at_start",
                backend="postgres",
                url=redact_url(cfg.url),
                error=str(exc),
                continue_after=local_last,
            )
            db_last = None
    else:
        eventlog = SqliteEventLog(cfg.sqlite_path)
        await _open_sqlite(eventlog, cfg.sqlite_path)
        db_last = await eventlog.last_seq()
    first_seq = max(db_last or 0, local_last) + 1
    return eventlog, spool, first_seq


async def _open_sqlite(eventlog: SqliteEventLog, path: str) -> None:
    """Open the SQLite log; a file that cannot be one (a directory, an unwritable place, a
    corrupt or foreign file) is a ``ConfigError`` naming it: restarting cannot fix it."""
    problem = await asyncio.to_thread(sqlite_path_problem, path)
    if problem is None:
        try:
            await eventlog.open()
            return
        except (sqlite3.DatabaseError, OSError) as exc:
            await eventlog.close()
            problem = f"{eventlog.path}: cannot open the SQLite event log: {exc}"
    raise ConfigError("event log", "database.sqlite_path", problem)


def event_log_location(cfg: DatabaseConfig) -> str:
    """Where the configured event log is, in words an operator can check: the SQLite file's
    absolute path (a relative ``sqlite_path`` is relative to the current directory), or the
    PostgreSQL URL (password hidden) and schema."""
    if cfg.url:
        return f"postgres {redact_url(cfg.url)} schema {cfg.schema}"
    return f"sqlite {Path(cfg.sqlite_path).absolute()}"


def missing_event_log(cfg: DatabaseConfig) -> str | None:
    """Why the configured SQLite log is not there (None: it is, or the log is PostgreSQL)."""
    path = Path(cfg.sqlite_path)
    if cfg.url or path.is_file():
        return None
    relative = (
        ""
        if path.is_absolute()
        else f" ([database] sqlite_path {cfg.sqlite_path!r} is relative to the current directory)"
    )
    return f"no event log at {path.absolute()}{relative}"


async def open_existing_event_log(cfg: DatabaseConfig) -> EventLog:
    """The configured event log, for commands that read an existing one (``replay``).

    A SQLite file that is not there raises EventLogMissing and nothing is created (unlike a
    start, which creates it). PostgreSQL is opened as at a start (migrations applied).
    """
    missing = missing_event_log(cfg)
    if missing is not None:
        raise EventLogMissing(missing)
    eventlog: EventLog = (
        PostgresEventLog(cfg.url, schema=cfg.schema) if cfg.url else SqliteEventLog(cfg.sqlite_path)
    )
    await eventlog.open()
    return eventlog
