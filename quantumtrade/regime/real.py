"""How far apart the regime labels put, on real candles, the property each label claims.

There is no true label for a real market, so each label is scored on what it says about the
bars: TRENDING bars should move more efficiently than RANGING ones, VOLATILE bars should be
more volatile than the rest, and a BREAKOUT should be followed by wider bars and more volume
than before it. Each separation is a ratio of medians (or a median of per-event ratios), with
a goal stated before the figures were measured (``GOALS``).

``quantumtrade regime detect`` reads and labels a file with ``read_labelled`` and
``write_labels``, and the separations label every file the same way (``label_file``): rows
the daemon's validation rejects are dropped and counted, the rest labelled by
``engine.classify``. Labels are causal (bar t's label uses bars up to t); trailing measures
end at the labelled bar, forward measures use the bars after it, for scoring only.
"""

from __future__ import annotations

import csv
import errno
import gzip
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import msgspec
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from quantumtrade.data.replay_source import SUFFIXES, candle_files, read_candles
from quantumtrade.data.source import BarBatch
from quantumtrade.data.validation import NO_BAR, OK, REASONS, validate_batch
from quantumtrade.events import REGIME_ORDER, Regime
from quantumtrade.regime.engine import classify
from quantumtrade.regime.model import RegimeConfig

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

EFFICIENCY_BARS = 48
"""Bars of the efficiency ratio |close_t - close_{t-n}| / sum |Δclose| (trailing and forward)."""
VOLATILITY_BARS = 24
"""Bars of realised volatility (stdev of log returns; trailing and forward)."""
BREAKOUT_AFTER = 12
"""Bars after a BREAKOUT onset whose range and volume are compared..."""
BREAKOUT_BEFORE = 48
"""...with the mean of these bars before it."""


class SeparationGoal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    what: str
    goal: float
    """The ratio must be at least this."""
    why: str


# Stated before any figure on real candles was computed (committed first), and kept so.
GOALS: tuple[SeparationGoal, ...] = (
    SeparationGoal(
        name="efficiency_trailing",
        what="median trailing 48-bar efficiency ratio, TRENDING / RANGING",
        goal=1.5,
        why="a label that says 'trend' must describe a market moving in one direction now; "
        "over 48 bars a random walk's efficiency is ~0.1, so half as much again is the least "
        "a reader would call a visible difference",
    ),
    SeparationGoal(
        name="efficiency_forward",
        what="median forward 48-bar efficiency ratio, TRENDING / RANGING",
        goal=1.1,
        why="trends on real markets persist only weakly, so the forward goal is lower; a label "
        "that tells nothing about the next 48 bars gives 1.0",
    ),
    SeparationGoal(
        name="volatility_trailing",
        what="median trailing 24-bar realised volatility, VOLATILE / the other labels",
        goal=1.5,
        why="VOLATILE must describe bars clearly more volatile than the rest now",
    ),
    SeparationGoal(
        name="volatility_forward",
        what="median forward 24-bar realised volatility, VOLATILE / the other labels",
        goal=1.2,
        why="volatility clusters, so it should persist over the next day of hourly bars, "
        "weaker than what the label saw",
    ),
    SeparationGoal(
        name="breakout_range",
        what="median over BREAKOUT onsets of mean (high-low)/close over the 12 bars after / "
        "the 48 bars before",
        goal=1.3,
        why="a breakout is an expansion out of a range: the bars after it must be wider",
    ),
    SeparationGoal(
        name="breakout_volume",
        what="median over BREAKOUT onsets of mean volume over the 12 bars after / the 48 "
        "bars before",
        goal=1.2,
        why="a break that volume does not follow is the usual false breakout",
    ),
)


# --- bars: read, screened, labelled ---------------------------------------------------------


def screen_bars(ts_ms: I64, prices: F64) -> tuple[NDArray[np.bool_], Counter[str]]:
    """Which rows of one symbol's (n, 5) open/high/low/close/volume bars the daemon's
    validation accepts (``validate_batch``: the one place a bad bar is defined), and the
    rejected rows counted by reason. A rejected row does not move the timestamp mark."""
    n = int(ts_ms.shape[0])
    if n == 0:
        return np.zeros(0, dtype=bool), Counter()
    batch = BarBatch(
        symbols=("",),
        ts_ms=np.ascontiguousarray(ts_ms, dtype=np.int64),
        prices=np.ascontiguousarray(prices, dtype=np.float64),
        offsets=np.array([0, n], dtype=np.int64),
    )
    codes = validate_batch(batch, np.array([NO_BAR], dtype=np.int64))
    ok: NDArray[np.bool_] = codes == OK
    rejects: Counter[str] = Counter(REASONS[int(c) - 1] for c in codes[~ok].tolist())
    return ok, rejects


