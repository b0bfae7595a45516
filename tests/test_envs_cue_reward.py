"""The batched cue-reward task against backpropamine.md §4.1 and §7 P12/P13."""

import dataclasses

import pytest
import torch

from plasticnet.envs import CUE_REWARD_PRESETS, CueRewardEnv
from plasticnet.errors import ConfigError

PAPER = CUE_REWARD_PRESETS["paper"]
C = PAPER.cue_size
GO, BLANK = "go", "blank"


def make_env(batch_size: int = 1, seed: int = 0, **changes) -> CueRewardEnv:
    return CueRewardEnv(batch_size, dataclasses.replace(PAPER, **changes), seed=seed)


def decode(obs: torch.Tensor, cues: torch.Tensor) -> list:
    """What one observation shows: a cue index, GO or BLANK, read back from the input vector alone."""
    if obs[C] == 1:
        assert not obs[:C].any()
        return GO
    if not obs[:C].any():
        return BLANK
    matches = [i for i, cue in enumerate(cues) if torch.equal(obs[:C], cue)]
    assert len(matches) == 1
    return matches[0]


def rollout(env: CueRewardEnv, policy):
    """Run one episode; ``policy(t, obs)`` gives the (B,) actions. Returns observations, actions, rewards, dones."""
    observations, actions, rewards, dones = [env.reset()], [], [], []
    for t in range(env.episode_length):
        action = policy(t, observations[-1])
        obs, reward, done = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        dones.append(done)
    return torch.stack(observations), torch.stack(actions), torch.stack(rewards), dones


def split_trials(shown: list) -> list:
    """Cut one episode's decoded stimuli into trials: each ends with GO and the blank after it (or the episode end)."""
    trials, current = [], []
    for i, item in enumerate(shown):
        current.append(item)
        if i > 0 and shown[i - 1] == GO:
            trials.append(current)
            current = []
    return trials + ([current] if current else [])


