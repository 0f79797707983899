"""``quantumtrade optimize`` end to end: honest on noise, resumable, on real candles."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from quantumtrade.cli import main
from quantumtrade.config import load_config
from quantumtrade.strategy.loader import load_strategy

DAY_MS = 86_400_000
START_MS = 1_262_304_000_000  # 2010-01-01


def write_walk(
    folder: Path, *, drift: float, seed: int, symbols: int = 4, bars: int = 2600
) -> Path:
    """Daily candles of a geometric random walk (``drift`` per bar in log price, 2 % noise)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ts = START_MS + DAY_MS * np.arange(bars)
    for k in range(symbols):
        steps = drift + 0.02 * rng.standard_normal(bars)
        close = 100.0 * np.exp(np.cumsum(steps))
        open_ = np.concatenate(([100.0], close[:-1]))
        wick = 1.0 + 0.005 * np.abs(rng.standard_normal((2, bars)))
        high = np.maximum(open_, close) * wick[0]
        low = np.minimum(open_, close) / wick[1]
        volume = 1_000.0 * np.exp(0.3 * rng.standard_normal(bars))
        rows = np.column_stack((ts, open_, high, low, close, volume))
        lines = ["timestamp,open,high,low,close,volume"]
        lines += [
            f"{int(r[0])},{r[1]:.6f},{r[2]:.6f},{r[3]:.6f},{r[4]:.6f},{r[5]:.3f}" for r in rows
        ]
        (folder / f"SYM{k}USDT.csv").write_text("\n".join(lines) + "\n")
    return folder


