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
