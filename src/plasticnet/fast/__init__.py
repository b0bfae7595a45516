"""Faster and leaner forms of the same maths as :mod:`plasticnet.layers`, tested against it."""

from .recurrence import fused_plastic_rnn, fusable

__all__ = ["fused_plastic_rnn", "fusable"]
