"""Prometheus metrics: a per-daemon registry, histograms fed by hooks, the rest read at scrape.

Counters that the hot path already keeps (bus counts per event type, rejects, breaker states)
are not incremented twice: a collector reads them from the components when Prometheus scrapes,
so publishing an event costs no metric update at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from quantumtrade.events import (
    BarsUpdated,
    BreakerState,
    Event,
    OrderFilled,
    OrderSubmitted,
    TradingState,
)

NS = "quantumtrade"

BREAKER_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
_ACKED_KEPT = 4096

RISK_VALUE = {TradingState.ACTIVE: 0.0, TradingState.REDUCING: 1.0, TradingState.HALTED: 2.0}


class Snapshot:
    """What the collector reads at scrape time; each field is a zero-argument callable."""

    def __init__(
        self,
        *,
        health: Callable[[], float],
        bus_counts: Callable[[], Mapping[str, int]],
        bus_queue_depths: Callable[[], Mapping[str, int]],
        dead_letters: Callable[[], int],
        breakers: Callable[[], Mapping[str, str]],
        rejects: Callable[[], Mapping[str, int]],
        stale_symbols: Callable[[], int],
        risk_state: Callable[[], str],
        pnl: Callable[[], Mapping[str, float]],
        eventlog: Callable[[], Mapping[str, Any]],
        cache: Callable[[], Mapping[str, Any]],
        regime: Callable[[], Mapping[str, Any]],
        anomalies: Callable[[], Mapping[str, Mapping[str, int]]] = lambda: {},
        adapt_runs: Callable[[], Mapping[str, int]] = lambda: {},
        calls: Callable[[], Mapping[str, Mapping[str, int]]] = lambda: {},
        dead_letter_retries: Callable[[], Mapping[str, int]] = lambda: {},
        handler_stats: Callable[[], Mapping[str, Mapping[str, float]]] = lambda: {},
        tail_risk: Callable[[], Mapping[str, Mapping[str, Mapping[str, float]]]] = lambda: {},
    ) -> None:
        self.health = health
        self.bus_counts = bus_counts
        self.bus_queue_depths = bus_queue_depths
        self.dead_letters = dead_letters
        self.breakers = breakers
        self.rejects = rejects
        self.stale_symbols = stale_symbols
        self.risk_state = risk_state
        self.pnl = pnl
        self.eventlog = eventlog
        self.cache = cache
        self.regime = regime
        self.anomalies = anomalies
        """{"detected": {kind: published so far}, "active": {kind: active now}} (empty: the
        detector is off)."""
        self.adapt_runs = adapt_runs
        """{outcome: runs} of ``[adapt]`` (applied, kept, failed; empty: adapt is off)."""
        self.calls = calls
        """{component: {"attempts": n, "errors": m}} of outbound calls (``data``: source
        fetches, ``venue``: order submissions), for the error-rate alert."""
        self.dead_letter_retries = dead_letter_retries
        """{outcome: n} of dead-letter retries (``ok``, ``failed``)."""
        self.handler_stats = handler_stats
        """``EventBus.handler_stats()``: per handler, calls_timed, seconds_timed, failures."""
        self.tail_risk = tail_risk
        """``RiskManager.tail_risk_1d()``: {"var" | "expected_shortfall": {method: {level:
        1-day figure in quote currency}}}."""


def _by_label(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, float | int],
) -> CounterMetricFamily | GaugeMetricFamily:
    """A family with one sample per key of ``values`` (in key order), labelled ``label``."""
    metric = family(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], float(value))
    return metric


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self.snapshot
        health = GaugeMetricFamily(
            f"{NS}_system_health", "1 when every component is healthy, 0.5 degraded, 0 down"
        )
        health.add_metric([], s.health())
        yield health

        yield _by_label(
            CounterMetricFamily,
            f"{NS}_event_bus_events",
            "Events published on the bus",
            "type",
            s.bus_counts(),
        )
        yield _by_label(
            GaugeMetricFamily,
            f"{NS}_event_bus_queue_depth",
            "Events waiting per subscriber",
            "subscriber",
            s.bus_queue_depths(),
        )

        dead = CounterMetricFamily(f"{NS}_event_bus_dead_letters", "Events dead-lettered")
        dead.add_metric([], s.dead_letters())
        yield dead

        retried = s.dead_letter_retries()
        yield _by_label(
            CounterMetricFamily,
            f"{NS}_event_bus_dead_letter_retries",
            "Dead letters retried through the admin API, by outcome (ok, failed)",
            "outcome",
            {outcome: retried.get(outcome, 0) for outcome in ("ok", "failed")},
        )

        timed_calls = CounterMetricFamily(
            f"{NS}_event_bus_handler_timed_calls",
            "Handler calls timed, by handler (EventType:handler); sampled: one call in 64",
            labels=["handler"],
        )
        timed_seconds = CounterMetricFamily(
            f"{NS}_event_bus_handler_timed_seconds",
            "Seconds spent in the timed handler calls (sampled: one call in 64; divide by "
            "timed_calls for the mean)",
            labels=["handler"],
        )
        failures = CounterMetricFamily(
            f"{NS}_event_bus_handler_errors",
            "Handler attempts that raised, by handler (every attempt and retry; not sampled)",
            labels=["handler"],
        )
        for name, stats in sorted(s.handler_stats().items()):
            timed_calls.add_metric([name], float(stats.get("calls_timed", 0)))
            timed_seconds.add_metric([name], float(stats.get("seconds_timed", 0)))
            failures.add_metric([name], float(stats.get("failures", 0)))
        yield timed_calls
        yield timed_seconds
        yield failures

        breaker = GaugeMetricFamily(
            f"{NS}_circuit_breaker_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            labels=["name"],
        )
        for name, state in sorted(s.breakers().items()):
            breaker.add_metric([name], BREAKER_VALUE.get(BreakerState(state), 2.0))
        yield breaker

        yield _by_label(
            CounterMetricFamily,
            f"{NS}_data_rejected",
            "Market data records rejected",
            "reason",
            s.rejects(),
        )

        stale = GaugeMetricFamily(f"{NS}_stale_symbols", "Symbols whose data is stale")
        stale.add_metric([], s.stale_symbols())
        yield stale

        risk = GaugeMetricFamily(
            f"{NS}_risk_state", "Trading state (0 active, 1 reducing, 2 halted)"
        )
        risk.add_metric([], RISK_VALUE.get(TradingState(s.risk_state()), 2.0))
        yield risk

        yield _by_label(
            GaugeMetricFamily, f"{NS}_pnl", "Portfolio PnL in quote currency", "kind", s.pnl()
        )

        tail = s.tail_risk()
        for name, what in (("var", "value at risk"), ("expected_shortfall", "expected shortfall")):
            family = GaugeMetricFamily(
                f"{NS}_{name}",
                f"1-day {what} of the book in quote currency, by method and confidence level",
                labels=["method", "level"],
            )
            for method, levels in sorted(tail.get(name, {}).items()):
                for level, value in sorted(levels.items()):
                    family.add_metric([method, level], float(value))
            yield family

        log = s.eventlog()
        written = CounterMetricFamily(f"{NS}_eventlog_written", "Events written to the log")
        written.add_metric([], float(log.get("written", 0)))
        yield written
        pending = GaugeMetricFamily(f"{NS}_eventlog_pending", "Events not yet written")
        pending.add_metric([], float(log.get("pending", 0)))
        yield pending
        spooled = CounterMetricFamily(f"{NS}_eventlog_spooled", "Events spooled during outages")
        spooled.add_metric([], float(log.get("spooled", 0)))
        yield spooled
        set_aside = CounterMetricFamily(
            f"{NS}_eventlog_spool_set_aside", "Corrupt spool files set aside"
        )
        set_aside.add_metric([], float(log.get("spool_set_aside", 0)))
        yield set_aside

        caches = s.cache()
        hits = CounterMetricFamily(
            f"{NS}_cache_hits", "Cache hits by tier and cache", labels=["tier", "cache"]
        )
        misses = CounterMetricFamily(
            f"{NS}_cache_misses", "Cache misses by tier and cache", labels=["tier", "cache"]
        )
        rate = GaugeMetricFamily(
            f"{NS}_cache_hit_rate", "Share of lookups served by L1 or L2", labels=["cache"]
        )
        for name, cache in caches.items():
            for tier in ("l1", "l2"):
                hits.add_metric([tier, name], float(cache[tier]["hits"]))
                misses.add_metric([tier, name], float(cache[tier]["misses"]))
            rate.add_metric([name], float(cache["hit_rate"]))
        yield hits
        yield misses
        yield rate

        regime = s.regime()
        confidence = GaugeMetricFamily(
            f"{NS}_market_regime_confidence",
            "Confidence of the market-wide regime (label in the 'regime' label)",
            labels=["regime"],
        )
        confidence.add_metric([str(regime.get("regime"))], float(regime.get("confidence", 0.0)))
        yield confidence
        yield _by_label(
            GaugeMetricFamily,
            f"{NS}_regime_symbols",
            "Symbols currently in each regime",
            "regime",
            regime.get("symbols", {}),
        )

        anomalies = s.anomalies()
        yield _by_label(
            CounterMetricFamily,
            f"{NS}_anomalies",
            "Anomalies detected (AnomalyDetected) by kind",
            "kind",
            anomalies.get("detected", {}),
        )
        yield _by_label(
            GaugeMetricFamily,
            f"{NS}_anomalies_active",
            "Anomalies active now by kind",
            "kind",
            anomalies.get("active", {}),
        )
        yield _by_label(
            CounterMetricFamily,
            f"{NS}_adapt_runs",
            "Re-tuning runs of [adapt] by outcome (applied, kept, failed)",
            "outcome",
            s.adapt_runs(),
        )

        attempts = CounterMetricFamily(
            f"{NS}_attempts",
            "Outbound calls attempted (data: source fetches, venue: order submissions)",
            labels=["component"],
        )
        errors = CounterMetricFamily(
            f"{NS}_errors", "Outbound calls that failed, by component", labels=["component"]
        )
        for component, c in sorted(s.calls().items()):
            attempts.add_metric([component], float(c.get("attempts", 0)))
            errors.add_metric([component], float(c.get("errors", 0)))
        yield attempts
        yield errors


class Metrics:
    """The daemon's metrics, on its own registry (tests build many daemons in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.processing_time = Histogram(
            f"{NS}_data_orchestrator_processing_time",
            "Seconds to fetch, validate and store one symbol's data",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.router_latency = Histogram(
            f"{NS}_order_router_latency",
            "Seconds from routing decision to the venue's answer",
            labelnames=["venue"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.2, 2.5),
            registry=self.registry,
        )
        self.signal_latency = Histogram(
            f"{NS}_signal_latency_seconds",
            "Seconds from a bar batch's arrival (BarsUpdated) to the venue's acknowledgement "
            "of an order (OrderSubmitted, or its first fill)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.2, 1.5, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self._last_bars_ns: int | None = None
        # Orders already observed (children of a split share their parent's id), oldest first;
        # bounded: only the newest _ACKED_KEPT are remembered.
        self._acked: dict[str, None] = {}
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, ..._open_fds
        self._collector: _SnapshotCollector | None = None

    def handlers(self) -> list[tuple[type[Event], Callable[[Any], None]]]:
        """The bus subscriptions that feed the signal-latency histogram."""
        return [
            (BarsUpdated, self.on_bars),
            (OrderSubmitted, self.on_acknowledged),
            (OrderFilled, self.on_acknowledged),
        ]

    def on_bars(self, event: BarsUpdated) -> None:
        self._last_bars_ns = event.ts_ns

    def on_acknowledged(self, event: OrderSubmitted | OrderFilled) -> None:
        """Observe once per order: the first OrderSubmitted or fill after a bar batch."""
        if self._last_bars_ns is None:
            return
        order_id = event.parent_id or event.client_order_id
        if order_id in self._acked:
            return
        self._acked[order_id] = None
        if len(self._acked) > _ACKED_KEPT:
            del self._acked[next(iter(self._acked))]
        self.signal_latency.observe(max(0, event.ts_ns - self._last_bars_ns) / 1e9)

    def observe_processing_time(self, seconds: float) -> None:
        self.processing_time.observe(seconds)

    def observe_router_latency(self, venue: str, seconds: float) -> None:
        self.router_latency.labels(venue=venue).observe(seconds)

    def attach(self, snapshot: Snapshot) -> None:
        self._collector = _SnapshotCollector(snapshot)
        self.registry.register(self._collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
