"""Binary pattern memorisation and completion (Miconi et al. 2018, section 4.1; reference/differentiable-plasticity.md
section 2).

An episode shows K balanced +-1 patterns, C cycles in a fresh order each cycle, each for ``presentation_time``
steps followed by ``gap`` silent steps, then one of them with exactly ``floor(degrade * P)`` bits zeroed for
``presentation_time`` steps. The network must output the complete pattern at the last step. Inputs are added inside
the tanh, multiplied by ``input_gain`` (so given bits are effectively clamped), and a bias neuron (the last one)
always receives input 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import RunConfig, require_choice, require_positive, require_range
from ..errors import ConfigError
from ..layers import ALPHA_MODES, PlasticRNN
from ..rules import RULES
from ..train import distributed

MODELS = ("plastic", "rnn", "lstm")


@dataclass
class PatternConfig(RunConfig):
    pattern_size: int = 1000
    n_patterns: int = 5
    n_cycles: int = 2
    presentation_time: int = 6
    gap: int = 4
    degrade: float = 0.5
    input_gain: float = 20.0
    model: str = "plastic"
    rule: str = "hebb"
    alpha: str = "full"
    extra_neurons: int = 0
    lstm_clamp: bool = True
    lstm_input_gain: float = 100.0
    backend: str = "auto"  # what runs the plastic RNN (plasticnet.fast.backends)

    def validate(self) -> None:
        super().validate()
        require_choice(self, "model", MODELS)
        require_choice(self, "rule", RULES)
        require_choice(self, "alpha", ALPHA_MODES)
        if self.pattern_size < 2 or self.pattern_size % 2:
            raise ConfigError(f"pattern_size must be even and at least 2 (balanced patterns), got {self.pattern_size}")
        require_positive(self, "n_patterns", "n_cycles", "presentation_time")
        if self.gap < 0 or self.extra_neurons < 0:
            raise ConfigError(f"gap and extra_neurons must be >= 0, got {self.gap} and {self.extra_neurons}")
        require_range(self, "degrade", 0, 1)
        require_range(self, "input_gain", 0, math.inf, low_open=True)
        require_range(self, "lstm_input_gain", 0, math.inf, low_open=True)

    @property
    def episode_length(self) -> int:
        """T = C K (T_p + D) + T_test, with the test as long as a presentation (106 and 11 for the presets)."""
        return self.n_cycles * self.n_patterns * (self.presentation_time + self.gap) + self.presentation_time

    @property
    def n_neurons(self) -> int:
        return self.pattern_size + self.extra_neurons + 1


def balanced_patterns(shape: tuple[int, ...], size: int, generator: torch.Generator, device) -> torch.Tensor:
    """Random +-1 vectors with exactly size/2 of each sign: a random permutation of a balanced vector."""
    ranks = torch.rand(*shape, size, generator=generator, device=device).argsort(-1)
    return torch.where(ranks < size // 2, -1.0, 1.0)


def make_episodes(cfg: PatternConfig, batch_size: int, generator: torch.Generator, device=None):
    """A batch of episodes: ``patterns`` (T, B, P) of what is shown (0 when silent) and ``target`` (B, P)."""
    P, K, C = cfg.pattern_size, cfg.n_patterns, cfg.n_cycles
    block = cfg.presentation_time + cfg.gap
    patterns = balanced_patterns((batch_size, K), P, generator, device)
    rows = torch.arange(batch_size, device=device)
    target = patterns[rows, torch.randint(K, (batch_size,), generator=generator, device=device)]
    n_zeroed = int(cfg.degrade * P)
    zeroed = torch.rand(batch_size, P, generator=generator, device=device).argsort(-1) < n_zeroed
    probe = target.masked_fill(zeroed, 0.0)
    order = torch.rand(batch_size, C, K, generator=generator, device=device).argsort(-1)
    shown = patterns[rows[:, None], order.reshape(batch_size, C * K)]  # (B, C*K, P) in presentation order
    silent = torch.zeros(batch_size, C * K, cfg.gap, P, device=device)
    on = shown.unsqueeze(2).expand(-1, -1, cfg.presentation_time, -1)
    train_part = torch.cat([on, silent], 2).reshape(batch_size, C * K * block, P)
    test_part = probe.unsqueeze(1).expand(-1, cfg.presentation_time, -1)
    return torch.cat([train_part, test_part], 1).transpose(0, 1), target


def bit_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of bits whose sign differs from the target; an output of exactly 0 counts as an error."""
    return (torch.sign(output) != target).float().mean()


