"""Plasticity rules: how a Hebbian trace starts and how it changes after each step.

One index convention everywhere: a trace has shape (B, n_pre, n_post) and ``trace[b, i, j]`` belongs to the
connection from pre-synaptic unit ``i`` to post-synaptic unit ``j`` of example ``b`` (the layers multiply
``pre @ (w + alpha * trace)``).

The *rate* of an update is a tensor that broadcasts against a batch of post-synaptic rows, shape (B, n_post):

- a 0-dim tensor: the learned scalar eta of differentiable plasticity;
- (B, 1): one neuromodulator value per example (backpropamine's simple modulation);
- (B, n_post): one value per post-synaptic unit (the modulator fanned out).

Because a rate never varies along the pre-synaptic axis, ``rate * outer(pre, post) == outer(pre, rate * post)``:
every rule below is written as ``decay * trace + outer(pre, rate * post)`` so that the outer product and the
addition fuse into one ``baddbmm`` and no (B, n_pre, n_post) increment is built on its own.

To add a rule, subclass :class:`Rule` and implement :meth:`Rule.update` (and :meth:`Rule.accumulate` if the rule
can take the modulated eligibility increments of retroactive neuromodulation). Pass an instance as ``rule=`` to any
plastic layer; nothing else needs to change. A rule of your own runs on the reference backend (the cell stepped
under autograd): the fused backends' backward passes are written out for ``hebb``, ``oja`` and ``clip`` only, and
``backend="fused"`` refuses any other rule (:mod:`plasticnet.fast.backends`). A rule whose trace stays within
fixed bounds whatever the rate's sign declares ``bounded = True``: only such rules are accepted with
neuromodulation, whose rate is signed.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["Rule", "DecayingHebb", "Oja", "ClippedHebb", "SoftBoundHebb", "outer", "make_rule", "RULES"]


def outer(pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """Batched outer product pre x post: (B, n_pre), (B, n_post) -> (B, n_pre, n_post)."""
    return pre.unsqueeze(2) * post.unsqueeze(1)


def _hebbian_step(trace, pre, post_term, decay=None):
    """``decay * trace + outer(pre, post_term)`` in one fused kernel; ``decay`` broadcasts over the pre axis."""
    base = trace if decay is None else trace * decay
    return torch.baddbmm(base, pre.unsqueeze(2), post_term.unsqueeze(1))


def _over_pre(rate: torch.Tensor) -> torch.Tensor:
    """Give a rate of shape (B, n_post) or (B, 1) a pre-synaptic axis so it broadcasts against a trace."""
    return rate if rate.dim() == 0 else rate.unsqueeze(-2)


class Rule:
    """A plasticity rule.

    ``update(trace, pre, post, rate)`` returns the trace after one step. ``accumulate(trace, increment)`` adds a
    ready-made increment (retroactive neuromodulation adds ``rate * eligibility``); rules that cannot take such an
    increment leave ``accumulates = False`` and are refused with retroactive modulation.

    ``bounded``: whether the trace stays within fixed bounds for a rate of either sign and any size. A
    neuromodulated rate is signed (``tanh`` in [-1, 1], or affine in it with fan-out), so modulation takes only
    bounded rules: under a negative rate the decay of ``hebb`` (``1 - rate``) and ``oja`` (``1 - rate post^2``)
    becomes growth (``hebb`` under a modulator near -0.96 reached 1e28 in 100 steps).
    """

    name = "custom"
    accumulates = False
    bounded = False

    def initial_trace(self, batch_size: int, n_pre: int, n_post: int, *, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch_size, n_pre, n_post, device=device, dtype=dtype)

    def update(self, trace, pre, post, rate):
        raise NotImplementedError

    def accumulate(self, trace, increment):
        raise ConfigError(f"rule {self.name!r} cannot accumulate eligibility increments; use 'clip' or 'softclip'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DecayingHebb(Rule):
    """``trace = (1 - rate) trace + rate outer(pre, post)``: rate is both learning rate and decay (DP 2018)."""

    name = "hebb"

    def update(self, trace, pre, post, rate):
        return _hebbian_step(trace, pre, rate * post, decay=1 - _over_pre(rate))


class Oja(Rule):
    """Oja's rule, ``trace_ij += rate post_j (pre_i - post_j trace_ij)``: decay only through ``post_j ** 2``."""

    name = "oja"

    def update(self, trace, pre, post, rate):
        scaled_post = rate * post
        return _hebbian_step(trace, pre, scaled_post, decay=1 - (scaled_post * post).unsqueeze(-2))


class ClippedHebb(Rule):
    """``trace = clip(trace + rate outer(pre, post), -clip, clip)``: additive, no decay (backpropamine)."""

    name = "clip"
    accumulates = True
    bounded = True

    def __init__(self, clip: float = 2.0):
        if not clip > 0:
            raise ConfigError(f"clip must be positive, got {clip}")
        self.clip = float(clip)

    def update(self, trace, pre, post, rate):
        return _hebbian_step(trace, pre, rate * post).clamp(-self.clip, self.clip)

    def accumulate(self, trace, increment):
        return (trace + increment).clamp(-self.clip, self.clip)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(clip={self.clip})"


class SoftBoundHebb(ClippedHebb):
    """Soft bounds (backpropamine's addpw 2): a positive increment is scaled by the distance to +clip, a negative one
    by the distance to -clip, so the trace slows down as it nears a bound; a final hard clip guards overshoot."""

    name = "softclip"

    def update(self, trace, pre, post, rate):
        return self.accumulate(trace, _over_pre(rate) * outer(pre, post))

    def accumulate(self, trace, increment):
        bounded = trace / self.clip
        soft = trace + increment.clamp(min=0) * (1 - bounded) + increment.clamp(max=0) * (1 + bounded)
        return soft.clamp(-self.clip, self.clip)


RULES = {"hebb": DecayingHebb, "oja": Oja, "clip": ClippedHebb, "softclip": SoftBoundHebb}


def make_rule(rule, clip: float = 2.0) -> Rule | None:
    """Turn a rule name, a :class:`Rule` or ``None`` (no plasticity) into a rule object."""
    if rule is None or isinstance(rule, Rule):
        return rule
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}, None, or pass a Rule instance")
    cls = RULES[rule]
    return cls(clip) if issubclass(cls, ClippedHebb) else cls()
