"""``quantumtrade optimize``: tune a strategy with optuna (TPE), scored out of sample.

Windows. With ``--train FROM:TO --test FROM:TO`` there is one window, cut as ``backtest`` cuts
it (each side after its own ``--warmup`` bars, default ``[data] capacity``). With
``--walk-forward N`` the traded span (the data after the first ``--warmup`` bars, so every
window has a full warm-up) is split into N + 2 equal segments; window k (1..N) trains on
segments k and k+1 and tests on segment k+2: rolling windows, training twice as long as
testing, the N test segments back to back over the last N / (N + 2) of the span. A window's
search runs backtests of its train bars only; the test bars are run once, with the best
parameters, after the search (their warm-up bars may lie in the train window, as in live
trading; they are never traded in the search).

Search. Each trial is one ``run_backtest`` of the train window with the sampled parameters
(``backtest/space.py``), scored by ``--objective`` from the run's metrics. A trial with fewer
than ``--min-trades`` trades, or whose objective is undefined (no variance, no losing trade for
a profit factor), is told to optuna as PRUNED: it counts as worse than any scored trial (the
report says how many). Trials run in ``--jobs`` worker processes (spawned; each loads the
candles once); the parent asks and tells optuna, so with ``--jobs 1`` a ``--seed`` gives the
same trials every time. With ``--study PATH`` the study lives in SQLite (``sqlite:///PATH``),
named after the strategy, objective, train window and a hash of the space and symbols, and a
rerun continues it up to ``--trials`` finished trials.

Overfitting (``backtest/overfit.py``): per window, the PBO by CSCV over the per-bar train
returns of every scored trial (16 blocks, fewer when the window is short), and the deflated
Sharpe ratio of the best trial's train returns with N = every finished trial (scored or
pruned) and the variance of the scored trials' per-bar Sharpe ratios. Stability: each
parameter's chosen value per window and its standard deviation over the windows divided by the
range's width (logs for a log range; for choices, the share of windows not on the most common).

Baselines. Each window's test bars are also run with the strategy untuned (the parameters the
config gives it, before any search) and scored as equal-weight buy-and-hold at the tuned run's
mean gross exposure: a tuned figure means something only beside what no tuning gets.

Outputs in ``--out``: ``optimize.json``, ``best.toml`` (the last window's best as a
``[strategy]`` table for ``backtest --config``) and ``report.md``; the table is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from quantumtrade.backtest.baselines import buy_and_hold, result_performance
from quantumtrade.backtest.command import _window, load_or_fail
from quantumtrade.backtest.data import Candles, load_candles
from quantumtrade.backtest.outputs import bars_per_year, iso
from quantumtrade.backtest.overfit import deflated_sharpe, pbo_cscv, sharpe_per_bar
from quantumtrade.backtest.runner import run_backtest
from quantumtrade.backtest.space import Dimension, Value, load_space, suggest, with_values
from quantumtrade.config import AppConfig, load_config
from quantumtrade.data.replay_source import format_timeframe
from quantumtrade.errors import ConfigError
from quantumtrade.strategy.loader import StrategyConfig, load_strategy

OBJECTIVES = ("sharpe", "sortino", "calmar", "profit_factor")
HEADLINE = ("sharpe", "total_return", "max_drawdown", "trades")
PBO_BLOCKS = 16


def _fail(message: str, code: int = 2) -> int:
    print(f"quantumtrade: {message}", file=sys.stderr)
    return code


# --- windows --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """Bars ``lead:stop`` of the loaded candles, traded from ``first`` (``lead:first`` warm up)."""

    lead: int
    first: int
    stop: int

    def candles(self, all_bars: Candles) -> tuple[Candles, int]:
        return all_bars.window(self.lead, self.stop), self.first - self.lead

    def describe(self, c: Candles) -> dict[str, Any]:
        return {
            "from": iso(int(c.ts_ms[self.first])),
            "to": iso(int(c.ts_ms[self.stop - 1]) + c.bar_ms),
            "bars": self.stop - self.first,
            "warmup_bars": self.first - self.lead,
        }


@dataclass(frozen=True, slots=True)
class Window:
    index: int
    train: Span
    test: Span


def walk_forward(bars: int, warmup: int, n: int) -> list[Window]:
    """N rolling windows over bars ``warmup:bars`` (the module docstring says how)."""
    if n < 1:
        raise ValueError("--walk-forward needs at least 1 window")
    start = min(max(warmup, 0), bars)
    span = bars - start
    edges = [start + (span * k) // (n + 2) for k in range(n + 3)]
    if min(b - a for a, b in pairwise(edges)) < 2:
        raise ValueError(
            f"{span} bars after a {start}-bar warm-up are too few for {n} walk-forward windows"
        )

    def cut(first: int, stop: int) -> Span:
        return Span(lead=max(first - warmup, 0), first=first, stop=stop)

    return [
        Window(index=k + 1, train=cut(edges[k], edges[k + 2]), test=cut(edges[k + 2], edges[k + 3]))
        for k in range(n)
    ]


def split_window(
    candles: Candles, train: tuple[int, int], test: tuple[int, int], warmup: int
) -> Window:
    """The one window of ``--train``/``--test``, cut as ``backtest`` cuts it."""
    spans = []
    for name, (start, end) in (("train", train), ("test", test)):
        try:
            window, trade_from = _window(candles, start, end, warmup)
        except ValueError as exc:
            raise ValueError(f"--{name}: {exc}") from None
        lead = candles.index_at(int(window.ts_ms[0]))
        spans.append(Span(lead=lead, first=lead + trade_from, stop=lead + window.bars))
    if spans[1].first < spans[0].stop:
        raise ValueError("--test must start at or after the end of --train")
    return Window(index=1, train=spans[0], test=spans[1])


# --- one backtest, in a worker --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    span: Span
    strategy: StrategyConfig
    returns: bool
    """Send the per-bar returns back (the train runs: PBO and DSR need them)."""
    benchmark: bool = False
    """Also score buy-and-hold of the same bars at the run's mean gross (the test runs)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    metrics: dict[str, float | int | None]
    returns: bytes
    """float64 per-bar returns of the traded bars (empty unless asked)."""
    elapsed_s: float
    benchmark: dict[str, float | int | None] | None = None
    """Buy-and-hold's metrics over the same bars, when the job asked for them."""


