"""Cue-reward association ("SR", cue-target discovery, backpropamine.md §4.1), B episodes at once as tensors.

Each episode draws ``num_cues`` distinct random ±1 cues of ``cue_size`` bits and picks one as the target. Trials run
back to back until the episode ends (the last one is cut short). A trial of length L = n/2 + 3 + randint(n) (n the
number of cues; 5..8 in the paper) shows ``[blank, shuffle(n/2 distinct cues + L - 3 - n/2 blanks), Go, blank]``.
Action 1 is "respond", 0 "don't". At the Go step the agent gains ``reward`` if it responds exactly when the target
was among the trial's cues, and loses ``reward`` otherwise; with probability ``flip_prob`` that step's reward changes
sign. Any response, at any step, costs ``response_penalty``. The reward is seen on the next step, the trial's final
blank. A constant policy scores 0 on average; the best about 120 / 6.5 ≈ 18 per episode.

Two readings of the spec: it writes "L − 5 blanks", which is L − 3 − n/2 for n = 4; this form keeps every trial at
length L for any n. And it lists the sign flip under the Go-step outcome, so only Go steps are flipped (elsewhere the
reward is just the response penalty).

The whole trial schedule is drawn at :meth:`CueRewardEnv.reset`, so a step is a few gathers.
"""

from dataclasses import dataclass

import torch

from plasticnet.envs.base import BatchedEnv, resolve_config
from plasticnet.envs.streams import random_below, random_bool, random_u32
from plasticnet.errors import ConfigError

_CUE_STREAM = 1
_TARGET_STREAM = 2
_TRIAL_LENGTH_STREAM = 3
_TRIAL_CUES_STREAM = 4
_TRIAL_ORDER_STREAM = 5
_FLIP_STREAM = 6


