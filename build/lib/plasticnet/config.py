"""Run configurations: a dataclass per task, presets as JSON data files, overrides from the command line.

A task's configuration class subclasses :class:`RunConfig`; its presets live in ``plasticnet/configs/TASK.json``
as ``{"preset-name": {"field": value, ...}}``; a preset may start from another with ``"extends": "other-name"``
and list only what differs (the papers' conditions differ in one or two settings). Every field can be overridden on the command line
(``--field-name VALUE``), so a preset is only a starting point.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from .errors import ConfigError

__all__ = ["RunConfig", "load_presets", "require_positive", "resolve", "to_dict", "from_dict"]


@dataclass
class RunConfig:
    """Fields every task shares."""

    seed: int = 0
    iterations: int = 1000
    batch_size: int = 1
    lr: float = 3e-4
    device: str = "cpu"
    log_every: int = 10
    save_every: int = 500


def require_positive(config, *names: str) -> None:
    """Refuse, in one line, the first of ``names`` whose value is below 1 (counts, lengths, sizes)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")


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
    check = getattr(config, "validate", None)
    if check is not None:
        check()
    return config


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
