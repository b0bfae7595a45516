"""Batched advantage actor-critic with Monte-Carlo returns, as both papers' meta-RL experiments train
(backpropamine.md §1, differentiable-plasticity.md §5.4).

One iteration is one episode on B environments at once:

1. reset the environments and the agent (activity, traces: nothing is carried over from the last episode);
2. for t = 0..T-1: the agent scores the actions from the observation, an action is sampled from the softmax, the
   environments step (no gradient flows through the environment or the fed-back reward and action);
3. returns backwards with no bootstrapping, ``R_t = r_t + gamma R_{t+1}``;
4. ``delta = R - V`` with each element's own value (``baseline="own"``) or, as the original code did, element 0's
   value for the whole batch (``baseline="element0"``, backpropamine.md §7 P1);
5. ``L = mean_t [ c_p sum_a p^2 - log p(a) sg(delta) + c_v delta^2 ]``, with ``mean_b`` inside: ``sum_a p^2`` is a
   penalty on concentrated policies (the papers' stand-in for an entropy bonus, added, not subtracted);
6. backpropagate through the whole episode (traces and modulator included), clip the gradient norm, and take an
   Adam step, except during the first ``burn_in`` iterations, which compute gradients but update nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple, Optional

import torch

from ..agents import AGENT_KINDS, RecurrentAgent
from ..config import RunConfig, from_dict, require_positive, require_range
from ..errors import CheckpointError, ConfigError
from ..fast import Workspace, fused_closed_loop
from ..fast.backends import check_backend, resolve_cell
from ..layers import ALPHA_MODES, describe_backend, make_plasticity
from . import checkpoint as ckpt
from . import distributed
from .cuda_graph import GraphedIteration

BASELINES = ("own", "element0")


@dataclass
class A2CConfig(RunConfig):
    """Agent and A2C settings shared by the meta-RL tasks; a task adds the environment (``env``, a preset name).

    Agent: ``agent`` kind (rnn, plastic, modplast, modul), ``hidden_size``, plasticity ``rule`` and its ``clip``,
    ``fanout`` of the modulator, ``alpha`` mode, ``init_scale`` of W and alpha, ``eta_init``.
    A2C: discount ``gamma``; ``entropy_coef`` of the sum-of-squared-probabilities penalty (``--bent``);
    ``value_coef`` (``--blossv``); ``grad_clip`` on the global gradient norm (0: none); Adam ``lr`` and
    ``adam_eps``; ``burn_in`` iterations without optimizer steps; ``baseline`` own or element0.
    Speed: ``checkpoint_every`` k keeps every k-th trace of an episode and recomputes the others in the backward
    pass (memory T/k + k traces instead of T; 0: the backend's choice, chunks of about sqrt(T) on ``numba``,
    where that is faster, every trace on ``torch`` and ``triton``). ``cuda_graph``: on a CUDA device, capture the iteration
    (episode, loss, backward pass, clipping) once as a CUDA graph and replay it (:mod:`.cuda_graph`); same results,
    several times faster at small batches. Ignored on a CPU. ``backend``: what runs the episodes
    (:mod:`plasticnet.fast.backends`: auto, reference, fused, torch, numba, triton).
    """

    env: str = ""
    agent: str = "modplast"
    hidden_size: int = 100
    rule: str = "clip"
    clip: float = 1.0
    fanout: bool = False
    alpha: str = "full"
    init_scale: float = 0.01
    eta_init: float = 0.01
    gamma: float = 0.9
    entropy_coef: float = 0.03
    value_coef: float = 0.1
    grad_clip: float = 4.0
    adam_eps: float = 1e-4
    burn_in: int = 101
    baseline: str = "own"
    checkpoint_every: int = 0
    cuda_graph: bool = True
    backend: str = "auto"

    env_presets: ClassVar[tuple] = ()  # set by each task: the environment presets it accepts

    def validate(self) -> None:
        super().validate()
        if self.env not in self.env_presets:
            raise ConfigError(f"unknown env {self.env!r}; choose one of {', '.join(self.env_presets)}")
        if self.agent not in AGENT_KINDS:
            raise ConfigError(f"unknown agent {self.agent!r}; choose one of {', '.join(AGENT_KINDS)}")
        if self.alpha not in ALPHA_MODES:
            raise ConfigError(f"unknown alpha {self.alpha!r}; choose one of {', '.join(ALPHA_MODES)}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        check_backend(self.backend)
        if self.fanout and AGENT_KINDS[self.agent] is None:
            raise ConfigError(f"--fanout fans out a neuromodulator; agent {self.agent} has none (use modplast or "
                              f"modul)")
        if self.agent != "rnn":  # the rule against the agent's modulation, as the cell will check it
            make_plasticity(self.rule, self.clip, AGENT_KINDS[self.agent], self.fanout)
        require_positive(self, "hidden_size")
        require_range(self, "gamma", 0, 1)
        if self.grad_clip < 0 or self.burn_in < 0 or self.checkpoint_every < 0:
            raise ConfigError(f"grad_clip, burn_in and checkpoint_every must be >= 0 (0: none, or the default), got "
                              f"{self.grad_clip}, {self.burn_in} and {self.checkpoint_every}")
        require_range(self, "adam_eps", 0, math.inf, low_open=True)
        require_range(self, "clip", 0, math.inf, low_open=True)
        for name in ("entropy_coef", "value_coef", "init_scale", "eta_init"):
            require_range(self, name, 0, math.inf)

    def make_env(self, batch_size: int, device, seed: int | None):
        raise NotImplementedError


def make_agent(cfg: A2CConfig, env) -> RecurrentAgent:
    return RecurrentAgent(env.obs_size, env.n_actions, cfg.agent, cfg.hidden_size, rule=cfg.rule, clip=cfg.clip,
                          fanout=cfg.fanout, alpha=cfg.alpha, init_scale=cfg.init_scale, eta_init=cfg.eta_init,
                          checkpoint_every=cfg.checkpoint_every or None, backend=cfg.backend)


class Episode(NamedTuple):
    """One batched episode: ``logits`` (T, B, A), ``hidden`` (T, B, N) and the state ``values`` (T, B) carry
    gradients; ``actions`` (T, B) and ``rewards`` (T, B) do not."""

    logits: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    hidden: torch.Tensor
    values: torch.Tensor


class EpisodeDraws(NamedTuple):
    """Everything random in one episode, drawn before it runs: the environments' ``episode_seeds`` (B,) and the
    ``uniform`` numbers (T, B, A) of the action sampling (None: greedy). A CUDA graph of an iteration replays with new
    draws copied into its inputs, since nothing may be drawn inside it."""

    episode_seeds: torch.Tensor
    uniform: Optional[torch.Tensor]


def draw_episode(env, generator: torch.Generator, greedy: bool = False,
                 batch_size: Optional[int] = None) -> EpisodeDraws:
    """The next episode's draws: seeds from the environment's generator, action noise from ``generator``; for
    ``batch_size`` environments (default: ``env``'s own)."""
    batch_size = batch_size or env.batch_size
    uniform = None if greedy else torch.rand((env.episode_length, batch_size, env.n_actions), generator=generator,
                                             device=env.device)
    return EpisodeDraws(env.draw_episode_seeds(batch_size), uniform)


def rollout(agent: RecurrentAgent, env, generator: torch.Generator, watch=None, greedy: bool = False) -> Episode:
    """Run one episode on every environment of ``env``, drawing it from the environment's generator and
    ``generator`` (:func:`draw_episode`); see :func:`run_episode`."""
    return run_episode(agent, env, draw_episode(env, generator, greedy), watch)


def run_episode(agent: RecurrentAgent, env, draws: EpisodeDraws, watch=None) -> Episode:
    """Run the episode that ``draws`` fixes on every environment of ``env``: :func:`fused_episode` where the agent
    runs fused (``agent.fused``), else :func:`reference_episode`. Same contract, same results (``tests/test_a2c.py``).
    ``watch(env)``, if given, is called after the reset and after every step (to record positions, cues...)."""
    return (fused_episode if agent.fused else reference_episode)(agent, env, draws, watch)


def reference_episode(agent: RecurrentAgent, env, draws: EpisodeDraws, watch=None) -> Episode:
    """One episode step by step, as the papers' algorithm reads (backpropamine.md §1, item 2): the observation goes
    through the recurrent cell, an action is sampled from the policy, the environment steps and pays a reward. No
    gradient flows through the action or the environment; autograd records the cell's steps."""
    choose_action = ActionSampler(agent, env, draws)
    obs = env.reset(episode_seeds=draws.episode_seeds)
    if watch is not None:
        watch(env)
    state = agent.initial_state(env.batch_size)
    hidden, actions, rewards = [], [], []
    for t in range(env.episode_length):
        h, state = agent.cell(obs.to(agent.cell.w.dtype), state)  # the cell reads the observation
        action = choose_action(t, h)  # sampled from softmax(h2o(h))
        obs, reward, _ = env.step(action)  # the environment steps: the next observation and the reward
        if watch is not None:
            watch(env)
        hidden.append(h)
        actions.append(action)
        rewards.append(reward)
    hidden = torch.stack(hidden)
    logits, values = agent.heads(hidden)
    return Episode(logits, torch.stack(actions), torch.stack(rewards), hidden, values)


def fused_episode(agent: RecurrentAgent, env, draws: EpisodeDraws, watch=None) -> Episode:
    """:func:`reference_episode` with the agent's cell run by :func:`plasticnet.fast.fused_closed_loop`, one
    autograd function for the whole episode: the loop over steps is inside it, so what follows the cell in a step
    (action, environment step, reward) is handed to it as ``act``, called after each step of the cell."""
    choose_action = ActionSampler(agent, env, draws)
    obs = env.reset(episode_seeds=draws.episode_seeds)
    if watch is not None:
        watch(env)
    actions, rewards = [], []

    def act(t: int, h: torch.Tensor) -> torch.Tensor:
        action = choose_action(t, h)
        obs, reward, _ = env.step(action)
        if watch is not None:
            watch(env)
        actions.append(action)
        rewards.append(reward)
        return obs

    hidden = fused_closed_loop(agent.cell, obs, act, env.episode_length, agent.checkpoint_every, agent.workspace,
                               resolve_cell(agent.backend, agent.cell))
    logits, values = agent.heads(hidden)
    return Episode(logits, torch.stack(actions), torch.stack(rewards), hidden, values)


class ActionSampler:
    """``sampler(t, h)``: step t's actions (B,) from the activities h (B, N), sampled from ``softmax(h2o(h))`` by the
    Gumbel-max trick with the episode's noise (``draws.uniform``), turned into Gumbel noise up front, so that a step
    is one product and never waits for the host; without noise, the most likely actions. No gradient."""

    def __init__(self, agent: RecurrentAgent, env, draws: EpisodeDraws):
        shape = (env.episode_length, env.batch_size, env.n_actions)
        with torch.no_grad():  # the scores' bias and the noise, added once for the whole episode
            if draws.uniform is None:
                self.noisy_bias = agent.h2o.bias.expand(shape)
            else:
                self.noisy_bias = agent.h2o.bias - torch.log(-torch.log(draws.uniform))
        self.weight = agent.h2o.weight.t()

    def __call__(self, t: int, h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.addmm(self.noisy_bias[t], h, self.weight).argmax(-1)  # argmax of h2o(h) + Gumbel noise


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """``R_t = r_t + gamma R_{t+1}``, ``R_T = 0``, for rewards (T, ...): one product with the (T, T) matrix of
    ``gamma ** (s - t)`` for s >= t instead of T dependent steps."""
    T = rewards.shape[0]
    steps = torch.arange(T, dtype=torch.float64, device=rewards.device)
    lag = steps[None, :] - steps[:, None]
    discount = torch.where(lag >= 0, gamma ** lag.clamp(min=0), 0.0).to(rewards.dtype)
    return (discount @ rewards.reshape(T, -1)).reshape(rewards.shape)


class A2CLoss(NamedTuple):
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    penalty: torch.Tensor


def a2c_loss(logits: torch.Tensor, actions: torch.Tensor, values: torch.Tensor, returns: torch.Tensor,
             entropy_coef: float, value_coef: float, baseline: str = "own") -> A2CLoss:
    """The papers' loss for one batched episode; ``logits`` (T, B, A), ``actions``, ``values``, ``returns`` (T, B).

    Each term is summed over the batch and divided by B, then the three are averaged over the T steps.
    ``baseline="element0"`` reproduces the original code, where every element's advantage used element 0's value,
    so only element 0's value output learns (and learns the batch-mean return)."""
    if baseline not in BASELINES:
        raise ConfigError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    log_p = torch.log_softmax(logits, dim=-1)
    log_p_taken = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    if baseline == "element0":
        values = values[:, :1].expand_as(returns)
    delta = returns - values
    policy = -(log_p_taken * delta.detach()).mean()
    value = delta.square().mean()
    penalty = log_p.exp().square().sum(-1).mean()
    total = entropy_coef * penalty + policy + value_coef * value
    return A2CLoss(total, policy.detach(), value.detach(), penalty.detach())


class A2CExperiment:
    """The training step the shared loop calls: one episode on ``batch_size`` environments, one update. Under
    torchrun each process draws the global batch's episodes and runs its shard of them
    (:mod:`plasticnet.train.distributed`); the episodes of a batch are independent given their draws."""

    metrics = ("reward", "loss", "grad_norm")
    data_parallel = True

    def __init__(self, cfg: A2CConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.shard = distributed.shard(cfg.batch_size)
        if distributed.world_size() > 1 and cfg.baseline == "element0":
            raise ConfigError("baseline element0 couples the whole batch to its first episode and does not split "
                              "across processes; use --baseline own under torchrun")
        self.env = cfg.make_env(self.shard.stop - self.shard.start, device, seed=cfg.seed)
        self.model = make_agent(cfg, self.env).to(device)
        resolve_cell(self.model.backend, self.model.cell)  # a backend that cannot run here is refused now
        # On a GPU, Adam's update in one fused kernel: it runs outside the graph, where every launch counts.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=cfg.adam_eps,
                                          fused=True if device.type == "cuda" else None)
        # Actions get a stream of their own, apart from the environment's episode seeds.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed + 0x5EED)
        # Data-parallel runs launch eagerly: DDP's all-reduce runs between the backward pass and the clipping.
        self.graphed = device.type == "cuda" and cfg.cuda_graph and distributed.world_size() == 1
        self._gradients = GraphedIteration(self._graph_gradients) if self.graphed else self._episode_gradients
        self._run = distributed.wrap(distributed.Apply(self.model))
        self._graph_workspace = Workspace() if self.graphed else None

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        draws = draw_episode(self.env, self.generator, batch_size=self.cfg.batch_size)
        values = self._gradients(draws.episode_seeds[self.shard], draws.uniform[:, self.shard])
        if iteration >= self.cfg.burn_in:
            self.optimizer.step()
        return values

    def _episode_gradients(self, episode_seeds: torch.Tensor, uniform: torch.Tensor) -> dict[str, torch.Tensor]:
        """One episode, its loss and clipped gradients in the parameters' ``.grad``; no update."""
        cfg = self.cfg
        episode = self._run(run_episode, self.env, EpisodeDraws(episode_seeds, uniform))
        returns = discounted_returns(episode.rewards, cfg.gamma)
        loss = a2c_loss(episode.logits, episode.actions, episode.values, returns,
                        cfg.entropy_coef, cfg.value_coef, cfg.baseline)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
        return {"reward": episode.rewards.sum(0).mean(), "loss": loss.total.detach(), "grad_norm": grad_norm}

    def _graph_gradients(self, episode_seeds: torch.Tensor, uniform: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`_episode_gradients` in buffers that only the graph uses: the agent's own may be reallocated by an
        episode of another size run eagerly between two iterations, which the graph would then write over."""
        eager, self.model.workspace = self.model.workspace, self._graph_workspace
        try:
            return self._episode_gradients(episode_seeds, uniform)
        finally:
            self.model.workspace = eager

    def describe(self) -> dict:
        """Facts for ``plasticnet train --dry-run``."""
        return {"agent": f"{self.cfg.agent}, {self.cfg.hidden_size} units, "
                         f"backend {describe_backend(self.model.backend, self.model.cell)}"
                         f"{', replayed as a CUDA graph' if self.graphed else ''}",
                "episode": f"{self.env.episode_length} steps on {self.env.batch_size} environments ({self.cfg.env})"}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "env_generator": self.env.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.env.generator.set_state(state["env_generator"])


def load_agent(path: Path, device="cpu") -> tuple[str, A2CConfig, RecurrentAgent]:
    """The task name, configuration and trained agent of a run directory, its checkpoint, or an exported model."""
    from ..tasks import get_task

    saved = ckpt.read_model(path, device)
    task = get_task(saved["task"])
    if not issubclass(task.config_cls, A2CConfig):
        raise CheckpointError(f"{path} holds a {saved['task']} run, not a meta-RL agent (maze or cue-reward)")
    cfg = from_dict(task.config_cls, saved["config"])
    agent = make_agent(cfg, cfg.make_env(1, device, seed=0)).to(device)
    agent.load_state_dict(saved["model"])
    return saved["task"], cfg, agent


# Evaluation episodes are drawn from seeds this far from the one given, apart from any training run's episodes.
EVAL_SEED_OFFSET = 1_000_003


def evaluate_agent(path: Path, episodes: int, batch_size: int = 100, seed: int = 0, greedy: bool = False,
                   device="cpu", task: Optional[str] = None) -> dict:
    """Total reward per episode of the agent in ``path`` over ``episodes`` fresh episodes of its task and
    environment, run ``batch_size`` at a time without learning (the agent's plasticity still runs within each
    episode): mean, standard deviation and the half-width of the 95% interval of the mean. ``seed`` and
    ``batch_size`` pick the episodes. ``task``, if given, is the task the checkpoint must hold."""
    if episodes < 1 or batch_size < 1:
        raise ConfigError(f"--episodes and --batch-size must be at least 1, got {episodes} and {batch_size}")
    saved_task, cfg, agent = load_agent(path, device)
    if task is not None and saved_task != task:
        raise CheckpointError(f"{path} holds a {saved_task} agent; use `plasticnet eval {saved_task}`")
    generator = torch.Generator(device=device)
    generator.manual_seed(EVAL_SEED_OFFSET + seed)
    totals = []
    with torch.no_grad():
        for start in range(0, episodes, batch_size):
            env = cfg.make_env(min(batch_size, episodes - start), device, seed=EVAL_SEED_OFFSET + seed + start)
            totals.append(rollout(agent, env, generator, greedy=greedy).rewards.sum(0))
    totals = torch.cat(totals).double()
    std = totals.std().item() if episodes > 1 else 0.0
    return {"task": saved_task, "agent": cfg.agent, "env": cfg.env, "episodes": episodes, "greedy": greedy,
            "mean_reward": totals.mean().item(), "std": std, "ci95": 1.96 * std / math.sqrt(episodes)}


def add_eval_arguments(parser) -> None:
    """``plasticnet eval maze|cue-reward``."""
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="a run directory, its checkpoint.pt, or an exported model")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes to average (default 1000)")
    parser.add_argument("--batch-size", type=int, default=100, help="episodes run at once (default 100)")
    parser.add_argument("--greedy", action="store_true",
                        help="take the most likely action (default: sample, as in training)")
    parser.add_argument("--seed", type=int, default=0, help="which evaluation episodes (default 0; drawn apart "
                                                            "from the training episodes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def evaluate(args) -> int:
    """Mean total reward per episode of a trained agent, with its 95% interval."""
    import json

    from .loop import resolve_device

    result = evaluate_agent(args.checkpoint, args.episodes, args.batch_size, args.seed, args.greedy,
                            resolve_device(args.device), task=args.task)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['task']} ({result['env']}), agent {result['agent']}: mean reward {result['mean_reward']:.3f} "
              f"+- {result['ci95']:.3f} (95% interval) over {result['episodes']} episodes, "
              f"{'greedy' if result['greedy'] else 'sampled'} actions")
    return 0
