"""CPU kernels of the fused recurrence (Numba): a whole time step forward, and the whole backward pass.

Both go example by example, because examples are independent given the weights, and one example's trace
(``N * N`` numbers: 40 KB at 100 units) fits in a core's cache where the batch's traces do not:

- :func:`plastic_step` and :func:`retro_step` run the plasticity of one time step for every example, from the new
  activity (its input and tanh are PyTorch operations, vectorised where Numba's tanh is not): the
  neuromodulator, the trace update and the next step's recurrent and plastic drive, while the example's trace is
  in cache;
- :func:`plastic_backward` and :func:`retro_backward` run the whole adjoint recursion of each example, chunk by
  chunk from the last: the chunk's traces are recomputed from its first one (kept by the forward pass), then the
  steps go back through them while they, the trace adjoint and the weights stay in cache. Examples are shared out
  among threads (as many as ``torch.get_num_threads()``); each keeps its own alpha gradient, so that the result
  does not depend on the number of threads.

Cells covered: tanh units, rules of the form ``trace = clip(decay * trace + outer(pre, q))`` (hebb, oja, clip) with
a learned eta or simple neuromodulation (with or without fan-out), and retroactive modulation with the clip rule;
alpha as a full (N, N) matrix (:mod:`plasticnet.fast.recurrence` turns the other modes into one), or as one row
(1, N) that every pre-synaptic row shares (the LSTM's per-neuron alpha; its gradient then goes to one row of
``d_alpha``); float32 and float64 CPU tensors. They are the backend ``numba`` (:mod:`plasticnet.fast.backends`),
the ``auto`` choice there, and the plastic LSTM's fused path on CPU (:mod:`plasticnet.fast.plastic_lstm`).
Indices: ``trace[b, i, j]``, i pre-synaptic, j post-synaptic, as everywhere.

Empty arrays stand for absent arguments (no input bias, no modulator, no fan-out): Numba compiles one version per
argument type, so optional arguments would multiply the compiled versions. Compiled versions are cached on disk.
Constants are of the arrays' type (``x.dtype.type(0)``): Numba types a float32 times a Python integer as a float64,
which made reductions over float32 arrays double-precision ones, with a conversion per element, unnoticed. The one
reduction kept in double precision says so, and why.

Measured on one core at 100 units, batch 30: a step 34 us forward, 100 us back (recomputation included); the loops
are bound by the second-level cache's bandwidth (``DESIGN.md``).
"""

from __future__ import annotations

import types

import numpy as np
import torch

try:
    import numba
except ImportError:  # the PyTorch operations do the same work, slower
    numba = None

# Reassociation and fused multiply-adds let the reductions vectorise; infinities and NaNs keep their meaning
# (an unclipped rule passes clip = inf).
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# The rule, as the kernels take it.
HEBB, OJA, CLIP = 0, 1, 2
KINDS = {"hebb": HEBB, "oja": OJA, "clip": CLIP}


def available() -> bool:
    """Whether Numba is installed (the backend ``numba``, :mod:`.backends`)."""
    return numba is not None


def _jit(function=None, parallel=False, inline=False):
    """Numba's njit as the kernels use it. Without Numba's reference counting (``_nrt=False``): with it, every
    array passed to a function that is not inlined costs an atomic increment and decrement, dozens a step, which
    two threads contend for. So the kernels allocate
    nothing (their buffers come from the caller) and copy arrays element by element (:func:`_copy`)."""
    if function is None:
        return lambda f: _jit(f, parallel, inline)
    if numba is None:
        return function
    return numba.njit(cache=True, fastmath=_FASTMATH, nogil=True, boundscheck=False, parallel=parallel,
                      inline="always" if inline else "never", _nrt=False)(function)


# Parts inlined where they are used: a call per row costs more than the row's work. Whole passes over an example's
# trace (N * N numbers) are functions of their own instead: inlined into a larger loop, their loops are not all
# vectorised.
_part = _jit(inline=True)


_prange = numba.prange if numba is not None else range


def _renamed(function, suffix: str):
    """A copy of ``function`` under another name: Numba's disk cache tells functions apart by name only, and would
    give a parallel version the serial one's code."""
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__ + suffix,
                              function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__ + suffix
    return copy


class _Kernel:
    """A kernel whose last argument is the number of groups of examples that it shares out among threads, compiled
    twice: serially, for one group, and in parallel, for more (so that one thread never wakes a thread pool)."""

    def __init__(self, function):
        self.__name__, self.__doc__ = function.__name__, function.__doc__
        self.serial, self.parallel = _jit(function), _jit(_renamed(function, "_parallel"), parallel=True)

    def __call__(self, *args):
        return self._run(args[-1] > 1, args)

    def compile(self, *args) -> None:
        """Compile both versions (or load them from Numba's cache) by running them on ``args``."""
        self._run(False, args)
        self._run(True, args)

    def _run(self, parallel: bool, args):
        if not parallel:
            return self.serial(*args)
        threads = torch.get_num_threads()
        try:
            return self.parallel(*args)
        finally:  # Numba's OpenMP layer, on its first use, sets the thread count of the OpenMP that PyTorch shares
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)


def threads(batch_size: int, per_step: bool = False) -> int:
    """How many threads the kernels use: PyTorch's thread count, within Numba's and the batch size. A kernel called
    at every step (``per_step``) stays on one thread unless Numba's threading layer starts threads cheaply."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS, batch_size))
    return n if n == 1 or not per_step or _cheap_launches() else 1


@_Kernel
def _touch(out, groups):
    for g in _prange(groups):
        out[g] = g


_launches: list = []


def _cheap_launches() -> bool:
    """Whether Numba's threading layer is OpenMP or TBB: a launch costs a microsecond or two there, where its own
    work queue costs more a launch (about 150 us) than a step's work."""
    if not _launches:
        _touch.compile(np.zeros(2), 2)  # the layer is chosen at the first launch
        _launches.append(numba.threading_layer() in ("omp", "tbb"))
    return _launches[0]


