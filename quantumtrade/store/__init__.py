"""Storage of the event log: every published event, append-only, keyed by ``seq``.

Owns the ``EventLog`` protocol and its backends (SQLite, PostgreSQL), the row shape they share
(``rows``), the batching writer that records the bus, the spool for batches the database could
not take, ``factory`` (opens the configured log, finds where ``seq`` continues) and ``session``
(the marker each start logs, and which fills it restores).
"""
