"""Which implementation runs a plastic recurrent cell: the step-by-step reference or one of the fused forms.

The reference is the definition: :class:`~plasticnet.layers.PlasticRNNCell` or
:class:`~plasticnet.lstm.PlasticLSTMCell` stepped under autograd, with the rules of :mod:`plasticnet.rules`. Each
fused backend runs the same maths as one autograd function with a hand-written backward pass (:mod:`.recurrence`;
the LSTM's: :mod:`.plastic_lstm`), and covers part of the configurations:

=========== ====================================================================================================
backend     covers
=========== ====================================================================================================
reference   every cell: any rule (custom ones included), activation, modulation, size, device and dtype
torch       tanh units; rule ``hebb``, ``oja`` or ``clip`` (exact types); any alpha; a learned eta or simple
            modulation (fan-out or not); retroactive modulation with ``clip`` only; any size, device, dtype
numba       what ``torch`` covers, on CPU tensors of float32 or float64 (Numba installed)
triton      what ``torch`` covers but retroactive modulation, up to 128 units, float32 or float64, on CUDA
            tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, for tests)
=========== ====================================================================================================

The plastic LSTM has one fused form, on ``numba``: the same rules and rate forms on CPU tensors of float32 or
float64; ``torch`` and ``triton`` do not cover it.

A setting is one of those names or ``"auto"`` (the fastest backend that covers the cell: ``triton``, else
``numba``, else ``torch``, else ``reference``; ``triton`` only on CUDA) or ``"fused"`` (the same choice, but never
the reference: a cell that no fused backend covers is refused). A backend that does not cover the cell is refused
with a one-line :class:`~plasticnet.errors.ConfigError`, never replaced by another. A custom :class:`Rule` runs on
the reference (the fused backward passes are written out for the built-in rules only).

:func:`use_backend` sets, in a ``with`` block and for the current thread only, the backend of every layer whose
own setting is ``"auto"`` (tests use it to run one model on each backend).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Optional

import torch

from ..errors import ConfigError

BACKENDS = ("auto", "reference", "fused", "torch", "numba", "triton")
FUSED = ("triton", "numba", "torch")  # fastest first
_local = threading.local()


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Run layers whose setting is ``"auto"`` on backend ``name`` inside the block (this thread only)."""
    check_backend(name)
    previous = getattr(_local, "backend", None)
    _local.backend = name
    try:
        yield
    finally:
        _local.backend = previous


def _setting(name: str) -> str:
    check_backend(name)
    return (getattr(_local, "backend", None) or name) if name == "auto" else name


def why_not(backend: str, rule, activation: str, modulation: Optional[str], n_units: int, device: torch.device,
            dtype: torch.dtype, lstm: bool = False) -> Optional[str]:
    """None if ``backend`` (a concrete one: ``reference``, ``torch``, ``numba``, ``triton``) covers the cell (an
    LSTM's with ``lstm``, whose cell input is the tanh unit), else what it lacks, in a few words."""
    from . import cpu_kernels, gpu_kernels
    from .recurrence import fusable

    if backend == "reference":
        return None
    if rule is None:
        return "a cell without plasticity runs on the reference"
    if not fusable(rule):
        return f"rule {getattr(rule, 'name', rule)!r} has no fused backward pass (hebb, oja and clip have)"
    if activation != "tanh":
        return f"activation {activation!r} (the fused backends run tanh units)"
    if modulation == "retroactive" and rule.name != "clip":
        return "retroactive modulation is fused with the clip rule only"
    if lstm and backend != "numba":
        return f"the plastic LSTM has no fused form on {backend} (numba runs it, on CPU)"
    if backend == "numba":
        if cpu_kernels.numba is None:
            return "Numba is not installed"
        if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
            return f"{device.type} tensors of {dtype} (numba runs float32 and float64 on CPU)"
    if backend == "triton":
        return gpu_kernels.why_not(rule.name, modulation, n_units, device, dtype)
    return None


