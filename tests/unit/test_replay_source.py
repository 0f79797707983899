"""ReplaySource on the real candle files: loading, resampling, since/until, speed, bad rows."""

from __future__ import annotations

import asyncio
import gzip
import math
import os
from pathlib import Path

import msgspec
import numpy as np
import pytest

from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data.datadir import data_dir, missing_data_reason, repo_root
from quantumtrade.data.market_state import MarketState
from quantumtrade.data.orchestrator import Orchestrator, OrchestratorConfig
from quantumtrade.data.replay_source import (
    ReplayConfig,
    ReplaySource,
    format_timeframe,
    load_series,
    parse_timeframe,
    read_candles,
    resample,
)
from quantumtrade.data.validation import (
    DUPLICATE_TIMESTAMP,
    HIGH_LOW_INCONSISTENT,
    NON_FINITE,
    NON_POSITIVE_PRICE,
    OUT_OF_ORDER,
    validate_bars,
)
from quantumtrade.events import Bar, DataRejected

HOUR = 3_600_000
HEADER = "timestamp,open,high,low,close,volume"
T0 = 1_609_459_200_000  # 2021-01-01 UTC: epoch numbers below 1e11 would read as seconds


def candles(folder: str) -> Path:
    """A folder of the shared candle data; skip without it (fail under CI=true)."""
    path = data_dir() / "candles" / folder
    reason = missing_data_reason(path)
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def source(path: Path | str, clock: ManualClock | None = None, **kw: object) -> ReplaySource:
    cfg = msgspec.convert({"path": str(path), **kw}, ReplayConfig)
    return ReplaySource(cfg, clock or ManualClock())


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    text = "\n".join([header, *rows]) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def hourly_rows(n: int, start_ms: int = T0, step_ms: int = HOUR) -> list[str]:
    return [
        f"{start_ms + k * step_ms},{100 + k},{102 + k},{99 + k},{101 + k},{10 + k}"
        for k in range(n)
    ]


# --- timeframes, config, data dir ---------------------------------------------------------


def test_parse_timeframe() -> None:
    expected = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": HOUR, "4h": 4 * HOUR}
    expected["1d"] = 24 * HOUR
    for text, ms in expected.items():
        assert parse_timeframe(text) == ms
        assert format_timeframe(ms) == text
    for garbage in ("", "h", "0m", "-1h", "1.5h", "1w", "1M", "5 m", "1hh", "m5"):
        with pytest.raises(ValueError, match="invalid timeframe"):
            parse_timeframe(garbage)


def test_config_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(msgspec.ValidationError, match="spede"):
        msgspec.convert({"path": "x", "spede": 1.0}, ReplayConfig)
    with pytest.raises(msgspec.ValidationError, match="invalid timeframe"):
        msgspec.convert({"timeframe": "1hour"}, ReplayConfig)
    with pytest.raises(ValueError, match="speed"):
        ReplayConfig(speed=-1.0)
    with pytest.raises(ValueError, match="speed"):
        ReplayConfig(speed=math.nan)
    with pytest.raises(ValueError, match="history_bars"):
        ReplayConfig(history_bars=0)
    with pytest.raises(ValueError, match="path is empty"):
        ReplaySource(ReplayConfig(), ManualClock())


def test_data_dir_follows_env_and_defaults_beside_the_repo(tmp_path: Path) -> None:
    assert data_dir({"QT_DATA_DIR": str(tmp_path)}) == tmp_path
    assert data_dir({}) == (repo_root() / ".." / "shared" / "data").resolve()
    assert (repo_root() / "quantumtrade" / "data" / "datadir.py").is_file()
    missing = missing_data_reason(tmp_path / "nope")
    assert missing is not None and "nope" in missing and "QT_DATA_DIR" in missing
    assert missing_data_reason(tmp_path) is not None  # empty directory
    (tmp_path / "x.csv").write_text(HEADER)
    assert missing_data_reason(tmp_path) is None


