"""The plain formulation of one maze A2C iteration, the way the original backpropamine code is organised
(backpropamine.md §1, §3): B separate Python/numpy mazes stepped in a loop over the batch, the observation built
element by element, the action sampled from ``torch.distributions.Categorical`` and moved to numpy at every step,
the network step written as separate tensor operations (``w + alpha * hebb`` built every step), returns and losses
accumulated step by step in Python (``plain_a2c.py``). Same maths as the library's ``modplast`` agent on the
``paper-2019`` maze. ``plasticnet bench maze`` times it against :class:`plasticnet.train.a2c.A2CExperiment`."""

import random

import numpy as np
import torch
from torch import nn

from .plain_a2c import PlainA2C

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


class PlainMaze:
    """One 2019 maze (backpropamine.md §2.1): pillars at even cells, centre free, reward never at the centre,
    teleport after a hit to a free cell other than the reward cell."""

    def __init__(self, size: int, episode_length: int, reward: float, rng: random.Random):
        self.size, self.episode_length, self.reward, self.rng = size, episode_length, reward, rng
        self.lab = np.ones((size, size), dtype=np.int64)
        self.lab[1:-1, 1:-1] = 0
        for r in range(2, size - 1, 2):
            for c in range(2, size - 1, 2):
                self.lab[r, c] = 1
        self.centre = size // 2
        self.lab[self.centre, self.centre] = 0

    def reset(self):
        while True:
            r, c = self.rng.randrange(1, self.size - 1), self.rng.randrange(1, self.size - 1)
            if self.lab[r, c] == 0 and (r, c) != (self.centre, self.centre):
                break
        self.reward_pos = (r, c)
        self.pos = (self.centre, self.centre)
        self.prev_reward, self.prev_action = 0.0, 0

    def observe(self, t: int) -> np.ndarray:
        obs = np.zeros(17, dtype=np.float32)
        r, c = self.pos
        obs[:9] = self.lab[r - 1:r + 2, c - 1:c + 2].flatten()
        obs[10] = 1.0
        obs[11] = t / self.episode_length
        obs[12] = self.prev_reward
        obs[13 + self.prev_action] = 1.0
        return obs

    def step(self, action: int) -> float:
        r, c = self.pos
        r, c = {UP: (r - 1, c), DOWN: (r + 1, c), LEFT: (r, c - 1), RIGHT: (r, c + 1)}[action]
        reward = 0.0
        if self.lab[r, c] == 0:
            self.pos = (r, c)
        if self.pos == self.reward_pos:
            reward += self.reward
            while True:
                r, c = self.rng.randrange(1, self.size - 1), self.rng.randrange(1, self.size - 1)
                if self.lab[r, c] == 0 and (r, c) != self.reward_pos:
                    break
            self.pos = (r, c)
        self.prev_reward, self.prev_action = reward, action
        return reward


class PlainModPlast(nn.Module):
    """Simple neuromodulation, one step at a time, in the original's layout (backpropamine.md §3.2: row i holds
    post-synaptic neuron i's inputs): ``h = tanh(i2h x + (w + alpha * hebb) h_prev)`` as a batched
    matrix-vector product, ``hebb = clip(hebb + tanh(h2mod h) * outer(h, h_prev), -1, 1)``."""

    def __init__(self, obs_size: int = 17, hidden: int = 100, n_actions: int = 4, clip: float = 1.0):
        super().__init__()
        self.clip = clip
        self.i2h = nn.Linear(obs_size, hidden)
        self.w = nn.Parameter(0.01 * torch.rand(hidden, hidden))
        self.alpha = nn.Parameter(0.01 * torch.rand(hidden, hidden))
        self.h2mod = nn.Linear(hidden, 1)
        self.h2o = nn.Linear(hidden, n_actions)
        self.h2v = nn.Linear(hidden, 1)

    def initial_state(self, batch_size: int):
        n = self.w.shape[0]
        return torch.zeros(batch_size, n, device=self.w.device), torch.zeros(batch_size, n, n, device=self.w.device)

    def forward(self, x, state):
        h, hebb = state
        weights = self.w + self.alpha * hebb
        h_new = torch.tanh(self.i2h(x) + torch.bmm(weights, h.unsqueeze(2)).squeeze(2))
        delta = torch.bmm(h_new.unsqueeze(2), h.unsqueeze(1))
        modulator = torch.tanh(self.h2mod(h_new)).unsqueeze(2)
        hebb = torch.clamp(hebb + modulator * delta, -self.clip, self.clip)
        return self.h2o(h_new), self.h2v(h_new), (h_new, hebb)


def plain_a2c(batch_size: int = 30, hidden: int = 100, size: int = 13, episode_length: int = 200, seed: int = 0,
              device="cpu"):
    """The paper-2019 maze iteration (batch 30, T=200, 100 units, the request file's A2C settings)."""
    rng = random.Random(seed)
    mazes = [PlainMaze(size, episode_length, 10.0, rng) for _ in range(batch_size)]
    return PlainA2C(mazes, PlainModPlast(hidden=hidden), episode_length, gamma=0.9, entropy_coef=0.03,
                    value_coef=0.1, grad_clip=4.0, lr=1e-4, adam_eps=1e-4, device=device)
