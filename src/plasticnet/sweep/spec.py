"""A sweep file: which runs a sweep trains (conditions x grid points x seeds) and how its report summarises them.

The format is documented in ``docs/sweeps.md``. Everything is checked when the file is read, before any run starts:
unknown keys, unknown settings, bad values (each run's configuration is resolved as ``plasticnet train`` would).
"""

from __future__ import annotations

import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import from_dict as config_from_dict, resolve, to_dict
from ..errors import ConfigError
from ..tasks import get_task

KEYS = {"task", "preset", "seeds", "time_budget", "cpu_budget", "settings", "conditions", "grid", "report"}
REPORT_KEYS = {"metric", "statistic", "final_points"}
STATISTICS = ("mean", "median")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Run:
    """One (condition, seed): its run directory is ``DIR/condition/seed-S``."""

    condition: str
    seed: int
    preset: str
    settings: dict

    @property
    def path(self) -> str:
        return f"{self.condition}/seed-{self.seed}"

    def config(self, task: str):
        """The run's resolved configuration: the preset, then the settings, then the seed."""
        return resolve(get_task(task).config_cls, task, self.preset, {**self.settings, "seed": self.seed})


@dataclass
class Sweep:
    task: str
    preset: str
    seeds: list[int]
    settings: dict = field(default_factory=dict)
    conditions: dict[str, dict] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    time_budget: Optional[float] = None
    cpu_budget: Optional[float] = None
    report: dict = field(default_factory=dict)

    def runs(self) -> list[Run]:
        """Every run, condition by condition (grid points inside each), seeds innermost."""
        out = []
        points = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        for name, table in (self.conditions or {"default": {}}).items():
            table = dict(table)
            preset = table.pop("preset", self.preset)
            for point in points:
                label = "-".join([name, *(f"{k}={_short(v)}" for k, v in point.items())])
                settings = {**self.settings, **table, **point}
                out += [Run(label, seed, preset, settings) for seed in self.seeds]
        return out

    def condition_names(self) -> list[str]:
        return list(dict.fromkeys(run.condition for run in self.runs()))

    @property
    def metric(self) -> str:
        return self.report.get("metric") or get_task(self.task).experiment.metrics[0]

    @property
    def statistic(self) -> str:
        return self.report.get("statistic", "mean")

    @property
    def final_points(self) -> int:
        return self.report.get("final_points", 1)

    def to_dict(self) -> dict:
        return {"task": self.task, "preset": self.preset, "seeds": self.seeds, "settings": self.settings,
                "conditions": self.conditions, "grid": self.grid, "time_budget": self.time_budget,
                "cpu_budget": self.cpu_budget, "report": self.report}


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of settings, got {value!r}")
    return value


def _check_types(task: str, settings: dict, where: str) -> None:
    """A setting's value must have its field's type (a whole number does for a float)."""
    hints = typing.get_type_hints(get_task(task).config_cls)
    for key, value in settings.items():
        kind = hints.get(key)
        ok = {int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              bool: isinstance(value, bool), str: isinstance(value, str)}.get(kind, True)
        if not ok:
            raise ConfigError(f"{where}: {key} must be {getattr(kind, '__name__', kind)}, got {value!r}")


def from_dict(raw: dict, where: str = "sweep") -> Sweep:
    """Check a sweep's fields and every run's configuration; ConfigError names the first problem."""
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    for key in ("task", "preset", "seeds"):
        if key not in raw:
            raise ConfigError(f"{where}: missing {key!r} (a sweep needs task, preset and seeds)")
    task = get_task(raw["task"]).name
    seeds = raw["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds must be a count or a list of distinct non-negative integers, got "
                          f"{raw['seeds']!r}")
    settings = _table(raw.get("settings", {}), f"{where}: [settings]")
    conditions = _table(raw.get("conditions", {}), f"{where}: [conditions]")
    for name, table in conditions.items():
        _table(table, f"{where}: [conditions.{name}]")
        if not _NAME.match(name):
            raise ConfigError(f"{where}: condition name {name!r} must be letters, digits, '.', '_' or '-' (it names "
                              f"a folder)")
    grid = _table(raw.get("grid", {}), f"{where}: [grid]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: [grid] {key} must be a non-empty list of values, got {values!r}")
    for table, name in [(settings, "[settings]"), (grid, "[grid]")] + [
            (t, f"[conditions.{n}]") for n, t in conditions.items()]:
        if "seed" in table:
            raise ConfigError(f"{where}: {name} sets seed; list the seeds in `seeds` instead")
    budgets = {}
    for key in ("time_budget", "cpu_budget"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"{where}: {key} is a number of seconds above 0, got {value!r}")
        budgets[key] = None if value is None else float(value)
    report = _table(raw.get("report", {}), f"{where}: [report]")
    unknown = sorted(set(report) - REPORT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: [report] unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(REPORT_KEYS))}")
    if report.get("statistic", "mean") not in STATISTICS:
        raise ConfigError(f"{where}: [report] statistic must be mean (with a 95% interval) or median (with min and "
                          f"max), got {report['statistic']!r}")
    final = report.get("final_points", 1)
    if isinstance(final, bool) or not isinstance(final, int) or final < 1:
        raise ConfigError(f"{where}: [report] final_points must be an integer >= 1, got {final!r}")
    sweep = Sweep(task, raw["preset"], seeds, settings, conditions, grid, report=report, **budgets)
    metrics = get_task(task).experiment.metrics
    if report.get("metric") is not None and not isinstance(report["metric"], str):
        raise ConfigError(f"{where}: [report] metric must be a metric's name, e.g. {metrics[0]!r}")
    for run in sweep.runs():
        if "/" in run.condition or "\\" in run.condition:
            raise ConfigError(f"{where}: a grid value makes the folder name {run.condition!r}; use values without "
                              f"slashes")
        _check_types(task, run.settings, f"{where}: run {run.path}")
        try:
            run.config(task)
        except ConfigError as exc:
            raise ConfigError(f"{where}: run {run.path}: {exc}") from None
    return sweep


def load(path: Path) -> Sweep:
    """Read a sweep file (TOML)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser, packaged (installed by the sweep extra)
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return from_dict(raw, str(path))


SWEEP_JSON = "sweep.json"


def save(sweep: Sweep, out: Path) -> None:
    """Record the sweep in ``out/sweep.json``, where status and report find it. A run already on disk must have the
    configuration the sweep gives it now (its checkpoint belongs to that configuration); a setting that an earlier
    version did not record counts at its default, as ``plasticnet train --resume`` reads it."""
    for run in sweep.runs():
        saved = Path(out) / run.path / "config.json"
        if saved.is_file():
            config = run.config(sweep.task)
            before = to_dict(config_from_dict(type(config), json.loads(saved.read_text())["config"]))
            now = to_dict(config)
            changed = sorted(k for k in now if before.get(k) != now[k])
            if changed:
                raise ConfigError(f"{saved.parent} was trained with other settings ({', '.join(changed)}); use "
                                  f"another --out or restore the sweep file")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / SWEEP_JSON).write_text(json.dumps(sweep.to_dict(), indent=2))


def read(out: Path) -> Sweep:
    """The sweep recorded in a sweep directory."""
    path = Path(out) / SWEEP_JSON
    if not path.is_file():
        raise ConfigError(f"{out} holds no sweep ({SWEEP_JSON} missing); give the --out of `plasticnet sweep run`")
    return from_dict(json.loads(path.read_text()), str(path))
