"""Word-level language modelling on Penn Treebank with plastic and neuromodulated plastic LSTMs (backpropamine,
section 4.3; reference/backpropamine.md section 5).

Conditions (``model``): ``lstm`` (the plain LSTM baseline), ``plastic`` (learned eta), ``modplast`` (simple
neuromodulation) and ``modul`` (retroactive neuromodulation with eligibility traces). With ``match_parameters``
every condition other than ``lstm`` gets the largest hidden size whose model has no more parameters than the LSTM
with ``hidden_size`` units: this gives the paper's 1149 against 1150 for the large model.

Presets (``configs/ptb.json``): ``small``, the paper's basic setting (Zaremba et al.'s small model: 2 layers of 200,
20-step BPTT, SGD lr 1 halved each epoch after the 4th, 13 epochs); ``large``, the AWD-LSTM-based model of the
paper's runs (3 layers, 400-d tied embedding, the reference's dropouts, AR/TAR, random BPTT lengths with the lr
scaled by length, SGD lr 30 then averaged SGD after epoch 126, alpha gradients divided by 1149).

One training iteration is one BPTT segment. The experiment keeps its own place (epoch, segment, row) and the
recurrent state, traces included: carried across the segments of an epoch and detached at each boundary, reset at
each epoch and at each evaluation (reference section 5.4). At the end of each epoch it logs ``epoch``,
``train_ppl`` and ``val_ppl``.

Under torchrun (:mod:`plasticnet.train.distributed`) each process trains a contiguous block of the batch's columns
(token streams) and carries its own columns' recurrent state; dropout masks are drawn for the whole batch, so every
process draws what one process would; validation is scored on a block of the validation columns and the sums
added across processes. A checkpoint holds the whole batch's state, gathered from every process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig, from_dict, require_choice, require_positive, require_range
from ..data.ptb import batchify, load_ptb
from ..errors import CheckpointError, ConfigError, DataError
from ..fast.backends import check_backend
from ..layers import ALPHA_MODES, describe_backend
from ..lstm import (MODULATOR_INPUTS, LSTMState, PlasticLSTM, detach_state, locked_dropout, state_tensors,
                    states_from_tensors)
from ..rules import RULES
from ..train import distributed
from ..train.cuda_graph import GraphedIteration

CONDITIONS = {
    "lstm": dict(rule=None),
    "plastic": dict(modulation=None),
    "modplast": dict(modulation="simple"),
    "modul": dict(modulation="retroactive"),
}
REPO = Path(__file__).resolve().parents[3]


@dataclass
class PtbConfig(RunConfig):
    """``iterations`` caps the number of BPTT segments; 0 runs the whole schedule of ``epochs``.

    ``time_summed_loss``: the cross-entropy is summed over a segment's time steps and averaged over the batch,
    which is the cost Zaremba et al.'s learning rate of 1 (and gradient clip of 5) applies to; otherwise it is
    averaged over tokens, as AWD-LSTM's lr of 30 assumes.

    ``cuda_graph``: on a CUDA device (one process), each segment of the full ``bptt`` length runs its forward pass,
    loss, backward pass and clipping as one replayed CUDA graph (:class:`~plasticnet.train.cuda_graph.GraphedIteration`;
    the plastic LSTM there is the cell stepped under autograd, hundreds of small kernels a segment); other lengths
    run eagerly. Same results; ``--no-cuda-graph`` (``cuda_graph=false``) runs every segment eagerly.
    """

    data: str = ""
    model: str = "lstm"
    epochs: int = 13
    bptt: int = 20
    random_bptt: bool = False
    emsize: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    tied: bool = False
    match_parameters: bool = True
    alpha: str = "per_neuron"
    rule: str = "clip"
    trace_clip: float = 2.0
    fanout: bool = True
    modulator_input: str = "hidden"
    init_range: float = 0.1
    dropout: float = 0.0
    dropouth: float = 0.0
    dropouti: float = 0.0
    dropoute: float = 0.0
    ar: float = 0.0
    tar: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    time_summed_loss: bool = False
    lr_decay: float = 0.5
    lr_decay_after: int = 4
    alpha_grad_divisor: float = 1.0
    asgd_epoch: int = 0
    eval_batch_size: int = 10
    test_batch_size: int = 1
    backend: str = "auto"  # what runs the plastic LSTM (plasticnet.fast.backends)
    cuda_graph: bool = True  # on a GPU, replay each full-length segment's step as a CUDA graph (PtbExperiment)

    min_iterations: ClassVar[int] = 0  # 0: the whole schedule of epochs

    def validate(self) -> None:
        super().validate()
        require_choice(self, "model", CONDITIONS)
        require_choice(self, "rule", RULES)
        require_choice(self, "alpha", ALPHA_MODES)
        require_choice(self, "modulator_input", MODULATOR_INPUTS)
        check_backend(self.backend)
        require_positive(self, "epochs", "bptt", "emsize", "hidden_size", "num_layers", "eval_batch_size",
                         "test_batch_size")
        for name in ("dropout", "dropouth", "dropouti", "dropoute"):
            require_range(self, name, 0, 1, high_open=True)
        for name in ("alpha_grad_divisor", "grad_clip", "trace_clip", "init_range"):
            require_range(self, name, 0, math.inf, low_open=True)
        for name in ("ar", "tar", "weight_decay"):
            require_range(self, name, 0, math.inf)
        require_range(self, "lr_decay", 0, 1, low_open=True)
        if self.lr_decay_after < 0 or self.asgd_epoch < 0:
            raise ConfigError(f"lr_decay_after and asgd_epoch must be >= 0 (0: from the start, or never), got "
                              f"{self.lr_decay_after} and {self.asgd_epoch}")

    @property
    def cell_options(self) -> dict:
        options = {**dict(rule=self.rule, alpha=self.alpha, clip=self.trace_clip), **CONDITIONS[self.model]}
        if options.get("modulation") is not None:
            options.update(fanout=self.fanout, modulator_input=self.modulator_input)
        return options

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: ``lr * lr_decay ** max(0, epoch + 1 - lr_decay_after)``."""
        return self.lr * self.lr_decay ** max(0, epoch + 1 - self.lr_decay_after)