@dataclass(frozen=True, slots=True)
class LabelledBars:
    """One file's accepted bars and their labels (``REGIME_ORDER`` codes, -1 in warm-up)."""

    file: Path
    ts_ms: I64
    high: F64
    low: F64
    close: F64
    volume: F64
    labels: NDArray[np.int8]
    confidence: NDArray[np.float32]
    rejects: Counter[str]

    @property
    def read(self) -> int:
        """Rows read from the file, rejected ones included."""
        return int(self.close.shape[0]) + sum(self.rejects.values())


def label_file(file: Path, config: RegimeConfig | None = None) -> LabelledBars:
    """Read a candle file (the replay source's reader), drop the rows validation rejects, and
    label the rest with ``classify``, as ``regime detect`` does.

    Raises ``ValueError`` naming the file for one that cannot be read (truncated gzip, a row
    that is not numbers), and ``FileNotFoundError`` for a missing one.
    """
    ts, prices = read_candles(file)
    ok, rejects = screen_bars(ts, np.ascontiguousarray(prices.T))
    h, lo, c, v = (np.ascontiguousarray(col[ok]) for col in prices[1:])
    if c.size:
        result = classify(c[None, :], h[None, :], lo[None, :], v[None, :], config)
        labels, confidence = result.labels[0], result.confidence[0]
    else:
        labels, confidence = np.zeros(0, np.int8), np.zeros(0, np.float32)
    return LabelledBars(
        file=file,
        ts_ms=ts[ok],
        high=h,
        low=lo,
        close=c,
        volume=v,
        labels=labels,
        confidence=confidence,
        rejects=rejects,
    )


_CSV_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8", newline=""))
    return open(path, mode, encoding="utf-8", newline="")


class DetectSummary(msgspec.Struct, frozen=True):
    """What ``regime detect`` read and wrote."""

    read: int
    """Rows read from the input, rejected ones included."""
    rejected: dict[str, int]
    """Rows the daemon's validation rejects (not written), by reason."""
    labelled: int
    unlabelled: int
    """Rows written with an empty label: the detector's warm-up."""

    @property
    def written(self) -> int:
        return self.labelled + self.unlabelled

    def line(self, output: str | Path) -> str:
        """The one-line summary ``regime detect`` prints."""
        rejected = sum(self.rejected.values())
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
        return (
            f"{output}: {self.read} rows read, {rejected} rejected"
            + (f" ({why})" if rejected else "")
            + f"; {self.written} written: {self.labelled} labelled, {self.unlabelled} unlabelled"
            " (warm-up)"
        )


def _check_columns(path: Path) -> None:
    """A header lacking a needed column is named as such (the reader only says it differs)."""
    try:
        with _open_text(path, "r") as f:
            first = f.readline()
    except (OSError, EOFError, UnicodeDecodeError):
        return  # the reader reports an unreadable file, naming it
    header = [h.strip().lower() for h in first.split(",")]
    missing = [c for c in _CSV_COLUMNS if c not in header]
    if first.strip() and missing:
        raise ValueError(f"{path}: missing columns {missing}")


def read_labelled(input_path: str | Path, config: RegimeConfig | None = None) -> LabelledBars:
    """The accepted bars of a ``timestamp,open,high,low,close,volume`` CSV (plain or .gz),
    labelled as the daemon labels them.

    Rows are read with the replay source's reader and screened by the daemon's validation:
    NaN or infinite values, non-positive prices, inconsistent OHLC, negative volume, duplicate
    or out-of-order timestamps are rejected and counted by reason (``rejects``). Raises
    ``FileNotFoundError`` for a missing input and ``ValueError`` naming it for one that cannot
    be read (truncated gzip, a value that is not a number, missing columns).
    """
    src = Path(input_path)
    if not src.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(src))
    if not src.is_file():
        raise ValueError(f"{src}: not a file")
    _check_columns(src)
    return label_file(src, config)


