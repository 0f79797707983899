"""``quantumtrade backtest``: parity with the daemon, no look-ahead, books that reconcile, files.

The candles are made here (seeded random walks with trending stretches, written as gzip CSV),
so the tests need nothing from outside.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from quantumtrade.app import Daemon
from quantumtrade.backtest.data import from_arrays, load_candles
from quantumtrade.backtest.runner import Ledger, run_backtest
from quantumtrade.cli import main
from quantumtrade.clock import ManualClock
from quantumtrade.config import AppConfig, load_config
from quantumtrade.core import TradingCore
from quantumtrade.events import (
    Bar,
    Event,
    OrderCancelled,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    SignalGenerated,
    TargetPosition,
)
from quantumtrade.execution.bar_fill import market_price, stop_fill_price
from quantumtrade.replay import replay_log
from quantumtrade.store.eventlog import SqliteEventLog

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")
DECISIONS = (
    SignalGenerated,
    TargetPosition,
    OrderIntent,
    OrderRejected,
    OrderFilled,
    OrderCancelled,
)
SUMMARY_KEYS = {
    "total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_bars", "win_rate", "profit_factor", "expectancy", "avg_hold_bars", "exposure",
    "turnover", "fees", "trades", "final_equity",
}  # fmt: skip


def make_prices(n_bars: int, n_symbols: int, seed: int) -> np.ndarray:
    """(bars, symbols, 5): random walks whose drift changes sign every 40-80 bars."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_bars, n_symbols, 5))
    for j in range(n_symbols):
        drift = np.repeat(rng.choice([-0.006, 0.006, 0.0], size=n_bars // 40 + 1), 40)[:n_bars]
        close = 100.0 * np.exp(np.cumsum(drift + rng.normal(0, 0.008, n_bars)))
        open_ = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0, 0.002, n_bars))
        top = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, n_bars)))
        bottom = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, n_bars)))
        volume = 5_000.0 * rng.lognormal(0, 0.3, n_bars)
        out[:, j] = np.stack((open_, top, bottom, close, volume), axis=1)
    return out


