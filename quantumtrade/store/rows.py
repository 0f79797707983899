"""The shape of one event-log row, shared by the log backends and the spool (a leaf module)."""

Row = tuple[int, int, str, str]
"""(seq, ts_ns, type, payload JSON)."""
