"""``BarsUpdated`` as a batch: one event per heartbeat over many symbols, and everything that
reads it (the risk manager's price history, the portfolio's marks) doing per symbol exactly
what one event per symbol did."""

from __future__ import annotations

from collections import Counter

import msgspec
import numpy as np
import pytest

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data import orchestrator
from quantumtrade.data.orchestrator import publish_stored
from quantumtrade.data.source import BarBatch
from quantumtrade.events import (
    Bar,
    BarBlock,
    BarsUpdated,
    DataRejected,
    OrderFilled,
    Side,
    decode,
    encode,
)
from quantumtrade.portfolio import Portfolio
from quantumtrade.risk.history import PriceHistory


def block(*closes: float, start: int = 0) -> BarBlock:
    return BarBlock.from_bars(
        [Bar(start + 60_000 * i, c, c, c, c, 1.0) for i, c in enumerate(closes)]
    )


def batch_event(blocks: dict[str, BarBlock]) -> BarsUpdated:
    symbols = tuple(blocks)
    ts = np.concatenate([b.ts() for b in blocks.values()])
    rows = np.concatenate([b.rows() for b in blocks.values()])
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks.values()])])
    return BarsUpdated.of(7, "t", symbols, offsets.astype(np.int64), BarBlock.of(ts, rows.T))


def test_a_batch_round_trips_through_the_log_encoding() -> None:
    event = batch_event({"A": block(1.0, 2.0), "B": block(3.0), "C": block(4.0, 5.0, 6.0)})
    back = decode(encode(event))
    assert isinstance(back, BarsUpdated)
    assert back.symbols == ("A", "B", "C") and back.symbol == ""
    assert back.offsets_array().tolist() == [0, 2, 3, 6]
    assert [(s, b.bars()) for s, b in back.blocks()] == [(s, b.bars()) for s, b in event.blocks()]
    assert back.last_index().tolist() == [1, 2, 5]
    assert not back.one_each and batch_event({"A": block(1.0), "B": block(2.0)}).one_each


def test_a_per_symbol_event_as_older_logs_hold_it_decodes_as_a_one_symbol_batch() -> None:
    legacy = {"type": "BarsUpdated", "ts_ns": 5, "seq": 9, "symbol": "BTCUSDT", "source": "s"}
    legacy["bars"] = msgspec.to_builtins(block(1.0, 2.0))
    event = decode(msgspec.json.encode(legacy))
    assert isinstance(event, BarsUpdated)
    assert event.symbols == ("BTCUSDT",) and event.symbol == "" and event.seq == 9
    assert [c.close for c in event.block(0).bars()] == [1.0, 2.0]
    # Re-encoded, it is a batch (the one-symbol field is not written again).
    assert b'"symbol"' not in encode(event)


