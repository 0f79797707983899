"""The strategy engine through the real trading core (``run_backtest``) on hand-made bars.

A user strategy defined here (``Scheduled``: per symbol, a weight from a given bar on) is
loaded by its import path, as a user's would be, and the bars around it are flat at 100 with
the one move each test is about. Every expected price is worked out from the bar-fill model:
an order decided on bar t's close fills at bar t+1's open plus slippage; a triggered exit
fills on the bar that crossed its level, at the level (or a worse open) less slippage.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from quantumtrade.backtest.data import from_arrays
from quantumtrade.backtest.model import Trade
from quantumtrade.backtest.runner import BacktestResult, run_backtest
from quantumtrade.config import AppConfig, load_config
from quantumtrade.data.datadir import data_dir, missing_data_reason
from quantumtrade.events import (
    Bar,
    Event,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    Side,
    TargetPosition,
)
from quantumtrade.execution.bar_fill import BarFillConfig, market_price, stop_fill_price
from quantumtrade.strategy.base import Book, Features, Targets
from quantumtrade.strategy.loader import StrategyConfig

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HERE = "tests.integration.test_strategy_engine"
REPO = Path(__file__).resolve().parents[2]
EQUITY = 100_000.0
N_BARS = 30


class ScheduledParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schedule: dict[str, list[tuple[int, float]]] = {}
    """symbol -> (bar, weight) steps: from that bar's close on, that weight (0 before)."""


class Scheduled:
    """A user strategy: the weights it is told, by bar (a pure function of the bar time)."""

    name = "scheduled"
    Params = ScheduledParams

    def __init__(self, params: ScheduledParams) -> None:
        self.params = params

    def targets(self, features: Features, book: Book) -> Targets:
        weight = np.zeros(len(features.symbols))
        for i, symbol in enumerate(features.symbols):
            bar = (int(features.ts_ms[i]) - START_MS) // HOUR_MS
            for start, w in self.params.schedule.get(symbol, ()):
                if bar >= start:
                    weight[i] = w
        return Targets(weight=weight, reason="scheduled")


def flat_bars(n: int = N_BARS, symbols: int = 1) -> np.ndarray:
    """(bars, symbols, 5): open 100, high 100.5, low 99.5, close 100, a deep volume."""
    prices = np.empty((n, symbols, 5))
    prices[:] = (100.0, 100.5, 99.5, 100.0, 1e9)
    return prices


def config(
    schedule: dict[str, list[tuple[int, float]]],
    *,
    exits: dict[str, Any] | None = None,
    protections: dict[str, Any] | None = None,
    **strategy: Any,
) -> AppConfig:
    cfg = load_config(None, environ={})
    chosen = StrategyConfig(
        name=f"{HERE}:Scheduled",
        params={"schedule": schedule},
        exits=exits or {},
        protections=protections or {},
        **strategy,
    )
    return msgspec.structs.replace(
        cfg,
        strategy=chosen,
        scanner=msgspec.structs.replace(cfg.scanner, min_bars=5),
    )


class Run:
    """One backtest and every order event it published."""

    def __init__(self, result: BacktestResult, events: list[Event]) -> None:
        self.result = result
        self.events = events

    @property
    def trades(self) -> list[Trade]:
        return self.result.trades

    def of(self, kind: type[Any], symbol: str = "AAAUSDT") -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and e.symbol == symbol]


async def run(cfg: AppConfig, prices: np.ndarray, symbols: tuple[str, ...] = ("AAAUSDT",)) -> Run:
    ts = START_MS + HOUR_MS * np.arange(prices.shape[0], dtype=np.int64)
    kinds = (OrderIntent, OrderFilled, OrderCancelled, OrderRejected, TargetPosition)
    events: list[Event] = []
    result = await run_backtest(
        cfg,
        from_arrays(symbols, ts, prices, HOUR_MS),
        initial_equity=EQUITY,
        record=lambda e: events.append(e) if isinstance(e, kinds) else None,
    )
    return Run(result, events)


def bar_at(prices: np.ndarray, t: int, row: int = 0) -> Bar:
    o, h, lo, c, v = prices[t, row].tolist()
    return Bar(START_MS + t * HOUR_MS, o, h, lo, c, v)


FILLS = BarFillConfig()
ENTRY = 100.0 + 100.0 * FILLS.slippage_bps / 1e4 + FILLS.range_share * 1.0
"""A market BUY at a flat bar's open: what every entry below pays (decided on bar 2, filled
at bar 3)."""


