"""Atomic checkpoints: a crash while saving never leaves a half-written file in place of the last good one."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError

CHECKPOINT = "checkpoint.pt"


def save_atomic(obj, path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over the target."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, device="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first or give the run directory that holds it")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which, not where torch failed
        raise CheckpointError(f"{path} is not a readable plasticnet checkpoint ({type(exc).__name__})") from exc


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python's random with the same value."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_model(path: Path, device="cpu") -> dict:
    """What evaluation needs from a run directory, its ``checkpoint.pt``, or a file written by :func:`export_model`:
    ``{"task", "config", "iteration", "model", "meta"}``. ``meta`` is the experiment's plain data that evaluation
    needs besides the weights (e.g. which Omniglot characters were trained on); empty when it keeps none."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    state = load(path, device)
    if not isinstance(state, dict) or "task" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a plasticnet checkpoint (no task and config in it)")
    if "model" in state:
        return {"iteration": state.get("iteration", 0), "meta": {}, **state}
    experiment = state.get("experiment", {})
    if "model" not in experiment:
        raise CheckpointError(f"{path} holds no model weights; give a checkpoint written by `plasticnet train`")
    return {"task": state["task"], "config": state["config"], "iteration": state.get("iteration", 0),
            "model": experiment["model"], "meta": experiment.get("meta", {})}


def export_model(source: Path, out: Path) -> Path:
    """A model-only copy of a checkpoint for sharing: weights, configuration and meta, without the optimiser and
    random-generator state that only resuming needs (for Adam that is two thirds of the file)."""
    model = read_model(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({k: model[k] for k in ("task", "config", "iteration", "model", "meta")}, out)
    return out
