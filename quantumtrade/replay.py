"""Replay: re-derive a recorded session's decisions from its event log and compare.

The logged *inputs* — market data (``BarsUpdated``), the strategy's re-tuned parameters
(``ParametersChanged``: applied at their place, the search never re-run) and the venues'
answers (``OrderFilled``, ``OrderCancelled``, and rejections that did not come from the risk
manager) — are fed, in seq order, through a fresh bus into a fresh MarketState, Scanner,
RiskManager and Portfolio, on a ``ManualClock`` set from each event's timestamp. At every
logged ``ScanCompleted`` the scanner scans again and the strategy engine decides. Held
positions' price levels are judged where the daemon judged them: after a heartbeat's bars and
tickers and before its first order event (the first event after the bars that is neither a
bar, a ticker nor a venue's answer to an order decided earlier). The *decisions*
this produces (``SignalGenerated``, ``TargetPosition``, ``OrderIntent`` and the risk
manager's ``OrderRejected``) are compared with the logged ones, field by field, ignoring only
``seq`` and ``ts_ns`` (the live run stamps them on the wall clock). Same code path, same
inputs: a healthy session replays with zero differences.

A log holds every session of a daemon (each restart continues it). Each session is replayed
as the daemon lived it: at its ``session_started`` marker the components are built afresh and
the portfolio is rebuilt from the logged fills the marker says the daemon restored. A log
written before the marker existed has no boundary to read; there a restart is inferred where
a symbol's bars stop being newer than the ones already held (a restarted daemon fetches its
history again), at the first of the run of ``BarsUpdated`` that holds that symbol. A restart
whose history does not overlap the previous session's cannot be seen that way: such a log
replays as one session and shows differences after the restart.

Routing is not re-derived: it depends on venue order books, which are not logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig
from quantumtrade.core import DecisionPath
from quantumtrade.data.market_state import MarketState
from quantumtrade.events import (
    BarsUpdated,
    Event,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    ParametersChanged,
    ScanCompleted,
    SignalGenerated,
    TargetPosition,
    TickerUpdated,
    decode,
)
from quantumtrade.store.eventlog import EventLog, StoredEvent
from quantumtrade.store.session import Account, SessionMarker, is_session_start, marker_of

Decision = SignalGenerated | TargetPosition | OrderIntent | OrderRejected


class Difference(msgspec.Struct, frozen=True):
    kind: str
    """"missing" (logged, not re-derived), "extra" (re-derived, not logged) or "changed"."""
    event_type: str
    key: str
    logged: dict[str, Any] | None
    replayed: dict[str, Any] | None


def _key(event: Decision) -> str:
    if isinstance(event, SignalGenerated):
        return event.signal_id
    if isinstance(event, TargetPosition):
        return event.target_id
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


class SessionReport(msgspec.Struct):
    """One daemon session of the log, replayed."""

    first_seq: int
    boundary: str
    """How its start was found: "marker", "inferred" (a log without markers) or "start of log"."""
    last_seq: int = 0
    mode: str = ""
    source: str = ""
    symbols: int = 0
    account: str = ""
    restored_fills: int = 0
    """Logged fills the replay rebuilt the session's starting positions from."""
    logged_restored_fills: int | None = None
    """How many the daemon restored, as its marker says (None: no marker)."""
    events_read: int = 0
    market_events: int = 0
    scans: int = 0
    fed_fills: int = 0
    logged: dict[str, int] = msgspec.field(default_factory=dict)
    replayed: dict[str, int] = msgspec.field(default_factory=dict)
    differences: int = 0


class ReplayReport(msgspec.Struct):
    """Totals over every session replayed, each session's own figures, every difference."""

    events_read: int = 0
    market_events: int = 0
    scans: int = 0
    fed_fills: int = 0
    logged: dict[str, int] = msgspec.field(default_factory=dict)
    replayed: dict[str, int] = msgspec.field(default_factory=dict)
    differences: list[Difference] = msgspec.field(default_factory=list)
    sessions: list[SessionReport] = msgspec.field(default_factory=list)


class _Window(msgspec.Struct, frozen=True):
    from_seq: int
    from_ts_ns: int | None

    def holds(self, stored: StoredEvent) -> bool:
        return stored.seq >= self.from_seq and (
            self.from_ts_ns is None or stored.ts_ns >= self.from_ts_ns
        )