def test_relative_path_resolves_against_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    write_csv(tmp_path / "set" / "AAA.csv", hourly_rows(3))
    src = ReplaySource(ReplayConfig(path="set"), ManualClock(), data_root=tmp_path)
    assert src.symbols() == ["AAA"]
    with pytest.raises(FileNotFoundError, match="nothere"):
        ReplaySource(ReplayConfig(path="nothere"), ManualClock(), data_root=tmp_path)


# --- the real files -----------------------------------------------------------------------


@pytest.mark.data
async def test_btcusdt_1h_loads_with_known_count_times_and_prices() -> None:
    src = source(candles("binance-spot-1h-2021"))
    assert len(src.symbols()) == 38 and "BTCUSDT" in src.symbols()
    s = src.series("BTCUSDT")
    assert s.bar_ms == s.native_ms == HOUR
    assert len(s) == 5482
    assert s.ts_ms[0] == 1_606_780_800_000  # 2020-12-01 00:00 UTC
    assert s.ts_ms[-1] == 1_626_552_000_000  # 2021-07-17 20:00 UTC
    assert (s.open[0], s.high[0], s.low[0], s.close[0]) == (19695.87, 19720.0, 19479.8, 19565.47)
    assert float(s.low.min()) == 17572.33  # December 2020
    assert float(s.high.max()) == 64854.0  # the April 2021 top
    # 19 May 2021: the crash, from above 40k to about 30k in the day.
    may19 = (s.ts_ms >= 1_621_382_400_000) & (s.ts_ms < 1_621_468_800_000)
    assert 29_000 < float(s.low[may19].min()) < 31_000
    assert float(s.high[may19].max()) > 40_000
    # Lazy and cached: the same arrays come back, and a fetch uses them.
    assert src.series("BTCUSDT") is s
    bars = await src.fetch_bars("BTCUSDT", None, 0)
    assert len(bars) == 500 and bars[-1].ts_ms == s.ts_ms[-1]
    assert validate_bars(bars, None)[1] == []


@pytest.mark.data
def test_5m_resampled_to_1h_matches_the_1h_files() -> None:
    hourly = source(candles("binance-spot-1h-2021"))
    fine = source(candles("binance-spot-5m-2021"), timeframe="1h")
    assert len(fine.symbols()) == 6
    for symbol in fine.symbols():
        a, b = fine.series(symbol), hourly.series(symbol)
        assert a.native_ms == 300_000 and a.bar_ms == HOUR
        assert np.all(a.ts_ms % HOUR == 0) and np.all(np.diff(a.ts_ms) > 0)
        common, ia, ib = np.intersect1d(a.ts_ms, b.ts_ms, return_indices=True)
        assert len(common) == len(a) > 1_400  # two months of hours, all in the 1h file
        for field in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(getattr(a, field)[ia], getattr(b, field)[ib])
        # Volumes agree to rounding in almost every hour; Binance's 1h and 5m volumes differ
        # by a few percent in a handful of hours (measured: at most 8%, 3-4 hours a symbol).
        rel = np.abs(a.volume[ia] - b.volume[ib]) / b.volume[ib]
        assert np.mean(rel < 1e-6) > 0.99
        assert rel.max() < 0.10


@pytest.mark.data
def test_1m_perp_with_second_timestamps_resamples_to_1h() -> None:
    src = source(candles("btc-perp-1m-2022-01"), timeframe="1h")
    assert src.symbols() == ["BTCPERP"]
    ts, prices = read_candles(src.file("BTCPERP"))
    assert len(ts) == 45_031 and ts[0] == 1_640_991_660_000  # seconds in the file, ms here
    s = src.series("BTCPERP")
    assert s.native_ms == 60_000 and s.bar_ms == HOUR
    # The file starts at 23:01 and ends at 05:31: both partial hours are left out.
    assert s.ts_ms[0] == 1_640_995_200_000  # 2022-01-01 00:00
    assert s.ts_ms[-1] == 1_643_688_000_000  # 2022-02-01 04:00
    assert len(s) == 749 and np.all(np.diff(s.ts_ms) == HOUR)
    assert 32_000 < float(s.low.min()) < 34_000 and 47_000 < float(s.high.max()) < 48_500
    # Against a slow, obvious aggregation of the minutes of a few hours.
    for k in (0, 1, 300, 748):
        start = int(s.ts_ms[k])
        rows = (ts >= start) & (ts < start + HOUR)
        assert rows.sum() == 60
        o, h, lo, c, v = (col[rows] for col in prices)
        assert s.open[k] == o[0] and s.close[k] == c[-1]
        assert s.high[k] == max(h.tolist()) and s.low[k] == min(lo.tolist())
        assert s.volume[k] == pytest.approx(sum(v.tolist()), rel=1e-12)


