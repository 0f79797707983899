"""Daemon sessions in the event log: the marker each start logs, and which fills it restores.

One log holds every session of a daemon: each start continues the sequence after the last
logged event. So that replay (and an operator) can tell the sessions apart, every start
publishes ``Command(name="session_started")`` before any market data, with what the session
runs on (mode, market-data source, symbols) and what its positions were rebuilt from.

Positions are rebuilt from the logged fills at every start, with one exception: a paper
session whose market (the data source, or the set of symbols, or the mode) is not the last
session's starts a fresh paper account, since fills made on another market's prices mean
nothing on this one. The earlier fills stay in the log; later restarts on the same market
restore the fills from the fresh account's start on. Live mode never discards positions (they
are real): it warns only.

Logs written before the marker existed have no record of their source; for them the source
name of the newest logged ``BarsUpdated`` stands in for it (the kind of source only:
"synthetic", "replay", or the exchange id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

import msgspec
import structlog

from quantumtrade.config import AppConfig, Mode, SourceKind
from quantumtrade.errors import StoreUnavailable
from quantumtrade.events import Command, Event, OrderFilled
from quantumtrade.execution.reconcile import LEDGER_EVENT_TYPES
from quantumtrade.redaction import redact_url
from quantumtrade.store.eventlog import EventLog

log = structlog.get_logger("quantumtrade.session")

SESSION_STARTED = "session_started"
"""``Command.name`` of the marker a daemon publishes at every start."""

RESTORE_EVENT_TYPES: tuple[str, ...] = (*LEDGER_EVENT_TYPES, "Command")
"""What a start reads back from the log: the order ledger's events and the session markers."""

_LEGACY_WINDOW = 10_000  # events read per step when looking back for a source name


class Account(StrEnum):
    RESTORED = "restored"
    """Positions rebuilt from the logged fills (none on a first start)."""
    FRESH = "fresh"
    """A new paper account: the earlier sessions' fills were set aside (another market)."""
    UNKNOWN = "unknown"
    """The log could not be read: no positions restored, trading HALTED."""


class SessionMarker(msgspec.Struct, frozen=True, kw_only=True):
    """The arguments of a ``session_started`` command."""

    mode: str
    source: str
    """The market the prices come from: "synthetic seed=7", "replay candles/…", "binance"."""
    symbols: list[str]
    account: Account
    restored_fills: int = 0
    restored_from_seq: int = 0
    """The logged fills with ``restored_from_seq <= seq`` (all before this marker) are the
    ones the session's positions were rebuilt from; 0: none."""
    reason: str = ""
    """Why the account is fresh (or, live, why it would have been)."""

    def command(self, ts_ns: int) -> Command:
        return Command(ts_ns=ts_ns, name=SESSION_STARTED, args=msgspec.to_builtins(self))


class SessionStart(msgspec.Struct, frozen=True, kw_only=True):
    """A starting session: the marker it will publish and the fills it restores."""

    marker: SessionMarker
    previous: str = ""
    """What the previous session ran on, as far as the log tells ("" on a first start)."""
    fills: tuple[OrderFilled, ...] = ()

    @property
    def account(self) -> Account:
        return self.marker.account

    def command(self, ts_ns: int) -> Command:
        """The ``session_started`` event to publish when the session starts."""
        return self.marker.command(ts_ns)

    def summary(self) -> str:
        """One line for the operator when something is worth saying ("" otherwise)."""
        m = self.marker
        if m.account is Account.FRESH:
            return f"fresh paper account, positions not restored: {m.reason}"
        if m.account is Account.UNKNOWN:
            return "positions unknown (event log unreadable): trading HALTED"
        if m.reason:
            return f"positions restored from {m.restored_fills} fills although {m.reason}"
        return ""


def is_session_start(event: Event) -> bool:
    return isinstance(event, Command) and event.name == SESSION_STARTED


def marker_of(event: Event) -> SessionMarker | None:
    """The marker a ``session_started`` command carries (None: not one, or unreadable)."""
    if not isinstance(event, Command) or event.name != SESSION_STARTED:
        return None
    try:
        return msgspec.convert(event.args, SessionMarker)
    except msgspec.ValidationError as exc:
        log.error("session_marker_unreadable", seq=event.seq, error=str(exc))
        return None


def market_of(cfg: AppConfig) -> str:
    """The market a configuration trades on: same string, same prices."""
    data = cfg.data
    if data.source is SourceKind.SYNTHETIC:
        return f"synthetic seed={data.synthetic.seed}"
    if data.source is SourceKind.REPLAY:
        return f"replay {data.replay.path.rstrip('/') or '.'}"
    api = f" {redact_url(data.ccxt.api_url)}" if data.ccxt.api_url else ""
    return f"{data.ccxt.exchange}{api}"


def _kind(source: str) -> str:
    """The source's name as its ``BarsUpdated`` events carry it ("synthetic", "binance")."""
    return source.split(" ", 1)[0]


