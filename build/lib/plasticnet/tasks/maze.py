"""The grid maze of both papers (backpropamine.md §2-3, differentiable-plasticity.md §5): an agent must find an
invisible reward cell, is teleported after each hit, and should head straight back to it. Trained with A2C
(:mod:`plasticnet.train.a2c`); presets for the papers' conditions in ``configs/maze.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..envs import MAZE_PRESETS, MazeEnv
from ..train.a2c import A2CConfig, A2CExperiment, add_eval_arguments, evaluate

__all__ = ["MazeTrainConfig", "A2CExperiment", "add_eval_arguments", "evaluate"]


@dataclass
class MazeTrainConfig(A2CConfig):
    env: str = "paper-2019"

    env_presets: ClassVar[tuple] = tuple(MAZE_PRESETS)

    def make_env(self, batch_size: int, device, seed: int | None) -> MazeEnv:
        return MazeEnv(batch_size, self.env, device=device, seed=seed)


def add_animate_arguments(parser) -> None:
    from pathlib import Path

    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="a run directory, its checkpoint.pt, or an exported model")
    parser.add_argument("--out", type=Path, default=Path("maze.gif"), help="GIF to write (default maze.gif)")
    parser.add_argument("--episodes", type=int, default=1, help="successive episodes to show (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes and of the agent's actions")
    parser.add_argument("--device", default="cpu")


def animate(args) -> int:
    """``plasticnet animate maze``: a GIF of the agent in a checkpoint, as the papers' animations."""
    from ..pictures import maze_gif

    print(f"wrote {maze_gif(args.checkpoint, args.out, args.episodes, args.seed, args.device)}")
    return 0
