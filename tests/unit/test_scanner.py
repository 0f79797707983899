"""Scanner: ranking, tie-break, thresholds and drop reasons; events on a real bus."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import pytest
from numpy.typing import NDArray

from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data.market_state import MarketState
from quantumtrade.events import Bar, ScanCompleted, Side
from quantumtrade.scoring.reference import compute_scores
from quantumtrade.scoring.scanner import (
    CORRELATED,
    DROP_REASONS,
    INSUFFICIENT_BARS,
    LIQUIDITY,
    OUTSIDE_TOP_N,
    REGIME_FIT,
    SCORE_BELOW_THRESHOLD,
    VOLATILITY_BAND,
    Scanner,
    ScannerConfig,
    select,
)

WINDOW = 200
BAR_MS = 60_000
T0_MS = 1_700_000_000_000


def trend_row(
    drift: float, seed: int, bars: int = WINDOW, noise: float = 0.01
) -> NDArray[np.float64]:
    """A random walk with ``drift`` per bar, left-padded with NaN to WINDOW bars."""
    rng = np.random.default_rng(seed)
    walk = 100.0 * np.exp(np.cumsum(drift + rng.normal(0.0, noise, bars)))
    row = np.full(WINDOW, np.nan)
    row[WINDOW - bars :] = walk
    return row


def market(rows: dict[str, NDArray[np.float64]]) -> tuple[list[str], NDArray[np.float64]]:
    return list(rows), np.ascontiguousarray(np.vstack(list(rows.values())))


def volume_like(close: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(np.isnan(close), np.nan, 1_000.0)


# --- select -------------------------------------------------------------------------------


def test_select_ranks_by_abs_score_and_records_drops() -> None:
    symbols, close = market(
        {
            "UPUSDT": trend_row(0.004, 1),
            "DOWNUSDT": trend_row(-0.006, 2),
            "MILDUSDT": trend_row(0.002, 3),
            "FLATUSDT": np.full(WINDOW, 42.0),  # trend 0: below any threshold
            "NEWUSDT": trend_row(0.01, 4, bars=40),  # scoreable, but under min_bars
            "TINYUSDT": trend_row(0.01, 5, bars=10),  # too few bars for the kernel itself
        }
    )
    config = ScannerConfig(top_n=2, min_abs_score=0.5, min_bars=50)
    result = select(symbols, close, volume_like(close), config)

    scores, vols = compute_scores(close, volume_like(close), fast=12, slow=26, vol_window=30)
    np.testing.assert_array_equal(result.scores, scores)
    np.testing.assert_array_equal(result.vols, vols)
    by_symbol = dict(zip(symbols, scores, strict=True))
    eligible = sorted(
        (s for s in ("UPUSDT", "DOWNUSDT", "MILDUSDT") if abs(by_symbol[s]) >= 0.5),
        key=lambda s: -abs(by_symbol[s]),
    )
    assert len(eligible) == 3, by_symbol  # the fixture's premise
    assert [c.symbol for c in result.selected] == eligible[:2]
    for candidate in result.selected:
        i = symbols.index(candidate.symbol)
        assert candidate.side is (Side.BUY if scores[i] > 0 else Side.SELL)
        assert candidate.score == scores[i]
        assert candidate.price == close[i, -1]
        assert candidate.volatility == vols[i]
    assert by_symbol["DOWNUSDT"] < 0 < by_symbol["UPUSDT"]
    assert result.dropped == dict.fromkeys(DROP_REASONS, 0) | {
        INSUFFICIENT_BARS: 2,
        SCORE_BELOW_THRESHOLD: 1,
        OUTSIDE_TOP_N: 1,
    }
    assert not np.isnan(by_symbol["NEWUSDT"])  # dropped by min_bars, not by the kernel
    assert result.symbols == tuple(symbols)
    assert not result.scores.flags.writeable


def test_select_sides_and_threshold() -> None:
    symbols, close = market({"UPUSDT": trend_row(0.005, 7), "DOWNUSDT": trend_row(-0.005, 8)})
    scores, _ = compute_scores(close, volume_like(close), fast=12, slow=26, vol_window=30)
    both = select(symbols, close, volume_like(close), ScannerConfig(min_abs_score=0.0))
    assert {c.symbol: c.side for c in both.selected} == {"UPUSDT": Side.BUY, "DOWNUSDT": Side.SELL}
    # A threshold between the two |scores| keeps only the stronger one.
    lo, hi = sorted(abs(scores))
    config = ScannerConfig(min_abs_score=(lo + hi) / 2)
    one = select(symbols, close, volume_like(close), config)
    assert [abs(c.score) for c in one.selected] == [hi]
    assert one.dropped[SCORE_BELOW_THRESHOLD] == 1
    # A threshold equal to a score keeps it (|score| >= min_abs_score).
    assert (
        len(select(symbols, close, volume_like(close), ScannerConfig(min_abs_score=lo)).selected)
        == 2
    )


def test_select_breaks_ties_by_symbol_name() -> None:
    row = trend_row(0.004, 11)
    # Scaling prices by a power of two changes no return and no EMA ratio: the scores tie exactly.
    symbols, close = market({"ZZZUSDT": row, "AAAUSDT": row * 2.0, "MMMUSDT": row * 0.5})
    result = select(symbols, close, volume_like(close), ScannerConfig(top_n=2))
    assert len(set(result.scores.tolist())) == 1
    assert [c.symbol for c in result.selected] == ["AAAUSDT", "MMMUSDT"]
    assert result.dropped[OUTSIDE_TOP_N] == 1


def test_select_matches_a_brute_force_ranking() -> None:
    rng = np.random.default_rng(99)
    rows = {f"S{i:03d}USDT": trend_row(rng.normal(0.0, 0.003), i) for i in range(300)}
    rows.update({f"T{i}USDT": rows["S007USDT"] * 2.0**i for i in range(1, 4)})  # exact ties
    for i in range(0, 300, 17):
        rows[f"S{i:03d}USDT"][: WINDOW - int(rng.integers(10, 80))] = np.nan
    symbols, close = market(rows)
    config = ScannerConfig(top_n=7, min_abs_score=1.0)
    result = select(symbols, close, volume_like(close), config)
    scores = result.scores
    bars = np.count_nonzero(~np.isnan(close), axis=1)
    ok = [i for i in range(len(symbols)) if bars[i] >= config.min_bars and not np.isnan(scores[i])]
    strong = [i for i in ok if abs(scores[i]) >= config.min_abs_score]
    expected = sorted(strong, key=lambda i: (-abs(scores[i]), symbols[i]))[: config.top_n]
    assert [c.symbol for c in result.selected] == [symbols[i] for i in expected]
    assert result.dropped == dict.fromkeys(DROP_REASONS, 0) | {
        INSUFFICIENT_BARS: len(symbols) - len(ok),
        SCORE_BELOW_THRESHOLD: len(ok) - len(strong),
        OUTSIDE_TOP_N: len(strong) - config.top_n,
    }


def test_select_with_no_symbols_and_mismatched_rows() -> None:
    empty = np.empty((0, WINDOW))
    result = select([], empty, empty, ScannerConfig())
    assert result.selected == [] and sum(result.dropped.values()) == 0
    with pytest.raises(ValueError, match="symbols"):
        select(["A"], empty, empty, ScannerConfig())


def test_config_is_strict() -> None:
    assert msgspec.convert({}, ScannerConfig) == ScannerConfig()
    with pytest.raises(msgspec.ValidationError, match="top_n"):
        msgspec.convert({"top_n": 0}, ScannerConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"topn": 3}, ScannerConfig)


# --- Scanner on a real bus ----------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    ts_ms: NDArray[np.int64]
    lengths: NDArray[np.int64]


class ArrayMarket:
    """Columns held in plain arrays, in MarketState's layout (newest bar last, NaN padding)."""

    def __init__(self, rows: dict[str, NDArray[np.float64]]) -> None:
        self.symbols, self.close = market(rows)
        self.capacity = WINDOW
        self.last_ts_ms = T0_MS + (WINDOW - 1) * BAR_MS

    def append_bar(self, factor: float = 1.0) -> None:
        self.close = np.ascontiguousarray(
            np.hstack([self.close[:, 1:], self.close[:, -1:] * factor])
        )
        self.last_ts_ms += BAR_MS

    def columns(self, window: int | None = None) -> Columns:
        close = self.close[:, -(window or WINDOW) :].copy()
        ts = self.last_ts_ms - BAR_MS * np.arange(close.shape[1] - 1, -1, -1, dtype=np.int64)
        ts_ms = np.where(np.isnan(close), 0, ts).astype(np.int64)
        lengths = np.count_nonzero(~np.isnan(close), axis=1).astype(np.int64)
        return Columns(close, close, close, close, volume_like(close), ts_ms, lengths)


