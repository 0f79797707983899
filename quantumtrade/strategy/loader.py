"""``[strategy]``: which strategy trades, with which parameters, exits and protections.

``name`` is a built-in (``trend``, ``mean_reversion``, ``breakout``, ``regime_adaptive``) or a
user's class as ``"package.module:ClassName"`` (importable from ``sys.path``, which includes the
working directory). ``[strategy.params]`` is validated against the class's ``Params`` struct,
``[strategy.exits]`` / ``[strategy.protections]`` override the class's defaults key by key:
an unknown key or a wrong type is a ``ConfigError`` naming ``strategy.params.<key>``. A name
that does not load, or a class that does not meet the ``Strategy`` protocol, is a
``ConfigError`` on ``strategy.name`` (one line, exit 2 at the command line).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from quantumtrade.errors import ConfigError
from quantumtrade.strategy.base import Strategy
from quantumtrade.strategy.builtin import BUILTINS
from quantumtrade.strategy.exits import ExitConfig, ProtectionConfig

DEFAULT_STRATEGY = "regime_adaptive"
SECTIONS = ("exits", "protections")
"""Dotted-name prefixes that address ``[strategy.exits]`` / ``[strategy.protections]``."""
_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class StrategyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str = DEFAULT_STRATEGY
    """A built-in, or ``"package.module:ClassName"``."""
    params: dict[str, Any] = {}
    """The strategy's own parameters (``[strategy.params]``), checked against its ``Params``."""
    exits: dict[str, Any] = {}
    """Overrides of the strategy's default exits (``ExitConfig`` keys)."""
    protections: dict[str, Any] = {}
    """Overrides of its default protections (``ProtectionConfig`` keys)."""
    capital: Annotated[float, msgspec.Meta(gt=0)] = 100_000.0
    """Equity the weights are fractions of, before PnL (a backtest's ``--initial-equity``)."""
    max_weight: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.1
    """Largest |weight| of one symbol."""
    max_gross: Annotated[float, msgspec.Meta(gt=0, le=100)] = 1.0
    """Largest sum of |weight| over the book; entries beyond it wait (best score first)."""
    allow_short: bool = False
    """Spot venues cannot short: negative target weights become 0 unless this is true."""
    rebalance_threshold: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    """A held position's target is resized only when the strategy's weight differs from the
    current target's by more than this share of it (a repeated signal never trades)."""
    min_order_notional: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Differences between target and position worth less than this are not traded."""
    regime_blind: bool = False
    """Withhold the regime from the strategy (every symbol one unlabelled regime, confidence
    1): the baseline ``backtest --compare`` measures the regime's worth against."""


@dataclass(frozen=True, slots=True)
class LoadedStrategy:
    strategy: Strategy
    name: str
    exits: ExitConfig
    protections: ProtectionConfig
    params: dict[str, Any]
    """The parameters in force (defaults filled in), for summaries."""


def _resolve(name: str, where: str) -> type:
    builtin = BUILTINS.get(name)
    if builtin is not None:
        return builtin
    if not _PATH.match(name):
        known = ", ".join(sorted(BUILTINS))
        raise ConfigError(
            where, "strategy.name", f"{name!r} is neither a built-in ({known}) nor module:Class"
        )
    module_name, _, class_name = name.partition(":")
    # ``python -m`` puts the working directory on sys.path, the installed ``quantumtrade``
    # script does not: add it (last, so it shadows nothing installed).
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(where, "strategy.name", f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # a user's module that fails while importing
        raise ConfigError(
            where,
            "strategy.name",
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(where, "strategy.name", f"{module_name!r} has no {class_name!r}")
    if not inspect.isclass(cls):
        raise ConfigError(where, "strategy.name", f"{name!r} is not a class")
    return cls


def _convert(data: dict[str, Any], kind: type[Any], key: str, where: str) -> Any:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = re.search(r"unknown field `([^`]+)`", text)
        at = re.search(r"at `\$\.?([^`]*)`", text)
        sub = m.group(1) if m else (at.group(1) if at else "")
        reason = "unknown key" if m else re.sub(r" - at `[^`]*`", "", text).replace("`", "")
        raise ConfigError(where, f"{key}.{sub}" if sub else key, reason) from None


def _merged(default: Any, overrides: dict[str, Any], key: str, where: str) -> Any:
    base = msgspec.to_builtins(default)
    return _convert({**base, **overrides}, type(default), key, where)


def load_strategy(config: StrategyConfig, where: str = "<config>") -> LoadedStrategy:
    """Build the configured strategy, or raise ``ConfigError`` naming the key."""
    cls = _resolve(config.name, where)
    params_type = getattr(cls, "Params", None)
    if params_type is not None:
        if not (inspect.isclass(params_type) and issubclass(params_type, msgspec.Struct)):
            raise ConfigError(
                where, "strategy.name", f"{config.name}: Params must be a msgspec.Struct class"
            )
        params = _convert(config.params, params_type, "strategy.params", where)
        args: tuple[Any, ...] = (params,)
        in_force: dict[str, Any] = msgspec.to_builtins(params)
    else:
        if config.params:
            first = next(iter(config.params))
            raise ConfigError(
                where, f"strategy.params.{first}", f"unknown key ({config.name} takes no params)"
            )
        args, in_force = (), {}
    try:
        strategy = cls(*args)
    except Exception as exc:
        raise ConfigError(
            where, "strategy.name", f"{config.name}() failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(strategy, Strategy) or not callable(getattr(strategy, "targets", None)):
        raise ConfigError(
            where,
            "strategy.name",
            f"{config.name} does not meet the Strategy protocol (needs a name attribute and "
            "a targets(features, book) method)",
        )
    exits = _merged(getattr(cls, "exits", ExitConfig()), config.exits, "strategy.exits", where)
    protections = _merged(
        getattr(cls, "protections", ProtectionConfig()),
        config.protections,
        "strategy.protections",
        where,
    )
    return LoadedStrategy(
        strategy=strategy,
        name=str(getattr(strategy, "name", config.name)),
        exits=exits,
        protections=protections,
        params=in_force,
    )


def with_values(strategy: StrategyConfig, values: Mapping[str, Any]) -> StrategyConfig:
    """``strategy`` with ``values`` (dotted names) written into its params, exits, protections."""
    tree: dict[str, Any] = {
        "params": _copy(strategy.params),
        **{s: dict(getattr(strategy, s)) for s in SECTIONS},
    }
    for name, value in values.items():
        head, _, rest = name.partition(".")
        if head in SECTIONS and rest:
            tree[head][rest] = value
            continue
        node = tree["params"]
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return msgspec.structs.replace(strategy, **tree)


def _copy(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def flat_values(loaded: LoadedStrategy) -> dict[str, Any]:
    """Every parameter in force by dotted name: params (nested with dots), ``exits.*``,
    ``protections.*`` (the names a search space and ``ParametersChanged`` use)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, tree: Mapping[str, Any]) -> None:
        for key, value in tree.items():
            if isinstance(value, Mapping):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = value

    walk("", loaded.params)
    walk("exits.", msgspec.to_builtins(loaded.exits))
    walk("protections.", msgspec.to_builtins(loaded.protections))
    return flat
