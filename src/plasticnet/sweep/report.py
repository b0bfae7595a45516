"""``plasticnet sweep status`` and ``plasticnet sweep report``: where a sweep stands, and its table as the papers
report their experiments.

A run's final value is its metric averaged over its last ``final_points`` logged points. Per condition, the table
gives the mean with its 95% interval (Student's t; the 2018 paper's binary patterns, Omniglot) or the median with
the minimum and maximum (the meta-RL tasks); the Wilcoxon rank-sum test gives a p-value between every two
conditions. ``report.csv`` holds every statistic whatever the table shows; the figure draws each condition's
median curve with its inter-quartile band.
"""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..train.loop import read_metrics
from . import runs as run_state
from .spec import read

STATES = ("done", "running", "failed", "left")


def status(out: Path) -> dict:
    """Counts of runs per state, and per condition; ``resumable``: runs left with a checkpoint."""
    sweep = read(out)
    by_condition: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys(STATES, 0)
    resumable = 0
    for run in sweep.runs():
        state = run_state.state(Path(out) / run.path)
        totals[state] += 1
        by_condition.setdefault(run.condition, dict.fromkeys(STATES, 0))[state] += 1
        if state == "left" and (Path(out) / run.path / "checkpoint.pt").is_file():
            resumable += 1
    return {"runs": len(sweep.runs()), **totals, "resumable": resumable, "conditions": by_condition}


def format_status(info: dict) -> str:
    lines = [f"{info['runs']} runs: {info['done']} done, {info['running']} running, {info['failed']} failed, "
             f"{info['left']} left ({info['resumable']} of them resume from a checkpoint)"]
    for name, counts in info["conditions"].items():
        lines.append(f"  {name}: " + ", ".join(f"{counts[s]} {s}" for s in STATES))
    return "\n".join(lines)


def final_value(run_dir: Path, metric: str, points: int):
    """The mean of ``metric`` over the run's last ``points`` logged points that have it; None before any."""
    values = [m[metric] for m in read_metrics(run_dir) if metric in m]
    return float(np.mean(values[-points:])) if values else None


def summarise(values: list[float]) -> dict:
    """Every statistic the table may show, for one condition's final values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n = len(v)
    row = {"n": n, "mean": v.mean(), "median": float(np.median(v)), "min": v.min(), "max": v.max(),
           "q25": float(np.percentile(v, 25)), "q75": float(np.percentile(v, 75))}
    half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    row.update(ci95_low=row["mean"] - half, ci95_high=row["mean"] + half)
    return {k: float(x) if k != "n" else x for k, x in row.items()}


def report(out: Path, metric: str | None = None, statistic: str | None = None) -> tuple[str, Path, Path, Path]:
    """Write ``report.md``, ``report.csv`` and ``curves.png`` into the sweep directory ``out``; return the
    Markdown text and the three paths."""
    from scipy.stats import ranksums

    out = Path(out)
    sweep = read(out)
    metric = metric or sweep.metric
    statistic = statistic or sweep.statistic
    if statistic not in ("mean", "median"):
        raise ConfigError(f"unknown statistic {statistic!r}; use mean or median")
    finals: dict[str, list[float]] = {}
    dirs: dict[str, list[Path]] = {}
    iterations: dict[str, list[int]] = {}
    for run in sweep.runs():
        run_dir = out / run.path
        value = final_value(run_dir, metric, sweep.final_points)
        if value is None:
            continue
        finals.setdefault(run.condition, []).append(value)
        dirs.setdefault(run.condition, []).append(run_dir)
        iterations.setdefault(run.condition, []).append(read_metrics(run_dir)[-1]["iteration"])
    if not finals:
        raise ConfigError(f"no run in {out} has logged {metric!r} yet; train first (plasticnet sweep run) or pick "
                          f"another --metric")
    names = [c for c in sweep.condition_names() if c in finals]
    rows = {name: summarise(finals[name]) for name in names}
    expected = {c: sum(1 for r in sweep.runs() if r.condition == c) for c in names}

    if statistic == "mean":
        header = f"| condition | runs | {metric}: mean | 95% interval | iterations |"
        cells = [f"| {c} | {r['n']}/{expected[c]} | {r['mean']:.4g} | {_interval(r)} | {_span(iterations[c])} |"
                 for c, r in rows.items()]
    else:
        header = f"| condition | runs | {metric}: median | min | max | iterations |"
        cells = [f"| {c} | {r['n']}/{expected[c]} | {r['median']:.4g} | {r['min']:.4g} | {r['max']:.4g} | "
                 f"{_span(iterations[c])} |" for c, r in rows.items()]
    final = "its last logged point" if sweep.final_points == 1 else f"the mean of its last {sweep.final_points} " \
                                                                     f"logged points"
    lines = [f"# Sweep report: {sweep.task}, preset {sweep.preset}", "",
             f"Each run's {metric} is {final}; seeds {', '.join(map(str, sweep.seeds))}.", "",
             header, "|" + " --- |" * (header.count("|") - 1), *cells]
    pairs = [(a, b) for a, b in itertools.combinations(names, 2) if len(finals[a]) > 1 and len(finals[b]) > 1]
    pvalues = {(a, b): float(ranksums(finals[a], finals[b]).pvalue) for a, b in pairs}
    if pairs:
        lines += ["", "Wilcoxon rank-sum p-values between conditions:", "",
                  "| | " + " | ".join(names[1:]) + " |", "|" + " --- |" * len(names)]
        for i, a in enumerate(names[:-1]):
            cols = [f"{pvalues[(a, b)]:.3g}" if (a, b) in pvalues else ("" if j <= i else "-")
                    for j, b in enumerate(names[1:], start=1)]
            lines.append(f"| {a} | " + " | ".join(cols) + " |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    with (out / "report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        keys = ["n", "mean", "ci95_low", "ci95_high", "median", "q25", "q75", "min", "max"]
        writer.writerow(["condition", "metric", *keys, "values"])
        for c, r in rows.items():
            writer.writerow([c, metric, *(r[k] for k in keys), " ".join(f"{v:.6g}" for v in finals[c])])
        for (a, b), p in pvalues.items():
            writer.writerow([f"{a} vs {b}", f"rank-sum p ({metric})", *[""] * len(keys), f"{p:.6g}"])
    figure = _curves(out / "curves.png", {c: dirs[c] for c in names}, metric)
    return text, out / "report.md", out / "report.csv", figure


def _interval(row: dict) -> str:
    if math.isnan(row["ci95_low"]):
        return "- (one run)"
    return f"[{row['ci95_low']:.4g}, {row['ci95_high']:.4g}]"


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _curves(path: Path, dirs: dict[str, list[Path]], metric: str) -> Path:
    """Median and inter-quartile band of each condition's curve, over the iterations all its runs reached."""
    from ..plot import curves, plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in dirs.items():
        _, it, values = curves(runs, metric)[0]
        line, = ax.plot(it, np.median(values, 0), label=f"{name} (n={len(values)})")
        if len(values) > 1:
            ax.fill_between(it, *np.percentile(values, [25, 75], axis=0), color=line.get_color(), alpha=0.25)
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric}: median across seeds, band 25-75%")
    return save_figure(fig, path)
