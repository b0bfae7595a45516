"""The training loop every task shares: seeds, logging, checkpoints, resuming, a progress bar, and the guards that
keep a run's work safe (one writer per run directory, no update from a non-finite value, failed writes reported).

Optional experiment attributes (besides ``model``, ``step``, ``state_dict`` and ``load_state_dict``):
``planned_iterations``, the length of an experiment's own schedule (the run stops there, or at ``cfg.iterations``
when that is positive and smaller); ``optimizer``, whose ``step`` the non-finite guard wraps
(:mod:`.nonfinite`); ``validate(iteration, final) -> dict[str, float]``, called after every step (``final`` at
the last one): whatever it returns (held-out ``val_*`` metrics when it is time for them, a PTB epoch's results) is
logged with a point at that iteration, even between regular logging points; an empty dict logs nothing; and
``data_parallel = True``, which lets it train under torchrun. Under torchrun ``state_dict`` is called in every
process and rank 0's result written: it must be the one-process state (PTB gathers its shards' recurrent state).

A run directory holds ``config.json`` (task, preset and the fully resolved configuration), ``metrics.jsonl`` (one
JSON object per logged point: ``iteration``, ``seconds`` of training and ``cpu_seconds`` of this process's CPU time
(both continued across resumes) and the task's metrics averaged over the window since the previous point; with
``on_nonfinite="skip"`` also ``skipped``, the iterations of the window left out), TensorBoard logs under ``tb/``,
``checkpoint.pt`` (written atomically) and ``.lock`` (see :mod:`.lock`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from ..config import from_dict, to_dict
from ..errors import CheckpointError, ConfigError, NonFiniteError, PlasticnetError
from . import checkpoint as ckpt
from . import distributed
from .lock import LOCK, RunLock
from .nonfinite import MODES, NonFiniteGuard, NonFiniteStep, first_non_finite, weights_finite


def get_task(name: str):
    """The task registry, imported when first used: the tasks import this package (``train.a2c``,
    ``train.checkpoint``), so importing them with this module would make an import cycle."""
    from ..tasks import get_task as lookup

    return lookup(name)


CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
# What plasticnet writes in a run directory (the demo adds its curve): the only entries it may ever remove.
RUN_ENTRIES = (CONFIG, METRICS, TENSORBOARD, ckpt.CHECKPOINT, LOCK, "curve.png")
# What `plasticnet sweep` adds beside them (plasticnet.sweep.runs: the running heartbeat, done.json, failed.txt):
# accepted in a run directory, and left for the sweep to manage.
SWEEP_MARKERS = ("running", "done.json", "failed.txt")


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but no CUDA device is available; use --device cpu")
    return device


def read_config(run_dir: Path) -> tuple[str, str, object]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path} not found; give a run directory written by `plasticnet train`")
    try:
        saved = json.loads(path.read_text())
        task = get_task(saved["task"])
        return saved["task"], saved.get("preset", ""), from_dict(task.config_cls, saved["config"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a plasticnet run configuration ({type(exc).__name__}: {exc})") from None


def read_metrics(run_dir: Path) -> list[dict]:
    """The logged points of a run. A last line cut short (a run killed while writing it) is left out; damage
    anywhere else is an error."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").split("\n")
    points = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            point = json.loads(line)
            if not isinstance(point, dict) or "iteration" not in point:
                raise ValueError("not a logged point")
        except ValueError:
            if number == len(lines):  # no newline after it: the write was cut short
                continue
            raise CheckpointError(f"{path} line {number} is not a logged point; remove that line to continue") from None
        points.append(point)
    return points


def _keep_metrics_up_to(run_dir: Path, iteration: int) -> tuple[float, float]:
    """On resume, drop points logged after the checkpoint (those iterations are trained again) and a torn last
    line. Returns the training time and CPU time logged up to the checkpoint, from which the resumed run's clocks
    continue."""
    kept = [m for m in read_metrics(run_dir) if m["iteration"] <= iteration]
    distributed.barrier()  # under torchrun every process reads them, then rank 0 alone rewrites the file
    if distributed.rank() == 0:
        ckpt._write_atomic(Path(run_dir) / METRICS,
                           lambda f: f.write("".join(json.dumps(m) + "\n" for m in kept).encode()))
    if not kept:
        return 0.0, 0.0
    return kept[-1]["seconds"], kept[-1].get("cpu_seconds", kept[-1]["seconds"])


