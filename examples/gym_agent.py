"""A neuromodulated plastic agent on a Gymnasium environment, trained with a few lines of actor-critic.

``plasticnet.envs.gym.MazeVectorEnv`` is the grid maze of the papers as a ``gymnasium.vector.VectorEnv``: numpy
observations in, numpy actions out, like any Gymnasium environment. Each episode hides a reward somewhere in the
maze; finding it pays 10 and teleports the agent, so an agent that remembers where the reward was collects more.
The agent is ``plasticnet.agents.RecurrentAgent`` (a plastic recurrent core with simple neuromodulation, a policy
head and a value head), stepped one action at a time through the Gymnasium API. Training is plain advantage
actor-critic on whole episodes. The script prints the mean reward per episode of the first and the last updates.

    python examples/gym_agent.py            # about 30 s on one CPU thread
"""

import argparse

import numpy as np
import torch

from plasticnet.agents import RecurrentAgent
from plasticnet.envs import MazeConfig
from plasticnet.envs.gym import MazeVectorEnv

MAZE = MazeConfig(size=9, episode_length=60, reward=10.0, wall_penalty=0.0, reward_cells="not-centre",
                  teleport="not-reward", observation="backpropamine")


def episode(env, agent, seed):
    """One batch of episodes through the Gymnasium API; returns log-probabilities, values, rewards (T, B)."""
    obs, _ = env.reset(seed=seed)
    state, log_probs, values, rewards = None, [], [], []
    for _ in range(MAZE.episode_length):
        logits, state = agent.step(torch.from_numpy(obs), state)
        action = torch.distributions.Categorical(logits=logits).sample()
        log_probs.append(torch.log_softmax(logits, -1).gather(1, action[:, None]).squeeze(1))
        values.append(agent.value(state.h))
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        rewards.append(torch.from_numpy(reward).float())
    return torch.stack(log_probs), torch.stack(values), torch.stack(rewards)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=150, help="actor-critic updates (default 150)")
    parser.add_argument("--batch", type=int, default=16, help="episodes per update (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    env = MazeVectorEnv(args.batch, MAZE)
    agent = RecurrentAgent(env.single_observation_space.shape[0], env.single_action_space.n, kind="modplast",
                           hidden_size=64, fused=False)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-3)
    totals = []
    for update in range(args.updates):
        log_probs, values, rewards = episode(env, agent, seed=args.seed * 100_000 + update)
        returns = torch.zeros_like(rewards)
        running = torch.zeros(args.batch)
        for t in reversed(range(len(rewards))):  # discounted returns, no bootstrapping: the episode ends at T
            running = rewards[t] + 0.9 * running
            returns[t] = running
        advantage = returns - values
        loss = -(log_probs * advantage.detach()).mean() + 0.1 * advantage.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 4.0)
        optimizer.step()
        totals.append(rewards.sum(0).mean().item())
    tenth = max(1, args.updates // 10)
    print(f"mean reward per episode: first {tenth} updates {np.mean(totals[:tenth]):.1f}, "
          f"last {tenth} updates {np.mean(totals[-tenth:]):.1f}")


if __name__ == "__main__":
    main()
