"""Every event that crosses the bus: immutable, typed, JSON-encodable records.

An event is created with ``seq == 0``; the bus stamps the process-wide sequence number exactly
once, before any subscriber sees it (see ``EventBus.publish``). Events carry ``ts_ns`` from the
injected clock. Encoded events are tagged with their class name, so the event log can decode
them back into the right class for replay.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Any, Union

import msgspec
import numpy as np
from numpy.typing import NDArray


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


REGIME_ORDER: tuple[Regime, ...] = (
    Regime.TRENDING,
    Regime.RANGING,
    Regime.VOLATILE,
    Regime.BREAKOUT,
)
"""A regime's code: its index here (the regime engine's labels, the scanner's codes)."""
NO_LABEL = -1
"""The code of no regime (not enough bars yet)."""


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


class BarBlock(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One symbol's bars, oldest first, as packed little-endian buffers: ``ts_ms`` holds an
    int64 open time per bar, ``prices`` one float64 row (open, high, low, close, volume) per
    bar.

    Thousands of bars are two buffers, not thousands of objects, so publishing and logging a
    full refresh stays cheap: the orchestrator hands out read-only views of the fetched batch
    (no copy), and ``ts()``/``rows()``/``columns()`` are zero-copy numpy views.

    ``gc=False``: a refresh makes two blocks per symbol (event and cache entry), and the
    collector need not track them: a block holds only buffers, so it can never be part of a
    reference cycle (the same holds for ``BarsUpdated`` and the cache's ``CachedBars``).
    """

    ts_ms: memoryview
    prices: memoryview

    @classmethod
    def of(cls, ts_ms: NDArray[np.int64], prices: NDArray[np.float64]) -> BarBlock:
        """Wrap ``ts_ms`` (n,) and ``prices`` (5, n) columns (copied unless already frozen
        bar-major memory)."""
        if prices.shape != (5, ts_ms.shape[0]):
            raise ValueError(f"prices must be (5, {ts_ms.shape[0]}), got {prices.shape}")
        return cls(_frozen_bytes(ts_ms, "<i8"), _frozen_bytes(prices.T, "<f8"))

    @classmethod
    def from_bars(cls, bars: Sequence[Bar]) -> BarBlock:
        ts = np.array([b.ts_ms for b in bars], dtype=np.int64)
        rows = np.array(
            [[b.open, b.high, b.low, b.close, b.volume] for b in bars], dtype=np.float64
        ).reshape(len(bars), 5)
        return cls.of(ts, rows.T)

    def __len__(self) -> int:
        return self.ts_ms.nbytes // 8

    def ts(self) -> NDArray[np.int64]:
        """Open times (read-only view)."""
        return np.frombuffer(self.ts_ms, dtype="<i8")

    def rows(self) -> NDArray[np.float64]:
        """(n, 5): one (open, high, low, close, volume) row per bar (read-only view)."""
        return np.frombuffer(self.prices, dtype="<f8").reshape(len(self), 5)

    def columns(self) -> NDArray[np.float64]:
        """(5, n) open, high, low, close, volume (read-only view)."""
        return self.rows().T

    def bars(self) -> list[Bar]:
        return [
            Bar(ts, *row) for ts, row in zip(self.ts().tolist(), self.rows().tolist(), strict=True)
        ]

    def __iter__(self) -> Iterator[Bar]:
        return iter(self.bars())


class SymbolRows:
    """A row per symbol, in order of first sight, for state kept in arrays across
    ``BarsUpdated`` batches. The last answer of ``rows`` is kept: heartbeats over the same
    symbols ask for the same tuple, so a step over thousands of symbols costs a comparison."""

    __slots__ = ("_last", "_row", "names")

    def __init__(self) -> None:
        self._row: dict[str, int] = {}
        self.names: list[str] = []
        """The symbol of each row (read-only for callers)."""
        self._last: tuple[tuple[str, ...], NDArray[np.int64]] = ((), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self._row)

    def get(self, symbol: str) -> int | None:
        return self._row.get(symbol)

    def rows(self, symbols: tuple[str, ...]) -> NDArray[np.int64]:
        """The rows of ``symbols`` (rows are added for new ones: ``len`` grows). Read-only."""
        last = self._last
        if last[0] is symbols or last[0] == symbols:
            return last[1]
        row = self._row
        for s in symbols:
            if s not in row:
                row[s] = len(row)
                self.names.append(s)
        rows = np.fromiter((row[s] for s in symbols), dtype=np.int64, count=len(symbols))
        rows.flags.writeable = False
        self._last = (symbols, rows)
        return rows


_index_cache: tuple[tuple[str, ...], dict[str, int]] = ((), {})


def symbol_index(symbols: tuple[str, ...]) -> dict[str, int]:
    """``{symbol: position}`` in ``symbols``. The last answer is kept: the handlers of one
    ``BarsUpdated`` (and successive heartbeats over the same symbols) ask for the same
    tuple, so it is built once, not once per handler and step. Do not modify the answer."""
    global _index_cache
    cached = _index_cache
    if cached[0] is symbols or cached[0] == symbols:
        return cached[1]
    _index_cache = (symbols, {s: j for j, s in enumerate(symbols)})
    return _index_cache[1]


def _frozen_bytes(a: NDArray[Any], dtype: str) -> memoryview:
    """A read-only byte view of ``a`` as ``dtype`` in C order: zero-copy for a read-only
    contiguous array (frozen data is shared, e.g. a fetched batch), else a frozen copy."""
    if a.flags.writeable or not a.flags.c_contiguous or a.dtype != np.dtype(dtype):
        a = np.array(a, dtype=dtype, order="C")  # never alias a writable array
        a.flags.writeable = False
    return byte_view(a)


def byte_view(a: NDArray[Any]) -> memoryview:
    """The bytes of a C-contiguous array as a flat memoryview (no copy; empty arrays too)."""
    return a.data.cast("B") if a.size else memoryview(b"")


MAX_EVENT_BARS = 65_536
"""Bars in one ``BarsUpdated`` at most (~3 MB): a history fetch of thousands of symbols is
split into several events, a heartbeat's bar per symbol is one."""


class BarsUpdated(Event, frozen=True, gc=False, omit_defaults=True):
    """Bars newly stored in MarketState, for one or more symbols: one event per heartbeat's
    batch, so a step over 5,000 symbols is one event, not 5,000.

    Symbol ``symbols[j]`` owns bars ``offsets[j]:offsets[j + 1]`` of ``bars`` (oldest first);
    each symbol appears once and holds at least one bar. ``offsets`` is packed little-endian
    int64, like the block's buffers, so an event is a few buffers whatever its size.

    ``BarsUpdated(symbol=..., source=..., bars=...)`` builds a one-symbol event; logs written
    before batches hold that form (one event per symbol) and decode to it, so readers only
    ever see ``symbols`` and ``offsets`` (``symbol`` is then empty).
    """

    source: str
    bars: BarBlock
    symbols: tuple[str, ...] = ()
    offsets: memoryview | None = None
    symbol: str = ""
    """The one-symbol form's symbol (folded into ``symbols`` on creation)."""

    def __post_init__(self) -> None:
        n = len(self.bars)
        if self.offsets is None:
            if self.symbols or not self.symbol:
                raise ValueError("BarsUpdated needs symbol, or symbols with offsets")
            msgspec.structs.force_setattr(self, "symbols", (self.symbol,))
            msgspec.structs.force_setattr(self, "offsets", byte_view(np.array([0, n], dtype="<i8")))
            msgspec.structs.force_setattr(self, "symbol", "")
            return
        if self.symbol:
            raise ValueError("BarsUpdated takes symbol or symbols, not both")
        if self.offsets.nbytes != 8 * (len(self.symbols) + 1):
            raise ValueError(f"{len(self.symbols)} symbols need {len(self.symbols) + 1} offsets")
        bounds = self.offsets.cast("q")
        if bounds[0] != 0 or bounds[len(self.symbols)] != n:
            raise ValueError(f"offsets must run from 0 to the {n} bars")

    @classmethod
    def of(
        cls,
        ts_ns: int,
        source: str,
        symbols: tuple[str, ...],
        offsets: NDArray[np.int64],
        bars: BarBlock,
    ) -> BarsUpdated:
        return cls(
            ts_ns=ts_ns,
            source=source,
            bars=bars,
            symbols=symbols,
            offsets=_frozen_bytes(offsets, "<i8"),
        )

    def offsets_array(self) -> NDArray[np.int64]:
        """(len(symbols) + 1,) bar offsets (read-only view)."""
        assert self.offsets is not None  # set by __post_init__
        return np.frombuffer(self.offsets, dtype="<i8")

    @property
    def one_each(self) -> bool:
        """Every symbol holds exactly one bar (a heartbeat's usual batch)."""
        return len(self.bars) == len(self.symbols)

    def block(self, j: int) -> BarBlock:
        """Symbol ``j``'s bars (views, no copy)."""
        assert self.offsets is not None
        bounds = self.offsets.cast("q")
        a, b = bounds[j], bounds[j + 1]
        return BarBlock(self.bars.ts_ms[8 * a : 8 * b], self.bars.prices[40 * a : 40 * b])

    def blocks(self) -> Iterator[tuple[str, BarBlock]]:
        """(symbol, its bars) for every symbol, in order."""
        for j, symbol in enumerate(self.symbols):
            yield symbol, self.block(j)

    def last_index(self) -> NDArray[np.int64]:
        """Index in ``bars`` of each symbol's newest bar."""
        return self.offsets_array()[1:] - 1


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


class AnomalyDetected(Event, frozen=True):
    """A symbol's data turned anomalous (``anomaly.AnomalyDetector``): published once when a
    kind becomes active, not again while it stays active."""

    symbol: str
    kind: str
    """``spike``, ``range``, ``volume``, ``frozen``, ``missing_bars``, ``price_gap`` or
    ``ticker`` (``anomaly.model.AnomalyKind``)."""
    score: float
    """The robust z-score that crossed the threshold (``frozen``: bars frozen so far;
    ``missing_bars``: bars missing)."""
    since_ms: int
    """Open time of the bar that triggered it (``ticker``: the ticker's time), ms."""


class AnomalyCleared(Event, frozen=True):
    """An active anomaly of a symbol ended: its kind did not trigger for ``clear_bars`` bars."""

    symbol: str
    kind: str
    since_ms: int
    """When the episode began (``AnomalyDetected.since_ms``)."""
    score: float = 0.0
    """The largest score of the episode."""


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
    strategy: str = ""
    """The strategy whose entry this is (empty in logs older than strategies)."""


class TargetPosition(Event, frozen=True):
    """A strategy's new target for one symbol: the position the daemon trades towards.

    Published when the target changes (an entry, a resize, an exit), never again for the same
    target; orders for the difference between the target and the position (fills and orders
    in flight included) follow until the position is there."""

    target_id: str
    symbol: str
    quantity: float
    """Signed target position in base units (0: flat)."""
    weight: float
    """Signed fraction of the strategy's equity it is sized from."""
    price: float
    """The close the target was sized at."""
    reason: str
    """Why: the strategy's entry reason, or the exit that set it to 0 (``stop_loss``,
    ``take_profit``, ``trailing_stop``, ``time_stop``, ``regime_change``, ``signal_fade``,
    ``reverse``)."""
    strategy: str
    regime: Regime | None = None
    confidence: float = 0.0
    stop_price: float | None = None
    """For a price-level exit: the level that was crossed (the fill is there or at a worse
    open)."""


class AdaptEvidence(msgspec.Struct, frozen=True):
    """Why a re-tuned parameter set replaced the current one: the out-of-sample comparison."""

    objective: str
    """``sharpe``, ``sortino``, ``calmar`` or ``profit_factor``."""
    tuned_score: float
    """The tuned set's objective on the test bars."""
    current_score: float
    """The current set's objective on the same test bars."""
    margin: float
    """By how much the tuned score had to beat the current one (``[adapt] margin``)."""
    tuned_trades: int
    current_trades: int
    trials: int
    """Finished trials of the search (scored and pruned)."""
    scored_trials: int
    train_from_ms: int
    """Open time of the first traded train bar."""
    test_from_ms: int
    """Open time of the first test bar (the train bars end just before it)."""
    test_to_ms: int
    """Close time of the last test bar (the newest bar of the snapshot)."""
    seed: int
    pbo: float | None = None
    """Probability of backtest overfitting of the search (None: too few trials or bars)."""
    deflated_sharpe: float | None = None


class ParametersChanged(Event, frozen=True):
    """The strategy switched to a re-tuned parameter set (``[adapt]``); every decision after
    this event uses ``new``. Replay applies it at its place in the log."""

    strategy: str
    old: dict[str, Any]
    """The searched parameters' values before (dotted names: ``trend.min_score``,
    ``exits.stop_loss_atr``)."""
    new: dict[str, Any]
    """Their values from now on."""
    evidence: AdaptEvidence


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
    """The signal or target (``TargetPosition.target_id``) the order serves, if any."""
    reason: str = ""
    """Why it was sent: the target's reason (an entry, or the exit, e.g. ``stop_loss``)."""
    stop_price: float | None = None
    """A triggered price-level exit: the level crossed (simulated bar fills fill it on the bar
    that crossed it, at this level or at a worse open)."""


class OrderRejected(Event, frozen=True):
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    reason: str
    detail: str = ""
    venue: str | None = None
    parent_id: str = ""
    """Set on a child of a split order: ``client_order_id`` is the child's, this the parent's."""


class OrderSubmitted(Event, frozen=True):
    client_order_id: str
    venue: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType
    venue_order_id: str = ""
    parent_id: str = ""


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
    parent_id: str = ""
    """Split order child: quantities above are the child's; the parent is this id."""


class OrderCancelled(Event, frozen=True):
    client_order_id: str
    venue: str
    symbol: str
    reason: str
    filled_quantity: float = 0.0
    parent_id: str = ""


class ExternalOrderFound(Event, frozen=True):
    """An order open at a venue that the event log does not know (reconciliation)."""

    venue: str
    symbol: str
    client_order_id: str
    venue_order_id: str
    side: Side
    quantity: float
    filled_quantity: float
    price: float | None
    status: str


class BalancesReconciled(Event, frozen=True):
    """A venue's holdings by asset (free plus locked), as fetched by reconciliation."""

    venue: str
    balances: dict[str, float]


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
    AnomalyDetected,
    AnomalyCleared,
    ScanCompleted,
    SignalGenerated,
    TargetPosition,
    ParametersChanged,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderFilled,
    OrderCancelled,
    ExternalOrderFound,
    BalancesReconciled,
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
