"""The circuit breaker's state machine, driven only by a ManualClock (no sleeps)."""

from __future__ import annotations

import itertools

import pytest

from quantumtrade.breaker import BreakerConfig, CircuitBreaker
from quantumtrade.clock import ManualClock
from quantumtrade.events import BreakerState, CircuitBreakerChanged

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
COOLDOWN_S = 30.0


def make(
    threshold: int = 3, cooldown_ms: int = 30_000
) -> tuple[CircuitBreaker, ManualClock, list[CircuitBreakerChanged]]:
    clock = ManualClock()
    changes: list[CircuitBreakerChanged] = []
    breaker = CircuitBreaker(
        "binance",
        clock=clock,
        config=BreakerConfig(failure_threshold=threshold, cooldown_ms=cooldown_ms),
        on_change=changes.append,
    )
    return breaker, clock, changes


def transitions(changes: list[CircuitBreakerChanged]) -> list[tuple[BreakerState, BreakerState]]:
    return [(c.previous, c.state) for c in changes]


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.failure_threshold):
        breaker.record_failure()
    assert breaker.state is OPEN


def test_defaults_and_threshold_validation() -> None:
    assert BreakerConfig() == BreakerConfig(failure_threshold=5, cooldown_ms=30_000)
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("x", clock=ManualClock(), config=BreakerConfig(failure_threshold=0))
    breaker = CircuitBreaker("x", clock=ManualClock())
    assert breaker.state is CLOSED
    assert breaker.allow()


def test_opens_after_exactly_threshold_consecutive_failures() -> None:
    breaker, _, changes = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED
    assert breaker.allow()
    assert changes == []
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.consecutive_failures == 3
    assert breaker.times_opened == 1
    assert transitions(changes) == [(CLOSED, OPEN)]
    assert changes[0].name == "binance"
    assert changes[0].failures == 3


def test_a_success_in_between_resets_the_count() -> None:
    breaker, _, changes = make(threshold=3)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is CLOSED  # 4 failures in all, never 3 in a row
    assert breaker.total_failures == 4
    assert changes == []
    breaker.record_failure()
    assert breaker.state is OPEN


def test_open_refuses_until_the_cooldown_passes_then_half_opens() -> None:
    breaker, clock, changes = make(threshold=1, cooldown_ms=30_000)
    breaker.record_failure()
    opened_at = clock.now_ns()
    assert not breaker.allow()
    clock.advance(COOLDOWN_S - 0.001)
    assert not breaker.allow()
    assert breaker.state is OPEN
    clock.advance(0.001)  # exactly the cool-down
    assert breaker.state is HALF_OPEN
    assert transitions(changes) == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    assert changes[1].ts_ns == opened_at + 30_000_000_000


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker, clock, _ = make(threshold=1)
    breaker.record_failure()
    clock.advance(COOLDOWN_S)
    assert breaker.allow()
    assert [breaker.allow() for _ in range(10)] == [False] * 10
    clock.advance(COOLDOWN_S / 2)  # still within the probe's cool-down
    assert not breaker.allow()
    assert breaker.state is HALF_OPEN


def test_probe_success_closes() -> None:
    breaker, clock, changes = make(threshold=2)
    open_it(breaker)
    clock.advance(COOLDOWN_S)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(5))
    assert transitions(changes) == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    # Closed again means the full threshold is needed to reopen.
    breaker.record_failure()
    assert breaker.state is CLOSED


def test_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    breaker, clock, changes = make(threshold=2)
    open_it(breaker)
    clock.advance(COOLDOWN_S + 5)  # the probe comes late: the fresh cool-down starts at its failure
    assert breaker.allow()
    breaker.record_failure()
    reopened_at = clock.now_ns()
    assert breaker.state is OPEN
    assert breaker.times_opened == 2
    assert not breaker.allow()
    clock.advance(COOLDOWN_S - 0.001)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.allow()
    assert transitions(changes) == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
    ]
    assert changes[2].ts_ns == reopened_at
    assert changes[3].ts_ns == reopened_at + 30_000_000_000


def test_a_probe_that_never_reports_is_replaced_after_a_cooldown() -> None:
    breaker, clock, _ = make(threshold=1)
    breaker.record_failure()
    clock.advance(COOLDOWN_S)
    assert breaker.allow()  # this probe's caller is cancelled and never reports
    clock.advance(COOLDOWN_S - 0.001)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.allow()  # a new probe, and again only one
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED


def test_reset_closes_from_open_and_half_open_and_is_quiet_when_closed() -> None:
    breaker, clock, changes = make(threshold=1)
    breaker.record_failure()
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.allow()
    assert transitions(changes) == [(CLOSED, OPEN), (OPEN, CLOSED)]

    breaker.record_failure()
    clock.advance(COOLDOWN_S)
    assert breaker.allow()  # probe in flight
    breaker.reset()
    assert breaker.state is CLOSED
    assert all(breaker.allow() for _ in range(3))
    changes.clear()
    breaker.reset()
    assert changes == []


def test_every_change_event_is_well_formed() -> None:
    breaker, clock, changes = make(threshold=2)
    open_it(breaker)
    clock.advance(COOLDOWN_S)
    breaker.allow()
    breaker.record_failure()
    clock.advance(COOLDOWN_S)
    breaker.allow()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    breaker.reset()
    assert transitions(changes) == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (CLOSED, OPEN),
        (OPEN, CLOSED),
    ]
    # Each change starts where the previous one ended, events are unpublished (seq 0).
    for before, after in itertools.pairwise(changes):
        assert after.previous is before.state
        assert after.ts_ns >= before.ts_ns
    assert all(isinstance(c, CircuitBreakerChanged) and c.seq == 0 for c in changes)
    assert all(c.name == "binance" for c in changes)


def test_works_without_on_change() -> None:
    breaker = CircuitBreaker(
        "redis", clock=ManualClock(), config=BreakerConfig(failure_threshold=1, cooldown_ms=10)
    )
    breaker.record_failure()
    assert breaker.state is OPEN
    breaker.reset()
    assert breaker.state is CLOSED
