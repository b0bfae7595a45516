"""Recurrent actor-critic agents of the meta-RL experiments: a (neuromodulated) plastic recurrent layer and two
linear heads, the policy ``h2o`` and the value ``h2v`` (backpropamine.md §2.2, §3.2, §4.2; DP 2018 §5.3).

The four kinds of the papers, all one :class:`~plasticnet.layers.PlasticRNNCell` with different settings:

| kind | recurrent layer | cell settings |
| --- | --- | --- |
| rnn | ``h = tanh(i2h x + h_prev @ w)`` | ``rule=None`` |
| plastic | plastic weights, learned scalar eta | ``modulation=None`` |
| modplast | eta replaced by ``tanh(h2mod h)`` (or its fan-out) | ``modulation="simple"`` |
| modul | a modulated eligibility trace feeds plastic weights | ``modulation="retroactive"`` |

An episode is a closed loop (:mod:`plasticnet.train.a2c`): each step's input comes from the environment's answer to
the action chosen from the previous activity. ``backend`` chooses how (:mod:`plasticnet.fast.backends`): ``"auto"``
runs cells that a fused backend covers (every plastic kind with the ``hebb``, ``oja`` or ``clip`` rule) through
:func:`plasticnet.fast.fused_closed_loop` (``agent.fused``), with its hand-written backward pass and buffers kept
from one episode to the next (``agent.workspace``), and steps the others under autograd.

The observation already carries what the papers feed back (previous reward and, where the variant has it, the
previous action), so the layer's input is the environment's observation as it is.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .fast import Workspace, resolve_cell
from .layers import PlasticRNNCell, PlasticState, check_cell_backend, describe_backend

__all__ = ["AGENT_KINDS", "RecurrentAgent"]

AGENT_KINDS = {"rnn": None, "plastic": None, "modplast": "simple", "modul": "retroactive"}


class RecurrentAgent(nn.Module):
    """An actor-critic agent with a plastic recurrent core.

    ``agent.cell`` is the recurrent core; the heads read its activities, ``agent.h2o(hidden)`` for the action scores
    and ``agent.value(hidden)`` for the values (``agent.heads(hidden)``: both as one matrix product).
    ``agent.step(obs, state)`` advances one step and scores the actions.
    W and alpha start uniform in ``[0, init_scale)`` (all positive, as in every maze and cue-reward network of both
    papers); eta, where there is one, starts at ``eta_init``. ``checkpoint_every`` trades the memory of the fused
    path's traces for recomputation (see :class:`plasticnet.PlasticRNN`); ``backend`` as in
    :class:`plasticnet.PlasticRNN`; ``fused=False`` is ``backend="reference"``.
    """

    def __init__(self, obs_size: int, n_actions: int, kind: str = "modplast", hidden_size: int = 100,
                 rule: str = "clip", clip: float = 1.0, fanout: bool = False, alpha: str = "full",
                 init_scale: float = 0.01, eta_init: float = 0.01, checkpoint_every: Optional[int] = None,
                 fused: bool = True, backend: str = "auto"):
        super().__init__()
        if kind not in AGENT_KINDS:
            raise ConfigError(f"unknown agent {kind!r}; choose one of {', '.join(AGENT_KINDS)}")
        self.kind = kind
        self.cell = PlasticRNNCell(obs_size, hidden_size, rule=None if kind == "rnn" else rule, alpha=alpha,
                                   modulation=AGENT_KINDS[kind], fanout=fanout, clip=clip, init="uniform",
                                   init_scale=init_scale)
        if hasattr(self.cell, "eta"):
            with torch.no_grad():
                self.cell.eta.fill_(eta_init)
        self.h2o = nn.Linear(hidden_size, n_actions)
        self.h2v = nn.Linear(hidden_size, 1)
        self.backend = check_cell_backend(backend if fused else "reference", self.cell)
        self.checkpoint_every = checkpoint_every
        self.workspace = Workspace()  # the fused path's buffers; a CUDA graph swaps in buffers of its own

    @property
    def fused(self) -> bool:
        """Whether a fused backend runs the episodes on the parameters' device and dtype."""
        return resolve_cell(self.backend, self.cell) != "reference"

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, backend={describe_backend(self.backend, self.cell)}"

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    def initial_state(self, batch_size: int) -> PlasticState:
        return self.cell.initial_state(batch_size)

    def step(self, obs: torch.Tensor, state: Optional[PlasticState]) -> tuple[torch.Tensor, PlasticState]:
        """One time step: (B, obs_size) -> action scores (B, n_actions) and the new state (``state.h`` is the
        activity the value head reads)."""
        h, state = self.cell(obs, state)
        return self.h2o(h), state

    def value(self, h: torch.Tensor) -> torch.Tensor:
        """State values from activities: (..., hidden_size) -> (...)."""
        return self.h2v(h).squeeze(-1)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self.h2o(h), self.value(h))`` as one matrix product: the gradient that reaches ``h`` is then one
        tensor, where two heads' would be added up in a fresh (T, B, N) tensor (a millisecond of page faults at the
        maze's batch 30 on a CPU)."""
        out = F.linear(h, torch.cat([self.h2o.weight, self.h2v.weight]), torch.cat([self.h2o.bias, self.h2v.bias]))
        return out[..., :-1], out[..., -1]

    def modulator(self, h: torch.Tensor) -> Optional[torch.Tensor]:
        """The neuromodulator ``tanh(h2mod h)`` before any fan-out, (..., 1), or None for un-modulated kinds."""
        if self.cell.modulation is None:
            return None
        return torch.tanh(self.cell.h2mod(h))
