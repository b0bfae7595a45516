"""The grid maze of both papers' meta-RL experiments, B episodes at once as tensors.

One class covers the three variants of the reference code, which differ only in the details held by
:class:`MazeConfig` (the presets in :data:`MAZE_PRESETS`):

* ``"paper-2018"``: DP-2018 ``maze/maze.py`` (differentiable-plasticity.md §5.1, §5.2, §8 item 12): 9x9, 250 steps,
  wall penalty 0.1, the reward cell may be the centre, the teleport may land on the reward cell, raw step number as
  the time input and no previous-action input;
* ``"paper-2019"``: Backpropamine ``maze/batch.py`` as run (backpropamine.md §3.1, DP §5.9): 13x13, 200 steps;
* ``"simplemaze"``: Backpropamine ``simplemaze/maze.py`` (backpropamine.md §2.1, §9.1): 11x11, 200 steps.

The two 2019 variants share everything but the size: reward cell never the centre, teleport never onto the reward cell,
time input ``t / episode_length``, previous action one-hot with action 0 set at ``t = 0`` (backpropamine.md §7 P12,
P14).

Dynamics of one step, per episode (backpropamine.md §2.1, DP §5.2): actions 0 up (row - 1), 1 down, 2 left
(col - 1), 3 right. Moving into a wall or pillar leaves the agent in place and costs ``wall_penalty``. Then, if the
agent stands on the invisible reward cell, it gains ``reward`` and is teleported. Reaching the reward cell by teleport
pays nothing; standing on it at the next step pays (even after a wall bump: 10 - 0.1 = 9.9 in paper-2018).
"""

from dataclasses import dataclass

import torch

from plasticnet.envs.base import BatchedEnv, resolve_config
from plasticnet.envs.streams import random_below
from plasticnet.errors import ConfigError

_REWARD_CELL_STREAM = 1
_TELEPORT_STREAM = 2

_REWARD_CELLS = ("free", "not-centre", "periphery")
_TELEPORTS = ("anywhere", "not-reward", "centre")
_OBSERVATIONS = ("dp2018", "backpropamine")

