"""Plastic and neuromodulated plastic LSTMs (backpropamine, section 4.3; reference/backpropamine.md section 5.3).

Only the hidden-to-cell-input connection is plastic. With the convention of :mod:`plasticnet.rules` (rows are
pre-synaptic, columns post-synaptic), one step is::

    i, f, o = sigmoid(x W_x[i,f,o] + b_x + h_prev W_h[i,f,o] + b_h)
    g = tanh(x W_x[g] + b_x[g] + h_prev @ (w + alpha * hebb))        # w: the bias-free plastic matrix
    c = f * c_prev + i * g,   h = o * tanh(c)

then the Hebbian term pairs the previous hidden state (pre) with the cell-input candidate ``g`` (post), with the
rate a learned eta, or a neuromodulator ``tanh(h2mod(h))`` (or ``tanh(h2mod(c))``), optionally fanned out to one
rate per post-synaptic unit. The rule object decides how the trace changes (``clip``: bounded accumulation, as in
the paper; ``hebb``: decaying). Retroactive neuromodulation keeps an eligibility trace that the modulator turns
into plastic weights, as :class:`plasticnet.PlasticRNNCell` does, with the same eligibility rate (eta clamped to
[0, 1]: :func:`plasticnet.layers.eligibility_rate`).

``rule=None`` gives the plain LSTM baseline with the same parameterisation (the original's MyLSTM): the
hidden-to-cell-input matrix is an ordinary weight with a bias, so every gate has two biases like ``torch.nn.LSTM``.

The four gate blocks are stored fused, columns ``[input | forget | output | cell-input]``, so that a step is one
matrix product, and the input projection of a whole sequence is computed before the loop over time.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .layers import (_check_choice, _make_alpha, eligibility_rate, make_plasticity, neuromodulator, plastic_drive,
                     trace_step)
from .rules import Rule

__all__ = ["LSTMState", "PlasticLSTMCell", "PlasticLSTM", "locked_dropout", "detach_state"]

MODULATOR_INPUTS = ("hidden", "cell")


class LSTMState(NamedTuple):
    """State of one LSTM layer. ``hebb`` is None for the plain LSTM; ``eligibility`` without retroactive
    neuromodulation (then ``hebb`` holds the plastic weights the modulated eligibility feeds)."""

    h: torch.Tensor
    c: torch.Tensor
    hebb: Optional[torch.Tensor] = None
    eligibility: Optional[torch.Tensor] = None


def detach_state(state):
    """The same state with every tensor cut from the graph: values (traces included) carry over to the next
    BPTT segment, gradients do not (the original's ``repackage_hidden``)."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(detach_state(s) for s in state))
    return type(state)(detach_state(s) for s in state)


def state_tensors(states) -> list[torch.Tensor]:
    """The tensors of a list of :class:`LSTMState` (one per layer) in order, absent fields skipped: the flat form a
    CUDA graph takes and returns (:class:`~plasticnet.train.cuda_graph.GraphedIteration`)."""
    return [t for layer in states for t in layer if t is not None]


def states_from_tensors(tensors, like) -> list[LSTMState]:
    """The inverse of :func:`state_tensors`: ``tensors`` put back into states shaped as ``like`` (a list of
    :class:`LSTMState` whose absent fields are those of the result)."""
    values = iter(tensors)
    return [LSTMState(*(None if t is None else next(values) for t in layer)) for layer in like]


def locked_dropout(x: torch.Tensor, p: float, training: bool,
                   batch_shard: Optional[tuple[int, slice]] = None) -> torch.Tensor:
    """Variational dropout on a (T, B, F) sequence: one mask per example and feature, shared by every time step
    (AWD-LSTM's LockedDropout).

    ``batch_shard = (batch, part)``: ``x`` holds the examples ``part`` of a batch of ``batch``; the mask is drawn
    for the whole batch and ``part`` of it kept, so that a data-parallel process holding one shard draws the same
    random numbers, and the same masks for its examples, as one process holding the whole batch."""
    if not training or p == 0:
        return x
    batch, part = batch_shard if batch_shard is not None else (x.shape[1], slice(None))
    mask = x.new_empty(1, batch, x.shape[2]).bernoulli_(1 - p)[:, part] / (1 - p)
    return x * mask


class PlasticLSTMCell(nn.Module):
    """One step of a (neuromodulated) plastic LSTM layer; see the module docstring for the equations.

    - ``alpha``: ``"full"`` (H x H), ``"per_neuron"`` (one per post-synaptic unit) or ``"scalar"``; starts at
      ``1e-4 * U[0, 1)`` (a scalar at 1e-4), the plastic ``w`` at ``U(-0.01, 0.01)``, eta (and the eligibility
      rate) at 0.01; gate weights and biases as ``torch.nn.Linear`` (``U(+-1/sqrt(fan_in))``).
    - ``modulation``: None (learned eta), ``"simple"`` or ``"retroactive"``; ``modulator_input``: ``"hidden"``
      (the new h) or ``"cell"`` (the new c); ``fanout``: one affine rate per post-synaptic unit.
    - ``rule``: a :class:`~plasticnet.rules.Rule` or its name (``"clip"`` with bound ``clip``, ``"hebb"``...).
    """

    def __init__(self, input_size: int, hidden_size: int, rule: Union[str, Rule, None] = "clip",
                 alpha: str = "per_neuron", modulation: Optional[str] = None, modulator_input: str = "hidden",
                 fanout: bool = False, clip: float = 2.0):
        super().__init__()
        _check_choice("modulator_input", modulator_input, MODULATOR_INPUTS)
        self.rule: Optional[Rule] = make_plasticity(rule, clip, modulation, fanout)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.modulation, self.modulator_input, self.fanout = modulation, modulator_input, fanout
        self.alpha_mode = alpha if self.rule is not None else None
        n = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(input_size, 4 * n))
        self.bias_ih = nn.Parameter(torch.empty(4 * n))
        self.weight_hh = nn.Parameter(torch.empty(n, 4 * n))
        self.bias_hh = nn.Parameter(torch.empty((3 if self.plastic else 4) * n))  # no bias on the plastic matrix
        self.reset_parameters()
        if self.plastic:
            self.alpha = _make_alpha(alpha, n, n, "uniform", 1e-4)
        if self.plastic and modulation in (None, "retroactive"):
            self.eta = nn.Parameter(torch.tensor(0.01))
        if modulation is not None:
            self.h2mod = nn.Linear(n, 1)
            self.modfanout = nn.Linear(1, n) if fanout else None

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for weight, bias, fan_in in ((self.weight_ih, self.bias_ih, self.input_size),
                                         (self.weight_hh, self.bias_hh, self.hidden_size)):
                bound = 1 / math.sqrt(fan_in)
                weight.uniform_(-bound, bound)
                bias.uniform_(-bound, bound)
            if self.plastic:
                self.w.uniform_(-0.01, 0.01)

    @property
    def plastic(self) -> bool:
        return self.rule is not None

    @property
    def w(self) -> torch.Tensor:
        """The hidden-to-cell-input matrix (plastic unless ``rule=None``): a view into ``weight_hh``."""
        return self.weight_hh[:, 3 * self.hidden_size:]

    def initial_state(self, batch_size: int) -> LSTMState:
        like = dict(device=self.weight_hh.device, dtype=self.weight_hh.dtype)
        n = self.hidden_size
        h, c = torch.zeros(batch_size, n, **like), torch.zeros(batch_size, n, **like)
        if not self.plastic:
            return LSTMState(h, c)
        hebb = self.rule.initial_trace(batch_size, n, n, **like)
        eligibility = torch.zeros(batch_size, n, n, **like) if self.modulation == "retroactive" else None
        return LSTMState(h, c, hebb, eligibility)

    def _bias(self) -> torch.Tensor:
        return self.bias_ih + (F.pad(self.bias_hh, (0, self.hidden_size)) if self.plastic else self.bias_hh)

    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_x + biases`` for every gate, (..., input_size) -> (..., 4 hidden_size)."""
        return torch.addmm(self._bias(), x.reshape(-1, self.input_size), self.weight_ih).view(
            *x.shape[:-1], 4 * self.hidden_size)

    def forward(self, x: torch.Tensor, state: Optional[LSTMState] = None):
        """One step, ``x`` (B, input_size). Returns ``(h, new_state)``."""
        if state is None:
            state = self.initial_state(x.shape[0])
        return self.step(self.input_drive(x), state)

    def step(self, x_drive: torch.Tensor, state: LSTMState):
        """One step from a precomputed :meth:`input_drive` (B, 4 hidden_size)."""
        n = self.hidden_size
        h_prev = state.h
        gates = torch.addmm(x_drive, h_prev, self.weight_hh)
        i, f, o = torch.sigmoid(gates[:, :3 * n]).chunk(3, 1)
        drive = gates[:, 3 * n:]
        if self.plastic:
            drive = drive + plastic_drive(h_prev, state.hebb, self.alpha)
        g = torch.tanh(drive)
        c = torch.addcmul(f * state.c, i, g)
        h = o * torch.tanh(c)
        if not self.plastic:
            return h, LSTMState(h, c)
        if self.modulation is None:
            rate = self.eta
        else:
            rate = neuromodulator(self.h2mod, self.modfanout, h if self.modulator_input == "hidden" else c)
        hebb, eligibility = trace_step(self.rule, state.hebb, state.eligibility, h_prev, g, rate,
                                       self.eta if self.modulation == "retroactive" else None)
        return h, LSTMState(h, c, hebb, eligibility)

    def eligibility_rate(self) -> torch.Tensor:
        """The eligibility trace's rate under retroactive modulation, :func:`plasticnet.layers.eligibility_rate` of
        eta (clamped to [0, 1]), as the step computes it."""
        return eligibility_rate(self.eta)

    def sequence(self, x: torch.Tensor, state: Optional[LSTMState] = None, backend: str = "reference",
                 workspace=None):
        """Run over ``x`` (T, B, input_size); returns outputs (T, B, hidden_size) and the final state. ``backend``
        is a concrete one (:meth:`PlasticLSTM.chosen_backend`): ``"numba"`` runs the whole sequence through
        :func:`plasticnet.fast.fused_lstm_run` with the buffers of ``workspace``, ``"reference"`` step by step."""
        if state is None:
            state = self.initial_state(x.shape[1])
        if backend != "reference":
            from .fast.plastic_lstm import fused_lstm_run

            outputs, c, (hebb, eligibility) = fused_lstm_run(self, self.input_drive(x), state, workspace)
            return outputs, LSTMState(outputs[-1], c, hebb, eligibility)
        outputs = []
        for x_t in self.input_drive(x).unbind(0):
            h, state = self.step(x_t, state)
            outputs.append(h)
        return torch.stack(outputs), state

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, rule={self.rule!r}, "
                f"alpha={self.alpha_mode!r}, modulation={self.modulation!r}, "
                f"modulator_input={self.modulator_input!r}, fanout={self.fanout}")


class PlasticLSTM(nn.Module):
    """Stacked :class:`PlasticLSTMCell` layers run over a sequence, shaped like ``torch.nn.LSTM``.

    ``outputs, states = lstm(x, states)``: ``x`` (T, B, input_size), or (B, T, input_size) with ``batch_first``;
    ``outputs`` are the last layer's hidden states; ``states`` is a list with one :class:`LSTMState` per layer,
    traces included, so that a caller carries them into the next segment (detach them first with
    :func:`detach_state` to truncate backpropagation there). ``hidden_size`` is one width for every layer or a
    list of widths (AWD-LSTM's last layer is as wide as the tied embedding). ``dropout`` is applied between
    layers with one mask per sequence (variational, as AWD-LSTM), in training mode only. Other keywords go to
    every cell.

    ``backend`` says what runs the layers, as for :class:`plasticnet.PlasticRNN` (:mod:`plasticnet.fast.backends`):
    ``"auto"`` (default) the fastest backend that covers the cells on their device and dtype, ``"reference"`` the
    cell stepped under autograd, ``"fused"`` or ``"numba"`` the fused layer
    (:func:`plasticnet.fast.fused_lstm_run`: the ``hebb``, ``oja`` or ``clip`` rule, retroactive modulation with
    ``clip`` only, CPU tensors of float32 or float64): the same results, faster, with a hand-written backward pass
    and buffers kept from one call to the next. ``"torch"`` and ``"triton"`` have no fused LSTM. A backend that does
    not cover the cells raises a ConfigError (when the model runs, for what depends on the device and dtype).
    """

    def __init__(self, input_size: int, hidden_size: Union[int, Sequence[int]], num_layers: int = 1,
                 dropout: float = 0.0, batch_first: bool = False, backend: str = "auto", **cell_kwargs):
        from .fast import Workspace
        from .layers import check_cell_backend

        super().__init__()
        sizes = [hidden_size] * num_layers if isinstance(hidden_size, int) else list(hidden_size)
        if len(sizes) != num_layers or num_layers < 1:
            raise ConfigError(f"hidden_size gives {len(sizes)} widths for num_layers={num_layers}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout, self.batch_first = dropout, batch_first
        inputs = [input_size] + sizes[:-1]
        self.cells = nn.ModuleList(PlasticLSTMCell(i, h, **cell_kwargs) for i, h in zip(inputs, sizes))
        self.backend = check_cell_backend(backend, self.cells[0])  # the cells differ in their sizes only
        self._workspaces = [Workspace() for _ in self.cells]  # the fused path's buffers, kept between calls

    @property
    def hidden_sizes(self) -> list[int]:
        return [cell.hidden_size for cell in self.cells]

    def initial_state(self, batch_size: int) -> list[LSTMState]:
        return [cell.initial_state(batch_size) for cell in self.cells]

    def chosen_backend(self, like: Optional[torch.Tensor] = None) -> str:
        """The backend that runs the layers on tensors like ``like`` (default: their parameters)."""
        from .fast import resolve_cell

        return resolve_cell(self.backend, self.cells[0], like)

    @property
    def fused(self) -> bool:
        """Whether a fused backend runs the layers on their parameters' device and dtype."""
        return self.chosen_backend() != "reference"

    def extra_repr(self) -> str:
        from .layers import describe_backend

        return f"backend={describe_backend(self.backend, self.cells[0])}"

    def forward(self, x: torch.Tensor, states: Optional[list[LSTMState]] = None,
                batch_shard: Optional[tuple[int, slice]] = None):
        """``batch_shard``: the examples of a larger batch that ``x`` holds, for the dropout masks
        (:func:`locked_dropout`)."""
        if x.dim() != 3:
            raise ConfigError(f"PlasticLSTM expects a 3-D input (T, B, features), got shape {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        if states is None:
            states = self.initial_state(x.shape[1])
        new_states, backend = [], self.chosen_backend(x)
        for layer, (cell, state) in enumerate(zip(self.cells, states)):
            if layer > 0:
                x = locked_dropout(x, self.dropout, self.training, batch_shard)
            x, state = cell.sequence(x, state, backend, self._workspaces[layer])
            new_states.append(state)
        return (x.transpose(0, 1) if self.batch_first else x), new_states
