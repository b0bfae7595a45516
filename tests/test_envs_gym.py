"""Gymnasium adapters: check_env on the single-episode envs, spaces and SAME_STEP autoreset on the vector envs."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from plasticnet.envs import CUE_REWARD_PRESETS, MAZE_PRESETS, CueRewardEnv, MazeEnv
from plasticnet.envs.gym import (CueRewardGymEnv, CueRewardVectorEnv, MazeGymEnv, MazeVectorEnv, TensorGymEnv,
                                 TensorVectorEnv)
from plasticnet.errors import ConfigError


@pytest.mark.parametrize("make", [lambda: MazeGymEnv("paper-2018"), lambda: MazeGymEnv("paper-2019"),
                                  lambda: MazeGymEnv("simplemaze"), lambda: CueRewardGymEnv("paper")],
                         ids=["paper-2018", "paper-2019", "simplemaze", "cue-reward"])
def test_check_env_passes_without_warnings(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make(), skip_render_check=True)


def test_single_env_episode():
    env = MazeGymEnv(dataclasses.replace(MAZE_PRESETS["paper-2018"], episode_length=5))
    obs, info = env.reset(seed=3)
    assert obs.shape == (17,) and obs.dtype == np.float32 and info == {}
    for t in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert isinstance(reward, float) and terminated == (t == 4) and truncated is False
        assert obs in env.observation_space
    assert obs[15] == 5  # raw step number in the 2018 layout


@pytest.mark.parametrize("make, obs_size, n_actions", [
    (lambda n: MazeVectorEnv(n, "paper-2019", seed=0), 17, 4),
    (lambda n: CueRewardVectorEnv(n, "paper", seed=0), 27, 2),
])
def test_vector_spaces(make, obs_size, n_actions):
    env = make(5)
    assert env.num_envs == 5
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.single_observation_space.shape == (obs_size,) and env.single_observation_space.dtype == np.float32
    assert env.single_action_space == spaces.Discrete(n_actions)
    assert env.observation_space.shape == (5, obs_size)
    assert env.action_space == spaces.MultiDiscrete([n_actions] * 5)


@pytest.mark.parametrize("preset, time_index, final_time", [("paper-2019", 11, 1.0), ("paper-2018", 15, 3.0)])
def test_vector_autoreset_at_the_episode_end(preset, time_index, final_time):
    env = MazeVectorEnv(4, dataclasses.replace(MAZE_PRESETS[preset], episode_length=3), seed=1)
    obs, _ = env.reset()
    first_rewards = env.env.reward_pos.clone()
    for t in range(3):
        obs, rewards, terminated, truncated, infos = env.step(env.action_space.sample())
        assert rewards.shape == (4,) and rewards.dtype == np.float32
        assert terminated.tolist() == [t == 2] * 4 and not truncated.any()
        assert obs in env.observation_space
    assert infos["_final_obs"].all()
    assert infos["final_obs"][:, time_index].tolist() == [final_time] * 4
    assert obs[:, time_index].tolist() == [0.0] * 4
    assert not torch.equal(env.env.reward_pos, first_rewards)
    obs, _, terminated, _, infos = env.step(env.action_space.sample())
    assert not terminated.any() and infos == {}


def test_vector_env_matches_the_tensor_env():
    config = dataclasses.replace(CUE_REWARD_PRESETS["paper"], episode_length=10)
    vector, tensor = CueRewardVectorEnv(3, config, seed=7), CueRewardEnv(3, config, seed=7)
    obs, _ = vector.reset()
    assert np.array_equal(obs, tensor.reset().numpy())
    actions = np.random.default_rng(0).integers(0, 2, (9, 3))
    for action in actions:
        obs, rewards, _, _, _ = vector.step(action)
        expected_obs, expected_rewards, _ = tensor.step(torch.as_tensor(action))
        assert np.array_equal(obs, expected_obs.numpy()) and np.array_equal(rewards, expected_rewards.numpy())
    vector.reset(seed=7)
    assert np.array_equal(vector.reset(seed=7)[0], CueRewardEnv(3, config, seed=7).reset().numpy())


def test_adapter_argument_errors():
    with pytest.raises(ConfigError, match="batch_size=1"):
        TensorGymEnv(MazeEnv(2))
    with pytest.raises(ConfigError, match="options"):
        TensorVectorEnv(MazeEnv(2)).reset(options={"start": (1, 1)})