def write_labels(bars: LabelledBars, output_path: str | Path) -> DetectSummary:
    """Write ``timestamp,regime,confidence`` (timestamp in ms) for every accepted bar, regime
    and confidence empty in warm-up; rejected rows are not written. Raises ``OSError`` when
    the output cannot be written."""
    labels = bars.labels.tolist()
    with _open_text(Path(output_path), "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("timestamp", "regime", "confidence"))
        for ts, code, c in zip(bars.ts_ms.tolist(), labels, bars.confidence.tolist(), strict=True):
            if code < 0:
                writer.writerow((ts, "", ""))
            else:
                writer.writerow((ts, REGIME_ORDER[code].value, f"{c:.4f}"))
    unlabelled = sum(1 for code in labels if code < 0)
    return DetectSummary(
        read=bars.read,
        rejected=dict(bars.rejects),
        labelled=len(labels) - unlabelled,
        unlabelled=unlabelled,
    )


# --- measures (pure functions of one symbol's bars) -------------------------------------------


def efficiency(close: F64, bars: int = EFFICIENCY_BARS) -> tuple[F64, F64]:
    """(trailing, forward) efficiency ratio at each bar: |close_t - close_{t-n}| over the sum
    of |Δclose| between them, and the same from t to t+n; NaN where the window does not fit
    or the price did not move."""
    n = close.shape[0]
    trailing = np.full(n, np.nan)
    forward = np.full(n, np.nan)
    if n > bars:
        path = np.concatenate(([0.0], np.cumsum(np.abs(np.diff(close)))))
        net = np.abs(close[bars:] - close[:-bars])
        moved = path[bars:] - path[:-bars]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(moved > 0.0, net / moved, np.nan)
        trailing[bars:] = ratio
        forward[:-bars] = ratio
    return trailing, forward


def realised_volatility(close: F64, bars: int = VOLATILITY_BARS) -> tuple[F64, F64]:
    """(trailing, forward) stdev of the ``bars`` log returns ending at t, and of the ``bars``
    after t; NaN where the window does not fit."""
    n = close.shape[0]
    trailing = np.full(n, np.nan)
    forward = np.full(n, np.nan)
    if n > bars:
        returns = np.diff(np.log(close))  # returns[k] ends at bar k + 1
        spread = sliding_window_view(returns, bars).std(axis=1)  # [j]: bars j+1 .. j+bars
        trailing[bars:] = spread
        forward[: n - bars] = spread
    return trailing, forward


def after_over_before(
    values: F64, after: int = BREAKOUT_AFTER, before: int = BREAKOUT_BEFORE
) -> F64:
    """At each bar t: the mean of ``values`` over the ``after`` bars after t over their mean
    over the ``before`` bars before t (t itself in neither); NaN where either does not fit or
    the earlier mean is not positive."""
    n = values.shape[0]
    out = np.full(n, np.nan)
    if n < before + after + 1:
        return out
    total = np.concatenate(([0.0], np.cumsum(values)))
    t = np.arange(before, n - after)
    later = (total[t + 1 + after] - total[t + 1]) / after
    earlier = (total[t] - total[t - before]) / before
    with np.errstate(invalid="ignore", divide="ignore"):
        out[t] = np.where(earlier > 0.0, later / earlier, np.nan)
    return out


def onsets(labels: NDArray[np.int8], code: int) -> NDArray[np.int64]:
    """Bars where the label becomes ``code`` from another published label."""
    lab = np.asarray(labels)
    start = (lab[1:] == code) & (lab[:-1] != code) & (lab[:-1] >= 0)
    return np.flatnonzero(start).astype(np.int64) + 1


# --- separations --------------------------------------------------------------------------


_TRENDING = REGIME_ORDER.index(Regime.TRENDING)
_RANGING = REGIME_ORDER.index(Regime.RANGING)
_VOLATILE = REGIME_ORDER.index(Regime.VOLATILE)
_BREAKOUT = REGIME_ORDER.index(Regime.BREAKOUT)


@dataclass(slots=True)
class _Pool:
    """Per-bar measures of many files, concatenated when summarised."""

    files: int = 0
    read: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    labels: list[NDArray[np.int8]] = field(default_factory=list)
    measures: dict[str, list[F64]] = field(default_factory=dict)
    breakout: dict[str, list[F64]] = field(default_factory=dict)

    def add(self, bars: LabelledBars) -> None:
        self.files += 1
        self.read += bars.read
        self.rejects.update(bars.rejects)
        self.add_measures(bars.labels, bars.close, bars.high, bars.low, bars.volume)

    def add_measures(
        self, labels: NDArray[np.int8], close: F64, high: F64, low: F64, volume: F64
    ) -> None:
        eff_t, eff_f = efficiency(close)
        # Volatility in units of the file's own median over its labelled bars, so symbols and
        # timeframes of different volatility pool into one comparison (VOLATILE against the
        # rest of the same symbol) rather than into one of symbols.
        vol_t, vol_f = (_per_own_median(v, labels) for v in realised_volatility(close))
        self.labels.append(np.asarray(labels, dtype=np.int8))
        for name, values in (
            ("efficiency_trailing", eff_t),
            ("efficiency_forward", eff_f),
            ("volatility_trailing", vol_t),
            ("volatility_forward", vol_f),
        ):
            self.measures.setdefault(name, []).append(values)
        at = onsets(labels, _BREAKOUT)
        labelled = np.flatnonzero(np.asarray(labels) >= 0)
        for name, values in (("range", (high - low) / close), ("volume", volume)):
            ratio = after_over_before(values)
            self.breakout.setdefault(f"breakout_{name}", []).append(ratio[at])
            self.breakout.setdefault(f"all_bars_{name}", []).append(ratio[labelled])

    def extend(self, other: _Pool) -> None:
        self.files += other.files
        self.read += other.read
        self.rejects.update(other.rejects)
        self.labels.extend(other.labels)
        for name, parts in other.measures.items():
            self.measures.setdefault(name, []).extend(parts)
        for name, parts in other.breakout.items():
            self.breakout.setdefault(name, []).extend(parts)


def _per_own_median(values: F64, labels: NDArray[np.int8]) -> F64:
    scale = _median(values[np.asarray(labels) >= 0])
    return values / scale if scale > 0.0 else np.full_like(values, np.nan)


def _median(values: F64) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0.0 and math.isfinite(a) else math.nan


class Separations(msgspec.Struct, frozen=True):
    """One dataset's (or the pool's) figures."""

    dataset: str
    files: int
    bars: int
    """Rows read, rejected ones included."""
    rejected: dict[str, int]
    labelled: int
    share: dict[str, float]
    """Per label: its share of the labelled bars."""
    medians: dict[str, dict[str, float]]
    """Per measure (efficiency_/volatility_ trailing/forward), its median per label."""
    breakout_onsets: int
    ratios: dict[str, float]
    """Per goal name (``GOALS``): the separation measured (NaN: not enough bars)."""
    all_bars: dict[str, float]
    """The breakout ratios measured at every labelled bar: what no label at all gives."""


def summarise(dataset: str, pool: _Pool) -> Separations:
    labels = np.concatenate(pool.labels) if pool.labels else np.zeros(0, np.int8)
    labelled = labels >= 0
    n_labelled = int(np.count_nonzero(labelled))
    share = {
        r.value: (float(np.count_nonzero(labels == k)) / n_labelled if n_labelled else 0.0)
        for k, r in enumerate(REGIME_ORDER)
    }
    medians: dict[str, dict[str, float]] = {}
    joined: dict[str, F64] = {}
    for name, parts in pool.measures.items():
        values = np.concatenate(parts)
        joined[name] = values
        medians[name] = {r.value: _median(values[labels == k]) for k, r in enumerate(REGIME_ORDER)}
    ratios: dict[str, float] = {}
    for side in ("trailing", "forward"):
        eff = medians.get(f"efficiency_{side}", {})
        ratios[f"efficiency_{side}"] = _ratio(
            eff.get(Regime.TRENDING.value, math.nan), eff.get(Regime.RANGING.value, math.nan)
        )
        vol = joined.get(f"volatility_{side}", np.zeros(0))
        rest = labelled & (labels != _VOLATILE)
        ratios[f"volatility_{side}"] = _ratio(
            _median(vol[labels == _VOLATILE]) if vol.size else math.nan,
            _median(vol[rest]) if vol.size else math.nan,
        )
    breakout = {name: np.concatenate(parts) for name, parts in pool.breakout.items()}
    for name in ("range", "volume"):
        ratios[f"breakout_{name}"] = _median(breakout.get(f"breakout_{name}", np.zeros(0)))
    return Separations(
        dataset=dataset,
        files=pool.files,
        bars=pool.read,
        rejected=dict(pool.rejects),
        labelled=n_labelled,
        share=share,
        medians=medians,
        breakout_onsets=int(breakout["breakout_range"].size) if breakout else 0,
        ratios=ratios,
        all_bars={
            name: _median(breakout.get(f"all_bars_{name}", np.zeros(0)))
            for name in ("range", "volume")
        },
    )


def separations(
    dataset: str, files: Iterable[Path], config: RegimeConfig | None = None
) -> tuple[Separations, _Pool]:
    """The figures of one set of candle files (and the pool, to merge into a total)."""
    pool = _Pool()
    for file in files:
        pool.add(label_file(file, config))
    return summarise(dataset, pool), pool


def separations_of(dataset: str, labelled: Iterable[LabelledBars]) -> Separations:
    """The figures of files already labelled (by ``label_file``, or with other labels)."""
    pool = _Pool()
    for bars in labelled:
        pool.add(bars)
    return summarise(dataset, pool)


class RealReport(msgspec.Struct, frozen=True):
    datasets: tuple[Separations, ...]
    pooled: Separations

    def missed(self) -> list[str]:
        """Names of the goals the pooled figures miss."""
        return [g.name for g in GOALS if not self.pooled.ratios.get(g.name, math.nan) >= g.goal]


def candle_sets(root: Path) -> dict[str, dict[str, Path]]:
    """Dataset name → (symbol → file) for every folder under ``root`` (``root`` itself
    included) that holds candle files; ``root/candles`` is used when it exists."""
    if (root / "candles").is_dir():
        root = root / "candles"
    if root.is_file():
        return {root.name: candle_files(root)}
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    found: dict[str, dict[str, Path]] = {}
    for folder in sorted(p for p in (root, *root.rglob("*")) if p.is_dir()):
        if any(f.is_file() and f.name.endswith(SUFFIXES) for f in folder.iterdir()):
            name = str(folder.relative_to(root)) if folder != root else root.name
            found[name] = candle_files(folder)
    if not found:
        raise FileNotFoundError(f"no *.csv or *.csv.gz candle files under {root}")
    return found


def measure(
    root: Path,
    config: RegimeConfig | None = None,
    *,
    symbols: Sequence[str] | None = None,
    only: Sequence[str] | None = None,
) -> RealReport:
    """Separations per dataset under ``root`` and pooled over all of them; ``only`` keeps the
    named datasets, ``symbols`` the named symbols of each."""
    total = _Pool()
    rows: list[Separations] = []
    for name, files in candle_sets(root).items():
        if only is not None and name not in only:
            continue
        chosen = [f for s, f in files.items() if symbols is None or s in symbols]
        if not chosen:
            continue
        row, pool = separations(name, chosen, config)
        rows.append(row)
        total.extend(pool)
    if not rows:
        raise FileNotFoundError(f"none of the asked datasets or symbols under {root}")
    return RealReport(datasets=tuple(rows), pooled=summarise("pooled", total))


# --- report -------------------------------------------------------------------------------


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def format_report(report: RealReport) -> list[str]:
    """The table ``regime evaluate --real`` prints, then each goal against the pooled figure."""
    head = (
        f"{'dataset':<24} {'files':>5} {'bars':>9} {'labelled':>9}  "
        f"{'TR/RA/VO/BO %':<17} {'eff T/R':>7} {'fwd':>5} {'vol V/rest':>10} {'fwd':>5} "
        f"{'BO':>5} {'range':>5} {'vol':>5}"
    )
    lines = [head]
    for s in (*report.datasets, report.pooled):
        shares = "/".join(f"{100 * s.share[r.value]:.0f}" for r in REGIME_ORDER)
        r = s.ratios
        lines.append(
            f"{s.dataset:<24} {s.files:>5} {s.bars:>9,} {s.labelled:>9,}  {shares:<17} "
            f"{_fmt(r['efficiency_trailing']):>7} {_fmt(r['efficiency_forward']):>5} "
            f"{_fmt(r['volatility_trailing']):>10} {_fmt(r['volatility_forward']):>5} "
            f"{s.breakout_onsets:>5} {_fmt(r['breakout_range']):>5} "
            f"{_fmt(r['breakout_volume']):>5}"
        )
    p = report.pooled
    rejected = sum(p.rejected.values())
    lines.append(
        f"rows rejected by validation: {rejected}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(p.rejected.items()))})" if rejected else "")
    )
    lines.append(
        "at every labelled bar (no label): next-12/prior-48 range "
        f"{_fmt(p.all_bars['range'])}, volume {_fmt(p.all_bars['volume'])}"
    )
    for g in GOALS:
        value = p.ratios.get(g.name, math.nan)
        verdict = "met" if value >= g.goal else "MISSED"
        lines.append(f"{g.name:<20} {_fmt(value, 3):>6}  (goal >= {g.goal}: {verdict})  {g.what}")
    return lines
