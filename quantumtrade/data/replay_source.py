"""Recorded candles as a ``Source``: one CSV (or gzip CSV) file per symbol, optionally resampled.

Files hold ``timestamp,open,high,low,close,volume`` rows; ``timestamp`` is the bar's open time
in ms (seconds, µs and ISO-8601 UTC are converted). The symbol is the file name before its
first dot (``BTCUSDT.csv.gz`` serves BTCUSDT). A file is read on its first use, into numpy
arrays that every later fetch slices with a binary search.

Bad data is served, not fixed: rows with NaN or non-positive prices, inconsistent OHLC,
negative volume, or duplicate and out-of-order timestamps load as they are, so the
orchestrator's validation rejects and counts them. Only rows that cannot be read at all (wrong
column count, a value that is not a number) stop the load with a ``ValueError`` naming the
file and line.

Time: with ``speed == 0`` every bar of the file is available at once and ``until_ms`` is
ignored. With ``speed > 0`` the clock drives the replay: data time = ``start_ms`` (default: the
earliest first bar of all files) + (clock now - clock at construction) * speed, and a bar is
served once data time has passed its close. Bar timestamps are always the recorded (data) times.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.clock import Clock
from quantumtrade.data.datadir import data_dir
from quantumtrade.data.source import OrderBook, Ticker, tickers_from_books
from quantumtrade.events import Bar

HEADER: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz")
_UNIT_MS: dict[str, int] = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TIMEFRAME = re.compile(r"([1-9][0-9]*)([smhd])")
# Bars whose volume sets the synthetic book's spread and depth.
_BOOK_VOLUME_BARS = 24
_INT64_MIN = np.iinfo(np.int64).min

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def parse_timeframe(text: str) -> int:
    """Milliseconds in a timeframe such as ``1m``, ``5m``, ``15m``, ``1h``, ``4h``, ``1d``."""
    match = _TIMEFRAME.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid timeframe {text!r}: expected a positive number and a unit (s, m, h, d),"
            " e.g. '5m', '1h', '1d'"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def format_timeframe(ms: int) -> str:
    """The shortest spelling of ``ms`` (``3_600_000`` → ``1h``; ``1_500`` → ``1500ms``)."""
    for unit, size in sorted(_UNIT_MS.items(), key=lambda kv: -kv[1]):
        if ms > 0 and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


class ReplayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str = ""
    """A directory of ``*.csv``/``*.csv.gz`` candle files or one file; relative to the data dir."""
    timeframe: str = ""
    """Serve bars of this timeframe (resampled from finer files); empty: the files' own."""
    speed: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    """0: everything at once; > 0: data seconds per clock second."""
    history_bars: Annotated[int, msgspec.Meta(ge=1)] = 500
    """Bars returned by a fetch without ``since_ms``."""
    start_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Data time when the replay starts (speed > 0); 0: the earliest first bar of all files.
    Set it later to start with a warm-up history already closed."""

    def __post_init__(self) -> None:
        # Meta constraints only apply when decoding; direct construction is checked here.
        if not math.isfinite(self.speed) or self.speed < 0.0:
            raise ValueError(f"speed must be finite and >= 0, got {self.speed}")
        if self.history_bars < 1:
            raise ValueError(f"history_bars must be at least 1, got {self.history_bars}")
        if self.start_ms < 0:
            raise ValueError(f"start_ms must be >= 0, got {self.start_ms}")
        if self.timeframe:
            parse_timeframe(self.timeframe)


@dataclass(frozen=True, slots=True)
class CandleSeries:
    """One symbol's bars as served, in file order (bad rows included)."""

    symbol: str
    file: Path
    bar_ms: int
    """Timeframe of the served bars."""
    native_ms: int
    """Timeframe detected in the file (the most common spacing of its timestamps)."""
    ts_ms: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    high_water_ms: I64
    """Running maximum of ``ts_ms``: sorted even when the file is not, so it can be searched."""

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])


# --- reading files ------------------------------------------------------------------------


def symbol_of(file: Path) -> str:
    """``BTCUSDT.csv.gz`` → ``BTCUSDT``."""
    return file.name.split(".", 1)[0]


