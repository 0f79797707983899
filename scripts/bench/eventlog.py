"""Events per second appended through the event log, beside raw COPY of the same rows.

* PostgreSQL: the EventLogWriter path (encode each event to JSON, batch, COPY through
  PostgresEventLog) against asyncpg's raw ``copy_records_to_table`` of the same, already
  encoded rows in the same batch size, into an identical table. Both into fresh tables in a
  scratch schema of the real server (127.0.0.1:5432, database ``test`` unless
  QT_BENCH_DATABASE_URL says otherwise), dropped afterwards.
* SQLite: the same writer path into a SQLite file (the embedded default).

Best of several rounds each, interleaved. Last line: a JSON object with the figures.

Run: .venv/bin/python scripts/bench/eventlog.py [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import uvloop

from quantumtrade.events import TickerUpdated, encode
from quantumtrade.store.eventlog import EventLogWriter, SqliteEventLog
from quantumtrade.store.postgres import PostgresEventLog

URL = os.environ.get("QT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def make_events(n: int, first_seq: int = 1) -> list[TickerUpdated]:
    from msgspec.structs import force_setattr

    events = []
    for i in range(n):
        e = TickerUpdated(
            ts_ns=1_700_000_000_000_000_000 + i,
            symbol="BTCUSDT",
            source="bench",
            bid=42_000.0 + i % 100,
            ask=42_000.5 + i % 100,
            last=42_000.25,
        )
        force_setattr(e, "seq", first_seq + i)  # as the bus stamps it
        events.append(e)
    return events


async def through_writer(log: object, n: int, batch: int) -> float:
    writer = EventLogWriter(
        log,
        batch_size=batch,
        flush_interval_ms=1_000,  # type: ignore[arg-type]
        max_buffer=max(n, batch),
    )
    events = make_events(n)
    t0 = time.perf_counter()
    for e in events:
        writer.record(e)
    assert await writer.flush()
    elapsed = time.perf_counter() - t0
    assert writer.written == n
    return n / elapsed


async def raw_copy(conn: asyncpg.Connection, n: int, batch: int) -> float:
    rows = [(e.seq, e.ts_ns, type(e).__name__, encode(e).decode()) for e in make_events(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        await conn.copy_records_to_table(
            "events", records=rows[i : i + batch], columns=("seq", "ts_ns", "type", "payload")
        )
    return n / (time.perf_counter() - t0)


async def main(n: int, rounds: int, batch: int) -> dict[str, float]:
    conn = await asyncpg.connect(URL)
    pg_rates, raw_rates, sqlite_rates = [], [], []
    try:
        for _ in range(rounds):
            schema = f"qt_bench_{uuid.uuid4().hex[:8]}"
            log = PostgresEventLog(URL, schema=schema)
            await log.open()
            try:
                pg_rates.append(await through_writer(log, n, batch))
                await conn.execute(f'SET search_path = "{schema}"; TRUNCATE events')
                raw_rates.append(await raw_copy(conn, n, batch))
            finally:
                await log.close()
                await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            with tempfile.TemporaryDirectory() as tmp:
                slog = SqliteEventLog(Path(tmp) / "bench.sqlite")
                await slog.open()
                sqlite_rates.append(await through_writer(slog, n, batch))
                await slog.close()
    finally:
        await conn.close()
    return {
        "pg_events_per_s": round(max(pg_rates)),
        "pg_raw_copy_rows_per_s": round(max(raw_rates)),
        "pg_ratio_vs_raw_copy": round(max(pg_rates) / max(raw_rates), 3),
        "sqlite_events_per_s": round(max(sqlite_rates)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()
    figures = uvloop.run(main(args.events, args.rounds, args.batch))
    print(f"{args.events:,} events per round, batches of {args.batch:,}, best of {args.rounds}")
    print(
        f"PostgreSQL through the event log: {figures['pg_events_per_s']:>10,} events/s  "
        f"raw COPY {figures['pg_raw_copy_rows_per_s']:>10,} rows/s  "
        f"ratio {figures['pg_ratio_vs_raw_copy']:.2f}  (goal >= 100,000 and >= 0.8)"
    )
    print(f"SQLite through the event log:     {figures['sqlite_events_per_s']:>10,} events/s")
    print(json.dumps(figures))
