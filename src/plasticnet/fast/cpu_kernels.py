"""CPU kernels for the fused recurrence's trace work: one pass over the (B, N, N) traces per step, forward and
backward, where PyTorch's element-wise operations take four to eight (each reads and writes whole traces).

Compiled by Numba on first use (cached on disk after that) and run on one thread. They cover the rules of the form
``trace = clip(decay * trace + outer(pre, q))`` (hebb, oja, clip), with or without simple neuromodulation, and any
alpha given as a full (N, N) matrix; :mod:`plasticnet.fast.recurrence` turns every other alpha mode into one and
keeps its PyTorch operations for retroactive modulation, GPUs, and when Numba is missing or switched off
(:func:`use_cpu_kernels`). Indices: ``trace[b, i, j]``, i pre-synaptic, j post-synaptic, as everywhere.

Empty arrays stand for absent arguments (no decay, no next step): Numba compiles one version per argument type,
so optional arrays would multiply the compiled versions.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

try:
    import numba
except ImportError:  # the PyTorch operations do the same work, slower
    numba = None

# Reassociation and fused multiply-adds let the reductions vectorise; infinities and NaNs keep their meaning
# (an unclipped rule passes clip = inf).
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_enabled = numba is not None and os.environ.get("PLASTICNET_CPU_KERNELS", "1") != "0"


def available() -> bool:
    """Whether the fused recurrence uses these kernels on CPU tensors (Numba installed and not switched off by
    ``PLASTICNET_CPU_KERNELS=0`` or :func:`use_cpu_kernels`)."""
    return _enabled


@contextlib.contextmanager
def use_cpu_kernels(enabled: bool):
    """Switch the kernels on or off inside a ``with`` block (to compare them with the PyTorch operations)."""
    global _enabled
    previous = _enabled
    _enabled = enabled and numba is not None
    try:
        yield
    finally:
        _enabled = previous


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
    ``g_q = G @ prev_q`` and, if ``prev_before`` is not empty, ``d_decay = sum_i G * prev_before`` (each (B, N)).
    The loop over j is written twice so that each version vectorises without a branch inside."""
    B, N, M = G.shape
    zero = np.zeros(1, dtype=G.dtype)[0]  # accumulate in the arrays' precision
    has_prev_decay = prev_before.shape[0] > 0
    d_q[:] = 0
    d_decay[:] = 0
    for b in range(B):
        gab, db, qb, dq, dd = g_a[b], decay[b], prev_q[b], d_q[b], d_decay[b]
        for i in range(N):
            p, pp = pre[b, i], prev_pre[b, i]
            g_row, b_row, a_row, da_row = G[b, i], before[b, i], alpha[i], d_alpha[i]
            acc = zero
            acc_q = zero
            if has_prev_decay:
                pb = prev_before[b, i]
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
                    dd[j] += g * pb[j]
            else:
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
            g_pre[b, i] += acc
            g_q[b, i] = acc_q


def empty_like_rows(array: np.ndarray) -> np.ndarray:
    """The stand-in for an absent (B, N) argument, of the right type for Numba."""
    return np.empty((0, 0), dtype=array.dtype)


def empty_like_traces(array: np.ndarray) -> np.ndarray:
    """The stand-in for an absent (B, N, N) argument."""
    return np.empty((0, 0, 0), dtype=array.dtype)
