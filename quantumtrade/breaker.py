"""Circuit breaker: CLOSED → OPEN after N consecutive failures → HALF_OPEN probe after a cool-down.

The breaker is a plain state machine driven by the injected clock; it never sleeps. Callers ask
``allow()`` before a call and report ``record_success()`` / ``record_failure()`` after it.
In HALF_OPEN exactly one probe is let through at a time; its success closes the breaker, its
failure opens it again for another cool-down. A probe that reports neither within a cool-down
(its caller was cancelled) is presumed lost and the next ``allow()`` lets another through, so a
lost probe cannot wedge the breaker half-open. Every state change is handed to ``on_change``
(the app publishes it as a ``CircuitBreakerChanged`` event).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import structlog

from quantumtrade.clock import Clock
from quantumtrade.events import BreakerState, CircuitBreakerChanged

log = structlog.get_logger("quantumtrade.breaker")


class BreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    failure_threshold: int = 5
    """Consecutive failures that open the breaker."""
    cooldown_ms: int = 30_000
    """Time the breaker stays OPEN before it lets one probe through."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        clock: Clock,
        config: BreakerConfig | None = None,
        on_change: Callable[[CircuitBreakerChanged], None] | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.config = config or BreakerConfig()
        if self.config.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at_ns = 0
        self._probe_in_flight = False
        self._probe_started_ns = 0
        self.total_failures = 0
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose cool-down has passed reads HALF_OPEN."""
        if self._state is BreakerState.OPEN and self._cooldown_over():
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _cooldown_over(self) -> bool:
        return self.clock.now_ns() - self._opened_at_ns >= self.config.cooldown_ms * 1_000_000

    def allow(self) -> bool:
        """May a call go through now? In HALF_OPEN only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN:
            now = self.clock.now_ns()
            if (
                not self._probe_in_flight
                or now - self._probe_started_ns >= self.config.cooldown_ms * 1_000_000
            ):
                self._probe_in_flight = True
                self._probe_started_ns = now
                return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        self.total_failures += 1
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.config.failure_threshold
        ):
            self._open()
        elif self._state is BreakerState.OPEN:
            self._opened_at_ns = self.clock.now_ns()

    def reset(self) -> None:
        """Manual reset (admin API): close and forget the failure count."""
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def _open(self) -> None:
        self._opened_at_ns = self.clock.now_ns()
        self.times_opened += 1
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        previous, self._state = self._state, new
        log.info("circuit_breaker", name=self.name, state=new, previous=previous)
        if self._on_change is not None:
            self._on_change(
                CircuitBreakerChanged(
                    ts_ns=self.clock.now_ns(),
                    name=self.name,
                    state=new,
                    previous=previous,
                    failures=self._failures,
                )
            )
