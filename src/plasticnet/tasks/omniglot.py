"""Omniglot one-shot classification (Miconi et al. 2018, section 4.3; reference/differentiable-plasticity.md section 4).

An N-way k-shot episode picks N classes, labels them 0..N-1 in the order picked, and shows k labelled drawings of
each (every round of N in a fresh order), each for ``presentation_time`` steps followed by ``gap`` blank steps; then a
new drawing of one of the N classes, unlabelled, for ``test_time`` steps. The network must name its class.

The network is a convolutional embedding (four 3x3 stride-2 convolutions, 31 -> 15 -> 7 -> 3 -> 1) under a plastic
feed-forward output layer (:class:`~plasticnet.layers.PlasticLinear`, Oja's rule): during a labelled step the label is
added to the logits with gain 1000, which saturates the softmax to the label ("clamping"), and Oja's rule moves that
label's column of the trace towards the drawing's embedding. Memory across steps lives only in the trace.

Training drawings can be varied beyond the paper's quarter turns (all off in the paper's presets, training episodes
only): ``shift`` moves each drawing by whole pixels, ``tilt`` and ``zoom`` turn and scale it a little, and
``mirror`` mirrors a character (all its drawings in the episode) one time in two, as a new class.

Departures from the original, on purpose: support and query drawings of a class are always distinct (the original
drew them independently, so the query repeated the support drawing one time in 20); episodes come in batches; class
splits are fixed per seed and stored in the checkpoint, so evaluation always uses the classes the model never saw.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig, from_dict, require_choice, require_positive, require_range
from ..data import OmniglotCharacters, load_omniglot
from ..data.local import resolve_data
from ..errors import CheckpointError, ConfigError, DataError
from ..layers import ACTIVATIONS, ALPHA_MODES, PlasticLinear
from ..rules import RULES
from ..train import distributed
from ..train.checkpoint import read_model

SIZE = 31
SPLITS = ("paper", "vinyals", "alphabets")
# Omniglot's 20 evaluation alphabets (images_evaluation.zip); the other 30 are the background alphabets.
EVALUATION_ALPHABETS = (
    "Angelic", "Atemayar_Qelisayer", "Atlantean", "Aurek-Besh", "Avesta", "Ge_ez", "Glagolitic", "Gurmukhi",
    "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)", "Oriya", "Sylheti",
    "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG",
)
VINYALS_TRAIN = 1200
OMNIGLOT_CHARACTERS = 1623


@dataclass
class OmniglotConfig(RunConfig):
    data: str = ""
    split: str = "paper"
    test_classes: int = 100
    test_alphabets: str = ""
    train_alphabets: str = ""
    ways: int = 5
    shots: int = 1
    presentation_time: int = 1
    gap: int = 0
    test_time: int = 1
    rotations: bool = True
    shift: int = 0  # training drawings moved by up to this many pixels each way, at random (0: as they are)
    tilt: float = 0.0  # training drawings turned by up to this many degrees each way, at random
    zoom: float = 0.0  # training drawings scaled by a random factor between 1 - zoom and 1 + zoom
    mirror: bool = False  # training characters also mirrored, at random, as new classes (like the quarter turns)
    channels: int = 64
    batch_norm: bool = False  # batch normalisation after each convolution, before the activation (not in the paper)
    activation: str = "tanh"
    rule: str = "oja"
    alpha: str = "full"
    use_w: bool = field(default=True, metadata={"flag": "w"})
    label_gain: float = 1000.0
    lr_gamma: float = 0.666
    lr_step_episodes: int = 1_000_000
    eval_every: int = 500
    eval_episodes: int = 500

    def validate(self) -> None:
        super().validate()
        require_choice(self, "split", SPLITS)
        require_choice(self, "rule", RULES)
        require_choice(self, "alpha", ALPHA_MODES)
        require_range(self, "label_gain", 0, math.inf, low_open=True)
        if self.split == "alphabets" and not _names(self.test_alphabets):
            raise ConfigError("split 'alphabets' needs --test-alphabets NAME,NAME,...")
        if self.split != "alphabets" and (self.test_alphabets or self.train_alphabets):
            given = " ".join(f"--{name.replace('_', '-')} ''" for name in ("test_alphabets", "train_alphabets")
                             if getattr(self, name))
            raise ConfigError(f"--test-alphabets and --train-alphabets go with --split alphabets; for --split "
                              f"{self.split}, clear them with {given} (a preset may set them)")
        if self.ways < 2:
            raise ConfigError(f"ways must be at least 2, got {self.ways}")
        require_positive(self, "shots", "presentation_time", "test_time", "channels", "eval_episodes",
                         "lr_step_episodes", "test_classes")
        if not 0 <= self.shift < SIZE // 2:
            raise ConfigError(f"shift must be between 0 and {SIZE // 2 - 1} pixels, got {self.shift}")
        if not 0 <= self.tilt <= 180:
            raise ConfigError(f"tilt must be between 0 and 180 degrees, got {self.tilt}")
        if not 0 <= self.zoom < 1:
            raise ConfigError(f"zoom must be at least 0 and below 1 (a scale factor 1 +- zoom), got {self.zoom}")
        if self.gap < 0 or self.eval_every < 0:
            raise ConfigError("gap and eval_every must be >= 0 (eval_every 0: no held-out evaluation)")
        if self.eval_every % self.log_every:
            raise ConfigError(f"eval_every ({self.eval_every}) must be a multiple of log_every ({self.log_every}): "
                              f"held-out results are logged with a logging point")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")

    def episode_length(self, shots: int | None = None) -> int:
        """T = k N (T_p + D) + T_test: 6 for the paper's 5-way 1-shot."""
        k = self.shots if shots is None else shots
        return k * self.ways * (self.presentation_time + self.gap) + self.test_time


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def class_keys(characters: OmniglotCharacters) -> list[str]:
    """A character's identity across data folders: ``ALPHABET/CHARACTER`` (unique in Omniglot)."""
    return [f"{a}/{c}" for a, c in zip(characters.alphabets, characters.characters)]