def data_root(data: str) -> Path:
    """``--data``, else ``$PLASTICNET_SHARED_DATA/ptb``, else ``../shared/data/ptb`` next to the checkout."""
    if data:
        return Path(data)
    shared = os.environ.get("PLASTICNET_SHARED_DATA")
    root = Path(shared) / "ptb" if shared else REPO.parent / "shared" / "data" / "ptb"
    if not root.is_dir():
        raise DataError(f"no Penn Treebank folder at {root}; pass --data DIR, or fetch it with "
                        f"`plasticnet data download ptb --root DIR`")
    return root


def embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole word types (rows of the embedding) for one forward pass, scaling survivors by 1/(1-p)."""
    if not training or p == 0:
        return weight
    return weight * (weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p))


class LanguageModel(nn.Module):
    """Embedding, stacked (plastic) LSTM, softmax decoder (tied to the embedding with ``tied``: the last layer is
    then ``emsize`` wide). Embedding and decoder weights start at ``U(-init_range, init_range)``, decoder bias 0.
    ``batch_shard``: None, or ``(batch, part)`` when the model trains on the examples ``part`` of a batch of
    ``batch`` (:func:`plasticnet.lstm.locked_dropout`)."""

    def __init__(self, cfg: PtbConfig, vocab_size: int, hidden_size: int):
        super().__init__()
        self.cfg = cfg
        sizes = [hidden_size] * (cfg.num_layers - 1) + [cfg.emsize if cfg.tied else hidden_size]
        # a given weight skips nn.Embedding's own N(0, 1) draw, which on the meta device costs seconds of imports
        self.encoder = nn.Embedding(vocab_size, cfg.emsize, _weight=torch.empty(vocab_size, cfg.emsize))
        self.rnn = PlasticLSTM(cfg.emsize, sizes, cfg.num_layers, dropout=cfg.dropouth, backend=cfg.backend,
                               **cfg.cell_options)
        self.decoder_weight = None if cfg.tied else nn.Parameter(torch.empty(vocab_size, sizes[-1]))
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))
        self.batch_shard: Optional[tuple[int, slice]] = None
        with torch.no_grad():
            self.encoder.weight.uniform_(-cfg.init_range, cfg.init_range)
            if self.decoder_weight is not None:
                self.decoder_weight.uniform_(-cfg.init_range, cfg.init_range)

    def forward(self, tokens: torch.Tensor, states=None):
        """``tokens`` (T, B) -> logits (T, B, vocab), new states, last layer's raw and dropped outputs."""
        cfg = self.cfg
        embedding = embedding_dropout(self.encoder.weight, cfg.dropoute, self.training)
        x = locked_dropout(F.embedding(tokens, embedding), cfg.dropouti, self.training, self.batch_shard)
        raw, states = self.rnn(x, states, self.batch_shard)
        dropped = locked_dropout(raw, cfg.dropout, self.training, self.batch_shard)
        decoder = self.encoder.weight if self.decoder_weight is None else self.decoder_weight
        return aligned_linear(dropped, decoder, self.decoder_bias), states, raw, dropped