def candle_files(path: Path) -> dict[str, Path]:
    """Symbol → file for a directory of candle files (or one file)."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    else:
        raise FileNotFoundError(f"replay data not found: {path}")
    found: dict[str, Path] = {}
    for file in files:
        symbol = symbol_of(file)
        if not symbol:
            raise ValueError(f"{file}: cannot take a symbol from the file name")
        if symbol in found:
            raise ValueError(f"two files for {symbol}: {found[symbol]} and {file}")
        found[symbol] = file
    if not found:
        raise FileNotFoundError(f"no *.csv or *.csv.gz candle files in {path}")
    return found


def _read_lines(file: Path, limit: int | None = None) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines (the first ``limit`` of them)."""
    opener = gzip.open if file.name.endswith(".gz") else open
    out: list[tuple[int, str]] = []
    try:
        with opener(file, "rt", encoding="utf-8", newline="") as fh:
            if limit is None:
                lines = fh.read().splitlines()
                return [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
            for i, line in enumerate(fh, 1):
                if line.strip():
                    out.append((i, line.rstrip("\r\n")))
                    if len(out) >= limit:
                        break
    except UnicodeDecodeError:
        raise ValueError(f"{file}: not UTF-8 text (a binary file?), not a candle CSV") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{file}: cannot read: {exc}") from exc
    return out


def _check_header(file: Path, lines: list[tuple[int, str]]) -> None:
    if not lines:
        raise ValueError(f"{file}: empty file, expected the header {','.join(HEADER)!r}")
    number, header = lines[0]
    if tuple(f.strip().lower() for f in header.split(",")) != HEADER:
        raise ValueError(
            f"{file}:{number}: expected the header {','.join(HEADER)!r}, got {_preview(header)}"
        )


def _preview(line: str, limit: int = 60) -> str:
    """A line quoted for an error message: short, and never raw binary (control characters)."""
    if any(not ch.isprintable() for ch in line):
        return "binary data (not a candle CSV)"
    return repr(line if len(line) <= limit else line[:limit] + "…")


def resolve_path(path: str, data_root: Path | None = None) -> Path:
    """``[data.replay] path`` as a path: absolute, or relative to the data directory."""
    if not path:
        raise ValueError("replay path is empty: set it to a directory of candle files")
    p = Path(path).expanduser()
    return p if p.is_absolute() else (data_root if data_root is not None else data_dir()) / p


def checked_candle_files(path: Path) -> dict[str, Path]:
    """``candle_files``, each with its header and at least one bar (read: the first 2 lines).

    A file that cannot serve a bar (binary, wrong header, header only) is a ``ValueError``
    at start, once, rather than a failed fetch on every heartbeat.
    """
    files = candle_files(path)
    for file in files.values():
        lines = _read_lines(file, limit=2)
        _check_header(file, lines)
        if len(lines) < 2:
            raise ValueError(f"{file}: no bars after the header")
    return files


def _iso_clean(text: str) -> str:
    s = text.strip()
    # numpy warns on (and will refuse) zone suffixes; only UTC is accepted, so drop it.
    for suffix in ("Z", "z", "+00:00", "+0000"):
        if s.endswith(suffix):
            return s[: -len(suffix)]
    return s


def _scale_to_ms(values: I64) -> I64:
    """Epoch numbers in s, ms, µs or ns (judged by magnitude, per file) → ms."""
    peak = int(np.abs(values).max()) if values.size else 0
    if peak < 10**11:  # seconds until the year 5138; ms since 1973 are above
        return values * 1_000
    if peak < 10**14:
        return values
    if peak < 10**17:
        return values // 1_000
    return values // 1_000_000


def _parse_timestamps(file: Path, body: list[tuple[int, str]], col: NDArray[np.str_]) -> I64:
    first = col[0].strip() if col.size else ""
    iso = len(first) > 4 and ("-" in first[1:] or "T" in first or ":" in first)
    try:
        if iso:
            cleaned = np.array([_iso_clean(s) for s in col.tolist()])
            return cleaned.astype("datetime64[ms]").astype(np.int64)
        try:
            return _scale_to_ms(col.astype(np.int64))
        except (ValueError, OverflowError):
            as_float = col.astype(np.float64)
            if not np.isfinite(as_float).all() or (as_float != np.floor(as_float)).any():
                raise ValueError("not an integer") from None
            return _scale_to_ms(as_float.astype(np.int64))
    except (ValueError, OverflowError):
        pass
    # Find the first unreadable timestamp for the message (only on the error path).
    for (number, _), text in zip(body, col.tolist(), strict=True):
        try:
            if iso:
                np.datetime64(_iso_clean(text), "ms")
            else:
                value = float(text)
                if not math.isfinite(value) or value != math.floor(value):
                    raise ValueError(text)
        except ValueError:
            kind = "an ISO-8601 time" if iso else "an integer epoch time"
            raise ValueError(
                f"{file}:{number}: timestamp {text!r} is not {kind} like the first row's"
            ) from None
    raise ValueError(f"{file}: unreadable timestamps")


def read_candles(file: Path) -> tuple[I64, F64]:
    """(ts_ms, prices shaped (5, n): open, high, low, close, volume), rows exactly as in the file.

    Raises ValueError naming the file and line for a bad header, a wrong column count or a
    value that is not a number; NaN, inf, zero or negative values load as they are.
    """
    lines = _read_lines(file)
    _check_header(file, lines)
    body = lines[1:]
    rows = [line.split(",") for _, line in body]
    for (number, line), row in zip(body, rows, strict=True):
        if len(row) != len(HEADER):
            raise ValueError(
                f"{file}:{number}: expected {len(HEADER)} columns, got {len(row)}: {line!r}"
            )
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty((5, 0))
    table = np.array(rows, dtype=np.str_)
    try:
        prices = np.ascontiguousarray(table[:, 1:].T.astype(np.float64))
    except ValueError:
        for (number, _), row in zip(body, rows, strict=True):
            for name, text in zip(HEADER[1:], row[1:], strict=True):
                try:
                    float(text)
                except ValueError:
                    raise ValueError(f"{file}:{number}: {name} {text!r} is not a number") from None
        raise
    return _parse_timestamps(file, body, table[:, 0]), prices


def first_timestamp_ms(file: Path) -> int | None:
    """Open time of the file's first row (None: no rows), reading only the file's head."""
    lines = _read_lines(file, limit=2)
    _check_header(file, lines)
    if len(lines) < 2:
        return None
    number, line = lines[1]
    fields = line.split(",")
    if len(fields) != len(HEADER):
        raise ValueError(f"{file}:{number}: expected {len(HEADER)} columns, got {len(fields)}")
    return int(_parse_timestamps(file, lines[1:], np.array(fields[:1]))[0])


# --- timeframes and resampling ------------------------------------------------------------


def native_timeframe_ms(ts_ms: I64) -> int | None:
    """The most common positive spacing of the timestamps (None: fewer than two distinct)."""
    steps = np.diff(ts_ms)
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def value_faults(prices: F64) -> NDArray[np.bool_]:
    """Rows the orchestrator's validation rejects on their values (``bar_fault``), vectorised."""
    o, h, lo, c, v = prices
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(prices).all(axis=0)
        bad = (o <= 0.0) | (h <= 0.0) | (lo <= 0.0) | (c <= 0.0)
        bad |= (h < lo) | (h < o) | (h < c) | (lo > o) | (lo > c) | (v < 0.0)
    result: NDArray[np.bool_] = ~finite | bad
    return result


def resample(ts_ms: I64, prices: F64, native_ms: int, target_ms: int) -> tuple[I64, F64]:
    """Aggregate bars into ``target_ms`` buckets aligned to UTC (epoch multiples).

    Only rows validation would accept are aggregated (first open, max high, min low, last
    close, summed volume). Every other row passes through as its own bar, with its own values,
    stamped with its bucket's time and placed after the bucket it follows, so the orchestrator
    still rejects and counts each one. A bucket the file starts inside or ends inside (its
    last bar closes before the bucket does) is not emitted, nor are the bad rows placed in it.
    """
    n = ts_ms.shape[0]
    if n == 0:
        return ts_ms.copy(), prices.copy()
    value_bad = value_faults(prices)
    # Validation's mark only moves on accepted bars: the running max over value-good rows.
    marks = np.maximum.accumulate(np.where(value_bad, _INT64_MIN, ts_ms))
    before = np.concatenate(([_INT64_MIN], marks[:-1]))
    good = ~value_bad & (ts_ms > before)
    bucket = ts_ms // target_ms * target_ms

    good_idx = np.flatnonzero(good)
    if good_idx.size == 0:
        return np.empty(0, dtype=np.int64), np.empty((5, 0))
    gb = bucket[good_idx]
    run_starts = np.concatenate(([0], np.flatnonzero(np.diff(gb)) + 1))
    run_ends = np.concatenate((run_starts[1:], [good_idx.size]))
    first_rows, last_rows = good_idx[run_starts], good_idx[run_ends - 1]
    h, lo, v = prices[1, good_idx], prices[2, good_idx], prices[4, good_idx]
    agg_ts = gb[run_starts]
    agg = np.stack(
        (
            prices[0, first_rows],
            np.maximum.reduceat(h, run_starts),
            np.minimum.reduceat(lo, run_starts),
            prices[3, last_rows],
            np.add.reduceat(v, run_starts),
        )
    )
    groups = agg_ts.shape[0]
    keep_group = np.ones(groups, dtype=np.bool_)
    if ts_ms[first_rows[0]] != agg_ts[0]:
        keep_group[0] = False
    if ts_ms[last_rows[-1]] + native_ms < agg_ts[-1] + target_ms:
        keep_group[-1] = False

    # Each bad row follows the bucket of the last good row before it (-1: none yet).
    bad_idx = np.flatnonzero(~good)
    group_of_good = np.repeat(np.arange(groups), run_ends - run_starts)
    before_bad = np.searchsorted(good_idx, bad_idx) - 1
    owner = np.where(before_bad >= 0, group_of_good[np.maximum(before_bad, 0)], -1)
    keep_bad = np.where(owner >= 0, keep_group[np.maximum(owner, 0)], keep_group[0])
    bad_idx, owner = bad_idx[keep_bad], owner[keep_bad]

    # Order: each kept bucket, then the bad rows it owns (file order within them).
    order_key = np.concatenate((np.flatnonzero(keep_group) * 2, owner * 2 + 1))
    tie = np.concatenate((np.zeros(int(keep_group.sum()), dtype=np.int64), bad_idx))
    out_ts = np.concatenate((agg_ts[keep_group], bucket[bad_idx]))
    out_prices = np.concatenate((agg[:, keep_group], prices[:, bad_idx]), axis=1)
    order = np.lexsort((tie, order_key))
    return out_ts[order], np.ascontiguousarray(out_prices[:, order])


def load_series(symbol: str, file: Path, target_ms: int | None) -> CandleSeries:
    """Read ``file`` and resample it to ``target_ms`` (None: keep the file's timeframe)."""
    ts_ms, prices = read_candles(file)
    native = native_timeframe_ms(ts_ms)
    if native is None:
        if ts_ms.size:
            raise ValueError(
                f"{file}: cannot detect the timeframe from fewer than two distinct timestamps"
            )
        native = target_ms or 1
    bar_ms = native
    if target_ms is not None and target_ms != native:
        if target_ms < native or target_ms % native:
            raise ValueError(
                f"{file}: cannot resample {format_timeframe(native)} bars to"
                f" {format_timeframe(target_ms)} (need a whole multiple of the file's timeframe)"
            )
        ts_ms, prices = resample(ts_ms, prices, native, target_ms)
        bar_ms = target_ms
    o, h, lo, c, v = prices
    return CandleSeries(
        symbol=symbol,
        file=file,
        bar_ms=bar_ms,
        native_ms=native,
        ts_ms=ts_ms,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=v,
        high_water_ms=np.maximum.accumulate(ts_ms) if ts_ms.size else ts_ms,
    )


# --- the source ---------------------------------------------------------------------------


class ReplaySource:
    """A ``Source`` over recorded candle files, replayed at a clock-driven speed or all at once."""

    name = "replay"

    def __init__(
        self, config: ReplayConfig, clock: Clock, *, data_root: Path | None = None
    ) -> None:
        path = resolve_path(config.path, data_root)
        self.config = config
        self.clock = clock
        self.path = path
        self.target_ms = parse_timeframe(config.timeframe) if config.timeframe else None
        self._files = checked_candle_files(path)
        self._series: dict[str, CandleSeries] = {}
        self._loading: dict[str, asyncio.Future[CandleSeries]] = {}
        self._clock_start_ms = clock.now_ns() // 1_000_000
        self.data_start_ms = config.start_ms
        if config.speed > 0.0 and not config.start_ms:
            firsts = [first_timestamp_ms(f) for f in self._files.values()]
            known = [t for t in firsts if t is not None]
            self.data_start_ms = min(known) if known else 0

    def symbols(self) -> list[str]:
        return list(self._files)

    def file(self, symbol: str) -> Path:
        try:
            return self._files[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r} for source {self.name}") from None

    def series(self, symbol: str) -> CandleSeries:
        """The symbol's bars, read and cached on first use (blocking; fetches read in a thread)."""
        cached = self._series.get(symbol)
        if cached is None:
            cached = self._series[symbol] = load_series(symbol, self.file(symbol), self.target_ms)
        return cached

    async def _series_async(self, symbol: str) -> CandleSeries:
        cached = self._series.get(symbol)
        if cached is not None:
            return cached
        pending = self._loading.get(symbol)
        if pending is None:  # single flight: concurrent callers share one read
            file = self.file(symbol)
            pending = asyncio.get_running_loop().run_in_executor(
                None, load_series, symbol, file, self.target_ms
            )
            self._loading[symbol] = pending
        try:
            series = await asyncio.shield(pending)
        finally:
            if pending.done():
                self._loading.pop(symbol, None)
        self._series[symbol] = series
        return series

    def data_time_ms(self, clock_ms: int) -> float:
        """Data time matching clock time ``clock_ms`` (inf when speed is 0: all is available)."""
        if self.config.speed <= 0.0:
            return math.inf
        return self.data_start_ms + (clock_ms - self._clock_start_ms) * self.config.speed

    def bars(self, symbol: str, since_ms: int | None, data_until_ms: float) -> list[Bar]:
        """Bars closed by data time ``data_until_ms`` and opened after ``since_ms`` (None: the
        newest ``history_bars``), in file order."""
        s = self.series(symbol)
        if data_until_ms == math.inf:
            end = len(s)
        else:
            # Bars close at open + bar_ms; high water keeps the search valid on unsorted files.
            end = int(np.searchsorted(s.high_water_ms, data_until_ms - s.bar_ms, side="right"))
        if since_ms is None:
            begin = max(0, end - self.config.history_bars)
        else:
            begin = int(np.searchsorted(s.high_water_ms, since_ms, side="right"))
        if begin >= end:
            return []
        return [
            Bar(t, o, h, lo, c, v)
            for t, o, h, lo, c, v in zip(
                s.ts_ms[begin:end].tolist(),
                s.open[begin:end].tolist(),
                s.high[begin:end].tolist(),
                s.low[begin:end].tolist(),
                s.close[begin:end].tolist(),
                s.volume[begin:end].tolist(),
                strict=True,
            )
        ]

    async def fetch_bars(self, symbol: str, since_ms: int | None, until_ms: int) -> list[Bar]:
        """Closed bars opened after ``since_ms`` (None: the newest history_bars), oldest first.

        ``until_ms`` is clock time, mapped to data time by the replay speed (ignored at speed 0).
        """
        await self._series_async(symbol)
        return self.bars(symbol, since_ms, self.data_time_ms(until_ms))

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        """Top of each symbol's (synthetic) book around the last served close."""
        known = set(self.symbols())
        return await tickers_from_books(self, [s for s in symbols if s in known])

    async def fetch_order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        """A SYNTHETIC book (no depth was recorded) around the last served close.

        Spread and depth scale with the recent quote volume: about 10 bps at 100k USDT/s of
        volume, tighter for busier markets, clamped to [0.5, 50] bps; each level holds 2% of a
        bar's quote volume, growing 25% a level. Deterministic for a given data time.
        """
        s = await self._series_async(symbol)
        now_ms = self.clock.now_ns() // 1_000_000
        data_now = self.data_time_ms(now_ms)
        if data_now == math.inf:
            end = len(s)
        else:
            end = int(np.searchsorted(s.high_water_ms, data_now - s.bar_ms, side="right"))
        ts_ms = int(min(data_now, s.high_water_ms[-1] + s.bar_ms)) if len(s) else now_ms
        mid = self._last_price(s, end)
        if depth <= 0 or not math.isfinite(mid):
            return OrderBook(symbol=symbol, ts_ms=ts_ms, bids=(), asks=())
        window = slice(max(0, end - _BOOK_VOLUME_BARS), end)
        quote = s.close[window] * s.volume[window]
        quote = quote[np.isfinite(quote) & (quote >= 0.0)]
        quote_per_bar = float(quote.mean()) if quote.size else 0.0
        per_second = quote_per_bar * 1000.0 / s.bar_ms
        spread_bps = min(50.0, max(0.5, 10.0 / math.sqrt(max(per_second, 1e-9) / 1e5)))
        half = spread_bps / 2e4
        step = max(half, 0.5e-4)
        offsets = half + step * np.arange(depth)
        level_quote = max(quote_per_bar, 1.0) * 0.02 * (1.0 + 0.25 * np.arange(depth))
        bid_px = mid * np.exp(-offsets)  # stays positive however deep the book
        ask_px = 2.0 * mid - bid_px  # symmetric around the last close
        return OrderBook(
            symbol=symbol,
            ts_ms=ts_ms,
            bids=tuple(zip(bid_px.tolist(), (level_quote / bid_px).tolist(), strict=True)),
            asks=tuple(zip(ask_px.tolist(), (level_quote / ask_px).tolist(), strict=True)),
        )

    @staticmethod
    def _last_price(s: CandleSeries, end: int) -> float:
        """The newest usable close before row ``end`` (else the first usable open; NaN: none)."""
        for lo_row in (max(0, end - 64), 0):
            closes = s.close[lo_row:end]
            ok = np.flatnonzero(np.isfinite(closes) & (closes > 0.0))
            if ok.size:
                return float(closes[ok[-1]])
        opens = s.open
        ok = np.flatnonzero(np.isfinite(opens) & (opens > 0.0))
        return float(opens[ok[0]]) if ok.size else math.nan