def split_classes(characters: OmniglotCharacters, cfg: OmniglotConfig, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test characters, both sorted.

    - ``paper``: the characters (in the loader's sorted order, so the same everywhere) shuffled with the run's seed;
      the last ``test_classes`` are held out. Miconi et al. did this on all 1623 characters with 100 held out, but
      evaluated every seed on seed 0's split; here each model keeps its own.
    - ``vinyals``: Vinyals et al.'s split of the full data set: the 964 background characters and the first 236
      evaluation characters (alphabets in alphabetical order, up to Gurmukhi/character41) train, the other 423 test.
    - ``alphabets``: whole alphabets: ``test_alphabets`` are held out; the training characters are those of
      ``train_alphabets``, or of every other alphabet when it is empty.
    """
    n = len(characters)
    alphabets = np.array(characters.alphabets)
    if cfg.split == "paper":
        if cfg.test_classes > n - cfg.ways:
            raise ConfigError(f"--test-classes {cfg.test_classes} leaves fewer than {cfg.ways} training classes of "
                              f"the {n} in {source}")
        order = np.random.RandomState(cfg.seed).permutation(n)
        train, test = order[:-cfg.test_classes], order[-cfg.test_classes:]
    elif cfg.split == "vinyals":
        evaluation = np.flatnonzero(np.isin(alphabets, EVALUATION_ALPHABETS))
        if n != OMNIGLOT_CHARACTERS or len(evaluation) != 659:
            raise DataError(f"{source} holds {n} characters; the vinyals split is defined on the full Omniglot "
                            f"({OMNIGLOT_CHARACTERS}: images_background.zip and images_evaluation.zip in one folder, "
                            f"`plasticnet data download omniglot`); use --split paper or alphabets on a subset")
        test = evaluation[VINYALS_TRAIN - (n - len(evaluation)):]
        train = np.setdiff1d(np.arange(n), test)
    else:
        present = sorted(set(characters.alphabets))
        test_names, train_names = _names(cfg.test_alphabets), _names(cfg.train_alphabets)
        unknown = sorted(set(test_names + train_names) - set(present))
        if unknown:
            raise DataError(f"{source} has no alphabet {', '.join(unknown)}; it has {', '.join(present)}")
        both = sorted(set(test_names) & set(train_names))
        if both:
            raise ConfigError(f"alphabet(s) {', '.join(both)} both in --train-alphabets and --test-alphabets")
        test = np.flatnonzero(np.isin(alphabets, test_names))
        chosen = train_names or [a for a in present if a not in test_names]
        train = np.flatnonzero(np.isin(alphabets, chosen))
    for name, part in (("training", train), ("test", test)):
        if len(part) < cfg.ways:
            raise ConfigError(f"the {cfg.split} split of {source} leaves {len(part)} {name} classes, fewer than "
                              f"--ways {cfg.ways}")
    return np.sort(train), np.sort(test)


class Episodes(NamedTuple):
    """``images`` (T, B, 31, 31), ``labels`` (T, B, N) one-hot on labelled steps and zero elsewhere, ``target`` (B,)
    the query's label."""

    images: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor


def _rotate(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate each (.., S, S) image by its own multiple of 90 degrees, counter-clockwise like numpy's rot90."""
    turned = torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)])
    index = quarter_turns.reshape(1, *quarter_turns.shape, 1, 1).expand(1, *images.shape)
    return turned.gather(0, index).squeeze(0)


