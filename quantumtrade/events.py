"""Every event that crosses the bus: immutable, typed, JSON-encodable records.

An event is created with ``seq == 0``; the bus stamps the process-wide sequence number exactly
once, before any subscriber sees it (see ``EventBus.publish``). Events carry ``ts_ns`` from the
injected clock. Encoded events are tagged with their class name, so the event log can decode
them back into the right class for replay.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Union

import msgspec


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class Regime(StrEnum):
    TRENDING = "TRENDING"
    VOLATILE = "VOLATILE"
    RANGING = "RANGING"
    BREAKOUT = "BREAKOUT"


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class Bar(msgspec.Struct, frozen=True, array_like=True):
    """One OHLCV candle; ``ts_ms`` is the bar's open time in ms since the epoch (UTC)."""

    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    ts_ns: int
    seq: int = 0


# --- market -------------------------------------------------------------------------------


class BarsUpdated(Event, frozen=True):
    symbol: str
    source: str
    bars: tuple[Bar, ...]


class TickerUpdated(Event, frozen=True):
    symbol: str
    source: str
    bid: float
    ask: float
    last: float


class OrderBookUpdated(Event, frozen=True):
    symbol: str
    source: str
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


class DataRejected(Event, frozen=True):
    symbol: str
    source: str
    reason: str
    detail: str = ""


# --- analysis -----------------------------------------------------------------------------


class RegimeChanged(Event, frozen=True):
    symbol: str
    regime: Regime
    previous: Regime | None
    confidence: float


class ScanCompleted(Event, frozen=True):
    symbols_scanned: int
    selected: tuple[str, ...]
    dropped: dict[str, int]
    duration_us: int


class SignalGenerated(Event, frozen=True):
    signal_id: str
    symbol: str
    side: Side
    score: float
    price: float
    volatility: float
    regime: Regime | None = None
    confidence: float = 0.0
    reasons: tuple[str, ...] = ()


# --- trading ------------------------------------------------------------------------------


class OrderIntent(Event, frozen=True):
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    reference_price: float = 0.0
    signal_id: str | None = None


class OrderRejected(Event, frozen=True):
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    reason: str
    detail: str = ""
    venue: str | None = None


class OrderSubmitted(Event, frozen=True):
    client_order_id: str
    venue: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType
    venue_order_id: str = ""


class OrderFilled(Event, frozen=True):
    """One fill (possibly partial) of an order."""

    client_order_id: str
    venue: str
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    cumulative_quantity: float
    leaves_quantity: float


class OrderCancelled(Event, frozen=True):
    client_order_id: str
    venue: str
    symbol: str
    reason: str
    filled_quantity: float = 0.0


class PositionChanged(Event, frozen=True):
    symbol: str
    quantity: float
    avg_price: float
    realized_pnl: float
    fees: float


class RiskStateChanged(Event, frozen=True):
    state: TradingState
    previous: TradingState
    reason: str


# --- system -------------------------------------------------------------------------------


class CircuitBreakerChanged(Event, frozen=True):
    name: str
    state: BreakerState
    previous: BreakerState
    failures: int


class SourceFailed(Event, frozen=True):
    source: str
    symbol: str
    error: str


class DeadLettered(Event, frozen=True):
    event_type: str
    event_seq: int
    handler: str
    error: str
    attempts: int


class Command(Event, frozen=True):
    name: str
    args: dict[str, Any] = {}


EVENT_TYPES: tuple[type[Event], ...] = (
    BarsUpdated,
    TickerUpdated,
    OrderBookUpdated,
    DataRejected,
    RegimeChanged,
    ScanCompleted,
    SignalGenerated,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderFilled,
    OrderCancelled,
    PositionChanged,
    RiskStateChanged,
    CircuitBreakerChanged,
    SourceFailed,
    DeadLettered,
    Command,
)

AnyEvent = Union[EVENT_TYPES]  # type: ignore[valid-type]  # noqa: UP007
_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(type=AnyEvent)


def encode(event: Event) -> bytes:
    """JSON bytes of an event, tagged with its type name."""
    return _encoder.encode(event)


def decode(payload: bytes | str) -> Event:
    """The event a payload of ``encode`` holds (raises ``msgspec.DecodeError`` if malformed)."""
    return _decoder.decode(payload)
