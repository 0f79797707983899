"""The daemon's metrics: signal latency fed by the bus, the error-rate counters, process metrics."""

from __future__ import annotations

import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.events import (
    Bar,
    BarBlock,
    BarsUpdated,
    OrderFilled,
    OrderSubmitted,
    OrderType,
    Side,
)
from quantumtrade.metrics import Metrics, Snapshot

LATENCY = "quantumtrade_signal_latency_seconds"


def bars(ts_ns: int) -> BarsUpdated:
    block = BarBlock.from_bars([Bar(0, 1.0, 1.0, 1.0, 1.0, 1.0)])
    return BarsUpdated(ts_ns=ts_ns, symbol="BTCUSDT", source="t", bars=block)


def submitted(ts_ns: int, order_id: str, parent_id: str = "") -> OrderSubmitted:
    return OrderSubmitted(
        ts_ns=ts_ns, client_order_id=order_id, venue="paper", symbol="BTCUSDT",
        side=Side.BUY, quantity=1.0, order_type=OrderType.MARKET, parent_id=parent_id,
    )  # fmt: skip


def filled(ts_ns: int, order_id: str) -> OrderFilled:
    return OrderFilled(
        ts_ns=ts_ns, client_order_id=order_id, venue="paper", symbol="BTCUSDT",
        side=Side.BUY, quantity=1.0, price=1.0, fee=0.0, cumulative_quantity=1.0,
        leaves_quantity=0.0,
    )  # fmt: skip


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


async def test_an_order_after_a_bar_is_one_signal_latency_observation() -> None:
    clock = ManualClock()
    bus = EventBus(clock=clock)
    metrics = Metrics()
    for event_type, handler in metrics.handlers():
        bus.subscribe(event_type, handler)
    t0 = clock.now_ns()
    # Negative control: an order before any bar has no signal to measure from.
    await bus.publish(submitted(t0, "early"))
    assert sample(metrics, f"{LATENCY}_count") == 0.0

    await bus.publish(bars(t0))
    await bus.publish(submitted(t0 + 300_000_000, "a"))
    await bus.publish(filled(t0 + 500_000_000, "a"))  # same order: not observed again
    await bus.drain()
    assert sample(metrics, f"{LATENCY}_count") == 1.0
    assert sample(metrics, f"{LATENCY}_sum") == pytest.approx(0.3)
    assert sample(metrics, f"{LATENCY}_bucket", {"le": "0.25"}) == 0.0
    assert sample(metrics, f"{LATENCY}_bucket", {"le": "0.5"}) == 1.0

    # Split children share the parent's id: one observation for the parent; a fill of an
    # order never seen as submitted is its acknowledgement (1.5 s after the bar).
    await bus.publish(submitted(t0 + 400_000_000, "a-1", parent_id="p"))
    await bus.publish(submitted(t0 + 600_000_000, "a-2", parent_id="p"))
    await bus.publish(filled(t0 + 1_500_000_000, "b"))
    await bus.drain()
    assert sample(metrics, f"{LATENCY}_count") == 3.0
    assert sample(metrics, f"{LATENCY}_sum") == pytest.approx(0.3 + 0.4 + 1.5)
    assert sample(metrics, f"{LATENCY}_bucket", {"le": "1.2"}) == 2.0


def snapshot(calls: dict[str, dict[str, int]]) -> Snapshot:
    return Snapshot(
        health=lambda: 1.0, bus_counts=dict, bus_queue_depths=dict, dead_letters=lambda: 0,
        breakers=dict, rejects=dict, stale_symbols=lambda: 0, risk_state=lambda: "ACTIVE",
        pnl=dict, eventlog=dict, cache=dict, regime=dict, calls=lambda: calls,
    )  # fmt: skip


def test_attempts_and_errors_are_exported_per_component() -> None:
    metrics = Metrics()
    calls = {"data": {"attempts": 40, "errors": 3}, "venue": {"attempts": 10, "errors": 0}}
    metrics.attach(snapshot(calls))
    assert sample(metrics, "quantumtrade_attempts_total", {"component": "data"}) == 40.0
    assert sample(metrics, "quantumtrade_errors_total", {"component": "data"}) == 3.0
    assert sample(metrics, "quantumtrade_attempts_total", {"component": "venue"}) == 10.0
    assert sample(metrics, "quantumtrade_errors_total", {"component": "venue"}) == 0.0
    text = metrics.render().decode()
    assert 'quantumtrade_errors_total{component="data"} 3.0' in text


def test_process_metrics_are_on_the_daemon_registry() -> None:
    metrics = Metrics()
    resident = sample(metrics, "process_resident_memory_bytes")
    assert resident is not None and resident > 0
    assert sample(metrics, "process_cpu_seconds_total") is not None
    assert (sample(metrics, "process_open_fds") or 0) > 0