def make_episodes(cfg: OmniglotConfig, pool: torch.Tensor, batch_size: int, generator: torch.Generator,
                  shots: int | None = None, mirror: bool = False) -> Episodes:
    """A batch of episodes from ``pool`` (C, D, S, S) of C classes with D drawings each.

    Classes are distinct within an episode; each is turned by its own random multiple of 90 degrees (so a turned
    character acts as a new class), the same for its support and query drawings; with ``mirror``, each is also
    mirrored (left-right, before the turn) one time in two, in the same way. A class's k support drawings and the
    query drawing are k + 1 distinct drawings.
    """
    device = pool.device
    B, N = batch_size, cfg.ways
    K = cfg.shots if shots is None else shots
    n_classes, n_drawings = pool.shape[:2]
    if n_drawings < K + 1:
        raise ConfigError(f"{K}-shot episodes need {K + 1} distinct drawings per class; the data has {n_drawings}")
    classes = torch.rand(B, n_classes, generator=generator, device=device).argsort(-1)[:, :N]
    turns = (torch.randint(4, (B, N), generator=generator, device=device) if cfg.rotations
             else torch.zeros(B, N, dtype=torch.long, device=device))
    drawings = torch.rand(B, N, n_drawings, generator=generator, device=device).argsort(-1)[..., :K + 1]
    order = torch.rand(B, K, N, generator=generator, device=device).argsort(-1)  # presentation order per round
    target = torch.randint(N, (B,), generator=generator, device=device)
    flips = torch.randint(2, (B, N), generator=generator, device=device) if mirror else None

    rows = torch.arange(B, device=device)[:, None]
    shot = torch.arange(K, device=device).repeat_interleave(N)[None]  # round of each support item
    support = order.reshape(B, K * N)  # label of each support item, in presentation order
    labels_seq = torch.cat([support, target[:, None]], 1)  # (B, K*N + 1)
    drawing_seq = torch.cat([drawings[rows, support, shot], drawings[rows[:, 0], target, K][:, None]], 1)
    images = pool[classes[rows, labels_seq], drawing_seq]  # (B, K*N + 1, S, S)
    if flips is not None:
        images = torch.where(flips[rows, labels_seq][..., None, None].bool(), images.flip(-1), images)
    images = _rotate(images, turns[rows, labels_seq])
    onehot = F.one_hot(labels_seq, N).to(pool.dtype)
    onehot[:, -1] = 0.0  # the query is unlabelled

    item_images, item_labels = images.transpose(0, 1), onehot.transpose(0, 1)  # (K*N + 1, B, ...)
    blank_image, blank_label = torch.zeros_like(item_images[0]), torch.zeros_like(item_labels[0])
    steps_images, steps_labels = [], []
    for i in range(K * N):
        steps_images += [item_images[i]] * cfg.presentation_time + [blank_image] * cfg.gap
        steps_labels += [item_labels[i]] * cfg.presentation_time + [blank_label] * cfg.gap
    steps_images += [item_images[-1]] * cfg.test_time
    steps_labels += [item_labels[-1]] * cfg.test_time
    return Episodes(torch.stack(steps_images), torch.stack(steps_labels), target)


