"""Learning curves across runs: runs that differ only by seed are one condition, drawn as mean (band min-max) or
median (band 25-75%), as in the papers' figures; with two conditions, points where the Wilcoxon rank-sum test
separates them (p < 0.05) are marked."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import ranksums  # noqa: E402

from .errors import ConfigError  # noqa: E402
from .train import read_config, read_metrics  # noqa: E402

IGNORED = {"seed", "device", "iterations", "log_every", "save_every"}
TIME_AXES = {"seconds": "seconds of training", "cpu_seconds": "CPU seconds of training"}


def _condition(run_dir: Path) -> tuple[str, dict]:
    task, preset, cfg = read_config(run_dir)
    return task, {"task": task, "preset": preset, **{k: v for k, v in vars(cfg).items() if k not in IGNORED}}


def _labels(conditions: list[dict]) -> list[str]:
    varying = [k for k in conditions[0] if len({str(c.get(k)) for c in conditions}) > 1]
    keys = varying or [k for k in ("task", "preset", "model") if k in conditions[0]]
    return [" ".join(f"{c[k]}" if k in ("task", "preset", "model") else f"{k}={c[k]}" for k in keys)
            for c in conditions]


def default_metric(run_dir: Path) -> str:
    """The first metric a run logged that is not a position in time (iteration, seconds, CPU seconds)."""
    first = read_metrics(run_dir)
    return next((k for k in (first[0] if first else {}) if k != "iteration" and k not in TIME_AXES), "loss")


def curves(run_dirs: list[Path], metric: str, x: str = "iteration", labels: list[str] | None = None):
    """Group runs into conditions; return [(label, x values, values (n_seeds, n_points))]. ``x`` is
    ``"iteration"``, ``"seconds"`` (wall clock) or ``"cpu_seconds"`` (the run's CPU time, fair between runs that
    shared a machine unevenly): for time axes, each run is interpolated onto its condition's first run's logged
    times, up to where the shortest run of the condition ends. A condition's label names the settings that differ
    between conditions, unless ``labels`` gives one per condition, in the order their first runs come."""
    groups: dict[str, list[Path]] = defaultdict(list)
    conditions: dict[str, dict] = {}
    for d in run_dirs:
        _, cond = _condition(Path(d))
        key = repr(sorted(cond.items()))
        groups[key].append(Path(d))
        conditions[key] = cond
    keys = list(groups)
    if labels is not None and len(labels) != len(keys):
        raise ConfigError(f"{len(labels)} --label for {len(keys)} conditions (runs that differ only by seed are one); "
                          f"give one --label per condition, in the order of their first runs")
    out = []
    for key, label in zip(keys, labels or _labels([conditions[k] for k in keys])):
        series = []
        for d in groups[key]:
            points = [m for m in read_metrics(d) if metric in m]
            if not points:
                raise ConfigError(f"{d} has no logged {metric!r}; train it first or pick another --metric")
            series.append(points)
        if x in TIME_AXES:
            if any(x not in p for s in series for p in s):
                raise ConfigError(f"a run among {[str(d) for d in groups[key]]} logged no {x!r}; use --x iteration")
            end = min(s[-1][x] for s in series)
            grid = np.array([p[x] for p in series[0] if p[x] <= end])
            values = np.array([np.interp(grid, [p[x] for p in s], [p[metric] for p in s]) for s in series])
            out.append((label, grid, values))
            continue
        n = min(len(s) for s in series)
        iterations = np.array([p["iteration"] for p in series[0][:n]])
        values = np.array([[p[metric] for p in s[:n]] for s in series])
        out.append((label, iterations, values))
    return out


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each point and the ``window - 1`` before it (fewer at the start), along the last axis, as the
    papers' figures smooth their curves."""
    sums = np.cumsum(values, axis=-1)
    shifted = np.concatenate([np.zeros_like(sums[..., :window]), sums[..., :-window]], axis=-1)[..., :sums.shape[-1]]
    counts = np.minimum(np.arange(1, values.shape[-1] + 1), window)
    return (sums - shifted) / counts


def plot(run_dirs: list[Path], out: Path, metric: str, stat: str = "mean", log_y: bool = False,
         x: str = "iteration", smooth: int = 1, labels: list[str] | None = None) -> Path:
    if stat not in ("mean", "median"):
        raise ConfigError(f"unknown --stat {stat!r}; use mean or median")
    if smooth < 1:
        raise ConfigError(f"--smooth is a number of logged points, at least 1; got {smooth}")
    data = [(label, it, _moving_average(values, smooth)) for label, it, values in curves(run_dirs, metric, x, labels)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, it, values in data:
        if stat == "mean":
            centre, low, high = values.mean(0), values.min(0), values.max(0)
        else:
            centre, low, high = np.median(values, 0), *np.percentile(values, [25, 75], axis=0)
        line, = ax.plot(it, centre, label=f"{label} (n={len(values)})")
        if len(values) > 1:
            ax.fill_between(it, low, high, color=line.get_color(), alpha=0.25)
    if x == "iteration" and len(data) == 2 and min(len(d[2]) for d in data) > 1:
        n = min(len(data[0][1]), len(data[1][1]))
        p = np.array([ranksums(data[0][2][:, i], data[1][2][:, i]).pvalue for i in range(n)])
        marks = data[0][1][:n][p < 0.05]
        ymin = ax.get_ylim()[0]
        ax.plot(marks, np.full(len(marks), ymin), "k|", label="p < 0.05 (Wilcoxon rank-sum)")
    ax.set_xlabel(TIME_AXES.get(x, "iteration"))
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric}: {stat} across seeds" + (", band min-max" if stat == "mean" else ", band 25-75%")
                 + (f", moving average of {smooth} points" if smooth > 1 else ""))
    return save_figure(fig, out)


def save_figure(fig, out, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to ``out`` (creating its folder) and close it; returns the path."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