def network_input(cfg: PatternConfig, shown: torch.Tensor) -> torch.Tensor:
    """(T, B, P) patterns -> (T, B, n_neurons) drive: pattern neurons, silent extra neurons, the bias neuron at 1,
    all times ``input_gain``."""
    T, B, P = shown.shape
    x = shown.new_zeros(T, B, cfg.n_neurons)
    x[..., :P] = shown
    x[..., -1] = 1.0
    return cfg.input_gain * x


class RecurrentModel(nn.Module):
    """The plastic or non-plastic RNN of the paper: the input vector has one entry per neuron (pattern neurons
    first, extra neurons next, the bias neuron last), scaled by ``input_gain`` and added inside the tanh."""

    def __init__(self, cfg: PatternConfig):
        super().__init__()
        self.cfg = cfg
        rule = cfg.rule if cfg.model == "plastic" else None
        self.rnn = PlasticRNN(None, cfg.n_neurons, rule=rule, alpha=cfg.alpha, init="normal", init_scale=0.01,
                              backend=cfg.backend)
        if rule is not None and cfg.alpha == "full":
            with torch.no_grad():  # no plastic self-connections, as in the original (zeroed once at construction)
                self.rnn.cell.alpha.fill_diagonal_(0.0)

    def forward(self, shown: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(network_input(self.cfg, shown))
        return out[-1, :, : self.cfg.pattern_size]


class LSTMModel(nn.Module):
    """The LSTM baseline: ``nn.LSTM`` with ``n_neurons`` hidden units, inputs x``lstm_input_gain``, output the
    first P hidden units at the last step. With ``lstm_clamp`` the original's gate override is re-applied before
    every forward pass: hidden unit i < P copies input i into its cell (cell-gate weight 10 on input i, input and
    output gates +10, forget gate -1000, all hidden-to-hidden biases 0)."""

    def __init__(self, cfg: PatternConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.pattern_size, cfg.n_neurons)

    @torch.no_grad()
    def _clamp(self) -> None:
        P, H = self.cfg.pattern_size, self.cfg.n_neurons
        w, b = self.lstm.weight_ih_l0, self.lstm.bias_ih_l0
        cell_rows = slice(2 * H, 2 * H + P)
        w[cell_rows] = 0.0
        w[cell_rows, :P] += 10.0 * torch.eye(P, device=w.device, dtype=w.dtype)
        for gate, value in ((0, 10.0), (1, -1000.0), (2, 0.0), (3, 10.0)):
            b[gate * H: gate * H + P] = value
        self.lstm.bias_hh_l0.zero_()

    def forward(self, shown: torch.Tensor) -> torch.Tensor:
        if self.cfg.lstm_clamp:
            self._clamp()
        out, _ = self.lstm(self.cfg.lstm_input_gain * shown)
        return out[-1, :, : self.cfg.pattern_size]


def make_model(cfg: PatternConfig) -> nn.Module:
    return LSTMModel(cfg) if cfg.model == "lstm" else RecurrentModel(cfg)


class PatternExperiment:
    """One Adam step per batch of episodes; loss = squared error on the P pattern neurons at the last step,
    summed over bits and averaged over the batch (with batch 1, exactly the paper's loss). Under torchrun each
    process draws the global batch and trains on its shard (:mod:`plasticnet.train.distributed`)."""

    metrics = ("error", "loss")
    data_parallel = True

    def __init__(self, cfg: PatternConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.model = make_model(cfg).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed)
        self.shard = distributed.shard(cfg.batch_size)
        self.net = distributed.wrap(self.model)

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        shown, target = make_episodes(self.cfg, self.cfg.batch_size, self.generator, self.device)
        shown, target = shown[:, self.shard], target[self.shard]
        output = self.net(shown)
        loss = (output - target).square().sum(-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"error": bit_error(output.detach(), target), "loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