def aligned_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with the shared width padded with zeros to a multiple of 8 where it is not one
    (the same values; the padding's gradient is dropped). Matrix-product libraries run an odd width's products
    slowly: the decoder of the parameter-matched plastic conditions (199 units, 10,000 words, 400 tokens) took
    103 ms of a training step on one CPU thread, against 80 ms at the plain LSTM's 200 units."""
    pad = -x.shape[-1] % 8
    if pad == 0:
        return F.linear(x, weight, bias)
    return F.linear(F.pad(x, (0, pad)), F.pad(weight, (0, pad)), bias)


def count_parameters(cfg: PtbConfig, vocab_size: int, hidden_size: int) -> int:
    """Parameters of a model, counted on the meta device: nothing is allocated, so the large model costs ms."""
    with torch.device("meta"):
        return sum(p.numel() for p in LanguageModel(cfg, vocab_size, hidden_size).parameters())


def matched_hidden_size(cfg: PtbConfig, vocab_size: int) -> int:
    """``hidden_size`` for the LSTM; for the other conditions with ``match_parameters``, the largest size whose
    model has no more parameters than that LSTM (the paper's parameter matching)."""
    if cfg.model == "lstm" or not cfg.match_parameters:
        return cfg.hidden_size
    budget = count_parameters(replace(cfg, model="lstm", backend="auto"), vocab_size, cfg.hidden_size)
    hidden = cfg.hidden_size
    while hidden > 1 and count_parameters(cfg, vocab_size, hidden) > budget:
        hidden -= 1
    return hidden


def segment_lengths(n_rows: int, cfg: PtbConfig, epoch: int) -> list[int]:
    """BPTT segment lengths covering the rows of one epoch. Fixed ``bptt``; or with ``random_bptt`` (AWD-LSTM):
    ``bptt`` with probability 0.95 else ``bptt / 2``, then ``max(5, int(N(that, 5)))`` capped at ``bptt + 10``.
    Drawn from (seed, epoch), so a resumed run sees the same segments."""
    targets = n_rows - 1
    if targets < 1:
        return []
    rng = np.random.default_rng([cfg.seed, epoch])
    if cfg.random_bptt:  # drawn in bulk: at most targets / 5 + 1 segments are needed
        count = targets // 5 + 1
        base = np.where(rng.random(count) < 0.95, cfg.bptt, cfg.bptt / 2)
        lengths = np.minimum(np.maximum(5, rng.normal(base, 5).astype(int)), cfg.bptt + 10)
    else:
        lengths = np.full(targets // cfg.bptt + 1, cfg.bptt)
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, targets))
    lengths = lengths[:last + 1].copy()
    lengths[-1] -= ends[last] - targets
    return lengths.tolist()


def mean_loss(model: LanguageModel, data: torch.Tensor, bptt: int) -> float:
    """Cross-entropy per token (nats) over a batchified stream: state and traces start at zero and carry across
    segments, plasticity keeps running, no dropout."""
    return summed_loss(model, data, bptt).item() / ((data.shape[0] - 1) * data.shape[1])


