"""Natural-image memorisation and completion (Miconi et al. 2018, section 4.2; reference/differentiable-plasticity.md
section 3).

An episode shows K grey-scale CIFAR-10 images, C cycles in a fresh order each cycle, each for ``presentation_time``
steps followed by ``gap`` steps without an image; then one of them with its top or bottom half erased, for
``test_time`` steps. The network has one neuron per pixel plus a bias neuron (1025 for 32x32 images) and must fill in
the erased half by the last step.

Inputs are not added to the drive, they *clamp*: a neuron that is given a value outputs exactly that value, the others
output ``tanh`` of their recurrent drive, and the trace is updated with the clamped activity. During a presentation
every neuron is clamped; during a gap only the bias; at the test the bias and the visible half. (The original decided
"clamped" by testing the input for non-zero, so a visible pixel whose value happened to be exactly 0 was left free; we
clamp by position, which is what was meant.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import RunConfig, from_dict, require_choice, require_positive
from ..data import load_cifar10
from ..data.local import resolve_data
from ..errors import CheckpointError, ConfigError
from ..layers import ALPHA_MODES, PlasticRNNCell
from ..rules import RULES
from ..train import distributed
from ..train.checkpoint import read_model

MODELS = ("plastic", "rnn")
SIDE = 32
PIXELS = SIDE * SIDE


@dataclass
class ImagesConfig(RunConfig):
    data: str = ""
    n_images: int = 3
    n_cycles: int = 3
    presentation_time: int = 20
    gap: int = 2
    test_time: int = 3
    model: str = "plastic"
    alpha: str = "full"
    rule: str = "hebb"
    eval_every: int = 1000
    eval_episodes: int = 64

    def validate(self) -> None:
        super().validate()
        require_choice(self, "model", MODELS)
        require_choice(self, "rule", RULES)
        require_choice(self, "alpha", ALPHA_MODES)
        require_positive(self, "n_images", "n_cycles", "presentation_time", "test_time", "eval_episodes")
        if self.gap < 0 or self.eval_every < 0:
            raise ConfigError("gap and eval_every must be >= 0 (eval_every 0: no held-out evaluation)")
        if self.eval_every % self.log_every:
            raise ConfigError(f"eval_every ({self.eval_every}) must be a multiple of log_every ({self.log_every}): "
                              f"held-out results are logged with a logging point")

    @property
    def episode_length(self) -> int:
        """T = C K (T_p + D) + T_test: 201 for the paper's 3 images x 3 cycles x (20 + 2) + 3."""
        return self.n_cycles * self.n_images * (self.presentation_time + self.gap) + self.test_time

    @property
    def n_neurons(self) -> int:
        return PIXELS + 1


def grayscale(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) uint8 -> (N, 1024) float32, as the original: R + G + B (a sum, not a luminance), minus the
    image's mean, divided by its largest absolute value, so every image spans [-1, 1] and touches -1 or 1."""
    gray = images.astype(np.float32).sum(-1).reshape(len(images), PIXELS)
    gray -= gray.mean(1, keepdims=True)
    return gray / (1e-8 + np.abs(gray).max(1, keepdims=True))