def total_iterations(cfg, experiment) -> int:
    """``cfg.iterations``, or an experiment's own schedule (``planned_iterations``) capped by a positive
    ``cfg.iterations``."""
    planned = getattr(experiment, "planned_iterations", None)
    if planned is None:
        return cfg.iterations
    return planned if cfg.iterations <= 0 else min(planned, cfg.iterations)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dry_run(task_name: str, cfg, preset: str = "") -> dict:
    """Build the experiment exactly as :func:`train` would, without a run directory or a single step, and
    describe it: parameter count, iterations, what the experiment's optional ``describe()`` adds, the config."""
    task = get_task(task_name)
    device = resolve_device(cfg.device)
    ckpt.seed_everything(cfg.seed)
    experiment = task.experiment(cfg, device)
    info = {"task": task_name, "preset": preset, "parameters": parameter_count(experiment.model),
            "iterations": total_iterations(cfg, experiment)}
    describe = getattr(experiment, "describe", None)
    if describe is not None:
        info.update(describe())
    info["config"] = to_dict(cfg)
    return info


class _StopRequests:
    """Inside the block, Ctrl-C (SIGINT) and SIGTERM (what ``kill`` and schedulers send) ask the loop to stop after
    the iteration under way, so that no update is half applied and no metrics line half written; a second Ctrl-C
    stops at once. Main thread only (Python delivers signals there); a SIGINT ignored by the parent (a background
    job of a non-interactive shell) stays ignored."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _request(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._request)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def check_budget(name: str, value: Optional[float]) -> None:
    """A time or CPU budget is a positive, finite number of seconds (or None: no budget)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} is a number of seconds above 0, got {value}")