def test_the_fill_model_the_tests_assume() -> None:
    assert FILLS == load_config(None, environ={}).execution.bar_fill
    assert market_price(Side.BUY, bar_at(flat_bars(), 3), FILLS) == pytest.approx(ENTRY)


# --- price-level exits ----------------------------------------------------------------------


async def test_a_stop_hit_intrabar_exits_on_that_bar_at_the_stop_less_slippage() -> None:
    prices = flat_bars()
    prices[8, 0, :4] = (100.0, 100.5, 94.0, 99.0)  # trades down through the stop, recovers
    cfg = config({"AAAUSDT": [(2, 0.05), (9, 0.0)]}, exits={"stop_loss_pct": 0.05})
    r = await run(cfg, prices)
    assert len(r.trades) == 1
    trade = r.trades[0]
    assert trade.entry_bar == 3 and trade.entry_price == pytest.approx(ENTRY)
    stop = ENTRY * 0.95
    slip = stop * FILLS.slippage_bps / 1e4 + FILLS.range_share * (100.5 - 94.0)
    assert trade.exit_reason == "stop_loss"
    assert trade.exit_bar == 8, "on the very bar whose low crossed the stop"
    assert trade.exit_price == pytest.approx(stop - slip, rel=1e-12)
    assert trade.exit_price > 94.0  # at the stop, not the low
    exit_order = r.of(OrderIntent)[-1]
    assert exit_order.reason == "stop_loss" and exit_order.stop_price == pytest.approx(stop)
    assert r.of(OrderRejected) == []


async def test_a_gap_down_through_the_stop_fills_at_the_open_less_slippage() -> None:
    prices = flat_bars()
    prices[8:, 0, :4] = (90.0, 90.5, 89.0, 90.0)  # opens 5 below the stop and stays there
    cfg = config({"AAAUSDT": [(2, 0.05), (9, 0.0)]}, exits={"stop_loss_pct": 0.05})
    r = await run(cfg, prices)
    trade = r.trades[0]
    slip = 90.0 * FILLS.slippage_bps / 1e4 + FILLS.range_share * (90.5 - 89.0)
    assert (trade.exit_reason, trade.exit_bar) == ("stop_loss", 8)
    assert trade.exit_price == pytest.approx(90.0 - slip, rel=1e-12)


async def test_a_crash_bar_that_closes_far_below_the_stop_still_exits_at_the_stop() -> None:
    """The stop is 95; the bar falls to 75 and closes at 78, more than the risk manager's
    price band (10 %) below the stop. The exit still fills on that bar, at the stop."""
    prices = flat_bars()
    prices[8, 0, :4] = (100.0, 100.5, 75.0, 78.0)
    prices[9:, 0, :4] = (78.0, 78.5, 77.5, 78.0)
    cfg = config({"AAAUSDT": [(2, 0.05), (9, 0.0)]}, exits={"stop_loss_pct": 0.05})
    r = await run(cfg, prices)
    trade = r.trades[0]
    stop = ENTRY * 0.95
    slip = stop * FILLS.slippage_bps / 1e4 + FILLS.range_share * (100.5 - 75.0)
    assert (trade.exit_reason, trade.exit_bar) == ("stop_loss", 8)
    assert trade.exit_price == pytest.approx(stop - slip, rel=1e-12)
    assert [e.reason for e in r.of(OrderRejected)] == []


async def test_the_rest_of_a_volume_capped_stop_exit_goes_at_market_on_later_bars() -> None:
    """The stop bar takes 20 of the 50 units held; the other 30 are sold at the next bars'
    opens, not again at the stop on the bar that has passed (nor beyond its volume)."""
    prices = flat_bars()
    prices[8, 0, :4] = (100.0, 100.5, 94.0, 99.0)
    prices[8:, 0, 4] = 400.0  # 5 %: 20 units a bar
    prices[9, 0, :4] = (97.0, 97.5, 96.5, 97.0)
    prices[10, 0, :4] = (98.0, 98.5, 97.5, 98.0)
    cfg = config({"AAAUSDT": [(2, 0.05), (9, 0.0)]}, exits={"stop_loss_pct": 0.05})
    r = await run(cfg, prices)
    held = r.of(OrderFilled)[0].quantity
    assert held == pytest.approx(50.0, rel=1e-3)
    sells = [f for f in r.of(OrderFilled) if f.side is Side.SELL]
    stop = ENTRY * 0.95
    assert [f.quantity for f in sells] == pytest.approx([20.0, 20.0, held - 40.0])
    assert [f.price for f in sells] == pytest.approx(
        [
            stop_fill_price(Side.SELL, stop, bar_at(prices, 8), FILLS),
            market_price(Side.SELL, bar_at(prices, 9), FILLS),
            market_price(Side.SELL, bar_at(prices, 10), FILLS),
        ],
        rel=1e-12,
    )
    close_ns = [(START_MS + (t + 1) * HOUR_MS) * 1_000_000 for t in (8, 9, 10)]
    assert [f.ts_ns for f in sells] == close_ns
    trade = r.trades[0]
    assert (trade.exit_reason, trade.exit_bar) == ("stop_loss", 10)
    assert len(r.trades) == 1


