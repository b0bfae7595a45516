"""CPU kernels for the fused recurrence's trace work: one pass over the (B, N, N) traces per step, forward and
backward, where PyTorch's element-wise operations take four to eight (each reads and writes whole traces).

Compiled by Numba on first use (cached on disk after that) and run on one thread. They cover every cell the fused
recurrence runs: the rules of the form ``trace = clip(decay * trace + outer(pre, q))`` (hebb, oja, clip) with or
without simple neuromodulation (:func:`trace_step`), and retroactive modulation (:func:`retro_step`), with alpha
given as a full (N, N) matrix; :mod:`plasticnet.fast.recurrence` turns every other alpha mode into one and keeps
its PyTorch operations for GPUs, and for when Numba is missing or switched off (:func:`use_cpu_kernels`).
Indices: ``trace[b, i, j]``, i pre-synaptic, j post-synaptic, as everywhere.

Empty arrays stand for absent arguments (no decay, no next step): Numba compiles one version per argument type,
so optional arrays would multiply the compiled versions.
"""

from __future__ import annotations

import numpy as np

from .switch import KernelSwitch

try:
    import numba
except ImportError:  # the PyTorch operations do the same work, slower
    numba = None

# Reassociation and fused multiply-adds let the reductions vectorise; infinities and NaNs keep their meaning
# (an unclipped rule passes clip = inf).
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_switch = KernelSwitch(numba is not None, "PLASTICNET_CPU_KERNELS")


def available() -> bool:
    """Whether the fused recurrence uses these kernels on CPU tensors (Numba installed and not switched off by
    ``PLASTICNET_CPU_KERNELS=0`` or :func:`use_cpu_kernels`)."""
    return _switch.enabled


def use_cpu_kernels(enabled: bool):
    """Switch the kernels on or off inside a ``with`` block (to compare them with the PyTorch operations)."""
    return _switch.use(enabled)


def _jit(function):
    if numba is None:
        return function
    return numba.njit(cache=True, fastmath=_FASTMATH, nogil=True, boundscheck=False)(function)


@_jit
def trace_step(before, after, pre, q, decay, clip, alpha, nxt, drive):
    """``after = clip(decay * before + outer(pre, q), -clip, clip)``, then, if ``nxt`` is not empty,
    ``drive[b, j] += sum_i nxt[b, i] alpha[i, j] after[b, i, j]``: the next step's plastic drive, read while the
    new trace is still in cache. ``decay`` (B, N) over j, or empty for none; ``drive`` is added to."""
    B, N, M = before.shape
    has_decay = decay.shape[0] > 0
    has_drive = nxt.shape[0] > 0
    for b in range(B):
        qb = q[b]
        for i in range(N):
            p = pre[b, i]
            src, dst = before[b, i], after[b, i]
            if has_decay:
                db = decay[b]
                for j in range(M):
                    dst[j] = min(max(db[j] * src[j] + p * qb[j], -clip), clip)
            else:
                for j in range(M):
                    dst[j] = min(max(src[j] + p * qb[j], -clip), clip)
            if has_drive:
                n, ai, dr = nxt[b, i], alpha[i], drive[b]
                for j in range(M):
                    dr[j] += n * ai[j] * dst[j]