def shift_images(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Move each (S, S) image of ``images`` (.., S, S) by its own random offset of -shift..shift pixels along each
    axis; the edge pixels (the background) fill the space left."""
    if shift == 0:
        return images
    flat = images.reshape(-1, SIZE, SIZE)
    M, device = flat.shape[0], images.device
    padded = F.pad(flat.unsqueeze(1), (shift,) * 4, mode="replicate").squeeze(1)
    offsets = torch.randint(2 * shift + 1, (2, M), generator=generator, device=device)
    span = torch.arange(SIZE, device=device)
    rows, cols = (span + offsets[0, :, None])[:, :, None], (span + offsets[1, :, None])[:, None, :]
    return padded[torch.arange(M, device=device)[:, None, None], rows, cols].reshape(images.shape)


def affine_images(images: torch.Tensor, degrees: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Turn each (S, S) image of ``images`` (M, S, S) counter-clockwise by its angle in ``degrees`` (M,) and scale it
    about its centre by its factor in ``scales`` (M,), with bilinear interpolation; the edge pixels (the background)
    fill the space left. A quarter turn of an odd-sized image moves pixel centres onto pixel centres, as rot90."""
    radians = torch.deg2rad(degrees)
    cos, sin = torch.cos(radians) / scales, torch.sin(radians) / scales
    zero = torch.zeros_like(cos)
    # affine_grid maps output coordinates (x right, y down) to input ones: the inverse of the wanted transform.
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    grid = F.affine_grid(theta.to(images.dtype), [images.shape[0], 1, *images.shape[-2:]], align_corners=False)
    return F.grid_sample(images.unsqueeze(1), grid, mode="bilinear", padding_mode="border",
                         align_corners=False).squeeze(1)


def tilt_and_zoom(images: torch.Tensor, tilt: float, zoom: float, generator: torch.Generator) -> torch.Tensor:
    """Turn each image of ``images`` (.., S, S) by its own random angle in [-tilt, tilt] degrees and scale it by its
    own random factor in [1 - zoom, 1 + zoom]."""
    if tilt == 0 and zoom == 0:
        return images
    flat = images.reshape(-1, *images.shape[-2:])
    uniform = torch.rand(2, flat.shape[0], generator=generator, device=images.device) * 2 - 1
    return affine_images(flat, tilt * uniform[0], 1 + zoom * uniform[1]).reshape(images.shape)


class Embedding(nn.Module):
    """Four 3x3 stride-2 convolutions without padding, each followed by the activation: 31x31 -> ``channels``.
    With ``batch_norm``, each convolution's output is batch-normalised before the activation: over the drawings of
    all the batch's episodes in training, with the running statistics in evaluation (``model.eval()``)."""

    def __init__(self, channels: int, activation: str, batch_norm: bool = False):
        super().__init__()
        widths = [1] + [channels] * 4
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) if batch_norm else nn.Identity() for b in widths[1:])
        self.act = ACTIVATIONS[activation]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1)
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x)))
        return x.flatten(1)