class Seen:
    def __init__(self, bus: EventBus) -> None:
        self.events: list[ScanCompleted] = []
        bus.subscribe(ScanCompleted, self.events.append)

    def scans(self) -> list[ScanCompleted]:
        return [e for e in self.events if isinstance(e, ScanCompleted)]


async def test_scan_publishes_completion_with_the_selection() -> None:
    clock = ManualClock()
    bus = EventBus(clock=clock)
    seen = Seen(bus)
    state = ArrayMarket(
        {
            "BTCUSDT": trend_row(0.005, 21),
            "ETHUSDT": trend_row(-0.006, 22),
            "SOLUSDT": np.full(WINDOW, 20.0),
            "NEWUSDT": trend_row(0.01, 23, bars=20),
        }
    )
    scanner = Scanner(bus=bus, clock=clock, state=state, config=ScannerConfig(top_n=3))

    result = await scanner.scan()

    # The scan only publishes its outcome: what to trade is the strategy's call.
    assert [type(e) for e in seen.events] == [ScanCompleted]
    completed = seen.scans()[0]
    assert completed.symbols_scanned == 4
    assert completed.selected == tuple(c.symbol for c in result.selected)
    assert set(completed.selected) == {"BTCUSDT", "ETHUSDT"}
    assert {c.side for c in result.selected} == {Side.BUY, Side.SELL}
    assert completed.dropped[INSUFFICIENT_BARS] == 1
    assert completed.dropped[SCORE_BELOW_THRESHOLD] == 1
    assert completed.ts_ns == clock.now_ns() and completed.duration_us >= 0
    # Eligible: passed the data stages (the flat one did; the young one had too few bars).
    assert result.eligible is not None
    assert result.eligible.tolist() == [True, True, True, False]
    assert scanner.metrics()["scans"] == 1