class _SessionReplay:
    """One session re-lived on components built afresh, as the daemon builds them at a start."""

    def __init__(
        self,
        cfg: AppConfig,
        report: SessionReport,
        *,
        ts_ns: int,
        fills: Sequence[OrderFilled],
        window: _Window,
    ) -> None:
        self.report = report
        self.window = window
        self.clock = clock = ManualClock(ts_ns)
        # Seqs continue after the log's, as the daemon's do: restored fills stay the older.
        self.bus = bus = EventBus(clock=clock, first_seq=report.first_seq)
        self.state = state = MarketState([], cfg.data.capacity)
        # The decision path as the daemon builds it (routing apart: the venues' answers are
        # the log's).
        self.path = path = DecisionPath.build(cfg, bus=bus, clock=clock, state=state)
        self.risk = path.risk
        self.portfolio = path.portfolio
        self.engine = path.strategy
        self.logged: list[Decision] = []
        self.replayed: list[Decision] = []
        self.feeding = False
        self.in_window = False
        bus.subscribe(SignalGenerated, self._collect)
        bus.subscribe(TargetPosition, self._collect)
        bus.subscribe(OrderIntent, self._collect)
        bus.subscribe(OrderRejected, self._collect)
        report.restored_fills = self.portfolio.restore(fills)
        # Orders the logged session decided, with the seq of their intent: a rejection with
        # one of these ids came from risk.
        self.risk_decided: dict[str, int] = {}
        # Bars fed since the levels were last judged, from this seq on: answers to orders
        # decided before it may still come before the judging.
        self.bars_unjudged = False
        self.bars_from_seq = 0
        self.targets: set[str] = set()
        """Logged target ids: an order refused by risk for one of them is a decision."""

    def _collect(self, event: Decision) -> None:
        if self.in_window and not self.feeding:
            self.replayed.append(event)

    def overlaps(self, event: BarsUpdated) -> list[str]:
        """The symbols ``event`` does not extend (a restart fetched their history again)."""
        return self.state.overlapping(event)

    async def feed(self, stored: StoredEvent, event: Event) -> None:
        report = self.report
        report.events_read += 1
        report.last_seq = stored.seq
        if event.ts_ns > self.clock.now_ns():
            self.clock.set(event.ts_ns)
        if isinstance(event, BarsUpdated):
            report.market_events += 1
            self.state.append_event(event)
            # As live: the risk manager sees every bar (price band, drawdown, VaR), and so
            # does the anomaly detector (its switches are published at the next decision).
            self.risk.on_bars(event)
            if self.path.anomaly is not None:
                self.path.anomaly.on_bars(event)
            await self.risk.publish_trip()
            if not self.bars_unjudged:
                self.bars_unjudged = True
                self.bars_from_seq = stored.seq
            return
        if isinstance(event, TickerUpdated):
            self.engine.on_ticker(event)  # part of the heartbeat's refresh, as bars are
            if self.path.anomaly is not None:
                self.path.anomaly.on_ticker(event)
            return
        if isinstance(event, ParametersChanged):
            # An input, as a ticker: the search that chose them is never re-run.
            self.engine.on_parameters(event)
            return
        if self.bars_unjudged and not self._answers_earlier_order(event):
            # As TradingCore.after_bars: the new bars against every held position's levels.
            self.bars_unjudged = False
            self.in_window = self.window.holds(stored)
            await self.path.check_levels()
            await self.bus.drain()
        if isinstance(event, ScanCompleted):
            self.in_window = self.window.holds(stored)
            report.scans += self.in_window
            await self.path.decide()  # as TradingCore.decide
            await self.bus.drain()
        elif isinstance(event, SignalGenerated | TargetPosition | OrderIntent):
            if isinstance(event, OrderIntent):
                self.risk_decided[event.client_order_id] = stored.seq
            elif isinstance(event, TargetPosition):
                self.targets.add(event.target_id)
            if self.in_window:
                self.logged.append(event)
        elif (
            isinstance(event, OrderRejected)
            and (
                event.client_order_id in self.risk_decided
                or _target_of(event.client_order_id) in self.targets
            )
            and event.venue is None
            and _is_risk_reason(event.reason)
        ):
            if self.in_window:
                self.logged.append(event)
        elif isinstance(event, OrderFilled | OrderCancelled | OrderRejected):
            report.fed_fills += isinstance(event, OrderFilled)
            self.feeding = True
            try:
                await self.bus.publish(msgspec.structs.replace(event, seq=0))
                await self.bus.drain()
            finally:
                self.feeding = False

    def _answers_earlier_order(self, event: Event) -> bool:
        """A venue's answer to an order logged before the current bars (the gate's release
        of orders decided on an earlier bar, which the daemon ran before judging levels)."""
        if not isinstance(event, OrderSubmitted | OrderFilled | OrderCancelled | OrderRejected):
            return False
        decided = self.risk_decided.get(event.parent_id or event.client_order_id)
        return decided is not None and decided < self.bars_from_seq

    def forget(self, events: Sequence[BarsUpdated]) -> None:
        """Take back the count of ``events`` fed last: they turned out to be the next
        session's (they changed nothing compared here: no scan came after them)."""
        self.report.events_read -= len(events)
        self.report.market_events -= len(events)
        self.report.last_seq = events[0].seq - 1

    async def finish(self) -> list[Difference]:
        await self.bus.stop()
        report = self.report
        report.logged = _counts(self.logged)
        report.replayed = _counts(self.replayed)
        differences = compare(self.logged, self.replayed)
        report.differences = len(differences)
        return differences


