"""``plasticnet sweep run`` on Ray core: one Ray task per run, one CPU each, retried by Ray when its worker
process or node dies (the retry resumes from the run's checkpoint).

Without an address, an embedded Ray on this machine: as many runs at once as cores, no dashboard, a small object
store (runs exchange nothing but a summary), bound to 127.0.0.1. With ``--address`` (or ``RAY_ADDRESS``), the
driver joins an existing cluster and Ray places the runs on its nodes; every node must see the sweep directory at
the same path. Ray is imported here only (the ``sweep`` extra); ``import plasticnet`` never imports it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from . import runs as run_state
from .spec import Sweep, save

OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB; a run returns a few hundred bytes


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError('`plasticnet sweep run` needs Ray: pip install "plasticnet[sweep]"') from None
    return ray


def start_ray(address: Optional[str], cpus: Optional[int]):
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), or start an embedded one; returns the ray module."""
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if cpus is not None:
            raise ConfigError("--cpus sizes the embedded Ray; a cluster given by --address has its own resources")
        try:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
        except ConnectionError as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address} ({exc}); start it with `ray start "
                              f"--head` or drop --address to run on this machine") from None
        return ray
    ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
             _node_ip_address="127.0.0.1", log_to_driver=True, configure_logging=False)
    return ray


def run_sweep(sweep: Sweep, out: Path, address: Optional[str] = None, cpus: Optional[int] = None,
              max_retries: int = 3) -> dict:
    """Train every run of ``sweep`` not yet done into ``out``; print a line as each ends. Returns the counts
    ``{"done", "failed", "skipped"}``; runs that fail after ``max_retries`` retries get a ``failed.txt``."""
    out = Path(out).resolve()
    save(sweep, out)
    runs = sweep.runs()
    todo = [r for r in runs if not (out / r.path / run_state.DONE).is_file()]
    print(f"sweep {out}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to train", flush=True)
    counts = {"done": 0, "failed": 0, "skipped": len(runs) - len(todo)}
    if not todo:
        return counts
    ray = start_ray(address, cpus)
    began = time.monotonic()
    try:
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(run_state.train_run)
        pending = {task.remote(sweep.task, r.preset, r.settings, r.seed, str(out / r.path), sweep.time_budget,
                               sweep.cpu_budget): r for r in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # wakes up for Ctrl-C
            for ref in ready:
                run = pending.pop(ref)
                finished = len(runs) - counts["skipped"] - len(pending)
                prefix = f"[{finished}/{len(todo)}] {run.path}"
                try:
                    summary = ray.get(ref)
                except Exception as exc:  # the run's own error, or Ray's after the retries ran out
                    counts["failed"] += 1
                    message = _one_line(exc)
                    (out / run.path).mkdir(parents=True, exist_ok=True)
                    (out / run.path / run_state.FAILED).write_text(message + "\n")
                    print(f"{prefix} FAILED: {message}", flush=True)
                    continue
                counts["done"] += 1
                resumed = "" if summary["resumed_from"] is None else f", resumed from {summary['resumed_from']}"
                values = ", ".join(f"{k} {v:.4g}" for k, v in summary["last"].items()
                                   if k not in ("iteration", "seconds", "cpu_seconds"))
                print(f"{prefix} done: {summary['iteration']} iterations in {summary['wall_seconds']:.1f} s"
                      f"{resumed}; {values}", flush=True)
    finally:
        ray.shutdown()
    print(f"sweep {out}: {counts['done']} trained, {counts['failed']} failed, {counts['skipped']} skipped; "
          f"{time.monotonic() - began:.1f} s", flush=True)
    return counts


def _one_line(exc: BaseException) -> str:
    """The last line of a Ray error (its cause's message), not the remote traceback."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}".strip()