def _changes(
    previous: SessionMarker | None,
    legacy_kind: str | None,
    mode: str,
    source: str,
    symbols: list[str],
) -> list[str]:
    if previous is None:
        if legacy_kind is not None and legacy_kind != _kind(source):
            return [f"data source changed: {legacy_kind} -> {source}"]
        return []
    out: list[str] = []
    if previous.mode != mode:
        out.append(f"mode changed: {previous.mode} -> {mode}")
    if previous.source != source:
        out.append(f"data source changed: {previous.source} -> {source}")
    if set(previous.symbols) != set(symbols):
        added = sorted(set(symbols) - set(previous.symbols))
        removed = sorted(set(previous.symbols) - set(symbols))
        out.append(
            f"symbols changed: {len(previous.symbols)} -> {len(symbols)}"
            f" (added {_few(added)}; removed {_few(removed)})"
        )
    return out


def _few(names: Sequence[str], n: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def plan_session(
    cfg: AppConfig,
    *,
    symbols: Sequence[str],
    logged: Sequence[Event],
    legacy_kind: str | None = None,
) -> SessionStart:
    """Which of the ``logged`` fills (in seq order) a new session restores, and its marker.

    ``legacy_kind`` is the source name of the newest logged bars, for a log without markers.
    """
    mode, source, names = str(cfg.system.mode), market_of(cfg), list(symbols)
    last: tuple[int, SessionMarker] | None = None
    account_start = 1
    for event in logged:
        marker = marker_of(event)
        if marker is not None:
            last = (event.seq, marker)
            if marker.account is Account.FRESH:
                account_start = event.seq
    previous = last[1] if last is not None else None
    changes = _changes(previous, legacy_kind if last is None else None, mode, source, names)
    reason = "; ".join(changes)
    fills = [e for e in logged if isinstance(e, OrderFilled)]
    before = (
        f"{previous.mode}, {previous.source}, {len(previous.symbols)} symbols"
        if previous is not None
        else legacy_kind or ""
    )
    if changes and cfg.system.mode is not Mode.LIVE:
        set_aside = [f for f in fills if f.seq >= account_start]
        log.warning(
            "fresh_paper_account",
            reason=reason,
            previous_source=previous.source if previous is not None else legacy_kind,
            source=source,
            previous_symbols=_few(previous.symbols) if previous is not None else "unknown",
            symbols=_few(names),
            fills_set_aside=len(set_aside),
        )
        marker = SessionMarker(
            mode=mode, source=source, symbols=names, account=Account.FRESH, reason=reason
        )
        return SessionStart(marker=marker, previous=before)
    if cfg.system.mode is Mode.LIVE:
        account_start = 1  # real positions: never set aside
        if changes:
            log.warning("live_session_market_changed_positions_kept", reason=reason)
    restored = tuple(f for f in fills if f.seq >= account_start)
    marker = SessionMarker(
        mode=mode,
        source=source,
        symbols=names,
        account=Account.RESTORED,
        restored_fills=len(restored),
        restored_from_seq=account_start,
        reason=reason,
    )
    return SessionStart(marker=marker, previous=before, fills=restored)


async def start_session(
    cfg: AppConfig, *, symbols: Sequence[str], logged: Sequence[Event], eventlog: EventLog
) -> SessionStart:
    """``plan_session`` over what a start read back (``RESTORE_EVENT_TYPES``, seq order);
    for a log with fills but no marker, the source name is looked up in its newest bars."""
    legacy_kind = None
    if not any(is_session_start(e) for e in logged) and any(
        isinstance(e, OrderFilled) for e in logged
    ):
        legacy_kind = await newest_bars_source(eventlog)
    return plan_session(cfg, symbols=symbols, logged=logged, legacy_kind=legacy_kind)


def positions_unknown(cfg: AppConfig, *, symbols: Iterable[str]) -> SessionStart:
    """The session of a start that could not read the log (nothing restored)."""
    marker = SessionMarker(
        mode=str(cfg.system.mode),
        source=market_of(cfg),
        symbols=list(symbols),
        account=Account.UNKNOWN,
        reason="event log unreadable at start",
    )
    return SessionStart(marker=marker)


class _Source(msgspec.Struct):
    source: str


async def newest_bars_source(eventlog: EventLog) -> str | None:
    """The ``source`` of the newest logged ``BarsUpdated`` (None: there is none, or the log
    cannot say: a log that was just read is not expected to fail, but if it does the start
    goes on as before markers existed)."""
    try:
        high = await eventlog.last_seq()
        while high >= 1:
            low = max(1, high - _LEGACY_WINDOW + 1)
            payload = None
            async for stored in eventlog.read(from_seq=low, to_seq=high, types=["BarsUpdated"]):
                payload = stored.payload
            if payload is not None:
                return msgspec.json.decode(payload, type=_Source).source
            high = low - 1
    except (StoreUnavailable, OSError, msgspec.DecodeError) as exc:
        log.error("previous_source_unknown", error=str(exc))
    return None