def write_candles(folder: Path, prices: np.ndarray, symbols: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for j, symbol in enumerate(symbols):
        with gzip.open(folder / f"{symbol}.csv.gz", "wt") as f:
            f.write("timestamp,open,high,low,close,volume\n")
            for t in range(prices.shape[0]):
                o, h, lo, c, v = prices[t, j].tolist()
                f.write(f"{START_MS + t * HOUR_MS},{o!r},{h!r},{lo!r},{c!r},{v!r}\n")
    return folder


def config_file(tmp_path: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "quantumtrade.toml"
    symbols = ", ".join(f'"{s}"' for s in SYMBOLS)
    path.write_text(
        f"""
[data]
source = "replay"
symbols = [{symbols}]
capacity = 300
[data.replay]
path = "{data}"
speed = 1.0
[data.orchestrator]
update_interval_ms = {HOUR_MS}
ticker_interval_ms = 0
# Wall-clock time: a slow or busy CI machine must not turn a fetch into a gap.
fetch_timeout_ms = 600000
[execution]
fill_model = "next_bar"
[scanner]
min_abs_score = 0.05
min_bars = 40
[database]
sqlite_path = "{tmp_path / "events.sqlite"}"
[admin]
port = 0
{extra}
"""
    )
    return path


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures structlog for the process; in pytest that would bind it to this
    test's captured stdout, closed once the test ends."""
    monkeypatch.setattr("quantumtrade.logs.configure_logging", lambda *a, **k: None)


@pytest.fixture
def market(tmp_path: Path) -> tuple[Path, AppConfig]:
    data = write_candles(tmp_path / "candles", make_prices(360, len(SYMBOLS), seed=7), SYMBOLS)
    return data, load_config(config_file(tmp_path, data))


def comparable(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    out.pop("seq")
    out["type"] = type(event).__name__
    return out


async def run_daemon_one_bar_per_heartbeat(cfg: AppConfig, bars: int) -> list[dict[str, Any]]:
    clock = ManualClock(START_MS * 1_000_000)
    daemon = await Daemon.create(cfg, clock=clock)
    seen: list[Event] = []
    for kind in DECISIONS:
        daemon.bus.subscribe(kind, seen.append)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for step in range(1, bars + 1):
                clock.advance(HOUR_MS / 1000)
                await daemon.step()
                await daemon.bus.drain()
                # One bar per symbol per heartbeat, or this is not the run the test means.
                assert all(daemon.state.length(s) == min(step, 300) for s in SYMBOLS)
        finally:
            await daemon.stop()
    return [comparable(e) for e in seen]


async def run_backtest_events(cfg: AppConfig, data: Path) -> list[dict[str, Any]]:
    seen: list[Event] = []
    candles = load_candles([str(data)], symbols=SYMBOLS)
    await run_backtest(
        cfg, candles, record=lambda e: seen.append(e) if isinstance(e, DECISIONS) else None
    )
    return [comparable(e) for e in seen]


async def test_run_in_replay_mode_makes_the_same_signals_orders_and_fills_as_backtest(
    market: tuple[Path, AppConfig],
) -> None:
    data, cfg = market
    live = await run_daemon_one_bar_per_heartbeat(cfg, 360)
    backtest = await run_backtest_events(cfg, data)
    kinds = {e["type"] for e in backtest}
    assert {"SignalGenerated", "OrderIntent", "OrderFilled"} <= kinds, kinds
    assert len(backtest) > 50
    # Event by event, timestamps included: both clocks stand at each bar's close.
    assert len(live) == len(backtest)
    for a, b in zip(live, backtest, strict=True):
        assert a == b
    # The daemon's log replays to the same decisions: with bar fills, the levels are judged
    # after the gate's release of earlier orders and before the bar's own decisions.
    log = SqliteEventLog(cfg.database.sqlite_path)
    await log.open()
    try:
        report = await replay_log(log, cfg)
    finally:
        await log.close()
    assert report.logged.get("TargetPosition", 0) > 0
    assert any(e.get("stop_price") for e in live if e["type"] == "OrderIntent")
    assert report.differences == []
    assert report.replayed == report.logged


async def test_parity_check_catches_a_different_decision_path(
    market: tuple[Path, AppConfig],
) -> None:
    data, cfg = market
    base = await run_backtest_events(cfg, data)
    changed = msgspec.structs.replace(cfg, scanner=msgspec.structs.replace(cfg.scanner, top_n=1))
    other = await run_backtest_events(changed, data)
    assert base != other


async def test_truncating_the_future_changes_no_earlier_decision(
    market: tuple[Path, AppConfig],
) -> None:
    """No look-ahead: decisions and fills up to bar k are the same whether or not the data
    goes on after k."""
    data, cfg = market
    full = load_candles([str(data)], symbols=SYMBOLS)
    cut = 250
    seen: dict[str, list[dict[str, Any]]] = {"full": [], "cut": []}
    for name, candles in (("full", full), ("cut", full.window(0, cut))):
        sink = seen[name]
        await run_backtest(
            cfg,
            candles,
            record=lambda e, sink=sink: (
                sink.append(comparable(e)) if isinstance(e, DECISIONS) else None
            ),
        )
    end_ns = (START_MS + cut * HOUR_MS) * 1_000_000
    before = [e for e in seen["full"] if e["ts_ns"] <= end_ns]
    assert len(before) > 20
    assert seen["cut"][: len(before)] == before


async def test_every_market_fill_is_the_next_bars_open_plus_slippage(
    market: tuple[Path, AppConfig],
) -> None:
    data, cfg = market
    candles = load_candles([str(data)], symbols=SYMBOLS)
    intents: dict[str, tuple[int, OrderIntent]] = {}
    fills: list[OrderFilled] = []

    def bar_of(ts_ns: int) -> int:
        """The bar whose close the clock stood at (events are stamped at bar closes)."""
        return (ts_ns // 1_000_000 - START_MS) // HOUR_MS - 1

    def record(e: Event) -> None:
        if isinstance(e, OrderIntent):
            intents[e.client_order_id] = (bar_of(e.ts_ns), e)
        elif isinstance(e, OrderFilled):
            fills.append(e)

    await run_backtest(cfg, candles, record=record)
    assert len(fills) > 10
    row = {s: j for j, s in enumerate(SYMBOLS)}
    triggered = 0
    for fill in fills:
        (decided, intent), bar = intents[fill.client_order_id], bar_of(fill.ts_ns)
        o, h, lo, c, v = candles.prices[bar, row[fill.symbol]]
        if intent.stop_price is not None:
            # A stop or take-profit the bar crossed fills on that bar, at the level (or the
            # open it gapped to) with a market order's slippage; the level was set before it.
            triggered += 1
            assert bar == decided, "a triggered exit fills on the bar that crossed its level"
            assert lo <= intent.stop_price <= h
            expected = stop_fill_price(
                fill.side, intent.stop_price, Bar(0, o, h, lo, c, v), cfg.execution.bar_fill
            )
            assert fill.price == pytest.approx(expected, rel=1e-12)
            continue
        assert bar == decided + 1, "a fill must come at the bar after the decision"
        expected = market_price(fill.side, Bar(0, o, h, lo, c, v), cfg.execution.bar_fill)
        assert fill.price == pytest.approx(expected, rel=1e-12)
        assert fill.price != pytest.approx(candles.prices[decided, row[fill.symbol], 3], rel=1e-9)
    assert triggered > 0


async def test_a_gap_after_the_signal_bar_is_paid_not_dodged() -> None:
    """Hand-made: a steady climb, then the bar after the first BUY signal gaps down 20 %.

    Filling at the signal bar's close (look-ahead in time) would enter at ~the close; the
    honest fill is at the gapped open."""
    n = 120
    close = 100.0 * 1.01 ** np.arange(n)
    prices = np.empty((n, 1, 5))
    prices[:, 0, 0] = np.concatenate(([100.0], close[:-1]))
    prices[:, 0, 3] = close
    prices[:, 0, 1] = close * 1.001
    prices[:, 0, 2] = prices[:, 0, 0] * 0.999
    prices[:, 0, 4] = 1e9
    cfg = load_config(None, environ={"QT_SCANNER__MIN_BARS": "40", "QT_DATA__CAPACITY": "200"})
    first_signal: dict[str, int] = {}
    bars = {"now": -1}

    def observe(bar: int, core: TradingCore, ledger: Ledger, equity: float) -> None:
        bars["now"] = bar

    def record(e: Event) -> None:
        if isinstance(e, SignalGenerated):
            first_signal.setdefault("bar", bars["now"])

    ts = START_MS + HOUR_MS * np.arange(n, dtype=np.int64)
    probe = from_arrays(("AAAUSDT",), ts, prices, HOUR_MS)
    await run_backtest(cfg, probe, observe=observe, record=record)
    k = first_signal["bar"]
    gapped = prices.copy()
    gapped[k + 1 :, 0, :4] *= 0.8  # everything from the next bar on is 20 % lower
    fills: list[OrderFilled] = []
    result = await run_backtest(
        cfg,
        from_arrays(("AAAUSDT",), ts, gapped, HOUR_MS),
        record=lambda e: fills.append(e) if isinstance(e, OrderFilled) else None,
    )
    assert result.trades[0].entry_bar == k + 1
    o, h, lo, c, v = gapped[k + 1, 0]
    first = fills[0]
    assert first.price == pytest.approx(
        market_price(first.side, Bar(0, o, h, lo, c, v), cfg.execution.bar_fill)
    )
    assert first.price < 0.85 * gapped[k, 0, 3]


async def test_books_reconcile_to_the_cent_at_every_bar(market: tuple[Path, AppConfig]) -> None:
    data, cfg = market
    candles = load_candles([str(data)], symbols=SYMBOLS)
    worst = {"gap": 0.0, "bars": 0}

    def observe(bar: int, core: TradingCore, ledger: Ledger, equity: float) -> None:
        t = core.portfolio.totals()
        books = ledger.initial_equity + t["realized"] + t["unrealized"] - t["fees"]
        worst["gap"] = max(worst["gap"], abs(books - equity))
        worst["bars"] += 1
        assert abs(books - equity) < 0.01, (bar, books, equity)
        assert abs(core.risk.equity() - (books - ledger.initial_equity)) < 0.01

    result = await run_backtest(cfg, candles, initial_equity=50_000.0, observe=observe)
    assert worst["bars"] == candles.bars
    assert result.fills > 10
    assert math.isfinite(result.curve.equity[-1])


def test_cli_writes_summary_trades_equity_and_report(
    market: tuple[Path, AppConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = market
    cfg_path = tmp_path / "quantumtrade.toml"
    out = tmp_path / "out"
    code = main(
        ["backtest", "--data", str(data), "--config", str(cfg_path), "--out", str(out),
         "--from", "2024-01-05", "--initial-equity", "20000"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["strategy"]) == SUMMARY_KEYS
    assert set(summary["benchmark"]) == SUMMARY_KEYS
    for key in ("signal_accuracy", "signal_accuracy_baseline"):
        assert set(summary[key]) == {"1", "6", "24"}
    assert summary["by_symbol"] and summary["by_regime"]
    assert summary["run"]["from"] == "2024-01-05T00:00:00Z"
    assert summary["run"]["warmup_bars"] == 96
    with (out / "trades.csv").open() as f:
        rows = list(csv.DictReader(f))
    columns = {
        "entry_time", "exit_time", "symbol", "side", "quantity", "entry_price", "exit_price",
        "fees", "pnl", "regime_at_entry", "exit_reason",
    }  # fmt: skip
    assert rows and columns <= set(rows[0])
    assert summary["strategy"]["trades"] == len(rows)
    with (out / "equity.csv").open() as f:
        equity = list(csv.DictReader(f))
    assert len(equity) == summary["run"]["bars"] == 360 - 96
    assert float(equity[-1]["equity"]) == pytest.approx(summary["strategy"]["final_equity"])
    html = (out / "report.html").read_text()
    assert "<svg" in html and "http://" not in html.split("<svg", 1)[0]
    assert "strategy" in capsys.readouterr().out


def test_cli_walk_forward_reports_in_and_out_of_sample(
    market: tuple[Path, AppConfig], tmp_path: Path
) -> None:
    data, _ = market
    out = tmp_path / "wf"
    code = main(
        ["backtest", "--data", str(data), "--config", str(tmp_path / "quantumtrade.toml"),
         "--out", str(out), "--train", "2024-01-03:2024-01-10", "--test", "2024-01-10:2024-01-16"]
    )  # fmt: skip
    assert code == 0
    both = json.loads((out / "walk_forward.json").read_text())
    assert both["in_sample"]["run"]["to"] == "2024-01-10T00:00:00Z"
    assert both["out_of_sample"]["run"]["from"] == "2024-01-10T00:00:00Z"
    assert (out / "in_sample" / "report.html").is_file()
    assert (out / "out_of_sample" / "summary.json").is_file()


def test_cli_names_missing_data_and_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backtest", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--data", "x", "--train", "2024-02-01:2024-01-01", "--test", "a:b"])
    assert exc.value.code == 2