@dataclass(frozen=True)
class CueRewardConfig:
    """The task's sizes and rewards (backpropamine.md §4.1, §9.4 ``--cs --ni --eplen --rew --wp --pf``).

    ``cue_size`` bits per cue (1..31), ``num_cues`` cues per episode (2 .. 2**cue_size), ``episode_length`` steps,
    ``reward`` for a right or wrong Go response, ``response_penalty`` per "respond" action, ``flip_prob`` of a Go
    step's reward changing sign.
    """

    cue_size: int
    num_cues: int
    episode_length: int
    reward: float
    response_penalty: float
    flip_prob: float

    def __post_init__(self):
        if not isinstance(self.cue_size, int) or not 1 <= self.cue_size <= 31:
            raise ConfigError(f"cue_size must be an integer from 1 to 31 (the paper uses 20), got {self.cue_size!r}")
        if not isinstance(self.num_cues, int) or not 2 <= self.num_cues <= 2 ** self.cue_size:
            raise ConfigError(f"num_cues must be an integer from 2 to 2**cue_size = {2 ** self.cue_size} (distinct "
                              f"cues; the paper uses 4), got {self.num_cues!r}")
        if not isinstance(self.episode_length, int) or self.episode_length < 1:
            raise ConfigError(f"cue-reward episode_length must be a positive integer, got {self.episode_length!r}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"flip_prob is a probability in [0, 1], got {self.flip_prob!r}")


CUE_REWARD_PRESETS = {
    "paper": CueRewardConfig(cue_size=20, num_cues=4, episode_length=120, reward=1.0, response_penalty=0.0,
                             flip_prob=0.0),
    # sr/request_easy.json: two cues of two bits, one shown per trial, 75 steps.
    "easy": CueRewardConfig(cue_size=2, num_cues=2, episode_length=75, reward=1.0, response_penalty=0.0,
                            flip_prob=0.0),
}


class CueRewardEnv(BatchedEnv):
    """B cue-reward episodes stepping together.

    Observation (``cue_size + 7`` values; 27 in the paper), with ``c = cue_size``: ``0..c-1`` the cue shown (±1), or 0;
    ``c`` 1 at the Go step; ``c+1`` bias 1; ``c+2`` ``t / episode_length``; ``c+3`` previous reward; ``c+4`` zero;
    ``c+5``, ``c+6`` previous action one-hot, all zero at t=0 (unlike the maze, backpropamine.md §7 P12).

    Episode state, drawn at reset: ``cues`` (B, num_cues, cue_size) ±1; ``target`` (B,) index of the target cue;
    ``stimulus`` (B, episode_length + 1), what each step shows: a cue index, ``go_code`` (= num_cues) or
    ``blank_code`` (= num_cues + 1), with a blank after the last step; ``trial_has_target`` (B, episode_length),
    whether the trial running at each step shows the target.
    """

    n_actions = 2

    def __init__(self, batch_size: int, config: CueRewardConfig | str = "paper",
                 *, device: str | torch.device = "cpu", seed: int | None = None):
        config = resolve_config(config, CUE_REWARD_PRESETS, CueRewardConfig)
        super().__init__(batch_size, config.episode_length, device, seed)
        self.config = config
        self.go_code = config.num_cues
        self.blank_code = config.num_cues + 1
        self._batch_index = torch.arange(batch_size, device=self.device)
        self._action_ids = torch.arange(self.n_actions, device=self.device)
        self.cues = self.target = self.stimulus = self.trial_has_target = None
        self._stimulus_table = self._flip = self._prev_reward = self._prev_action = None

    @property
    def obs_size(self) -> int:
        return self.config.cue_size + 7

    def observation_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config.cue_size
        low, high = torch.zeros(c + 7, dtype=torch.float32), torch.ones(c + 7, dtype=torch.float32)
        reward_bound = abs(self.config.reward) + abs(self.config.response_penalty)
        low[:c] = -1.0
        low[c + 3], high[c + 3] = -reward_bound, reward_bound
        return low, high

    def _start(self) -> None:
        c, n = self.config.cue_size, self.config.num_cues
        self.cues = self._draw_cues()
        self.target = random_below(self.episode_seeds, _TARGET_STREAM, 0, n)
        self.stimulus, self.trial_has_target = self._draw_schedule()
        # Drawn for every step now, so that a step needs no random numbers (few kernel launches on a GPU).
        steps = torch.arange(self.episode_length, device=self.device)
        self._flip = random_bool(self.episode_seeds, _FLIP_STREAM, steps, self.config.flip_prob)
        table = torch.zeros(self.batch_size, n + 2, c + 1, dtype=torch.float32, device=self.device)
        table[:, :n, :c] = self.cues
        table[:, self.go_code, c] = 1.0
        self._stimulus_table = table
        self._prev_reward = torch.zeros(self.batch_size, dtype=torch.float32, device=self.device)
        self._prev_action = torch.full((self.batch_size,), -1, dtype=torch.int64, device=self.device)

    def _draw_cues(self) -> torch.Tensor:
        """``num_cues`` distinct cues, uniform over ordered tuples of distinct bit patterns.

        The reference resamples until the cues differ; drawing the k-th pattern among the ``2**c - k`` not yet taken
        (skipping over the taken ones in increasing order) has the same distribution and needs no loop over retries.
        """
        c, n = self.config.cue_size, self.config.num_cues
        taken = torch.empty(self.batch_size, 0, dtype=torch.int64, device=self.device)
        for k in range(n):
            pattern = random_below(self.episode_seeds, _CUE_STREAM, k, (1 << c) - k)
            for earlier in taken.sort(dim=1).values.unbind(dim=1):
                pattern = pattern + (pattern >= earlier)
            taken = torch.cat([taken, pattern[:, None]], dim=1)
        bits = (taken[..., None] >> torch.arange(c, device=self.device)) & 1
        return (2 * bits - 1).to(torch.float32)

    def _draw_schedule(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Enough trials to fill the episode, laid end to end: (stimulus, trial_has_target), see the class doc."""
        seeds, n, steps = self.episode_seeds, self.config.num_cues, self.episode_length
        half = n // 2
        n_trials = -(-steps // (half + 3))
        trial_index = torch.arange(n_trials, device=self.device)
        lengths = half + 3 + random_below(seeds, _TRIAL_LENGTH_STREAM, trial_index, n)
        cue_keys = random_u32(seeds, _TRIAL_CUES_STREAM, torch.arange(n_trials * n, device=self.device)
                              .view(n_trials, n))
        shown = cue_keys.argsort(dim=-1)[..., :half]

        # Middle of a trial: its cues, then blanks; of these, the first L - 3 are used, in a random order.
        width = half + n - 1
        middle = torch.cat([shown, torch.full_like(shown[..., :1], self.blank_code).expand(-1, -1, n - 1)], dim=-1)
        used = torch.arange(width, device=self.device) < (lengths - 3)[..., None]
        order_keys = random_u32(seeds, _TRIAL_ORDER_STREAM, torch.arange(n_trials * width, device=self.device)
                                .view(n_trials, width))
        order = torch.where(used, order_keys, 1 << 32).argsort(dim=-1, stable=True)
        trials = torch.full((self.batch_size, n_trials, width + 3), self.blank_code, device=self.device)
        trials[..., 1:width + 1] = middle.gather(-1, order)
        trials.scatter_(-1, (lengths - 2)[..., None], self.go_code)

        ends = lengths.cumsum(dim=-1)
        time = torch.arange(steps, device=self.device).expand(self.batch_size, steps).contiguous()
        trial = torch.searchsorted(ends, time, right=True)
        position = time - (ends - lengths).gather(1, trial)
        stimulus = trials[self._batch_index[:, None], trial, position]
        stimulus = torch.cat([stimulus, torch.full_like(stimulus[:, :1], self.blank_code)], dim=1)
        has_target = (shown == self.target[:, None, None]).any(dim=-1).gather(1, trial)
        return stimulus, has_target

    def _advance(self, action: torch.Tensor) -> torch.Tensor:
        config = self.config
        respond = action == 1
        go = self.stimulus[:, self.t] == self.go_code
        right = respond == self.trial_has_target[:, self.t]
        outcome = (2.0 * right - 1.0) * config.reward
        reward = go * outcome - respond * config.response_penalty
        reward = torch.where(go & self._flip[:, self.t], -reward, reward).to(torch.float32)
        self._prev_reward = reward
        self._prev_action = action
        return reward

    def observe(self) -> torch.Tensor:
        c = self.config.cue_size
        obs = torch.zeros(self.batch_size, c + 7, dtype=torch.float32, device=self.device)
        obs[:, :c + 1] = self._stimulus_table[self._batch_index, self.stimulus[:, self.t]]
        obs[:, c + 1] = 1.0
        obs[:, c + 2] = self.t / self.episode_length
        obs[:, c + 3] = self._prev_reward
        obs[:, c + 5:] = self._prev_action[:, None] == self._action_ids
        return obs
