"""A fused plastic LSTM layer: a whole sequence of :class:`~plasticnet.lstm.PlasticLSTMCell` steps as one autograd
function with a hand-written backward pass, on a CPU with the Numba kernels of :mod:`.cpu_kernels`.

Same maths as the cell (rule ``hebb``, ``oja`` or ``clip``; any alpha mode; a learned eta, simple neuromodulation
with or without fan-out, or retroactive neuromodulation with the ``clip`` rule; the modulator fed by the hidden
state or the cell), but:

- the forward pass runs without an autograd graph: per step, the gates are one matrix product for the batch (the
  fixed recurrent weights of all four gates, as the plain LSTM's) and a few batched PyTorch operations on
  pre-allocated buffers, and one kernel call computes the rate (the modulator, its fan-out), updates every example's
  traces in place and computes, while each new trace row is in a register, the next step's plastic drive
  ``h @ (alpha * trace)``;
- the backward pass is one kernel call (:func:`~plasticnet.fast.cpu_kernels.lstm_backward`) that runs each
  example's whole adjoint recursion, gates included, while its traces (recomputed from the initial ones), their
  adjoints and the weights are in cache, as the plastic RNN's does; the gradients of the weights, the modulator and
  eta follow as one matrix product each over all steps.

Only the initial and final traces are kept (and, for long sequences of wide layers, the first of each chunk of about
sqrt(T) steps: :func:`_chunk_length`); the other buffers are a :class:`~plasticnet.fast.Workspace`'s, kept from one
call to the next. It is the backend ``numba`` of :class:`~plasticnet.PlasticLSTM` (:mod:`.backends`); elsewhere the
cell is stepped under autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import cpu_kernels
from .recurrence import Workspace, _numpy, _Plasticity, kernel_scalars, plasticity, plasticity_tensors


@dataclass
class _Run:
    spec: _Plasticity
    from_cell: bool  # the modulator reads the cell c rather than the hidden state h
    workspace: Workspace
    graph: bool = False  # whether a backward pass will follow


def fused_lstm_run(cell, x_drive: torch.Tensor, state, workspace: Optional[Workspace] = None):
    """Run ``cell`` (one that the backend ``numba`` covers: :mod:`.backends`) over its input drive ``x_drive``
    (T, B, 4 N) (``cell.input_drive`` of the inputs) from ``state``. Returns the hidden states (T, B, N), the final
    cell (B, N) and the final traces ``(hebb, eligibility or None)``."""
    run = _Run(plasticity(cell), cell.modulator_input == "cell", workspace or Workspace())
    retro = cell.modulation == "retroactive"
    traces0 = torch.stack([state.hebb, state.eligibility], 1) if retro else state.hebb.unsqueeze(1)
    tensors = (x_drive, state.h, state.c, traces0, cell.weight_hh, *plasticity_tensors(cell))
    run.graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    hs, c, traces = _FusedPlasticLSTM.apply(*tensors, run)
    return hs, c, (traces[:, 0], traces[:, 1] if retro else None)


# The most memory that the traces recomputed inside a chunk may take (per thread) for a chunk to be the whole sequence.
_WHOLE_SEQUENCE_WORK_BYTES = 16 * 2**20


def _alpha_rows(alpha: torch.Tensor, n: int) -> torch.Tensor:
    """alpha as the kernels take it: a full alpha (N, N) as is, the others as the one row (1, N) that every
    pre-synaptic row shares (no N x N matrix to read at each step, nor its gradient to write)."""
    return (alpha if alpha.dim() == 2 else alpha.expand(1, n)).detach().contiguous()


def _alpha_gradient(rows: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The gradient of alpha in its own mode from that of :func:`_alpha_rows`."""
    return rows if alpha.dim() == 2 else rows[0] if alpha.dim() == 1 else rows.sum()


def _chunk_length(steps: int, trace_bytes: int) -> int:
    """The backward pass recomputes a chunk's traces from its first one, one example at a time, in cache, which is
    faster than reading back traces written to memory (as the RNN's). One chunk for the whole sequence where an
    example's recomputed traces take at most 16 MB (the PTB small preset: 3 MB): then every forward step but the
    first and the last updates the traces in place (at 199 units, batch 20, T = 20, chunks of 5 or 20 steps took the
    same time within the shared machine's noise: the backward pass 1-2 ms faster with chunks of 5, whose traces stay
    in the second-level cache, the forward pass as much slower, writing the kept traces); else chunks of about
    sqrt(T) steps."""
    if (steps - 1) * trace_bytes <= _WHOLE_SEQUENCE_WORK_BYTES:
        return steps
    return math.ceil(math.sqrt(steps))


