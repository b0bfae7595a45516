"""Batched tensor environments of the meta-RL experiments: the grid maze and the cue-reward task.

Both follow the protocol of :class:`~plasticnet.envs.base.BatchedEnv` (``reset() -> obs``,
``step(action) -> (obs, reward, done)``, B synchronous fixed-length episodes on one device). Gymnasium adapters live in
:mod:`plasticnet.envs.gym`, imported on demand so that the tensor environments do not need Gymnasium.
"""

from plasticnet.envs.base import BatchedEnv
from plasticnet.envs.cue_reward import CUE_REWARD_PRESETS, CueRewardConfig, CueRewardEnv
from plasticnet.envs.maze import MAZE_PRESETS, MazeConfig, MazeEnv, maze_walls

__all__ = [
    "BatchedEnv",
    "MazeEnv", "MazeConfig", "MAZE_PRESETS", "maze_walls",
    "CueRewardEnv", "CueRewardConfig", "CUE_REWARD_PRESETS",
]
