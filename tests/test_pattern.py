"""The binary pattern task: episode invariants, metric, models, and a learning test."""

import pytest
import torch

from plasticnet.config import resolve
from plasticnet.tasks.pattern import (LSTMModel, PatternConfig, PatternExperiment, RecurrentModel, bit_error,
                                      make_episodes)


def _cfg(preset, **overrides):
    return resolve(PatternConfig, "pattern", preset, overrides)


def _episodes(cfg, batch=16, seed=0):
    return make_episodes(cfg, batch, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset, length", [("paper-1000bit", 106), ("paper-50bit", 11)])
def test_episode_length(preset, length):
    cfg = _cfg(preset)
    shown, target = _episodes(cfg)
    assert cfg.episode_length == length and shown.shape == (length, 16, cfg.pattern_size)
    assert target.shape == (16, cfg.pattern_size)


@pytest.mark.parametrize("preset", ["paper-1000bit", "paper-50bit"])
def test_schedule_patterns_and_probe(preset):
    cfg = _cfg(preset)
    P, K, C, Tp, D = cfg.pattern_size, cfg.n_patterns, cfg.n_cycles, cfg.presentation_time, cfg.gap
    shown, target = _episodes(cfg)
    for b in range(shown.shape[1]):
        blocks = shown[: C * K * (Tp + D), b].reshape(C, K, Tp + D, P)
        assert not blocks[:, :, Tp:].any()  # gaps are silent
        assert (blocks[:, :, :Tp] == blocks[:, :, :1]).all()  # a pattern stays on for its whole presentation
        patterns = blocks[:, :, 0]
        assert (patterns.abs() == 1).all() and (patterns.sum(-1) == 0).all()  # +-1, balanced
        for c in range(1, C):  # every cycle shows the same K patterns, in its own order
            assert sorted(map(tuple, patterns[c].tolist())) == sorted(map(tuple, patterns[0].tolist()))
        assert any(torch.equal(target[b], p) for p in patterns[0])
        probe = shown[-Tp:, b]
        assert (probe == probe[0]).all()
        assert (probe[0] == 0).sum() == P // 2  # exactly half the bits erased
        kept = probe[0] != 0
        assert torch.equal(probe[0][kept], target[b][kept])


def test_cycle_orders_differ_across_episodes():
    cfg = _cfg("paper-1000bit")
    shown, _ = _episodes(cfg, batch=32)
    first_cycle = shown[: 5 * 10 : 10, :, :4].permute(1, 0, 2)  # first bits of each presented pattern
    second_cycle = shown[50: 100: 10, :, :4].permute(1, 0, 2)
    assert not torch.equal(first_cycle, second_cycle)


def test_bit_error_counts_zero_as_wrong():
    target = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    assert bit_error(torch.tensor([[0.3, -0.2, 0.0, 0.5]]), target).item() == 0.5


def test_parameter_counts_match_the_paper():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(RecurrentModel(_cfg("paper-1000bit"))) == 2_004_003
    assert count(RecurrentModel(_cfg("paper-50bit"))) == 5_203
    assert count(RecurrentModel(_cfg("paper-50bit", model="rnn", extra_neurons=2000))) == 4_206_601
    assert count(LSTMModel(_cfg("paper-50bit", model="lstm", extra_neurons=1949))) == 16_416_000


def test_plastic_model_has_no_plastic_self_connections():
    assert not RecurrentModel(_cfg("paper-50bit")).rnn.cell.alpha.diagonal().any()


def test_lstm_clamp_copies_given_bits():
    cfg = _cfg("paper-50bit", model="lstm", extra_neurons=1949)  # the paper's 2000 hidden units
    torch.manual_seed(0)
    model = LSTMModel(cfg)
    shown, _ = _episodes(cfg, batch=4)
    out = model(shown)
    probe = shown[-1]
    given = probe != 0
    assert torch.equal(torch.sign(out[given]), probe[given])
    w = model.lstm.weight_ih_l0
    assert torch.equal(w[2 * 2000: 2 * 2000 + 50, :50], 10 * torch.eye(50))  # the override is in place


def test_plastic_network_learns_50_bit_task():
    """The paper's 50-bit plastic network at batch 1 and lr 3e-4 falls well below the 25% chance error."""
    cfg = _cfg("paper-50bit", iterations=4000, seed=0)
    torch.manual_seed(cfg.seed)
    experiment = PatternExperiment(cfg, torch.device("cpu"))
    errors = [experiment.step(i)["error"].item() for i in range(cfg.iterations)]
    assert sum(errors[:200]) / 200 > 0.15
    assert sum(errors[-500:]) / 500 < 0.05
