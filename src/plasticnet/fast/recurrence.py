"""A fused plastic recurrence: a whole sequence of :class:`~plasticnet.layers.PlasticRNNCell` steps as one autograd
function with a hand-written backward pass.

Same maths as the cell (tanh units; rule ``hebb``, ``oja`` or ``clip``; any alpha mode; a learned eta, simple
neuromodulation with or without fan-out, or retroactive neuromodulation with the ``clip`` rule), but:

- the forward pass runs without an autograd graph and writes each trace into a pre-allocated buffer, so no
  per-step tensors are allocated and freed (a trace is megabytes: allocation and page faults were a large part of
  the plain formulation's time);
- the backward pass is the adjoint recursion written out, with in-place updates of one adjoint per trace, and the
  gradients of ``w`` and the modulator as one matrix product over all steps at the end;
- with ``checkpoint_every=k`` only every k-th trace is kept and the others are recomputed chunk by chunk during the
  backward pass: memory for T/k + k traces instead of T, for about one extra forward pass of the trace updates.
  ``checkpoint_every=None`` lets the backend choose (:func:`chunk_length`): ``numba`` recomputes chunks of
  ceil(sqrt(T)) steps (recomputation in cache is faster there than reading back stored traces), ``torch`` and
  ``triton`` keep every trace; ``checkpoint_every=1`` keeps every trace on every backend.

Two ways to feed it: the drive of every step given up front (:func:`fused_plastic_rnn`, :func:`fused_cell_run`),
or a closed loop (:func:`fused_closed_loop`) where each step's input is computed from the previous step's activity
by a function the gradient does not go through, as when an agent acts in an environment. Every form can reuse its
buffers from one call to the next (:class:`Workspace`), which on a CPU saves the page faults of fresh memory.

Every non-retroactive rule of the form ``trace = clip(decay * trace + outer(pre, q))`` fits; see
:func:`_decay_and_q`. The work runs on one of three backends (:mod:`.backends` says which cells each covers and
how one is chosen): ``numba``, :mod:`.cpu_kernels` (a step per kernel call forward, the whole backward pass in one,
example by example: :func:`_kernel_forward`, :func:`_kernel_backward`); ``triton``, :mod:`.gpu_kernels` (a whole
step per kernel each way); ``torch``, PyTorch operations (any device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import ConfigError
from ..layers import eligibility_rate
from ..rules import ClippedHebb, DecayingHebb, Oja, Rule, SoftBoundHebb
from . import cpu_kernels, gpu_kernels
from .backends import resolve_fused, why_not

FUSABLE_RULES = (DecayingHebb, Oja, ClippedHebb)


def fusable(rule: Optional[Rule]) -> bool:
    """Rules whose backward pass is written out here (exact types: a subclass may change the maths)."""
    return type(rule) in FUSABLE_RULES and not isinstance(rule, SoftBoundHebb)


def fusable_cell(cell) -> bool:
    """Whether :func:`fused_cell_run` and :func:`fused_closed_loop` can run this cell (on backend ``torch`` at
    least)."""
    return why_not("torch", cell.rule, cell.activation, cell.modulation, cell.hidden_size, cell.w.device,
                   cell.w.dtype) is None


@dataclass(frozen=True)
class _Plasticity:
    """What the loops need to know about the cell beyond its parameters."""

    kind: str  # "hebb", "oja" or "clip"
    clip: float
    modulation: Optional[str]  # None, "simple" or "retroactive"
    fanout: bool

    @property
    def n_traces(self) -> int:
        return 2 if self.modulation == "retroactive" else 1


class Workspace:
    """Buffers kept from one call to the next (on a CPU, fresh memory costs a page fault per 4 KB written: at 1001
    units, most of a step). A call uses them unless the backward pass of an earlier call that used them has
    not run yet: then it allocates its own, so a pending graph never sees its buffers overwritten. A graph that is
    dropped without a backward pass keeps them reserved (later calls allocate); ``release()`` frees them."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}
        self.busy = False

    def release(self) -> None:
        self.busy = False

    def get(self, name: str, shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
        dtype = dtype or like.dtype
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != torch.Size(shape) or buffer.dtype != dtype or buffer.device != like.device:
            buffer = self._buffers[name] = torch.empty(shape, dtype=dtype, device=like.device)
        return buffer


_hardtanh_backward = torch.ops.aten.hardtanh_backward.grad_input
# From this many units on, the CPU backward pass sums alpha's gradient example by example: a few more operations,
# but no (B, N, N) product to write and read back (at 1001 units that product is 4 MB per example).
_PER_EXAMPLE_ALPHA_GRAD_UNITS = 256


def _summing_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype of the modulator's sums, ``z = h2mod(post)`` forward and its adjoint ``d_m`` backward: double
    (but on Apple's GPU, which has none), then one rounding. Both sums cancel (weights of both signs), and the
    modulator's slope ``1 - m^2`` magnifies m's relative error by ``2 m^2 / (1 - m^2)`` (9 at m = 0.9) into every
    gradient: summed in float32, a step's modulator adjoint came out 9 times further from the float64 reference
    than the CPU kernels' (which sum in double) and simplemaze's modulator gradients up to 5 times further than
    plain autograd's."""
    return torch.float32 if like.device.type == "mps" else torch.float64


def _decay_and_q(kind: str, rate: torch.Tensor, post: torch.Tensor):
    """The rule as ``decay * trace + outer(pre, q)``. ``rate`` is a scalar tensor, (B, 1) or (B, N); decay is
    None (clip), or broadcasts over the pre-synaptic axis: a scalar, (B, 1, 1) or (B, 1, N)."""
    q = rate * post
    if kind == "hebb":
        return (1 - rate) if rate.dim() == 0 else (1 - rate).unsqueeze(1), q
    if kind == "oja":
        return (1 - q * post).unsqueeze(1), q
    return None, q


def _recurrent_drive(out, pre, w, trace, alpha, scratch):
    """``out = pre @ (w + alpha * trace)`` (B, N), with a full alpha's effective weights written into ``scratch``
    instead of a fresh tensor: one product, so one sum per unit, and a plain ``bmm`` (on a CPU, ``baddbmm`` sums
    less accurately: the drive's float32 error 1.9e-7 against 7.1e-8 at 100 units). The cell's formulation,
    ``pre @ w`` plus ``pre @ (alpha * trace)`` added by ``baddbmm``, left the float32 activities 2.8 times and the
    gradients up to 2.9 times further from the float64 reference (simplemaze, median over 16 inputs): the tanh
    slopes turn the drive's absolute error into the gradients' relative one. A per-neuron or scalar alpha scales
    the columns of ``pre @ trace`` instead (as :func:`plasticnet.layers.plastic_drive` does): building
    ``w + alpha * trace`` would cost a pass over the traces."""
    if alpha.dim() == 2:
        torch.bmm(pre.unsqueeze(1), torch.addcmul(w, alpha, trace, out=scratch), out=out.unsqueeze(1))
    else:
        torch.mm(pre, w, out=out).addcmul_(torch.bmm(pre.unsqueeze(1), trace).squeeze(1), alpha)


def _update_traces(spec: _Plasticity, eta, pre, post, rate, traces, out, scalar_decay=None):
    """Write the traces after one step into ``out`` (n_traces, B, N, N) from ``traces`` before it, without
    allocating a trace-sized temporary. ``scalar_decay``, a Python number, is the decay of the hebb rule with a
    learned scalar eta: it rides in baddbmm's ``beta``, so that the trace is read and written once."""
    if spec.modulation == "retroactive":
        plastic, eligibility = traces[0], traces[1]
        torch.addcmul(plastic, rate.unsqueeze(1), eligibility, out=out[0]).clamp_(-spec.clip, spec.clip)
        torch.mul(eligibility, 1 - eta, out=out[1]).baddbmm_(pre.unsqueeze(2), (eta * post).unsqueeze(1))
        return
    decay, q = _decay_and_q(spec.kind, rate, post)
    if decay is None:  # one pass: addcmul broadcasts the outer product, where baddbmm(out=) first copies
        torch.addcmul(traces[0], pre.unsqueeze(2), q.unsqueeze(1), out=out[0])
    elif scalar_decay is not None:
        torch.baddbmm(traces[0], pre.unsqueeze(2), q.unsqueeze(1), beta=scalar_decay, out=out[0])
    else:
        torch.mul(traces[0], decay, out=out[0]).baddbmm_(pre.unsqueeze(2), q.unsqueeze(1))
    if spec.kind == "clip":
        out[0].clamp_(-spec.clip, spec.clip)


def _kernel_clip(spec: _Plasticity) -> float:
    return spec.clip if spec.kind == "clip" else math.inf


def _full_alpha(alpha: torch.Tensor, n: int) -> torch.Tensor:
    """Any alpha as the (N, N) matrix it stands for (a per-neuron alpha scales post-synaptic columns)."""
    return (alpha if alpha.dim() == 2 else alpha.expand(n, n)).detach().contiguous()


def _scalar_decay(spec: _Plasticity, eta) -> Optional[float]:
    """The hebb rule's decay ``1 - eta`` as a Python number, read once per call so that no step waits for the
    device; None where the decay is not one learned scalar, while a CUDA graph is captured (a number read then
    would stay in the graph, stale once eta is updated), and on a CPU: there baddbmm's ``beta`` rounded the float32
    trace off the reference (100 units, 200 steps: the final trace 2.3 and eta's gradient 8 times further from the
    float64 reference than autograd's float32), where a multiplication and then baddbmm do not."""
    if spec.kind != "hebb" or spec.modulation is not None or not eta.is_cuda or torch.cuda.is_current_stream_capturing():
        return None
    return 1.0 - float(eta)


def _work_shape(keep_all: bool, k: int, T: int, trace_shape) -> tuple:
    """The buffer of traces a pass works in: all T + 1 when every trace is kept, else the k - 1 inside a chunk."""
    return (T + 1 if keep_all else max(k - 1, 1), *trace_shape)


def _chunk_slots(work, chunk_starts, c: int, start: int, stop: int, keep_all: bool) -> list:
    """The traces before steps ``start..stop`` of chunk c, as stop - start + 1 views (n_traces, B, N, N): all in
    ``work`` when every trace is kept; otherwise the chunk's two ends in ``chunk_starts`` (so that no trace is
    copied in or out of ``work``) and the ones between them in ``work``."""
    if keep_all:
        return list(work[start: stop + 1].unbind(0))
    return [chunk_starts[c], *work[: stop - start - 1].unbind(0), chunk_starts[c + 1]]


@dataclass
class _Run:
    """How one call is fed and stored (everything the autograd function needs that is not a tensor input)."""

    spec: _Plasticity
    steps: int
    checkpoint_every: Optional[int]
    backend: str  # "torch", "numba" or "triton"
    workspace: Workspace
    x0: Optional[torch.Tensor] = None
    feedback: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None
    graph: bool = False  # whether a backward pass will follow (set by _apply)


def _set_initial_traces(buffer: torch.Tensor, traces0: Optional[torch.Tensor]) -> None:
    """Write the initial traces into a pass's buffer; None stands for zeros (a fresh state), which saves making a
    tensor of them each call."""
    if traces0 is None:
        buffer.zero_()
    else:
        buffer.copy_(traces0)


def _apply(run: _Run, *tensors):
    """:class:`_FusedPlasticRNN` on ``tensors``, telling it whether a backward pass can follow."""
    run.graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return _FusedPlasticRNN.apply(*tensors, run)


class _FusedPlasticRNN(torch.autograd.Function):
    """Inputs: the drive ``u`` (T, B, N), or (closed loop) the input weights ``in_w``, ``in_b``; the initial state
    (the traces may be None: zeros); the cell's parameters. Outputs: the activities (T, B, N) and the final traces
    (n_traces, B, N, N).

    The loops index Python lists of per-step views made once (``unbind``) and update in place wherever they can:
    at a few hundred units a step is dozens of small operations, and each one's overhead counts."""

    @staticmethod
    def forward(ctx, u, in_w, in_b, h0, traces0, w, alpha, eta, mod_w, mod_b, fan_w, fan_b, run: _Run):
        spec, T, ws = run.spec, run.steps, run.workspace
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros to write
        if ws.busy:  # an earlier call's backward pass still needs these buffers
            ws = Workspace()
        ws.busy = run.graph
        ctx.workspace = ws
        if run.backend == "numba":
            return _kernel_forward(ctx, run, ws, u, in_w, in_b, h0, traces0, w, alpha, eta, mod_w, mod_b, fan_w,
                                   fan_b)
        B, N = h0.shape
        k = chunk_length(run.backend, run.checkpoint_every, T)
        n_chunks = math.ceil(T / k)
        keep_all = k >= T
        closed = u is None
        h = ws.get("h", (T + 1, B, N), h0)
        h[0] = h0
        hs = h.unbind(0)
        if closed:
            x = ws.get("x", (T, *run.x0.shape), h0)
            x[0] = run.x0
            xs, in_wt = x.unbind(0), in_w.t()
        else:
            x, us = None, u.unbind(0)
        # The modulator m of every step, and the rate it gives (the same tensor without fan-out).
        mods = ws.get("mods", (T, B, 1), h0) if spec.modulation else None
        rates = ws.get("rates", (T, B, N), h0) if spec.fanout else mods
        rate_steps = rates.unbind(0) if spec.modulation else [eta] * T
        wide = _summing_dtype(h0)
        mod_wt, mod_b_wide = (mod_w.t().to(wide), mod_b.to(wide)) if spec.modulation else (None, None)
        scalar_decay = _scalar_decay(spec, eta)
        fan_wt = fan_w.t() if spec.fanout else None
        # Every trace is kept in `work`, or chunk_starts[c] holds the traces before step c*k and `work` the ones
        # inside the chunk being run (see _chunk_slots).
        trace_shape = (spec.n_traces, B, N, N)
        work = ws.get("work", _work_shape(keep_all, k, T, trace_shape), h0)
        chunk_starts = None if keep_all else ws.get("chunk_starts", (n_chunks + 1, *trace_shape), h0)
        _set_initial_traces((work if keep_all else chunk_starts)[0], traces0)
        scratch = ws.get("scratch", (B, N, N), h0)
        gpu = run.backend == "triton"
        if gpu:  # the kernels read rows with unit stride
            alpha_full, clip = _full_alpha(alpha, N), _kernel_clip(spec)
            us = None if closed else u.contiguous().unbind(0)
        for c in range(n_chunks):
            start, stop = c * k, min(T, (c + 1) * k)
            slot_traces = [slot.unbind(0) for slot in _chunk_slots(work, chunk_starts, c, start, stop, keep_all)]
            for t in range(start, stop):
                pre, post = hs[t], hs[t + 1]
                before, after = slot_traces[t - start], slot_traces[t - start + 1]
                if gpu:
                    gpu_kernels.forward_step(
                        xs[t] if closed else us[t], in_w, in_b, pre, before[0], after[0], post, w, alpha_full, mod_w,
                        mod_b, fan_w, fan_b, eta, mods[t] if spec.modulation else None,
                        rates[t] if spec.fanout else None, spec.kind, clip)
                else:
                    _recurrent_drive(post, pre, w, before[0], alpha, scratch)
                    post.add_(torch.addmm(in_b, xs[t], in_wt) if closed else us[t]).tanh_()
                    rate = rate_steps[t]
                    if spec.modulation:
                        m = torch.tanh(torch.addmm(mod_b_wide, post.to(wide), mod_wt), out=mods[t])
                        if spec.fanout:
                            torch.addmm(fan_b, m, fan_wt, out=rate)
                    _update_traces(spec, eta, pre, post, rate, before, after, scalar_decay)
                if closed:
                    x_next = run.feedback(t, post)
                    if t + 1 < T:
                        xs[t + 1].copy_(x_next)
        ctx.run, ctx.keep_all, ctx.k, ctx.closed = run, keep_all, k, closed
        # Saved, buffers included: autograd's version counters then refuse a backward pass through buffers that a
        # later call with the same workspace has overwritten.
        ctx.save_for_backward(u, x, h, chunk_starts, work if keep_all else None, mods, rates if spec.fanout else None,
                              w, alpha, eta, mod_w, mod_b, fan_w, fan_b)
        return h[1:].clone(), (work[T] if keep_all else chunk_starts[n_chunks]).clone()

    @staticmethod
    def backward(ctx, g_out, g_traces_final):
        if torch.is_grad_enabled():  # create_graph=True: the gradient itself would need a gradient
            raise ConfigError("the fused recurrence's backward pass is not differentiable; for second derivatives "
                              "(create_graph=True, double backward) build the layer or agent with backend='reference'")
        if getattr(ctx, "kernels", False):
            return _kernel_backward(ctx, g_out, g_traces_final)
        if ctx.run.backend == "triton":
            return _gpu_backward(ctx, g_out, g_traces_final)
        u, x, h, chunk_starts, all_traces, mods, rates, w, alpha, eta, mod_w, mod_b, fan_w, fan_b = \
            ctx.saved_tensors
        run = ctx.run
        spec, k, T = run.spec, ctx.k, run.steps
        B, N = h.shape[1:]
        modulated, retro = spec.modulation is not None, spec.modulation == "retroactive"
        full_alpha = alpha.dim() == 2
        hs = h.unbind(0)
        g_out = g_out if g_out is not None else h.new_zeros(T, B, N)
        g_outs = g_out.unbind(0)
        G = g_traces_final.clone() if g_traces_final is not None else h.new_zeros(spec.n_traces, B, N, N)
        G_plastic = G[0]
        G_elig = G[1] if retro else None
        g_a_all = h.new_empty(T, B, N)
        g_as = g_a_all.unbind(0)
        tanh_slopes = (1 - h[1:].square()).unbind(0)
        if modulated:
            rate_steps = (rates if spec.fanout else mods).unbind(0)
            mod_slopes = (1 - mods.square()).unbind(0)
            g_z_all = h.new_empty(T, B, 1)
            g_zs = g_z_all.unbind(0)
        else:
            rate_steps = [eta] * T
        # What does not depend on the adjoints is computed for all steps at once: the post-synaptic terms of the
        # trace updates, and (after the loop) the gradients that only sum the per-step rate gradients.
        q_steps = None if retro else ((rates if spec.fanout else mods) if modulated else eta).mul(h[1:])
        d_rates = h.new_empty(T, B, N)
        d_alpha = torch.zeros_like(alpha)
        d_eta = torch.zeros_like(eta) if retro else None
        w_t = w.t()
        wide = _summing_dtype(h)
        fan_w_wide = fan_w.to(wide) if spec.fanout else None
        scratch = h.new_empty(B, N, N)
        # Views made once: activities as rows (B, 1, N) and columns (B, N, 1), transposed adjoints and scratch.
        rows, columns = h.unsqueeze(2).unbind(0), h.unsqueeze(3).unbind(0)
        q_rows = None if retro else q_steps.unsqueeze(2).unbind(0)
        G_plastic_t, scratch_t = G_plastic.transpose(1, 2), scratch.transpose(1, 2)
        G_elig_t = G_elig.transpose(1, 2) if retro else None
        per_example_alpha_grad = full_alpha and N >= _PER_EXAMPLE_ALPHA_GRAD_UNITS and h.device.type == "cpu"
        d_alpha_by_example = h.new_zeros(B, N, N) if full_alpha and not per_example_alpha_grad else None
        work = all_traces if ctx.keep_all else ctx.workspace.get(
            "work", _work_shape(False, k, T, (spec.n_traces, B, N, N)), h)
        scalar_decay = None if ctx.keep_all else _scalar_decay(spec, eta)
        g_h = g_outs[T - 1].clone()
        for c in reversed(range(math.ceil(T / k))):
            start, stop = c * k, min(T, (c + 1) * k)
            slot_traces = [slot.unbind(0) for slot in _chunk_slots(work, chunk_starts, c, start, stop, ctx.keep_all)]
            if not ctx.keep_all:  # recomputed, but for the chunk's last trace, kept in chunk_starts
                for t in range(start, stop - 1):
                    _update_traces(spec, eta, hs[t], hs[t + 1], rate_steps[t], slot_traces[t - start],
                                   slot_traces[t - start + 1], scalar_decay)
            for t in reversed(range(start, stop)):
                post, rate = hs[t + 1], rate_steps[t]
                before, after = slot_traces[t - start], slot_traces[t - start + 1]
                # Through the trace updates, from the adjoints of the traces after the step to those before it;
                # g_h, the adjoint of the new activity, gathers every path in place.
                if spec.kind == "clip":  # zero where the clip saturated, in one pass and in place
                    _hardtanh_backward(G_plastic, after[0], -spec.clip, spec.clip, grad_input=G_plastic)
                if retro:
                    # eligibility_after = (1 - eta) eligibility_before + eta outer(pre, post)
                    d_q = torch.bmm(rows[t], G_elig).squeeze(1)
                    g_pre = torch.bmm(rows[t + 1], G_elig_t).squeeze(1).mul_(eta)
                    g_h.addcmul_(eta, d_q)
                    d_eta += (d_q * post).sum() - torch.mul(G_elig, before[1], out=scratch).sum()
                    G_elig.mul_(1 - eta)
                    # plastic_after = clip(plastic_before + rate * eligibility_before)
                    d_rate = torch.sum(torch.mul(G_plastic, before[1], out=scratch), 1, out=d_rates[t])
                    G_elig.addcmul_(rate.unsqueeze(1), G_plastic)
                else:
                    d_q = torch.bmm(rows[t], G_plastic).squeeze(1)
                    g_pre = torch.bmm(q_rows[t], G_plastic_t).squeeze(1)
                    g_h.addcmul_(rate, d_q)
                    d_rate = torch.mul(d_q, post, out=d_rates[t])
                    if spec.kind != "clip":
                        d_decay = torch.mul(G_plastic, before[0], out=scratch).sum(1)
                        if spec.kind == "hebb":
                            d_rate -= d_decay
                        else:
                            g_h.addcmul_(q_rows[t].squeeze(1), d_decay, value=-2)
                            d_rate -= post * post * d_decay
                        G_plastic.mul_(_decay_and_q(spec.kind, rate, post)[0])
                # From the rate to the modulator and the new activity (to eta or the fan-out: after the loop).
                if modulated:
                    d_m = d_rate.to(wide) @ fan_w_wide if spec.fanout else d_rate.sum(1, keepdim=True, dtype=wide)
                    g_h.addmm_(torch.mul(d_m, mod_slopes[t], out=g_zs[t]), mod_w)
                # Through the activity: post = tanh(u + pre @ (w + alpha * plastic_before)); with a full alpha, one
                # product with the effective weights, as forward (_recurrent_drive); bmm, not baddbmm (see there).
                g_a = torch.mul(g_h, tanh_slopes[t], out=g_as[t])
                plastic = before[0]
                if full_alpha:
                    torch.addcmul(w, alpha, plastic, out=scratch)
                    g_pre.add_(torch.bmm(g_a.unsqueeze(1), scratch_t).squeeze(1))
                    torch.mul(columns[t], g_a.unsqueeze(1), out=scratch)
                    G_plastic.addcmul_(alpha, scratch)
                    if per_example_alpha_grad:
                        for b in range(B):  # per example: no (B, N, N) product to write and sum over the batch
                            d_alpha.addcmul_(plastic[b], scratch[b])
                    else:
                        d_alpha_by_example.addcmul_(plastic, scratch)
                else:
                    g_pre.addmm_(g_a, w_t)
                    scaled = g_a * alpha
                    g_pre.add_(torch.bmm(scaled.unsqueeze(1), plastic.transpose(1, 2)).squeeze(1))
                    G_plastic.baddbmm_(columns[t], scaled.unsqueeze(1))
                    pre_trace = torch.bmm(rows[t], plastic).squeeze(1)
                    d_alpha += (g_a * pre_trace).sum(0) if alpha.dim() == 1 else (g_a * pre_trace).sum()
                g_h = g_pre.add_(g_outs[t - 1]) if t > 0 else g_pre
        if full_alpha and not per_example_alpha_grad:
            d_alpha = d_alpha_by_example.sum(0)
        return _gradients(ctx, g_a_all, d_rates, g_z_all if modulated else None, g_h, G, d_alpha, d_eta)


def _gradients(ctx, g_a_all, d_rates, g_z_all, g_h, G, d_alpha, d_eta):
    """What both backward passes end with: the gradients that sum per-step terms over the whole sequence, as one
    matrix product each, in the order :meth:`_FusedPlasticRNN.forward` takes its inputs."""
    u, x, h, _, _, mods, _, *_ = ctx.saved_tensors
    ctx.workspace.release()
    spec, T = ctx.run.spec, ctx.run.steps
    B = h.shape[1]
    flat = lambda a: a.reshape(T * B, -1)  # noqa: E731
    modulated = spec.modulation is not None
    if not modulated:
        d_eta = d_rates.sum()
    d_fan_w = (flat(d_rates).t() @ flat(mods)) if spec.fanout else None
    d_fan_b = d_rates.sum((0, 1)) if spec.fanout else None
    d_w = flat(h[:-1]).t() @ flat(g_a_all)
    d_mod_w = (flat(g_z_all).t() @ flat(h[1:])) if modulated else None
    d_mod_b = g_z_all.sum((0, 1)) if modulated else None
    if ctx.closed:
        d_in_w, d_in_b = flat(g_a_all).t() @ flat(x), g_a_all.sum((0, 1))
        d_u = None
    else:
        d_in_w = d_in_b = None
        d_u = g_a_all
    G = G if ctx.needs_input_grad[4] else None  # the initial traces may be None (zeros)
    return (d_u, d_in_w, d_in_b, g_h, G, d_w, d_alpha, d_eta, d_mod_w, d_mod_b, d_fan_w, d_fan_b, None)


def _alpha_gradient(full: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The gradient of alpha in its own mode from that of the (N, N) matrix it stands for (see :func:`_full_alpha`)."""
    return full if alpha.dim() == 2 else full.sum(0) if alpha.dim() == 1 else full.sum()


def chunk_length(backend: str, checkpoint_every: Optional[int], steps: int) -> int:
    """The chunk length k of a run: ``checkpoint_every`` if given (1 keeps every trace), else the backend's choice.
    ``numba``: ceil(sqrt(T)), since its backward pass recomputes a chunk's traces one example at a time, in cache,
    which is faster than reading back traces that the forward pass wrote to memory, and keeps about 2 sqrt(T)
    traces instead of T. ``torch`` and ``triton``: T, every trace kept (recomputation would cost a forward pass of
    the trace updates more)."""
    if checkpoint_every is None:
        return math.ceil(math.sqrt(steps)) if backend == "numba" else steps
    return min(checkpoint_every, steps)


def _numpy(t: Optional[torch.Tensor], ndim: int, like: torch.Tensor):
    """A parameter as the kernels take it (a contiguous array), or the empty stand-in for an absent one."""
    if t is None:
        return cpu_kernels.empty_rows(like.numpy().dtype) if ndim == 2 else like.new_empty(0).numpy()
    return t.detach().contiguous().numpy()


def kernel_scalars(spec: _Plasticity, eta: Optional[torch.Tensor], dtype) -> tuple:
    """eta (0 where it has none) and the clip bound as numbers of the arrays' type: a Python float would make the
    kernels compute in double precision."""
    return dtype.type(0.0 if eta is None else float(eta)), dtype.type(_kernel_clip(spec))


def _kernel_forward(ctx, run: _Run, ws: Workspace, u, in_w, in_b, h0, traces0, w, alpha, eta, mod_w, mod_b, fan_w,
                    fan_b):
    """:meth:`_FusedPlasticRNN.forward` with :mod:`.cpu_kernels`: per step, the input (a PyTorch product) and
    the tanh (PyTorch's), then one kernel call for the plasticity and the next step's recurrent drive. The traces are
    kept as (B, n_traces, N, N), so that each example's are together: only the first of each chunk of k steps, and
    the final one, in ``starts``; the others are updated in place in ``current``."""
    spec, T = run.spec, run.steps
    B, N = h0.shape
    retro = spec.modulation == "retroactive"
    k = chunk_length("numba", run.checkpoint_every, T)
    n_chunks = math.ceil(T / k)
    closed = u is None
    h = ws.get("h", (T + 1, B, N), h0)
    h[0] = h0
    hs, h_np = h.unbind(0), h.numpy()
    x = None
    if closed:
        x = ws.get("x", (T, *run.x0.shape), h0)
        x[0] = run.x0
        xs, in_wt = x.unbind(0), in_w.detach().t()
    else:
        us = u.unbind(0)
    starts = ws.get("chunk_starts", (n_chunks + 1, B, spec.n_traces, N, N), h0)
    _set_initial_traces(starts[0].transpose(0, 1), traces0)
    starts_np = starts.numpy()
    current = ws.get("current", (B, spec.n_traces, N, N), h0).numpy() if k > 1 else None
    # Per step: the modulator, the rate per post-synaptic unit and (but for retroactive modulation) the update's q
    # and decay, as the backward pass needs them.
    mods, rates = ws.get("mods", (T, B, 1), h0), ws.get("rates", (T, B, N), h0)
    q = None if retro else ws.get("q", (T, B, N), h0)
    decay = None if retro else ws.get("decay", (T, B, N), h0)
    mods_np, rates_np = mods.numpy(), rates.numpy()
    weights = (_numpy(in_b, 1, h0), _numpy(w, 2, h0), _full_alpha(alpha, N).numpy())
    modulator = (_numpy(mod_w, 2, h0), _numpy(mod_b, 1, h0), _numpy(fan_w, 2, h0), _numpy(fan_b, 1, h0))
    eta_f, clip = kernel_scalars(spec, eta, h_np.dtype)
    drive = ws.get("drive", (B, N), h0)  # the recurrent and plastic part of the next step's drive
    drive_np = drive.numpy()
    groups = cpu_kernels.threads(B if retro else (B + 3) // 4, per_step=True)  # plastic_step: four by four
    cpu_kernels.first_drive(drive_np, starts_np[0], h_np[0], *weights)
    if not retro:
        kind, q_np, decay_np = cpu_kernels.KINDS[spec.kind], q.numpy(), decay.numpy()
    for t in range(T):
        post = hs[t + 1]
        if closed:
            torch.addmm(drive, xs[t], in_wt, out=post)
        else:
            torch.add(us[t], drive, out=post)
        # PyTorch's tanh (0.25 ulp on average, 0.57 at most), not NumPy's (0.37, 1.36), though NumPy's is faster: the
        # backward pass's slope 1 - post^2 of a saturated unit magnifies the activity's rounding, and with NumPy's
        # the float32 gradients were 3-4 times further from the float64 reference than plain autograd's.
        torch.tanh(post, out=post)
        before = starts_np[t // k] if t % k == 0 else current
        after = starts_np[n_chunks] if t + 1 == T else starts_np[(t + 1) // k] if (t + 1) % k == 0 else current
        if retro:
            cpu_kernels.retro_step(before, after, h_np[t], h_np[t + 1], *weights, eta_f, *modulator, clip,
                                   mods_np[t], rates_np[t], drive_np, t + 1 == T, groups)
        else:
            cpu_kernels.plastic_step(before, after, h_np[t], h_np[t + 1], *weights, eta_f, *modulator, kind, clip,
                                     mods_np[t], rates_np[t], q_np[t], decay_np[t], drive_np, t + 1 == T, groups)
        if closed:
            x_next = run.feedback(t, post)
            if t + 1 < T:
                xs[t + 1].copy_(x_next)
    ctx.run, ctx.k, ctx.closed, ctx.kernels = run, k, closed, True
    ctx.save_for_backward(u, x, h, starts, None, mods, rates, w, alpha, eta, mod_w, mod_b, fan_w, fan_b, q, decay)
    return h[1:].clone(), starts[n_chunks].transpose(0, 1).clone(memory_format=torch.contiguous_format)


def _kernel_backward(ctx, g_out, g_traces_final):
    """:meth:`_FusedPlasticRNN.backward` with :mod:`.cpu_kernels`: the whole adjoint recursion in one kernel call,
    example by example (:func:`~plasticnet.fast.cpu_kernels.plastic_backward`), on as many threads as PyTorch
    uses; the gradients that sum over steps follow as matrix products."""
    _, _, h, starts, _, mods, rates, w, alpha, eta, mod_w, _, fan_w, _, q, decay = ctx.saved_tensors
    spec, k, T = ctx.run.spec, ctx.k, ctx.run.steps
    B, N = h.shape[1:]
    retro = spec.modulation == "retroactive"
    g_out = g_out.contiguous() if g_out is not None else h.new_zeros(T, B, N)
    # What the caller does not get back lives in the workspace (fresh memory costs a page fault per 4 KB written).
    ws, traces_grad = ctx.workspace, ctx.needs_input_grad[4]
    G_shape = (B, spec.n_traces, N, N)
    G = h.new_empty(G_shape) if traces_grad else ws.get("trace_adjoint", G_shape, h)
    if g_traces_final is None:
        G.zero_()
    else:  # the kernel turns it into the initial traces' adjoint in place
        G.copy_(g_traces_final.transpose(0, 1))
    g_a_all = ws.get("g_a", (T, B, N), h) if ctx.closed else h.new_empty(T, B, N)  # d_u otherwise
    d_rates, g_z_all = ws.get("d_rates", (T, B, N), h), ws.get("g_z", (T, B, 1), h)
    g_h0, d_alpha_ex = h.new_empty(B, N), ws.get("d_alpha", (B, N, N), h).zero_()
    groups = cpu_kernels.threads(B)
    work = ws.get("work", (groups, max(k - 1, 1), spec.n_traces, N, N), h).numpy()
    vectors = ws.get("vectors", (groups, 5, N), h).numpy()  # each group's adjoints of the activity and the rule
    weights = (_numpy(mod_w, 2, h), _numpy(fan_w, 2, h), _numpy(w, 2, h), _full_alpha(alpha, N).numpy())
    outputs = (G.numpy(), g_a_all.numpy(), d_rates.numpy(), g_z_all.numpy(), g_h0.numpy(), d_alpha_ex.numpy())
    (eta_f, clip), d_eta = kernel_scalars(spec, eta, outputs[0].dtype), None
    if retro:
        d_eta_ex = h.new_zeros(B)
        cpu_kernels.retro_backward(starts.numpy(), k, h.numpy(), rates.numpy(), mods.numpy(), *weights, eta_f,
                                   g_out.numpy(), clip, *outputs, d_eta_ex.numpy(), work, vectors, groups)
        d_eta = d_eta_ex.sum().reshape(eta.shape)
    else:
        cpu_kernels.plastic_backward(starts.numpy(), k, h.numpy(), rates.numpy(), q.numpy(), decay.numpy(),
                                     mods.numpy(), *weights, g_out.numpy(), cpu_kernels.KINDS[spec.kind], clip,
                                     *outputs, work, vectors, groups)
    d_alpha_full = d_alpha_ex.sum(0)
    d_alpha = _alpha_gradient(d_alpha_full, alpha)
    return _gradients(ctx, g_a_all, d_rates, g_z_all if spec.modulation else None, g_h0, G.transpose(0, 1), d_alpha,
                      d_eta)


def _gpu_backward(ctx, g_out, g_traces_final):
    """:meth:`_FusedPlasticRNN.backward` with one :mod:`plasticnet.fast.gpu_kernels` call per step (and one per
    recomputed trace): the same adjoint recursion."""
    _, _, h, chunk_starts, all_traces, mods, rates, w, alpha, eta, mod_w, mod_b, fan_w, fan_b = ctx.saved_tensors
    run = ctx.run
    spec, k, T = run.spec, ctx.k, run.steps
    B, N = h.shape[1:]
    modulated, clip = spec.modulation is not None, _kernel_clip(spec)
    hs = h.unbind(0)
    g_outs = (g_out.contiguous() if g_out is not None else h.new_zeros(T, B, N)).unbind(0)
    G = g_traces_final.contiguous().clone() if g_traces_final is not None else h.new_zeros(1, B, N, N)
    g_a_all, d_rates = h.new_empty(T, B, N), h.new_empty(T, B, N)
    g_z_all = h.new_empty(T, B, 1) if modulated else None
    g_h, g_h_before, g_pre_rows = g_outs[T - 1].clone(), h.new_empty(B, N), h.new_empty(B, N)
    alpha_full, d_alpha_ex = _full_alpha(alpha, N), h.new_zeros(B, N, N)
    step_mods = mods.unbind(0) if modulated else [None] * T
    step_rates = rates.unbind(0) if spec.fanout else [None] * T
    work = all_traces if ctx.keep_all else ctx.workspace.get(
        "work", _work_shape(False, k, T, (spec.n_traces, B, N, N)), h)
    for c in reversed(range(math.ceil(T / k))):
        start, stop = c * k, min(T, (c + 1) * k)
        traces = [slot[0] for slot in _chunk_slots(work, chunk_starts, c, start, stop, ctx.keep_all)]
        if not ctx.keep_all:  # recomputed, but for the chunk's last trace, kept in chunk_starts
            for t in range(start, stop - 1):
                gpu_kernels.forward_step(None, None, None, hs[t], traces[t - start], traces[t - start + 1], hs[t + 1],
                                         w, alpha_full, mod_w, mod_b, fan_w, fan_b, eta, step_mods[t], step_rates[t],
                                         spec.kind, clip, compute=False)
        for t in reversed(range(start, stop)):
            gpu_kernels.backward_step(
                G[0], traces[t - start], traces[t - start + 1], hs[t], hs[t + 1], g_h, g_h_before,
                g_outs[t - 1] if t > 0 else None, g_pre_rows, w, alpha_full, d_alpha_ex, mod_w, fan_w, eta,
                step_mods[t], step_rates[t], g_a_all[t], d_rates[t], g_z_all[t] if modulated else None, spec.kind,
                clip)
            g_h, g_h_before = g_h_before, g_h
    d_alpha_full = d_alpha_ex.sum(0)
    d_alpha = _alpha_gradient(d_alpha_full, alpha)
    return _gradients(ctx, g_a_all, d_rates, g_z_all, g_h, G, d_alpha, None)


def _cell_tensors(cell):
    """The parameters of a cell in the order :class:`_FusedPlasticRNN` takes them (None where absent)."""
    return (cell.w, *plasticity_tensors(cell))


def plasticity_tensors(cell) -> tuple:
    """A plastic cell's (an RNN's or an LSTM's) alpha, eta (None under simple modulation; the eligibility rate under
    retroactive modulation, as the cell computes it), the modulator's weight and bias and the fan-out's (None where
    absent)."""
    modulated = cell.modulation is not None
    fan = cell.modfanout if modulated and cell.fanout else None
    eta = getattr(cell, "eta", None)
    if cell.modulation == "retroactive":
        eta = eligibility_rate(eta)
    return (cell.alpha, eta, cell.h2mod.weight if modulated else None, cell.h2mod.bias if modulated else None,
            fan.weight if fan is not None else None, fan.bias if fan is not None else None)


def plasticity(cell) -> _Plasticity:
    """What the fused loops need to know about a plastic cell (an RNN's or an LSTM's) beyond its parameters."""
    return _Plasticity(cell.rule.name, getattr(cell.rule, "clip", 0.0), cell.modulation, cell.fanout)


def _initial_traces(cell, state) -> torch.Tensor:
    if cell.modulation == "retroactive":
        return torch.stack([state.hebb, state.eligibility])
    return state.hebb.unsqueeze(0)


def _fused_backend(setting: str, cell, like: torch.Tensor) -> str:
    return resolve_fused(setting, cell.rule, cell.activation, cell.modulation, cell.hidden_size, like.device,
                         like.dtype)


def fused_cell_run(cell, u: torch.Tensor, state, checkpoint_every: Optional[int] = None,
                   workspace: Optional[Workspace] = None, backend: str = "auto"):
    """Run ``cell`` (see :func:`fusable_cell`) over the drive ``u`` (T, B, N) (its input part, ``i2h(x)`` or x)
    from ``state`` on ``backend`` (:mod:`.backends`; ``auto`` means ``fused`` here). Returns all activities
    (T, B, N) and the final traces ``(hebb, eligibility or None)``."""
    run = _Run(plasticity(cell), u.shape[0], checkpoint_every, _fused_backend(backend, cell, u),
               workspace or Workspace())
    out, traces = _apply(run, u, None, None, state.h, _initial_traces(cell, state), *_cell_tensors(cell))
    return out, (traces[0], traces[1] if cell.modulation == "retroactive" else None)


def fused_closed_loop(cell, x0: torch.Tensor, feedback: Callable[[int, torch.Tensor], torch.Tensor], steps: int,
                      checkpoint_every: Optional[int] = None, workspace: Optional[Workspace] = None,
                      backend: str = "auto") -> torch.Tensor:
    """Run ``cell`` (with its input layer ``i2h``) for ``steps`` steps from a zero state, where step t's input is
    ``x0`` for t = 0 and ``feedback(t - 1, h_{t-1})`` afterwards; ``feedback(t, h_t)`` is called after every step,
    the last one included, without gradient, and no gradient flows through it. Returns the activities
    (steps, B, N), differentiable with respect to every parameter of the cell; ``backend`` as in
    :func:`fused_cell_run`."""
    h0 = cell.w.new_zeros(x0.shape[0], cell.hidden_size)  # traces0=None: zero traces, written into the buffers
    run = _Run(plasticity(cell), steps, checkpoint_every, _fused_backend(backend, cell, h0),
               workspace or Workspace(), x0, feedback)
    out, _ = _apply(run, None, cell.i2h.weight, cell.i2h.bias, h0, None, *_cell_tensors(cell))
    return out


def fused_plastic_rnn(u, h0, trace0, w, alpha, eta, rule: Rule, checkpoint_every: Optional[int] = None,
                      workspace: Optional[Workspace] = None, backend: str = "auto"):
    """Run T tanh plastic steps with a learned scalar eta on the drive ``u`` (T, B, N) from state (h0, trace0).

    Returns all activities (T, B, N) and the final trace. ``checkpoint_every`` trades memory for recomputation;
    a ``workspace`` kept from call to call saves allocating its buffers each time; ``backend`` as in
    :func:`fused_cell_run`.
    """
    spec = _Plasticity(rule.name, getattr(rule, "clip", 0.0), None, False)
    chosen = resolve_fused(backend, rule, "tanh", None, w.shape[0], u.device, u.dtype)
    run = _Run(spec, u.shape[0], checkpoint_every, chosen, workspace or Workspace())
    out, traces = _apply(run, u, None, None, h0, trace0.unsqueeze(0), w, alpha, eta, None, None, None, None)
    return out, traces[0]
