"""The plain formulations that `plasticnet bench` measures the library against do the same task and maths."""

import random

import numpy as np
import pytest
import torch

from plasticnet.agents import RecurrentAgent
from plasticnet.baselines import plain_cue_reward
from plasticnet.cli import main



def test_plain_cue_reward_episode_follows_the_task():
    env = plain_cue_reward.PlainCueReward(random.Random(3))
    env.reset()
    rng = np.random.default_rng(0)
    trial_start, shown, go_steps = 0, set(), 0
    for t in range(120):
        obs = env.observe(t)
        assert obs[21] == 1.0 and obs[22] == pytest.approx(t / 120) and obs.shape == (27,)
        cue = next((i for i, c in enumerate(env.cues) if np.array_equal(obs[:20], c)), None)
        if cue is not None:
            shown.add(cue)
        else:
            assert not obs[:20].any()
        action = int(rng.integers(2))
        is_go = obs[20] == 1.0
        reward = env.step(action)
        if is_go:
            go_steps += 1
            assert len(shown) == 2  # two distinct cues, then Go
            assert reward == (1.0 if (action == 1) == (env.target in shown) else -1.0)
            assert 5 <= t + 2 - trial_start <= 8  # the trial ends with the blank after Go
            trial_start, shown = t + 2, set()
        else:
            assert reward == 0.0
        nxt = env.observe(t + 1)
        assert nxt[23] == reward and nxt[25 + action] == 1.0 and nxt[26 - action] == 0.0
    assert 120 // 8 <= go_steps <= 120 // 5 + 1


def test_plain_modul_steps_like_the_library_agent():
    """Same activities step after step once the weights are copied (the plain network stores them post x pre)."""
    torch.manual_seed(0)
    agent = RecurrentAgent(27, 2, "modul", 6, init_scale=0.5, eta_init=0.3, fused=False).double()
    plain = plain_cue_reward.PlainModul(hidden=6).double()
    with torch.no_grad():
        plain.i2h.load_state_dict(agent.cell.i2h.state_dict())
        plain.h2mod.load_state_dict(agent.cell.h2mod.state_dict())
        plain.w.copy_(agent.cell.w.t())
        plain.alpha.copy_(agent.cell.alpha.t())
        plain.eta.copy_(agent.cell.eta)
    x = torch.randn(8, 3, 27, dtype=torch.float64)
    state, plain_state = agent.initial_state(3), plain.initial_state(3)
    for x_t in x:
        _, state = agent.step(x_t, state)
        _, _, plain_state = plain(x_t, plain_state)
        torch.testing.assert_close(plain_state[0], state.h, rtol=0, atol=1e-12)
        torch.testing.assert_close(plain_state[1], state.hebb.transpose(1, 2), rtol=0, atol=1e-12)
    assert state.hebb.abs().max() > 0.01  # the plastic weights did change


def test_bench_cue_reward_prints_its_comparison(capsys):
    assert main(["bench", "cue-reward", "--batch-sizes", "2", "--rounds", "1"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "speed-up" in header and row.split()[0] == "2" and row.split()[3].endswith("x")


def test_bench_all_takes_no_batch_sizes(capsys):
    assert main(["bench", "all", "--batch-sizes", "3"]) == 2
    assert "drop --batch-sizes" in capsys.readouterr().err


def test_bench_pattern_refuses_a_batch_whose_plain_formulation_cannot_fit(capsys):
    """Batch 100,000 would need about 150 TB for the plain formulation: one line and exit 2, before anything runs."""
    assert main(["bench", "pattern", "--batch-sizes", "100000", "--rounds", "1"]) == 2
    captured = capsys.readouterr()
    assert "plain formulation needs about" in captured.err and "smaller --batch-sizes" in captured.err
    assert "ep/s" not in captured.out


def test_bench_ptb_compares_the_plastic_lstm_with_the_plain_formulation_and_both_lstms(capsys):
    """Each row: the library against the plain per-step formulation (the same logits), the library's LSTM and
    torch.nn.LSTM, timed in the same loop."""
    from plasticnet.bench import ptb_suite

    rows = ptb_suite([2], 1, torch.device("cpu"))
    printed = capsys.readouterr().out.strip().splitlines()
    assert "of nn.LSTM" in printed[-3] and [line.split()[0] for line in printed[-2:]] == ["plastic", "modplast"]
    assert [r["model"] for r in rows] == ["plastic", "modplast"]
    for r in rows:
        assert r["max_logit_difference"] < 1e-5 and r["batch"] == 2 and r["graphed_tps"] is None
        assert r["of_lstm"] == pytest.approx(r["library_tps"] / r["lstm_tps"])
        assert r["of_torch_lstm"] == pytest.approx(r["library_tps"] / r["torch_lstm_tps"])


def test_torch_lstm_language_model_has_the_lstm_conditions_shapes():
    from plasticnet.baselines.plain_ptb import TorchLSTMLanguageModel
    from plasticnet.config import resolve
    from plasticnet.tasks.ptb import LanguageModel, PtbConfig, count_parameters

    cfg = resolve(PtbConfig, "ptb", "small", {"model": "lstm"})
    model = TorchLSTMLanguageModel(50, cfg.emsize, cfg.hidden_size, cfg.num_layers)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(cfg, 50, cfg.hidden_size)
    logits, (h, c) = model(torch.randint(50, (7, 3)))
    assert logits.shape == (7, 3, 50) and h.shape == c.shape == (2, 3, cfg.hidden_size)
    assert LanguageModel(cfg, 50, cfg.hidden_size)(torch.randint(50, (7, 3)))[0].shape == logits.shape
