"""A2C as the papers ran it: returns, loss terms, baselines, burn-in, the agents' sizes, the fused and stepped
episodes, resuming, and the maze and cue-reward commands (train, animate, errors)."""

import json
import math

import numpy as np
import pytest
import torch

from plasticnet.agents import RecurrentAgent
from plasticnet.cli import main
from plasticnet.config import resolve
from plasticnet.envs import MazeEnv
from plasticnet.tasks import get_task
from plasticnet.train.a2c import (A2CExperiment, a2c_loss, discounted_returns, draw_episode, fused_episode,
                                  make_agent, reference_episode, rollout, run_episode)


@pytest.fixture(autouse=True)
def one_thread():
    """Episodes are hundreds of tiny products: on a busy machine, BLAS threads waiting for a core make each one
    milliseconds long. One thread keeps these tests fast; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _cfg(task, preset, **overrides):
    return resolve(get_task(task).config_cls, task, preset, overrides)


def test_returns_match_a_hand_example():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 10.0], [2.0, 0.0]])
    expected = torch.tensor([[1 + 0.9 * 1.8, 0.9 * 10.0], [0.9 * 2.0, 10.0], [2.0, 0.0]])
    torch.testing.assert_close(discounted_returns(rewards, 0.9), expected)


def test_returns_equal_the_backward_recursion():
    rewards = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    running, expected = torch.zeros(3), []
    for r in reversed(rewards):
        running = r + 0.9 * running
        expected.append(running)
    torch.testing.assert_close(discounted_returns(rewards, 0.9), torch.stack(expected[::-1]), rtol=1e-5, atol=1e-5)


def _one_step_case():
    """T=1, B=2, A=2 with uniform policies: p = (0.5, 0.5), so sum_a p^2 = 0.5 and log p(a) = -log 2."""
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    actions = torch.tensor([[0, 1]])
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    returns = torch.tensor([[3.0, 1.0]])
    return logits, actions, values, returns


def test_loss_terms_by_hand_with_own_baseline():
    logits, actions, values, returns = _one_step_case()
    loss = a2c_loss(logits, actions, values, returns, entropy_coef=0.03, value_coef=0.1)
    # delta = R - V = (2, -1): policy = -mean(log p * delta) = log 2 * 0.5; value = mean(delta^2) = 2.5.
    assert loss.penalty.item() == pytest.approx(0.5)
    assert loss.policy.item() == pytest.approx(math.log(2) * 0.5)
    assert loss.value.item() == pytest.approx(2.5)
    assert loss.total.item() == pytest.approx(0.03 * 0.5 + math.log(2) * 0.5 + 0.1 * 2.5)
    loss.total.backward()
    torch.testing.assert_close(values.grad, 0.1 * torch.tensor([[-2.0, 1.0]]))  # d/dV of mean (R - V)^2


def test_original_baseline_uses_element_0_for_every_element():
    logits, actions, values, returns = _one_step_case()
    loss = a2c_loss(logits, actions, values, returns, 0.03, 0.1, baseline="element0")
    # delta = R - V[0] = (2, 0): policy = log 2 * mean(2, 0); value = mean(4, 0).
    assert loss.policy.item() == pytest.approx(math.log(2) * 1.0)
    assert loss.value.item() == pytest.approx(2.0)
    loss.total.backward()
    assert values.grad[0, 1] == 0 and values.grad[0, 0] == pytest.approx(0.1 * -2.0)


def test_penalty_pushes_towards_uniform_and_advantage_is_detached():
    logits = torch.tensor([[[2.0, 0.0]]], requires_grad=True)
    values = torch.tensor([[1.0]], requires_grad=True)
    action = torch.tensor([[0]])
    # delta = 0: only the penalty acts on the policy, and descent lowers the likelier action's score.
    a2c_loss(logits, action, values, torch.tensor([[1.0]]), entropy_coef=1.0, value_coef=0.0).total.backward()
    assert logits.grad[0, 0, 0] > 0 > logits.grad[0, 0, 1]
    # delta = 2 but no value loss: the policy term sees sg(delta), so nothing reaches the critic.
    a2c_loss(logits, action, values, torch.tensor([[3.0]]), entropy_coef=0.0, value_coef=0.0).total.backward()
    assert values.grad is None or values.grad.abs().sum() == 0


def test_loss_averages_over_steps_and_batch():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 4)
    actions = torch.randint(4, (5, 3))
    values, returns = torch.randn(5, 3), torch.randn(5, 3)
    loss = a2c_loss(logits, actions, values, returns, 0.1, 0.2)
    p = torch.softmax(logits, -1)
    chosen = torch.log(p.gather(-1, actions[..., None])).squeeze(-1)
    total = 0.0
    for t in range(5):
        delta = returns[t] - values[t]
        total += (0.1 * p[t].square().sum() / 3 - (chosen[t] * delta).sum() / 3 + 0.2 * delta.square().sum() / 3)
    assert loss.total.item() == pytest.approx(total.item() / 5, rel=1e-5)


MAZE_SIZES = {"paper-2019": 22_406, "paper-2019-modul": 22_407, "paper-2019-plastic": 22_731,
              "paper-2019-rnn": 22_523, "simplemaze": 22_606, "paper-2018": 84_606, "paper-2018-rnn": 44_605}
# The original's cue-reward modplast and modul also hold an eta they never use (one parameter more each).
CUE_SIZES = {"paper": 86_405, "paper-modplast": 86_404, "paper-plastic": 86_204, "paper-rnn": 46_203}


@pytest.mark.parametrize("task, preset, count", [("maze", p, n) for p, n in MAZE_SIZES.items()]
                         + [("cue-reward", p, n) for p, n in CUE_SIZES.items()])
def test_parameter_counts_match_the_papers(task, preset, count):
    cfg = _cfg(task, preset)
    agent = make_agent(cfg, cfg.make_env(1, "cpu", seed=0))
    assert sum(p.numel() for p in agent.parameters()) == count


def test_presets_hold_the_papers_settings():
    maze = _cfg("maze", "paper-2019")
    assert (maze.env, maze.batch_size, maze.clip, maze.grad_clip, maze.adam_eps, maze.burn_in, maze.lr) == \
        ("paper-2019", 30, 1.0, 4.0, 1e-4, 101, 1e-4)
    assert (maze.gamma, maze.entropy_coef, maze.value_coef, maze.baseline) == (0.9, 0.03, 0.1, "own")
    simple = _cfg("maze", "simplemaze")
    assert (simple.env, simple.fanout, simple.clip, simple.init_scale) == ("simplemaze", True, 2.0, 0.001)
    old = _cfg("maze", "paper-2018")
    assert (old.rule, old.hidden_size, old.grad_clip, old.burn_in, old.entropy_coef, old.value_coef) == \
        ("oja", 200, 0.0, 0, 0.1, 0.03)
    cue = _cfg("cue-reward", "paper")
    assert (cue.agent, cue.hidden_size, cue.entropy_coef, cue.grad_clip, cue.adam_eps, cue.eta_init) == \
        ("modul", 200, 0.1, 2.0, 1e-6, 0.1)


def _tiny(task="maze", preset="paper-2019", **overrides):
    return _cfg(task, preset, batch_size=2, hidden_size=6, **overrides)


def test_an_episode_is_its_draws():
    """An episode is fixed by what is drawn before it (what a CUDA graph of the iteration is fed): the same draws
    replay it in another environment object, and ``rollout`` draws exactly these from the same generators."""
    agent = RecurrentAgent(17, 4, "modplast", 6, init_scale=0.2)
    env, twin = MazeEnv(3, "paper-2019", seed=4), MazeEnv(3, "paper-2019", seed=4)
    draws = draw_episode(twin, torch.Generator().manual_seed(5))
    assert draws.uniform.shape == (200, 3, 4)
    assert not twin.draw_episode_seeds().equal(draws.episode_seeds)  # the environment's generator moved on
    with torch.no_grad():
        drawn = rollout(agent, env, torch.Generator().manual_seed(5))
        replayed = run_episode(agent, MazeEnv(3, "paper-2019"), draws)
    assert drawn.actions.equal(replayed.actions) and drawn.rewards.equal(replayed.rewards)
    assert drawn.actions.unique().numel() == 4


def test_cuda_graph_setting_is_ignored_on_a_cpu():
    experiment = A2CExperiment(_tiny(cuda_graph=True), torch.device("cpu"))
    assert not experiment.graphed and "CUDA graph" not in experiment.describe()["agent"]
    assert experiment.step(0)["loss"].isfinite()


def test_no_update_during_burn_in():
    torch.manual_seed(0)
    experiment = A2CExperiment(_tiny(burn_in=3), torch.device("cpu"))
    start = [p.detach().clone() for p in experiment.model.parameters()]
    for i in range(3):
        assert experiment.step(i)["grad_norm"] > 0  # gradients are computed, and dropped
    assert all(torch.equal(a, b) for a, b in zip(start, experiment.model.parameters()))
    experiment.step(3)
    assert not all(torch.equal(a, b) for a, b in zip(start, experiment.model.parameters()))


def test_gradient_norm_is_clipped():
    torch.manual_seed(0)
    experiment = A2CExperiment(_tiny(grad_clip=1e-6), torch.device("cpu"))
    assert experiment.step(0)["grad_norm"] > 1e-6
    clipped = torch.sqrt(sum(p.grad.square().sum() for p in experiment.model.parameters()))
    assert clipped.item() == pytest.approx(1e-6, rel=1e-3)


@pytest.mark.parametrize("task, preset", [("maze", "paper-2018"), ("cue-reward", "paper")])  # rewards every episode
@pytest.mark.parametrize("kind, extra", [("modplast", {}), ("modul", {}), ("plastic", {"rule": "oja"}),
                                         ("plastic", {"rule": "hebb"}), ("modplast", {"fanout": True, "clip": 2.0})])
def test_fused_episode_equals_the_reference_episode(task, preset, kind, extra):
    """The fused closed loop is a drop-in for the step-by-step reference: the same agent on the same draws gives the
    same actions, rewards, scores, values and gradients of the A2C loss."""
    cfg = _cfg(task, preset)
    torch.manual_seed(0)
    env = cfg.make_env(3, "cpu", seed=1)
    agent = RecurrentAgent(env.obs_size, env.n_actions, kind, 8, init_scale=0.2, **extra).double()  # not chaotic
    assert agent.fused
    draws = draw_episode(env, torch.Generator().manual_seed(2))
    results = []
    for run in (reference_episode, fused_episode):
        episode = run(agent, cfg.make_env(3, "cpu", seed=1), draws)
        loss = a2c_loss(episode.logits, episode.actions, episode.values,
                        discounted_returns(episode.rewards.double(), 0.9), 0.03, 0.1)
        results.append((episode, torch.autograd.grad(loss.total, list(agent.parameters()))))
    (reference, ref_grads), (fused, fused_grads) = results
    assert reference.actions.equal(fused.actions) and reference.rewards.equal(fused.rewards)
    assert reference.actions.unique().numel() > 1 and reference.rewards.abs().sum() > 0
    torch.testing.assert_close(fused.logits, reference.logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(fused.values, reference.values, rtol=0, atol=1e-12)
    for a, b, (name, _) in zip(fused_grads, ref_grads, agent.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


def test_an_agent_off_the_fused_path_runs_the_reference_episode(monkeypatch):
    import plasticnet.train.a2c as a2c

    monkeypatch.setattr(a2c, "fused_closed_loop", lambda *a, **k: pytest.fail("the fused loop ran"))
    for agent in (RecurrentAgent(17, 4, "modplast", 6, fused=False), RecurrentAgent(17, 4, "rnn", 6)):
        episode = rollout(agent, MazeEnv(2, "paper-2019", seed=0), torch.Generator().manual_seed(0))
        assert episode.hidden.shape == (200, 2, 6) and episode.hidden.requires_grad


TRAIN = ["--batch-size", "2", "--hidden-size", "6", "--log-every", "2", "--save-every", "2", "--no-progress"]


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task, preset", [("maze", "paper-2019"), ("maze", "simplemaze"), ("maze", "paper-2018"),
                                          ("cue-reward", "paper")])
def test_train_command_writes_the_run_directory(task, preset, tmp_path):
    run = tmp_path / "run"
    assert main(["train", task, "--preset", preset, "--iterations", "4", "--out", str(run), *TRAIN]) == 0
    points = _metrics(run)
    assert [p["iteration"] for p in points] == [2, 4]
    assert all({"reward", "loss", "grad_norm"} <= set(p) for p in points)
    assert json.loads((run / "config.json").read_text())["preset"] == preset


def test_resume_continues_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["train", "cue-reward", "--burn-in", "1", *TRAIN]
    assert main(args + ["--iterations", "6", "--out", str(straight)]) == 0
    assert main(args + ["--iterations", "4", "--out", str(split)]) == 0
    assert main(["train", "cue-reward", "--resume", str(split), "--iterations", "6", "--no-progress"]) == 0
    for p, q in zip(_metrics(straight), _metrics(split)):
        assert p["reward"] == q["reward"] and p["loss"] == pytest.approx(q["loss"], rel=1e-5)
    seconds = [p["seconds"] for p in _metrics(split)]
    assert seconds == sorted(seconds)  # the clock goes on from the checkpoint's time


def test_animate_maze_writes_a_gif_of_the_episode(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "maze", "--iterations", "1", "--out", str(run), *TRAIN]) == 0
    gif = tmp_path / "maze.gif"
    assert main(["animate", "maze", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(gif)]) == 0
    from PIL import Image

    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 201  # the start and each of the 200 steps


def test_cue_reward_modulator_figure(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "cue-reward", "--preset", "paper-modplast", "--iterations", "1", "--out", str(run),
                 *TRAIN]) == 0
    exported = tmp_path / "agent.pt"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    png = tmp_path / "modulator.png"
    assert main(["plot", str(exported), "--figure", "modulator", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("task", ["maze", "cue-reward"])
def test_eval_reports_the_mean_reward_of_fresh_episodes(task, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", task, "--iterations", "1", "--out", str(run), *TRAIN]) == 0
    capsys.readouterr()
    results = []
    for greedy in ([], [], ["--greedy"]):
        assert main(["eval", task, "--checkpoint", str(run), "--episodes", "5", "--batch-size", "2", "--json",
                     *greedy]) == 0
        results.append(json.loads(capsys.readouterr().out))
    sampled, again, greedy = results
    assert sampled == again  # the same evaluation episodes and actions each time
    assert (sampled["task"], sampled["episodes"], sampled["greedy"], greedy["greedy"]) == (task, 5, False, True)
    assert sampled["ci95"] == pytest.approx(1.96 * sampled["std"] / math.sqrt(5))


def test_eval_agrees_with_a_rollout_by_hand(tmp_path):
    """One batch of evaluation episodes is one rollout of the trained agent on the evaluation seeds."""
    from plasticnet.train.a2c import EVAL_SEED_OFFSET, evaluate_agent, load_agent

    run = tmp_path / "run"
    assert main(["train", "cue-reward", "--iterations", "2", "--out", str(run), *TRAIN]) == 0
    _, cfg, agent = load_agent(run)
    env = cfg.make_env(6, "cpu", seed=EVAL_SEED_OFFSET + 3)
    with torch.no_grad():
        totals = rollout(agent, env, torch.Generator().manual_seed(EVAL_SEED_OFFSET + 3), greedy=True).rewards.sum(0)
    result = evaluate_agent(run, episodes=6, batch_size=6, seed=3, greedy=True)
    assert result["mean_reward"] == pytest.approx(totals.double().mean().item())
    assert result["std"] == pytest.approx(totals.double().std().item())


def test_eval_refuses_another_task_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "cue-reward", "--iterations", "1", "--out", str(run), *TRAIN]) == 0
    assert main(["eval", "maze", "--checkpoint", str(run)]) == 2
    assert "use `plasticnet eval cue-reward`" in _error_line(capsys)


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, fragment", [
    (["train", "maze", "--agent", "lstm"], "unknown agent 'lstm'"),
    (["train", "maze", "--env", "paper-2020"], "unknown env 'paper-2020'"),
    (["train", "cue-reward", "--env", "paper-2019"], "unknown env 'paper-2019'"),
    (["train", "maze", "--baseline", "mean"], "unknown baseline 'mean'"),
    (["train", "maze", "--agent", "rnn", "--fanout"], "has none"),
    (["train", "maze", "--agent", "modul", "--rule", "oja"], "needs a bounded additive rule"),
    (["train", "maze", "--gamma", "1.5"], "gamma"),
    (["train", "maze", "--alpha", "diagonal"], "unknown alpha 'diagonal'"),
    (["train", "cue-reward", "--rule", "stdp"], "unknown rule 'stdp'"),
    (["animate", "maze", "--checkpoint", "/nonexistent/run"], "no checkpoint"),
    (["animate", "cue-reward", "--checkpoint", "x"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(argv, fragment, capsys, tmp_path):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exc:  # argparse's own errors exit; ours return 2
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    assert fragment in _error_line(capsys)


def test_animate_refuses_the_wrong_kind_of_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "cue-reward", "--preset", "paper-rnn", "--iterations", "1", "--out", str(run), *TRAIN]) == 0
    assert main(["animate", "maze", "--checkpoint", str(run), "--out", str(tmp_path / "x.gif")]) == 2
    assert "needs a maze checkpoint" in _error_line(capsys)
    assert main(["plot", str(run), "--figure", "modulator", "--out", str(tmp_path / "x.png")]) == 2
    assert "no neuromodulator" in _error_line(capsys)


def test_moving_average_as_the_papers_smooth():
    from plasticnet.plot import _moving_average

    torch.testing.assert_close(torch.from_numpy(_moving_average(np.array([[1.0, 2.0, 3.0, 4.0]]), 2)),
                               torch.tensor([[1.0, 1.5, 2.5, 3.5]], dtype=torch.float64))
    assert _moving_average(np.array([2.0, 4.0]), 5).tolist() == [2.0, 3.0]


def test_plot_against_wall_clock(tmp_path):
    from plasticnet.plot import curves

    runs = []
    for preset, seed in (("paper-modplast", 0), ("paper-rnn", 0), ("paper-rnn", 1)):
        runs.append(tmp_path / f"{preset}-{seed}")
        assert main(["train", "cue-reward", "--preset", preset, "--seed", str(seed), "--iterations", "6",
                     "--out", str(runs[-1]), *TRAIN]) == 0
    out = tmp_path / "curves.png"
    assert main(["plot", *map(str, runs), "--x", "seconds", "--smooth", "2", "--stat", "median",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Seeds that ran at different speeds are compared at the same times, not at the same logged index.
    (_, grid, values), = [c for c in curves(runs, "reward", "seconds") if "rnn" in c[0]]
    first, second = _metrics(runs[1]), _metrics(runs[2])
    assert grid[-1] <= min(first[-1]["seconds"], second[-1]["seconds"])
    expected = np.interp(grid, [p["seconds"] for p in second], [p["reward"] for p in second])
    np.testing.assert_allclose(values[1], expected)
    # The same on CPU time, the fair axis for runs that shared a machine unevenly.
    (_, grid, values), = [c for c in curves(runs, "reward", "cpu_seconds") if "rnn" in c[0]]
    assert grid.tolist() == [p["cpu_seconds"] for p in first if p["cpu_seconds"] <= second[-1]["cpu_seconds"]]
    expected = np.interp(grid, [p["cpu_seconds"] for p in second], [p["reward"] for p in second])
    np.testing.assert_allclose(values[1], expected)
    assert main(["plot", *map(str, runs), "--x", "cpu_seconds", "--out", str(out)]) == 0
    # Without --metric the curves are of the first metric logged after the time columns.
    from plasticnet.plot import default_metric
    assert list(_metrics(runs[0])[0])[:4] == ["iteration", "seconds", "cpu_seconds", "reward"]
    assert default_metric(runs[0]) == "reward"


def test_the_heads_as_one_product_are_the_two_heads():
    torch.manual_seed(0)
    agent = RecurrentAgent(17, 4, "modplast", 12)
    h = torch.randn(5, 3, 12)
    logits, values = agent.heads(h)
    torch.testing.assert_close(logits, agent.h2o(h))
    torch.testing.assert_close(values, agent.value(h))
