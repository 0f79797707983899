"""Replay: re-derive a recorded session's decisions from its event log and compare.

The logged *inputs* — market data (``BarsUpdated``) and the venues' answers (``OrderFilled``,
``OrderCancelled``, and rejections that did not come from the risk manager) — are fed, in seq
order, through a fresh bus into a fresh MarketState, Scanner, RiskManager and Portfolio, on a
``ManualClock`` set from each event's timestamp. At every logged ``ScanCompleted`` the scanner
scans again. The *decisions* this produces (``SignalGenerated``, ``OrderIntent`` and the risk
manager's ``OrderRejected``) are compared with the logged ones, field by field, ignoring only
``seq`` and ``ts_ns`` (the live run stamps them on the wall clock). Same code path, same
inputs: a healthy session replays with zero differences.

Routing is not re-derived: it depends on venue order books, which are not logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import msgspec

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig
from quantumtrade.data.market_state import MarketState
from quantumtrade.events import (
    BarsUpdated,
    Event,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    ScanCompleted,
    SignalGenerated,
    decode,
)
from quantumtrade.portfolio import Portfolio
from quantumtrade.regime.detector import RegimeDetector
from quantumtrade.risk.manager import RiskManager, subscribe_decision_path
from quantumtrade.scoring.scanner import Scanner
from quantumtrade.store.eventlog import EventLog

Decision = SignalGenerated | OrderIntent | OrderRejected


class Difference(msgspec.Struct, frozen=True):
    kind: str
    """"missing" (logged, not re-derived), "extra" (re-derived, not logged) or "changed"."""
    event_type: str
    key: str
    logged: dict[str, Any] | None
    replayed: dict[str, Any] | None


class ReplayReport(msgspec.Struct):
    events_read: int = 0
    market_events: int = 0
    scans: int = 0
    fed_fills: int = 0
    logged: dict[str, int] = msgspec.field(default_factory=dict)
    replayed: dict[str, int] = msgspec.field(default_factory=dict)
    differences: list[Difference] = msgspec.field(default_factory=list)


def _key(event: Decision) -> str:
    if isinstance(event, SignalGenerated):
        return event.signal_id
    return event.client_order_id


def _comparable(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(event)
    data.pop("seq", None)
    data.pop("ts_ns", None)
    return data


def compare(logged: Iterable[Decision], replayed: Iterable[Decision]) -> list[Difference]:
    """Differences between two decision streams, matched by type and id."""
    left = {(type(e).__name__, _key(e)): e for e in logged}
    right = {(type(e).__name__, _key(e)): e for e in replayed}
    out: list[Difference] = []
    for k in sorted(left.keys() | right.keys()):
        a, b = left.get(k), right.get(k)
        da = _comparable(a) if a is not None else None
        db = _comparable(b) if b is not None else None
        if da == db:
            continue
        kind = "missing" if db is None else "extra" if da is None else "changed"
        out.append(Difference(kind=kind, event_type=k[0], key=k[1], logged=da, replayed=db))
    return out


async def replay_log(
    eventlog: EventLog,
    cfg: AppConfig,
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
    from_ts_ns: int | None = None,
    to_ts_ns: int | None = None,
) -> ReplayReport:
    """Replay the log up to ``to_seq``/``to_ts_ns``; compare decisions inside the window.

    State is always rebuilt from the first event (decisions depend on the history before the
    window); only decisions made at scans inside [from, to] are compared.
    """
    clock = ManualClock(0)
    bus = EventBus(clock=clock)
    state = MarketState([], cfg.data.capacity)
    detector = RegimeDetector(bus=bus, clock=clock, state=state, config=cfg.regime)
    scanner = Scanner(
        bus=bus, clock=clock, state=state, config=cfg.scanner, regime_of=detector.regime
    )
    portfolio = Portfolio(bus=bus, clock=clock)
    risk = RiskManager(bus=bus, clock=clock, limits=cfg.risk, portfolio=portfolio)

    report = ReplayReport()
    logged: list[Decision] = []
    replayed: list[Decision] = []
    feeding = False
    in_window = False

    def collect(event: Decision) -> None:
        if in_window and not feeding:
            replayed.append(event)

    bus.subscribe(SignalGenerated, collect)
    bus.subscribe(OrderIntent, collect)
    bus.subscribe(OrderRejected, collect)
    subscribe_decision_path(bus, risk=risk, portfolio=portfolio)
    # Orders the logged session decided: a rejection with one of these ids came from risk.
    risk_decided: set[str] = set()

    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        async for stored in eventlog.read(to_seq=to_seq, to_ts_ns=to_ts_ns):
            event = decode(stored.payload)
            report.events_read += 1
            if event.ts_ns > clock.now_ns():
                clock.set(event.ts_ns)
            if isinstance(event, BarsUpdated):
                report.market_events += 1
                if event.symbol not in state:
                    state.add_symbols([event.symbol])
                state.append_block(event.symbol, event.bars)
                # As live: the risk manager sees every bar (price band, drawdown, VaR).
                risk.on_bars(event)
                await risk.publish_trip()
            elif isinstance(event, ScanCompleted):
                in_window = stored.seq >= from_seq and (
                    from_ts_ns is None or stored.ts_ns >= from_ts_ns
                )
                report.scans += in_window
                await detector.update()  # as Daemon.step: classify, then scan
                await scanner.scan()
                await bus.drain()
            elif isinstance(event, SignalGenerated | OrderIntent):
                risk_decided.add(
                    _key(event) if isinstance(event, OrderIntent) else f"qt-{event.signal_id}"
                )
                if in_window:
                    logged.append(event)
            elif (
                isinstance(event, OrderRejected)
                and event.client_order_id in risk_decided
                and event.venue is None
                and _is_risk_reason(event.reason)
            ):
                if in_window:
                    logged.append(event)
            elif isinstance(event, OrderFilled | OrderCancelled | OrderRejected):
                report.fed_fills += isinstance(event, OrderFilled)
                feeding = True
                try:
                    await bus.publish(msgspec.structs.replace(event, seq=0))
                    await bus.drain()
                finally:
                    feeding = False
        await bus.stop()

    for name, items in (("logged", logged), ("replayed", replayed)):
        counts: dict[str, int] = {}
        for e in items:
            counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
        setattr(report, name, counts)
    report.differences = compare(logged, replayed)
    return report


_ROUTER_REASONS = frozenset({"no_eligible_venue", "venue_error"})


def _is_risk_reason(reason: str) -> bool:
    return reason not in _ROUTER_REASONS
