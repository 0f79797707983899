"""History for a backtest: candle files (or any arrays) aligned on one bar axis.

Files are read with the replay source's reader (``timestamp,open,high,low,close,volume``,
plain or gzip CSV, resampled to ``timeframe``), relative to ``QT_DATA_DIR`` unless absolute.
Every symbol's bars are placed on the union of all bar open times; a symbol without a bar at a
time (not listed yet, a gap) has ``have`` False there and is not fed. Bars with bad values are
fed as they are, so the trading core's validation rejects and counts them as in the daemon; a
repeated or out-of-order timestamp cannot be placed on the axis and is counted here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from quantumtrade.data.datadir import data_dir
from quantumtrade.data.replay_source import candle_files, load_series, parse_timeframe


@dataclass(frozen=True, slots=True)
class Candles:
    """(bars, symbols, 5) open, high, low, close, volume on the bar axis ``ts_ms``."""

    symbols: tuple[str, ...]
    ts_ms: NDArray[np.int64]
    """Bar open times, ascending (bars,)."""
    prices: NDArray[np.float64]
    """(bars, symbols, 5): a bar's row for every symbol is contiguous, as a batch wants it."""
    have: NDArray[np.bool_]
    """(bars, symbols): the symbol has a bar at that time."""
    bar_ms: int
    sources: tuple[str, ...] = ()
    """The files or generator the bars came from (for the report)."""
    load_rejects: Counter[str] = field(default_factory=Counter)
    """Rows that could not be placed on the axis, by reason."""

    @property
    def bars(self) -> int:
        return int(self.ts_ms.shape[0])

    def column(self, field_index: int) -> NDArray[np.float64]:
        """(symbols, bars) of one field: 0 open, 1 high, 2 low, 3 close, 4 volume."""
        return np.ascontiguousarray(self.prices[:, :, field_index].T)

    def window(self, start: int, stop: int) -> Candles:
        """Bars ``start:stop`` (views)."""
        return Candles(
            symbols=self.symbols,
            ts_ms=self.ts_ms[start:stop],
            prices=self.prices[start:stop],
            have=self.have[start:stop],
            bar_ms=self.bar_ms,
            sources=self.sources,
            load_rejects=self.load_rejects,
        )

    def index_at(self, ts_ms: int) -> int:
        """The first bar opening at or after ``ts_ms``."""
        return int(np.searchsorted(self.ts_ms, ts_ms, side="left"))


def from_arrays(
    symbols: Sequence[str],
    ts_ms: NDArray[np.int64],
    prices: NDArray[np.float64],
    bar_ms: int,
    *,
    sources: Sequence[str] = (),
) -> Candles:
    """Candles from (bars, symbols, 5) prices where every symbol has every bar."""
    if prices.shape != (ts_ms.shape[0], len(symbols), 5):
        raise ValueError(
            f"prices must be ({ts_ms.shape[0]}, {len(symbols)}, 5), not {prices.shape}"
        )
    return Candles(
        symbols=tuple(symbols),
        ts_ms=np.ascontiguousarray(ts_ms, dtype=np.int64),
        prices=np.ascontiguousarray(prices, dtype=np.float64),
        have=np.ones((ts_ms.shape[0], len(symbols)), dtype=bool),
        bar_ms=bar_ms,
        sources=tuple(sources),
    )


def resolve(path: str) -> Path:
    """An absolute path as it is; a relative one under ``QT_DATA_DIR`` if it exists there,
    else relative to the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    under = data_dir() / p
    return under if under.exists() else p


def load_candles(
    paths: Sequence[str],
    *,
    symbols: Sequence[str] | None = None,
    timeframe: str = "",
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> Candles:
    """Read candle folders or files into one ``Candles`` (``[start_ms, end_ms)`` by open time).

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for an unreadable file,
    an unknown symbol or bars of different timeframes."""
    files: dict[str, Path] = {}
    for path in paths:
        for symbol, file in candle_files(resolve(path)).items():
            if symbol in files:
                raise ValueError(f"two files for {symbol}: {files[symbol]} and {file}")
            files[symbol] = file
    if symbols:
        unknown = [s for s in symbols if s not in files]
        if unknown:
            raise ValueError(f"no candle file for {', '.join(unknown)} in {', '.join(paths)}")
        files = {s: files[s] for s in symbols}
    target = parse_timeframe(timeframe) if timeframe else None
    series = [load_series(symbol, file, target) for symbol, file in files.items()]
    frames = {s.bar_ms for s in series}
    if len(frames) > 1:
        raise ValueError(
            "the files have different timeframes; pass --timeframe to resample them to one"
        )
    bar_ms = frames.pop()
    rejects: Counter[str] = Counter()
    kept: list[tuple[NDArray[np.int64], NDArray[np.float64]]] = []
    for s in series:
        ts = s.ts_ms
        ok = np.ones(ts.shape[0], dtype=bool)
        if ts.size > 1:
            # A bar not newer than the newest before it cannot go on the axis.
            behind = np.concatenate(([False], ts[1:] <= np.maximum.accumulate(ts)[:-1]))
            rejects["duplicate_or_out_of_order"] += int(np.count_nonzero(behind))
            ok &= ~behind
        if start_ms is not None:
            ok &= ts >= start_ms
        if end_ms is not None:
            ok &= ts < end_ms
        cols = np.stack((s.open, s.high, s.low, s.close, s.volume), axis=1)
        kept.append((ts[ok], cols[ok]))
    axis = np.unique(np.concatenate([ts for ts, _ in kept])) if kept else np.zeros(0, np.int64)
    prices = np.full((axis.shape[0], len(series), 5), np.nan)
    have = np.zeros((axis.shape[0], len(series)), dtype=bool)
    for j, (ts, cols) in enumerate(kept):
        at = np.searchsorted(axis, ts)
        prices[at, j] = cols
        have[at, j] = True
    return Candles(
        symbols=tuple(s.symbol for s in series),
        ts_ms=axis.astype(np.int64),
        prices=prices,
        have=have,
        bar_ms=bar_ms,
        sources=tuple(str(f) for f in files.values()),
        load_rejects=rejects,
    )