@pytest.mark.data
async def test_since_and_until_semantics() -> None:
    src = source(candles("binance-spot-1h-2021"), history_bars=10)
    s = src.series("ETHUSDT")
    t = [int(x) for x in s.ts_ms[:20]]
    # since: bars opened strictly after it; at speed 0 every bar is available.
    after = await src.fetch_bars("ETHUSDT", t[4], 0)
    assert after[0].ts_ms == t[5] and len(after) == len(s) - 5
    between = await src.fetch_bars("ETHUSDT", t[4] + 1, 0)
    assert between[0].ts_ms == t[5]
    assert await src.fetch_bars("ETHUSDT", int(s.ts_ms[-1]), 0) == []
    assert (await src.fetch_bars("ETHUSDT", t[0] - HOUR, 0))[0].ts_ms == t[0]
    # until (data time): a bar is served once it has closed (open + 1h).
    assert [b.ts_ms for b in src.bars("ETHUSDT", t[2], t[6] + HOUR)] == t[3:7]
    assert [b.ts_ms for b in src.bars("ETHUSDT", t[2], t[6] + HOUR - 1)] == t[3:6]
    assert src.bars("ETHUSDT", None, t[0] + HOUR - 1) == []
    # Without since: the newest history_bars that have closed.
    assert [b.ts_ms for b in src.bars("ETHUSDT", None, t[14] + HOUR)] == t[5:15]
    first = src.bars("ETHUSDT", None, t[2] + HOUR)[0]
    assert first == Bar(t[0], s.open[0], s.high[0], s.low[0], s.close[0], s.volume[0])
    with pytest.raises(KeyError, match="NOPE"):
        await src.fetch_bars("NOPE", None, 0)


@pytest.mark.data
async def test_speed_maps_clock_time_to_data_time() -> None:
    clock = ManualClock()
    # One hour of data per clock second, starting where the files start.
    src = source(candles("binance-spot-1h-2021"), clock, speed=3600.0, history_bars=5)
    s = src.series("BTCUSDT")
    assert src.data_start_ms == int(s.ts_ms[0])

    def now() -> int:
        return clock.now_ns() // 1_000_000

    assert await src.fetch_bars("BTCUSDT", None, now()) == []  # nothing has closed yet
    clock.advance(1.0)
    bars = await src.fetch_bars("BTCUSDT", None, now())
    assert [b.ts_ms for b in bars] == [int(s.ts_ms[0])]
    clock.advance(9.5)  # 10.5 data hours: 10 bars closed, the newest 5 without since
    bars = await src.fetch_bars("BTCUSDT", None, now())
    assert [b.ts_ms for b in bars] == s.ts_ms[5:10].tolist()
    assert await src.fetch_bars("BTCUSDT", bars[-1].ts_ms, now()) == []
    clock.advance(2.0)
    newer = await src.fetch_bars("BTCUSDT", bars[-1].ts_ms, now())
    assert [b.ts_ms for b in newer] == s.ts_ms[10:12].tolist()
    # The synthetic book sits around the last served close.
    book = await src.fetch_order_book("BTCUSDT", depth=5)
    assert len(book.bids) == len(book.asks) == 5
    assert book.mid == pytest.approx(float(s.close[11]))
    assert book.best_bid < float(s.close[11]) < book.best_ask
    spread_bps = (book.best_ask - book.best_bid) / book.mid * 1e4
    assert 0.5 <= spread_bps <= 50.0
    assert all(a[0] < b[0] for a, b in zip(book.asks, book.asks[1:], strict=False))
    assert all(a[0] > b[0] for a, b in zip(book.bids, book.bids[1:], strict=False))
    assert all(q > 0 for _, q in book.bids + book.asks)
    # A later start: a warm-up history is closed from the first fetch.
    warm = source(
        candles("binance-spot-1h-2021"),
        ManualClock(),
        speed=60.0,
        history_bars=100,
        start_ms=int(s.ts_ms[200]),
    )
    assert len(await warm.fetch_bars("BTCUSDT", None, 1_700_000_000_000)) == 100


