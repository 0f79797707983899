"""A local append-only spool for event-log batches the database could not take.

Each batch is appended as JSON lines (``[seq, ts_ns, type, payload]``) and fsynced before the
writer lets go of it, so a batch is always in memory, in the spool or in the database. The
spool is drained into the database when it answers again (and at the next start); draining is
idempotent on ``seq`` and the file is emptied only after the database committed, so a crash
at any point neither loses nor duplicates an event.

A torn last line (a crash in the middle of an append) is dropped: that batch was never
acknowledged as spooled. Any other unreadable content sets the whole file aside as
``<name>.corrupt-<n>`` with an error log line and a counter, and the daemon starts anyway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import structlog

from quantumtrade.store.rows import Row

log = structlog.get_logger("quantumtrade.spool")


class Spool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.mark_path = self.path.with_name(self.path.name + ".seq")
        self.set_aside = 0
        self.torn_lines = 0

    def mark(self, seq: int) -> None:
        """Remember the newest seq that reached the database or the spool (atomic replace)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.mark_path.with_name(self.mark_path.name + ".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self.mark_path)

    def high_water(self) -> int:
        """The newest seq known to be stored, from the mark and the spool (0 if none)."""
        try:
            marked = int(self.mark_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            marked = 0
        return max(marked, self.max_seq())

    def append(self, rows: Sequence[Row]) -> None:
        """Append rows durably (written and fsynced before returning)."""
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def exists(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def load(self) -> list[Row]:
        """Every spooled row; sets the file aside (returning nothing) if it is corrupt."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._set_aside(f"unreadable: {exc}")
            return []
        lines = raw.split(b"\n")
        rows: list[Row] = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                seq, ts_ns, type_name, payload = json.loads(line)
                if not (
                    isinstance(seq, int)
                    and isinstance(ts_ns, int)
                    and isinstance(type_name, str)
                    and isinstance(payload, str)
                ):
                    raise ValueError("row has the wrong shape")
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                if i == len(lines) - 1:
                    # Last line without a newline: an append cut short by a crash.
                    self.torn_lines += 1
                    log.warning("spool_torn_line_dropped", path=str(self.path))
                    continue
                self._set_aside(f"line {i + 1}: {exc}")
                return []
            rows.append((seq, ts_ns, type_name, payload))
        return rows

    def max_seq(self) -> int:
        rows = self.load()
        return max((r[0] for r in rows), default=0)

    def clear(self) -> None:
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(0)
                fh.flush()
                os.fsync(fh.fileno())
        except FileNotFoundError:
            pass

    def _set_aside(self, reason: str) -> None:
        n = 1
        while (target := self.path.with_name(f"{self.path.name}.corrupt-{n}")).exists():
            n += 1
        try:
            self.path.rename(target)
        except OSError as exc:
            log.error("spool_set_aside_failed", path=str(self.path), error=str(exc))
        self.set_aside += 1
        log.error(
            "spool_corrupt_set_aside", path=str(self.path), moved_to=str(target), reason=reason
        )
