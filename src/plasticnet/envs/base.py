"""What the batched meta-RL environments share: B synchronous, fixed-length episodes as tensors on one device.

Protocol (backpropamine.md §1 item 2: the training loop builds inputs, acts and steps B environments together):

* ``reset() -> obs``: (B, obs_size) float32;
* ``step(action) -> (obs, reward, done)``: ``action`` a (B,) LongTensor, ``reward`` (B,) float32, ``done`` one Python
  bool for the whole batch.

Episodes in these tasks last exactly ``episode_length`` steps and all B end on the same step, so ``done`` needs no
per-element mask and costs no host synchronisation. ``t`` counts the steps taken in the current episode.

Randomness: ``generator`` (a ``torch.Generator`` on the env's device, seeded by ``seed``) draws one 32-bit seed per
episode at each reset; everything random inside an episode comes from that episode seed alone (:mod:`.streams`).
Passing ``episode_seeds`` to :meth:`BatchedEnv.reset` replays chosen episodes, alone or in any batch, on any device.
"""

from abc import ABC, abstractmethod

import torch

from plasticnet.errors import ConfigError

EPISODE_SEED_RANGE = 1 << 32  # episode seeds are 32-bit: the streams hash 32-bit words


class BatchedEnv(ABC):
    """Base class: episode clock, seeding and the checks of :meth:`step`; subclasses supply the task."""

    n_actions: int

    def __init__(self, batch_size: int, episode_length: int, device: str | torch.device, seed: int | None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.episode_length = episode_length
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.t = 0
        self.episode_seeds: torch.Tensor | None = None

    @property
    @abstractmethod
    def obs_size(self) -> int:
        """Length of one observation vector."""

    @abstractmethod
    def observation_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest value each observation index can take, two (obs_size,) float32 CPU tensors."""

    @abstractmethod
    def observe(self) -> torch.Tensor:
        """The (B, obs_size) observation of the current state, at time ``t``."""

    @abstractmethod
    def _start(self) -> None:
        """Set up B new episodes from ``self.episode_seeds``."""

    @abstractmethod
    def _advance(self, action: torch.Tensor) -> torch.Tensor:
        """Apply ``action`` at time ``t`` (before ``t`` moves on) and return the (B,) reward."""

    def reset(self, *, seed: int | None = None, episode_seeds=None) -> torch.Tensor:
        """Start B new episodes and return their first observation.

        ``seed`` re-seeds ``generator`` first. ``episode_seeds`` (B integers, taken mod 2**32) fixes each episode
        instead of drawing from ``generator``: the same seed gives the same episode in any batch and on any device.
        """
        if seed is not None:
            self.generator.manual_seed(seed)
        if episode_seeds is None:
            self.episode_seeds = self.draw_episode_seeds()
        else:
            self.episode_seeds = self._checked_seeds(episode_seeds)
        self.t = 0
        self._start()
        return self.observe()

    def draw_episode_seeds(self, count: int | None = None) -> torch.Tensor:
        """The next B (or ``count``) episode seeds from ``generator``: what :meth:`reset` draws when given none.
        Drawing them apart from the reset lets a caller run the episode where no random numbers may be drawn (a
        CUDA graph), or run a shard of a larger batch (data-parallel training)."""
        return torch.randint(0, EPISODE_SEED_RANGE, (count or self.batch_size,), generator=self.generator,
                             device=self.device)

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Act in all B episodes; return the next observation, the reward and whether the episodes have ended.

        Once ``done``, the returned observation is the one at ``t = episode_length`` (no episode follows it); call
        :meth:`reset` to go on.
        """
        if self.episode_seeds is None or self.t >= self.episode_length:
            raise ConfigError("step() needs a running episode: call reset() first (episodes end after "
                              f"{self.episode_length} steps)")
        if action.shape != (self.batch_size,) or action.dtype != torch.int64:
            raise ConfigError(f"action must be a LongTensor of shape ({self.batch_size},), got {action.dtype} of "
                              f"shape {tuple(action.shape)}")
        reward = self._advance(action.to(self.device))
        self.t += 1
        return self.observe(), reward, self.t == self.episode_length

    def _checked_seeds(self, seeds) -> torch.Tensor:
        seeds = torch.as_tensor(seeds, device=self.device)
        if seeds.shape != (self.batch_size,) or seeds.is_floating_point() or seeds.dtype == torch.bool:
            raise ConfigError(f"episode_seeds must be {self.batch_size} integers, one per episode, got "
                              f"{seeds.dtype} of shape {tuple(seeds.shape)}")
        return seeds.to(torch.int64) % EPISODE_SEED_RANGE


def resolve_config(config, presets: dict, config_type: type):
    """``config`` itself, or the preset it names."""
    if isinstance(config, config_type):
        return config
    if isinstance(config, str) and config in presets:
        return presets[config]
    raise ConfigError(f"config must be a {config_type.__name__} or a preset name ({', '.join(presets)}); "
                      f"got {config!r}")