def random_actions(seed: int, batch_size: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda t, obs: torch.randint(0, 2, (batch_size,), generator=generator)


def test_paper_preset():
    assert (PAPER.cue_size, PAPER.num_cues, PAPER.episode_length, PAPER.reward, PAPER.response_penalty,
            PAPER.flip_prob) == (20, 4, 120, 1.0, 0.0, 0.0)
    env = CueRewardEnv(3)
    assert (env.obs_size, env.n_actions, env.episode_length) == (27, 2, 120)


def test_easy_preset_shows_one_of_two_cues_per_trial():
    """sr/request_easy.json: two cues of two bits, trials [blank, cue, 0 or 1 blank, Go, blank], 75 steps."""
    env = CueRewardEnv(50, "easy", seed=0)
    observations, _, _, _ = rollout(env, random_actions(0, 50))
    assert (env.obs_size, env.episode_length, observations.shape) == (9, 75, (76, 50, 9))
    lengths = set()
    for b in range(50):
        shown = [("go" if c == env.go_code else "blank" if c == env.blank_code else c)
                 for c in env.stimulus[b, :75].tolist()]
        for trial in split_trials(shown)[:-1]:
            cues = [item for item in trial if item not in (GO, BLANK)]
            assert trial[0] == BLANK and trial[-2:] == [GO, BLANK] and len(cues) == 1
            lengths.add(len(trial))
    assert lengths == {4, 5}


def test_cues_are_distinct_random_sign_vectors():
    env = make_env(batch_size=200)
    env.reset()
    assert env.cues.shape == (200, 4, 20)
    assert set(env.cues.unique().tolist()) == {-1.0, 1.0}
    assert all(len(set(map(tuple, episode.tolist()))) == 4 for episode in env.cues)
    assert set(env.target.tolist()) == {0, 1, 2, 3}
    assert 0.45 < (env.cues > 0).float().mean() < 0.55


def test_distinct_cues_when_there_are_barely_enough_patterns():
    env = make_env(batch_size=300, cue_size=2)
    env.reset()
    patterns = [set(map(tuple, episode.tolist())) for episode in env.cues]
    assert all(p == {(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)} for p in patterns)
    orders = {tuple(map(tuple, episode.tolist())) for episode in env.cues}
    assert len(orders) == 24  # every ordering of the four patterns shows up


def test_trial_structure_seen_in_the_observations():
    env = make_env(batch_size=40, seed=1)
    observations, _, _, dones = rollout(env, random_actions(0, 40))
    assert dones == [False] * 119 + [True]
    lengths, blank_counts, with_target = set(), set(), []
    for b in range(40):
        shown = [decode(obs, env.cues[b]) for obs in observations[:120, b]]
        trials = split_trials(shown)
        for trial in trials[:-1]:
            assert trial[0] == BLANK and trial[-2] == GO and trial[-1] == BLANK
            middle = trial[1:-2]
            cues = [item for item in middle if item != BLANK]
            assert len(cues) == 2 and len(set(cues)) == 2
            assert GO not in middle
            lengths.add(len(trial))
            blank_counts.add(len(middle) - 2)
            with_target.append(int(env.target[b]) in cues)
        last = trials[-1]
        assert last[0] == BLANK and len(last) <= 8 and GO not in last[1:-2]
        assert sum(len(trial) for trial in trials) == 120
    assert lengths == {5, 6, 7, 8}
    assert blank_counts == {0, 1, 2, 3}
    assert 0.4 < sum(with_target) / len(with_target) < 0.6


def test_observation_index_by_index():
    env = make_env(batch_size=1, seed=2)
    obs = env.reset()[0]
    assert obs.tolist() == [0.0] * 21 + [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # blank; no previous action at t=0
    obs, reward, _ = env.step(torch.tensor([1]))
    obs = obs[0]
    shown = decode(obs, env.cues[0])
    expected_stimulus = [0.0] * 21
    if shown == GO:
        expected_stimulus[20] = 1.0
    elif shown != BLANK:
        expected_stimulus[:20] = env.cues[0, shown].tolist()
    assert obs.tolist() == pytest.approx(expected_stimulus + [1.0, 1 / 120, float(reward), 0.0, 0.0, 1.0])
    obs, reward, _ = env.step(torch.tensor([0]))
    assert obs[0, 21:].tolist() == pytest.approx([1.0, 2 / 120, float(reward), 0.0, 1.0, 0.0])


def _reward_rule(env, observations, actions, b, penalty=0.0):
    """The rewards one episode should get, computed from what the agent saw and did."""
    shown = [decode(obs, env.cues[b]) for obs in observations[:-1, b]]
    expected, target_seen = [], False
    for item, action in zip(shown, actions[:, b].tolist()):
        if item == int(env.target[b]):
            target_seen = True
        reward = -penalty * action
        if item == GO:
            reward += 1.0 if action == int(target_seen) else -1.0
            target_seen = False
        expected.append(reward)
    return shown, expected


@pytest.mark.parametrize("penalty", [0.0, 0.25])
def test_rewards_follow_the_go_rule(penalty):
    env = make_env(batch_size=16, seed=3, response_penalty=penalty)
    observations, actions, rewards, _ = rollout(env, random_actions(1, 16))
    for b in range(16):
        shown, expected = _reward_rule(env, observations, actions, b, penalty)
        assert rewards[:, b].tolist() == pytest.approx(expected)
        go_steps = [t for t, item in enumerate(shown) if item == GO]
        assert go_steps and all(shown[t + 1] == BLANK for t in go_steps if t + 1 < 120)
    # The reward comes back as an input on the next step.
    assert torch.equal(observations[1:, :, C + 3], rewards)


def _oracle(env, flip_sign=False):
    """Responds at Go exactly when the target was shown in the current trial, reading only the observations."""
    seen = torch.zeros(env.batch_size, dtype=torch.bool)

    def policy(t, obs):
        nonlocal seen
        target_cue = env.cues[torch.arange(env.batch_size), env.target]
        seen = seen | (obs[:, :C] == target_cue).all(dim=1)
        go = obs[:, C] == 1
        action = (go & (seen != flip_sign)).long()
        seen = seen & ~go
        return action

    return policy


def test_perfect_and_inverted_policies():
    env = make_env(batch_size=20, seed=4)
    observations, _, rewards, _ = rollout(env, _oracle(env))
    go_steps = observations[:-1, :, C] == 1
    assert torch.equal(rewards, go_steps.float())
    assert 15 <= rewards.sum(0).min() and rewards.sum(0).max() <= 24
    observations, _, rewards, _ = rollout(env, _oracle(env, flip_sign=True))
    assert torch.equal(rewards, -(observations[:-1, :, C] == 1).float())


def test_flip_probability():
    env = make_env(batch_size=20, seed=5, flip_prob=1.0)
    observations, _, rewards, _ = rollout(env, _oracle(env))
    assert torch.equal(rewards, -(observations[:-1, :, C] == 1).float())
    env = make_env(batch_size=200, seed=5, flip_prob=0.5)
    _, _, rewards, _ = rollout(env, _oracle(env))
    flipped = (rewards == -1).sum() / (rewards != 0).sum()
    assert 0.45 < flipped < 0.55


def test_short_episode_and_reset():
    env = make_env(batch_size=3, episode_length=4)
    _, _, _, dones = rollout(env, random_actions(0, 3))
    assert dones == [False, False, False, True]
    with pytest.raises(ConfigError, match="reset"):
        env.step(torch.zeros(3, dtype=torch.int64))
    assert env.reset()[:, 22].tolist() == [0.0, 0.0, 0.0]


def test_batch_equals_each_episode_alone():
    seeds = torch.tensor([5, 0, 2**32 - 1, 5, 31337])
    batch = CueRewardEnv(len(seeds), "paper")
    alone = [CueRewardEnv(1, "paper") for _ in seeds]
    actions = torch.randint(0, 2, (120, len(seeds)), generator=torch.Generator().manual_seed(0))
    batch_obs = [batch.reset(episode_seeds=seeds)]
    alone_obs = [torch.cat([env.reset(episode_seeds=seeds[i:i + 1]) for i, env in enumerate(alone)])]
    batch_rewards, alone_rewards = [], []
    for action in actions:
        obs, reward, _ = batch.step(action)
        results = [env.step(action[i:i + 1]) for i, env in enumerate(alone)]
        batch_obs.append(obs)
        batch_rewards.append(reward)
        alone_obs.append(torch.cat([o for o, _, _ in results]))
        alone_rewards.append(torch.cat([r for _, r, _ in results]))
    assert torch.equal(torch.stack(batch_obs), torch.stack(alone_obs))
    assert torch.equal(torch.stack(batch_rewards), torch.stack(alone_rewards))
    assert torch.equal(batch.stimulus[0], batch.stimulus[3])


def test_seed_determinism():
    first, second, other = (rollout(CueRewardEnv(6, seed=seed), random_actions(7, 6)) for seed in (11, 11, 12))
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])
    assert not torch.equal(first[0], other[0])