@_part
def _row(matrix, i):
    """Row i of a matrix (N, N), or the one row that a matrix given as (1, N) gives every row: a per-neuron alpha
    (likewise its gradient), or the LSTM's zero fixed weight in the forward pass (whose product with the fixed
    weights is one matrix product for the batch)."""
    return matrix[min(i, matrix.shape[0] - 1)]


@_part
def _add_drive(drive, pre, w, alpha, trace_row, i):
    """``drive += pre[i] * (w[i] + alpha[i] * trace_row)``: row i's part of ``pre @ (w + alpha * trace)``."""
    p, w_row, a_row = pre[i], _row(w, i), _row(alpha, i)
    for j in range(drive.shape[0]):
        drive[j] += p * (w_row[j] + a_row[j] * trace_row[j])


@_part
def _rate(post, rate, eta, mod_w, mod_b, fan_w, fan_b):
    """The plasticity rate that the activity ``post`` gives, per post-synaptic unit, into ``rate``: eta if ``mod_w``
    is empty, else ``m = tanh(mod_w @ post + mod_b)`` or its fan-out ``fan_w m + fan_b``. Returns m (0 without
    modulation)."""
    N = post.shape[0]
    if mod_w.shape[0] == 0:
        for j in range(N):
            rate[j] = eta
        return rate.dtype.type(0)
    z = np.float64(mod_b[0])  # double, then one rounding: the sum cancels (weights of both signs)
    for j in range(N):
        z += mod_w[0, j] * post[j]
    m = rate.dtype.type(np.tanh(z))
    if fan_w.shape[0] > 0:
        for j in range(N):
            rate[j] = fan_b[j] + fan_w[j, 0] * m
    else:
        for j in range(N):
            rate[j] = m
    return m


@_jit
def _update(after, before, pre, q, decay, kind, clip, nxt, w, alpha, drive, with_drive):
    """``after = clip(decay * before + outer(pre, q), -clip, clip)`` (no decay for the clip rule; ``after`` may be
    ``before``), then, ``with_drive``, the next step's ``drive += nxt @ (w + alpha * after)`` in the same loop, each
    new value while it is in a register. ``nxt`` has N entries even without the drive."""
    N = pre.shape[0]
    in_place = after.ctypes.data == before.ctypes.data
    for i in range(N):
        p, dst, src, n, w_row, a_row = pre[i], after[i], before[i], nxt[i], _row(w, i), _row(alpha, i)
        # One loop per case: the compiler vectorises a loop only where it can tell that the rows do not overlap (in
        # place they do: a loop of its own), and a loop of the drive's own beside the update's stopped it too.
        if with_drive and in_place and kind == CLIP:
            for j in range(N):
                v = min(max(dst[j] + p * q[j], -clip), clip)
                dst[j] = v
                drive[j] += n * (w_row[j] + a_row[j] * v)
        elif with_drive and in_place:
            for j in range(N):
                v = min(max(decay[j] * dst[j] + p * q[j], -clip), clip)
                dst[j] = v
                drive[j] += n * (w_row[j] + a_row[j] * v)
        elif with_drive and kind == CLIP:
            for j in range(N):
                v = min(max(src[j] + p * q[j], -clip), clip)
                dst[j] = v
                drive[j] += n * (w_row[j] + a_row[j] * v)
        elif with_drive:
            for j in range(N):
                v = min(max(decay[j] * src[j] + p * q[j], -clip), clip)
                dst[j] = v
                drive[j] += n * (w_row[j] + a_row[j] * v)
        elif kind == CLIP:  # the backward pass's recomputation, never in place
            for j in range(N):
                dst[j] = min(max(src[j] + p * q[j], -clip), clip)
        else:
            for j in range(N):
                dst[j] = min(max(decay[j] * src[j] + p * q[j], -clip), clip)


@_jit
def _update_four(traces, pre, q, decay, kind, clip, nxt, w, alpha, drive, b):
    """:func:`_update` in place with the next step's drive, for examples b to b + 3 of the batch arrays at once: each
    row of ``w`` and ``alpha`` is loaded once for the four."""
    N = pre.shape[1]
    for i in range(N):
        r0, r1, r2, r3 = traces[b, 0, i], traces[b + 1, 0, i], traces[b + 2, 0, i], traces[b + 3, 0, i]
        p0, p1, p2, p3 = pre[b, i], pre[b + 1, i], pre[b + 2, i], pre[b + 3, i]
        n0, n1, n2, n3 = nxt[b, i], nxt[b + 1, i], nxt[b + 2, i], nxt[b + 3, i]
        q0, q1, q2, q3, w_row, a_row = q[b], q[b + 1], q[b + 2], q[b + 3], _row(w, i), _row(alpha, i)
        d0, d1, d2, d3 = drive[b], drive[b + 1], drive[b + 2], drive[b + 3]
        if kind == CLIP:
            for j in range(N):
                a, wj = a_row[j], w_row[j]
                v0 = min(max(r0[j] + p0 * q0[j], -clip), clip)
                v1 = min(max(r1[j] + p1 * q1[j], -clip), clip)
                v2 = min(max(r2[j] + p2 * q2[j], -clip), clip)
                v3 = min(max(r3[j] + p3 * q3[j], -clip), clip)
                r0[j], r1[j], r2[j], r3[j] = v0, v1, v2, v3
                d0[j] += n0 * (wj + a * v0)
                d1[j] += n1 * (wj + a * v1)
                d2[j] += n2 * (wj + a * v2)
                d3[j] += n3 * (wj + a * v3)
        else:
            e0, e1, e2, e3 = decay[b], decay[b + 1], decay[b + 2], decay[b + 3]
            for j in range(N):
                a, wj = a_row[j], w_row[j]
                v0 = min(max(e0[j] * r0[j] + p0 * q0[j], -clip), clip)
                v1 = min(max(e1[j] * r1[j] + p1 * q1[j], -clip), clip)
                v2 = min(max(e2[j] * r2[j] + p2 * q2[j], -clip), clip)
                v3 = min(max(e3[j] * r3[j] + p3 * q3[j], -clip), clip)
                r0[j], r1[j], r2[j], r3[j] = v0, v1, v2, v3
                d0[j] += n0 * (wj + a * v0)
                d1[j] += n1 * (wj + a * v1)
                d2[j] += n2 * (wj + a * v2)
                d3[j] += n3 * (wj + a * v3)


