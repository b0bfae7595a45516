"""The plain formulation of one cue-reward A2C iteration, organised as the original ``sr/srbatch.py`` and
``sr/modul.py`` (backpropamine.md §4): B separate Python episodes, each drawing its own trials with ``random``, the
observation built element by element, and the retroactively modulated network stepped under autograd, with
``w + alpha * pw`` built every step. Same task and maths as the library's ``paper`` cue-reward preset (``modul``,
200 units); the A2C loop is ``plain_a2c.py``. ``plasticnet bench cue-reward`` times it against
:class:`plasticnet.train.a2c.A2CExperiment`."""

import random

import numpy as np
import torch
from torch import nn

from .plain_a2c import PlainA2C


class PlainCueReward:
    """One episode of the task (backpropamine.md §4.1): ``num_cues`` distinct ±1 cues, one the target; trials of
    ``[blank, shuffled(two cues and blanks), Go, blank]``; +1 for responding at Go exactly when the target was shown,
    -1 otherwise, seen on the next step."""

    def __init__(self, rng: random.Random, cue_size: int = 20, num_cues: int = 4, episode_length: int = 120):
        self.rng, self.cue_size, self.num_cues, self.episode_length = rng, cue_size, num_cues, episode_length

    def reset(self):
        cues = set()
        while len(cues) < self.num_cues:
            cues.add(tuple(self.rng.choice((-1.0, 1.0)) for _ in range(self.cue_size)))
        self.cues = [np.array(c, dtype=np.float32) for c in cues]
        self.target = self.rng.randrange(self.num_cues)
        self.prev_reward, self.prev_action = 0.0, None
        self._new_trial()

    def _new_trial(self):
        n = self.num_cues
        length = n // 2 + 3 + self.rng.randrange(n)
        shown = list(range(n))
        self.rng.shuffle(shown)
        middle = shown[: n // 2] + [None] * (length - 3 - n // 2)
        self.rng.shuffle(middle)
        self.trial = [None, *middle, "go", None]
        self.trial_has_target = self.target in shown[: n // 2]
        self.trial_step = 0

    def observe(self, t: int) -> np.ndarray:
        c = self.cue_size
        obs = np.zeros(c + 7, dtype=np.float32)
        shown = self.trial[self.trial_step]
        if shown == "go":
            obs[c] = 1.0
        elif shown is not None:
            obs[:c] = self.cues[shown]
        obs[c + 1] = 1.0
        obs[c + 2] = t / self.episode_length
        obs[c + 3] = self.prev_reward
        if self.prev_action is not None:
            obs[c + 5 + self.prev_action] = 1.0
        return obs

    def step(self, action: int) -> float:
        reward = 0.0
        if self.trial[self.trial_step] == "go":
            reward = 1.0 if (action == 1) == self.trial_has_target else -1.0
        self.prev_reward, self.prev_action = reward, action
        self.trial_step += 1
        if self.trial_step == len(self.trial):
            self._new_trial()
        return reward


class PlainModul(nn.Module):
    """Retroactive neuromodulation, one step at a time, in the original's layout (row i holds post-synaptic neuron
    i's inputs): ``h = tanh(i2h x + (w + alpha * pw) h_prev)``, ``m = tanh(h2mod h)``,
    ``pw = clip(pw + m * elig, -1, 1)``, ``elig = (1 - eta) elig + eta outer(h, h_prev)``."""

    def __init__(self, obs_size: int = 27, hidden: int = 200, n_actions: int = 2, eta: float = 0.1):
        super().__init__()
        self.i2h = nn.Linear(obs_size, hidden)
        self.w = nn.Parameter(0.01 * torch.rand(hidden, hidden))
        self.alpha = nn.Parameter(0.01 * torch.rand(hidden, hidden))
        self.eta = nn.Parameter(torch.tensor(eta))
        self.h2mod = nn.Linear(hidden, 1)
        self.h2o = nn.Linear(hidden, n_actions)
        self.h2v = nn.Linear(hidden, 1)

    def initial_state(self, batch_size: int):
        n, like = self.w.shape[0], self.w
        return (like.new_zeros(batch_size, n), like.new_zeros(batch_size, n, n), like.new_zeros(batch_size, n, n))

    def forward(self, x, state):
        h, pw, elig = state
        weights = self.w + self.alpha * pw
        h_new = torch.tanh(self.i2h(x) + torch.bmm(weights, h.unsqueeze(2)).squeeze(2))
        modulator = torch.tanh(self.h2mod(h_new)).unsqueeze(2)
        pw = torch.clamp(pw + modulator * elig, -1.0, 1.0)
        elig = (1 - self.eta) * elig + self.eta * torch.bmm(h_new.unsqueeze(2), h.unsqueeze(1))
        return self.h2o(h_new), self.h2v(h_new), (h_new, pw, elig)


def plain_a2c(batch_size: int = 30, hidden: int = 200, seed: int = 0, device="cpu"):
    """The paper's cue-reward iteration (batch 30, T=120, 200 units, sr/request_batch.json's A2C settings)."""
    rng = random.Random(seed)
    episodes = [PlainCueReward(rng) for _ in range(batch_size)]
    return PlainA2C(episodes, PlainModul(hidden=hidden), 120, gamma=0.9, entropy_coef=0.1, value_coef=0.1,
                    grad_clip=2.0, lr=1e-4, adam_eps=1e-6, device=device)
