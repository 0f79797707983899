"""Open the configured event log and work out where the event sequence continues."""

from __future__ import annotations

from pathlib import Path

import structlog

from quantumtrade.config import DatabaseConfig
from quantumtrade.errors import StoreUnavailable
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
        await eventlog.open()
        db_last = await eventlog.last_seq()
    first_seq = max(db_last or 0, local_last) + 1
    return eventlog, spool, first_seq
