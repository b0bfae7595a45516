"""Plastic layers: recurrent and feed-forward connections that carry Hebbian traces.

Convention (see :mod:`plasticnet.rules`): activations are row vectors, ``w[i, j]`` runs from unit ``i`` to unit
``j``, so the recurrent drive is ``h_prev @ (w + alpha * hebb)`` and the trace increment is ``outer(pre, post)``.

Each step computes the new activity with the trace from *before* the step, then updates the trace from
(pre = previous activity, post = new activity). Traces are per example: (B, n_pre, n_post).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from .errors import ConfigError
from .rules import Rule, make_rule, outer

__all__ = ["PlasticState", "PlasticRNNCell", "PlasticRNN", "PlasticLinear", "plastic_drive", "neuromodulator",
           "trace_step", "eligibility_rate", "ACTIVATIONS"]

ALPHA_MODES = ("full", "per_neuron", "scalar")
MODULATIONS = (None, "simple", "retroactive")
INITS = ("normal", "uniform")
ACTIVATIONS = {"tanh": torch.tanh, "selu": torch.selu, "relu": torch.relu, "identity": lambda z: z}


class PlasticState(NamedTuple):
    """State of a plastic recurrent cell. ``hebb`` is None without plasticity, ``eligibility`` without
    retroactive neuromodulation. With retroactive modulation ``hebb`` holds the plastic weights that the
    modulated eligibility trace feeds."""

    h: torch.Tensor
    hebb: Optional[torch.Tensor] = None
    eligibility: Optional[torch.Tensor] = None


def plastic_drive(pre: torch.Tensor, trace: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``pre @ (alpha * trace)`` per example, (B, n_pre) -> (B, n_post).

    A per-neuron or scalar alpha scales whole columns, so it is applied after the product and
    ``alpha * trace`` is never built; only a full alpha needs the element-wise product.
    """
    if alpha.dim() == 2:
        return torch.bmm(pre.unsqueeze(1), alpha * trace).squeeze(1)
    return torch.bmm(pre.unsqueeze(1), trace).squeeze(1) * alpha


def neuromodulator(h2mod: nn.Linear, modfanout: Optional[nn.Linear], source: torch.Tensor) -> torch.Tensor:
    """Backpropamine's rate ``m = tanh(h2mod(source))``, one per example (B, 1), or with a fan-out layer one per
    post-synaptic unit (B, n_post), affine in m: ``f_j m + g_j``."""
    m = torch.tanh(h2mod(source))
    return m if modfanout is None else modfanout(m)


def eligibility_rate(eta: torch.Tensor) -> torch.Tensor:
    """The rate ``r`` of retroactive modulation's eligibility trace, ``E = (1 - r) E + r outer(pre, post)``, from
    the learned eta: eta clamped to [0, 1], in every layer and fast path.

    The original code leaves eta unconstrained and describes E as always decaying (backpropamine.md §3.2, §4.2):
    that holds for eta in [0, 1], where its runs start (0.01 or 0.1, then Adam at 1e-4) and where the clamp changes
    nothing. There E is a running average of outer products of activities, so it stays within their bounds
    (|E| <= 1 for tanh units). Outside it the decay would become oscillation (eta > 1) or growth without bound
    (eta < 0 or > 2): SGD at the language model's learning rate drove an unconstrained eta to -0.99 within 50
    segments, and the trace, then the loss, diverged. Where eta is clamped its gradient is zero."""
    return eta.clamp(0.0, 1.0)


def trace_step(rule: Rule, hebb: torch.Tensor, eligibility: Optional[torch.Tensor], pre: torch.Tensor,
               post: torch.Tensor, rate: torch.Tensor, eta: Optional[torch.Tensor] = None):
    """One step of a plastic connection's traces; returns ``(hebb, eligibility)``.

    Without an eligibility trace: ``hebb = rule.update(hebb, pre, post, rate)`` (rate: the learned eta or the
    neuromodulator). With one (retroactive neuromodulation): the modulator turns the *previous* eligibility into
    plasticity, ``hebb = rule.accumulate(hebb, rate * eligibility)``, then
    ``eligibility = (1 - r) eligibility + r outer(pre, post)`` with ``r = eligibility_rate(eta)``.
    """
    if eligibility is None:
        return rule.update(hebb, pre, post, rate), None
    hebb = rule.accumulate(hebb, rate.unsqueeze(-2) * eligibility)
    return hebb, torch.lerp(eligibility, outer(pre, post), eligibility_rate(eta))


def _init_(tensor: torch.Tensor, init: str, scale: float) -> None:
    with torch.no_grad():
        if init == "normal":
            tensor.normal_(0.0, scale)
        else:
            tensor.uniform_(0.0, scale)


