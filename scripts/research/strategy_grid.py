"""Choose the built-in strategies' parameters on in-sample data only.

Runs every variant of a small, declared grid through the real backtest on ONE data set (the
in-sample one: ``candles/binance-spot-1h-2021`` by default) and prints each variant's
metrics, ranked by Sharpe. Nothing here reads any other data set: the out-of-sample figures in
README come from ``quantumtrade backtest --compare`` on the other sets with the parameters
this picked, untouched.

    QT_DATA_DIR=../shared/data .venv/bin/python scripts/research/strategy_grid.py \
        [--grid 1|2|3] [--data PATH] [--jobs 2]

The last line is a JSON object: every variant's overrides and metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quantumtrade.backtest.baselines import result_performance  # noqa: E402
from quantumtrade.backtest.data import load_candles  # noqa: E402
from quantumtrade.backtest.outputs import bars_per_year  # noqa: E402
from quantumtrade.backtest.runner import run_backtest  # noqa: E402
from quantumtrade.config import AppConfig, load_config  # noqa: E402

# Each variant: a name and [strategy] overrides (name, params, exits, protections, ...).
GRID: list[tuple[str, dict[str, Any]]] = [
    ("regime_adaptive (defaults)", {}),
    ("trend", {"name": "trend"}),
    ("mean_reversion", {"name": "mean_reversion"}),
    ("breakout", {"name": "breakout"}),
    ("adaptive, no mean reversion", {"params": {"mean_reversion": {"entry_z": 99.0}}}),
    (
        "adaptive, trend min_score 1",
        {"params": {"trend": {"min_score": 1.0}, "mean_reversion": {"entry_z": 99.0}}},
    ),
    (
        "adaptive, wide exits",
        {
            "params": {"mean_reversion": {"entry_z": 99.0}},
            "exits": {"stop_loss_atr": 4.0, "trailing_atr": 6.0},
        },
    ),
    (
        "adaptive, tight exits",
        {
            "params": {"mean_reversion": {"entry_z": 99.0}},
            "exits": {"stop_loss_atr": 2.0, "trailing_atr": 3.0},
        },
    ),
    (
        "adaptive, breakout 96/48",
        {
            "params": {
                "mean_reversion": {"entry_z": 99.0},
                "breakout": {"channel": 96, "exit_channel": 48},
            }
        },
    ),
    (
        "adaptive, mean reversion z 3",
        {"params": {"mean_reversion": {"entry_z": 3.0, "max_adx": 20.0}}},
    ),
    (
        "adaptive, cooldown 24",
        {
            "params": {"mean_reversion": {"entry_z": 99.0}},
            "protections": {"cooldown_bars": 24},
        },
    ),
]


# Round 2, around round 1's best ("adaptive, wide exits": mean reversion off, wide stops).
_BASE2: dict[str, Any] = {
    "params": {"mean_reversion": {"entry_z": 99.0}},
    "exits": {"stop_loss_atr": 4.0, "trailing_atr": 6.0},
}


def _with(**changes: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in _BASE2.items()}
    for key, value in changes.items():
        merged = dict(out.get(key, {}))
        for k, v in value.items():
            merged[k] = {**merged.get(k, {}), **v} if isinstance(v, dict) else v
        out[key] = merged
    return out


GRID2: list[tuple[str, dict[str, Any]]] = [
    ("r2 base (wide exits)", _with()),
    ("r2 exits 5/8", _with(exits={"stop_loss_atr": 5.0, "trailing_atr": 8.0})),
    ("r2 exits 4/8", _with(exits={"trailing_atr": 8.0})),
    ("r2 no signal fade", _with(exits={"exit_on_signal_fade": False})),
    ("r2 min_confidence 0.8", _with(params={"min_confidence": 0.8})),
    ("r2 volatile keeps half", _with(params={"volatile_scale": 0.5})),
    ("r2 breakout 96/48", _with(params={"breakout": {"channel": 96, "exit_channel": 48}})),
    ("r2 trend min_score 0.5", _with(params={"trend": {"min_score": 0.5}})),
    ("r2 cooldown 24", _with(protections={"cooldown_bars": 24})),
    ("r2 regime-change exit", _with(exits={"exit_on_regime_change": True})),
]
# Round 3: round 2's best exits (5/8) with the two next-best changes, alone and together.
_E58 = {"stop_loss_atr": 5.0, "trailing_atr": 8.0}
GRID3: list[tuple[str, dict[str, Any]]] = [
    ("r3 exits 5/8", _with(exits=_E58)),
    ("r3 exits 6/10", _with(exits={"stop_loss_atr": 6.0, "trailing_atr": 10.0})),
    ("r3 5/8 + min_confidence 0.8", _with(exits=_E58, params={"min_confidence": 0.8})),
    ("r3 5/8 + volatile keeps half", _with(exits=_E58, params={"volatile_scale": 0.5})),
    (
        "r3 5/8 + both",
        _with(exits=_E58, params={"min_confidence": 0.8, "volatile_scale": 0.5}),
    ),
]
GRIDS = {"1": GRID, "2": GRID2, "3": GRID3}


def _variant(cfg: AppConfig, overrides: dict[str, Any]) -> AppConfig:
    tree = msgspec.to_builtins(cfg.strategy)
    tree.update(overrides)
    return msgspec.structs.replace(cfg, strategy=msgspec.convert(tree, type(cfg.strategy)))


def _run(args: tuple[str, dict[str, Any], str, float]) -> dict[str, Any]:
    name, overrides, data, equity = args
    cfg = _variant(load_config(None, {}), overrides)
    candles = load_candles([data])
    warm = min(cfg.data.capacity, candles.bars // 4)
    result = asyncio.run(run_backtest(cfg, candles, initial_equity=equity, trade_from=warm))
    metrics = result_performance(result, bars_per_year=bars_per_year(candles.bar_ms))
    reasons: dict[str, int] = {}
    for trade in result.trades:
        reasons[trade.exit_reason] = reasons.get(trade.exit_reason, 0) + 1
    return {"name": name, "overrides": overrides, "metrics": metrics, "exits": reasons}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="candles/binance-spot-1h-2021")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--initial-equity", type=float, default=100_000.0)
    parser.add_argument("--only", default="", help="run the variants whose name contains this")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="1", help="which round")
    args = parser.parse_args()
    base = Path(os.environ.get("QT_DATA_DIR", ROOT.parent / "shared" / "data"))
    data = str(base / args.data)
    grid = [(n, o) for n, o in GRIDS[args.grid] if args.only in n]
    jobs = [(n, o, data, args.initial_equity) for n, o in grid]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(_run, jobs))
    rows.sort(key=lambda r: -(r["metrics"].get("sharpe") or -1e9))
    print(f"in-sample: {args.data}")
    print(f"{'variant':34} {'return':>8} {'sharpe':>7} {'maxdd':>6} {'trades':>6}  exits")
    for r in rows:
        m = r["metrics"]
        print(
            f"{r['name']:34} {m['total_return']:8.3f} {m['sharpe'] or 0:7.2f} "
            f"{m['max_drawdown']:6.3f} {m['trades']:6d}  {r['exits']}"
        )
    print(json.dumps({"data": args.data, "variants": rows}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
