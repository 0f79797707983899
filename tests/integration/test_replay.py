"""Replay parity: a recorded paper session re-derives the same decisions from its log."""

from __future__ import annotations

from pathlib import Path

import msgspec

from quantumtrade.replay import replay_log
from quantumtrade.store.eventlog import SqliteEventLog
from tests.integration.test_paper_session import run_session, session_config


async def test_recorded_session_replays_with_zero_differences(tmp_path: Path) -> None:
    cfg = session_config(tmp_path)
    await run_session(cfg, seconds=90)
    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    try:
        report = await replay_log(log, cfg)
        assert report.scans > 0 and report.market_events > 0 and report.fed_fills > 0
        assert report.logged.get("SignalGenerated", 0) > 0
        assert report.logged.get("OrderIntent", 0) > 0
        assert report.differences == []
        assert report.replayed == report.logged

        # A window: only decisions at scans inside it are compared (still none differ).
        last = await log.last_seq()
        windowed = await replay_log(log, cfg, from_seq=last // 2)
        assert 0 < windowed.scans < report.scans
        assert windowed.differences == []

        # Different decision logic must show up as differences (the comparison can fail).
        stricter = msgspec.structs.replace(
            cfg, scanner=msgspec.structs.replace(cfg.scanner, top_n=1)
        )
        changed = await replay_log(log, stricter)
        assert changed.differences
        assert {d.kind for d in changed.differences} <= {"missing", "extra", "changed"}
    finally:
        await log.close()