def _make_alpha(mode: str, n_pre: int, n_post: int, init: str, scale: float) -> nn.Parameter:
    if mode not in ALPHA_MODES:
        raise ConfigError(f"unknown alpha {mode!r}; choose one of {', '.join(ALPHA_MODES)}")
    if mode == "scalar":
        return nn.Parameter(torch.tensor(scale))
    alpha = nn.Parameter(torch.empty((n_pre, n_post) if mode == "full" else (n_post,)))
    _init_(alpha, init, scale)
    return alpha


def make_plasticity(rule, clip: float, modulation: Optional[str], fanout: bool) -> Optional[Rule]:
    """The rule object of a plastic cell, after refusing combinations of rule, modulation and fan-out that make
    no sense (shared by the RNN and LSTM cells)."""
    _check_choice("modulation", modulation, MODULATIONS)
    rule = make_rule(rule, clip)
    if rule is None and modulation is not None:
        raise ConfigError("modulation needs plasticity: give a rule (e.g. rule='clip') or drop modulation")
    if fanout and modulation is None:
        raise ConfigError("fanout=True fans out a neuromodulator: set modulation='simple' or 'retroactive'")
    if modulation == "retroactive" and not rule.accumulates:
        raise ConfigError(f"retroactive modulation needs a bounded additive rule ('clip' or 'softclip'), "
                          f"not {rule.name!r}")
    if modulation is not None and not rule.bounded:
        why = _UNBOUNDED.get(rule.name, _CUSTOM)
        raise ConfigError(f"rule {rule.name!r} is unstable under a neuromodulator: {why}; with modulation use "
                          f"rule='clip' or 'softclip' (backpropamine's bounded forms)")
    return rule


def check_cell_backend(backend: str, cell) -> str:
    """Refuse, at construction, a ``backend`` that cannot run ``cell`` (a plastic RNN's or LSTM's) on any device
    (what depends on the device is checked when the cell runs); returns ``backend``."""
    from .fast.backends import why_not_anywhere

    reason = why_not_anywhere(backend, cell)
    if reason is not None:
        raise ConfigError(f"backend {backend!r} does not cover this cell: {reason}; use backend='auto' or "
                          f"'reference'")
    return backend


def describe_backend(backend: str, cell) -> str:
    """``'auto' -> numba``: the setting and what it chooses on the cell's device and dtype."""
    from .fast import resolve_cell

    try:
        chosen = resolve_cell(backend, cell)
    except ConfigError:
        chosen = "not on this device"
    return f"{backend!r}" if chosen == backend else f"{backend!r} -> {chosen}"


# Why a rule is refused with modulation, whose rate is signed: tanh in [-1, 1], or affine in it with fan-out.
_UNBOUNDED = {"hebb": "its decay 1 - rate exceeds 1 for a negative rate, and the trace grows without bound",
              "oja": "its decay 1 - rate * post**2 exceeds 1 for a negative rate, and the trace grows without bound"}
_CUSTOM = "it does not declare bounded = True (a trace that stays bounded under a rate of either sign)"


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")