@_jit
def trace_step_backward(G, before, alpha, pre, g_a, decay, g_pre, d_alpha, mask_clip,
                        prev_pre, prev_q, prev_before, d_q, g_q, d_decay):
    """One step of the adjoint recursion through ``after = clip(decay * before + outer(pre, q))`` and the plastic
    drive ``pre @ (alpha * before)``, in one pass.

    On entry ``G`` is the adjoint of ``after`` with the clip's saturated entries already zeroed; on return it is the
    adjoint of ``before``: ``decay * G + alpha * outer(pre, g_a)`` (``decay`` (B, N) over j: ones for the clip
    rule), zeroed where ``|before| >= mask_clip`` (``before`` is the previous step's ``after``; pass the largest
    float for no mask). Adds ``sum_j alpha before g_a`` to ``g_pre`` (B, N) and ``sum_b before * outer(pre, g_a)``
    to ``d_alpha`` (N, N). Writes what the previous step needs from the new adjoint: ``d_q = prev_pre @ G``,
    ``g_q = G @ prev_q`` and, if ``prev_before`` is not empty, ``d_decay = sum_i G * prev_before`` (each (B, N))."""
    B, N, M = G.shape
    zero = np.zeros(1, dtype=G.dtype)[0]  # accumulate in the arrays' precision
    has_prev_decay = prev_before.shape[0] > 0  # loop-invariant: the compiler takes the test out of the loop
    d_q[:] = 0
    d_decay[:] = 0
    for b in range(B):
        gab, db, qb, dq, dd = g_a[b], decay[b], prev_q[b], d_q[b], d_decay[b]
        for i in range(N):
            p, pp = pre[b, i], prev_pre[b, i]
            g_row, b_row, a_row, da_row = G[b, i], before[b, i], alpha[i], d_alpha[i]
            pb = prev_before[b, i] if has_prev_decay else b_row
            acc = zero
            acc_q = zero
            for j in range(M):
                bv = b_row[j]
                outer = p * gab[j]
                acc += a_row[j] * bv * gab[j]
                da_row[j] += bv * outer
                g = db[j] * g_row[j] + a_row[j] * outer
                g = g if abs(bv) < mask_clip else zero
                g_row[j] = g
                dq[j] += pp * g
                acc_q += qb[j] * g
                if has_prev_decay:
                    dd[j] += g * pb[j]
            g_pre[b, i] += acc
            g_q[b, i] = acc_q


@_jit
def retro_step(plastic, elig, plastic_after, elig_after, pre, post, rate, eta, clip, alpha, nxt, drive):
    """Retroactive modulation: ``plastic_after = clip(plastic + rate * elig)`` (``rate`` (B, N) over j),
    ``elig_after = (1 - eta) elig + eta outer(pre, post)``, then, if ``nxt`` is not empty, the next step's plastic
    drive ``drive[b, j] += sum_i nxt[b, i] alpha[i, j] plastic_after[b, i, j]``."""
    B, N, M = plastic.shape
    has_drive = nxt.shape[0] > 0
    keep = 1 - eta
    for b in range(B):
        rb, ob = rate[b], post[b]
        for i in range(N):
            e_pre = eta * pre[b, i]
            p_row, e_row, pa_row, ea_row = plastic[b, i], elig[b, i], plastic_after[b, i], elig_after[b, i]
            for j in range(M):
                pa_row[j] = min(max(p_row[j] + rb[j] * e_row[j], -clip), clip)
                ea_row[j] = keep * e_row[j] + e_pre * ob[j]
            if has_drive:
                n, ai, dr = nxt[b, i], alpha[i], drive[b]
                for j in range(M):
                    dr[j] += n * ai[j] * pa_row[j]


