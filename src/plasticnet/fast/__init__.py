"""Faster and leaner forms of the same maths as :mod:`plasticnet.layers`, tested against it; :mod:`.backends` says
which one runs a cell."""

from . import cpu_kernels
from .backends import BACKENDS, resolve, resolve_cell, use_backend
from .plastic_lstm import fused_lstm_run
from .recurrence import Workspace, fusable, fusable_cell, fused_cell_run, fused_closed_loop, fused_plastic_rnn

__all__ = ["fused_plastic_rnn", "fused_cell_run", "fused_closed_loop", "fused_lstm_run", "fusable", "fusable_cell",
           "Workspace", "cpu_kernels", "BACKENDS", "use_backend", "resolve", "resolve_cell"]