class PlasticRNNCell(nn.Module):
    """One step of a (neuromodulated) plastic recurrent layer.

    ``h = act(i2h(x) + h_prev @ (w + alpha * hebb))``, then the trace update from (h_prev, h):

    - ``modulation=None``: ``rule.update(hebb, h_prev, h, eta)`` with eta a learned scalar;
    - ``"simple"``: the rate is ``m = tanh(h2mod(h))`` (one per example), or ``modfanout(m)`` (one per
      post-synaptic unit, affine in m) with ``fanout=True``;
    - ``"retroactive"``: ``hebb = rule.accumulate(hebb, rate * eligibility)``, then
      ``eligibility = (1 - r) eligibility + r outer(h_prev, h)``, ``r`` = eta clamped to [0, 1]
      (:func:`eligibility_rate`);
    - modulation takes only rules that stay bounded under a signed rate (``clip``, ``softclip``);
    - ``rule=None``: a plain RNN, ``h = act(i2h(x) + h_prev @ w)``, through the same code path.

    ``input_size=None`` adds ``x`` (B, hidden_size) straight to the drive, as the pattern and image tasks need.
    ``init`` and ``init_scale`` set how ``w`` and ``alpha`` start (DP 2018: ``normal`` 0.01 for patterns and
    images, ``uniform`` in [0, 0.01) for the maze); a scalar alpha starts at ``init_scale``; eta at 0.01.
    """

    def __init__(self, input_size: Optional[int], hidden_size: int, rule="hebb", alpha: str = "full",
                 modulation: Optional[str] = None, fanout: bool = False, clip: float = 2.0,
                 activation: str = "tanh", init: str = "normal", init_scale: float = 0.01):
        super().__init__()
        _check_choice("activation", activation, tuple(ACTIVATIONS))
        _check_choice("init", init, INITS)
        self.rule: Optional[Rule] = make_plasticity(rule, clip, modulation, fanout)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.modulation, self.fanout, self.activation = modulation, fanout, activation
        self.alpha_mode = alpha if self.rule is not None else None
        self.act = ACTIVATIONS[activation]
        self.i2h = nn.Linear(input_size, hidden_size) if input_size is not None else None
        self.w = nn.Parameter(torch.empty(hidden_size, hidden_size))
        _init_(self.w, init, init_scale)
        if self.rule is not None:
            self.alpha = _make_alpha(alpha, hidden_size, hidden_size, init, init_scale)
        if self.rule is not None and modulation in (None, "retroactive"):
            self.eta = nn.Parameter(torch.tensor(0.01))
        if modulation is not None:
            self.h2mod = nn.Linear(hidden_size, 1)
            self.modfanout = nn.Linear(1, hidden_size) if fanout else None

    @property
    def plastic(self) -> bool:
        return self.rule is not None

    def initial_state(self, batch_size: int) -> PlasticState:
        like = dict(device=self.w.device, dtype=self.w.dtype)
        n = self.hidden_size
        h = torch.zeros(batch_size, n, **like)
        if not self.plastic:
            return PlasticState(h)
        hebb = self.rule.initial_trace(batch_size, n, n, **like)
        eligibility = torch.zeros(batch_size, n, n, **like) if self.modulation == "retroactive" else None
        return PlasticState(h, hebb, eligibility)

    def modulator(self, h: torch.Tensor) -> torch.Tensor:
        """The neuromodulatory rate from the new activity: (B, 1), or (B, hidden_size) with fan-out."""
        return neuromodulator(self.h2mod, self.modfanout, h)

    def forward(self, x: torch.Tensor, state: Optional[PlasticState] = None, clamp=None):
        """One step. ``clamp=(mask, values)`` overrides the activity where ``mask`` is true (the image task's
        clamped neurons) before the trace sees it; ``mask=None`` clamps every unit, and the drive, which would be
        thrown away, is not computed. Returns ``(h, new_state)``."""
        if state is None:
            state = self.initial_state(x.shape[0])
        h_prev = state.h
        if clamp is not None and clamp[0] is None:
            h = clamp[1]
        else:
            drive = (x if self.i2h is None else self.i2h(x)) + h_prev @ self.w
            if self.plastic:
                drive = drive + plastic_drive(h_prev, state.hebb, self.alpha)
            h = self.act(drive)
            if clamp is not None:
                h = torch.where(clamp[0], clamp[1], h)
        if not self.plastic:
            return h, PlasticState(h)
        return h, PlasticState(h, *self._update_traces(state, h_prev, h))

    def _update_traces(self, state: PlasticState, pre: torch.Tensor, post: torch.Tensor):
        rate = self.eta if self.modulation is None else self.modulator(post)
        return trace_step(self.rule, state.hebb, state.eligibility, pre, post, rate, getattr(self, "eta", None))

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, rule={self.rule!r}, "
                f"alpha={self.alpha_mode!r}, modulation={self.modulation!r}, fanout={self.fanout}, "
                f"activation={self.activation!r}")


