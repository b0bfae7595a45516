"""The ``plasticnet`` command line. Every error the user can fix ends in one line on stderr and exit code 2; a run
stopped at a non-finite value ends in one line and exit code 3."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing
from pathlib import Path

from .errors import PlasticnetError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit 2) instead of usage text plus the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _field_type(field, hints):
    kind = hints[field.name]
    return {"int": int, "float": float, "str": str, "bool": bool}.get(getattr(kind, "__name__", str(kind)), str)


def _add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One ``--field-name`` flag per configuration field (``metadata={"flag": NAME}`` renames it); unset flags stay
    None so presets apply."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group("settings (override the preset)")
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.metadata.get("flag", field.name.replace("_", "-"))
        kind = _field_type(field, hints)
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            group.add_argument(flag, dest=field.name, type=kind, default=None, metavar=kind.__name__.upper(),
                               help=f"default {field.default}")


def _add_train(sub) -> None:
    from .config import load_presets
    from .tasks import TASKS

    train = sub.add_parser("train", help="train a task into a run directory")
    tasks = train.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=_Parser)
    for task in TASKS.values():
        p = tasks.add_parser(task.name, help=task.help)
        presets = list(load_presets(task.name))
        p.add_argument("--preset", default=presets[0], help=f"one of {', '.join(presets)} (default {presets[0]})")
        p.add_argument("--out", type=Path, help="run directory (default runs/TASK/PRESET-seedS-TIME)")
        p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its checkpoint")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--dry-run", action="store_true",
                       help="build the experiment, print its parameter count and resolved settings, train nothing")
        p.add_argument("--json", action="store_true", help="with --dry-run: print one JSON object")
        p.add_argument("--time-budget", type=float, metavar="SECONDS",
                       help="stop at the first logged point after this many seconds (continue later with --resume)")
        p.add_argument("--cpu-budget", type=float, metavar="SECONDS",
                       help="stop at the first logged point once the run has used this many CPU seconds, counted "
                            "across resumes (fair between runs that share cores)")
        p.add_argument("--on-nonfinite", choices=("stop", "skip"), default="stop",
                       help="at a NaN or infinite loss or gradient: stop before the update, exit code 3, the last "
                            "checkpoint kept (default); or skip that update and count it in the metrics (skipped)")
        _add_config_flags(p, task.config_cls)
        p.set_defaults(func=_run_train, config_cls=task.config_cls)


def _overrides(args, config_cls) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}


def _print_dry_run(info: dict, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(info))
        return
    print(f"{info['task']} (preset {info['preset']}): {info['parameters']:,} parameters, "
          f"{info['iterations']:,} iterations")
    for key, value in info.items():
        if key not in ("task", "preset", "parameters", "iterations", "config"):
            print(f"  {key}: {value}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))


def _run_train(args) -> int:
    from .config import from_dict, resolve, to_dict
    from .errors import ConfigError
    from .train import read_config, train
    from .train.loop import check_budget

    overrides = _overrides(args, args.config_cls)
    check_budget("--time-budget", args.time_budget)
    check_budget("--cpu-budget", args.cpu_budget)
    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run")
    if args.dry_run:
        from .train.loop import dry_run

        if args.resume is not None:
            raise ConfigError("--dry-run builds a new run; drop --resume")
        cfg = resolve(args.config_cls, args.task, args.preset, overrides)
        _print_dry_run(dry_run(args.task, cfg, args.preset), args.json)
        return 0
    if args.resume is not None:
        task, preset, saved = read_config(args.resume)
        if task != args.task:
            raise ConfigError(f"{args.resume} holds a {task} run, not {args.task}; use `plasticnet train {task}`")
        changed = {k: v for k, v in overrides.items()
                   if v is not None and k != "iterations" and v != getattr(saved, k)}
        if changed:
            raise ConfigError(f"a resumed run keeps its settings; only --iterations may change, not "
                              f"{', '.join('--' + k.replace('_', '-') for k in changed)}")
        iterations = saved.iterations if overrides["iterations"] is None else overrides["iterations"]
        cfg = from_dict(args.config_cls, {**to_dict(saved), "iterations": iterations})
        out = train(task, cfg, args.resume, preset=preset, resume=True, progress=not args.no_progress,
                    time_budget=args.time_budget, cpu_budget=args.cpu_budget, on_nonfinite=args.on_nonfinite)
    else:
        cfg = resolve(args.config_cls, args.task, args.preset, overrides)
        out = args.out or Path("runs") / args.task / f"{args.preset}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        out = train(args.task, cfg, out, preset=args.preset, progress=not args.no_progress,
                    time_budget=args.time_budget, cpu_budget=args.cpu_budget, on_nonfinite=args.on_nonfinite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, the process that wrote the run says so
        print(f"run saved in {out}")
    return 0


def _add_task_command(sub, command: str, help: str, hook: str, arguments_hook: str) -> None:
    """A command with one sub-command per task whose module defines ``hook`` (run) and ``arguments_hook``."""
    from .tasks import TASKS

    tasks_with_hook = [t for t in TASKS.values() if t.hook(hook) is not None]
    if not tasks_with_hook:
        return
    p = sub.add_parser(command, help=help)
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=_Parser)
    for task in tasks_with_hook:
        q = tasks.add_parser(task.name, help=task.help)
        task.hook(arguments_hook)(q)
        q.set_defaults(func=task.hook(hook))


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="learning curves of one or more runs (seeds of a condition are grouped), or a "
                                    "task's figure of one trained run (--figure)")
    p.add_argument("runs", nargs="+", type=Path, metavar="DIR")
    p.add_argument("--metric", help="metric to plot (default: the first one logged)")
    p.add_argument("--stat", default="mean", choices=["mean", "median"])
    p.add_argument("--log-y", action="store_true")
    p.add_argument("--x", default="iteration", choices=["iteration", "seconds", "cpu_seconds"],
                   help="horizontal axis (seconds: runs compared at equal wall-clock time; cpu_seconds: at equal "
                        "CPU time, for runs that shared a machine)")
    p.add_argument("--smooth", type=int, default=1, metavar="K", help="moving average over K logged points")
    p.add_argument("--label", action="append", metavar="TEXT",
                   help="legend text of a condition, once per condition in the order of their first runs (default: "
                        "the settings that differ between them)")
    p.add_argument("--figure", metavar="NAME", help="draw the task's figure NAME of one run (a run directory or a "
                                                    "checkpoint file) instead of curves, e.g. images: completion")
    p.add_argument("--seed", type=int, default=0, help="with --figure: which held-out episodes to draw")
    p.add_argument("--out", type=Path, help="PNG to write (default curves.png, or NAME.png with --figure)")
    p.set_defaults(func=_run_plot)


def _run_figure(args) -> int:
    from .errors import ConfigError
    from .tasks import get_task
    from .train.checkpoint import read_model

    if len(args.runs) != 1:
        raise ConfigError(f"--figure draws one run; got {len(args.runs)}")
    task = read_model(args.runs[0])["task"]
    figures = get_task(task).hook("FIGURES") or {}
    if args.figure not in figures:
        known = ", ".join(figures) or "none"
        raise ConfigError(f"the {task} task has no figure {args.figure!r}; its figures: {known}")
    out = args.out or Path(f"{args.figure}.png")
    print(f"wrote {figures[args.figure](args.runs[0], out, seed=args.seed)}")
    return 0


def _run_plot(args) -> int:
    from .plot import default_metric, plot

    if args.figure is not None:
        return _run_figure(args)
    args.out = args.out or Path("curves.png")
    metric = args.metric or default_metric(args.runs[0])
    print(f"wrote {plot(args.runs, args.out, metric, args.stat, args.log_y, args.x, args.smooth, args.label)}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="a model-only copy of a run's checkpoint for sharing (no optimiser state), as "
                                      "a safetensors file that holds no code")
    p.add_argument("run", type=Path, metavar="DIR", help="run directory, checkpoint file or earlier export")
    p.add_argument("--out", type=Path, required=True, help="file to write (e.g. model.safetensors); an existing "
                                                           "file is replaced only if it is a plasticnet export")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from .errors import ConfigError
    from .train.checkpoint import export_model, read_model

    if args.out.exists():
        if args.out.is_dir():
            raise ConfigError(f"{args.out} is a folder; give the file to write, e.g. {args.out / 'model.safetensors'}")
        try:
            read_model(args.out)
        except PlasticnetError:
            raise ConfigError(f"{args.out} exists and is not a plasticnet model; choose another --out") from None
    out = export_model(args.run, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def _add_bench(sub) -> None:
    from .bench import SUITES

    p = sub.add_parser("bench", help="throughput and memory against a plain formulation, measured in the same run")
    p.add_argument("suite", choices=[*SUITES, "all"], help="one suite, or all of them at the issues' settings")
    p.add_argument("--batch-sizes", type=int, nargs="+",
                   help="default: the suite's own (pattern 1 8, and 32 on a GPU; maze 30, cue-reward 30, ptb 20, "
                        "memory 16, trace 1 32)")
    p.add_argument("--rounds", type=int, default=0,
                   help="interleaved timings of each formulation; the fastest counts (default: about 4 s worth)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    from .bench import DEFAULT_BATCH_SIZES, SUITES, all_suites
    from .errors import ConfigError
    from .train.loop import resolve_device

    device = resolve_device(args.device)
    if args.suite == "all":
        if args.batch_sizes:
            raise ConfigError("`bench all` runs each suite at its own batch sizes; drop --batch-sizes, or name a suite")
        all_suites(args.rounds, device)
        return 0
    SUITES[args.suite](args.batch_sizes or DEFAULT_BATCH_SIZES[args.suite][device.type == "cuda"], args.rounds, device)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train the 1000-bit plastic network on CPU and draw its learning curve")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--budget", type=float, default=300.0, help="seconds of training at most (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: at batch 1 a second thread gains little, and on a busy machine "
                        "two threads waiting on each other ran 15 times slower)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .config import resolve
    from .errors import ConfigError
    from .plot import plot
    from .tasks.pattern import PatternConfig
    from .train import read_metrics, train
    from .train.loop import check_budget

    import torch

    check_budget("--budget", args.budget)
    if args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    cfg = resolve(PatternConfig, "pattern", "paper-1000bit", {"seed": args.seed, "log_every": 10})
    print(f"Training the 1000-bit plastic network (1001 neurons, {cfg.episode_length}-step episodes) on CPU until "
          f"the bit error falls below 1% over 10 episodes, {args.budget:.0f} s at most.")
    # replace=True: an earlier demo's run in --out is trained afresh; a folder plasticnet did not make is refused
    train("pattern", cfg, args.out, preset="paper-1000bit", stop_when=lambda m: m["error"] < 0.01,
          time_budget=args.budget, replace=True)
    last = read_metrics(args.out)[-1]
    png = plot([args.out], args.out / "curve.png", "error", log_y=True)
    print(f"bit error {last['error']:.4f} after {last['iteration']} episodes, {last['seconds']:.0f} s; "
          f"learning curve: {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .data.commands import register as register_data
    from .sweep.commands import register as register_sweep

    parser = _Parser(prog="plasticnet", description="Plastic and neuromodulated plastic networks: "
                                                   "train, evaluate, plot and benchmark the papers' experiments.")
    parser.add_argument("--version", action="version", version=f"plasticnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_task_command(sub, "eval", "evaluate a trained checkpoint", "evaluate", "add_eval_arguments")
    _add_task_command(sub, "animate", "a GIF of a trained agent's episodes (maze)", "animate",
                      "add_animate_arguments")
    _add_plot(sub)
    _add_export(sub)
    _add_bench(sub)
    _add_demo(sub)
    register_data(sub)
    register_sweep(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PlasticnetError as exc:
        print(f"plasticnet: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("plasticnet: interrupted; the checkpoint holds every finished iteration", file=sys.stderr)
        return 130