async def test_take_profit_on_the_high_exits_on_that_bar() -> None:
    prices = flat_bars()
    prices[8, 0, :4] = (100.0, 104.0, 99.5, 101.0)
    cfg = config({"AAAUSDT": [(2, 0.05), (9, 0.0)]}, exits={"take_profit_pct": 0.03})
    r = await run(cfg, prices)
    trade = r.trades[0]
    take = ENTRY * 1.03
    slip = take * FILLS.slippage_bps / 1e4 + FILLS.range_share * (104.0 - 99.5)
    assert (trade.exit_reason, trade.exit_bar) == ("take_profit", 8)
    assert trade.exit_price == pytest.approx(take - slip, rel=1e-12)


async def test_a_trailing_stop_ratchets_with_the_highs_and_exits_where_it_stood() -> None:
    prices = flat_bars()
    for k, close in zip(range(4, 9), (102.0, 104.0, 106.0, 108.0, 110.0), strict=True):
        prices[k, 0, :4] = (close - 2.0, close + 0.5, close - 2.5, close)
    # Falls back, every low above the trail (110.5 * 0.95 = 104.975), highs lower.
    prices[9, 0, :4] = (110.0, 110.2, 105.5, 106.0)
    prices[10, 0, :4] = (106.0, 106.2, 105.2, 105.5)
    prices[11, 0, :4] = (105.5, 105.6, 103.0, 104.0)  # through the trail
    prices[12:, 0, :4] = (104.0, 104.5, 103.5, 104.0)
    cfg = config({"AAAUSDT": [(2, 0.05), (12, 0.0)]}, exits={"trailing_pct": 0.05})
    r = await run(cfg, prices)
    assert len(r.trades) == 1
    trade = r.trades[0]
    trail = 110.5 * 0.95
    slip = trail * FILLS.slippage_bps / 1e4 + FILLS.range_share * (105.6 - 103.0)
    assert (trade.exit_reason, trade.exit_bar) == ("trailing_stop", 11)
    assert trade.exit_price == pytest.approx(trail - slip, rel=1e-12)
    assert trade.pnl > 0  # the trail locked in the move


async def test_a_short_is_stopped_on_the_high_at_the_stop_plus_slippage() -> None:
    prices = flat_bars()
    prices[8, 0, :4] = (100.0, 106.0, 99.5, 101.0)
    cfg = config(
        {"AAAUSDT": [(2, -0.05), (9, 0.0)]}, exits={"stop_loss_pct": 0.05}, allow_short=True
    )
    r = await run(cfg, prices)
    trade = r.trades[0]
    entry = market_price(Side.SELL, bar_at(prices, 3), FILLS)
    stop = entry * 1.05
    slip = stop * FILLS.slippage_bps / 1e4 + FILLS.range_share * (106.0 - 99.5)
    assert (trade.side, trade.exit_reason, trade.exit_bar) == ("SHORT", "stop_loss", 8)
    assert trade.exit_price == pytest.approx(stop + slip, rel=1e-12)
    # Without allow_short the same weights never trade.
    spot = await run(config({"AAAUSDT": [(2, -0.05), (9, 0.0)]}), prices)
    assert spot.trades == [] and spot.of(OrderIntent) == []


