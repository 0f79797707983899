"""Search spaces for ``quantumtrade optimize``: read, check against the strategy, sample.

A space maps a dotted parameter name to a range. Names are keys of ``[strategy.params]``
(nested structs with dots: ``trend.min_score``), or ``exits.<key>`` / ``protections.<key>``
for the strategy's exits and protections. A range is, in a built-in's ``SPACE`` (a tuple) or a
``--space`` TOML file (an array or a table):

* ``(low, high)`` / ``{ low = 0.5, high = 2.0 }``: uniform;
* ``(low, high, step)`` / ``{ low = 12, high = 120, step = 12 }``: a grid from ``low``;
* ``(low, high, "log")`` / ``{ low = 0.01, high = 0.3, log = true }``: log-uniform;
* a tuple of choices / ``{ choices = [true, false] }``.

In a file, names may be written as TOML tables (``[trend]`` then ``min_score = {...}``). A
range's kind follows the parameter's default: an int parameter takes whole-number bounds and
steps, a float one any numbers, a bool (or text) one only choices. Every name must be a
parameter the strategy has, and each range's ends must load (the strategy's own bounds, such as
``window >= 3``); anything else is one ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from quantumtrade.config import read_toml
from quantumtrade.errors import ConfigError
from quantumtrade.strategy.loader import (
    SECTIONS,
    StrategyConfig,
    flat_values,
    load_strategy,
    with_values,
)

Kind = Literal["float", "int", "choice"]
Value = float | int | bool | str
__all__ = ["SECTIONS", "Dimension", "load_space", "parse_space", "suggest", "with_values"]
_SPEC_KEYS = {"low", "high", "step", "log", "choices"}


@dataclass(frozen=True, slots=True)
class Dimension:
    """One searched parameter."""

    name: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    choices: tuple[Value, ...] = ()

    @property
    def width(self) -> float:
        """The range's width (of the logs for a log range): what dispersion is measured in."""
        if self.kind == "choice":
            return 0.0
        if self.log:
            return math.log(self.high) - math.log(self.low)
        return self.high - self.low

    def describe(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"name": self.name, "choices": list(self.choices)}
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        out.update(low=self.low, high=self.high)
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out


class Suggester(Protocol):
    """The part of ``optuna.Trial`` a space samples with."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = ..., log: bool = ...
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = ..., log: bool = ...
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def suggest(trial: Suggester, space: tuple[Dimension, ...]) -> dict[str, Value]:
    """Draw one value per dimension."""
    values: dict[str, Value] = {}
    for d in space:
        if d.kind == "choice":
            values[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.kind == "int":
            values[d.name] = trial.suggest_int(
                d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log
            )
        else:
            values[d.name] = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
    return values


def _defaults(strategy: StrategyConfig, where: str) -> dict[str, Any]:
    """The flattened defaults a space's names must be among (dotted name -> value)."""
    return flat_values(load_strategy(strategy, where))