@torch.no_grad()
def summed_loss(model: LanguageModel, data: torch.Tensor, bptt: int) -> torch.Tensor:
    """The cross-entropy summed over every token of a batchified stream (float64), as :func:`mean_loss` scores it."""
    was_training = model.training
    model.eval()
    states, total = None, torch.zeros((), device=data.device, dtype=torch.float64)
    for row in range(0, data.shape[0] - 1, bptt):
        length = min(bptt, data.shape[0] - 1 - row)
        logits, states, _, _ = model(data[row:row + length], states)
        total += F.cross_entropy(logits.flatten(0, 1), data[row + 1:row + 1 + length].flatten(), reduction="sum")
    model.train(was_training)
    return total


class PtbExperiment:
    """SGD on BPTT segments (loss: cross-entropy, plus AR and TAR when set); epochs, validation, averaging."""

    metrics = ("val_ppl", "train_ppl", "loss")
    data_parallel = True  # under torchrun, each process trains its block of the batch's columns

    def __init__(self, cfg: PtbConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        corpus = load_ptb(data_root(cfg.data))
        self.vocab_size = len(corpus.vocab)
        self.hidden_size = matched_hidden_size(cfg, self.vocab_size)
        self.model = LanguageModel(cfg, self.vocab_size, self.hidden_size).to(device)
        self.model.rnn.chosen_backend()  # a backend that cannot run here is refused now
        self.shard = distributed.shard(cfg.batch_size)  # this process's columns: all of them in one process
        self.model.batch_shard = (cfg.batch_size, self.shard)
        self.net = distributed.wrap(self.model)
        self.train_data = batchify(corpus.train, cfg.batch_size)[:, self.shard].contiguous().to(device)
        # Validation columns are split too when they split evenly; otherwise every process scores all of them.
        # Either way the sums of losses and of tokens added over the processes give the one-process mean.
        k = distributed.world_size()
        valid = distributed.shard(cfg.eval_batch_size) if cfg.eval_batch_size % k == 0 else slice(None)
        self.valid_data = batchify(corpus.valid, cfg.eval_batch_size)[:, valid].contiguous().to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.divided = [cell.alpha for cell in self.model.rnn.cells if cell.plastic and cell.alpha.dim() < 2]
        counts = [len(segment_lengths(self.train_data.shape[0], cfg, e)) for e in range(cfg.epochs)]
        self.planned_iterations = sum(counts)
        self.epoch, self.segment, self.row = 0, 0, 0
        self.lengths = segment_lengths(self.train_data.shape[0], cfg, 0)
        self.states = None
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.tokens = 0
        self.best_val, self.best = math.inf, None
        self.average: Optional[list[torch.Tensor]] = None
        self.averaged_steps = 0
        self.pending: Optional[dict] = None
        graphed = device.type == "cuda" and cfg.cuda_graph and distributed.world_size() == 1
        self.graph = GraphedIteration(self._graphed_gradients) if graphed else None
        self._state_like = self.model.rnn.initial_state(1)  # which fields the graph's flat states fill

    def describe(self) -> dict:
        rnn = self.model.rnn
        return {"hidden_sizes": rnn.hidden_sizes, "backend": describe_backend(rnn.backend, rnn.cells[0]),
                "cuda_graph": self.graph is not None, "vocabulary": self.vocab_size,
                "segments_first_epoch": len(self.lengths)}

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if self.epoch >= cfg.epochs:
            raise ConfigError(f"the schedule of {cfg.epochs} epochs is complete; raise --epochs to train further")
        if self.segment == 0:
            self.states = None  # every epoch starts from zero state and zero traces
        length = self.lengths[self.segment]
        x = self.train_data[self.row:self.row + length]
        y = self.train_data[self.row + 1:self.row + 1 + length]
        lr = cfg.lr_at(self.epoch) * (length / cfg.bptt if cfg.random_bptt else 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.graph is not None and length == cfg.bptt:
            states = self.states if self.states is not None else self.model.rnn.initial_state(x.shape[1])
            out = self.graph(x, y, *(t.detach() for t in state_tensors(states)))
            ce, self.states = out.pop("ce"), states_from_tensors(out.values(), self._state_like)
        else:  # with a graph, the gradients stay in the tensors it writes (GraphedIteration)
            ce, self.states = self._gradients(x, y, detach_state(self.states), set_to_none=self.graph is None)
        self.optimizer.step()
        if self.average is not None:
            self._accumulate_average()
        self.loss_sum += ce.detach() * y.numel()
        self.tokens += y.numel()
        self.segment += 1
        self.row += length
        if self.segment == len(self.lengths):
            self._end_epoch()
        return {"loss": ce.detach(), "lr": torch.tensor(lr)}

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, states, set_to_none: bool = True):
        """The segment's loss, backward pass, alpha-gradient division and clipping (the step but the update): the
        cross-entropy per token (detached) and the new states (not detached)."""
        cfg = self.cfg
        logits, states, raw, dropped = self.net(x, states)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss = ce * x.shape[0] if cfg.time_summed_loss else ce
        if cfg.ar:
            loss = loss + cfg.ar * dropped.square().mean()
        if cfg.tar:
            loss = loss + cfg.tar * (raw[1:] - raw[:-1]).square().mean()
        self.optimizer.zero_grad(set_to_none=set_to_none)
        loss.backward()
        if cfg.alpha_grad_divisor != 1:  # before clipping, as the original, so it also changes the clip
            for alpha in self.divided:
                alpha.grad.div_(cfg.alpha_grad_divisor)
        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        return ce.detach(), states

    def _graphed_gradients(self, x: torch.Tensor, y: torch.Tensor, *flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`_gradients` with the states as a flat list of tensors, for :class:`GraphedIteration`."""
        ce, states = self._gradients(x, y, states_from_tensors(flat, self._state_like))
        return {"ce": ce, **{f"state{i}": t.detach() for i, t in enumerate(state_tensors(states))}}

    def _accumulate_average(self) -> None:
        """Averaged SGD with t0 = 0 and lambda = 0 (the original's ASGD): a running mean of every step's weights."""
        self.averaged_steps += 1
        with torch.no_grad():
            for mean, p in zip(self.average, self.model.parameters()):
                mean.lerp_(p, 1 / self.averaged_steps)

    def weights_for_evaluation(self) -> dict:
        """The averaged weights once averaging runs, else the current ones (a state dict)."""
        weights = self.model.state_dict()
        if self.average is not None:
            names = [name for name, _ in self.model.named_parameters()]
            weights.update(zip(names, self.average))
        return weights

    def _validation_loss(self, weights: dict) -> float:
        if self.average is None:
            return self._score_validation()
        current = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(weights)
        try:
            return self._score_validation()
        finally:
            self.model.load_state_dict(current)

    def _score_validation(self) -> float:
        tokens = (self.valid_data.shape[0] - 1) * self.valid_data.shape[1]
        return _per_token(summed_loss(self.model, self.valid_data, self.cfg.bptt), tokens)

    def _end_epoch(self) -> None:
        cfg = self.cfg
        train_loss = _per_token(self.loss_sum, self.tokens)
        weights = self.weights_for_evaluation()
        val_loss = self._validation_loss(weights)
        if val_loss < self.best_val:
            self.best_val = val_loss
            self.best = {k: v.detach().clone() for k, v in weights.items()}
        self.pending = {"epoch": self.epoch + 1, "train_ppl": math.exp(train_loss), "val_ppl": math.exp(val_loss)}
        if cfg.asgd_epoch and self.epoch + 1 == cfg.asgd_epoch and self.average is None:
            self.average = [p.detach().clone() for p in self.model.parameters()]
            self.averaged_steps = 0
        self.epoch += 1
        self.segment, self.row = 0, 0
        self.loss_sum.zero_()
        self.tokens = 0
        if self.epoch < cfg.epochs:
            self.lengths = segment_lengths(self.train_data.shape[0], cfg, self.epoch)

    def validate(self, iteration: int, final: bool) -> dict:
        """The end-of-epoch values (``epoch``, ``train_ppl``, ``val_ppl``), once, right after the step that finished
        the epoch; nothing otherwise (the validation itself runs at the end of each epoch, in :meth:`step`)."""
        pending, self.pending = self.pending, None
        return pending or {}

    def state_dict(self) -> dict:
        """The one-process state whatever the number of processes: under torchrun (where every process calls this)
        the recurrent state of every process's columns, and the sums of the epoch's losses and tokens over them."""
        tokens = distributed.total(torch.tensor(self.tokens, device=self.device)).item()
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "segment": self.segment, "row": self.row,
                "states": _plain_states(self.states), "loss_sum": distributed.total(self.loss_sum), "tokens": tokens,
                "best_val": self.best_val, "best": self.best, "average": self.average,
                "averaged_steps": self.averaged_steps, "meta": {"epoch": self.epoch, "segment": self.segment}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.segment, self.row = state["epoch"], state["segment"], state["row"]
        self.states = _layer_states(state["states"], self.shard)
        self.loss_sum, self.tokens = state["loss_sum"], state["tokens"]
        if distributed.rank() != 0:  # the saved sums cover every process's columns: rank 0 alone carries them on
            self.loss_sum, self.tokens = torch.zeros_like(self.loss_sum), 0
        self.best_val, self.best = state["best_val"], state["best"]
        self.average, self.averaged_steps = state["average"], state["averaged_steps"]
        if self.epoch < self.cfg.epochs:
            self.lengths = segment_lengths(self.train_data.shape[0], self.cfg, self.epoch)


def _per_token(loss_sum: torch.Tensor, tokens: int) -> float:
    """Loss per token over every process's columns, from this process's sum of losses and count of tokens."""
    sums = distributed.total(torch.stack([loss_sum.double(), loss_sum.new_tensor(tokens, dtype=torch.float64)]))
    return sums[0].item() / sums[1].item()


def _plain_states(states):
    """The recurrent state of the whole batch (under torchrun, every process's columns gathered in rank order) as
    plain tuples of tensors, which a checkpoint loads without code (LSTMState is a class of ours)."""
    if states is None:
        return None
    return [tuple(None if t is None else distributed.gather_rows(t.detach()) for t in layer) for layer in states]


def _layer_states(states, columns: slice):
    """A checkpoint's recurrent state (the whole batch's), restricted to this process's ``columns``."""
    if states is None:
        return None
    return [LSTMState(*(None if t is None else t[columns] for t in layer)) for layer in states]


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="checkpoint.pt of a ptb run (or its run directory)")
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="best: the weights of the best validation epoch (last when no epoch has ended)")
    parser.add_argument("--data", help="PTB folder (default: the run's)")
    parser.add_argument("--batch-size", type=int, help="default: the run's test_batch_size (1, as the paper)")
    parser.add_argument("--device", help="default: the run's")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (perplexity, loss, tokens, split, weights)")


def evaluate(args) -> int:
    from ..train.checkpoint import read_model
    from ..train.loop import resolve_device

    path = args.checkpoint
    state = read_model(path, "cpu")
    if state["task"] != "ptb":
        raise CheckpointError(f"{path} holds a {state['task']} run, not ptb; use `plasticnet eval {state['task']}`")
    saved = state["config"]
    cfg = from_dict(PtbConfig, {**saved, "data": args.data or saved["data"], "device": args.device or saved["device"]})
    device = resolve_device(cfg.device)
    corpus = load_ptb(data_root(cfg.data))
    model = LanguageModel(cfg, len(corpus.vocab), matched_hidden_size(cfg, len(corpus.vocab)))
    extra, meta = state["extra"], state["meta"]
    use_best = args.weights == "best" and "best" in extra
    model.load_state_dict(extra["best"] if use_best else state["model"])
    if not use_best and "average" in extra:  # the last weights of averaged SGD are the average
        with torch.no_grad():
            for p, mean in zip(model.parameters(), extra["average"]):
                p.copy_(mean)
    batch = args.batch_size or cfg.test_batch_size
    data = batchify(getattr(corpus, args.split), batch).to(device)
    loss = mean_loss(model.to(device), data, cfg.bptt)
    which = "best" if use_best else "last"
    tokens = (data.shape[0] - 1) * batch
    if args.json:
        print(json.dumps({"perplexity": math.exp(loss), "loss": loss, "tokens": tokens, "split": args.split,
                          "weights": which, "batch_size": batch, "epoch": meta.get("epoch"),
                          "segment": meta.get("segment")}))
        return 0
    print(f"ptb {args.split}: perplexity {math.exp(loss):.2f} (loss {loss:.4f} nats/token, {tokens} tokens, "
          f"batch {batch}, {'best-validation' if use_best else 'last'} weights after "
          f"{meta.get('epoch', '?')} epochs + {meta.get('segment', '?')} segments)")
    return 0