class BrokenMarket:
    symbols = ("BTCUSDT",)
    capacity = WINDOW

    def columns(self, window: int | None = None) -> Columns:
        raise RuntimeError("ring buffer torn")


async def test_failed_scan_shows_in_health_and_publishes_nothing() -> None:
    clock = ManualClock()
    bus = EventBus(clock=clock)
    seen = Seen(bus)
    scanner = Scanner(bus=bus, clock=clock, state=BrokenMarket(), config=ScannerConfig())
    assert scanner.health()["status"] == "ok"
    with pytest.raises(RuntimeError):
        await scanner.scan()
    assert scanner.health()["status"] == "degraded"
    assert "torn" in scanner.health()["last_error"]
    assert seen.events == [] and scanner.metrics()["errors"] == 1


def as_bars(closes: NDArray[np.float64], first_ts_ms: int) -> list[Bar]:
    return [
        Bar(first_ts_ms + k * BAR_MS, c, c * 1.001, c * 0.999, c, 1_000.0)
        for k, c in enumerate(closes.tolist())
    ]


async def test_scan_through_a_real_market_state() -> None:
    clock = ManualClock()
    bus = EventBus(clock=clock)
    seen = Seen(bus)
    up, down, young = trend_row(0.005, 41), trend_row(-0.005, 42), trend_row(0.01, 43, bars=30)
    state = MarketState(["BTCUSDT", "ETHUSDT", "NEWUSDT"], capacity=300)
    state.append("BTCUSDT", as_bars(up, T0_MS))
    state.append("ETHUSDT", as_bars(down, T0_MS))
    state.append("NEWUSDT", as_bars(young[~np.isnan(young)], T0_MS + (WINDOW - 30) * BAR_MS))
    # A window wider than the buffer is clamped to it, not refused.
    scanner = Scanner(bus=bus, clock=clock, state=state, config=ScannerConfig(window=500))

    result = await scanner.scan()

    last_ts = T0_MS + (WINDOW - 1) * BAR_MS
    symbols, close = market({"BTCUSDT": up, "ETHUSDT": down, "NEWUSDT": young})
    expected = select(symbols, close, volume_like(close), ScannerConfig())
    np.testing.assert_array_equal(result.scores, expected.scores)
    assert result.selected == expected.selected
    assert seen.scans()[0].dropped[INSUFFICIENT_BARS] == 1
    state.append("BTCUSDT", as_bars(up[-1:] * 1.01, last_ts + BAR_MS))
    again = await scanner.scan()
    assert "BTCUSDT" in {c.symbol for c in again.selected}