def _flatten(raw: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables of ranges as dotted names; a table with range keys is a range."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not (_SPEC_KEYS & set(value)):
            if not value:
                raise ConfigError(where, name, "an empty table (a range needs low and high)")
            out.update(_flatten(value, where, f"{name}."))
        else:
            out[name] = value
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dimension(name: str, spec: Any, default: Any, where: str) -> Dimension:
    """One range, checked for shape and for the parameter's type."""

    def bad(reason: str) -> ConfigError:
        return ConfigError(where, name, reason)

    low: Any = None
    high: Any = None
    step: Any = None
    log = False
    choices: tuple[Any, ...] = ()
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise bad(f"unknown key {unknown[0]!r} in the range (low, high, step, log, choices)")
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise bad("choices cannot be given with low, high, step or log")
            if not isinstance(spec["choices"], list | tuple):
                raise bad("choices must be an array")
            choices = tuple(spec["choices"])
        else:
            if "low" not in spec or "high" not in spec:
                raise bad("a range needs low and high")
            low, high, step = spec["low"], spec["high"], spec.get("step")
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise bad("log must be true or false")
    elif isinstance(spec, list | tuple):
        items = tuple(spec)
        numeric = len(items) in (2, 3) and _number(items[0]) and _number(items[1])
        if numeric and len(items) == 2:
            low, high = items
        elif numeric and items[2] == "log":
            low, high, log = items[0], items[1], True
        elif numeric and _number(items[2]):
            low, high, step = items
        else:
            choices = items
    else:
        raise bad(f"{spec!r} is not a range: use {{ low = .., high = .. }} or {{ choices = [..] }}")

    if choices or low is None:
        if len(choices) < 2:
            raise bad("choices needs at least two values")
        if not all(isinstance(c, bool | int | float | str) for c in choices):
            raise bad("choices must be numbers, booleans or text")
        if len(set(choices)) != len(choices):
            raise bad("choices repeats a value")
        return Dimension(name=name, kind="choice", choices=choices)
    if isinstance(default, bool) or not _number(default):
        raise bad(f"takes {type(default).__name__} values: give choices, not a range")
    if not (_number(low) and _number(high)):
        raise bad("low and high must be numbers")
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise bad(f"low ({low}) must be below high ({high})")
    if step is not None and (not _number(step) or not step > 0):
        raise bad(f"step must be a positive number, not {step!r}")
    if log and step is not None:
        raise bad("a range is either stepped or log, not both")
    if log and not low > 0:
        raise bad(f"a log range needs low > 0, not {low}")
    if isinstance(default, int):
        whole = all(isinstance(v, int) for v in (low, high, step) if v is not None)
        if not whole:
            raise bad("an int parameter needs whole-number low, high and step")
        if step is not None and (high - low) % step:
            raise bad(f"high - low ({high - low}) is not a multiple of step ({step})")
        return Dimension(name=name, kind="int", low=low, high=high, step=step, log=log)
    return Dimension(
        name=name,
        kind="float",
        low=float(low),
        high=float(high),
        step=float(step) if step is not None else None,
        log=log,
    )


def parse_space(
    raw: Mapping[str, Any], strategy: StrategyConfig, where: str
) -> tuple[Dimension, ...]:
    """Check ``raw`` (a ``SPACE`` or a parsed TOML file) against ``strategy``; raise
    ``ConfigError(where, name, reason)`` on the first thing wrong."""
    flat = _flatten(raw, where)
    if not flat:
        raise ConfigError(where, "", "the search space is empty")
    defaults = _defaults(strategy, where)
    space: list[Dimension] = []
    for name, spec in flat.items():
        if name not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(where, name, f"{strategy.name} has no such parameter ({known})")
        space.append(_dimension(name, spec, defaults[name], where))
    # Each end of each range must load: the strategy's own bounds (ge, le) are checked there.
    for d in space:
        ends: tuple[Value, ...] = d.choices if d.kind == "choice" else (d.low, d.high)
        for end in ends:
            value = int(end) if d.kind == "int" else end
            try:
                load_strategy(with_values(strategy, {d.name: value}), where)
            except ConfigError as exc:
                raise ConfigError(
                    where, d.name, f"{value!r} is not a valid value: {exc.reason}"
                ) from None
    return tuple(space)


def load_space(strategy: StrategyConfig, path: str | Path | None) -> tuple[Dimension, ...]:
    """The ``--space`` file's space, else the strategy's own ``SPACE``."""
    if path is None:
        where = f"<{strategy.name} SPACE>"
        cls = type(load_strategy(strategy).strategy)
        raw = getattr(cls, "SPACE", None)
        if raw is None:
            raise ConfigError(
                where, "", f"{strategy.name} declares no SPACE: give one with --space FILE.toml"
            )
        return parse_space(raw, strategy, where)
    return parse_space(read_toml(path), strategy, str(path))
