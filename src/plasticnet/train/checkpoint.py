"""Checkpoints that cannot run code, written atomically.

A run's ``checkpoint.pt`` (everything resuming needs) is written with ``torch.save`` and read with
``torch.load(weights_only=True)``: PyTorch's restricted unpickler rebuilds tensors and plain containers (dict, list,
tuple, str, numbers, None) and refuses anything else, so a file that someone crafted to run code is refused with one
line. Everything plasticnet stores is of those types: random-generator states are tensors, tuples and numbers.
Checkpoints of earlier versions hold NumPy's generator state as an array and PTB's state as named tuples; only
those types are allowed besides (:func:`_legacy_globals`).

``plasticnet export`` writes a model for sharing as one safetensors file: tensors only, with the task, configuration,
iteration and the experiment's plain ``meta`` as JSON in the file's header. Every command that reads a model
(:func:`read_model`) takes a run directory, a ``checkpoint.pt`` or such a file; older exports (``torch.save`` files
of the same content) are read with ``weights_only=True`` too.

A crash while saving never leaves a half-written file in place of the last good one; a save that fails (a full
disk) leaves the previous checkpoint as it was and raises :class:`~plasticnet.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError

CHECKPOINT = "checkpoint.pt"
EXPORT_KEY = "plasticnet"  # the safetensors header entry that holds the JSON description
# Weight sets besides "model" that an experiment may keep and evaluation may use (PTB: best-validation weights, a
# state dict; the averaged-SGD weights, a list in parameter order).
EXTRA_WEIGHTS = ("best", "average")


def _legacy_globals() -> list:
    """What checkpoints of earlier versions need besides plain types, all of it data: the uint32 array of NumPy's
    generator state (the array constructor and its dtype; NumPy 2 renamed ``numpy.core``, files keep the name they
    were written with) and PTB's recurrent state as :class:`~plasticnet.lstm.LSTMState` (a named tuple)."""
    from ..lstm import LSTMState

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.uint32)), LSTMState]


def save_atomic(obj, path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over the target. A failure
    (no space left, a folder that went away) removes the temporary file and leaves ``path`` as it was."""
    _write_atomic(path, lambda f: torch.save(obj, f))


def _write_atomic(path: Path, write) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CheckpointError(f"cannot write {path} ({exc.strerror}); the previous file is kept") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary file would be, not mkstemp's owner-only mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path} ({exc.strerror or exc}); the previous file is kept: free the "
                              f"space and continue with --resume") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and the JSON header."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size


def load(path: Path, device="cpu") -> dict:
    """A ``torch.save`` file read with ``weights_only=True``; one-line :class:`CheckpointError` for anything that is
    missing, damaged, or would need code to load."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first or give the run directory that holds it")
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:
            raise CheckpointError(f"{path} is not a readable plasticnet checkpoint (UnpicklingError)") from None
        raise CheckpointError(f"{path} needs code to load ({found.group(1)}); plasticnet reads only tensors and "
                              f"plain data, so this file was refused: use one written by plasticnet train or "
                              f"export") from None
    except Exception as exc:  # a truncated or foreign file: say which, not where torch failed
        raise CheckpointError(f"{path} is not a readable plasticnet checkpoint ({type(exc).__name__})") from None


def rng_state() -> dict:
    """Every global generator's state as tensors, tuples and numbers (no NumPy array: see the module's note)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["gauss"])
    np.random.set_state(numpy_state)  # a tuple holding an array: a checkpoint of an earlier version
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python's random with the same value."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_model(path: Path, device="cpu") -> dict:
    """What evaluation needs from a run directory, its ``checkpoint.pt``, or a file written by :func:`export_model`:
    ``{"task", "config", "iteration", "model", "meta", "extra"}``. ``meta`` is the experiment's plain data that
    evaluation needs besides the weights (e.g. which Omniglot characters were trained on); empty when it keeps none.
    ``extra`` holds the other weight sets it keeps (:data:`EXTRA_WEIGHTS`)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if path.is_file() and _is_safetensors(path):
        return _read_export(path, device)
    state = load(path, device)
    if not isinstance(state, dict) or "task" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a plasticnet checkpoint (no task and config in it)")
    if "model" in state:  # an export written by an earlier version
        return {"iteration": state.get("iteration", 0), "meta": {}, "extra": {}, **state}
    experiment = state.get("experiment", {})
    if "model" not in experiment:
        raise CheckpointError(f"{path} holds no model weights; give a checkpoint written by `plasticnet train`")
    extra = {name: experiment[name] for name in EXTRA_WEIGHTS if experiment.get(name) is not None}
    return {"task": state["task"], "config": state["config"], "iteration": state.get("iteration", 0),
            "model": experiment["model"], "meta": experiment.get("meta", {}), "extra": extra}


def _read_export(path: Path, device) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[EXPORT_KEY])
        task, config, iteration, meta = header["task"], header["config"], header["iteration"], header["meta"]
        lists = header.get("lists", {})
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, KeyError, TypeError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable plasticnet export ({type(exc).__name__}); export it "
                              f"again with `plasticnet export RUN --out FILE`") from None
    groups: dict[str, dict] = {}
    for key, tensor in tensors.items():
        group, _, name = key.partition("/")
        groups.setdefault(group, {})[name] = tensor
    extra = {}
    for name in EXTRA_WEIGHTS:
        if name in groups:
            weights = groups[name]
            extra[name] = [weights[str(i)] for i in range(len(weights))] if lists.get(name) else weights
    return {"task": task, "config": config, "iteration": iteration, "model": groups.get("model", {}), "meta": meta,
            "extra": extra}


def export_model(source: Path, out: Path) -> Path:
    """A model-only copy of a checkpoint for sharing, as one safetensors file: weights (and the experiment's other
    weight sets), configuration and meta, without the optimiser and random-generator state that only resuming
    needs (for Adam that is two thirds of the file). It holds no code and loads without any."""
    from safetensors.torch import save

    model = read_model(source)
    tensors = {f"model/{k}": v for k, v in model["model"].items()}
    lists = {}
    for name, weights in model["extra"].items():
        lists[name] = isinstance(weights, (list, tuple))
        items = enumerate(weights) if lists[name] else weights.items()
        tensors.update({f"{name}/{k}": v for k, v in items})
    header = {"task": model["task"], "config": model["config"], "iteration": model["iteration"],
              "meta": model["meta"], "lists": lists}
    # one storage per tensor, contiguous: what the format requires (tied weights would otherwise share one)
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    data = save(tensors, metadata={EXPORT_KEY: json.dumps(header)})
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the folder of {out} ({exc.strerror}); choose another --out") from None
    _write_atomic(out, lambda f: f.write(data))
    return out
