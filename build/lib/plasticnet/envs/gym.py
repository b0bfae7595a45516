"""Gymnasium adapters of the batched tensor environments: numpy in, numpy out.

* :class:`MazeVectorEnv`, :class:`CueRewardVectorEnv`: ``gymnasium.vector.VectorEnv`` over all B episodes. Every
  episode ends at the same step (fixed length), so autoreset is ``SAME_STEP``: the step that ends the episodes returns
  the first observation of the next ones and puts the last one in ``infos["final_obs"]`` (a (B, obs_size) array,
  with the mask ``infos["_final_obs"]``).
* :class:`MazeGymEnv`, :class:`CueRewardGymEnv`: one episode (B = 1) as a ``gymnasium.Env``, which
  ``gymnasium.utils.env_checker.check_env`` accepts.

The fixed episode end is reported as ``terminated``, not ``truncated``: the papers treat it as terminal (returns are
computed with R_T = 0 and no bootstrapping, backpropamine.md §1 item 4), and the time is part of the observation.
"""

import numpy as np
import torch
from gymnasium import Env, spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from plasticnet.envs.base import EPISODE_SEED_RANGE, BatchedEnv
from plasticnet.envs.cue_reward import CueRewardConfig, CueRewardEnv
from plasticnet.envs.maze import MazeConfig, MazeEnv
from plasticnet.errors import ConfigError


def _spaces(env: BatchedEnv) -> tuple[spaces.Box, spaces.Discrete]:
    low, high = env.observation_bounds()
    return spaces.Box(low.numpy(), high.numpy(), dtype=np.float32), spaces.Discrete(env.n_actions)


def _check_options(options) -> None:
    if options:
        raise ConfigError(f"these environments take no reset options, got {sorted(options)}; pass options=None")


class TensorVectorEnv(VectorEnv):
    """A :class:`~plasticnet.envs.base.BatchedEnv` as a Gymnasium vector env; ``reset(seed=s)`` re-seeds its
    generator, and each autoreset draws the next episodes from it."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env: BatchedEnv):
        self.env = env
        self.num_envs = env.batch_size
        self.single_observation_space, self.single_action_space = _spaces(env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        _check_options(options)
        return self.env.reset(seed=seed).cpu().numpy(), {}

    def step(self, actions):
        action = torch.as_tensor(np.asarray(actions), dtype=torch.int64, device=self.env.device)
        obs, reward, done = self.env.step(action)
        obs = obs.cpu().numpy()
        infos = {}
        if done:
            infos = {"final_obs": obs, "_final_obs": np.ones(self.num_envs, dtype=bool)}
            obs = self.env.reset().cpu().numpy()
        terminated = np.full(self.num_envs, done)
        truncated = np.zeros(self.num_envs, dtype=bool)
        return obs, reward.cpu().numpy(), terminated, truncated, infos


class TensorGymEnv(Env):
    """One episode of a :class:`~plasticnet.envs.base.BatchedEnv` (built with B = 1) as a Gymnasium env.

    Each reset draws the episode seed from Gymnasium's ``np_random``, so ``reset(seed=s)`` follows Gymnasium's seeding
    rules exactly.
    """

    metadata = {"render_modes": []}

    def __init__(self, env: BatchedEnv):
        if env.batch_size != 1:
            raise ConfigError(f"TensorGymEnv runs one episode: build the env with batch_size=1, not {env.batch_size}")
        self.env = env
        self.observation_space, self.action_space = _spaces(env)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        _check_options(options)
        super().reset(seed=seed)
        episode_seed = self.np_random.integers(EPISODE_SEED_RANGE)
        return self.env.reset(episode_seeds=[episode_seed])[0].cpu().numpy(), {}

    def step(self, action):
        obs, reward, done = self.env.step(torch.tensor([int(action)], device=self.env.device))
        return obs[0].cpu().numpy(), float(reward[0]), done, False, {}


class MazeVectorEnv(TensorVectorEnv):
    """``num_envs`` grid mazes (:class:`~plasticnet.envs.maze.MazeEnv`) as a Gymnasium vector env."""

    def __init__(self, num_envs: int, config: MazeConfig | str = "paper-2019",
                 *, device: str | torch.device = "cpu", seed: int | None = None):
        super().__init__(MazeEnv(num_envs, config, device=device, seed=seed))


class CueRewardVectorEnv(TensorVectorEnv):
    """``num_envs`` cue-reward tasks (:class:`~plasticnet.envs.cue_reward.CueRewardEnv`) as a Gymnasium vector env."""

    def __init__(self, num_envs: int, config: CueRewardConfig | str = "paper",
                 *, device: str | torch.device = "cpu", seed: int | None = None):
        super().__init__(CueRewardEnv(num_envs, config, device=device, seed=seed))


class MazeGymEnv(TensorGymEnv):
    """One grid maze as a ``gymnasium.Env``."""

    def __init__(self, config: MazeConfig | str = "paper-2019", *, device: str | torch.device = "cpu"):
        super().__init__(MazeEnv(1, config, device=device))


class CueRewardGymEnv(TensorGymEnv):
    """One cue-reward task as a ``gymnasium.Env``."""

    def __init__(self, config: CueRewardConfig | str = "paper", *, device: str | torch.device = "cpu"):
        super().__init__(CueRewardEnv(1, config, device=device))