@pytest.mark.data
async def test_concurrent_first_fetches_agree() -> None:
    src = source(candles("binance-spot-5m-2021"), timeframe="15m")
    a, b, book = await asyncio.gather(
        src.fetch_bars("SOLUSDT", None, 0),
        src.fetch_bars("SOLUSDT", None, 0),
        src.fetch_order_book("SOLUSDT"),
    )
    assert a == b and len(a) == 500 and len(book.bids) == 20
    assert src.series("SOLUSDT").bar_ms == 900_000
    assert book.mid == pytest.approx(a[-1].close)


# --- malformed and bad rows ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (["0,1,2,0.5,1,10", "3600000,1,2,0.5,1"], r"bad\.csv:3: expected 6 columns, got 5"),
        (["0,1,2,0.5,1,10", "", "3600000,1,2,0.5,1,10,7"], r"bad\.csv:4: expected 6 columns"),
        (["0,1,2,0.5,1,10", "3600000,1,abc,0.5,1,10"], r"bad\.csv:3: high 'abc' is not a number"),
        (["0,1,2,0.5,1,10", "3600000,1,2,,1,10"], r"bad\.csv:3: low '' is not a number"),
        (["0,1,2,0.5,1,10", "x,1,2,0.5,1,10"], r"bad\.csv:3: timestamp 'x'"),
        (["0,1,2,0.5,1,10", "3600000.5,1,2,0.5,1,10"], r"bad\.csv:3: timestamp '3600000.5'"),
        (["2021-01-01T00:00:00Z,1,2,0.5,1,10", "yesterday,1,2,0.5,1,10"], r"bad\.csv:3"),
    ],
)
def test_malformed_rows_raise_naming_file_and_line(
    tmp_path: Path, rows: list[str], match: str
) -> None:
    file = write_csv(tmp_path / "bad.csv", rows)
    src = source(tmp_path)
    with pytest.raises(ValueError, match=match):
        src.series("bad")
    with pytest.raises(ValueError, match=match):
        asyncio.run(src.fetch_bars("bad", None, 0))
    assert file.exists()


def test_bad_header_and_empty_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "A.csv", hourly_rows(2), header="time,open,high,low,close,volume")
    with pytest.raises(ValueError, match=r"A\.csv:1: expected the header"):
        source(tmp_path).series("A")
    (tmp_path / "A.csv").write_text("")
    with pytest.raises(ValueError, match=r"A\.csv: empty file"):
        source(tmp_path).series("A")
    # A header-only file serves no bar: refused at start, not reported ok with zero bars.
    write_csv(tmp_path / "A.csv", [])
    with pytest.raises(ValueError, match=r"A\.csv: no bars after the header"):
        source(tmp_path, timeframe="1h")


