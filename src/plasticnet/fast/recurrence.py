"""A fused plastic recurrence: a whole sequence of :class:`~plasticnet.layers.PlasticRNNCell` steps as one autograd
function with a hand-written backward pass.

Same maths as the cell (tanh units, a learned scalar eta, rule ``hebb``, ``oja`` or ``clip``, any alpha mode), but:

- the forward pass runs without an autograd graph and writes each trace into one pre-allocated buffer, so no
  per-step tensors are allocated and freed (at 1001 units a trace is 4 MB; allocation and page faults were a
  large part of the plain formulation's time);
- the backward pass is the adjoint recursion written out, with in-place updates of one trace-sized adjoint, and the
  gradient of ``w`` as one matrix product over all steps at the end;
- with ``checkpoint_every=k`` only every k-th trace is kept and the others are recomputed chunk by chunk during the
  backward pass: memory for T/k + k traces instead of T, for about one extra forward pass.

Every trace rule of the form ``trace = clip(decay * trace + outer(pre, q))`` fits; see :func:`_decay_and_q`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..rules import ClippedHebb, DecayingHebb, Oja, Rule, SoftBoundHebb

FUSABLE_RULES = (DecayingHebb, Oja, ClippedHebb)


def fusable(rule: Optional[Rule]) -> bool:
    """Rules whose backward pass is written out here (exact types: a subclass may change the maths)."""
    return type(rule) in FUSABLE_RULES and not isinstance(rule, SoftBoundHebb)


def _decay_and_q(kind: str, eta: torch.Tensor, h: torch.Tensor):
    """The rule as ``decay * trace + outer(pre, q)``: decay is a scalar tensor (hebb), (B, 1, N) (oja) or None."""
    q = eta * h
    if kind == "hebb":
        return 1 - eta, q
    if kind == "oja":
        return (1 - q * h).unsqueeze(1), q
    return None, q


def _plastic_drive(pre, trace, alpha, scratch):
    """``pre @ (alpha * trace)`` as in :func:`plasticnet.layers.plastic_drive`, with a full alpha's product written
    into ``scratch`` instead of a fresh tensor."""
    if alpha.dim() == 2:
        return torch.bmm(pre.unsqueeze(1), torch.mul(alpha, trace, out=scratch)).squeeze(1)
    return torch.bmm(pre.unsqueeze(1), trace).squeeze(1) * alpha


def _trace_step(kind, clip, eta, beta, trace, pre, post, out):
    """Write the next trace into ``out`` (a buffer slot) without allocating a trace-sized temporary; a scalar decay
    rides in baddbmm's ``beta`` (a Python number, read once per call so that no step waits for the device), so
    hebb and clip read and write each trace element once."""
    decay, q = _decay_and_q(kind, eta, post)
    if kind == "oja":
        torch.mul(trace, decay, out=out).baddbmm_(pre.unsqueeze(2), q.unsqueeze(1))
    else:
        torch.baddbmm(trace, pre.unsqueeze(2), q.unsqueeze(1), beta=beta, out=out)
    if kind == "clip":
        out.clamp_(-clip, clip)
    return out


def _scalar_decay(kind, eta) -> float:
    return 1.0 - float(eta) if kind == "hebb" else 1.0


def _run_chunk(kind, clip, eta, alpha, w, u, h, traces, start, stop, keep_h=None, scratch=None):
    """Steps start..stop-1 (0-based): ``traces[0]`` holds the trace before step ``start``; fills ``traces[1:]``.
    With ``keep_h`` (the activity buffer ``h`` itself) new activities are computed and written; without it (the
    backward pass's recomputation) they are read from ``h``."""
    beta = _scalar_decay(kind, eta)
    for k, t in enumerate(range(start, stop)):
        pre = h[t]
        if keep_h is not None:
            drive = u[t] + pre @ w + _plastic_drive(pre, traces[k], alpha, scratch)
            torch.tanh(drive, out=keep_h[t + 1])
        _trace_step(kind, clip, eta, beta, traces[k], pre, h[t + 1], traces[k + 1])


class _FusedPlasticRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, h0, trace0, w, alpha, eta, kind, clip, checkpoint_every):
        T, B, N = u.shape
        k = checkpoint_every or T
        n_chunks = math.ceil(T / k)
        h = u.new_empty(T + 1, B, N)
        h[0] = h0
        # chunk_starts[c] is the trace before step c*k; within the chunk being run, `work` holds every trace.
        chunk_starts = u.new_empty(n_chunks + 1, B, N, N)
        chunk_starts[0] = trace0
        keep_all = k >= T
        work = u.new_empty(T + 1 if keep_all else k + 1, B, N, N)
        scratch = u.new_empty(B, N, N) if alpha.dim() == 2 else None
        for c in range(n_chunks):
            start, stop = c * k, min(T, (c + 1) * k)
            slots = work[: stop - start + 1] if not keep_all else work[start: stop + 1]
            slots[0] = chunk_starts[c]
            _run_chunk(kind, clip, eta, alpha, w, u, h, slots, start, stop, keep_h=h, scratch=scratch)
            chunk_starts[c + 1] = slots[stop - start]
        ctx.save_for_backward(u, h, chunk_starts, work if keep_all else None, w, alpha, eta)
        ctx.kind, ctx.clip, ctx.k, ctx.keep_all = kind, clip, k, keep_all
        return h[1:].clone(), chunk_starts[n_chunks].clone()

    @staticmethod
    def backward(ctx, g_out, g_trace_final):
        u, h, chunk_starts, all_traces, w, alpha, eta = ctx.saved_tensors
        kind, clip, k = ctx.kind, ctx.clip, ctx.k
        T, B, N = u.shape
        full_alpha = alpha.dim() == 2
        g_h = g_out[T - 1].clone() if g_out is not None else u.new_zeros(B, N)
        G = g_trace_final.clone() if g_trace_final is not None else u.new_zeros(B, N, N)
        g_a_all = u.new_empty(T, B, N)
        d_alpha = torch.zeros_like(alpha)
        d_eta = torch.zeros_like(eta)
        scratch = u.new_empty(B, N, N)
        work = None if ctx.keep_all else u.new_empty(k + 1, B, N, N)
        for c in reversed(range(math.ceil(T / k))):
            start, stop = c * k, min(T, (c + 1) * k)
            if ctx.keep_all:
                traces = all_traces[start: stop + 1]
            else:
                traces = work[: stop - start + 1]
                traces[0] = chunk_starts[c]
                _run_chunk(kind, clip, eta, alpha, w, u, h, traces, start, stop)
            for t in reversed(range(start, stop)):
                pre, post, trace_before = h[t], h[t + 1], traces[t - start]
                # Through the trace update: trace_after = clip(decay * trace_before + outer(pre, q)).
                if kind == "clip":
                    G.mul_(traces[t - start + 1].abs() < clip)
                decay, q = _decay_and_q(kind, eta, post)
                d_q = torch.bmm(pre.unsqueeze(1), G).squeeze(1)
                g_pre = torch.bmm(G, q.unsqueeze(2)).squeeze(2)
                g_h = g_h + eta * d_q
                d_eta += (d_q * post).sum()
                if kind == "hebb":
                    d_eta -= torch.dot(G.reshape(-1), trace_before.reshape(-1))
                    G.mul_(decay)
                elif kind == "oja":
                    d_decay = torch.mul(G, trace_before, out=scratch).sum(1)
                    g_h = g_h - 2 * eta * post * d_decay
                    d_eta -= (d_decay * post * post).sum()
                    G.mul_(decay)
                # Through the activity: post = tanh(u + pre @ w + pre @ (alpha * trace_before)).
                g_a = g_h * (1 - post * post)
                g_a_all[t] = g_a
                g_pre += g_a @ w.t()
                if full_alpha:
                    torch.mul(alpha, trace_before, out=scratch)
                    g_pre += torch.bmm(scratch, g_a.unsqueeze(2)).squeeze(2)
                    torch.mul(pre.unsqueeze(2), g_a.unsqueeze(1), out=scratch)
                    G.addcmul_(alpha, scratch)
                    for b in range(B):  # per example: no (B, N, N) product to sum over the batch
                        d_alpha.addcmul_(trace_before[b], scratch[b])
                else:
                    scaled = g_a * alpha
                    g_pre += torch.bmm(trace_before, scaled.unsqueeze(2)).squeeze(2)
                    G.baddbmm_(pre.unsqueeze(2), scaled.unsqueeze(1))
                    pre_trace = torch.bmm(pre.unsqueeze(1), trace_before).squeeze(1)
                    d_alpha += (g_a * pre_trace).sum(0) if alpha.dim() == 1 else (g_a * pre_trace).sum()
                g_h = g_pre + (g_out[t - 1] if g_out is not None and t > 0 else 0)
        d_w = h[:-1].reshape(T * B, N).t() @ g_a_all.reshape(T * B, N)
        return g_a_all, g_h, G, d_w, d_alpha, d_eta, None, None, None


def fused_plastic_rnn(u, h0, trace0, w, alpha, eta, rule: Rule, checkpoint_every: Optional[int] = None):
    """Run T tanh plastic steps on the drive ``u`` (T, B, N) (the input part, i2h(x) or x) from state (h0, trace0).

    Returns all activities (T, B, N) and the final trace. ``checkpoint_every`` trades memory for recomputation.
    """
    kind = rule.name
    clip = getattr(rule, "clip", 0.0)
    return _FusedPlasticRNN.apply(u, h0, trace0, w, alpha, eta, kind, clip, checkpoint_every)