class _FusedPlasticLSTM(torch.autograd.Function):
    """Inputs: the input drive (T, B, 4 N), the initial h, c (B, N) and traces (B, n_traces, N, N), the cell's
    parameters. Outputs: the hidden states (T, B, N), the final cell (B, N) and traces (B, n_traces, N, N).
    Gate columns ``[input | forget | output | cell input]``, as the cell stores them."""

    @staticmethod
    def forward(ctx, xd, h0, c0, traces0, weight_hh, alpha, eta, mod_w, mod_b, fan_w, fan_b, run: _Run):
        spec, ws = run.spec, run.workspace
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros to write
        if ws.busy:  # an earlier call's backward pass still needs these buffers
            ws = Workspace()
        ws.busy = run.graph
        T, B, N = xd.shape[0], h0.shape[0], h0.shape[1]
        k = _chunk_length(T, spec.n_traces * N * N * h0.element_size())
        n_chunks = math.ceil(T / k)
        h, c = ws.get("h", (T + 1, B, N), h0), ws.get("c", (T + 1, B, N), h0)
        h[0], c[0] = h0, c0
        ifo, g, tanh_c = ws.get("ifo", (T, B, 3 * N), h0), ws.get("g", (T, B, N), h0), ws.get("tanh_c", (T, B, N), h0)
        # The steps update `current` in place (where the kernels' loops vectorise), but for those that write the
        # traces the backward pass keeps: those before steps k, 2k... into `middle`, the last step's into `final`
        # (returned); the steps after those, and the first, read them where they are, so that no trace is copied.
        traces0 = traces0.detach().contiguous()
        middle = ws.get("middle", (n_chunks - 1, B, spec.n_traces, N, N), h0)
        current = ws.get("current", (B, spec.n_traces, N, N), h0).numpy()
        final = torch.empty_like(traces0)
        before = traces0.numpy()
        mods, rates = ws.get("mods", (T, B, 1), h0), ws.get("rates", (T, B, N), h0)
        q, decay = ws.get("q", (T, B, N), h0), ws.get("decay", (T, B, N), h0)
        # Each step's gates start as one matrix product for the batch, x W_x + b + h_prev W_h (the cell input's
        # fixed weights included), to which the kernel's plastic part h_prev @ (alpha * trace) is added.
        gates = ws.get("gates", (B, 4 * N), h0)
        drive = ws.get("drive", (B, N), h0)  # the plastic part of the next step's cell-input drive
        weight_hh = weight_hh.detach()
        no_w = h0.new_zeros(1, N).numpy()  # the kernels' fixed weight: one zero row that every row shares
        alpha_full = _alpha_rows(alpha, N).numpy()
        modulator = (_numpy(mod_w, 2, h0), _numpy(mod_b, 1, h0), _numpy(fan_w, 2, h0), _numpy(fan_b, 1, h0))
        eta_f, clip = kernel_scalars(spec, eta, h.numpy().dtype)
        h_np, g_np, drive_np = h.numpy(), g.numpy(), drive.numpy()
        mod_in_np = (c if run.from_cell else h).numpy()
        terms = [a.numpy() for a in (mods, rates, q, decay)]
        kind = cpu_kernels.KINDS[spec.kind]
        groups = cpu_kernels.threads(B, per_step=True)
        cpu_kernels.first_drive(drive_np, before, h_np[0], np.zeros(0, h_np.dtype), no_w, alpha_full)
        for t in range(T):
            torch.addmm(xd[t], h[t], weight_hh, out=gates)
            torch.sigmoid(gates[:, :3 * N], out=ifo[t])
            i, f, o = ifo[t, :, :N], ifo[t, :, N:2 * N], ifo[t, :, 2 * N:]
            torch.add(gates[:, 3 * N:], drive, out=g[t])
            np.tanh(g_np[t], out=g_np[t])  # NumPy's tanh: faster than PyTorch's on a small batch
            torch.mul(f, c[t], out=c[t + 1]).addcmul_(i, g[t])
            torch.tanh(c[t + 1], out=tanh_c[t])
            torch.mul(o, tanh_c[t], out=h[t + 1])
            after = final.numpy() if t + 1 == T else middle[(t + 1) // k - 1].numpy() if (t + 1) % k == 0 else current
            cpu_kernels.lstm_trace_step(before, after, h_np[t], g_np[t], mod_in_np[t + 1], eta_f, *modulator, kind,
                                        clip, *(a[t] for a in terms), h_np[t + 1], no_w, alpha_full, drive_np,
                                        t + 1 == T, groups)
            before = after
        ctx.run, ctx.workspace, ctx.k = run, ws, k
        # Saved, buffers included: autograd's version counters then refuse a backward pass through buffers that a
        # later call with the same workspace has overwritten.
        ctx.save_for_backward(h, c, ifo, g, tanh_c, traces0, middle, final, mods, rates, q, decay, weight_hh, alpha,
                              eta, mod_w, fan_w)
        return h[1:].clone(), c[T].clone(), final

    @staticmethod
    def backward(ctx, g_out, g_c_final, g_traces_final):
        h, c, ifo, g, tanh_c, first, middle, final, mods, rates, q, decay, weight_hh, alpha, eta, mod_w, fan_w = \
            ctx.saved_tensors
        spec, from_cell, ws, k = ctx.run.spec, ctx.run.from_cell, ctx.workspace, ctx.k
        T, B, N = g.shape
        modulated = spec.modulation is not None
        g_out = g_out.contiguous() if g_out is not None else h.new_zeros(T, B, N)
        G_shape = (B, spec.n_traces, N, N)
        G = h.new_empty(G_shape) if ctx.needs_input_grad[3] else ws.get("trace_adjoint", G_shape, h)
        if g_traces_final is None:
            G.zero_()
        else:  # the kernel turns it into the initial traces' adjoint in place
            G.copy_(g_traces_final)
        g_c = g_c_final.clone() if g_c_final is not None else h.new_zeros(B, N)  # likewise, for the cell
        g_gates = h.new_empty(T, B, 4 * N)  # the adjoint of the input drive, returned as such
        d_rates, g_z = ws.get("d_rates", (T, B, N), h), ws.get("g_z", (T, B, 1), h)
        alpha_rows = N if alpha.dim() == 2 else 1
        g_h0, d_eta_ex = h.new_empty(B, N), h.new_zeros(B)
        d_alpha_ex = ws.get("d_alpha", (B, alpha_rows, N), h).zero_()  # each example's, summed after
        groups = cpu_kernels.threads(B)
        work = ws.get("work", (groups, max(k - 1, 1), spec.n_traces, N, N), h).numpy()
        vectors = ws.get("vectors", (groups, 7, N), h).numpy()
        w_ifo = weight_hh[:, :3 * N]
        weights = (_numpy(mod_w, 2, h), _numpy(fan_w, 2, h), _numpy(w_ifo, 2, h), _numpy(weight_hh[:, 3 * N:], 2, h),
                   _alpha_rows(alpha, N).numpy())
        eta_f, clip = kernel_scalars(spec, eta, h.numpy().dtype)
        arrays = [t.numpy() for t in (h, c, ifo, g, tanh_c, rates, q, decay, mods)]
        cpu_kernels.lstm_backward(first.numpy(), middle.numpy(), final.numpy(), k, *arrays, *weights, eta_f,
                                  g_out.numpy(), cpu_kernels.KINDS[spec.kind], clip, from_cell, G.numpy(),
                                  g_gates.numpy(), d_rates.numpy(), g_z.numpy(), g_h0.numpy(), g_c.numpy(),
                                  d_alpha_ex.numpy(), d_eta_ex.numpy(), work, vectors, groups)
        ws.release()
        flat = lambda a: a.reshape(T * B, -1)  # noqa: E731
        d_weight_hh = flat(h[:-1]).t() @ flat(g_gates)
        d_alpha = _alpha_gradient(d_alpha_ex.sum(0), alpha)
        d_eta = None
        if spec.modulation is None:
            d_eta = d_rates.sum().reshape(eta.shape)
        elif spec.modulation == "retroactive":
            d_eta = d_eta_ex.sum().reshape(eta.shape)
        d_mod_w = (flat(g_z).t() @ flat((c if from_cell else h)[1:])) if modulated else None
        d_mod_b = g_z.sum((0, 1)) if modulated else None
        d_fan_w = (flat(d_rates).t() @ flat(mods)) if spec.fanout else None
        d_fan_b = d_rates.sum((0, 1)) if spec.fanout else None
        d_traces0 = G if ctx.needs_input_grad[3] else None
        return g_gates, g_h0, g_c, d_traces0, d_weight_hh, d_alpha, d_eta, d_mod_w, d_mod_b, d_fan_w, d_fan_b, None