def _prepare_run_directory(out: Path, resume: bool) -> None:
    """Refuse an ``out`` that plasticnet did not make (never write into, or delete from, someone's folder); make it
    if it does not exist."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a run directory; choose another --out")
    if resume or not out.exists():
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the run directory {out} ({exc.strerror}); choose a writable --out") \
                from None
        return
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in RUN_ENTRIES + SWEEP_MARKERS and not _is_temporary(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise ConfigError(f"{out} exists and is not a run directory plasticnet made (it holds {shown}); choose "
                          f"another --out")


def _is_temporary(name: str) -> bool:
    """A temporary file of an atomic write in a run directory (``.checkpoint.pt.XXXX.tmp``)."""
    return name.endswith(".tmp") and any(name.startswith(f".{entry}.") for entry in RUN_ENTRIES)


def _clear_run(out: Path) -> None:
    """Empty ``out`` of the files a run writes (only :data:`RUN_ENTRIES`), keeping the lock."""
    import shutil

    for entry in out.iterdir():
        if entry.name == LOCK or entry.name not in RUN_ENTRIES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def train(task_name: str, cfg, out_dir: Path, preset: str = "", resume: bool = False, progress: bool = True,
          stop_when: Optional[Callable[[dict], bool]] = None, time_budget: Optional[float] = None,
          cpu_budget: Optional[float] = None, on_nonfinite: str = "stop", replace: bool = False) -> Path:
    """Train ``task_name`` with ``cfg`` into ``out_dir``; with ``resume``, continue from its checkpoint.

    ``stop_when(metrics)`` and ``time_budget`` (seconds of this call) end a run early at a logging point (the demo
    uses both). ``cpu_budget`` ends it at the first logging point where the run's CPU seconds, counted across
    resumes, reach the budget: runs that share cores get the same compute whatever else the machine does.
    Ctrl-C or SIGTERM (what schedulers and ``kill`` send) ends the run after the iteration under way, with a
    checkpoint, then raises KeyboardInterrupt: no finished iteration is lost.

    ``out_dir`` must not exist, be empty, or be a run directory (with ``resume``, or ``replace`` to start afresh
    there, removing only what plasticnet wrote). The run holds its lock (:mod:`.lock`) throughout: a second
    process training the same directory is refused at once.

    ``on_nonfinite="stop"`` raises :class:`NonFiniteError` at the first non-finite loss, returned value or gradient
    norm, before that update: the checkpoint on disk stays the last one saved, whose weights are finite (a save
    refuses non-finite weights). ``"skip"`` leaves such iterations out (no update, no contribution to the averages)
    and logs how many as ``skipped``. A failed write (a full disk) raises :class:`CheckpointError` and keeps the
    previous checkpoint.

    Under torchrun (:mod:`.distributed`) the K processes train one run on shards of each batch; rank 0 alone
    prepares, locks and writes ``out_dir``, and ``config.json`` records ``world_size``.
    """
    task = get_task(task_name)
    if on_nonfinite not in MODES:
        raise ConfigError(f"unknown --on-nonfinite {on_nonfinite!r}; choose one of {', '.join(MODES)}")
    check_budget("--time-budget", time_budget)
    check_budget("--cpu-budget", cpu_budget)
    out = Path(out_dir)
    device_name, own_group = distributed.start(cfg.device)
    try:
        device = resolve_device(device_name)
        if distributed.rank() != 0:
            return _train_locked(task, task_name, cfg, out, preset, resume, progress, stop_when, time_budget,
                                 cpu_budget, on_nonfinite, device)
        created = not out.exists()
        _prepare_run_directory(out, resume)
        try:
            return _train_in(out, task, task_name, cfg, preset, resume, progress, stop_when, time_budget,
                             cpu_budget, on_nonfinite, replace, device)
        except PlasticnetError:
            if created and not (out / METRICS).exists():  # it failed before training (bad data): leave nothing
                import shutil

                shutil.rmtree(out, ignore_errors=True)
            raise
    finally:
        if own_group:
            distributed.stop()


def _train_in(out, task, task_name, cfg, preset, resume, progress, stop_when, time_budget, cpu_budget, on_nonfinite,
              replace, device) -> Path:
    with RunLock(out):
        if not resume:  # checked again under the lock: no other process writes here now
            _prepare_run_directory(out, resume)
            if (out / ckpt.CHECKPOINT).exists() and not replace:
                raise ConfigError(f"{out} already holds a run; continue it with --resume {out} or choose another "
                                  f"--out")
            _clear_run(out)
        for entry in out.iterdir():  # what a write cut short by a kill left behind
            if _is_temporary(entry.name):
                entry.unlink()
        return _train_locked(task, task_name, cfg, out, preset, resume, progress, stop_when, time_budget,
                             cpu_budget, on_nonfinite, device)


def _train_locked(task, task_name, cfg, out, preset, resume, progress, stop_when, time_budget, cpu_budget,
                  on_nonfinite, device) -> Path:
    main = distributed.rank() == 0
    if main:
        config_text = json.dumps({"task": task_name, "preset": preset, "world_size": distributed.world_size(),
                                  "config": to_dict(cfg)}, indent=2)
        ckpt._write_atomic(out / CONFIG, lambda f: f.write(config_text.encode()))

    ckpt.seed_everything(cfg.seed)
    experiment = task.experiment(cfg, device)
    if distributed.world_size() > 1 and not getattr(experiment, "data_parallel", False):
        raise ConfigError(f"the {task_name} task does not train under torchrun yet; run it as one process")
    start, seconds_before, cpu_before, saved_at, state = 0, 0.0, 0.0, None, None
    if resume:
        state = ckpt.load(out / ckpt.CHECKPOINT, device)
        try:
            experiment.load_state_dict(state["experiment"])
            ckpt.set_rng_state(state["rng"])
            start = state["iteration"]
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{out / ckpt.CHECKPOINT} does not fit this {task_name} run "
                                  f"({type(exc).__name__}); start a new run with another --out") from None
        seconds_before, cpu_before = _keep_metrics_up_to(out, start)
        saved_at = start
    optimizer = getattr(experiment, "optimizer", None)
    guard = NonFiniteGuard(experiment.model, optimizer, on_nonfinite) if optimizer is not None else None

    def save(iteration: int) -> None:
        nonlocal saved_at
        if not weights_finite(experiment.model):
            _stop_non_finite(iteration, "weights", math.nan)
        # the metric window under way too, so that a resumed run logs exactly what an uninterrupted one would
        # (under torchrun its sums averaged over the processes, which log the average of their sums: every count
        # is the same in every process)
        window = {"sums": distributed.mean(sums), "count": count, "skipped": skipped}
        # every process builds the state (a data-parallel experiment may gather its shards' state there); rank 0
        # writes it
        snapshot = {"iteration": iteration, "task": task_name, "config": to_dict(cfg),
                    "experiment": experiment.state_dict(), "rng": ckpt.rng_state(), "window": window}
        if main:
            ckpt.save_atomic(snapshot, out / ckpt.CHECKPOINT)
        saved_at = iteration

    def _stop_non_finite(iteration: int, metric: str, value: float):
        kept = (f"{out / ckpt.CHECKPOINT} keeps iteration {saved_at}" if saved_at is not None
                else "no checkpoint was written")
        raise NonFiniteError(f"iteration {iteration}: {metric} is {value}; stopped before updating the weights "
                             f"({kept}); lower --lr, or pass --on-nonfinite skip to leave such steps out")

    from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

    total = total_iterations(cfg, experiment)
    writer = SummaryWriter(str(out / TENSORBOARD), purge_step=start + 1) if main else distributed.NullWriter()
    validate = getattr(experiment, "validate", None)
    sums: dict[str, torch.Tensor] = {}
    count = skipped = 0
    if resume and "window" in state:
        sums, count, skipped = state["window"]["sums"], state["window"]["count"], state["window"]["skipped"]
    began, cpu_began = time.monotonic(), time.process_time()
    iteration = start
    bar = tqdm(total=total, initial=start, disable=not progress or not main, desc=task_name, dynamic_ncols=True)
    try:
        with _StopRequests() as stop, open(out / METRICS if main else os.devnull, "a") as log:
            while iteration < total and not (cpu_budget is not None and cpu_before >= cpu_budget):
                skipped_before = guard.skipped if guard is not None else 0
                try:
                    values = experiment.step(iteration)
                except NonFiniteStep as bad:
                    _stop_non_finite(iteration + 1, bad.metric, bad.value)
                iteration += 1
                bad = first_non_finite(values)
                if bad is not None and on_nonfinite == "stop":
                    _stop_non_finite(iteration, *bad)
                if bad is not None or (guard is not None and guard.skipped > skipped_before):
                    skipped += 1
                    if not weights_finite(experiment.model):
                        _stop_non_finite(iteration, "weights", math.nan)
                else:
                    count += 1
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0) + v.detach()
                bar.update(1)
                last = iteration == total
                extra = validate(iteration, last) if validate is not None else None
                if iteration % cfg.log_every == 0 or last or extra:
                    point = {**{k: float(v) / count for k, v in sums.items()}, **(extra or {})}
                    if on_nonfinite == "skip":
                        point["skipped"] = skipped
                    point = distributed.mean(point)
                    seconds = seconds_before + time.monotonic() - began
                    cpu_seconds = cpu_before + time.process_time() - cpu_began
                    record = {"iteration": iteration, "seconds": round(seconds, 3),
                              "cpu_seconds": round(cpu_seconds, 3), **point}
                    try:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    except OSError as exc:
                        raise CheckpointError(f"cannot write {out / METRICS} ({exc.strerror}); free the space and "
                                              f"continue with --resume {out}") from None
                    for k, v in point.items():
                        writer.add_scalar(k, v, iteration)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in point.items()})
                    sums, count, skipped = {}, 0, 0
                    done_early = distributed.any_of((stop_when is not None and stop_when(point)) or (
                        time_budget is not None and time.monotonic() - began > time_budget) or (
                        cpu_budget is not None and cpu_seconds >= cpu_budget))
                    if done_early:
                        break
                if iteration % cfg.save_every == 0:
                    save(iteration)
                if distributed.any_of(stop.requested):
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        save(iteration)
        bar.close()
        raise
    finally:
        writer.close()
        bar.close()
    save(iteration)
    return out
