"""optimize's search spaces (parsing and errors), walk-forward cuts, stability and best.toml."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from quantumtrade.backtest.optimize import Span, stability, to_toml, walk_forward
from quantumtrade.backtest.space import Dimension, load_space, parse_space, with_values
from quantumtrade.cli import main
from quantumtrade.config import load_config
from quantumtrade.errors import ConfigError
from quantumtrade.strategy.base import Book, Features, Targets
from quantumtrade.strategy.builtin import BUILTINS
from quantumtrade.strategy.loader import StrategyConfig, load_strategy


class NoSpace:
    """A user strategy that declares no SPACE."""

    name = "no_space"

    def targets(self, features: Features, book: Book) -> Targets:
        return Targets(weight=np.zeros(len(features.symbols)))


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_space_loads_at_both_ends(name: str) -> None:
    strategy = StrategyConfig(name=name)
    space = load_space(strategy, None)
    assert space
    for ends in ("low", "high"):
        values = {d.name: d.choices[0] if d.kind == "choice" else getattr(d, ends) for d in space}
        load_strategy(with_values(strategy, values))


def test_space_file_forms_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text(
        "min_confidence = [0.5, 0.9]\n"
        "trade_ranging = { choices = [true, false] }\n"
        '"exits.stop_loss_atr" = { low = 2.0, high = 6.0, step = 0.5 }\n'
        "[trend]\n"
        "min_score = { low = 0.1, high = 2, log = true }\n"
        "[breakout]\n"
        "channel = { low = 12, high = 96, step = 12 }\n"
    )
    space = {d.name: d for d in load_space(StrategyConfig(name="regime_adaptive"), path)}
    assert space["min_confidence"] == Dimension("min_confidence", "float", 0.5, 0.9)
    assert space["trade_ranging"].choices == (True, False)
    assert space["exits.stop_loss_atr"].step == 0.5
    assert space["trend.min_score"].log and space["trend.min_score"].kind == "float"
    assert space["breakout.channel"].kind == "int"
    tuned = with_values(
        StrategyConfig(name="regime_adaptive"),
        {"trend.min_score": 0.7, "exits.stop_loss_atr": 3.5, "breakout.channel": 24},
    )
    loaded = load_strategy(tuned)
    assert loaded.params["trend"]["min_score"] == 0.7
    assert loaded.params["breakout"]["channel"] == 24
    assert loaded.params["breakout"]["exit_channel"] == 24  # untouched default
    assert loaded.exits.stop_loss_atr == 3.5


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("nonsense = [0, 1]\n", "nonsense", "no such parameter"),
        ("[trend]\nmin_scor = [0.0, 1.0]\n", "trend.min_scor", "no such parameter"),
        ("min_confidence = [0.9, 0.5]\n", "min_confidence", "must be below"),
        ("[breakout]\nchannel = [12.5, 96]\n", "breakout.channel", "whole-number"),
        ("[trend]\nmin_score = { low = 0.0, high = 1.0, log = true }\n", "trend.min_score",
         "low > 0"),
        ("min_confidence = { low = 0.5, hi = 0.9 }\n", "min_confidence", "unknown key"),
        ("trade_ranging = [0.0, 1.0]\n", "trade_ranging", "give choices"),
        ("min_confidence = [0.5, 1.5]\n", "min_confidence", "not a valid value"),
        ("[breakout]\nchannel = { low = 12, high = 100, step = 12 }\n", "breakout.channel",
         "multiple of step"),
        ("\"exits.stop_loss_atr\" = [-1.0, 2.0]\n", "exits.stop_loss_atr", "not a valid value"),
        ("min_confidence = \n", "", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_space_file_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, reason: str
) -> None:
    path = tmp_path / "space.toml"
    path.write_text(text)
    code = main(
        ["optimize", "--strategy", "regime_adaptive", "--space", str(path),
         "--data", str(tmp_path / "none"), "--walk-forward", "2"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert f"{path}: {key}: " in err if key else f"{path}: " in err
    assert reason in err


def test_a_user_strategy_without_space_needs_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["optimize", "--strategy", "tests.unit.test_optimize_space:NoSpace",
         "--data", str(tmp_path), "--walk-forward", "2"]
    )  # fmt: skip
    assert code == 2
    assert "declares no SPACE: give one with --space" in capsys.readouterr().err
    # A mean-reversion window below the strategy's own bound (window >= 3) names the key.
    with pytest.raises(ConfigError, match=r"<x>: window: 1 is not a valid value"):
        parse_space({"window": (1, 10)}, StrategyConfig(name="mean_reversion"), "<x>")


def test_walk_forward_cuts_rolling_windows_train_twice_test() -> None:
    windows = walk_forward(1000, 100, 3)  # 900 traded bars in 5 segments of 180
    assert [(w.train.first, w.train.stop, w.test.first, w.test.stop) for w in windows] == [
        (100, 460, 460, 640),
        (280, 640, 640, 820),
        (460, 820, 820, 1000),
    ]
    for w in windows:
        assert w.train.lead == w.train.first - 100 and w.test.lead == w.test.first - 100
        assert w.train.stop <= w.test.first  # the search never trades a test bar
    assert walk_forward(1000, 0, 1)[0].train == Span(0, 0, 666)
    with pytest.raises(ValueError, match="too few"):
        walk_forward(105, 100, 3)


def test_stability_is_dispersion_over_the_range() -> None:
    space = (
        Dimension("a", "float", 0.0, 10.0),
        Dimension("b", "float", 1.0, 100.0, log=True),
        Dimension("c", "choice", choices=(True, False)),
    )
    chosen = [{"a": 2.0, "b": 1.0, "c": True}, {"a": 6.0, "b": 100.0, "c": True},
              {"a": 4.0, "b": 10.0, "c": False}]  # fmt: skip
    out = stability(space, chosen)
    assert out["a"]["values"] == [2.0, 6.0, 4.0]
    assert out["a"]["dispersion"] == pytest.approx(math.sqrt(8 / 3) / 10)
    # logs 0, 2, 1 (base 10) over a width of 2 decades: std sqrt(2/3) / 2
    assert out["b"]["dispersion"] == pytest.approx(math.sqrt(2 / 3) / 2)
    assert out["c"]["dispersion"] == pytest.approx(1 / 3)
    assert stability(space, chosen[:1])["a"]["dispersion"] is None


def test_best_toml_round_trips_through_the_config_and_strategy_loaders(tmp_path: Path) -> None:
    import msgspec

    base = load_config(None, {}).strategy
    best = with_values(
        msgspec.structs.replace(base, name="regime_adaptive"),
        {"trend.min_score": 0.25, "trade_ranging": True, "exits.trailing_atr": 9.5,
         "protections.cooldown_bars": 12, "breakout.channel": 36},
    )  # fmt: skip
    path = tmp_path / "best.toml"
    path.write_text(to_toml({"strategy": msgspec.to_builtins(best)}, "# header\n"))
    loaded_cfg = load_config(path, {})
    assert loaded_cfg.strategy == best
    loaded = load_strategy(loaded_cfg.strategy, str(path))
    assert loaded.params["trend"]["min_score"] == 0.25 and loaded.params["trade_ranging"]
    assert loaded.exits.trailing_atr == 9.5 and loaded.protections.cooldown_bars == 12