@dataclass(frozen=True, slots=True)
class Setup:
    """What a worker needs to load the same candles and config as the parent."""

    data: tuple[str, ...]
    symbols: tuple[str, ...] | None
    timeframe: str
    config: str | None
    threads: int


_loaded: dict[str, Any] = {}
"""A worker's candles and config, loaded once by ``_start_worker`` (process-local)."""


def _start_worker(setup: Setup) -> None:
    import numba

    from quantumtrade.logs import configure_logging

    numba.set_num_threads(max(1, min(setup.threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    cfg = load_config(setup.config)
    configure_logging("warning", cfg.system.log_format)
    _loaded["cfg"] = cfg
    _loaded["candles"] = load_candles(setup.data, symbols=setup.symbols, timeframe=setup.timeframe)


def _evaluate(job: Job) -> Outcome:
    return evaluate(_loaded["cfg"], _loaded["candles"], job)


def evaluate(base: AppConfig, all_bars: Candles, job: Job) -> Outcome:
    """One backtest of ``job``'s span of ``all_bars`` with its strategy (``adapt`` calls it too)."""
    cfg: AppConfig = msgspec.structs.replace(base, strategy=job.strategy)
    candles, trade_from = job.span.candles(all_bars)
    result = asyncio.run(run_backtest(cfg, candles, trade_from=trade_from))
    metrics = result_performance(result, bars_per_year=bars_per_year(candles.bar_ms))
    returns = b""
    if job.returns:
        series = np.concatenate(([result.initial_equity], result.curve.equity))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = series[1:] / series[:-1] - 1.0
        returns = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64).tobytes()
    benchmark = None
    if job.benchmark:
        benchmark = buy_and_hold(
            result,
            bars_per_year=bars_per_year(candles.bar_ms),
            fee_bps=cfg.execution.bar_fill.taker_fee_bps,
        ).metrics
    return Outcome(
        metrics=metrics, returns=returns, elapsed_s=result.elapsed_s, benchmark=benchmark
    )


class Pool:
    """``--jobs`` spawned workers (or the parent itself for one job)."""

    def __init__(self, setup: Setup, jobs: int) -> None:
        self.jobs = jobs
        self._executor: ProcessPoolExecutor | None = None
        if jobs > 1:
            # spawn, not fork: the parent has numba's and asyncio's threads running.
            self._executor = ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=get_context("spawn"),
                initializer=_start_worker,
                initargs=(setup,),
            )
        else:
            _start_worker(setup)

    def submit(self, job: Job) -> Future[Outcome]:
        if self._executor is not None:
            return self._executor.submit(_evaluate, job)
        future: Future[Outcome] = Future()
        try:
            future.set_result(_evaluate(job))
        except Exception as exc:  # the same as a worker's: the caller reads it from the future
            future.set_exception(exc)
        return future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


# --- the search -----------------------------------------------------------------------------


@contextmanager
def trial_progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (trials/min, ETA) on a terminal, else one plain line per trial."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, desc=label, unit="trial", file=sys.stderr) as bar:
            yield bar.update
        return
    done = 0
    t0 = time.perf_counter()

    def update(n: int) -> None:
        nonlocal done
        done += n
        per_min = 60.0 * done / max(time.perf_counter() - t0, 1e-9)
        eta = 60.0 * (total - done) / per_min if per_min > 0 else 0.0
        print(
            f"{label}: {done}/{total} trials, {per_min:.1f} trials/min, ETA {eta:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    yield update


class TrialsFailed(RuntimeError):
    """More trials failed than were asked for: the backtest itself is broken."""


@dataclass(frozen=True, slots=True)
class Search:
    strategy: StrategyConfig
    space: tuple[Dimension, ...]
    objective: str
    min_trades: int
    trials: int
    seed: int
    storage: str | None
    key: str
    """Hash of the space and the data: part of every study name."""


def study_name(search: Search, window: Window, candles: Candles) -> str:
    train = window.train.describe(candles)
    return f"{search.strategy.name}|{search.objective}|{train['from']}..{train['to']}|{search.key}"


def objective_value(metrics: Mapping[str, float | int | None], name: str) -> float | None:
    """``metrics[name]`` as a float; None where it is missing or not finite."""
    value = metrics.get(name)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _score(outcome: Outcome, search: Search) -> float | None:
    """The trial's objective; None (pruned) under ``min_trades`` or where it is undefined."""
    if int(outcome.metrics.get("trades") or 0) < search.min_trades:
        return None
    return objective_value(outcome.metrics, search.objective)


def tell_outcome(study: Any, trial: Any, outcome: Outcome, search: Search) -> None:
    """Record a finished trial (its metrics, and the per-bar returns PBO and DSR read), scored
    by the objective or pruned."""
    from optuna.trial import TrialState

    trial.set_user_attr("metrics", outcome.metrics)
    trial.set_user_attr("returns", base64.b64encode(outcome.returns).decode())
    trial.set_user_attr("elapsed_s", outcome.elapsed_s)
    score = _score(outcome, search)
    if score is None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, score)


def tell_failure(study: Any, trial: Any, exc: Exception) -> None:
    """Record a trial whose backtest raised (the search goes on)."""
    from optuna.trial import TrialState

    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
    study.tell(trial, state=TrialState.FAIL)


def _run_study(search: Search, window: Window, candles: Candles, pool: Pool, label: str) -> Any:
    """Run (or continue) one window's study up to ``search.trials`` finished trials."""
    import optuna
    from optuna.trial import TrialState

    name = study_name(search, window, candles)
    study = optuna.create_study(
        study_name=name, storage=search.storage, direction="maximize", load_if_exists=True
    )
    # A run killed mid-trial leaves RUNNING trials: they never finish, so fail them.
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    # Seeded by what is already done, so a resumed run does not redraw the first trials.
    study.sampler = optuna.samplers.TPESampler(seed=search.seed + 1_000_003 * done)
    failures = 0
    in_flight: dict[Future[Outcome], Any] = {}
    with trial_progress(search.trials, label) as progress:
        if done:
            progress(min(done, search.trials))
        while done + len(in_flight) < search.trials or in_flight:
            while done + len(in_flight) < search.trials and len(in_flight) < pool.jobs:
                trial = study.ask()
                values = suggest(trial, search.space)
                job = Job(window.train, with_values(search.strategy, values), returns=True)
                in_flight[pool.submit(job)] = trial
            ready, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in ready:
                trial = in_flight.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # one bad trial is recorded and the search goes on
                    failures += 1
                    tell_failure(study, trial, exc)
                    if failures > search.trials:
                        raise TrialsFailed(f"{failures} trials failed; the last: {exc}") from exc
                    continue
                tell_outcome(study, trial, outcome, search)
                done += 1
                progress(1)
    return study


def _returns(trial: Any) -> NDArray[np.float64]:
    return np.frombuffer(base64.b64decode(trial.user_attrs["returns"]), dtype=np.float64)


def _overfitting(study: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """PBO and DSR of one window's study (None where too few trials or bars)."""
    from optuna.trial import TrialState

    scored = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    finished = len(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    )
    if not scored:
        return None, None
    matrix = np.column_stack([_returns(t) for t in scored])
    sharpes = np.array([sharpe_per_bar(matrix[:, j]) for j in range(matrix.shape[1])])
    pbo: dict[str, Any] | None = None
    blocks = min(PBO_BLOCKS, (matrix.shape[0] // 2) // 2 * 2)
    if len(scored) >= 2 and blocks >= 2:
        result = pbo_cscv(matrix, blocks=blocks)
        pbo = {
            "pbo": result.pbo,
            "blocks": result.blocks,
            "combinations": int(result.logits.size),
            "trials": result.trials,
            "median_logit": float(np.median(result.logits)),
        }
    best = study.best_trial
    variance = float(sharpes.var(ddof=1)) if sharpes.size >= 2 else 0.0
    dsr = deflated_sharpe(_returns(best), trials=finished, sharpe_variance=variance)
    return pbo, {
        "probability": dsr.probability,
        "sharpe_per_bar": dsr.sharpe,
        "benchmark_sharpe_per_bar": dsr.benchmark,
        "trials": dsr.trials,
        "sharpe_variance": dsr.variance,
        "skew": dsr.skew,
        "kurtosis": dsr.kurtosis,
        "bars": dsr.bars,
    }


def stability(space: Sequence[Dimension], chosen: Sequence[Mapping[str, Value]]) -> dict[str, Any]:
    """Each parameter's value per window and its dispersion over the range (docstring)."""
    out: dict[str, Any] = {}
    for d in space:
        values = [c[d.name] for c in chosen if d.name in c]
        dispersion: float | None = None
        if len(values) >= 2:
            if d.kind == "choice":
                dispersion = 1.0 - max(Counter(values).values()) / len(values)
            else:
                x = np.array(values, dtype=np.float64)
                x = np.log(x) if d.log else x
                dispersion = float(x.std() / d.width)
        out[d.name] = {"values": values, "dispersion": dispersion}
    return out


# --- outputs --------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(tables: Mapping[str, Any], header: str = "") -> str:
    """Nested mappings of scalars and lists as TOML tables (what best.toml needs)."""
    lines: list[str] = []

    def table(name: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        if scalars or not body:
            lines.extend(("", f"[{name}]"))
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in body.items():
            if isinstance(v, Mapping):
                table(f"{name}.{k}", v)

    for name, body in tables.items():
        table(name, body)
    return header + "\n".join(lines).lstrip("\n") + "\n"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(report: dict[str, Any]) -> list[str]:
    head = (
        "| window | train | test | trials (pruned) | IS sharpe | OOS sharpe | OOS sharpe, "
        "untuned | OOS sharpe, buy & hold | IS return | OOS return | OOS return, untuned "
        "| OOS return, buy & hold | IS/OOS trades | PBO | DSR |"
    )
    rows = [head, "|" + "---|" * 15]
    for w in report["windows"]:
        is_m, oos_m = w["in_sample"] or {}, w["out_of_sample"] or {}
        base = w["out_of_sample_untuned"] or {}
        hold = w["out_of_sample_buy_and_hold"] or {}
        pbo, dsr = w["pbo"], w["deflated_sharpe"]
        rows.append(
            f"| {w['index']} | {w['train']['from'][:10]} → {w['train']['to'][:10]} "
            f"| {w['test']['from'][:10]} → {w['test']['to'][:10]} "
            f"| {w['trials']['finished']} ({w['trials']['pruned']}) "
            f"| {_fmt(is_m.get('sharpe'), 2)} | {_fmt(oos_m.get('sharpe'), 2)} "
            f"| {_fmt(base.get('sharpe'), 2)} | {_fmt(hold.get('sharpe'), 2)} "
            f"| {_fmt(is_m.get('total_return'))} | {_fmt(oos_m.get('total_return'))} "
            f"| {_fmt(base.get('total_return'))} | {_fmt(hold.get('total_return'))} "
            f"| {is_m.get('trades', '—')}/{oos_m.get('trades', '—')} "
            f"| {_fmt(pbo['pbo'] if pbo else None, 2)} "
            f"| {_fmt(dsr['probability'] if dsr else None, 2)} |"
        )
    return rows


def render_report(report: dict[str, Any]) -> str:
    lines = [
        f"# optimize {report['strategy']} ({report['objective']}, {report['trials']} trials "
        "per window)",
        "",
        f"    {report['command']}",
        "",
        f"Data: {', '.join(report['data']['paths'])} ({len(report['data']['symbols'])} symbols, "
        f"{report['data']['timeframe']}). IS = in-sample (the train window the search saw), "
        "OOS = out-of-sample (the test window, run once with the chosen parameters). Beside "
        "it, on the same test bars: the strategy untuned (the parameters it was given, before "
        "any search) and equal-weight buy & hold at the tuned run's mean gross exposure.",
        f"Trials with fewer than {report['min_trades']} trades or an undefined objective are "
        "pruned (scored as -inf). PBO: probability of backtest overfitting by CSCV (>= 0.5: the "
        "in-sample best is at or below the median out of sample as often as not). DSR: deflated "
        "Sharpe ratio, the probability that the best in-sample Sharpe beats what this many "
        "trials find by luck.",
        "",
        *_table(report),
        "",
        "## Chosen parameters",
        "",
        "| parameter | "
        + " | ".join(f"window {w['index']}" for w in report["windows"])
        + " | dispersion / range |",
        "|---|" + "---|" * (len(report["windows"]) + 1),
    ]
    for name, s in report["stability"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(v) for v in s["values"])
            + f" | {_fmt(s['dispersion'], 2)} |"
        )
    o = report["overfitting"]
    lines += [
        "",
        f"Mean PBO {_fmt(o['mean_pbo'], 2)}, lowest DSR {_fmt(o['min_dsr'], 2)}: "
        + ("**flagged as overfit**" if o["flagged"] else "not flagged")
        + " (PBO >= 0.5 or DSR < 0.95 in any window).",
        f"{report['trials_per_min']:.1f} trials/min on {report['jobs']} jobs.",
    ]
    return "\n".join(lines) + "\n"


# --- the command ----------------------------------------------------------------------------


def cmd_optimize(
    args: argparse.Namespace, config_path: Path | None, argv: Sequence[str] | None
) -> int:
    import optuna

    from quantumtrade.logs import configure_logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    command = "quantumtrade " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        cfg = load_config(config_path)
        strategy = msgspec.structs.replace(cfg.strategy, name=args.strategy)
        load_strategy(strategy, str(config_path) if config_path else "<defaults>")
        space = load_space(strategy, args.space)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    if (args.train is None) != (args.test is None):
        return _fail("--train and --test go together")
    if args.train is None and args.walk_forward is None:
        return _fail("give --train FROM:TO --test FROM:TO, or --walk-forward N")
    configure_logging("warning", cfg.system.log_format)
    candles = load_or_fail(args)
    if isinstance(candles, int):
        return candles
    warmup = cfg.data.capacity if args.warmup is None else max(args.warmup, 0)
    try:
        windows = (
            [split_window(candles, args.train, args.test, warmup)]
            if args.train is not None
            else walk_forward(candles.bars, warmup, args.walk_forward)
        )
    except ValueError as exc:
        return _fail(str(exc))
    jobs = args.jobs or os.cpu_count() or 1
    key = hashlib.sha256(
        json.dumps(
            [[d.describe() for d in space], candles.symbols, candles.bar_ms, args.min_trades,
             msgspec.to_builtins(strategy)],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:10]  # fmt: skip
    storage = None
    if args.study:
        Path(args.study).parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{Path(args.study).resolve()}"
    search = Search(
        strategy=strategy,
        space=space,
        objective=args.objective,
        min_trades=args.min_trades,
        trials=args.trials,
        seed=args.seed,
        storage=storage,
        key=key,
    )
    setup = Setup(
        data=tuple(args.data),
        symbols=args.symbols,
        timeframe=args.timeframe,
        config=str(config_path) if config_path else None,
        threads=max(1, (os.cpu_count() or 1) // jobs),
    )
    t0 = time.perf_counter()
    ran = 0
    rows: list[dict[str, Any]] = []
    chosen: list[dict[str, Value]] = []
    best_strategy: StrategyConfig | None = None
    pool = Pool(setup, jobs)
    try:
        for w in windows:
            label = f"window {w.index}/{len(windows)}"
            before = time.perf_counter()
            try:
                study = _run_study(search, w, candles, pool, label)
            except TrialsFailed as exc:
                return _fail(str(exc), code=1)
            except BrokenProcessPool as exc:
                return _fail(f"a worker process died ({exc}); nothing was written", code=1)
            from optuna.trial import TrialState

            states = Counter(t.state for t in study.get_trials(deepcopy=False))
            finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
            ran += finished
            row: dict[str, Any] = {
                "index": w.index,
                "study": study.study_name,
                "train": w.train.describe(candles),
                "test": w.test.describe(candles),
                "trials": {
                    "finished": finished,
                    "scored": states[TrialState.COMPLETE],
                    "pruned": states[TrialState.PRUNED],
                    "failed": states[TrialState.FAIL],
                },
                "best": None,
                "in_sample": None,
                "out_of_sample": None,
                "out_of_sample_untuned": None,
                "out_of_sample_buy_and_hold": None,
                "pbo": None,
                "deflated_sharpe": None,
                "search_s": round(time.perf_counter() - before, 2),
            }
            if states[TrialState.COMPLETE]:
                best = study.best_trial
                params: dict[str, Value] = {d.name: best.params[d.name] for d in space}
                best_strategy = with_values(strategy, params)
                tuned = pool.submit(Job(w.test, best_strategy, returns=False, benchmark=True))
                untuned = pool.submit(Job(w.test, strategy, returns=False))
                test = tuned.result()
                row["pbo"], row["deflated_sharpe"] = _overfitting(study)
                row.update(
                    best={"trial": best.number, "objective": best.value, "params": params},
                    in_sample=best.user_attrs["metrics"],
                    out_of_sample=test.metrics,
                    out_of_sample_untuned=untuned.result().metrics,
                    out_of_sample_buy_and_hold=test.benchmark,
                )
                chosen.append(params)
            rows.append(row)
    finally:
        pool.close()
    elapsed = time.perf_counter() - t0
    pbos = [r["pbo"]["pbo"] for r in rows if r["pbo"]]
    dsrs = [r["deflated_sharpe"]["probability"] for r in rows if r["deflated_sharpe"]]
    report: dict[str, Any] = {
        "command": command,
        "strategy": strategy.name,
        "objective": args.objective,
        "min_trades": args.min_trades,
        "trials": args.trials,
        "seed": args.seed,
        "jobs": jobs,
        "study": str(args.study) if args.study else None,
        "data": {
            "paths": list(args.data),
            "symbols": list(candles.symbols),
            "timeframe": format_timeframe(candles.bar_ms),
            "from": iso(int(candles.ts_ms[0])),
            "to": iso(int(candles.ts_ms[-1]) + candles.bar_ms),
            "bars": candles.bars,
        },
        "walk_forward": args.walk_forward,
        "space": [d.describe() for d in space],
        "windows": rows,
        "stability": stability(space, chosen),
        "overfitting": {
            "mean_pbo": float(np.mean(pbos)) if pbos else None,
            "min_dsr": min(dsrs) if dsrs else None,
            "flagged": any(p >= 0.5 for p in pbos) or any(d < 0.95 for d in dsrs),
        },
        "elapsed_s": round(elapsed, 2),
        "trials_per_min": round(60.0 * ran / elapsed, 2) if elapsed > 0 else None,
    }
    report["pbo"] = report["overfitting"]["mean_pbo"]
    report["deflated_sharpe"] = report["overfitting"]["min_dsr"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "optimize.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render_report(report)
    (out / "report.md").write_text(text)
    if best_strategy is not None:
        header = (
            f"# quantumtrade optimize: the best of window {len(windows)}'s search "
            f"({args.objective}); load with quantumtrade backtest --config\n"
        )
        (out / "best.toml").write_text(
            to_toml({"strategy": msgspec.to_builtins(best_strategy)}, header)
        )
    print("\n".join(_table(report)))
    for line in text.splitlines():
        if line.startswith("Mean PBO") or line.endswith(f"trials/min on {jobs} jobs."):
            print(line)
    print(f"files in {out}")
    return 0
