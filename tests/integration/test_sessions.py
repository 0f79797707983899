"""Restarts: one event log, several daemon sessions.

Replay must treat each session as the daemon lived it (state rebuilt at the restart, positions
restored from the logged fills), and a paper session on another market must not inherit the
earlier session's positions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig
from quantumtrade.events import BarsUpdated, Command, decode, encode
from quantumtrade.replay import ReplayReport, replay_log
from quantumtrade.store.eventlog import SqliteEventLog
from tests.integration.test_paper_session import START_NS, session_config

SECOND_NS = 1_000_000_000


async def run_at(cfg: AppConfig, start_ns: int, seconds: int) -> Daemon:
    """One daemon session from ``start_ns`` (a restart later in time than the last one)."""
    clock = ManualClock(start_ns)
    daemon = await Daemon.create(cfg, clock=clock)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for _ in range(seconds):
                clock.advance(1.0)
                await daemon.step()
                await daemon.bus.drain()
        finally:
            await daemon.stop()
    return daemon


async def replay(cfg: AppConfig, **bounds: int) -> ReplayReport:
    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    try:
        return await replay_log(log, cfg, **bounds)
    finally:
        await log.close()


def open_quantities(daemon: Daemon) -> dict[str, float]:
    return {s: p.quantity for s, p in daemon.portfolio.positions().items() if p.quantity}


@pytest.mark.parametrize("gap_s", [60, 3600])
async def test_replay_of_a_restarted_daemon_replays_each_session(
    tmp_path: Path, gap_s: int
) -> None:
    # 60 s: the restarted daemon re-publishes bars the log already holds (the user's crash);
    # 3600 s: its history does not overlap, but its state still starts afresh.
    cfg = session_config(tmp_path)
    first = await run_at(cfg, START_NS, 60)
    assert open_quantities(first), "the first session must hold positions for this test"
    second = await run_at(cfg, START_NS + (60 + gap_s) * SECOND_NS, 60)

    report = await replay(cfg)
    assert [(s.first_seq, s.last_seq) for s in report.sessions] == [
        (1, first.bus.last_seq),
        (first.bus.last_seq + 1, second.bus.last_seq),
    ]
    assert [s.boundary for s in report.sessions] == ["marker", "marker"]
    for session in report.sessions:
        assert session.scans > 0 and session.logged.get("OrderIntent", 0) > 0
        assert session.differences == 0
        assert session.replayed == session.logged
    # The second session started with the first one's positions, as the daemon did.
    assert report.sessions[1].restored_fills == report.sessions[1].logged_restored_fills > 0
    assert report.differences == []
    assert report.scans == sum(s.scans for s in report.sessions)
    assert report.events_read == second.bus.last_seq

    # A window inside the second session compares only its decisions (still none differ).
    windowed = await replay(cfg, from_seq=first.bus.last_seq + 200)
    assert 0 < windowed.scans < report.sessions[1].scans
    assert windowed.differences == []

    # Negative control: other decision logic differs in both sessions.
    stricter = msgspec.structs.replace(cfg, scanner=msgspec.structs.replace(cfg.scanner, top_n=1))
    changed = await replay(stricter)
    assert all(s.differences > 0 for s in changed.sessions)


async def test_replay_infers_restarts_in_a_log_written_before_session_markers(
    tmp_path: Path,
) -> None:
    cfg = session_config(tmp_path)
    first = await run_at(cfg, START_NS, 40)
    second = await run_at(cfg, START_NS + 100 * SECOND_NS, 40)
    # A log from before the marker existed: the same sessions without their markers.
    conn = sqlite3.connect(cfg.database.sqlite_path)
    with conn:
        deleted = conn.execute("DELETE FROM events WHERE type = 'Command'").rowcount
    conn.close()
    assert deleted == 2

    report = await replay(cfg)
    assert [s.boundary for s in report.sessions] == ["start of log", "inferred"]
    # The inferred restart is where the second session's first bars begin.
    assert report.sessions[1].first_seq == first.bus.last_seq + 2
    assert report.sessions[1].last_seq == second.bus.last_seq
    assert report.differences == []


@pytest.mark.parametrize(
    "change",
    [{"QT_DATA__SYNTHETIC__SEED": "11"}, {"QT_DATA__SYMBOLS": "8"}],
    ids=["another-source", "other-symbols"],
)
async def test_paper_session_on_another_market_starts_a_fresh_account(
    tmp_path: Path, change: dict[str, str]
) -> None:
    cfg = session_config(tmp_path)
    first = await run_at(cfg, START_NS, 60)
    assert open_quantities(first)

    other = session_config(tmp_path, **change)
    later = START_NS + 200 * SECOND_NS
    with capture_logs() as logs:
        fresh = await Daemon.create(other, clock=ManualClock(later))
    await fresh.eventlog.close()
    assert fresh.portfolio.positions() == {}
    assert fresh.session.account == "fresh"
    warnings = [e for e in logs if e["event"] == "fresh_paper_account"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["previous_source"] == "synthetic seed=7"
    assert warnings[0]["source"] == f"synthetic seed={change.get('QT_DATA__SYNTHETIC__SEED', 7)}"

    second = await run_at(other, later, 60)
    assert second.session.account == "fresh"
    # A restart on the same market keeps the new account, and only it.
    third = await Daemon.create(other, clock=ManualClock(later + 100 * SECOND_NS))
    await third.eventlog.close()
    assert third.session.account == "restored"
    assert third.portfolio.positions() == second.portfolio.positions()
    # Back on the first market: a fresh account again, not the first session's positions.
    fourth = await Daemon.create(cfg, clock=ManualClock(later + 200 * SECOND_NS))
    await fourth.eventlog.close()
    assert fourth.session.account == "fresh" and fourth.portfolio.positions() == {}

    # The marker records what the daemon did, and replay mirrors it (no differences).
    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    try:
        markers = [decode(s.payload) async for s in log.read(types=["Command"])]
    finally:
        await log.close()
    assert [m.args["account"] for m in markers if isinstance(m, Command)] == [
        "restored",
        "fresh",
    ]
    report = await replay(other)
    assert len(report.sessions) == 2
    assert report.sessions[1].restored_fills == 0
    assert report.differences == []


async def test_paper_restart_on_the_same_market_keeps_positions_and_says_so(
    tmp_path: Path,
) -> None:
    # Negative control for the fresh account: nothing changed, nothing is discarded.
    cfg = session_config(tmp_path)
    first = await run_at(cfg, START_NS, 60)
    with capture_logs() as logs:
        second = await Daemon.create(cfg, clock=ManualClock(START_NS + 100 * SECOND_NS))
    await second.eventlog.close()
    assert second.session.account == "restored"
    assert second.portfolio.positions() == first.portfolio.positions()
    assert not [e for e in logs if e["log_level"] == "warning"]


def _split_into_per_symbol_events(path: Path) -> tuple[int, int]:
    """Rewrite a log as versions before batched bars wrote it: one ``BarsUpdated`` per
    symbol (``symbol``, ``source``, ``bars``), every event renumbered in order. Returns
    (batch events, per-symbol events)."""
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT seq, ts_ns, type, payload FROM events ORDER BY seq").fetchall()
    out: list[tuple[int, int, str, str]] = []
    batches = 0
    for _, ts_ns, kind, payload in rows:
        event = decode(payload)
        if isinstance(event, BarsUpdated):
            batches += 1
            for symbol, block in event.blocks():
                legacy = {
                    "type": "BarsUpdated",
                    "ts_ns": ts_ns,
                    "seq": len(out) + 1,
                    "symbol": symbol,
                    "source": event.source,
                    "bars": msgspec.to_builtins(block),
                }
                out.append((len(out) + 1, ts_ns, kind, msgspec.json.encode(legacy).decode()))
        else:
            moved = msgspec.structs.replace(event, seq=len(out) + 1)
            out.append((len(out) + 1, ts_ns, kind, encode(moved).decode()))
    with conn:
        conn.execute("DELETE FROM events")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", out)
    conn.close()
    return batches, sum(1 for r in out if r[2] == "BarsUpdated")


async def test_a_log_of_per_symbol_bar_events_still_replays(tmp_path: Path) -> None:
    # Logs written before BarsUpdated held a batch have one event per symbol; they decode as
    # one-symbol batches, restart inference included, with no difference.
    cfg = session_config(tmp_path)
    await run_at(cfg, START_NS, 40)
    await run_at(cfg, START_NS + 100 * SECOND_NS, 40)
    batched = await replay(cfg)
    assert batched.differences == [] and len(batched.sessions) == 2

    batches, per_symbol = _split_into_per_symbol_events(Path(cfg.database.sqlite_path))
    assert per_symbol > batches > 0
    legacy = await replay(cfg)
    assert [s.boundary for s in legacy.sessions] == ["marker", "marker"]
    assert legacy.differences == []
    assert legacy.logged == batched.logged and legacy.replayed == batched.replayed
    assert legacy.market_events == per_symbol