def _optimize(data: Path, out: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    code = main(
        ["optimize", "--strategy", "trend", "--data", str(data), "--warmup", "200",
         "--train", "2010-07-20:2013-11-01", "--test", "2013-11-01:2017-02-13",
         "--min-trades", "5", "--seed", "7", "--out", str(out), *extra]
    )  # fmt: skip
    assert code == 0
    return json.loads((out / "optimize.json").read_text())  # type: ignore[no-any-return]


# The honesty pair: 16 daily walks of 1,500 bars, long and short allowed and no costs, so that
# neither a realised drift nor the fees decide what a rule earns, only its timing. One standard
# error of an annualised Sharpe over the 617 test bars is about sqrt(365 / 617) = 0.77.
FAIR = """\
[strategy]
allow_short = true
[execution.bar_fill]
slippage_bps = 0
range_share = 0
taker_fee_bps = 0
maker_fee_bps = 0
"""


def _honest(tmp_path: Path, drift: float) -> dict:  # type: ignore[type-arg]
    data = write_walk(tmp_path / "walk", drift=drift, seed=1, symbols=16, bars=1500)
    config = tmp_path / "fair.toml"
    config.write_text(FAIR)
    out = tmp_path / "out"
    code = main(
        ["optimize", "--strategy", "trend", "--data", str(data), "--warmup", "200",
         "--train", "2010-07-20:2012-06-01", "--test", "2012-06-01:2014-02-08",
         "--config", str(config), "--min-trades", "5", "--seed", "7", "--trials", "32",
         "--jobs", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return json.loads((out / "optimize.json").read_text())  # type: ignore[no-any-return]


def test_noise_is_fitted_in_sample_and_flagged(tmp_path: Path) -> None:
    report = _honest(tmp_path, drift=0.0)
    window = report["windows"][0]
    in_sample = window["in_sample"]["sharpe"]
    out_of_sample = window["out_of_sample"]["sharpe"]
    # The best of 32 tries on noise looks good on the noise it was fitted to (measured: 1.97)...
    assert in_sample > 1.2
    # ...and has no edge on fresh noise: within about one standard error of zero (measured:
    # -0.62), far below its in-sample figure...
    assert abs(out_of_sample) < 0.8
    assert in_sample - out_of_sample > 1.0
    # ...and the overfitting measures call its in-sample figure selection luck (measured: PBO
    # 0.81, DSR 0.97).
    assert window["pbo"]["pbo"] >= 0.5 or window["deflated_sharpe"]["probability"] < 0.95
    assert report["overfitting"]["flagged"]


def test_a_real_trend_is_not_flagged(tmp_path: Path) -> None:
    # The negative control: the same search on the same walks with a drift of 0.2 % a day (a
    # buy-and-hold Sharpe of about 0.002 / 0.02 * sqrt(365) = 1.9) keeps an edge out of sample
    # and is not called overfit (measured: OOS Sharpe 2.86, PBO 0.34, DSR 1.00).
    report = _honest(tmp_path, drift=0.002)
    window = report["windows"][0]
    assert window["out_of_sample"]["sharpe"] > 1.0
    assert window["pbo"]["pbo"] < 0.5 and window["deflated_sharpe"]["probability"] >= 0.95
    assert not report["overfitting"]["flagged"]


def test_a_study_resumes_up_to_trials(tmp_path: Path) -> None:
    noise = write_walk(tmp_path / "noise", drift=0.0, seed=5, symbols=2, bars=900)
    study = tmp_path / "study.db"
    args = ("--study", str(study), "--jobs", "1", "--walk-forward", "1", "--min-trades", "0")
    first = main(["optimize", "--strategy", "trend", "--data", str(noise), "--warmup", "200",
                  "--trials", "4", "--out", str(tmp_path / "a"), *args])  # fmt: skip
    assert first == 0
    second = main(["optimize", "--strategy", "trend", "--data", str(noise), "--warmup", "200",
                   "--trials", "6", "--out", str(tmp_path / "b"), *args])  # fmt: skip
    assert second == 0
    with sqlite3.connect(study) as db:
        states = db.execute("select state, count(*) from trials group by state").fetchall()
    assert dict(states) == {"COMPLETE": 6}
    report = json.loads((tmp_path / "b" / "optimize.json").read_text())
    assert report["windows"][0]["trials"]["finished"] == 6
    # The second run drew two new parameter sets, not the first run's again.
    with sqlite3.connect(study) as db:
        values = db.execute("select count(distinct param_value) from trial_params").fetchone()
    assert values[0] >= 6


@pytest.mark.data
def test_optimize_on_real_candles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (Path(os.environ.get("QT_DATA_DIR", "")) / "candles/binance-spot-1h-2024").is_dir():
        pytest.skip("QT_DATA_DIR has no candles/binance-spot-1h-2024")
    out = tmp_path / "out"
    code = main(
        ["optimize", "--strategy", "regime_adaptive", "--data", "candles/binance-spot-1h-2024",
         "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT", "--walk-forward", "2", "--trials", "4",
         "--jobs", "2", "--min-trades", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| window | train | test |" in printed and "PBO" in printed
    report = json.loads((out / "optimize.json").read_text())
    assert [w["index"] for w in report["windows"]] == [1, 2]
    for w in report["windows"]:
        assert w["train"]["to"] == w["test"]["from"]
        assert w["trials"]["finished"] == 4
        assert w["in_sample"]["sharpe"] == w["best"]["objective"]
    assert set(report["stability"]) == {d["name"] for d in report["space"]}
    cfg = load_config(out / "best.toml", {})
    last = report["windows"][-1]["best"]["params"]
    loaded = load_strategy(cfg.strategy)
    assert loaded.params["breakout"]["channel"] == last["breakout.channel"]
    assert loaded.exits.stop_loss_atr == last["exits.stop_loss_atr"]
    assert (out / "report.md").read_text().startswith("# optimize regime_adaptive")


def test_untuned_out_of_sample_is_what_backtest_gives(tmp_path: Path) -> None:
    """The untuned baseline of a window is the plain ``backtest --train --test`` of the same
    strategy over the same test bars (same cut, same warm-up), metric for metric; buy-and-hold
    sits beside it with the same keys."""
    noise = write_walk(tmp_path / "noise", drift=0.0, seed=5, symbols=3, bars=1500)
    report = _optimize(noise, tmp_path / "opt", "--trials", "3", "--jobs", "1")
    config = tmp_path / "trend.toml"
    config.write_text('[strategy]\nname = "trend"\n')
    code = main(
        ["backtest", "--data", str(noise), "--config", str(config), "--warmup", "200",
         "--train", "2010-07-20:2013-11-01", "--test", "2013-11-01:2017-02-13",
         "--out", str(tmp_path / "bt")]
    )  # fmt: skip
    assert code == 0
    side = json.loads((tmp_path / "bt" / "walk_forward.json").read_text())
    window = report["windows"][0]
    assert window["out_of_sample_untuned"] == side["out_of_sample"]["strategy"]
    assert window["out_of_sample_untuned"]["trades"] > 0
    hold = window["out_of_sample_buy_and_hold"]
    assert set(hold) == set(side["out_of_sample"]["benchmark"])
    assert hold["trades"] == 3  # one buy-and-hold position per symbol
