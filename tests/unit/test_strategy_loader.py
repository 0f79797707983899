"""``[strategy]``: a built-in or a user's ``module:Class``, its params, exits and protections
checked at load, and every mistake a one-line ``ConfigError`` naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
import numpy as np
import pytest

from quantumtrade.config import load_config
from quantumtrade.errors import ConfigError
from quantumtrade.strategy.base import Book, Features, Targets
from quantumtrade.strategy.builtin import BUILTINS, Trend
from quantumtrade.strategy.exits import ExitConfig, ProtectionConfig
from quantumtrade.strategy.loader import StrategyConfig, load_strategy

HERE = "tests.unit.test_strategy_loader"
REPO = Path(__file__).resolve().parents[2]
QUANTUMTRADE = Path(sys.executable).parent / "quantumtrade"


class FlatParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    lookback: Annotated[int, msgspec.Meta(ge=1)] = 20
    weight: float = 0.05


class Flat:
    """A valid user strategy: a Params struct and its own exit and protection defaults."""

    name = "flat"
    Params = FlatParams
    exits: ClassVar[ExitConfig] = ExitConfig(stop_loss_pct=0.04, max_hold_bars=10)
    protections: ClassVar[ProtectionConfig] = ProtectionConfig(cooldown_bars=3)

    def __init__(self, params: FlatParams) -> None:
        self.params = params

    def targets(self, features: Features, book: Book) -> Targets:
        return Targets(weight=np.zeros(len(features.symbols)))


class NoParams:
    name = "no_params"

    def targets(self, features: Features, book: Book) -> Targets:
        return Targets(weight=np.zeros(len(features.symbols)))


class NoTargets:
    """Has a name but no ``targets``: not a strategy."""

    name = "no_targets"

    def decide(self, features: Features, book: Book) -> Targets:
        return Targets(weight=np.zeros(len(features.symbols)))


class Explodes:
    name = "explodes"

    def __init__(self) -> None:
        raise RuntimeError("no API key")

    def targets(self, features: Features, book: Book) -> Targets:
        raise AssertionError("never built")


NOT_A_CLASS = 42


def load(**fields: Any) -> Any:
    return load_strategy(msgspec.convert(fields, StrategyConfig), "strategy.toml")


def error(**fields: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(**fields)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    assert message.startswith("strategy.toml: "), message
    return info.value


# --- what loads -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_loads_with_its_defaults(name: str) -> None:
    loaded = load(name=name)
    cls: Any = BUILTINS[name]
    assert loaded.name == name
    assert loaded.exits == cls.exits
    assert loaded.params == msgspec.to_builtins(cls.Params())


def test_a_user_class_loads_with_params_and_its_defaults_overridden_key_by_key() -> None:
    loaded = load(
        name=f"{HERE}:Flat",
        params={"lookback": 5},
        exits={"trailing_pct": 0.1},
        protections={"stopout_limit": 2},
    )
    assert isinstance(loaded.strategy, Flat)
    assert loaded.strategy.params == FlatParams(lookback=5, weight=0.05)
    assert loaded.params == {"lookback": 5, "weight": 0.05}
    # The class's own defaults stay where not overridden.
    assert loaded.exits == ExitConfig(stop_loss_pct=0.04, max_hold_bars=10, trailing_pct=0.1)
    assert loaded.protections == ProtectionConfig(cooldown_bars=3, stopout_limit=2)


def test_a_user_class_without_params_or_defaults_gets_the_plain_ones() -> None:
    loaded = load(name=f"{HERE}:NoParams")
    assert loaded.params == {}
    assert loaded.exits == ExitConfig()
    assert loaded.protections == ProtectionConfig()


def test_builtin_nested_params_convert() -> None:
    loaded = load(name="regime_adaptive", params={"trend": {"min_score": 0.7}})
    strategy: Any = loaded.strategy
    assert strategy.params.trend.min_score == 0.7


# --- the name -------------------------------------------------------------------------------


def test_an_unknown_builtin_name_lists_the_builtins() -> None:
    exc = error(name="trendy")
    assert exc.key == "strategy.name"
    assert "'trendy'" in exc.reason
    for builtin in BUILTINS:
        assert builtin in exc.reason


def test_a_module_that_does_not_exist_is_a_config_error_on_the_name() -> None:
    exc = error(name="nonexistent_module:X")
    assert exc.key == "strategy.name"
    assert "cannot import 'nonexistent_module'" in exc.reason


def test_a_module_without_the_class() -> None:
    exc = error(name=f"{HERE}:Missing")
    assert exc.key == "strategy.name"
    assert "has no 'Missing'" in exc.reason


def test_a_name_that_is_not_a_class() -> None:
    exc = error(name=f"{HERE}:NOT_A_CLASS")
    assert exc.key == "strategy.name"
    assert "is not a class" in exc.reason


def test_a_module_that_fails_while_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_strategy_mod.py").write_text("raise RuntimeError('half written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    exc = error(name="broken_strategy_mod:Anything")
    assert exc.key == "strategy.name"
    assert "RuntimeError: half written" in exc.reason


def test_a_class_without_targets_does_not_meet_the_protocol() -> None:
    exc = error(name=f"{HERE}:NoTargets")
    assert exc.key == "strategy.name"
    assert "Strategy protocol" in exc.reason and "targets" in exc.reason


def test_a_class_whose_constructor_raises() -> None:
    exc = error(name=f"{HERE}:Explodes")
    assert exc.key == "strategy.name"
    assert "RuntimeError: no API key" in exc.reason


# --- params, exits, protections -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "key", "reason"),
    [
        ({"name": f"{HERE}:Flat", "params": {"lookbak": 5}}, "strategy.params.lookbak", "unknown"),
        ({"name": f"{HERE}:Flat", "params": {"lookback": "5"}}, "strategy.params.lookback", "int"),
        ({"name": f"{HERE}:Flat", "params": {"lookback": 0}}, "strategy.params.lookback", ">= 1"),
        ({"name": f"{HERE}:NoParams", "params": {"x": 1}}, "strategy.params.x", "no params"),
        ({"name": "trend", "params": {"weigth": 0.1}}, "strategy.params.weigth", "unknown"),
        (
            {"name": "regime_adaptive", "params": {"trend": {"min_score": "high"}}},
            "strategy.params.trend.min_score",
            "float",
        ),
        ({"name": "trend", "exits": {"stop_loss": 2}}, "strategy.exits.stop_loss", "unknown"),
        (
            {"name": "trend", "exits": {"stop_loss_pct": -0.1}},
            "strategy.exits.stop_loss_pct",
            ">= 0",
        ),
        (
            {"name": "trend", "exits": {"max_hold_bars": 1.5}},
            "strategy.exits.max_hold_bars",
            "int",
        ),
        (
            {"name": "trend", "protections": {"cooldown": 3}},
            "strategy.protections.cooldown",
            "unknown",
        ),
        (
            {"name": "trend", "protections": {"stopout_window": 0}},
            "strategy.protections.stopout_window",
            ">= 1",
        ),
    ],
)
def test_a_bad_key_names_itself(fields: dict[str, Any], key: str, reason: str) -> None:
    exc = error(**fields)
    assert exc.key == key
    assert reason in exc.reason


def test_a_bad_strategy_in_a_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "quantumtrade.toml"
    path.write_text('[strategy]\nname = "trend"\n[strategy.params]\nmin_scor = 1.0\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "strategy.params.min_scor"
    assert str(info.value).startswith(str(path))


def test_the_shipped_default_is_a_builtin() -> None:
    assert load(name=StrategyConfig().name).strategy.name in BUILTINS
    assert isinstance(load(name="trend").strategy, Trend)


# --- at the command line --------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QT_CONFIG")}
    return subprocess.run(
        [str(QUANTUMTRADE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_config_with_a_bad_strategy_exits_2_with_one_line_naming_the_key(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[strategy]\nname = "trend"\n[strategy.exits]\nstop_los_pct = 0.05\n')
    done = run_cli("check-config", str(bad), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "strategy.exits.stop_los_pct" in lines[0] and str(bad) in lines[0]
    assert done.stdout == ""
    # Negative control: the same file with the key spelt right passes.
    bad.write_text('[strategy]\nname = "trend"\n[strategy.exits]\nstop_loss_pct = 0.05\n')
    assert run_cli("check-config", str(bad), cwd=tmp_path).returncode == 0


def test_the_console_script_imports_a_strategy_from_the_working_directory(
    tmp_path: Path,
) -> None:
    """The loader promises the working directory is importable; the installed
    ``quantumtrade`` script does not put it on ``sys.path`` by itself."""
    (tmp_path / "cwd_strategy.py").write_text(
        "import numpy as np\n"
        "from quantumtrade.strategy.base import Targets\n\n\n"
        "class Mine:\n"
        "    name = 'mine'\n\n"
        "    def targets(self, features, book):\n"
        "        return Targets(weight=np.zeros(len(features.symbols)))\n"
    )
    good = tmp_path / "good.toml"
    good.write_text('[strategy]\nname = "cwd_strategy:Mine"\n')
    done = run_cli("check-config", str(good), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # From elsewhere the module is not found, with the name as the key.
    elsewhere = run_cli("check-config", str(good), cwd=REPO)
    assert elsewhere.returncode == 2
    assert "strategy.name" in elsewhere.stderr and "cwd_strategy" in elsewhere.stderr