def test_filter_stages_run_in_order_and_count_each_symbol_once() -> None:
    from quantumtrade.events import Regime

    up = trend_row(0.004, 1)
    symbols, close = market(
        {
            "UPUSDT": up,
            "TWINUSDT": up * 1.5,  # the same moves: perfectly correlated with UPUSDT
            "DOWNUSDT": trend_row(-0.006, 2),
            "THINUSDT": trend_row(0.005, 4),  # strong, but illiquid
            "WILDUSDT": trend_row(0.02, 5, noise=0.08),  # outside the volatility band
            "CALMUSDT": trend_row(0.003, 6),  # in a regime we do not trade
            "SHORTUSDT": trend_row(0.004, 7, bars=20),  # too few bars
        }
    )
    volume = volume_like(close)
    volume[symbols.index("THINUSDT")] = 0.001
    regimes = [
        Regime.TRENDING, Regime.TRENDING, Regime.TRENDING, Regime.TRENDING,
        Regime.VOLATILE, Regime.RANGING, None,
    ]  # fmt: skip
    config = ScannerConfig(
        top_n=5,
        min_abs_score=0.1,
        min_quote_volume=1_000.0,
        max_volatility=0.05,
        allowed_regimes=[Regime.TRENDING, Regime.VOLATILE],
        max_correlation=0.9,
    )
    result = select(symbols, close, volume, config, regimes)
    # The same regimes as codes (an index in REGIME_ORDER, NO_LABEL: none), as the detector
    # hands them to the scanner, give the same result.
    from quantumtrade.regime.model import NO_LABEL, REGIME_ORDER
    from quantumtrade.scoring.indicators import compute_scan
    from quantumtrade.scoring.scanner import select_from_values

    codes = np.array([REGIME_ORDER.index(r) if r else NO_LABEL for r in regimes], np.int8)
    values = compute_scan(close, close, close, volume, config.scan_params())[0].values
    by_codes = select_from_values(symbols, values, close, volume, config, regime_codes=codes)
    assert by_codes.dropped == result.dropped and by_codes.selected == result.selected
    with pytest.raises(ValueError):
        select_from_values(symbols, values, close, volume, config, regime_codes=codes + 4)
    assert result.dropped == dict.fromkeys(DROP_REASONS, 0) | {
        INSUFFICIENT_BARS: 1,
        LIQUIDITY: 1,
        VOLATILITY_BAND: 1,
        REGIME_FIT: 1,
        CORRELATED: 1,
    }
    kept = [c.symbol for c in result.selected]
    assert sorted(kept) == ["DOWNUSDT", "TWINUSDT"] or sorted(kept) == ["DOWNUSDT", "UPUSDT"]
    assert sum(result.dropped.values()) + len(kept) == len(symbols)


