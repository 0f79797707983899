"""A start's look back: positions and the order ledger rebuilt from the event log and spool.

A restart keeps what the log says it held. If the log cannot be read, positions are unknown:
trading starts HALTED (orders refused, visible in /health) until an operator sets the state
back to ACTIVE.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from quantumtrade.config import AppConfig
from quantumtrade.errors import StoreUnavailable
from quantumtrade.events import Event, TradingState, decode
from quantumtrade.execution.reconcile import OrderLedger
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.manager import RiskManager
from quantumtrade.store.eventlog import EventLog
from quantumtrade.store.session import (
    RESTORE_EVENT_TYPES,
    SessionStart,
    positions_unknown,
    start_session,
)
from quantumtrade.store.spool import Spool

log = structlog.get_logger("quantumtrade.restore")


async def restore_session(
    cfg: AppConfig,
    *,
    eventlog: EventLog,
    spool: Spool | None,
    symbols: Sequence[str],
    ledger: OrderLedger,
    portfolio: Portfolio,
    risk: RiskManager,
) -> SessionStart:
    """Rebuild the ledger and the positions; returns the session this start begins."""
    events: dict[int, Event] = {}
    try:
        async for stored in eventlog.read(types=list(RESTORE_EVENT_TYPES)):
            events[stored.seq] = decode(stored.payload)
    except (StoreUnavailable, OSError) as exc:
        log.error("positions_unknown_trading_halted", error=str(exc))
        await risk.set_state(TradingState.HALTED, "positions unknown: event log unreadable")
        return positions_unknown(cfg, symbols=symbols)
    if spool is not None:
        for seq, _, type_name, payload in spool.load():
            if type_name in RESTORE_EVENT_TYPES:
                events[seq] = decode(payload)
    ordered = [events[seq] for seq in sorted(events)]
    ledger.restore(ordered)
    session = await start_session(cfg, symbols=symbols, logged=ordered, eventlog=eventlog)
    restored = portfolio.restore(session.fills)
    if restored:
        log.info(
            "positions_restored",
            fills=restored,
            open_positions=sum(1 for p in portfolio.positions().values() if p.quantity),
        )
    return session