# Row and column offsets of the actions up, down, left, right.
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass(frozen=True)
class MazeConfig:
    """One maze variant. Start from a preset and change fields with ``dataclasses.replace``.

    * ``size``: side length L, odd and at least 5 (free cells 41 / 65 / 97 for L = 9 / 11 / 13).
    * ``episode_length``: steps per episode.
    * ``reward``: gained on the reward cell. ``wall_penalty``: lost for each bump into a wall (a positive number).
    * ``reward_cells``: where the reward cell is drawn, uniformly: ``"free"`` any free cell (DP-2018 ``--rp 0``),
      ``"not-centre"`` any free cell but the centre (2019), ``"periphery"`` free cells in rows or columns 1 and L-2
      (DP-2018 ``--rp 1``).
    * ``teleport``: where a hit sends the agent: ``"anywhere"`` uniform over free cells, the reward cell included
      (DP-2018 ``--randstart 1``), ``"not-reward"`` uniform over the other free cells (2019), ``"centre"`` (DP-2018
      ``--randstart 0``).
    * ``observation``: the input layout, ``"dp2018"`` or ``"backpropamine"`` (see :class:`MazeEnv`).
    """

    size: int
    episode_length: int
    reward: float
    wall_penalty: float
    reward_cells: str
    teleport: str
    observation: str

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 5 or self.size % 2 == 0:
            raise ConfigError(f"maze size must be an odd integer >= 5 (the papers use 9, 11, 13), got {self.size!r}")
        if not isinstance(self.episode_length, int) or self.episode_length < 1:
            raise ConfigError(f"maze episode_length must be a positive integer, got {self.episode_length!r}")
        for name, allowed in (("reward_cells", _REWARD_CELLS), ("teleport", _TELEPORTS),
                              ("observation", _OBSERVATIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"maze {name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")


MAZE_PRESETS = {
    "paper-2018": MazeConfig(size=9, episode_length=250, reward=10.0, wall_penalty=0.1, reward_cells="free",
                             teleport="anywhere", observation="dp2018"),
    "paper-2019": MazeConfig(size=13, episode_length=200, reward=10.0, wall_penalty=0.0, reward_cells="not-centre",
                             teleport="not-reward", observation="backpropamine"),
    "simplemaze": MazeConfig(size=11, episode_length=200, reward=10.0, wall_penalty=0.0, reward_cells="not-centre",
                             teleport="not-reward", observation="backpropamine"),
}


def maze_walls(size: int) -> torch.Tensor:
    """The (size, size) bool wall map: border walls, pillars where row and column are both even, centre cleared.

    (backpropamine.md §2.1, differentiable-plasticity.md §5.1.)
    """
    index = torch.arange(size)
    border = (index == 0) | (index == size - 1)
    even = index % 2 == 0
    walls = border[:, None] | border[None, :] | (even[:, None] & even[None, :])
    walls[size // 2, size // 2] = False
    return walls


class MazeEnv(BatchedEnv):
    """B grid-maze episodes stepping together. State: ``agent_pos``, ``reward_pos`` (B, 2) long (row, column).

    Observation (17 values), by ``config.observation``:

    * ``"backpropamine"`` (backpropamine.md §2.1): 0-8 the 3x3 wall map around the agent, row-major (1 = wall;
      index 4, the agent's cell, is 0); 9 zero; 10 bias 1; 11 ``t / episode_length``; 12 previous reward (0 at t=0);
      13-16 previous action one-hot, action 0 at t=0;
    * ``"dp2018"`` (differentiable-plasticity.md §5.2): 0-8 the 3x3 wall map; 9-13 zero; 14 previous reward;
      15 the raw step number ``t``; 16 bias 1.

    The reward cell is invisible: nothing in the observation marks it.
    """

    n_actions = 4

    def __init__(self, batch_size: int, config: MazeConfig | str = "paper-2019",
                 *, device: str | torch.device = "cpu", seed: int | None = None):
        config = resolve_config(config, MAZE_PRESETS, MazeConfig)
        super().__init__(batch_size, config.episode_length, device, seed)
        self.config = config
        self.walls = maze_walls(config.size).to(self.device)
        self.free_cells = self.walls.logical_not().nonzero()
        self.centre = torch.full((2,), config.size // 2, dtype=torch.int64, device=self.device)
        self._reward_candidates = self.free_cells[_reward_cell_mask(self.free_cells, config)]
        self._build_tables()
        self._pos = self._reward_cell = None  # flat cell indices, row * size + column, (B,)
        self._teleport_draws = self._teleport_cells = self._prev_reward = self._prev_action = None

    def _build_tables(self) -> None:
        """Per-cell look-up tables, so that a step is a handful of gathers (on a GPU, a handful of kernels).

        Cells are numbered row * size + column. ``_next_cell[c, a]``: where action a leads from c (c itself into a
        wall); ``_penalty[c, a]``: minus the wall penalty where it bumps; ``_obs_table[c, a]``: the observation's
        constant part at c after action a (the 3x3 wall map, the bias and, in the 2019 layout, a's one-hot);
        ``_free_index[c]``: c's index among the free cells.
        Cells on the border are never occupied; their entries are clamped to stay in range and never read.
        """
        size, device = self.config.size, self.device
        cells = torch.arange(size * size, device=device)
        rows, cols = cells // size, cells % size
        moves = torch.tensor(_MOVES, device=device)
        target = ((rows[:, None] + moves[:, 0]).clamp(0, size - 1) * size
                  + (cols[:, None] + moves[:, 1]).clamp(0, size - 1))
        blocked = self.walls.flatten()[target]
        self._next_cell = torch.where(blocked, cells[:, None], target)
        self._penalty = -self.config.wall_penalty * blocked.to(torch.float32)
        offsets = torch.arange(-1, 2, device=device)
        view_rows = (rows[:, None] + offsets.repeat_interleave(3)).clamp(0, size - 1)
        view_cols = (cols[:, None] + offsets.repeat(3)).clamp(0, size - 1)
        self._obs_table = torch.zeros(size * size, self.n_actions, 17, dtype=torch.float32, device=device)
        self._obs_table[:, :, :9] = self.walls[view_rows, view_cols][:, None]
        self._obs_table[:, :, 16 if self.config.observation == "dp2018" else 10] = 1.0
        if self.config.observation == "backpropamine":  # the previous action's one-hot
            self._obs_table[:, :, 13:17] = torch.eye(self.n_actions, device=device)
        self._free_flat = self.free_cells[:, 0] * size + self.free_cells[:, 1]
        self._free_index = torch.full((size * size,), -1, dtype=torch.int64, device=device)
        self._free_index[self._free_flat] = torch.arange(len(self._free_flat), device=device)

    @property
    def agent_pos(self) -> torch.Tensor | None:
        """(B, 2) row and column of each agent."""
        return None if self._pos is None else self._cells_to_positions(self._pos)

    @agent_pos.setter
    def agent_pos(self, positions: torch.Tensor) -> None:
        self._pos = positions[:, 0] * self.config.size + positions[:, 1]

    @property
    def reward_pos(self) -> torch.Tensor | None:
        """(B, 2) row and column of each reward cell."""
        return None if self._reward_cell is None else self._cells_to_positions(self._reward_cell)

    @reward_pos.setter
    def reward_pos(self, positions: torch.Tensor) -> None:
        self._reward_cell = positions[:, 0] * self.config.size + positions[:, 1]
        cells = self._teleport_cells_for(self._reward_cell)
        # One row per step, made once: a step's where() then takes a ready row instead of slicing a column.
        self._teleport_cells = None if cells is None else cells.t().contiguous().unbind(0)

    def _cells_to_positions(self, cells: torch.Tensor) -> torch.Tensor:
        return torch.stack((cells // self.config.size, cells % self.config.size), dim=1)

    @property
    def obs_size(self) -> int:
        return 17

    def observation_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = torch.zeros(17, dtype=torch.float32), torch.ones(17, dtype=torch.float32)
        reward_bound = abs(self.config.reward) + abs(self.config.wall_penalty)
        if self.config.observation == "dp2018":
            low[14], high[14], high[15] = -reward_bound, reward_bound, self.episode_length
        else:
            low[12], high[12] = -reward_bound, reward_bound
        return low, high

    def _start(self) -> None:
        seeds = self.episode_seeds
        pick = random_below(seeds, _REWARD_CELL_STREAM, 0, len(self._reward_candidates))
        self._teleport_draws = self._draw_teleports()
        self.reward_pos = self._reward_candidates[pick]
        self.agent_pos = self.centre.expand(self.batch_size, 2)
        self._prev_reward = torch.zeros(self.batch_size, dtype=torch.float32, device=self.device)
        self._prev_action = torch.zeros(self.batch_size, dtype=torch.int64, device=self.device)

    def _advance(self, action: torch.Tensor) -> torch.Tensor:
        moved = self._next_cell[self._pos, action]
        hit = moved == self._reward_cell
        reward = hit * self.config.reward
        if self.config.wall_penalty:  # the 2019 mazes have none: a gather less per step
            reward = self._penalty[self._pos, action] + reward
        self._pos = torch.where(hit, self._teleport_cells[self.t], moved)
        self._prev_reward = reward
        self._prev_action = action
        return reward

    def _draw_teleports(self) -> torch.Tensor:
        """(B, episode_length) uniform draws, one per step, that :meth:`_teleport_cells_for` turns into cells.

        Drawn at reset so that a step hashes nothing: on a GPU, hashing at every step costs dozens of kernel launches.
        """
        n_choices = len(self.free_cells) - (self.config.teleport == "not-reward")
        counter = torch.arange(self.episode_length, device=self.device)
        return random_below(self.episode_seeds, _TELEPORT_STREAM, counter, n_choices)

    def _teleport_cells_for(self, reward_cell: torch.Tensor) -> torch.Tensor | None:
        """(B, episode_length): where an agent goes if it hits the reward at each step (None before a reset)."""
        if self.config.teleport == "centre":
            return self._free_flat.new_full((self.batch_size, self.episode_length), self.config.size ** 2 // 2)
        if self._teleport_draws is None:
            return None
        pick = self._teleport_draws
        if self.config.teleport == "not-reward":
            # Uniform over the free cells but the reward cell: a draw among F - 1 skips over the reward cell's index.
            pick = pick + (pick >= self._free_index[reward_cell][:, None])
        return self._free_flat[pick]

    def observe(self) -> torch.Tensor:
        obs = self._obs_table[self._pos, self._prev_action]
        if self.config.observation == "dp2018":
            obs[:, 14] = self._prev_reward
            obs[:, 15] = self.t
        else:
            obs[:, 11] = self.t / self.episode_length
            obs[:, 12] = self._prev_reward
        return obs


def _reward_cell_mask(cells: torch.Tensor, config: MazeConfig) -> torch.Tensor:
    """Which of ``cells`` (n, 2) may hold the reward under ``config.reward_cells``."""
    centre = config.size // 2
    if config.reward_cells == "free":
        return torch.ones(len(cells), dtype=torch.bool, device=cells.device)
    if config.reward_cells == "not-centre":
        return (cells != centre).any(dim=1)
    edges = torch.tensor([1, config.size - 2], device=cells.device)
    return torch.isin(cells, edges).any(dim=1)

