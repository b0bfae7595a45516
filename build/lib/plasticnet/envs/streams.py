"""Counter-based random streams: one independent stream per episode, computed with tensor ops.

Every random choice an environment makes is a pure function of ``(episode seed, stream id, counter)``, hashed to 32
bits. Why not draw from one ``torch.Generator`` per step: a shared generator interleaves the batch elements, so an
episode would depend on its batch neighbours, and a generator per element would need a Python loop over the batch.
Here an episode is the same whether it runs alone, in any batch, on CPU or on CUDA, and nothing waits on the host.

The mixing function is a two-round xorshift-multiply integer hash (constants from Chris Wellons' hash prospector).
All arithmetic stays in int64 without overflow: 32-bit products are split into 16-bit halves.
"""

import torch

_MASK32 = 0xFFFFFFFF
_TWO_32 = 1 << 32


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for ``0 <= x < 2**32``, with every intermediate below 2**50."""
    low, high = c & 0xFFFF, c >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of [0, 2**32) that scrambles its bits (consecutive inputs give unrelated outputs)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x21F0AAAD)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x735A2D97)
    return x ^ (x >> 15)


def random_u32(seeds: torch.Tensor, stream: int, counter: torch.Tensor | int) -> torch.Tensor:
    """Uniform integers in [0, 2**32), shape ``(B, *counter.shape)``, int64.

    ``seeds``: (B,) int64 episode seeds in [0, 2**32). ``stream``: a small id that separates the kinds of draws of one
    environment. ``counter``: which draws of that stream (an int or an int64 tensor of non-negative values); distinct
    counters of one stream give distinct outputs.
    """
    base = _mix32(_mix32(seeds) ^ stream)
    if isinstance(counter, torch.Tensor):
        base = base.view(-1, *([1] * counter.dim()))
    return _mix32(_mix32(base ^ counter))


def random_below(seeds: torch.Tensor, stream: int, counter: torch.Tensor | int,
                 n: torch.Tensor | int) -> torch.Tensor:
    """Uniform integers in [0, n), by the multiply-shift map ``floor(u * n / 2**32)``; needs ``1 <= n <= 2**31``.

    The bias from mapping 2**32 values onto n bins is below n / 2**32, far under anything these tasks can detect.
    """
    return (random_u32(seeds, stream, counter) * n) >> 32


def random_bool(seeds: torch.Tensor, stream: int, counter: torch.Tensor | int, p: float) -> torch.Tensor:
    """True with probability ``p`` (exactly 0 and 1 at the ends), as a bool tensor shaped like :func:`random_u32`."""
    return random_u32(seeds, stream, counter) < round(p * _TWO_32)
