"""One run of a sweep, trained where a scheduler puts it, and the markers that say how far each run got.

A run directory of a sweep is an ordinary run directory (``plasticnet train`` makes the same), plus:

* ``done.json`` once training ended (its iterations, or its budget): a rerun of the sweep skips the run;
* ``running``, a heartbeat file touched every few seconds while a process trains the run;
* ``failed.txt`` with the error, written by the driver when the run failed after its retries.

The function here imports no scheduler: Ray calls it (:mod:`.ray_driver`), and so can anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from ..train import checkpoint as ckpt
from ..train.loop import METRICS, read_metrics, train

DONE = "done.json"
RUNNING = "running"
FAILED = "failed.txt"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0  # a heartbeat older than this: no process is training the run any more


class _Heartbeat:
    """Touches ``dir/running`` every few seconds while the block runs, and removes it after."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RUNNING
        self._stop = threading.Event()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.path.touch()

    def __enter__(self):
        self.path.write_text(f"{socket.gethostname()} {os.getpid()}\n")
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


def state(run_dir: Path) -> str:
    """``done``, ``failed``, ``running`` (a live heartbeat) or ``left`` (not started, or stopped unfinished)."""
    run_dir = Path(run_dir)
    if (run_dir / DONE).is_file():
        return "done"
    if (run_dir / FAILED).is_file():
        return "failed"
    beat = run_dir / RUNNING
    try:
        if time.time() - beat.stat().st_mtime < STALE_SECONDS:
            return "running"
    except FileNotFoundError:
        pass
    return "left"


def checkpoint_iteration(run_dir: Path) -> Optional[int]:
    """The iteration a run would resume from, or None without a checkpoint."""
    path = Path(run_dir) / ckpt.CHECKPOINT
    return ckpt.load(path)["iteration"] if path.is_file() else None


def train_run(task: str, preset: str, settings: dict, seed: int, run_dir: str, time_budget: Optional[float] = None,
              cpu_budget: Optional[float] = None, threads: int = 1) -> dict:
    """Train one run of a sweep into ``run_dir``: skipped when done, resumed from its checkpoint when it has one,
    trained from scratch otherwise (what a killed attempt left before its first checkpoint is cleared first).
    Returns a summary: ``resumed_from`` (None: from scratch), the last logged point and the wall time."""
    import torch

    from ..config import resolve
    from ..tasks import get_task

    torch.set_num_threads(threads)
    out = Path(run_dir)
    if (out / DONE).is_file():
        return {"skipped": True, **json.loads((out / DONE).read_text())}
    cfg = resolve(get_task(task).config_cls, task, preset, {**settings, "seed": seed})
    resume = (out / ckpt.CHECKPOINT).is_file()
    resumed_from = checkpoint_iteration(out) if resume else None
    if not resume:
        (out / METRICS).unlink(missing_ok=True)
        shutil.rmtree(out / "tb", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / FAILED).unlink(missing_ok=True)
    began = time.monotonic()
    with _Heartbeat(out):
        train(task, cfg, out, preset=preset, resume=resume, progress=False, time_budget=time_budget,
              cpu_budget=cpu_budget)
    last = read_metrics(out)[-1] if read_metrics(out) else {"iteration": 0}
    summary = {"iteration": last["iteration"], "seconds": last.get("seconds", 0.0),
               "cpu_seconds": last.get("cpu_seconds", 0.0), "wall_seconds": round(time.monotonic() - began, 3),
               "resumed_from": resumed_from, "last": last}
    tmp = out / f".{DONE}.tmp"
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, out / DONE)
    return {"skipped": False, **summary}