def test_bad_prices_and_timestamps_load_as_they_are(tmp_path: Path) -> None:
    rows = [
        f"{T0},100,102,99,101,5",
        f"{T0 + HOUR},100,102,99,nan,5",  # NaN close
        f"{T0 + HOUR},101,103,100,102,5",  # duplicate timestamp
        f"{T0 + 2 * HOUR},0,102,99,101,5",  # zero price
        f"{T0 + 3 * HOUR},101,103,100,102,-1",  # negative volume
        f"{T0 + HOUR // 2},101,103,100,102,5",  # out of order
        f"{T0 + 4 * HOUR},101,99,100,102,5",  # high below low
        f"{T0 + 5 * HOUR},101,103,100,102,5",
    ]
    write_csv(tmp_path / "XYZ.csv.gz", rows)
    src = source(tmp_path)
    bars = src.bars("XYZ", None, math.inf)
    assert [b.ts_ms for b in bars] == [int(r.split(",")[0]) for r in rows]
    assert math.isnan(bars[1].close) and bars[3].open == 0.0 and bars[4].volume == -1.0
    accepted, rejected = validate_bars(bars, None)
    assert [b.ts_ms for b in accepted] == [T0, T0 + HOUR, T0 + 5 * HOUR]
    assert [reason for _, reason in rejected] == [
        NON_FINITE,
        NON_POSITIVE_PRICE,
        "negative_volume",
        OUT_OF_ORDER,
        HIGH_LOW_INCONSISTENT,
    ]
    # High water keeps since-searches sane on an unsorted file.
    since = T0 + 3 * HOUR
    assert [b.ts_ms for b in src.bars("XYZ", since, math.inf)] == [T0 + 4 * HOUR, T0 + 5 * HOUR]


def test_resampling_passes_each_bad_row_through_to_be_rejected_once(tmp_path: Path) -> None:
    step = 300_000
    good = hourly_rows(36, step_ms=step)  # three hours of 5m bars
    rows = list(good)
    rows[3] = f"{T0 + 3 * step},100,102,99,nan,5"  # bad values inside hour 0
    rows.insert(20, f"{T0 + 19 * step},1,2,0.5,1,1")  # duplicate inside hour 1
    rows.insert(30, f"{T0 + 2 * step},1,2,0.5,1,1")  # out of order (hour 0) inside hour 2
    write_csv(tmp_path / "AAA.csv", rows)
    s = source(tmp_path, timeframe="15m").series("AAA")
    bars = [
        Bar(*r)
        for r in zip(s.ts_ms.tolist(), s.open, s.high, s.low, s.close, s.volume, strict=True)
    ]
    accepted, rejected = validate_bars(bars, None)
    assert len(rejected) == 3
    assert sorted(r for _, r in rejected) == sorted([NON_FINITE, DUPLICATE_TIMESTAMP, OUT_OF_ORDER])
    assert [b.ts_ms for b in accepted] == [T0 + k * 900_000 for k in range(12)]
    # The good rows aggregate exactly as if the bad ones were not there.
    ts, prices = read_candles(tmp_path / "AAA.csv")
    clean_ts = np.array([int(r.split(",")[0]) for r in good], dtype=np.int64)
    clean = np.array([[float(x) for x in r.split(",")[1:]] for r in good]).T
    keep = np.ones(36, dtype=bool)
    keep[3] = False
    ref_ts, ref = resample(clean_ts[keep], np.ascontiguousarray(clean[:, keep]), step, 900_000)
    assert [b.ts_ms for b in accepted] == ref_ts.tolist()
    np.testing.assert_array_equal(
        np.array([(b.open, b.high, b.low, b.close, b.volume) for b in accepted]).T, ref
    )
    assert len(ts) == 38 and math.isnan(prices[3, 3])


def test_resample_drops_partial_first_and_last_buckets() -> None:
    step = 60_000
    ts = np.arange(5, 5 + 130, dtype=np.int64) * step  # 00:05 .. 02:14
    prices = np.vstack([np.full(130, 2.0), np.full(130, 3.0), np.ones(130), np.full(130, 2.0)])
    prices = np.vstack([prices, np.arange(130, dtype=np.float64)])
    out_ts, out = resample(ts, prices, step, HOUR)
    assert out_ts.tolist() == [HOUR]  # hour 0 started before the file, hour 2 is unfinished
    assert out[4, 0] == sum(range(55, 115))


