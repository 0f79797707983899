"""The anomaly detector on real candles with injected anomalies of known kinds.

For each data set, every symbol's series is run through ``AnomalyDetector`` (the daemon's
path: one ``BarsUpdated`` per bar time holding every symbol with a bar then) four times, each a
copy with one kind injected at seeded random bars, and once clean:

* spike: one bar's close moved by k x the recent volatility (std of the last 100 log returns,
  k uniform in [--spike-k]) with its high/low stretched to it; the next bar is untouched
  (the price comes back). Detected as kind ``spike``.
* gap: 1-5 bars dropped. Counted at the first bar after the hole; kind ``missing_bars``.
* frozen: 3-12 bars replaced by the previous close with zero range and zero volume; kind
  ``frozen``.
* volume: one bar's volume x m (m uniform in [--volume-m]); kind ``volume``.

A detection matches an injection of its kind on the same symbol when the episode starts at the
injected bar or at most ``--tolerance`` bars after it. Precision: matched detections / every
detection of that kind in the injected copies; recall: matched / injected. Injections are kept
off the crash days and ``--spacing`` bars apart. False alarms: detections per 1,000 bars of the
clean series after warm-up, outside the crash windows (the crash day and the day after, UTC).

Thresholds are chosen on one data set (``--tune-set`` with injections from ``--tune-seed``):
``--tune`` grid-searches them and prints the values (spike and volume: best F1 on their
injections; range and price gap, which nothing injects: the lowest threshold with at most
``--max-false-per-1000`` clean false alarms per 1,000 bars). The defaults of ``AnomalyConfig``
are what ``--tune`` printed; the report evaluates them on the other sets with ``--seed``.

    QT_DATA_DIR=/work/shared/data .venv/bin/python scripts/research/anomaly_eval.py
    QT_DATA_DIR=/work/shared/data .venv/bin/python scripts/research/anomaly_eval.py --tune
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import structlog
from numpy.typing import NDArray

from quantumtrade.anomaly.detector import AnomalyDetector
from quantumtrade.anomaly.model import AnomalyConfig
from quantumtrade.bus import EventBus
from quantumtrade.clock import ManualClock
from quantumtrade.data.datadir import data_dir
from quantumtrade.events import AnomalyDetected, BarBlock, BarsUpdated

DAY_MS = 86_400_000
CRASH_DAYS = {
    "bitstamp-1h-2018-2022": "2020-03-12",
    "binance-spot-1h-2021": "2021-05-19",
    "binance-spot-1h-2024": "2024-08-05",
}
INJECTED_AS = {"spike": "spike", "gap": "missing_bars", "frozen": "frozen", "volume": "volume"}
Series = dict[str, tuple[NDArray[np.int64], NDArray[np.float64]]]


def load(folder: Path) -> Series:
    out: Series = {}
    for path in sorted(folder.glob("*.csv.gz")):
        with gzip.open(path, "rt") as fh:
            a = np.loadtxt(fh, delimiter=",", skiprows=1, ndmin=2)
        out[path.name.removesuffix(".csv.gz")] = (a[:, 0].astype(np.int64), a[:, 1:6].copy())
    return out


def crash_window(name: str) -> tuple[int, int] | None:
    day = CRASH_DAYS.get(name)
    if day is None:
        return None
    start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
    return start, start + 2 * DAY_MS


# --- running the detector ---------------------------------------------------------------


def detect(series: Series, cfg: AnomalyConfig) -> list[AnomalyDetected]:
    """Every ``AnomalyDetected`` of the detector fed the series bar time by bar time."""
    return asyncio.run(_detect(series, cfg))


async def _detect(series: Series, cfg: AnomalyConfig) -> list[AnomalyDetected]:
    symbols = list(series)
    axis = np.unique(np.concatenate([ts for ts, _ in series.values()]))
    steps, n = axis.size, len(symbols)
    present = np.zeros((steps, n), dtype=np.bool_)
    prices = np.zeros((steps, n, 5))
    for j, s in enumerate(symbols):
        ts, px = series[s]
        at = np.searchsorted(axis, ts)
        present[at, j] = True
        prices[at, j] = px
    clock = ManualClock(int(axis[0]) * 1_000_000)
    bus = EventBus(clock=clock)
    seen: list[AnomalyDetected] = []
    bus.subscribe(AnomalyDetected, seen.append)
    detector = AnomalyDetector(bus=bus, clock=clock, config=cfg)
    names: dict[bytes, tuple[str, ...]] = {}
    for t in range(steps):
        mask = present[t]
        key = mask.tobytes()
        tup = names.get(key)
        if tup is None:
            tup = names[key] = tuple(s for s, m in zip(symbols, mask, strict=True) if m)
        m = len(tup)
        clock.set(int(axis[t]) * 1_000_000)
        block = BarBlock.of(np.full(m, axis[t], dtype=np.int64), prices[t, mask].T)
        event = BarsUpdated.of(clock.now_ns(), "eval", tup, np.arange(m + 1), block)
        detector.on_bars(event)
        await detector.publish()
    return seen


# --- injections -------------------------------------------------------------------------


@dataclass
class Injected:
    series: Series
    at: dict[str, list[int]] = field(default_factory=dict)
    """Per symbol: open times of the injected bars (a gap: the first bar after it)."""


def inject(
    clean: Series, kind: str, rng: np.random.Generator, args: argparse.Namespace, crash: Any
) -> Injected:
    out = Injected(series={})
    for symbol, (ts, px) in clean.items():
        ts, px = ts.copy(), px.copy()
        n = ts.size
        ok = np.zeros(n, dtype=np.bool_)
        ok[args.warmup_margin : n - 20] = True
        if crash is not None:
            ok &= (ts < crash[0] - DAY_MS) | (ts >= crash[1])
        picks: list[int] = []
        for i in rng.permutation(np.flatnonzero(ok)).tolist():
            if all(abs(i - p) >= args.spacing for p in picks):
                picks.append(i)
            if len(picks) >= max(1, round(args.per_1000_bars * n / 1000)):
                break
        picks.sort()
        keep = np.ones(n, dtype=np.bool_)
        at: list[int] = []
        for i in picks:
            if kind == "spike":
                r = np.diff(np.log(px[i - 101 : i, 3]))
                k = rng.uniform(*args.spike_k) * rng.choice([-1.0, 1.0])
                c = px[i - 1, 3] * np.exp(k * max(float(np.std(r)), 1e-4))
                px[i, 3] = c
                px[i, 1] = max(px[i, 1], c)
                px[i, 2] = min(px[i, 2], c)
                at.append(int(ts[i]))
            elif kind == "gap":
                g = int(rng.integers(1, 6))
                keep[i : i + g] = False
                at.append(int(ts[i + g]))
            elif kind == "frozen":
                f = int(rng.integers(3, 13))
                px[i : i + f, 0:4] = px[i - 1, 3]
                px[i : i + f, 4] = 0.0
                at.append(int(ts[i]))
            elif kind == "volume":
                px[i, 4] *= rng.uniform(*args.volume_m)
                at.append(int(ts[i]))
        out.series[symbol] = (ts[keep], px[keep])
        out.at[symbol] = at
    return out


def score(
    injected: Injected, found: list[AnomalyDetected], kind: str, tol_ms: int, crash: Any
) -> tuple[int, int, int]:
    """(matched, detections of the kind outside the crash window, injected)."""
    want = INJECTED_AS[kind]
    mine = [
        e
        for e in found
        if e.kind == want and (crash is None or not crash[0] <= e.since_ms < crash[1])
    ]
    matched = 0
    for symbol, ats in injected.at.items():
        times = sorted(e.since_ms for e in mine if e.symbol == symbol)
        used: set[int] = set()
        for a in ats:
            for i, t in enumerate(times):
                if i not in used and a <= t <= a + tol_ms:
                    used.add(i)
                    matched += 1
                    break
    return matched, len(mine), sum(len(v) for v in injected.at.values())


def false_alarms(
    clean: Series, found: list[AnomalyDetected], cfg: AnomalyConfig, crash: Any
) -> tuple[dict[str, int], int]:
    """(detections by kind, normal bars) on the clean series, outside the crash window."""
    bars = 0
    for ts, _ in clean.values():
        t = ts[cfg.warmup_bars :]
        bars += int(t.size if crash is None else np.count_nonzero((t < crash[0]) | (t >= crash[1])))
    by_kind: dict[str, int] = {}
    for e in found:
        if crash is None or not crash[0] <= e.since_ms < crash[1]:
            by_kind[e.kind] = by_kind.get(e.kind, 0) + 1
    return by_kind, bars


# --- report -----------------------------------------------------------------------------


def bar_ms(series: Series) -> int:
    ts = next(iter(series.values()))[0]
    return int(np.min(np.diff(ts)))


def evaluate(
    name: str, clean: Series, cfg: AnomalyConfig, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    crash = crash_window(name)
    tol_ms = args.tolerance * bar_ms(clean)
    rng = np.random.default_rng(seed)
    kinds: dict[str, Any] = {}
    for kind in INJECTED_AS:
        inj = inject(clean, kind, rng, args, crash)
        m, d, n = score(inj, detect(inj.series, cfg), kind, tol_ms, crash)
        kinds[kind] = {
            "injected": n,
            "detections": d,
            "matched": m,
            "precision": m / d if d else None,
            "recall": m / n if n else None,
        }
    found = detect(clean, cfg)
    by_kind, bars = false_alarms(clean, found, cfg, crash)
    total = sum(by_kind.values())
    crash_report: dict[str, Any] | None = None
    if crash is not None:
        day_end = crash[0] + DAY_MS
        on_day = sorted(
            (e for e in found if crash[0] <= e.since_ms < day_end), key=lambda e: e.since_ms
        )
        btc = [e for e in on_day if e.symbol.startswith("BTC")]
        first = btc[0] if btc else None
        crash_report = {
            "day": CRASH_DAYS[name],
            "btc_flagged": first is not None,
            "btc_first_bar": _utc(first.since_ms) if first else None,
            "btc_first_kind": first.kind if first else None,
            "btc_kinds": sorted({e.kind for e in btc}),
            "symbols_flagged": len({e.symbol for e in on_day}),
            "symbols": len(clean),
        }
    return {
        "data": name,
        "seed": seed,
        "symbols": len(clean),
        "kinds": kinds,
        "normal_bars": bars,
        "false_alarms": by_kind,
        "false_per_1000": 1000.0 * total / bars if bars else None,
        "false_per_1000_by_kind": {k: 1000.0 * v / bars for k, v in sorted(by_kind.items())},
        "crash": crash_report,
    }


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}%"


def print_table(results: Sequence[dict[str, Any]], roles: dict[str, str]) -> None:
    print(
        f"{'data set':24} {'role':14} {'kind':7} {'injected':>8} {'detected':>8} "
        f"{'precision':>9} {'recall':>7}"
    )
    for r in results:
        for kind, k in r["kinds"].items():
            print(
                f"{r['data']:24} {roles[r['data']]:14} {kind:7} {k['injected']:8d} "
                f"{k['detections']:8d} {_pct(k['precision']):>9} {_pct(k['recall']):>7}"
            )
    print()
    print(f"{'data set':24} {'normal bars':>11} {'false/1000':>10}  by kind")
    for r in results:
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in r["false_per_1000_by_kind"].items())
        print(f"{r['data']:24} {r['normal_bars']:11d} {r['false_per_1000']:10.2f}  {kinds}")
    print()
    for r in results:
        c = r["crash"]
        if c is None:
            continue
        first = (
            f"first {c['btc_first_bar']} UTC as {c['btc_first_kind']}"
            if c["btc_flagged"]
            else "not flagged"
        )
        print(
            f"crash {c['day']} ({r['data']}): BTC {first}; BTC kinds that day {c['btc_kinds']}; "
            f"{c['symbols_flagged']}/{c['symbols']} symbols flagged that day"
        )


# --- tuning -----------------------------------------------------------------------------

GRID = {
    "spike_z": (6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 14.0, 16.0),
    "volume_z": (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0),
    "range_z": (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0),
    "price_gap_z": (6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 14.0, 16.0),
}


def tune(name: str, clean: Series, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Each threshold acts on its own kind only, so one run per grid column tunes them all."""
    crash = crash_window(name)
    tol_ms = args.tolerance * bar_ms(clean)
    rng = np.random.default_rng(seed)
    copies = {k: inject(clean, k, rng, args, crash) for k in ("spike", "volume")}
    best: dict[str, tuple[float, float]] = {}
    chosen: dict[str, float] = {}
    for col in range(len(GRID["spike_z"])):
        values = {key: grid[col] for key, grid in GRID.items()}
        cfg = msgspec.structs.replace(AnomalyConfig(), **values)
        line = []
        for kind, key in (("spike", "spike_z"), ("volume", "volume_z")):
            m, d, n = score(copies[kind], detect(copies[kind].series, cfg), kind, tol_ms, crash)
            f1 = 2 * m / (d + n) if d + n else 0.0
            line.append(f"{key}={values[key]:g} P={m}/{d} R={m}/{n} F1={f1:.3f}")
            if f1 > best.get(key, (-1.0, 0.0))[0]:
                best[key] = (f1, values[key])
        by_kind, bars = false_alarms(clean, detect(clean, cfg), cfg, crash)
        for kind, key in (("range", "range_z"), ("price_gap", "price_gap_z")):
            rate = 1000.0 * by_kind.get(kind, 0) / bars
            line.append(f"{key}={values[key]:g} false/1000={rate:.2f}")
            if key not in chosen and rate <= args.max_false_per_1000:
                chosen[key] = values[key]
        print("  " + "; ".join(line))
    chosen.update({key: v for key, (_, v) in best.items()})
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--tune-set", default="binance-spot-1h-2021")
    p.add_argument("--tune-seed", type=int, default=1)
    p.add_argument(
        "--eval-sets", nargs="+", default=["binance-spot-1h-2024", "bitstamp-1h-2018-2022"]
    )
    p.add_argument("--seed", type=int, default=2)
    p.add_argument(
        "--per-1000-bars", type=float, default=1.5, help="injections per 1,000 bars and kind"
    )
    p.add_argument("--spacing", type=int, default=200)
    p.add_argument("--warmup-margin", type=int, default=300)
    p.add_argument("--tolerance", type=int, default=3, help="bars after the injected bar")
    p.add_argument("--spike-k", type=float, nargs=2, default=(8.0, 25.0))
    p.add_argument("--volume-m", type=float, nargs=2, default=(5.0, 20.0))
    p.add_argument("--max-false-per-1000", type=float, default=0.5)
    p.add_argument("--tune", action="store_true", help="grid-search the thresholds on --tune-set")
    args = p.parse_args(argv)
    # The detector logs every detection as a warning; the table says it all here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    root = (args.data_dir or data_dir()) / "candles"
    print(
        "$ " + shlex.join(["python", "scripts/research/anomaly_eval.py", *(argv or sys.argv[1:])])
    )
    print(f"data: {root}")
    if args.tune:
        print(f"tuning on {args.tune_set}, injections seed {args.tune_seed}")
        chosen = tune(args.tune_set, load(root / args.tune_set), args.tune_seed, args)
        print(json.dumps({"tuned_on": args.tune_set, "seed": args.tune_seed, "thresholds": chosen}))
        return 0
    cfg = AnomalyConfig()
    print(
        "thresholds (AnomalyConfig defaults, tuned with --tune on "
        f"{args.tune_set} seed {args.tune_seed}): " + json.dumps(msgspec.to_builtins(cfg))
    )
    print(
        f"injections: {args.per_1000_bars} per 1,000 bars of each symbol and kind, "
        f">= {args.spacing} bars apart, "
        f"spike k in {args.spike_k} x recent sigma, volume x {args.volume_m}, gap 1-5 bars, "
        f"frozen 3-12 bars; match within {args.tolerance} bars"
    )
    roles = {args.tune_set: f"in-sample s{args.tune_seed}"}
    roles.update({name: f"out-of-sample s{args.seed}" for name in args.eval_sets})
    results = [evaluate(args.tune_set, load(root / args.tune_set), cfg, args.tune_seed, args)]
    results += [evaluate(n, load(root / n), cfg, args.seed, args) for n in args.eval_sets]
    print()
    print_table(results, roles)
    print(json.dumps({"roles": roles, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
