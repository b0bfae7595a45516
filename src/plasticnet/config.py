"""Run configurations: a dataclass per task, presets as JSON data files, overrides from the command line.

A task's configuration class subclasses :class:`RunConfig`; its presets live in ``plasticnet/configs/TASK.json``
as ``{"preset-name": {"field": value, ...}}``; a preset may start from another with ``"extends": "other-name"``
and list only what differs (the papers' conditions differ in one or two settings). Every field can be overridden on the command line
(``--field-name VALUE``), so a preset is only a starting point.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, ClassVar

from .errors import ConfigError

__all__ = ["RunConfig", "load_presets", "require_choice", "require_positive", "require_range", "resolve", "to_dict",
           "from_dict"]

MAX_SEED = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38  # settings become single-precision tensors
MAX_RATE = 1e6  # beyond it an update overflows single precision (Adam's lr of 1e300 did), not a divergent run


@dataclass
class RunConfig:
    """Fields every task shares. :meth:`validate` checks them; a task's configuration extends it with its own
    fields and checks (calling ``super().validate()``). Before that, :func:`from_dict` checks every field's type and
    that every float is finite, so a check need only say what range a value must be in."""

    seed: int = 0
    iterations: int = 1000
    batch_size: int = 1
    lr: float = 3e-4
    device: str = "cpu"
    log_every: int = 10
    save_every: int = 500

    min_iterations: ClassVar[int] = 1  # a task with its own schedule allows 0: "the whole schedule"

    def validate(self) -> None:
        require_range(self, "seed", 0, MAX_SEED)
        require_range(self, "iterations", self.min_iterations, math.inf)
        require_positive(self, "batch_size", "log_every", "save_every")
        require_range(self, "lr", 0, MAX_RATE, low_open=True)


def require_positive(config, *names: str) -> None:
    """Refuse, in one line, the first of ``names`` whose value is below 1 (counts, lengths, sizes)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")


def require_range(config, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    """Refuse ``name`` outside [low, high] (an open end excludes that bound): rates, coefficients, probabilities."""
    value = getattr(config, name)
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        bounds = (f"{'(' if low_open else '['}{_number(low)}, {_number(high)}"
                  f"{')' if high_open or math.isinf(high) else ']'}")
        raise ConfigError(f"{name} must be in {bounds}, got {value}")


def _number(x: float) -> str:
    return str(int(x)) if isinstance(x, int) or (math.isfinite(x) and x == int(x) and abs(x) < 1e6) else f"{x:g}"


def require_choice(config, name: str, choices) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")


def _check_types(config) -> None:
    """Each field holds its declared type (an int is a float too), and every float is finite."""
    hints = typing.get_type_hints(type(config))
    for field in fields(config):
        value, kind = getattr(config, field.name), hints[field.name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            setattr(config, field.name, value)
        if kind in (bool, int, float, str) and (type(value) is not kind):
            raise ConfigError(f"{field.name} must be {kind.__name__}, got {value!r}")
        if kind is float and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise ConfigError(f"{field.name} must be a finite number within single precision (|x| <= 3.4e38), "
                              f"got {value}")


def load_presets(task: str) -> dict[str, dict[str, Any]]:
    text = resources.files("plasticnet.configs").joinpath(f"{task}.json").read_text()
    raw = json.loads(text)
    return {name: _expand(raw, name, ()) for name in raw}


def _expand(raw: dict[str, dict[str, Any]], name: str, chain: tuple[str, ...]) -> dict[str, Any]:
    values = dict(raw[name])
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if parent not in raw or parent in chain + (name,):
        raise ConfigError(f"preset {name!r} extends {parent!r}, which is unknown or extends it in turn")
    return {**_expand(raw, parent, chain + (name,)), **values}


def _check_fields(cls, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def resolve(cls, task: str, preset: str, overrides: dict[str, Any]) -> Any:
    """Defaults, then the preset, then the overrides (None values are ignored)."""
    presets = load_presets(task)
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r} for {task}; choose one of {', '.join(presets)}")
    values = dict(presets[preset])
    _check_fields(cls, values, f"preset {preset}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    _check_fields(cls, values, "override")
    return from_dict(cls, values)


def from_dict(cls, values: dict[str, Any]) -> Any:
    _check_fields(cls, values, cls.__name__)
    config = cls(**values)
    _check_types(config)
    check = getattr(config, "validate", None)
    if check is not None:
        check()
    return config


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