def test_timestamp_formats_and_timeframe_detection(tmp_path: Path) -> None:
    ms = hourly_rows(4)
    seconds = [f"{int(r.split(',')[0]) // 1000},{r.split(',', 1)[1]}" for r in ms]
    iso = [
        f"{np.datetime64(int(r.split(',')[0]), 'ms').astype(str)}Z,{r.split(',', 1)[1]}" for r in ms
    ]
    write_csv(tmp_path / "MS.csv", ms)
    write_csv(tmp_path / "SEC.csv", seconds)
    write_csv(tmp_path / "ISO.csv", iso)
    src = source(tmp_path)
    expected = src.series("MS").ts_ms.tolist()
    assert expected[0] == 1_609_459_200_000
    assert src.series("SEC").ts_ms.tolist() == expected
    assert src.series("ISO").ts_ms.tolist() == expected
    assert src.series("SEC").bar_ms == HOUR
    write_csv(tmp_path / "ONE.csv", ms[:1])
    with pytest.raises(ValueError, match=r"ONE\.csv: cannot detect the timeframe"):
        source(tmp_path).series("ONE")
    with pytest.raises(ValueError, match=r"MS\.csv: cannot resample 1h bars to 90m"):
        load_series("MS", tmp_path / "MS.csv", 90 * 60_000)
    with pytest.raises(ValueError, match="cannot resample 1h bars to 1m"):
        load_series("MS", tmp_path / "MS.csv", 60_000)


def test_duplicate_symbol_files_are_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", hourly_rows(2))
    write_csv(tmp_path / "AAA.csv.gz", hourly_rows(2))
    with pytest.raises(ValueError, match="two files for AAA"):
        source(tmp_path)
    (tmp_path / "AAA.csv").unlink()
    one = source(tmp_path / "AAA.csv.gz")
    assert one.symbols() == ["AAA"] and len(one.series("AAA")) == 2


# --- driving the orchestrator -------------------------------------------------------------


async def run_rounds(
    src: ReplaySource, clock: ManualClock, symbols: list[str], rounds: int, seconds: float
) -> tuple[MarketState, Orchestrator, list[DataRejected]]:
    bus = EventBus(clock=clock)
    state = MarketState(symbols, capacity=1_000)
    orch = Orchestrator(
        bus=bus,
        clock=clock,
        state=state,
        sources={src.name: src},
        config=OrchestratorConfig(max_workers=2),
        breaker_config=BreakerConfig(),
    )
    seen: list[DataRejected] = []
    bus.subscribe(DataRejected, seen.append)
    async with asyncio.TaskGroup() as tg:
        bus.start(tg)
        orch.start(tg)
        for _ in range(rounds):
            clock.advance(seconds)
            orch.refresh_due()
            await orch.join()
        await orch.stop()
        await bus.stop()
    assert orch.metrics()["failures"] == 0
    return state, orch, seen


async def test_bad_rows_are_rejected_and_counted_by_the_orchestrator(tmp_path: Path) -> None:
    rows = hourly_rows(6)
    rows[2] = f"{T0 + 2 * HOUR},100,102,99,nan,5"
    rows.insert(4, rows[3])  # a duplicate
    write_csv(tmp_path / "AAA.csv", rows)
    clock = ManualClock()
    src = source(tmp_path, clock)
    state, orch, seen = await run_rounds(src, clock, ["AAA"], 1, 5.0)
    assert state.length("AAA") == 5
    assert orch.metrics()["rejects"] == {"non_finite": 1, "duplicate_timestamp": 1}
    assert sorted(e.reason for e in seen) == ["duplicate_timestamp", "non_finite"]


@pytest.mark.data
async def test_a_replay_drives_the_orchestrator() -> None:
    clock = ManualClock()
    folder = candles("binance-spot-1h-2021")
    src = source(folder, clock, speed=3600.0, history_bars=100)
    symbols = ["BTCUSDT", "ETHUSDT"]
    # Ten rounds, five data hours apart: fifty hourly bars each, in order, nothing rejected.
    state, orch, seen = await run_rounds(src, clock, symbols, 10, 5.0)
    assert seen == [] and orch.metrics()["bars_stored"] == 100
    for symbol in symbols:
        s = src.series(symbol)
        assert state.length(symbol) == 50
        latest = state.latest(symbol)
        assert latest is not None and latest.ts_ms == s.ts_ms[49]
        assert latest.close == s.close[49]