def _counts(items: Iterable[Event]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in items:
        counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
    return counts


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for name, n in part.items():
        total[name] = total.get(name, 0) + n


async def replay_log(
    eventlog: EventLog,
    cfg: AppConfig,
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
    from_ts_ns: int | None = None,
    to_ts_ns: int | None = None,
) -> ReplayReport:
    """Replay the log up to ``to_seq``/``to_ts_ns``, session by session; compare decisions
    inside the window.

    Each session's state is rebuilt from its own first event (decisions depend on the history
    before the window); only decisions made at scans inside [from, to] are compared.
    """
    window = _Window(from_seq=from_seq, from_ts_ns=from_ts_ns)
    report = ReplayReport()
    fills: list[OrderFilled] = []  # every logged fill so far, for the next session's positions
    account_start = 1  # fills from here on make the current paper account (a fresh one: later)
    burst: list[tuple[StoredEvent, BarsUpdated]] = []  # the BarsUpdated since the last other event
    session: _SessionReplay | None = None

    async with asyncio.TaskGroup() as tg:

        async def begin(
            first: StoredEvent, boundary: str, marker: SessionMarker | None
        ) -> _SessionReplay:
            if session is not None:
                report.differences.extend(await session.finish())
            part = SessionReport(first_seq=first.seq, boundary=boundary)
            restore: list[OrderFilled] = []
            if marker is not None:
                part.mode, part.source, part.symbols = (
                    marker.mode,
                    marker.source,
                    len(marker.symbols),
                )
                part.account, part.logged_restored_fills = marker.account, marker.restored_fills
                if marker.restored_from_seq:
                    restore = [f for f in fills if f.seq >= marker.restored_from_seq]
            elif boundary != "start of log":
                # No record of what the daemon restored: every fill of the current account.
                restore = [f for f in fills if f.seq >= account_start]
            report.sessions.append(part)
            replay = _SessionReplay(cfg, part, ts_ns=first.ts_ns, fills=restore, window=window)
            replay.bus.start(tg)
            return replay

        async for stored in eventlog.read(to_seq=to_seq, to_ts_ns=to_ts_ns):
            event = decode(stored.payload)
            if is_session_start(event):
                marker = marker_of(event)
                session = await begin(stored, "marker", marker)
                if marker is not None and marker.account is Account.FRESH:
                    account_start = stored.seq
                burst = []
            elif session is None:
                session = await begin(stored, "start of log", None)
            if isinstance(event, BarsUpdated):
                overlapping = session.overlaps(event)
                if overlapping:
                    # A restart the log has no marker for. A daemon's first refresh fetches
                    # each symbol once: the restart began after the last event of the current
                    # run of BarsUpdated that holds one of these symbols, or at the run's start.
                    again = set(overlapping)
                    cut = 0
                    for i, (_, earlier) in enumerate(burst):
                        if not again.isdisjoint(earlier.symbols):
                            cut = i + 1
                    restarted = burst[cut:]
                    if restarted:
                        session.forget([e for _, e in restarted])
                    session = await begin(
                        restarted[0][0] if restarted else stored, "inferred", None
                    )
                    for earlier_stored, bars in restarted:
                        await session.feed(earlier_stored, bars)
                    burst = restarted
                burst.append((stored, event))
            elif not is_session_start(event):
                burst = []
            await session.feed(stored, event)
            if isinstance(event, OrderFilled):
                fills.append(event)
        if session is not None:
            report.differences.extend(await session.finish())

    for part in report.sessions:
        report.events_read += part.events_read
        report.market_events += part.market_events
        report.scans += part.scans
        report.fed_fills += part.fed_fills
        _add(report.logged, part.logged)
        _add(report.replayed, part.replayed)
    return report


def _target_of(client_order_id: str) -> str:
    """The target an engine order serves (its ids are ``qt-<target id>-<n>``)."""
    return client_order_id.removeprefix("qt-").rpartition("-")[0]


_ROUTER_REASONS = frozenset({"no_eligible_venue", "venue_error"})


def _is_risk_reason(reason: str) -> bool:
    return reason not in _ROUTER_REASONS