@_jit
def retro_step_backward(G_plastic, G_elig, plastic, alpha, pre, g_a, rate, eta, g_pre, d_alpha, mask_clip,
                        prev_pre, prev_post, prev_elig, d_q, g_e_post, s_ge, d_rate):
    """One step of the adjoint recursion through :func:`retro_step` and the plastic drive, in one pass.

    On entry ``G_plastic`` (saturated entries zeroed) and ``G_elig`` are the adjoints of the traces after the step;
    on return, of the traces before it: ``G_elig = (1 - eta) G_elig + rate * G_plastic`` and
    ``G_plastic += alpha * outer(pre, g_a)``, zeroed where ``|plastic| >= mask_clip``. Adds
    ``sum_j alpha plastic g_a`` to ``g_pre`` and ``sum_b plastic * outer(pre, g_a)`` to ``d_alpha``. Writes what
    the previous step needs: ``d_q = prev_pre @ G_elig`` and ``g_e_post = G_elig @ prev_post`` (B, N) and, if
    ``prev_elig`` (its eligibility trace before it) is not empty, ``s_ge = sum G_elig * prev_elig`` (B,) and
    ``d_rate = sum_i G_plastic * prev_elig`` (B, N)."""
    B, N, M = G_plastic.shape
    zero = np.zeros(1, dtype=G_plastic.dtype)[0]
    has_prev_elig = prev_elig.shape[0] > 0  # loop-invariant: the compiler takes the test out of the loop
    keep = 1 - eta
    d_q[:] = 0
    d_rate[:] = 0
    s_ge[:] = 0
    for b in range(B):
        gab, rb, ppb, dq, dr = g_a[b], rate[b], prev_post[b], d_q[b], d_rate[b]
        s = zero
        for i in range(N):
            p, pp = pre[b, i], prev_pre[b, i]
            gp_row, ge_row, p_row = G_plastic[b, i], G_elig[b, i], plastic[b, i]
            a_row, da_row = alpha[i], d_alpha[i]
            pe = prev_elig[b, i] if has_prev_elig else p_row
            acc = zero
            acc_e = zero
            for j in range(M):
                pv = p_row[j]
                gp = gp_row[j]
                outer = p * gab[j]
                acc += a_row[j] * pv * gab[j]
                da_row[j] += pv * outer
                ge = keep * ge_row[j] + rb[j] * gp
                gp = gp + a_row[j] * outer
                gp = gp if abs(pv) < mask_clip else zero
                gp_row[j] = gp
                ge_row[j] = ge
                dq[j] += pp * ge
                acc_e += ge * ppb[j]
                if has_prev_elig:
                    s += ge * pe[j]
                    dr[j] += gp * pe[j]
            g_pre[b, i] += acc
            g_e_post[b, i] = acc_e
        s_ge[b] = s


def empty_like_rows(array: np.ndarray) -> np.ndarray:
    """The stand-in for an absent (B, N) argument, of the right type for Numba."""
    return np.empty((0, 0), dtype=array.dtype)


def empty_like_traces(array: np.ndarray) -> np.ndarray:
    """The stand-in for an absent (B, N, N) argument."""
    return np.empty((0, 0, 0), dtype=array.dtype)


def warm_up(dtype=np.float32) -> None:
    """Compile (or load from Numba's cache) every kernel for ``dtype`` now, so that a measurement that follows
    counts neither the compiler's time nor its memory."""
    if not _switch.enabled:
        return
    rows, traces, square = np.zeros((1, 1), dtype), np.zeros((1, 1, 1), dtype), np.zeros((1, 1), dtype)
    no_rows, no_traces, scalars = empty_like_rows(rows), empty_like_traces(traces), np.zeros(1, dtype)
    trace_step(traces, traces.copy(), rows, rows, rows, 1.0, square, rows, rows.copy())
    trace_step(traces, traces.copy(), rows, rows, no_rows, 1.0, square, no_rows, no_rows)
    trace_step_backward(traces.copy(), traces, square, rows, rows, rows, rows.copy(), square.copy(), 1.0, rows, rows,
                        traces, rows.copy(), rows.copy(), rows.copy())
    trace_step_backward(traces.copy(), traces, square, rows, rows, rows, rows.copy(), square.copy(), 1.0, rows, rows,
                        no_traces, rows.copy(), rows.copy(), rows.copy())
    retro_step(traces, traces, traces.copy(), traces.copy(), rows, rows, rows, 0.1, 1.0, square, rows, rows.copy())
    retro_step(traces, traces, traces.copy(), traces.copy(), rows, rows, rows, 0.1, 1.0, square, no_rows, no_rows)
    for prev in (traces, no_traces):
        retro_step_backward(traces.copy(), traces.copy(), traces, square, rows, rows, rows, 0.1, rows.copy(),
                            square.copy(), 1.0, rows, rows, prev, rows.copy(), rows.copy(), scalars.copy(),
                            rows.copy())