def test_score_threshold_per_regime() -> None:
    from quantumtrade.events import Regime

    symbols, close = market({"AUSDT": trend_row(0.004, 1), "BUSDT": trend_row(0.004, 1)})
    base = ScannerConfig(min_abs_score=0.1)
    strict = ScannerConfig(min_abs_score=0.1, min_abs_score_by_regime={Regime.RANGING: 1e9})
    regimes = [Regime.TRENDING, Regime.RANGING]
    assert len(select(symbols, close, volume_like(close), base, regimes).selected) == 2
    result = select(symbols, close, volume_like(close), strict, regimes)
    assert [c.symbol for c in result.selected] == ["AUSDT"]
    assert result.dropped[SCORE_BELOW_THRESHOLD] == 1


# --- the incremental path -----------------------------------------------------------------


def heartbeat_market(n_sym: int, bars: int) -> dict[str, NDArray[np.float64]]:
    rng = np.random.default_rng(77)
    rows = {f"S{i:02d}USDT": trend_row(rng.normal(0.0, 0.004), 100 + i, bars) for i in range(n_sym)}
    rows["LATEUSDT"] = trend_row(0.006, 3, bars)
    rows["LATEUSDT"][: bars // 2] = np.nan  # listed half way through
    return rows


async def run_heartbeats(config: ScannerConfig, gap_at: int | None = None) -> tuple[
    list[tuple[str, ...]], list[NDArray[np.float64]], list[NDArray[np.float64]], Scanner
]:  # fmt: skip
    """Feed the market bar by bar (every symbol each time, except one symbol that misses the
    bar ``gap_at`` and gets two the next time), scanning after each heartbeat."""
    rows = heartbeat_market(12, WINDOW)
    clock = ManualClock()
    bus = EventBus(clock=clock)
    seen = Seen(bus)
    state = MarketState(list(rows), capacity=WINDOW)
    scanner = Scanner(bus=bus, clock=clock, state=state, config=config)
    selected: list[tuple[str, ...]] = []
    scores: list[NDArray[np.float64]] = []
    indicator_values: list[NDArray[np.float64]] = []
    held: list[Bar] = []
    for t in range(WINDOW):
        ts = T0_MS + t * BAR_MS
        for symbol, row in rows.items():
            if np.isnan(row[t]):
                continue
            bar = as_bars(row[t : t + 1], ts)
            if symbol == "S01USDT" and t == gap_at:
                held = bar
                continue
            state.append(symbol, held + bar if symbol == "S01USDT" else bar)
            if symbol == "S01USDT":
                held = []
        clock.advance(60)
        result = await scanner.scan()
        selected.append(tuple(c.symbol for c in result.selected))
        scores.append(result.scores)
        assert result.indicators is not None
        indicator_values.append(result.indicators)
    assert len(seen.scans()) == WINDOW
    return selected, scores, indicator_values, scanner


async def test_heartbeat_scans_update_incrementally_and_signal_as_the_full_path() -> None:
    config = ScannerConfig(top_n=3, min_abs_score=0.3, window=WINDOW)
    inc_selected, inc_scores, inc_values, inc_scanner = await run_heartbeats(config)
    full_config = msgspec.structs.replace(config, incremental=False)
    full_selected, full_scores, full_values, full_scanner = await run_heartbeats(full_config)

    assert inc_scanner.full_recomputes == 1  # the first scan only
    assert inc_scanner.incremental_updates == WINDOW - 1
    assert full_scanner.incremental_updates == 0 and full_scanner.full_recomputes == WINDOW
    assert inc_selected == full_selected
    for a, b in zip(inc_scores, full_scores, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(inc_selected)
    for t, (a, b) in enumerate(zip(inc_values, full_values, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"bar {t}")


async def test_a_missed_bar_falls_back_to_the_full_recomputation() -> None:
    config = ScannerConfig(top_n=3, min_abs_score=0.3, window=WINDOW)
    _, scores, values, scanner = await run_heartbeats(config, gap_at=150)
    _, full_scores, full_values, _ = await run_heartbeats(
        msgspec.structs.replace(config, incremental=False), gap_at=150
    )
    # Bar 150: S01 has no new bar (full pass); bar 151: it gets two (full pass again).
    assert scanner.full_recomputes == 3
    assert scanner.incremental_updates == WINDOW - 3
    for a, b in zip(scores, full_scores, strict=True):
        np.testing.assert_array_equal(a, b)
    for t, (a, b) in enumerate(zip(values, full_values, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"bar {t}")


async def test_rescan_without_a_new_bar_reuses_and_a_new_symbol_recomputes() -> None:
    clock = ManualClock()
    bus = EventBus(clock=clock)
    state = MarketState(["BTCUSDT", "ETHUSDT"], capacity=300)
    up, down = trend_row(0.005, 41), trend_row(-0.005, 42)
    state.append("BTCUSDT", as_bars(up, T0_MS))
    state.append("ETHUSDT", as_bars(down, T0_MS))
    scanner = Scanner(bus=bus, clock=clock, state=state, config=ScannerConfig(window=300))
    first = await scanner.scan()
    again = await scanner.scan()
    assert scanner.full_recomputes == 1 and scanner.incremental_updates == 0
    np.testing.assert_array_equal(first.scores, again.scores)
    state.add_symbols(["SOLUSDT"])
    await scanner.scan()
    assert scanner.full_recomputes == 2
    last_ts = T0_MS + (WINDOW - 1) * BAR_MS
    for symbol, row in (("BTCUSDT", up), ("ETHUSDT", down)):
        state.append(symbol, as_bars(row[-1:] * 1.001, last_ts + BAR_MS))
    result = await scanner.scan()  # SOLUSDT still has no bar: it may stay empty
    assert scanner.incremental_updates == 1
    cols = state.columns(300)
    expected = select(
        list(state.symbols), cols.close, cols.volume, ScannerConfig(window=300),
        high=cols.high, low=cols.low,
    )  # fmt: skip
    np.testing.assert_array_equal(result.scores, expected.scores)
    assert result.indicators is not None and expected.indicators is not None
    np.testing.assert_array_equal(result.indicators, expected.indicators)
    assert scanner.metrics()["incremental_updates"] == 1


def test_decorrelated_ranking_matches_a_brute_force_walk() -> None:
    """Families of near-copies: the walk must skip many correlated candidates (beyond the
    first 4 x top_n it ranks) and still keep what a full sort and walk would."""
    import math

    rng = np.random.default_rng(5)
    rows: dict[str, NDArray[np.float64]] = {}
    for f in range(6):
        base = trend_row(rng.normal(0.0, 0.004), 500 + f)
        for k in range(25):  # 25 near-copies per family, slightly different drifts
            tilt = np.exp(np.cumsum(np.full(WINDOW, rng.normal(0.0, 0.0004))))
            noise = np.exp(rng.normal(0.0, 0.0005, WINDOW))
            rows[f"F{f}K{k:02d}USDT"] = base * tilt * noise
    symbols, close = market(rows)
    config = ScannerConfig(top_n=5, min_abs_score=0.0, max_correlation=0.8)
    result = select(symbols, close, volume_like(close), config)

    scores = result.scores
    ranked = sorted((-abs(float(scores[i])), symbols[i], i) for i in range(len(symbols)))
    returns = np.diff(np.log(close[:, -51:]), axis=1)
    kept: list[int] = []
    correlated = 0
    for _, _, i in ranked:
        if len(kept) == config.top_n:
            break
        too_close = False
        for j in kept:
            a = returns[i] - returns[i].mean()
            b = returns[j] - returns[j].mean()
            if abs(a @ b) / math.sqrt((a @ a) * (b @ b)) > config.max_correlation:
                too_close = True
                break
        correlated += too_close
        if not too_close:
            kept.append(i)
    assert correlated > 4 * config.top_n  # the premise: the first prefix is not enough
    assert [c.symbol for c in result.selected] == [symbols[i] for i in kept]
    assert result.dropped[CORRELATED] == correlated
    assert result.dropped[OUTSIDE_TOP_N] == len(symbols) - correlated - config.top_n