def _fastest(rule, activation: str, modulation: Optional[str], n_units: int, device: torch.device, dtype,
             lstm: bool) -> Optional[str]:
    """The fastest fused backend that covers the cell (``triton`` only on CUDA), or None."""
    for candidate in FUSED:
        if candidate == "triton" and device.type != "cuda":
            continue
        if why_not(candidate, rule, activation, modulation, n_units, device, dtype, lstm) is None:
            return candidate
    return None


def resolve(setting: str, rule, activation: str, modulation: Optional[str], n_units: int, device, dtype,
            lstm: bool = False) -> str:
    """The concrete backend that runs a cell (an LSTM's with ``lstm``) under ``setting`` (see the module's
    docstring), or a ConfigError."""
    name = _setting(setting)
    args = (rule, activation, modulation, n_units, torch.device(device), dtype, lstm)
    if name in ("auto", "fused"):
        fastest = _fastest(*args)
        if fastest is not None:
            return fastest
        if name == "auto":
            return "reference"
        raise ConfigError(f"backend 'fused' does not cover this cell: {why_not(_widest(lstm), *args)}; "
                          f"use backend='auto' or 'reference'")
    reason = why_not(name, *args)
    if reason is not None:
        raise ConfigError(f"backend {name!r} does not cover this cell: {reason}; "
                          f"use backend='auto' (here: {_fastest(*args) or 'reference'}) or 'reference'")
    return name


def resolve_fused(setting: str, rule, activation: str, modulation: Optional[str], n_units: int, device,
                  dtype) -> str:
    """:func:`resolve` for a caller that runs the fused recurrence itself: ``"auto"`` means ``"fused"`` there,
    and ``"reference"`` is refused."""
    name = _setting(setting)
    if name == "reference":
        raise ConfigError("the fused recurrence does not run on backend 'reference'; step the cell instead")
    return resolve("fused" if name == "auto" else name, rule, activation, modulation, n_units, device, dtype)


def _widest(lstm: bool) -> str:
    """The fused backend that covers the most cells of a kind: what a cell lacks there, it lacks everywhere."""
    return "numba" if lstm else "torch"


def _cell_facts(cell) -> tuple:
    """(rule, activation, modulation, units, lstm) of a :class:`~plasticnet.layers.PlasticRNNCell` or a
    :class:`~plasticnet.lstm.PlasticLSTMCell` (whose plastic connection feeds the tanh of its cell input)."""
    from ..lstm import PlasticLSTMCell

    lstm = isinstance(cell, PlasticLSTMCell)
    return cell.rule, "tanh" if lstm else cell.activation, cell.modulation, cell.hidden_size, lstm


def resolve_cell(setting: str, cell, like: Optional[torch.Tensor] = None) -> str:
    """:func:`resolve` for a :class:`~plasticnet.layers.PlasticRNNCell` or :class:`~plasticnet.lstm.PlasticLSTMCell`
    whose tensors are like ``like`` (default: its recurrent weight)."""
    rule, activation, modulation, units, lstm = _cell_facts(cell)
    if like is None:
        like = cell.weight_hh if lstm else cell.w
    return resolve(setting, rule, activation, modulation, units, like.device, like.dtype, lstm)


def why_not_anywhere(backend: str, cell) -> Optional[str]:
    """None if ``backend`` (a setting) may cover ``cell`` on some device and dtype, else what is missing: what a
    layer refuses when it is built (what depends on the device and dtype is checked when it runs)."""
    check_backend(backend)
    if backend in ("auto", "reference"):
        return None
    rule, activation, modulation, units, lstm = _cell_facts(cell)
    cpu = torch.device("cpu")
    reason = why_not("torch", rule, activation, modulation, units, cpu, torch.float32)  # the cell's own facts
    if reason is None and lstm and backend in ("torch", "triton"):
        reason = why_not(backend, rule, activation, modulation, units, cpu, torch.float32, lstm)
    return reason
