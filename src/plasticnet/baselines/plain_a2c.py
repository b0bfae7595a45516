"""The plain formulation of one A2C iteration, as the original backpropamine scripts ran it (backpropamine.md §1):
B separate Python environments stepped in a loop over the batch, the observation built element by element, the
action sampled from ``torch.distributions.Categorical`` and moved to numpy at every step, the network stepped under
autograd, returns and losses accumulated step by step in Python. ``plain_maze.py`` and ``plain_cue_reward.py``
supply the environments and networks; ``plasticnet bench maze|cue-reward`` times this against
:class:`plasticnet.train.a2c.A2CExperiment`."""

import numpy as np
import torch


class PlainA2C:
    """One iteration: an episode on every environment, the loss step by step, backward, clip, Adam.

    ``envs``: objects with ``reset()``, ``observe(t) -> np.ndarray`` and ``step(action) -> float``; ``net``: a module
    with ``initial_state(B)`` and ``forward(x, state) -> (scores, value, state)``."""

    def __init__(self, envs, net, episode_length: int, gamma: float, entropy_coef: float, value_coef: float,
                 grad_clip: float, lr: float, adam_eps: float, device="cpu"):
        self.envs, self.net = envs, net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, eps=adam_eps)
        self.episode_length, self.device = episode_length, device
        self.gamma, self.entropy_coef, self.value_coef, self.grad_clip = gamma, entropy_coef, value_coef, grad_clip

    def iteration(self) -> float:
        B, device = len(self.envs), self.device
        for env in self.envs:
            env.reset()
        state = self.net.initial_state(B)
        self.optimizer.zero_grad()
        loss = 0
        log_probs, values, rewards = [], [], []
        for t in range(self.episode_length):
            x = torch.from_numpy(np.stack([env.observe(t) for env in self.envs])).to(device)
            scores, value, state = self.net(x, state)
            probs = torch.softmax(scores, dim=1)
            dist = torch.distributions.Categorical(probs, validate_args=False)  # the original's PyTorch did not check
            action = dist.sample()
            log_probs.append(dist.log_prob(action))
            loss = loss + self.entropy_coef * probs.pow(2).sum() / B
            actions = action.cpu().numpy()
            rewards.append(np.array([env.step(int(a)) for env, a in zip(self.envs, actions)], dtype=np.float32))
            values.append(value)
        R = torch.zeros(B, device=device)
        value_loss = 0
        for t in reversed(range(self.episode_length)):
            R = self.gamma * R + torch.from_numpy(rewards[t]).to(device)
            delta = R - values[t][:, 0]
            value_loss = value_loss + delta.pow(2).sum() / B
            loss = loss - (log_probs[t] * delta.detach()).sum() / B
        loss = (loss + self.value_coef * value_loss) / self.episode_length
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.optimizer.step()
        return float(np.sum(rewards) / B)
