"""A neuromodulated plastic agent on a Gymnasium environment, trained with a few lines of actor-critic.

``plasticnet.envs.gym.MazeVectorEnv`` is the grid maze of the papers as a ``gymnasium.vector.VectorEnv``: numpy
observations in, numpy actions out, like any Gymnasium environment. Each episode hides a reward in a small maze
(finding it pays 2 and teleports the agent), and each bump into a wall costs 1. The agent is
``plasticnet.agents.RecurrentAgent`` (a plastic recurrent core with simple neuromodulation, a policy head and a
value head), stepped one action at a time through the Gymnasium API, and trained with plain advantage
actor-critic on whole episodes. Within seconds it stops bumping into walls, and so finds the reward more often;
finding it again and again from memory, as in the papers, takes the thousands of updates of
``plasticnet train maze``. The script prints wall bumps and rewards found per episode over the first and the last
30 updates.

    python examples/gym_agent.py            # about 17 s of CPU on one thread
"""

import argparse

import numpy as np
import torch

from plasticnet.agents import RecurrentAgent
from plasticnet.envs import MazeConfig
from plasticnet.envs.gym import MazeVectorEnv

MAZE = MazeConfig(size=5, episode_length=40, reward=2.0, wall_penalty=1.0, reward_cells="not-centre",
                  teleport="not-reward", observation="backpropamine")


def episode(env, agent, seed):
    """One batch of episodes through the Gymnasium API; returns the log-probabilities of the actions taken, the
    sums of squared action probabilities, the values and the rewards, each (T, B)."""
    obs, _ = env.reset(seed=seed)
    state, log_probs, concentration, values, rewards = None, [], [], [], []
    for _ in range(MAZE.episode_length):
        logits, state = agent.step(torch.from_numpy(obs), state)
        action = torch.distributions.Categorical(logits=logits).sample()
        log_probs.append(torch.log_softmax(logits, -1).gather(1, action[:, None]).squeeze(1))
        concentration.append(torch.softmax(logits, -1).pow(2).sum(-1))
        values.append(agent.value(state.h))
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        rewards.append(torch.from_numpy(reward).float())
    return tuple(torch.stack(x) for x in (log_probs, concentration, values, rewards))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=150, help="actor-critic updates (default 150)")
    parser.add_argument("--batch", type=int, default=32, help="episodes per update (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    env = MazeVectorEnv(args.batch, MAZE)
    agent = RecurrentAgent(env.single_observation_space.shape[0], env.single_action_space.n, kind="modplast",
                           hidden_size=32)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-2)
    bumps, found = [], []
    for update in range(args.updates):
        log_probs, concentration, values, rewards = episode(env, agent, seed=args.seed * 100_000 + update)
        returns = torch.zeros_like(rewards)
        running = torch.zeros(args.batch)
        for t in reversed(range(len(rewards))):  # discounted returns, no bootstrapping: the episode ends at T
            running = rewards[t] + 0.9 * running
            returns[t] = running
        advantage = returns - values
        # policy gradient, value regression, and a penalty on concentrated policies (the papers' exploration term)
        loss = (-(log_probs * advantage.detach()).mean() + 0.1 * advantage.pow(2).mean()
                + 0.03 * concentration.mean())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 4.0)
        optimizer.step()
        bumps.append((rewards < 0).sum(0).float().mean().item())  # -1: a bump (a bump onto the reward: +1)
        found.append((rewards > 0).sum(0).float().mean().item())
    n = min(30, args.updates)
    print(f"per episode, first {n} updates / last {n}: wall bumps {np.mean(bumps[:n]):.1f} / "
          f"{np.mean(bumps[-n:]):.1f}, rewards found {np.mean(found[:n]):.1f} / {np.mean(found[-n:]):.1f}")


if __name__ == "__main__":
    main()