@_jit
def _retro_update(plastic_after, elig_after, plastic, elig, pre, post, rate, eta, clip, nxt, w, alpha, drive,
                  with_drive):
    """Retroactive modulation: ``plastic_after = clip(plastic + rate * elig)`` (rate over j) and
    ``elig_after = (1 - eta) elig + eta outer(pre, post)`` (the afters may be the befores); then, ``with_drive``,
    the next step's drive as in :func:`_update`."""
    N = pre.shape[0]
    keep = pre.dtype.type(1) - eta  # a typed 1: an integer 1 would make the arithmetic double precision
    in_place = plastic_after.ctypes.data == plastic.ctypes.data
    for i in range(N):
        e_pre, p_row, e_row, pa_row, ea_row = eta * pre[i], plastic[i], elig[i], plastic_after[i], elig_after[i]
        n, w_row, a_row = nxt[i], _row(w, i), _row(alpha, i)
        if with_drive and in_place:  # as in _update
            for j in range(N):
                v = min(max(p_row[j] + rate[j] * e_row[j], -clip), clip)
                e_row[j] = keep * e_row[j] + e_pre * post[j]
                p_row[j] = v
                drive[j] += n * (w_row[j] + a_row[j] * v)
        elif with_drive:
            for j in range(N):
                v = min(max(p_row[j] + rate[j] * e_row[j], -clip), clip)
                ea_row[j] = keep * e_row[j] + e_pre * post[j]
                pa_row[j] = v
                drive[j] += n * (w_row[j] + a_row[j] * v)
        else:
            for j in range(N):
                pa_row[j] = min(max(p_row[j] + rate[j] * e_row[j], -clip), clip)
                ea_row[j] = keep * e_row[j] + e_pre * post[j]


@_part
def _copy(dst, src):
    """``dst[:] = src``, element by element: Numba's slice assignment may allocate, which these kernels cannot."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@_part
def _next_drive(drive, in_b):
    """Start the next step's drive from the input bias (none: zero); the trace update adds the rest."""
    for j in range(drive.shape[0]):
        drive[j] = in_b[j] if in_b.shape[0] > 0 else 0


@_part
def _rule_terms(b, post, mod_in, eta, mod_w, mod_b, fan_w, fan_b, kind, mod, rate, q, decay):
    """Example b's terms of a step's update from its new activity ``post``: the rate that the modulator's input
    ``mod_in`` gives (into ``rate[b]``; the modulator into ``mod[b, 0]`` if modulated), ``q = rate * post`` and the
    rule's decay (hebb: ``1 - rate``, oja: ``1 - q * post``; left alone for clip)."""
    r, qb, db, one = rate[b], q[b], decay[b], post.dtype.type(1)
    m = _rate(mod_in, r, eta, mod_w, mod_b, fan_w, fan_b)
    if mod_w.shape[0] > 0:
        mod[b, 0] = m
    for j in range(post.shape[0]):
        qb[j] = r[j] * post[j]
    if kind == HEBB:
        for j in range(post.shape[0]):
            db[j] = one - r[j]
    elif kind == OJA:
        for j in range(post.shape[0]):
            db[j] = one - qb[j] * post[j]


@_part
def _update_examples(after, before, pre, q, decay, kind, clip, nxt, w, alpha, drive, b0, b1, with_drive):
    """:func:`_update` for examples b0 to b1 - 1 (at most four) of the batch arrays: with :func:`_update_four` where
    it applies (four examples, in place, with the drive: every step but a chunk's ends), else one by one."""
    if with_drive and b1 - b0 == 4 and after.ctypes.data == before.ctypes.data:
        _update_four(after, pre, q, decay, kind, clip, nxt, w, alpha, drive, b0)
    else:
        for b in range(b0, b1):
            _update(after[b, 0], before[b, 0], pre[b], q[b], decay[b], kind, clip, nxt[b], w, alpha, drive[b],
                    with_drive)