def load_images(data: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out images: the official release's train and test batches, or Kaggle's train and test PNG
    folders. Completion needs no labels, so unlabelled images are used too."""
    root = resolve_data(data, "cifar10", "cifar10-subset")
    train, _ = load_cifar10(root, "train", with_labels=False)
    held_out, _ = load_cifar10(root, "test", with_labels=False)
    return (torch.from_numpy(grayscale(train)).to(device), torch.from_numpy(grayscale(held_out)).to(device))


class Episodes(NamedTuple):
    """``values`` and ``clamped`` (T, B, N): what each neuron is clamped to, and whether it is; ``every_unit[t]`` says
    that step t clamps every neuron. ``shown`` (B, K, P) the images, ``probe`` (B, P) the degraded test image (erased
    pixels 0), ``target`` (B, P) the complete one, ``erased`` (B, P) the pixels to fill in."""

    values: torch.Tensor
    clamped: torch.Tensor
    every_unit: tuple[bool, ...]
    shown: torch.Tensor
    probe: torch.Tensor
    target: torch.Tensor
    erased: torch.Tensor


def make_episodes(cfg: ImagesConfig, pool: torch.Tensor, batch_size: int, generator: torch.Generator) -> Episodes:
    """A batch of episodes drawn from ``pool`` (M, P): K images with replacement, reshuffled every cycle; the test
    image is one of them with its bottom half erased, or with probability 1/2 its top half."""
    device = pool.device
    B, K, C, P = batch_size, cfg.n_images, cfg.n_cycles, PIXELS
    picks = torch.randint(len(pool), (B, K), generator=generator, device=device)
    shown = pool[picks]
    rows = torch.arange(B, device=device)
    target = shown[rows, torch.randint(K, (B,), generator=generator, device=device)]
    bottom = torch.arange(P, device=device) >= P // 2
    top = torch.rand(B, 1, generator=generator, device=device) < 0.5
    erased = torch.where(top, ~bottom, bottom)
    probe = target.masked_fill(erased, 0.0)
    order = torch.rand(B, C, K, generator=generator, device=device).argsort(-1).reshape(B, C * K)
    in_order = shown[rows[:, None], order].transpose(0, 1)  # (C*K, B, P)

    steps_values, steps_clamped, every_unit = [], [], []
    bias_only = torch.zeros(B, P + 1, dtype=torch.bool, device=device)
    bias_only[:, -1] = True
    blank = torch.zeros(B, P + 1, dtype=pool.dtype, device=device)
    blank[:, -1] = 1.0
    all_clamped = torch.ones(B, P + 1, dtype=torch.bool, device=device)
    for image in in_order:
        with_bias = torch.cat([image, blank[:, -1:]], 1)
        steps_values += [with_bias] * cfg.presentation_time + [blank] * cfg.gap
        steps_clamped += [all_clamped] * cfg.presentation_time + [bias_only] * cfg.gap
        every_unit += [True] * cfg.presentation_time + [False] * cfg.gap
    probe_values = torch.cat([probe, blank[:, -1:]], 1)
    probe_clamped = torch.cat([~erased, bias_only[:, -1:]], 1)
    steps_values += [probe_values] * cfg.test_time
    steps_clamped += [probe_clamped] * cfg.test_time
    every_unit += [False] * cfg.test_time
    return Episodes(torch.stack(steps_values), torch.stack(steps_clamped), tuple(every_unit), shown, probe, target,
                    erased)


class CompletionNetwork(nn.Module):
    """1025 fully connected tanh neurons (pixels first, the bias last), plastic (decaying Hebb, per-connection or one
    shared alpha) or not; no input weights, the episode clamps neurons instead. Parameters: 2 * 1025^2 + 1 =
    2,101,251 plastic, 1025^2 + 2 = 1,050,627 with one alpha, 1025^2 = 1,050,625 non-plastic."""

    def __init__(self, cfg: ImagesConfig):
        super().__init__()
        rule = cfg.rule if cfg.model == "plastic" else None
        self.cell = PlasticRNNCell(None, cfg.n_neurons, rule=rule, alpha=cfg.alpha, init="normal", init_scale=0.01)

    def forward(self, episodes: Episodes) -> torch.Tensor:
        """The pixel neurons' activity at the last step, (B, P)."""
        values = episodes.values
        no_input = values.new_zeros(values.shape[1:])
        state = self.cell.initial_state(values.shape[1])
        for t, every in enumerate(episodes.every_unit):
            h, state = self.cell(no_input, state, clamp=(None if every else episodes.clamped[t], values[t]))
        return h[:, :PIXELS]


def erased_mse(output: torch.Tensor, episodes: Episodes) -> torch.Tensor:
    """Mean squared error over the erased pixels (visible ones are clamped, so they are exact anyway)."""
    return ((output - episodes.target).square() * episodes.erased).sum() / episodes.erased.sum()


def baselines(episodes: Episodes) -> dict[str, torch.Tensor]:
    """Trivial completions: all zeros; the visible half's mean; and minus the visible half's mean, which is exactly the
    erased half's mean, because every image is centred over both halves (a leak of the paper's preprocessing that any
    network can learn, so the fairest constant to beat)."""
    erased, target = episodes.erased, episodes.target
    visible_mean = (target * ~erased).sum(1, keepdim=True) / (~erased).sum(1, keepdim=True)
    n = erased.sum()
    return {"zero_mse": (target.square() * erased).sum() / n,
            "mean_mse": ((target - visible_mean).square() * erased).sum() / n,
            "minus_mean_mse": ((target + visible_mean).square() * erased).sum() / n}


@torch.no_grad()
def evaluate_completion(model: CompletionNetwork, episodes: Episodes, chunk: int = 16) -> dict[str, float]:
    """Held-out completion error next to the trivial completions, over fixed episodes, ``chunk`` episodes at a time."""
    total = erased_mse_sum = 0.0
    n = episodes.target.shape[0]
    for start in range(0, n, chunk):
        part = _slice(episodes, slice(start, start + chunk))
        weight = float(part.erased.sum())
        erased_mse_sum += float(erased_mse(model(part), part)) * weight
        total += weight
    result = {"mse": erased_mse_sum / total}
    result.update({k: float(v) for k, v in baselines(episodes).items()})
    return result


def _slice(episodes: Episodes, rows: slice) -> Episodes:
    return Episodes(episodes.values[:, rows], episodes.clamped[:, rows], episodes.every_unit,
                    *(t[rows] for t in (episodes.shown, episodes.probe, episodes.target, episodes.erased)))


def held_out_episodes(cfg: ImagesConfig, pool: torch.Tensor, n: int, seed: int) -> Episodes:
    """The same held-out episodes at every evaluation of a run, so that points of a curve are comparable."""
    generator = torch.Generator(device=pool.device)
    generator.manual_seed(seed)
    return make_episodes(cfg, pool, n, generator)


class ImagesExperiment:
    """One Adam step per batch of episodes. Loss: squared error summed over the pixels at the last step, averaged
    over the batch (the paper's loss at batch size 1); clamped pixels contribute exactly zero. ``mse`` is the mean
    over erased pixels; every ``eval_every`` iterations ``val_mse`` is measured on held-out images, logged next to
    the trivial completions ``val_zero_mse``, ``val_mean_mse`` and ``val_minus_mean_mse`` (see :func:`baselines`)."""

    metrics = ("mse", "loss")
    data_parallel = True  # under torchrun, each process trains its shard of the global batch

    def __init__(self, cfg: ImagesConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.train_pool, self.held_out_pool = load_images(cfg.data, device)
        self.model = CompletionNetwork(cfg).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed)
        self.held_out = held_out_episodes(cfg, self.held_out_pool, cfg.eval_episodes, cfg.seed + 1)
        self.shard = distributed.shard(cfg.batch_size)
        self.net = distributed.wrap(self.model)

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        e = make_episodes(self.cfg, self.train_pool, self.cfg.batch_size, self.generator)
        s = self.shard
        episodes = Episodes(e.values[:, s], e.clamped[:, s], e.every_unit, e.shown[s], e.probe[s], e.target[s],
                            e.erased[s])
        output = self.net(episodes)
        loss = (output - episodes.target).square().sum(-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"mse": erased_mse(output.detach(), episodes), "loss": loss.detach()}

    def validate(self, iteration: int, final: bool) -> dict[str, float]:
        if self.cfg.eval_every == 0 or not (final or iteration % self.cfg.eval_every == 0):
            return {}
        return {f"val_{k}": v for k, v in evaluate_completion(self.model, self.held_out).items()}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


def load_network(checkpoint: Path, device) -> tuple[ImagesConfig, CompletionNetwork]:
    saved = read_model(checkpoint, device)
    if saved["task"] != "images":
        raise CheckpointError(f"{checkpoint} holds a {saved['task']} model, not an images one; "
                              f"use `plasticnet eval {saved['task']}`")
    cfg = from_dict(ImagesConfig, saved["config"])
    model = CompletionNetwork(cfg).to(device)
    model.load_state_dict(saved["model"])
    return cfg, model.eval()


def add_eval_arguments(parser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="run directory, checkpoint.pt or exported file")
    parser.add_argument("--data", help="CIFAR-10 folder (default: the one the run trained on); its test images are "
                                       "the held-out images")
    parser.add_argument("--episodes", type=int, default=256, help="held-out episodes (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="which held-out episodes (default 0)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def evaluate(args) -> int:
    """``plasticnet eval images``: completion error on held-out images against trivial completions."""
    from ..train.loop import resolve_device

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    device = resolve_device(args.device)
    cfg, model = load_network(args.checkpoint, device)
    _, held_out = load_images(args.data or cfg.data, device)
    result = evaluate_completion(model, held_out_episodes(cfg, held_out, args.episodes, args.seed))
    result["episodes"] = args.episodes
    if args.json:
        print(json.dumps(result))
    else:
        print(f"images ({cfg.model}, alpha {cfg.alpha}): erased-half MSE {result['mse']:.4f} over {args.episodes} "
              f"held-out episodes; predicting zero {result['zero_mse']:.4f}, the visible half's mean "
              f"{result['mean_mse']:.4f}, minus that mean {result['minus_mean_mse']:.4f}")
    return 0


def draw_completion(checkpoint: Path, out: Path, seed: int = 0, rows: int = 4) -> Path:
    """The paper's completion figure on held-out images: per episode, the three images shown, the degraded probe
    and the network's reconstruction at the last step."""
    from ..plot import save_figure  # first: it selects the file-only backend before pyplot loads

    import matplotlib.pyplot as plt

    device = torch.device("cpu")
    cfg, model = load_network(checkpoint, device)
    _, held_out = load_images(cfg.data, device)
    episodes = held_out_episodes(cfg, held_out, rows, seed)
    with torch.no_grad():
        output = model(episodes)
    columns = [f"image {k + 1}" for k in range(cfg.n_images)] + ["probe", "reconstruction"]
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows + 0.4), squeeze=False)
    for r in range(rows):
        panels = list(episodes.shown[r]) + [episodes.probe[r], output[r]]
        for c, (panel, title) in enumerate(zip(panels, columns)):
            ax = axes[r, c]
            ax.imshow(panel.reshape(SIDE, SIDE).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    mse = float(erased_mse(output, episodes))
    fig.suptitle(f"{cfg.model} network, held-out images (erased-half MSE {mse:.3f})", fontsize=10)
    return save_figure(fig, out, dpi=100)


FIGURES = {"completion": draw_completion}
