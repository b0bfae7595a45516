"""The counter-based random streams behind the environments (plasticnet.envs.streams)."""

import random

import torch

from plasticnet.envs.streams import _mul32, random_below, random_bool, random_u32


def test_mul32_is_exact_multiplication_mod_2_32():
    rng = random.Random(0)
    xs = [0, 1, 2**32 - 1] + [rng.randrange(2**32) for _ in range(1000)]
    for c in (0x21F0AAAD, 0x735A2D97, 2**32 - 1):
        assert _mul32(torch.tensor(xs), c).tolist() == [x * c % 2**32 for x in xs]


def test_streams_depend_only_on_seed_stream_and_counter():
    seeds = torch.tensor([0, 1, 2**32 - 1, 1])
    draws = random_u32(seeds, 3, torch.arange(500))
    assert draws.shape == (4, 500) and draws.min() >= 0 and draws.max() < 2**32
    assert torch.equal(draws[1], draws[3])
    assert torch.equal(draws[:, 7], random_u32(seeds, 3, 7))
    assert len(set(draws[0].tolist())) == 500
    assert not torch.equal(draws, random_u32(seeds, 4, torch.arange(500)))


def test_random_below_and_random_bool():
    seeds = torch.arange(200)
    draws = random_below(seeds, 1, torch.arange(500), 97)
    counts = torch.bincount(draws.flatten(), minlength=97)
    assert len(counts) == 97 and counts.min() > 0.8 * counts.float().mean()
    assert random_bool(seeds, 2, torch.arange(100), 0.0).sum() == 0
    assert random_bool(seeds, 2, torch.arange(100), 1.0).all()
    assert 0.28 < random_bool(seeds, 2, torch.arange(100), 0.3).float().mean() < 0.32
