"""The fault tree: every exception QuantumTrade raises on purpose derives from one base."""

from __future__ import annotations


class QuantumTradeError(Exception):
    """Base of all QuantumTrade faults (a refusal is a value, never one of these)."""


class ConfigError(QuantumTradeError, ValueError):
    """The configuration is invalid; the message names the file (or variable), key and reason."""

    def __init__(self, where: str, key: str, reason: str) -> None:
        self.where = where
        self.key = key
        self.reason = reason
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


class SourceUnavailable(QuantumTradeError, ConnectionError):
    """A market-data source failed to answer (timeout, connection error, 5xx, 429)."""


class CircuitOpenError(QuantumTradeError, ConnectionError):
    """A call was refused because its circuit breaker is open."""


class VenueError(QuantumTradeError, ConnectionError):
    """A trading venue failed to answer."""


class StoreUnavailable(QuantumTradeError, ConnectionError):
    """The event log or cache backend cannot be reached."""


class EventLogMissing(QuantumTradeError, FileNotFoundError):
    """A command that reads the event log found none where the configuration points."""


class BusClosed(QuantumTradeError, RuntimeError):
    """An event was published after the bus stopped."""
