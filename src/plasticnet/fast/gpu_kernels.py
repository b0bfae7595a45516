"""GPU kernels (Triton) for the fused recurrence: one kernel per time step forward, one backward.

At the maze's size (100 units, batch 30) a step of the PyTorch operations is about fifty small kernels, forward
and backward, each too short to fill the GPU: even replayed as a CUDA graph, the iteration costs the sum of their
latencies. Here one program per batch element does the whole step in two passes over its (N, N) trace:

- forward (:func:`forward_step`): the drive ``in_b + x @ in_w.T`` (closed loop) or ``u``, plus
  ``pre @ (w + alpha * trace)``; ``post = tanh(drive)``; the modulator and rate; then the trace update
  ``clip(decay * trace + outer(pre, rate * post))``. With ``compute=False`` it only redoes the trace update from
  stored activities (the backward pass's recomputation of a chunk);
- backward (:func:`backward_step`): the adjoint of one step, from the trace adjoint ``G`` and the activity's
  adjoint ``g_h`` after the step to those before it, writing the per-step terms that the gradients of ``w``, the
  modulator and eta sum afterwards, and ``alpha``'s gradient per example.

They cover the rules ``hebb``, ``oja`` and ``clip``, alpha as a full matrix (the caller expands the others), a
learned eta or simple neuromodulation with or without fan-out, up to :data:`MAX_UNITS` units: one program per
example walks a whole trace, which pays at the maze's 100 units but not for wide layers at small batches, where
the PyTorch operations run. Same maths as
:class:`~plasticnet.fast.recurrence._FusedPlasticRNN`'s PyTorch operations; sums run in another order, so results
agree to rounding. The backend ``triton`` (:mod:`.backends`); ``auto`` picks it on CUDA tensors it covers.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # the PyTorch operations do the same work
    triton = None

MAX_UNITS = 128
KINDS = {"hebb": 0, "oja": 1, "clip": 2}
# Triton's interpreter (TRITON_INTERPRET=1, for testing on a CPU) has no libdevice: tanh is then computed from exp.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available() -> bool:
    """Whether Triton is installed."""
    return triton is not None


def why_not(kind: str, modulation, n_units: int, device: torch.device, dtype: torch.dtype):
    """None if these kernels run a cell with this rule, modulation and size on tensors of ``device`` and ``dtype``
    (CUDA, or CPU under Triton's interpreter), else what they lack, in a few words."""
    if triton is None:
        return "Triton is not installed"
    if device.type != "cuda" and not (device.type == "cpu" and _INTERPRET):
        return f"{device.type} tensors (triton runs CUDA tensors, or CPU ones under TRITON_INTERPRET=1)"
    if kind not in KINDS or modulation not in (None, "simple"):
        return "retroactive modulation (triton runs a learned eta or simple modulation)"
    if n_units > MAX_UNITS:
        return f"{n_units} units (triton runs up to {MAX_UNITS}: a program per example leaves a GPU idle beyond)"
    if dtype not in (torch.float32, torch.float64):
        return f"{dtype} (triton runs float32 and float64)"
    return None


def _blocks(n: int, tile: int) -> tuple[int, int]:
    """Columns (all N, a power of two) and rows of a tile of about ``tile`` elements. Each program walks its
    example's trace tile by tile: the fewer the tiles, the fewer the waits on memory; the forward pass keeps three
    tiles in registers at once, the backward pass five."""
    columns = max(16, triton.next_power_of_2(n))
    return columns, max(1, min(columns, tile // columns))


_FORWARD_TILE, _BACKWARD_TILE, _WARPS = 8192, 4096, 8


if triton is not None:
    @triton.jit
    def _tanh(x, INTERPRET: tl.constexpr):
        if INTERPRET:  # in double, so that 1 - e, which cancels near 0, keeps float32's precision
            e = tl.exp(-2.0 * tl.abs(x.to(tl.float64)))
            t = ((1.0 - e) / (1.0 + e)).to(x.dtype)
            return tl.where(x < 0, -t, t)
        else:
            return libdevice.tanh(x)

    @triton.jit
    def _tile(i0, N, j, jm, BI: tl.constexpr):
        """Rows ``i0 .. i0 + BI`` of an (N, N) matrix: their indices, which of them exist, the tile's mask and its
        offsets from the matrix's start."""
        i = i0 + tl.arange(0, BI)
        im = i < N
        return i, im, im[:, None] & jm[None, :], i[:, None] * N + j[None, :]

    @triton.jit
    def _stored_rate(mods, rates, eta, b, j, jm, N, MODULATED: tl.constexpr, FANOUT: tl.constexpr):
        """Example b's plasticity rate as a forward step stored it: the fan-out's per unit, the modulator, or
        eta."""
        if MODULATED:
            if FANOUT:
                rate = tl.load(rates + b * N + j, mask=jm, other=0.0)
            else:
                rate = tl.load(mods + b)
        else:
            rate = tl.load(eta)
        return rate

    @triton.jit
    def _forward_step_kernel(inp, inp_stride, in_w, in_b, pre, before, after, post_out, w, alpha, mod_w, mod_b,
                             fan_w, fan_b, eta, mod_out, rate_out, N, X, clip,
                             COMPUTE: tl.constexpr, CLOSED: tl.constexpr, KIND: tl.constexpr,
                             MODULATED: tl.constexpr, FANOUT: tl.constexpr, BJ: tl.constexpr, BI: tl.constexpr,
                             BX: tl.constexpr, INTERPRET: tl.constexpr):
        b = tl.program_id(0)
        j = tl.arange(0, BJ)
        jm = j < N
        pre_b = pre + b * N
        trace_b = b * N * N
        if COMPUTE:
            if CLOSED:
                drive = tl.load(in_b + j, mask=jm, other=0.0)
                for k0 in range(0, X, BX):
                    k = k0 + tl.arange(0, BX)
                    km = k < X
                    xk = tl.load(inp + b * inp_stride + k, mask=km, other=0.0)
                    wk = tl.load(in_w + j[None, :] * X + k[:, None], mask=km[:, None] & jm[None, :], other=0.0)
                    drive += tl.sum(xk[:, None] * wk, axis=0)
            else:
                drive = tl.load(inp + b * inp_stride + j, mask=jm, other=0.0)
            for i0 in range(0, N, BI):
                i, im, m2, off = _tile(i0, N, j, jm, BI)
                p = tl.load(pre_b + i, mask=im, other=0.0)
                tr = tl.load(before + trace_b + off, mask=m2, other=0.0)
                ww = tl.load(w + off, mask=m2, other=0.0)
                al = tl.load(alpha + off, mask=m2, other=0.0)
                drive += tl.sum(p[:, None] * (ww + al * tr), axis=0)
            post = _tanh(drive, INTERPRET)
            tl.store(post_out + b * N + j, post, mask=jm)
            if MODULATED:
                # The modulator's sum in double, then one rounding (as on the other backends): it cancels, and the
                # slope 1 - m^2 magnifies m's error into the gradients.
                mw = tl.load(mod_w + j, mask=jm, other=0.0).to(tl.float64)
                z = tl.sum(tl.where(jm, post.to(tl.float64) * mw, 0.0), axis=0) + tl.load(mod_b).to(tl.float64)
                m = _tanh(z.to(post.dtype), INTERPRET)
                tl.store(mod_out + b, m)
                if FANOUT:
                    rate = tl.load(fan_b + j, mask=jm, other=0.0) + m * tl.load(fan_w + j, mask=jm, other=0.0)
                    tl.store(rate_out + b * N + j, rate, mask=jm)
                else:
                    rate = m
            else:
                rate = tl.load(eta)
        else:
            post = tl.load(post_out + b * N + j, mask=jm, other=0.0)
            rate = _stored_rate(mod_out, rate_out, eta, b, j, jm, N, MODULATED, FANOUT)
        q = rate * post
        if KIND == 0:
            decay = 1.0 - rate
        elif KIND == 1:
            decay = 1.0 - q * post
        else:
            decay = 1.0
        for i0 in range(0, N, BI):
            i, im, m2, off = _tile(i0, N, j, jm, BI)
            p = tl.load(pre_b + i, mask=im, other=0.0)
            tr = tl.load(before + trace_b + off, mask=m2, other=0.0)
            new = decay * tr + p[:, None] * q[None, :]
            if KIND == 2:
                new = tl.minimum(tl.maximum(new, -clip), clip)
            tl.store(after + trace_b + off, new, mask=m2)

    @triton.jit
    def _backward_step_kernel(G, before, after, pre, post_in, g_h_in, g_h_out, g_out_prev, g_pre_rows, w, alpha,
                              d_alpha_ex, mod_w, fan_w, eta, mods, rates, g_a_out, d_rate_out, g_z_out, N, clip,
                              HAS_PREV: tl.constexpr, KIND: tl.constexpr, MODULATED: tl.constexpr,
                              FANOUT: tl.constexpr, BJ: tl.constexpr, BI: tl.constexpr):
        b = tl.program_id(0)
        j = tl.arange(0, BJ)
        jm = j < N
        pre_b = pre + b * N
        trace_b = b * N * N
        post = tl.load(post_in + b * N + j, mask=jm, other=0.0)
        rate = _stored_rate(mods, rates, eta, b, j, jm, N, MODULATED, FANOUT)
        q = rate * post
        d_q = tl.zeros([BJ], dtype=post.dtype)
        d_decay = tl.zeros([BJ], dtype=post.dtype)
        # Pass 1: the clip's saturated entries zeroed in G (kept for pass 2), and the sums over G that the step's
        # rate and activities need: d_q = pre @ G, G @ q (to the activity before the step), sum_i G * trace.
        for i0 in range(0, N, BI):
            i, im, m2, rel = _tile(i0, N, j, jm, BI)
            off = trace_b + rel
            g = tl.load(G + off, mask=m2, other=0.0)
            if KIND == 2:
                a = tl.load(after + off, mask=m2, other=0.0)
                g = tl.where((a > -clip) & (a < clip), g, 0.0)
                tl.store(G + off, g, mask=m2)
            p = tl.load(pre_b + i, mask=im, other=0.0)
            d_q += tl.sum(p[:, None] * g, axis=0)
            tl.store(g_pre_rows + b * N + i, tl.sum(g * q[None, :], axis=1), mask=im)
            if KIND != 2:
                d_decay += tl.sum(g * tl.load(before + off, mask=m2, other=0.0), axis=0)
        # The step's own adjoints: through the rate (and the modulator) to the activity, then through tanh.
        g_h = tl.load(g_h_in + b * N + j, mask=jm, other=0.0) + rate * d_q
        d_rate = d_q * post
        if KIND == 0:
            d_rate -= d_decay
            decay = 1.0 - rate
        elif KIND == 1:
            g_h += -2.0 * q * d_decay
            d_rate -= post * post * d_decay
            decay = 1.0 - q * post
        else:
            decay = 1.0
        if MODULATED:
            d_r = d_rate.to(tl.float64)  # the modulator's adjoint in double too: the sum cancels
            if FANOUT:
                d_m = tl.sum(tl.where(jm, d_r * tl.load(fan_w + j, mask=jm, other=0.0).to(tl.float64), 0.0), axis=0)
            else:
                d_m = tl.sum(tl.where(jm, d_r, 0.0), axis=0)
            m = tl.load(mods + b)
            g_z = d_m.to(post.dtype) * (1.0 - m * m)
            tl.store(g_z_out + b, g_z)
            g_h += g_z * tl.load(mod_w + j, mask=jm, other=0.0)
        g_a = tl.where(jm, g_h * (1.0 - post * post), 0.0)
        tl.store(g_a_out + b * N + j, g_a, mask=jm)
        tl.store(d_rate_out + b * N + j, d_rate, mask=jm)
        tl.debug_barrier()  # pass 1's stores are read back below, possibly by other threads
        # Pass 2: the adjoint of the activity before the step, of the trace before it, and alpha's gradient.
        for i0 in range(0, N, BI):
            i, im, m2, rel = _tile(i0, N, j, jm, BI)
            off = trace_b + rel
            g = tl.load(G + off, mask=m2, other=0.0)
            tr = tl.load(before + off, mask=m2, other=0.0)
            al = tl.load(alpha + rel, mask=m2, other=0.0)
            ww = tl.load(w + rel, mask=m2, other=0.0)
            p = tl.load(pre_b + i, mask=im, other=0.0)
            g_pre = tl.load(g_pre_rows + b * N + i, mask=im, other=0.0) + tl.sum((ww + al * tr) * g_a[None, :], axis=1)
            if HAS_PREV:
                g_pre += tl.load(g_out_prev + b * N + i, mask=im, other=0.0)
            tl.store(g_h_out + b * N + i, g_pre, mask=im)
            outer = p[:, None] * g_a[None, :]
            tl.store(G + off, decay * g + al * outer, mask=m2)
            da = tl.load(d_alpha_ex + off, mask=m2, other=0.0)
            tl.store(d_alpha_ex + off, da + tr * outer, mask=m2)


def _modulation_args(mod_w, mod_b, fan_w, fan_b, eta, like):
    """Pointers for what a cell lacks: Triton needs a tensor in every pointer slot; the kernel never reads these."""
    return tuple(t if t is not None else like for t in (mod_w, mod_b, fan_w, fan_b, eta))


def forward_step(inp, in_w, in_b, pre, before, after, post, w, alpha, mod_w, mod_b, fan_w, fan_b, eta, mod_out,
                 rate_out, kind: str, clip: float, compute: bool = True) -> None:
    """One step for every example: ``post`` (B, N) and ``after`` (B, N, N) written from ``pre``, ``before`` and the
    input ``inp`` (closed loop: the observation (B, X) with ``in_w`` (N, X), ``in_b``; else the drive (B, N)).
    ``mod_out`` (B, 1) and ``rate_out`` (B, N) receive the modulator and, with fan-out, the rate. ``compute=False``
    reads ``post`` and the rate instead and writes only ``after``. ``alpha`` is the full (N, N) matrix."""
    B, N = pre.shape
    closed = in_w is not None
    X = in_w.shape[1] if closed else N
    bj, bi = _blocks(N, _FORWARD_TILE)
    mod_w, mod_b, fan_w, fan_b, eta = _modulation_args(mod_w, mod_b, fan_w, fan_b, eta, pre)
    _forward_step_kernel[(B,)](
        inp if inp is not None else pre, inp.stride(0) if inp is not None else 0, in_w if closed else pre,
        in_b if closed else pre, pre, before, after, post, w, alpha, mod_w, mod_b, fan_w, fan_b, eta,
        mod_out if mod_out is not None else pre, rate_out if rate_out is not None else pre, N, X, clip,
        COMPUTE=compute, CLOSED=closed, KIND=KINDS[kind], MODULATED=mod_out is not None,
        FANOUT=rate_out is not None, BJ=bj, BI=bi, BX=max(16, triton.next_power_of_2(min(X, 32))),
        INTERPRET=_INTERPRET, num_warps=_WARPS)


def backward_step(G, before, after, pre, post, g_h, g_h_out, g_out_prev, g_pre_rows, w, alpha, d_alpha_ex, mod_w,
                  fan_w, eta, mods, rates, g_a, d_rate, g_z, kind: str, clip: float) -> None:
    """One step of the adjoint recursion for every example, in place: ``G`` (B, N, N) from the trace adjoint after
    the step to the one before it; ``g_h_out`` = the adjoint of ``pre`` (plus ``g_out_prev``, the output gradient
    at that step, if given) from ``g_h``, that of ``post``; ``g_a``, ``d_rate`` (B, N) and ``g_z`` (B, 1) the
    step's terms; ``alpha``'s per-example gradient added to ``d_alpha_ex`` (B, N, N). ``g_pre_rows`` is scratch."""
    B, N = pre.shape
    bj, bi = _blocks(N, _BACKWARD_TILE)
    mod_w, _, fan_w, _, eta = _modulation_args(mod_w, None, fan_w, None, eta, pre)
    _backward_step_kernel[(B,)](
        G, before, after, pre, post, g_h, g_h_out, g_out_prev if g_out_prev is not None else pre, g_pre_rows, w,
        alpha, d_alpha_ex, mod_w, fan_w, eta, mods if mods is not None else pre, rates if rates is not None else pre,
        g_a, d_rate, g_z if g_z is not None else pre, N, clip,
        HAS_PREV=g_out_prev is not None, KIND=KINDS[kind], MODULATED=mods is not None,
        FANOUT=rates is not None, BJ=bj, BI=bi, num_warps=_WARPS)