async def test_a_reversal_trades_once_through_zero_and_the_new_short_gets_its_own_stop() -> None:
    prices = flat_bars()
    prices[12, 0, :4] = (100.0, 106.0, 99.5, 101.0)  # the short's stop, not the long's
    cfg = config(
        {"AAAUSDT": [(2, 0.05), (6, -0.05), (13, 0.0)]},
        exits={"stop_loss_pct": 0.05},
        allow_short=True,
    )
    r = await run(cfg, prices)
    intents = r.of(OrderIntent)
    assert [(i.side, i.reason) for i in intents[:2]] == [
        (Side.BUY, "scheduled"),
        (Side.SELL, "reverse"),
    ]
    long_qty = r.of(OrderFilled)[0].quantity
    short_target = r.of(TargetPosition)[1].quantity
    assert intents[1].quantity == pytest.approx(long_qty - short_target, rel=1e-12)
    first, second = r.trades[0], r.trades[1]
    assert (first.side, first.exit_reason, first.exit_bar) == ("LONG", "reverse", 7)
    assert (second.side, second.entry_bar, second.exit_reason) == ("SHORT", 7, "stop_loss")
    assert second.exit_bar == 12
    stop = market_price(Side.SELL, bar_at(prices, 7), FILLS) * 1.05
    assert intents[2].stop_price == pytest.approx(stop)


async def test_a_time_stop_exits_after_max_hold_bars() -> None:
    prices = flat_bars()
    prices[7, 0, :4] = (101.0, 101.5, 100.5, 101.0)  # the exit bar, told apart by its open
    cfg = config({"AAAUSDT": [(2, 0.05), (20, 0.0)]}, exits={"max_hold_bars": 4})
    r = await run(cfg, prices)
    trade = r.trades[0]
    assert (trade.exit_reason, trade.entry_bar, trade.exit_bar) == ("time_stop", 3, 7)
    assert trade.hold_bars == 4
    assert trade.exit_price == pytest.approx(market_price(Side.SELL, bar_at(prices, 7), FILLS))


# --- target positions -----------------------------------------------------------------------


async def test_the_same_weight_every_bar_is_one_entry_order_not_a_stack() -> None:
    r = await run(config({"AAAUSDT": [(2, 0.05)]}), flat_bars())
    intents = r.of(OrderIntent)
    assert len(intents) == 1 and intents[0].side is Side.BUY
    assert len(r.of(TargetPosition)) == 1
    fills = r.of(OrderFilled)
    assert sum(f.quantity for f in fills) == pytest.approx(0.05 * EQUITY / 100.0)
    assert [t.exit_reason for t in r.trades] == ["end_of_data"]


async def test_a_small_weight_change_trades_nothing_and_a_large_one_only_the_difference() -> None:
    schedule = [(2, 0.05), (6, 0.06), (10, 0.09)]
    r = await run(config({"AAAUSDT": schedule}, rebalance_threshold=0.5), flat_bars())
    targets = r.of(TargetPosition)
    assert [t.weight for t in targets] == [0.05, 0.09]  # 0.06 is within 50 % of 0.05
    intents = r.of(OrderIntent)
    assert len(intents) == 2 and all(i.side is Side.BUY for i in intents)
    first_fill = r.of(OrderFilled)[0].quantity
    assert intents[1].quantity == pytest.approx(targets[1].quantity - first_fill, rel=1e-12)
    assert intents[1].ts_ns == targets[1].ts_ns  # decided on the bar-10 close
    # Negative control: a threshold below the change resizes at bar 6 too.
    eager = await run(config({"AAAUSDT": schedule}, rebalance_threshold=0.1), flat_bars())
    assert [t.weight for t in eager.of(TargetPosition)] == [0.05, 0.06, 0.09]
    assert len(eager.of(OrderIntent)) == 3


async def test_a_weight_of_zero_exits_with_signal_fade() -> None:
    r = await run(config({"AAAUSDT": [(2, 0.05), (10, 0.0)]}), flat_bars())
    assert len(r.trades) == 1
    trade = r.trades[0]
    assert (trade.exit_reason, trade.entry_bar, trade.exit_bar) == ("signal_fade", 3, 11)
    assert [i.side for i in r.of(OrderIntent)] == [Side.BUY, Side.SELL]
    assert r.of(TargetPosition)[-1].quantity == 0.0


async def test_a_fill_cut_by_the_volume_cap_is_topped_up_to_the_target_never_past_it() -> None:
    prices = flat_bars()
    prices[:, 0, 4] = 400.0  # 5 % of it: 20 units a bar; the target is 50 units
    r = await run(config({"AAAUSDT": [(2, 0.05)]}), prices)
    target = r.of(TargetPosition)
    assert len(target) == 1
    wanted = target[0].quantity
    assert wanted == pytest.approx(50.0, rel=1e-3)
    fills = r.of(OrderFilled)
    assert [f.quantity for f in fills] == pytest.approx([20.0, 20.0, wanted - 40.0])
    held = np.cumsum([f.quantity for f in fills])
    assert held[-1] == pytest.approx(wanted, rel=1e-12)
    assert (held <= wanted * (1 + 1e-12)).all()
    assert [c.reason for c in r.of(OrderCancelled)] == ["volume_cap", "volume_cap"]
    intents = r.of(OrderIntent)
    assert [i.quantity for i in intents] == pytest.approx([wanted, wanted - 20, wanted - 40])
    assert len(r.trades) == 1 and r.trades[0].quantity == pytest.approx(wanted)