class OneShotNetwork(nn.Module):
    """Embedding + plastic softmax output layer. Parameters (64 channels, 5 ways): convolutions 111,424, plus w 320,
    alpha 320 and eta 1 = 112,065; without w (the camera-ready variant) 111,745; with one alpha 111,746; batch
    normalisation adds a scale and a shift per channel of each convolution (512)."""

    def __init__(self, cfg: OmniglotConfig):
        super().__init__()
        self.label_gain = cfg.label_gain
        self.embed = Embedding(cfg.channels, cfg.activation, cfg.batch_norm)
        self.head = PlasticLinear(cfg.channels, cfg.ways, rule=cfg.rule, alpha=cfg.alpha, activation="softmax",
                                  use_w=cfg.use_w, init="uniform", init_scale=0.01)

    def forward(self, episodes: Episodes) -> torch.Tensor:
        """The softmax output at the last (query) step, (B, N)."""
        T, B = episodes.images.shape[:2]
        x = self.embed(episodes.images.reshape(T * B, SIZE, SIZE)).reshape(T, B, -1)
        hebb = None
        for t in range(T):
            y, hebb = self.head(x[t], hebb, extra=self.label_gain * episodes.labels[t])
        return y


def episode_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between the softmax output and the one-hot target, averaged over the N outputs, as the
    original (not categorical cross-entropy)."""
    return F.binary_cross_entropy(output, F.one_hot(target, output.shape[-1]).to(output.dtype))


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.argmax(-1) == target).to(output.dtype).mean()


@torch.no_grad()
def evaluate_episodes(model: OneShotNetwork, cfg: OmniglotConfig, pool: torch.Tensor, episodes: int,
                      generator: torch.Generator, shots: int | None = None, chunk: int = 250) -> dict[str, float]:
    """Accuracy and loss over ``episodes`` episodes from ``pool``, in evaluation mode (restored afterwards)."""
    was_training, correct, done, loss = model.training, 0, 0, 0.0
    model.eval()
    try:
        while done < episodes:
            n = min(chunk, episodes - done)
            batch = make_episodes(cfg, pool, n, generator, shots)
            output = model(batch)
            correct += int((output.argmax(-1) == batch.target).sum())
            loss += float(episode_loss(output, batch.target)) * n
            done += n
    finally:
        model.train(was_training)
    return {"accuracy": correct / episodes, "loss": loss / episodes}


def load_classes(data: str, device) -> tuple[OmniglotCharacters, torch.Tensor, Path]:
    source = resolve_data(data, "omniglot", "omniglot")
    characters = load_omniglot(source, SIZE)
    return characters, torch.from_numpy(characters.images).to(device), source


class OmniglotExperiment:
    """One Adam step per batch of episodes on the training classes; the learning rate falls by ``lr_gamma`` every
    ``lr_step_episodes`` episodes (StepLR of the original, counted in episodes whatever the batch size). Every
    ``eval_every`` iterations the same ``eval_episodes`` test-class episodes give ``val_accuracy`` and ``val_loss``
    (no learning from them)."""

    metrics = ("accuracy", "loss")
    data_parallel = True  # under torchrun, each process trains its shard of the global batch

    def __init__(self, cfg: OmniglotConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        characters, images, source = load_classes(cfg.data, device)
        train, test = split_classes(characters, cfg, source)
        keys = class_keys(characters)
        self.meta = {"train_classes": [keys[i] for i in train], "test_classes": [keys[i] for i in test]}
        self.train_pool, self.test_pool = images[torch.from_numpy(train)], images[torch.from_numpy(test)]
        self.model = OneShotNetwork(cfg).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed)
        self.shard = distributed.shard(cfg.batch_size)
        self.net = distributed.wrap(self.model)

    def learning_rate(self, iteration: int) -> float:
        episodes_so_far = iteration * self.cfg.batch_size
        return self.cfg.lr * self.cfg.lr_gamma ** (episodes_so_far // self.cfg.lr_step_episodes)

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(iteration)
        e = make_episodes(self.cfg, self.train_pool, self.cfg.batch_size, self.generator, mirror=self.cfg.mirror)
        images = tilt_and_zoom(e.images, self.cfg.tilt, self.cfg.zoom, self.generator)
        images = shift_images(images, self.cfg.shift, self.generator)
        episodes = Episodes(images[:, self.shard], e.labels[:, self.shard], e.target[self.shard])
        output = self.net(episodes)
        loss = episode_loss(output, episodes.target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"accuracy": accuracy(output.detach(), episodes.target), "loss": loss.detach()}

    def validate(self, iteration: int, final: bool) -> dict[str, float]:
        if self.cfg.eval_every == 0 or not (final or iteration % self.cfg.eval_every == 0):
            return {}
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.cfg.seed + 1)  # the same test episodes at every evaluation
        result = evaluate_episodes(self.model, self.cfg, self.test_pool, self.cfg.eval_episodes, generator)
        return {f"val_{k}": v for k, v in result.items()}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "meta": self.meta}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


def ci95(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of a success rate, 1.96 sqrt(p (1 - p) / n), as in the
    original's test script and the few-shot literature."""
    return 1.96 * math.sqrt(p * (1 - p) / n)