def test_step_never_reads_tensors_back_to_the_host(monkeypatch):
    env = make_env(batch_size=4, flip_prob=0.3)
    env.reset()

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in step()")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for _ in range(20):
        env.step(torch.tensor([0, 1, 0, 1]))


def test_device_is_honoured():
    env = CueRewardEnv(2, device="cpu")
    obs = env.reset()
    _, reward, _ = env.step(torch.ones(2, dtype=torch.int64))
    for tensor in (obs, reward, env.cues, env.stimulus, env.episode_seeds):
        assert tensor.device == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_the_same_episodes_as_cpu_without_host_syncs(steps_match_on_cuda):
    seeds = torch.arange(32) * 104729
    actions = torch.randint(0, 2, (120, 32), generator=torch.Generator().manual_seed(0))
    config = dataclasses.replace(PAPER, flip_prob=0.3, response_penalty=0.1)
    cpu, cuda = CueRewardEnv(32, config), CueRewardEnv(32, config, device="cuda")
    cpu.reset(episode_seeds=seeds)
    cuda.reset(episode_seeds=seeds)
    assert torch.equal(cpu.stimulus, cuda.stimulus.cpu()) and torch.equal(cpu.cues, cuda.cues.cpu())
    steps_match_on_cuda(cpu, cuda, actions)


@pytest.mark.parametrize("changes, message", [
    ({"cue_size": 0}, "cue_size"), ({"cue_size": 32}, "cue_size"), ({"num_cues": 1}, "num_cues"),
    ({"cue_size": 2, "num_cues": 5}, "num_cues"), ({"episode_length": 0}, "episode_length"),
    ({"flip_prob": 1.5}, "flip_prob"),
])
def test_bad_configs_raise_a_one_line_config_error(changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        dataclasses.replace(PAPER, **changes)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="preset"):
        CueRewardEnv(2, "Paper")
