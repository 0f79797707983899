"""``quantumtrade backtest``: load candles, run, write the files, print the headline figures.

With ``--train FROM:TO --test FROM:TO`` it runs the two windows apart (each after its own
warm-up) and prints in-sample and out-of-sample figures side by side; nothing is fitted here,
so the in-sample window is what a later ``optimize`` would tune on.

With ``--compare`` the summary also scores three baselines in the strategy's metric keys
(``baselines.py``): the same config regime-blind (a second run over the same bars), random
entries mirroring the strategy's trades (mean of ``--random-seeds`` seeds) and buy-and-hold.
In a walk-forward run they are computed for the out-of-sample (``--test``) window only: that
is the window a comparison is evidence about, and the in-sample one is left as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from quantumtrade.backtest.baselines import Comparison, regime_blind_config
from quantumtrade.backtest.data import Candles, load_candles
from quantumtrade.backtest.outputs import iso, write_outputs
from quantumtrade.backtest.runner import BacktestResult, decision_config, run_backtest
from quantumtrade.config import AppConfig, load_config
from quantumtrade.data.replay_source import format_timeframe
from quantumtrade.errors import ConfigError

log = structlog.get_logger("quantumtrade.backtest")

HEADLINE = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "trades")


def _fail(message: str, code: int = 2) -> int:
    print(f"quantumtrade: {message}", file=sys.stderr)
    return code


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (bars/s, ETA) on a terminal, else a plain line every 10 %."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, desc=label, unit="bar", file=sys.stderr, smoothing=0.1) as bar:
            yield bar.update
        return
    done = 0
    step = max(total // 10, 1)
    t0 = time.perf_counter()

    def update(n: int) -> None:
        nonlocal done
        before, done = done, done + n
        if done // step != before // step or done == total:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            eta = (total - done) / rate if rate > 0 else 0.0
            print(
                f"{label}: {done}/{total} bars ({100 * done / total:.0f} %), "
                f"{rate:,.0f} bars/s, ETA {eta:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    yield update


def load_or_fail(args: argparse.Namespace) -> Candles | int:
    """The candles of ``--data``/``--symbols``/``--timeframe``, or the exit code after one line
    on stderr saying why they cannot be read (missing, malformed or empty)."""
    try:
        candles = load_candles(args.data, symbols=args.symbols, timeframe=args.timeframe)
    except FileNotFoundError as exc:
        return _fail(f"cannot read market data: {exc}")
    except ValueError as exc:
        return _fail(f"bad market data: {exc}")
    if candles.bars == 0:
        return _fail(f"no bars in {', '.join(args.data)}")
    return candles


def _window(
    candles: Candles, start_ms: int | None, end_ms: int | None, warmup: int
) -> tuple[Candles, int]:
    """Bars [start, end) plus up to ``warmup`` bars before ``start``; and where trading begins."""
    first = candles.index_at(start_ms) if start_ms is not None else 0
    stop = candles.index_at(end_ms) if end_ms is not None else candles.bars
    if first >= stop:
        raise ValueError("no bars between --from and --to in the data")
    lead = max(first - warmup, 0)
    return candles.window(lead, stop), first - lead


async def _run(
    cfg: AppConfig, candles: Candles, trade_from: int, label: str, equity: float
) -> BacktestResult:
    with progress_bar(candles.bars, label) as update:
        return await run_backtest(
            cfg, candles, initial_equity=equity, trade_from=trade_from, progress=update
        )


def _run_info(
    cfg: AppConfig, args: argparse.Namespace, result: BacktestResult, warm: int
) -> dict[str, Any]:
    c = result.candles
    return {
        "data": list(args.data),
        "files": list(c.sources),
        "symbols": list(c.symbols),
        "timeframe": format_timeframe(c.bar_ms),
        "from": iso(int(c.ts_ms[0])) if c.bars else None,
        "to": iso(int(c.ts_ms[-1]) + c.bar_ms) if c.bars else None,
        "bars": c.bars,
        "warmup_bars": warm,
        "initial_equity": result.initial_equity,
        "elapsed_s": round(result.elapsed_s, 3),
        "bars_per_s": round(result.bars_fed / result.elapsed_s, 1) if result.elapsed_s else None,
        "config": decision_config(cfg),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def _headline(name: str, summary: dict[str, Any]) -> None:
    columns = {"strategy": summary["strategy"]}
    baselines = summary.get("baselines")
    if baselines is not None:
        columns["regime-blind"] = baselines["regime_blind"]
        columns[f"random ({summary['random_spread']['seeds']})"] = baselines["random"]
    columns["buy & hold"] = summary["benchmark"]
    print(f"{name}:")
    print(f"  {'':16}" + "".join(f"{c:>14}" for c in columns))
    for key in HEADLINE:
        print(f"  {key:16}" + "".join(f"{_fmt(m[key]):>14}" for m in columns.values()))
    if baselines is not None:
        spread = summary["random_spread"]
        print(
            f"  random over {spread['seeds']} seeds: "
            + "; ".join(
                f"{k} std {_fmt(spread[k]['std'])}, strategy above "
                f"{_fmt(spread[k]['strategy_beats'])} of seeds"
                for k in ("sharpe", "total_return")
            )
        )
    acc, base = summary["signal_accuracy"], summary["signal_accuracy_baseline"]
    print(
        "  signal accuracy " + ", ".join(f"{h} bars {_fmt(acc[h])} (baseline {_fmt(base[h])})"
                                         for h in acc)
    )  # fmt: skip


def cmd_backtest(
    args: argparse.Namespace, config_path: Path | None, argv: Sequence[str] | None
) -> int:
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    if (args.train is None) != (args.test is None):
        return _fail("--train and --test go together")
    from quantumtrade.logs import configure_logging

    # Refusals and fills are counted in the summary; per-order log lines would drown the run.
    configure_logging("warning", cfg.system.log_format)
    command = "quantumtrade " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    candles = load_or_fail(args)
    if isinstance(candles, int):
        return candles
    warmup = cfg.data.capacity if args.warmup is None else max(args.warmup, 0)
    out = Path(args.out)
    fee_bps = cfg.execution.bar_fill.taker_fee_bps
    windows: list[tuple[str, int | None, int | None]] = (
        [("in_sample", *args.train), ("out_of_sample", *args.test)]
        if args.train is not None
        else [("backtest", args.start, args.end)]
    )
    summaries: dict[str, dict[str, Any]] = {}
    for name, start, end in windows:
        try:
            window, trade_from = _window(candles, start, end, warmup)
        except ValueError as exc:
            return _fail(f"{name}: {exc}")
        result = asyncio.run(_run(cfg, window, trade_from, name, args.initial_equity))
        compare = None
        if args.compare and name != "in_sample":
            blind = asyncio.run(
                _run(regime_blind_config(cfg), window, trade_from, f"{name} regime-blind",
                     args.initial_equity)
            )  # fmt: skip
            compare = Comparison(
                regime_blind=blind, bar_fill=cfg.execution.bar_fill, random_seeds=args.random_seeds
            )
        target = out if len(windows) == 1 else out / name
        try:
            summary = write_outputs(
                target,
                result,
                fee_bps=fee_bps,
                run=_run_info(cfg, args, result, trade_from),
                command=command,
                title=f"QuantumTrade backtest ({name.replace('_', '-')})",
                compare=compare,
            )
        except ValueError as exc:
            if compare is None:
                raise
            return _fail(f"{name}: --compare: {exc}")
        summaries[name] = summary
        _headline(f"{name} {summary['run']['from']} → {summary['run']['to']}", summary)
        print(
            f"  {result.bars_fed:,} symbol-bars in {result.elapsed_s:.2f} s "
            f"({summary['run']['bars_per_s']:,.0f} bars/s); files in {target}"
        )
    if len(windows) == 2:
        tested = summaries["out_of_sample"]
        side_by_side = {
            "command": command,
            "in_sample": {k: summaries["in_sample"][k] for k in _SIDE},
            # --compare scores the test window only (see the module docstring).
            "out_of_sample": {k: tested[k] for k in (*_SIDE, *_COMPARED) if k in tested},
        }
        (out / "walk_forward.json").write_text(json.dumps(side_by_side, indent=2) + "\n")
        print(f"in-sample and out-of-sample side by side: {out / 'walk_forward.json'}")
    return 0


_SIDE = ("strategy", "benchmark", "signal_accuracy", "signal_accuracy_baseline", "run")
_COMPARED = ("baselines", "random_spread")