def add_eval_arguments(parser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="run directory, checkpoint.pt or exported file")
    parser.add_argument("--data", help="Omniglot zip or folder (ALPHABET/CHARACTER/*.png, or zips of such trees; "
                                       "default: the one the run trained on); characters the model was trained on "
                                       "are left out")
    parser.add_argument("--ways", type=int, help="classes per episode (default and only choice: the model's)")
    parser.add_argument("--shots", type=int, help="labelled drawings per class (default: the model's)")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="which test episodes (default 0)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def evaluate(args) -> int:
    """``plasticnet eval omniglot``: accuracy on characters never seen in training, with its 95% interval."""
    from ..train.loop import resolve_device

    device = resolve_device(args.device)
    saved = read_model(args.checkpoint, device)
    if saved["task"] != "omniglot":
        raise CheckpointError(f"{args.checkpoint} holds a {saved['task']} model, not an omniglot one; "
                              f"use `plasticnet eval {saved['task']}`")
    cfg = from_dict(OmniglotConfig, saved["config"])
    ways = cfg.ways if args.ways is None else args.ways
    shots = cfg.shots if args.shots is None else args.shots
    if ways != cfg.ways:
        raise ConfigError(f"this model was trained {cfg.ways}-way: its output layer has {cfg.ways} units, so "
                          f"--ways must be {cfg.ways}")
    if shots < 1 or args.episodes < 1:
        raise ConfigError(f"--shots and --episodes must be at least 1, got {shots} and {args.episodes}")
    if "train_classes" not in saved["meta"]:
        raise CheckpointError(f"{args.checkpoint} does not record its training classes; it predates class splits")
    model = OneShotNetwork(cfg).to(device)
    model.load_state_dict(saved["model"])
    model.eval()
    characters, images, source = load_classes(args.data or cfg.data, device)
    seen = set(saved["meta"]["train_classes"])
    unseen = [i for i, key in enumerate(class_keys(characters)) if key not in seen]
    if len(unseen) < ways:
        raise DataError(f"{source} holds {len(unseen)} characters this model was not trained on; {ways}-way "
                        f"episodes need at least {ways}")
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)
    result = evaluate_episodes(model, cfg, images[torch.tensor(unseen, device=device)], args.episodes, generator,
                               shots)
    alphabets = sorted({characters.alphabets[i] for i in unseen})
    report = {"accuracy": result["accuracy"], "ci95": ci95(result["accuracy"], args.episodes),
              "episodes": args.episodes, "ways": ways, "shots": shots, "classes": len(unseen),
              "alphabets": alphabets}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"omniglot {ways}-way {shots}-shot: accuracy {100 * report['accuracy']:.1f}% "
              f"+- {100 * report['ci95']:.1f}% (95% CI) over {args.episodes} episodes on {len(unseen)} characters "
              f"never seen in training ({len(alphabets)} alphabet{'s' * (len(alphabets) != 1)})")
    return 0