@pytest.mark.parametrize(
    ("symbols", "offsets", "message"),
    [
        (("A", "B"), [0, 3], "need 3 offsets"),
        (("A",), [0, 2], "from 0 to the 3 bars"),
        (("A",), [1, 3], "from 0 to the 3 bars"),
    ],
)
def test_a_batch_whose_offsets_do_not_fit_its_bars_is_refused(
    symbols: tuple[str, ...], offsets: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BarsUpdated.of(0, "t", symbols, np.array(offsets, dtype=np.int64), block(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="needs symbol"):
        BarsUpdated(ts_ns=0, source="t", bars=block(1.0))


async def collect(batch: BarBatch, codes: list[int]) -> tuple[list[BarsUpdated], Counter[str]]:
    bus = EventBus(clock=ManualClock())
    events: list[BarsUpdated] = []
    bus.subscribe(BarsUpdated, events.append)
    bus.subscribe(DataRejected, lambda e: None)
    code = np.array(codes, dtype=np.int8)
    counts = np.add.reduceat(code == 0, batch.offsets[:-1]).astype(np.int64)
    rejects: Counter[str] = Counter()
    batch.freeze()
    await publish_stored(bus, 1, "t", batch, code, counts, rejects)
    return events, rejects


def make_batch(counts: list[int]) -> BarBatch:
    symbols = tuple(f"S{i}" for i in range(len(counts)))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    ts = np.concatenate([np.arange(k, dtype=np.int64) * 60_000 for k in counts])
    prices = np.repeat(np.arange(1.0, total + 1.0)[:, None], 5, axis=1)
    return BarBatch(symbols, ts, prices, offsets)


async def test_publish_stored_sends_one_event_and_splits_a_large_one_by_symbol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = make_batch([3, 1, 4, 2])
    events, _ = await collect(batch, [0] * 10)
    assert len(events) == 1 and events[0].symbols == batch.symbols
    # The event views the batch's memory: no copy of the bars.
    assert np.shares_memory(events[0].bars.rows(), batch.prices)

    monkeypatch.setattr(orchestrator, "MAX_EVENT_BARS", 4)
    events, _ = await collect(make_batch([3, 1, 4, 2]), [0] * 10)
    assert [e.symbols for e in events] == [("S0", "S1"), ("S2",), ("S3",)]
    assert [e.bars.rows()[:, 3].tolist() for e in events] == [
        [1.0, 2.0, 3.0, 4.0],
        [5.0, 6.0, 7.0, 8.0],
        [9.0, 10.0],
    ]
    monkeypatch.setattr(orchestrator, "MAX_EVENT_BARS", 2)  # a symbol over the cap: alone
    events, _ = await collect(make_batch([3, 1]), [0] * 4)
    assert [e.symbols for e in events] == [("S0",), ("S1",)]


async def test_publish_stored_leaves_out_rejected_bars_and_symbols_left_with_none() -> None:
    bad = 1  # any reason code but OK (0)
    events, rejects = await collect(make_batch([2, 1, 2]), [0, bad, bad, bad, 0])
    assert len(events) == 1
    (event,) = events
    assert event.symbols == ("S0", "S2")
    assert event.offsets_array().tolist() == [0, 1, 2]
    assert event.bars.rows()[:, 3].tolist() == [1.0, 5.0]
    assert rejects.total() == 3


def reference_history(window: int, bars: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The rules one bar at a time, as the deque per symbol kept them."""
    out: list[tuple[int, float]] = []
    prev = last = None
    for ms, close in bars:
        if not (np.isfinite(close) and close > 0) or (last is not None and ms <= last):
            continue
        if prev is not None:
            out.append((ms, close / prev - 1.0))
        prev, last = close, ms
    return out[-window:]


def test_price_history_keeps_the_newest_returns_by_batch_and_by_run() -> None:
    rng = np.random.default_rng(3)
    bars = [(60_000 * i, float(c)) for i, c in enumerate(rng.uniform(90, 110, 40))]
    bars[5] = (bars[5][0], float("nan"))
    bars[9] = (bars[9][0], -1.0)
    bars[12] = (bars[11][0], 100.0)  # not newer than the bar before
    for window in (1, 7, 100):
        by_bar, by_run = PriceHistory(window), PriceHistory(window)
        rows = by_bar.rows(("X",))
        for ms, close in bars:
            by_bar.update_last(rows, np.array([ms]), np.array([close]))
        by_run.rows(("X",))
        by_run.update_row(
            0, np.array([b[0] for b in bars[:20]]), np.array([b[1] for b in bars[:20]])
        )
        by_run.update_row(
            0, np.array([b[0] for b in bars[20:]]), np.array([b[1] for b in bars[20:]])
        )
        expected = reference_history(window, bars)
        for history in (by_bar, by_run):
            ts, ret = history.returns("X")
            assert list(zip(ts.tolist(), ret.tolist(), strict=True)) == expected
            assert history.last_close("X") == bars[-1][1]
        assert by_bar.last_close("unknown") is None


def test_price_history_rows_grow_and_a_batch_updates_many_symbols_at_once() -> None:
    history = PriceHistory(3)
    names = tuple(f"S{i}" for i in range(40))
    rows = history.rows(names)
    assert rows.tolist() == list(range(40)) and history.rows(names) is rows
    closes = np.arange(1.0, 41.0)
    closes[7] = np.nan
    taken = history.update_last(rows, np.full(40, 0, dtype=np.int64), closes)
    assert taken.sum() == 39 and not taken[7]
    taken = history.update_last(rows, np.full(40, 60_000, dtype=np.int64), 2 * np.arange(1.0, 41.0))
    assert taken.all()
    ts, ret = history.returns("S3")
    assert ts.tolist() == [60_000] and ret.tolist() == [1.0]
    assert history.returns("S7")[1].size == 0  # its first close was bad: no return yet
    assert history.rows(("S41", "S0")).tolist() == [40, 0]


def fill(symbol: str, qty: float, price: float, seq: int) -> OrderFilled:
    return OrderFilled(
        ts_ns=0,
        seq=seq,
        client_order_id=f"o{seq}",
        venue="v",
        symbol=symbol,
        side=Side.BUY if qty > 0 else Side.SELL,
        quantity=abs(qty),
        price=price,
        fee=0.01,
        cumulative_quantity=abs(qty),
        leaves_quantity=0.0,
    )


async def test_set_marks_is_set_mark_for_each_symbol_in_order() -> None:
    one, many = (Portfolio(bus=EventBus(clock=ManualClock()), clock=ManualClock()) for _ in "ab")
    for p in (one, many):
        for i, (symbol, qty, price) in enumerate(
            [("B", 0.3, 101.7), ("D", -1.1, 7.3), ("A", 2.0, 33.1)], start=1
        ):
            p._apply(fill(symbol, qty, price, i))
    rng = np.random.default_rng(5)
    symbols = ("A", "B", "C", "D", "E")
    for _ in range(20):
        prices = rng.uniform(1, 200, len(symbols))
        for s, x in zip(symbols, prices.tolist(), strict=True):
            one.set_mark(s, x)
        assert many.set_marks(symbols, prices)
        assert many.net_pnl() == one.net_pnl()  # the same sums in the same order: exact
        assert all(many.mark_price(s) == one.mark_price(s) for s in symbols)
    assert not many.set_marks(("C", "E"), np.array([1.0, 2.0]))  # no open position marked