class PlasticRNN(nn.Module):
    """A :class:`PlasticRNNCell` run over a sequence, shaped like ``torch.nn.RNN``.

    ``outputs, state = rnn(x, state)`` with ``x`` (T, B, input) or (B, T, input) when ``batch_first``;
    ``outputs`` has the same layout with ``hidden_size`` features; traces travel in ``state``.
    Every other keyword is passed on to the cell.

    ``backend`` says what runs the sequence (:mod:`plasticnet.fast.backends`: which cells each backend covers):
    ``"auto"`` (default) the fastest backend that covers the cell on its device and dtype, ``"reference"`` the cell
    stepped under autograd, ``"fused"`` the fastest fused one, or one by name (``"torch"``, ``"numba"``,
    ``"triton"``); a backend that does not cover the cell raises a ConfigError (when the model runs, for what
    depends on the device). The fused backends (:func:`plasticnet.fast.fused_cell_run`) give the same results,
    faster, with a hand-written backward pass and buffers kept from one call to the next;
    ``checkpoint_every=k`` then keeps only every k-th trace for the backward pass and recomputes the others
    (memory for about T/k + k traces instead of T: choose k near sqrt(T) for the least memory); None lets the
    backend choose (:func:`plasticnet.fast.recurrence.chunk_length`: chunks of ceil(sqrt(T)) steps on ``numba``,
    every trace on ``torch`` and ``triton``); 1 keeps every trace. The reference keeps every trace.
    """

    def __init__(self, input_size: Optional[int], hidden_size: int, batch_first: bool = False,
                 backend: str = "auto", checkpoint_every: Optional[int] = None, **cell_kwargs):
        super().__init__()
        from .fast import Workspace

        if checkpoint_every is not None and checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be a positive number of steps, got {checkpoint_every}")
        self.batch_first = batch_first
        self.cell = PlasticRNNCell(input_size, hidden_size, **cell_kwargs)
        self.checkpoint_every = checkpoint_every
        self.backend = check_cell_backend(backend, self.cell)
        self._workspace = Workspace()  # the fused path's buffers, kept between calls

    def chosen_backend(self, like: Optional[torch.Tensor] = None) -> str:
        """The backend that runs this layer on tensors like ``like`` (default: its parameters)."""
        from .fast import resolve_cell

        return resolve_cell(self.backend, self.cell, like)

    @property
    def fused(self) -> bool:
        """Whether a fused backend runs this layer on its parameters' device and dtype."""
        return self.chosen_backend() != "reference"

    def extra_repr(self) -> str:
        return f"backend={describe_backend(self.backend, self.cell)}, checkpoint_every={self.checkpoint_every}"

    def initial_state(self, batch_size: int) -> PlasticState:
        return self.cell.initial_state(batch_size)

    def forward(self, x: torch.Tensor, state: Optional[PlasticState] = None):
        if x.dim() != 3:
            raise ConfigError(f"PlasticRNN expects a 3-D input (T, B, features), got shape {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        backend = self.chosen_backend(x)
        if backend != "reference":
            outputs, state = self._fused_forward(x, state, backend)
        else:
            outputs = []
            for x_t in x.unbind(0):
                h, state = self.cell(x_t, state)
                outputs.append(h)
            outputs = torch.stack(outputs)
        return (outputs.transpose(0, 1) if self.batch_first else outputs), state

    def _fused_forward(self, x, state, backend):
        from .fast import fused_cell_run

        cell = self.cell
        if state is None:
            state = cell.initial_state(x.shape[1])
        drive = x if cell.i2h is None else cell.i2h(x)
        outputs, (hebb, eligibility) = fused_cell_run(cell, drive, state, self.checkpoint_every, self._workspace,
                                                      backend)
        return outputs, PlasticState(outputs[-1], hebb, eligibility)


class PlasticLinear(nn.Module):
    """A feed-forward plastic layer: ``y = act(x @ (w + alpha * hebb) + bias + extra)``, then the trace pairs the
    *current* input with the *current* output, ``hebb = rule.update(hebb, x, y, eta)`` (DP 2018's Omniglot head).

    ``y, hebb = layer(x, hebb, extra=None)``; ``extra`` is an additional drive (Omniglot's clamped labels).
    ``activation`` is a name from ``ACTIVATIONS``, ``"softmax"``, or any callable. ``use_w=False`` drops the
    fixed weight (the camera-ready Omniglot variant). ``w`` starts as ``init_scale * N(0, 1)``; ``init`` sets how
    ``alpha`` starts (DP 2018's Omniglot: uniform in [0, 0.01)).
    """

    def __init__(self, in_features: int, out_features: int, rule="oja", alpha: str = "full",
                 clip: float = 2.0, activation="identity", bias: bool = False, use_w: bool = True,
                 init: str = "uniform", init_scale: float = 0.01):
        super().__init__()
        _check_choice("init", init, INITS)
        self.rule = make_rule(rule, clip)
        if self.rule is None:
            raise ConfigError("PlasticLinear needs a rule; use torch.nn.Linear for a non-plastic layer")
        self.in_features, self.out_features = in_features, out_features
        if callable(activation):
            self.act = activation
        elif activation == "softmax":
            self.act = lambda z: torch.softmax(z, dim=-1)
        else:
            _check_choice("activation", activation, tuple(ACTIVATIONS) + ("softmax",))
            self.act = ACTIVATIONS[activation]
        self.w = None
        if use_w:
            self.w = nn.Parameter(torch.empty(in_features, out_features))
            with torch.no_grad():
                self.w.normal_(0.0, init_scale)
        self.alpha = _make_alpha(alpha, in_features, out_features, init, init_scale)
        self.eta = nn.Parameter(torch.tensor(0.01))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def initial_trace(self, batch_size: int) -> torch.Tensor:
        return self.rule.initial_trace(batch_size, self.in_features, self.out_features,
                                       device=self.alpha.device, dtype=self.alpha.dtype)

    def forward(self, x: torch.Tensor, hebb: Optional[torch.Tensor] = None, extra: Optional[torch.Tensor] = None):
        if hebb is None:
            hebb = self.initial_trace(x.shape[0])
        z = plastic_drive(x, hebb, self.alpha)
        if self.w is not None:
            z = z + x @ self.w
        if self.bias is not None:
            z = z + self.bias
        if extra is not None:
            z = z + extra
        y = self.act(z)
        return y, self.rule.update(hebb, x, y, self.eta)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rule={self.rule!r}, "
                f"use_w={self.w is not None}")