# --- protections ----------------------------------------------------------------------------


def stopped_once() -> np.ndarray:
    prices = flat_bars()
    prices[8, 0, :4] = (100.0, 100.5, 94.0, 99.0)
    return prices


async def test_a_cooldown_after_a_stop_out_delays_the_reentry_by_cooldown_bars() -> None:
    always = {"AAAUSDT": [(2, 0.05)]}
    exits = {"stop_loss_pct": 0.05}
    cooled = await run(
        config(always, exits=exits, protections={"cooldown_bars": 5}), stopped_once()
    )
    first, again = cooled.trades[0], cooled.trades[1]
    assert (first.exit_reason, first.exit_bar) == ("stop_loss", 8)
    assert again.entry_bar == 8 + 5
    # Negative control: without the cooldown the strategy is back two bars later (decided on
    # the close after the stop-out bar).
    free = await run(config(always, exits=exits, protections={"cooldown_bars": 0}), stopped_once())
    assert free.trades[1].entry_bar == 8 + 2


async def test_stopout_limit_pauses_every_entry_for_pause_bars() -> None:
    """AAA and BBB are stopped out on the same bar: two stop-outs, the limit; CCC, which wants
    in on the next bar, waits for the pause to end too."""
    symbols = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    prices = flat_bars(symbols=3)
    prices[8, :2, :4] = (100.0, 100.5, 94.0, 99.0)
    schedule = {"AAAUSDT": [(2, 0.05)], "BBBUSDT": [(2, 0.05)], "CCCUSDT": [(9, 0.05)]}
    exits = {"stop_loss_pct": 0.05}
    guard = {"stopout_limit": 2, "stopout_window": 10, "pause_bars": 6}

    def entries(r: Run) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {s: [] for s in symbols}
        for t in r.trades:
            out[t.symbol].append(t.entry_bar)
        return {s: sorted(v) for s, v in out.items()}

    paused = await run(config(schedule, exits=exits, protections=guard), prices, symbols)
    stops = [(t.symbol, t.exit_bar) for t in paused.trades if t.exit_reason == "stop_loss"]
    assert sorted(stops) == [("AAAUSDT", 8), ("BBBUSDT", 8)]
    assert entries(paused) == {"AAAUSDT": [3, 14], "BBBUSDT": [3, 14], "CCCUSDT": [14]}
    # Negative control: a limit of 3 is not reached; nobody waits.
    loose = await run(
        config(schedule, exits=exits, protections={**guard, "stopout_limit": 3}), prices, symbols
    )
    assert entries(loose) == {"AAAUSDT": [3, 10], "BBBUSDT": [3, 10], "CCCUSDT": [10]}


# --- the example user strategy, on real data ------------------------------------------------


@pytest.mark.data
def test_the_example_strategy_runs_through_the_backtest_command(tmp_path: Path) -> None:
    data = data_dir() / "candles" / "binance-spot-1h-2024"
    missing = missing_data_reason(data)
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QT_CONFIG")}
    env["QT_DATA_DIR"] = str(data_dir())
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "quantumtrade"), "backtest",
            "--data", "candles/binance-spot-1h-2024", "--symbols", "BTCUSDT,ETHUSDT",
            "--from", "2024-03-01", "--to", "2024-04-01",
            "--config", "examples/donchian.toml", "--out", str(out),
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    strategy = summary["run"]["config"]["strategy"]
    assert strategy["name"] == "examples.donchian:Donchian"
    assert strategy["params"]["channel"] == 48  # from the file, validated against Params
    assert strategy["exits"]["stop_loss_atr"] == 2.5  # the file overrides the class's 2.0 ...
    assert strategy["exits"]["trailing_atr"] == 3.0  # ... and keeps its other defaults
    with (out / "trades.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows, "the example made no trade"
    assert summary["strategy"]["trades"] == len(rows)
    assert {r["symbol"] for r in rows} <= {"BTCUSDT", "ETHUSDT"}
    reasons = {r["exit_reason"] for r in rows}
    assert reasons <= {
        "stop_loss", "trailing_stop", "time_stop", "signal_fade", "end_of_data",
    }, reasons  # fmt: skip