@_Kernel
def plastic_step(before, after, pre, post, in_b, w, alpha, eta, mod_w, mod_b, fan_w, fan_b, kind, clip, mod, rate,
                 q, decay, drive, last, groups):
    """The plasticity of one time step for every example (B, N), from the new activity ``post``: the rate, q and
    decay of :func:`_rule_terms` (the modulator reading ``post``), and ``after`` from ``before`` (B, 1, N, N) as in
    :func:`_update` (``after`` may be ``before``). Unless the step is the ``last``, ``drive`` (B, N) becomes the
    next step's ``in_b + post @ (w + alpha * after)`` (its input's other part, ``in_w @ x``, is added by the caller,
    who also takes the tanh: PyTorch's is vectorised). The examples, four by four, are shared out among
    ``groups`` threads."""
    B = pre.shape[0]
    fours = (B + 3) // 4
    for g in _prange(groups):
        for four in range(g * fours // groups, (g + 1) * fours // groups):  # four by four: they share the weights
            b0, b1 = 4 * four, min(4 * four + 4, B)
            for b in range(b0, b1):
                _rule_terms(b, post[b], post[b], eta, mod_w, mod_b, fan_w, fan_b, kind, mod, rate, q, decay)
                if not last:
                    _next_drive(drive[b], in_b)
            _update_examples(after, before, pre, q, decay, kind, clip, post, w, alpha, drive, b0, b1, not last)


@_Kernel
def retro_step(before, after, pre, post, in_b, w, alpha, eta, mod_w, mod_b, fan_w, fan_b, clip, mod, rate, drive,
               last, groups):
    """:func:`plastic_step` with retroactive modulation: ``before`` and ``after`` (B, 2, N, N) hold the plastic and
    the eligibility traces; the drive reads the plastic one; both are updated as in :func:`_retro_update`, with eta
    the eligibility rate and the modulator's rate."""
    B = pre.shape[0]
    for g in _prange(groups):
        for b in range(g * B // groups, (g + 1) * B // groups):
            a, s, n = post[b], before[b], after[b]
            mod[b, 0] = _rate(a, rate[b], rate.dtype.type(0), mod_w, mod_b, fan_w, fan_b)
            if not last:
                _next_drive(drive[b], in_b)
            _retro_update(n[0], n[1], s[0], s[1], pre[b], a, rate[b], eta, clip, a, w, alpha, drive[b], not last)


@_jit
def first_drive(drive, traces, pre, in_b, w, alpha):
    """The first step's ``drive = in_b + pre @ (w + alpha * traces[:, 0])`` (B, N); the steps make the others."""
    for b in range(pre.shape[0]):
        _next_drive(drive[b], in_b)
        for i in range(pre.shape[1]):
            _add_drive(drive[b], pre[b], w, alpha, traces[b, 0, i], i)


@_part
def _through_modulator(t, b, d_r, mod, mod_w, fan_w, g_z, g_in):
    """From the rate's adjoint per unit ``d_r`` through the rate (the modulator m, or its fan-out) and
    ``m = tanh(mod_w @ input + mod_b)``: the modulator's adjoint g_z into ``g_z[t, b, 0]``, and ``g_z mod_w`` added
    to ``g_in``, the adjoint of the modulator's input (modulated cells only)."""
    if mod_w.shape[0] > 0:
        N, one = d_r.shape[0], d_r.dtype.type(1)
        d_m = np.float64(0)  # double: the sum cancels, and the modulator's gradients are sums of it
        if fan_w.shape[0] > 0:
            for j in range(N):
                d_m += d_r[j] * fan_w[j, 0]
        else:
            for j in range(N):
                d_m += d_r[j]
        m = mod[t, b, 0]
        gz = d_r.dtype.type(d_m) * (one - m * m)
        g_z[t, b, 0] = gz
        for j in range(N):
            g_in[j] += gz * mod_w[0, j]


@_part
def _through_rule_terms(d_q, d_decay, rate, q, post, kind, g_post, d_r):
    """Through ``q = rate * post`` and the rule's decay (hebb: ``1 - rate``, oja: ``1 - q * post``), from their
    adjoints ``d_q`` and ``d_decay``: adds the activity's adjoint to ``g_post`` and writes the rate's to ``d_r``."""
    for j in range(post.shape[0]):
        g_post[j] += rate[j] * d_q[j]
        d_r[j] = d_q[j] * post[j]
        if kind == HEBB:
            d_r[j] -= d_decay[j]
        elif kind == OJA:
            g_post[j] -= (q[j] + q[j]) * d_decay[j]
            d_r[j] -= post[j] * post[j] * d_decay[j]


@_part
def _through_activity(t, b, g_h, d_r, post, mod, mod_w, fan_w, g_a_row, g_z):
    """From the adjoint of the new activity ``g_h`` (the rate's own path included, as ``d_r``, the rate's adjoint
    per unit) to the drive's: ``g_a_row = (g_h + g_z mod_w) * (1 - post^2)`` (:func:`_through_modulator`; ``g_h``
    is updated in place)."""
    N, one = post.shape[0], post.dtype.type(1)
    _through_modulator(t, b, d_r, mod, mod_w, fan_w, g_z, g_h)
    for j in range(N):
        g_a_row[j] = g_h[j] * (one - post[j] * post[j])


@_jit
def _through_update(G, trace, pre, q, kind, d_q, d_decay, g_q):
    """The first half of a step's adjoint, through ``after = decay * trace + outer(pre, q)``, from ``G``, the
    adjoint of ``after`` (masked): ``d_q = pre @ G``, ``g_q = G @ q`` and, but for the clip rule,
    ``d_decay = sum_i G * trace``. (Not inlined, as neither is the second half: alone, each loop vectorises.)"""
    N = pre.shape[0]
    for j in range(N):
        d_q[j] = 0
        d_decay[j] = 0
    for i in range(N):
        p, g_row, t_row = pre[i], G[i], trace[i]
        acc = np.float64(0)  # double: faster than single precision at 1001 units (DESIGN.md), the same at 100
        if kind == CLIP:
            for j in range(N):
                g = g_row[j]
                d_q[j] += p * g
                acc += g * q[j]
        else:
            for j in range(N):
                g = g_row[j]
                d_q[j] += p * g
                acc += g * q[j]
                d_decay[j] += g * t_row[j]
        g_q[i] = acc


@_jit
def _retro_through_update(G_plastic, G_elig, elig, pre, post, rate, eta, d_q, d_rate, g_q):
    """:func:`_through_update` for retroactive modulation, through ``elig_after = (1 - eta) elig +
    eta outer(pre, post)`` and ``plastic_after = clip(plastic + rate * elig)``: ``d_q = pre @ G_elig``,
    ``g_q = eta G_elig @ post``, ``d_rate = sum_i G_plastic * elig``; ``G_elig`` becomes the adjoint of the
    eligibility before the step. Returns ``sum G_elig * elig`` (with the adjoint after the step)."""
    N = pre.shape[0]
    keep = pre.dtype.type(1) - eta  # a typed 1: an integer 1 would make the arithmetic double precision
    for j in range(N):
        d_q[j] = 0
        d_rate[j] = 0
    s = pre.dtype.type(0)
    for i in range(N):
        p, gp_row, ge_row, e_row = pre[i], G_plastic[i], G_elig[i], elig[i]
        acc = pre.dtype.type(0)
        for j in range(N):
            ge, gp, ev = ge_row[j], gp_row[j], e_row[j]
            d_q[j] += p * ge
            acc += ge * post[j]
            s += ge * ev
            d_rate[j] += gp * ev
            ge_row[j] = keep * ge + rate[j] * gp
        g_q[i] = eta * acc
    return s


@_jit
def _through_drive(G, trace, pre, g_a, g_q, w, alpha, d_alpha, decay, kind, clip, masked, g_prev):
    """The second half of a step's adjoint, through ``a = input + pre @ (w + alpha * trace)`` and the trace update:
    ``g_prev = g_q + (w + alpha * trace) @ g_a`` (the adjoint of ``pre``, before the output's gradient is added),
    ``d_alpha += trace * outer(pre, g_a)`` and ``G = decay * G + alpha * outer(pre, g_a)`` (no decay for clip),
    zeroed where ``|trace| >= clip`` if ``masked``."""
    N = pre.shape[0]
    zero = G.dtype.type(0)
    for i in range(N):
        p, g_row, t_row, a_row, w_row, da_row = pre[i], G[i], trace[i], _row(alpha, i), w[i], _row(d_alpha, i)
        acc = g_q[i]
        for j in range(N):
            tv = t_row[j]
            outer = p * g_a[j]
            acc += (w_row[j] + a_row[j] * tv) * g_a[j]
            da_row[j] += tv * outer
            g = (g_row[j] if kind == CLIP else decay[j] * g_row[j]) + a_row[j] * outer
            if masked:
                g = g if abs(tv) < clip else zero
            g_row[j] = g
        g_prev[i] = acc


@_jit
def _through_drive_and_update(G, trace, pre, g_a, g_q, w, alpha, d_alpha, clip, g_prev, pre_before, q_before, d_q):
    """:func:`_through_drive` of a step of the clip rule (masked), then :func:`_through_update` of the step before
    it, in the same loop: each new row of ``G`` (the adjoint of the trace that the step before made) goes into that
    step's ``d_q`` and ``g_q`` (written over this step's, row by row once read) while it is in a register.
    ``pre_before``, ``q_before``: the step before's activity and q. The rules with a decay, which would read a
    third trace here, keep the two passes."""
    N = pre.shape[0]
    zero = G.dtype.type(0)
    for j in range(N):
        d_q[j] = 0
    for i in range(N):
        p, pb, g_row, t_row, w_row = pre[i], pre_before[i], G[i], trace[i], w[i]
        a_row, da_row = _row(alpha, i), _row(d_alpha, i)
        acc, acc_before = g_q[i], zero
        for j in range(N):
            tv = t_row[j]
            outer = p * g_a[j]
            acc += (w_row[j] + a_row[j] * tv) * g_a[j]
            da_row[j] += tv * outer
            g = g_row[j] + a_row[j] * outer
            g = g if abs(tv) < clip else zero
            g_row[j] = g
            d_q[j] += pb * g
            acc_before += g * q_before[j]
        g_prev[i] = acc
        g_q[i] = acc_before


@_part
def _mask(G, trace, clip):
    """Zero the adjoint where the clip saturated the trace (``|trace| >= clip``)."""
    N = G.shape[0]
    zero = G.dtype.type(0)
    for i in range(N):
        g_row, t_row = G[i], trace[i]
        for j in range(N):
            g_row[j] = g_row[j] if abs(t_row[j]) < clip else zero


@_jit
def _plastic_example_backward(b, starts, k, h, rate, q, decay, mod, mod_w, fan_w, w, alpha, g_out, kind, clip, G,
                              g_a, d_rate, g_z, g_h0, d_alpha, work, vectors):
    """The whole adjoint recursion of example b (see :func:`plastic_backward`), with ``work`` (k - 1, 1, N, N) for
    the traces inside a chunk and ``vectors`` (5, N) for the adjoints of the activity and the rule's terms."""
    T, N = g_out.shape[0], h.shape[2]
    n_chunks = (T + k - 1) // k
    Gb = G[b, 0]
    if kind == CLIP:
        _mask(Gb, starts[n_chunks, b, 0], clip)
    g_h, g_prev, d_q, d_decay, g_q = vectors[0], vectors[1], vectors[2], vectors[3], vectors[4]
    _copy(g_h, g_out[T - 1, b])
    for c in range(n_chunks - 1, -1, -1):
        start, stop = c * k, min(T, (c + 1) * k)
        for t in range(start, stop - 1):  # recomputed, but for the chunk's last trace (the next chunk's first)
            _update(work[t - start, 0], starts[c, b, 0] if t == start else work[t - start - 1, 0], h[t, b], q[t, b],
                    decay[t, b], kind, clip, g_q, w, alpha, g_q, False)
        for t in range(stop - 1, start - 1, -1):
            trace = starts[c, b, 0] if t == start else work[t - start - 1, 0]
            pre, post, qt, dt, rt, d_r = h[t, b], h[t + 1, b], q[t, b], decay[t, b], rate[t, b], d_rate[t, b]
            # The clip rule's update adjoint went with the drive's of the step after (which needs no trace of its
            # own, so across chunks too), but for the last step's.
            if kind != CLIP or t == T - 1:
                _through_update(Gb, trace, pre, qt, kind, d_q, d_decay, g_q)
            _through_rule_terms(d_q, d_decay, rt, qt, post, kind, g_h, d_r)
            _through_activity(t, b, g_h, d_r, post, mod, mod_w, fan_w, g_a[t, b], g_z)
            if kind == CLIP and t > 0:
                _through_drive_and_update(Gb, trace, pre, g_a[t, b], g_q, w, alpha, d_alpha[b], clip, g_prev,
                                          h[t - 1, b], q[t - 1, b], d_q)
            else:
                _through_drive(Gb, trace, pre, g_a[t, b], g_q, w, alpha, d_alpha[b], dt, kind, clip,
                               kind == CLIP and t > 0, g_prev)
            if t > 0:
                for i in range(N):
                    g_prev[i] += g_out[t - 1, b, i]
            g_h, g_prev = g_prev, g_h
    _copy(g_h0[b], g_h)


@_Kernel
def plastic_backward(starts, k, h, rate, q, decay, mod, mod_w, fan_w, w, alpha, g_out, kind, clip, G, g_a, d_rate,
                     g_z, g_h0, d_alpha, work, vectors, groups):
    """The backward pass of a run of :func:`plastic_step` over T steps, every example at once.

    ``starts`` (ceil(T / k) + 1, B, 1, N, N): the traces before steps 0, k, 2k... and the final one (chunk c covers
    steps ``c*k`` to ``min(T, (c+1)*k) - 1``); ``h`` (T + 1, B, N) the activities, h[0] the initial one;
    ``rate``, ``q``, ``decay`` (T, B, N) and ``mod`` (T, B, 1) as the steps left them; ``g_out`` (T, B, N) the
    adjoints of the outputs h[1:]; ``G`` (B, 1, N, N) holds the adjoint of the final trace on entry and that of the
    initial one on return. Writes, per step: the drive's adjoint ``g_a``, the rate's ``d_rate`` (T, B, N), the
    modulator's ``g_z`` (T, B, 1); the initial activity's ``g_h0`` (B, N); adds each example's alpha gradient to
    ``d_alpha`` (B, N, N). ``work`` (groups, k - 1 or 1, 1, N, N): each group's chunk traces; the groups of
    examples are shared out among threads."""
    B = h.shape[1]
    for g in _prange(groups):
        for b in range(g * B // groups, (g + 1) * B // groups):
            _plastic_example_backward(b, starts, k, h, rate, q, decay, mod, mod_w, fan_w, w, alpha, g_out, kind,
                                      clip, G, g_a, d_rate, g_z, g_h0, d_alpha, work[g], vectors[g])


@_jit
def _retro_example_backward(b, starts, k, h, rate, mod, mod_w, fan_w, w, alpha, eta, g_out, clip, G, g_a, d_rate,
                            g_z, g_h0, d_alpha, d_eta, work, vectors):
    """:func:`_plastic_example_backward` for retroactive modulation; ``work`` (k - 1, 2, N, N)."""
    T, N = g_out.shape[0], h.shape[2]
    n_chunks = (T + k - 1) // k
    G_plastic, G_elig = G[b, 0], G[b, 1]
    _mask(G_plastic, starts[n_chunks, b, 0], clip)
    g_h, g_prev, d_q, g_q = vectors[0], vectors[1], vectors[2], vectors[3]
    _copy(g_h, g_out[T - 1, b])
    d_eta_b = h.dtype.type(0)
    for c in range(n_chunks - 1, -1, -1):
        start, stop = c * k, min(T, (c + 1) * k)
        for t in range(start, stop - 1):
            s = starts[c, b] if t == start else work[t - start - 1]
            _retro_update(work[t - start, 0], work[t - start, 1], s[0], s[1], h[t, b], h[t + 1, b], rate[t, b],
                          eta, clip, g_q, w, alpha, g_q, False)
        for t in range(stop - 1, start - 1, -1):
            s = starts[c, b] if t == start else work[t - start - 1]
            plastic, elig = s[0], s[1]
            pre, post, rt, d_r = h[t, b], h[t + 1, b], rate[t, b], d_rate[t, b]
            s_ge = _retro_through_update(G_plastic, G_elig, elig, pre, post, rt, eta, d_q, d_r, g_q)
            d_eta_b -= s_ge
            for j in range(N):
                g_h[j] += eta * d_q[j]
                d_eta_b += d_q[j] * post[j]
            _through_activity(t, b, g_h, d_r, post, mod, mod_w, fan_w, g_a[t, b], g_z)
            _through_drive(G_plastic, plastic, pre, g_a[t, b], g_q, w, alpha, d_alpha[b], rt, CLIP, clip, t > 0,
                           g_prev)
            if t > 0:
                for i in range(N):
                    g_prev[i] += g_out[t - 1, b, i]
            g_h, g_prev = g_prev, g_h
    _copy(g_h0[b], g_h)
    d_eta[b] = d_eta_b


@_Kernel
def retro_backward(starts, k, h, rate, mod, mod_w, fan_w, w, alpha, eta, g_out, clip, G, g_a, d_rate, g_z, g_h0,
                   d_alpha, d_eta, work, vectors, groups):
    """:func:`plastic_backward` for :func:`retro_step`: ``starts`` (.., B, 2, N, N) and ``G`` (B, 2, N, N) hold
    the plastic and eligibility traces and their adjoints; each example's eta gradient goes to ``d_eta`` (B,);
    ``work`` (groups, k - 1 or 1, 2, N, N)."""
    B = h.shape[1]
    for g in _prange(groups):
        for b in range(g * B // groups, (g + 1) * B // groups):
            _retro_example_backward(b, starts, k, h, rate, mod, mod_w, fan_w, w, alpha, eta, g_out, clip, G, g_a,
                                    d_rate, g_z, g_h0, d_alpha, d_eta, work[g], vectors[g])


# The plastic LSTM (:mod:`plasticnet.fast.plastic_lstm`): the same rules and passes as the RNN's, but the Hebbian
# term pairs the previous hidden state (pre) with the cell input g, and the rate comes from the new hidden state or
# cell. Forward, the gates are batched PyTorch operations and :func:`lstm_trace_step` does a step's plasticity;
# backward, :func:`lstm_backward` runs each example's whole recursion, gates included, as :func:`plastic_backward`.


@_Kernel
def lstm_trace_step(before, after, pre, post, mod_in, eta, mod_w, mod_b, fan_w, fan_b, kind, clip, mod, rate, q, decay,
                    nxt, w, alpha, drive, last, groups):
    """One step's plasticity for every example, ``after`` from ``before`` (B, n_traces, N, N; ``after`` may be
    ``before``, the common case). With one trace,
    :func:`_rule_terms` from the cell input ``post`` (g) and the modulator's input ``mod_in`` (the new h or c), then
    :func:`_update` (examples four by four, as :func:`plastic_step`); with two, the modulator's rate per unit and
    :func:`_retro_update` with the eligibility rate ``eta``. Unless the step is the ``last``, ``drive`` (B, N)
    becomes the next step's ``nxt @ (w + alpha * traces)``, the plastic part of its cell input's drive (``w`` as one
    zero row: the caller's one matrix product for the batch has the fixed weights' part)."""
    B = pre.shape[0]
    retro = before.shape[1] == 2
    fours = (B + 3) // 4
    for g in _prange(groups):
        for four in range(g * fours // groups, (g + 1) * fours // groups):
            b0, b1 = 4 * four, min(4 * four + 4, B)
            for b in range(b0, b1):
                if retro:
                    mod[b, 0] = _rate(mod_in[b], rate[b], eta, mod_w, mod_b, fan_w, fan_b)
                else:
                    _rule_terms(b, post[b], mod_in[b], eta, mod_w, mod_b, fan_w, fan_b, kind, mod, rate, q, decay)
                if not last:
                    for j in range(drive.shape[1]):
                        drive[b, j] = 0
            if retro:
                for b in range(b0, b1):
                    s, n = before[b], after[b]
                    _retro_update(n[0], n[1], s[0], s[1], pre[b], post[b], rate[b], eta, clip, nxt[b], w, alpha,
                                  drive[b], not last)
            else:
                _update_examples(after, before, pre, q, decay, kind, clip, nxt, w, alpha, drive, b0, b1, not last)


@_jit
def _lstm_example_backward(b, first, middle, final, k, h, c, ifo, g, tanh_c, rate, q, decay, mod, mod_w, fan_w,
                           w_ifo, w, alpha, eta, g_out, kind, clip, from_cell, G, g_gates, d_rate, g_z, g_h0, g_c0,
                           d_alpha, d_eta, work, vectors):
    """The whole adjoint recursion of example b of a plastic LSTM layer (see :func:`lstm_backward`), with ``work``
    (k - 1, n_traces, N, N) for the traces inside a chunk and ``vectors`` (7, N) for the adjoints of h, c, g and the
    rule's terms."""
    T, N = g_out.shape[0], h.shape[2]
    n_chunks = (T + k - 1) // k
    retro = G.shape[1] == 2
    one, zero = h.dtype.type(1), h.dtype.type(0)
    Gb = G[b, 0]
    if kind == CLIP:
        _mask(Gb, final[b, 0], clip)
    g_h, g_prev, d_q, d_decay, g_q, g_c, d_g = (vectors[0], vectors[1], vectors[2], vectors[3], vectors[4],
                                                vectors[5], vectors[6])
    _copy(g_h, g_out[T - 1, b])
    _copy(g_c, g_c0[b])  # the final cell's adjoint on entry
    d_eta_b = h.dtype.type(0)
    for ch in range(n_chunks - 1, -1, -1):
        start, stop = ch * k, min(T, (ch + 1) * k)
        for t in range(start, stop - 1):  # recomputed, but for the chunk's last trace (the next chunk's first)
            s = (first[b] if ch == 0 else middle[ch - 1, b]) if t == start else work[t - start - 1]
            if retro:
                _retro_update(work[t - start, 0], work[t - start, 1], s[0], s[1], h[t, b], g[t, b], rate[t, b], eta,
                              clip, g_q, w, alpha, g_q, False)
            else:
                _update(work[t - start, 0], s[0], h[t, b], q[t, b], decay[t, b], kind, clip, g_q, w, alpha, g_q,
                        False)
        for t in range(stop - 1, start - 1, -1):
            s = (first[b] if ch == 0 else middle[ch - 1, b]) if t == start else work[t - start - 1]
            pre, gt, rt, d_r, ift = h[t, b], g[t, b], rate[t, b], d_rate[t, b], ifo[t, b]
            # Through the trace update: the adjoints of g (d_g) and of the rate (d_r).
            if retro:
                d_eta_b -= _retro_through_update(Gb, G[b, 1], s[1], pre, gt, rt, eta, d_q, d_r, g_q)
                for j in range(N):
                    d_g[j] = eta * d_q[j]
                    d_eta_b += d_q[j] * gt[j]
            else:
                # The clip rule's update adjoint went with the drive's of the step after, but for the last step's.
                if kind != CLIP or t == T - 1:
                    _through_update(Gb, s[0], pre, q[t, b], kind, d_q, d_decay, g_q)
                for j in range(N):
                    d_g[j] = zero
                _through_rule_terms(d_q, d_decay, rt, q[t, b], gt, kind, d_g, d_r)
            # Through the modulator, to the hidden state or the cell that fed it.
            _through_modulator(t, b, d_r, mod, mod_w, fan_w, g_z, g_c if from_cell else g_h)
            # Through h = o tanh(c), c = f c_prev + i g and the gates' nonlinearities.
            ga, c_prev, tc = g_gates[t, b], c[t, b], tanh_c[t, b]
            for j in range(N):
                i_, f_, o_, gj, tcj = ift[j], ift[N + j], ift[2 * N + j], gt[j], tc[j]
                gc = g_c[j] + g_h[j] * o_ * (one - tcj * tcj)
                ga[j] = gc * gj * i_ * (one - i_)
                ga[N + j] = gc * c_prev[j] * f_ * (one - f_)
                ga[2 * N + j] = g_h[j] * tcj * o_ * (one - o_)
                ga[3 * N + j] = (d_g[j] + gc * i_) * (one - gj * gj)
                g_c[j] = gc * f_
            # Through the cell input's drive h[t] @ (w + alpha * trace) (and the clip rule's update the step before).
            g_a = ga[3 * N:]
            if not retro and kind == CLIP and t > 0:
                _through_drive_and_update(Gb, s[0], pre, g_a, g_q, w, alpha, d_alpha[b], clip, g_prev, h[t - 1, b],
                                          q[t - 1, b], d_q)
            else:
                _through_drive(Gb, s[0], pre, g_a, g_q, w, alpha, d_alpha[b], decay[t, b], CLIP if retro else kind,
                               clip, kind == CLIP and t > 0, g_prev)
            # Through the other gates' drive h[t] @ w_ifo, and the output.
            for i in range(N):
                acc, row = g_prev[i], w_ifo[i]
                for j in range(3 * N):
                    acc += row[j] * ga[j]
                g_prev[i] = acc + (g_out[t - 1, b, i] if t > 0 else zero)
            g_h, g_prev = g_prev, g_h
    _copy(g_h0[b], g_h)
    _copy(g_c0[b], g_c)
    d_eta[b] = d_eta_b


@_Kernel
def lstm_backward(first, middle, final, k, h, c, ifo, g, tanh_c, rate, q, decay, mod, mod_w, fan_w, w_ifo, w, alpha,
                  eta, g_out, kind, clip, from_cell, G, g_gates, d_rate, g_z, g_h0, g_c0, d_alpha, d_eta, work, vectors,
                  groups):
    """The backward pass of a plastic LSTM layer run with :func:`lstm_trace_step` over T steps, every example at
    once, each example's whole recursion in turn (its traces recomputed chunk by chunk, in cache).

    ``first``, ``final`` (B, n_traces, N, N): the initial and final traces, ``middle`` (ceil(T / k) - 1, B,
    n_traces, N, N) those before steps k, 2k...;
    ``h``, ``c`` (T + 1, B, N); the gates after their nonlinearities, ``ifo`` (T, B, 3 N) and ``g`` (T, B, N);
    ``tanh_c`` (T, B, N) of c[1:]; ``rate``, ``q``, ``decay`` (T, B, N) and ``mod`` (T, B, 1) as the steps left
    them; ``w_ifo`` (N, 3 N) the other gates' recurrent weights; ``eta`` the eligibility rate (retroactive
    modulation); ``g_out`` (T, B, N) the adjoints of h[1:]; ``G`` (B, n_traces, N, N) and ``g_c0`` (B, N) hold the
    adjoints of the final traces and cell on entry, those of the initial ones on return. Writes the adjoints of the
    gates' pre-activations ``g_gates`` (T, B, 4 N), of the rate ``d_rate`` (T, B, N) and of the modulator ``g_z``
    (T, B, 1), the initial hidden state's ``g_h0`` (B, N), each example's alpha gradient (added to ``d_alpha``
    (B, N or 1, N), as alpha's rows) and eligibility-rate gradient ``d_eta`` (B,). ``work`` (groups, k - 1 or 1,
    n_traces, N, N), ``vectors`` (groups, 7, N)."""
    B = h.shape[1]
    for gr in _prange(groups):
        for b in range(gr * B // groups, (gr + 1) * B // groups):
            _lstm_example_backward(b, first, middle, final, k, h, c, ifo, g, tanh_c, rate, q, decay, mod, mod_w,
                                   fan_w, w_ifo, w, alpha, eta, g_out, kind, clip, from_cell, G, g_gates, d_rate, g_z,
                                   g_h0, g_c0, d_alpha, d_eta, work[gr], vectors[gr])


def empty_rows(dtype) -> np.ndarray:
    """The stand-in for an absent 2-D argument, of the type Numba expects."""
    return np.empty((0, 0), dtype=dtype)


def warm_up(dtype=np.float32) -> None:
    """Compile (or load from Numba's cache) both versions of every kernel for ``dtype`` now, so that a measurement
    that follows counts neither the compiler's time nor its memory."""
    if numba is None:
        return
    rows, vector, no_rows, no_vector = np.zeros((1, 1), dtype), np.zeros(1, dtype), empty_rows(dtype), \
        np.zeros(0, dtype)
    steps, h, vectors = np.zeros((1, 1, 1), dtype), np.zeros((2, 1, 1), dtype), np.zeros((1, 5, 1), dtype)
    eta, clip = np.dtype(dtype).type(0.1), np.dtype(dtype).type(1.0)
    for n_traces in (1, 2):
        traces, starts = np.zeros((1, n_traces, 1, 1), dtype), np.zeros((2, 1, n_traces, 1, 1), dtype)
        work, in_b = np.zeros((1, 1, n_traces, 1, 1), dtype), (vector, no_vector)[n_traces - 1]
        first_drive(rows.copy(), traces, rows, in_b, rows, rows)
        for mod_w in (rows, no_rows) if n_traces == 1 else (rows,):
            step = (traces, traces, rows, rows, in_b, rows, rows, eta, mod_w, vector, no_rows, vector)
            backward_out = (traces.copy(), steps.copy(), steps.copy(), steps.copy(), rows.copy(), steps.copy())
            if n_traces == 1:
                plastic_step.compile(*step, HEBB, clip, *(rows.copy() for _ in range(5)), False, 1)
                plastic_backward.compile(starts, 1, h, steps, steps, steps, steps, mod_w, no_rows, rows, rows, steps,
                                         CLIP, clip, *backward_out, work, vectors, 1)
            else:
                retro_step.compile(*step, clip, rows.copy(), rows.copy(), rows.copy(), False, 1)
                retro_backward.compile(starts, 1, h, steps, steps, mod_w, no_rows, rows, rows, eta, steps, clip,
                                       *backward_out, vector.copy(), work, vectors, 1)
