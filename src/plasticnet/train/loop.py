"""The training loop every task shares: seeds, logging, checkpoints, resuming, a progress bar.

Two optional experiment hooks serve tasks that count in their own units (epochs of BPTT segments):
``experiment.planned_iterations`` is the length of its schedule (the run stops there, or at ``cfg.iterations`` when
that is positive and smaller), and ``experiment.log_extra(iteration)``, called after every step, may return a dict
of values (e.g. an end-of-epoch validation) that go into a logged point written at that iteration.

A run directory holds ``config.json`` (task, preset and the fully resolved configuration), ``metrics.jsonl`` (one
JSON object per logged point: ``iteration``, ``seconds`` of training and ``cpu_seconds`` of this process's CPU time
(both continued across resumes) and the task's metrics averaged over the window since the previous point), TensorBoard logs under ``tb/``, and ``checkpoint.pt``
(written atomically).

An experiment may define ``validate(iteration, final) -> dict[str, float]``: it is called at every logging point
(``final`` at the last one) and whatever it returns (e.g. ``val_*`` metrics on held-out data, or nothing when it is
not time yet) is logged with that point.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from ..config import from_dict, to_dict
from ..errors import CheckpointError, ConfigError
from ..tasks import get_task
from . import checkpoint as ckpt
from . import distributed

CONFIG = "config.json"
METRICS = "metrics.jsonl"


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
    saved = json.loads(path.read_text())
    task = get_task(saved["task"])
    return saved["task"], saved.get("preset", ""), from_dict(task.config_cls, saved["config"])


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _keep_metrics_up_to(run_dir: Path, iteration: int) -> tuple[float, float]:
    """On resume, drop points logged after the checkpoint: those iterations are trained again. Returns the
    training time and CPU time logged up to the checkpoint, from which the resumed run's clocks continue.
    Under torchrun every process reads them, then rank 0 alone rewrites the file."""
    kept = [m for m in read_metrics(run_dir) if m["iteration"] <= iteration]
    distributed.barrier()
    if distributed.rank() == 0:
        (Path(run_dir) / METRICS).write_text("".join(json.dumps(m) + "\n" for m in kept))
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


def train(task_name: str, cfg, out_dir: Path, preset: str = "", resume: bool = False, progress: bool = True,
          stop_when: Optional[Callable[[dict], bool]] = None, time_budget: Optional[float] = None,
          cpu_budget: Optional[float] = None) -> Path:
    """Train ``task_name`` with ``cfg`` into ``out_dir``; with ``resume``, continue from its checkpoint.

    ``stop_when(metrics)`` and ``time_budget`` (seconds of this call) end a run early at a logging point (the demo
    uses both). ``cpu_budget`` ends it at the first logging point where the run's CPU seconds, counted across
    resumes, reach the budget: runs that share cores get the same compute whatever else the machine does.
    Ctrl-C or SIGTERM (what schedulers and ``kill`` send) ends the run after the iteration under way, with a
    checkpoint, then raises KeyboardInterrupt: no finished iteration is lost.

    Under torchrun (:mod:`.distributed`) the K processes train one run on shards of each batch; rank 0 alone
    writes ``out_dir``, and ``config.json`` records ``world_size``.
    """
    task = get_task(task_name)
    out = Path(out_dir)
    if not resume and (out / ckpt.CHECKPOINT).exists():
        raise ConfigError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
    device_name, own_group = distributed.start(cfg.device)
    main = distributed.rank() == 0
    device = resolve_device(device_name)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(json.dumps({"task": task_name, "preset": preset,
                                              "world_size": distributed.world_size(), "config": to_dict(cfg)},
                                             indent=2))

    ckpt.seed_everything(cfg.seed)
    experiment = task.experiment(cfg, device)
    if distributed.world_size() > 1 and not getattr(experiment, "data_parallel", False):
        raise ConfigError(f"the {task_name} task does not train under torchrun yet; run it as one process")
    start, seconds_before, cpu_before = 0, 0.0, 0.0
    if resume:
        state = ckpt.load(out / ckpt.CHECKPOINT, device)
        experiment.load_state_dict(state["experiment"])
        ckpt.set_rng_state(state["rng"])
        start = state["iteration"]
        seconds_before, cpu_before = _keep_metrics_up_to(out, start)

    def save(iteration: int) -> None:
        if main:
            ckpt.save_atomic({"iteration": iteration, "task": task_name, "config": to_dict(cfg),
                              "experiment": experiment.state_dict(), "rng": ckpt.rng_state()},
                             out / ckpt.CHECKPOINT)

    from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

    total = total_iterations(cfg, experiment)
    log_extra = getattr(experiment, "log_extra", None)
    writer = SummaryWriter(str(out / "tb"), purge_step=start + 1 if resume else None) if main else \
        distributed.NullWriter()
    validate = getattr(experiment, "validate", None)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    began, cpu_began = time.monotonic(), time.process_time()
    iteration = start
    bar = tqdm(total=total, initial=start, disable=not progress or not main, desc=task_name, dynamic_ncols=True)
    try:
        with _StopRequests() as stop, open(out / METRICS if main else os.devnull, "a") as log:
            while iteration < total and not (cpu_budget is not None and cpu_before >= cpu_budget):
                values = experiment.step(iteration)
                iteration += 1
                count += 1
                for k, v in values.items():
                    sums[k] = sums.get(k, 0) + v.detach()
                bar.update(1)
                last = iteration == total
                extra = log_extra(iteration) if log_extra is not None else None
                if iteration % cfg.log_every == 0 or last or extra:
                    point = {**{k: float(v) / count for k, v in sums.items()}, **(extra or {})}
                    if validate is not None:
                        point.update(validate(iteration, last))
                    point = distributed.mean(point)
                    seconds = seconds_before + time.monotonic() - began
                    cpu_seconds = cpu_before + time.process_time() - cpu_began
                    record = {"iteration": iteration, "seconds": round(seconds, 3),
                              "cpu_seconds": round(cpu_seconds, 3), **point}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    for k, v in point.items():
                        writer.add_scalar(k, v, iteration)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in point.items()})
                    sums, count = {}, 0
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
    save(iteration)
    bar.close()
    if own_group:
        distributed.stop()
    return out
