"""Penn Treebank (Mikolov's 10k-word version) as the token streams word-level language models train on."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from plasticnet.data._fault import data_error
from plasticnet.errors import ConfigError

_bad = partial(data_error, "ptb")

EOS = "<eos>"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Corpus:
    """Token ids share one vocabulary so that a model trained on `train` can be scored on `valid` and `test`."""

    vocab: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor


def split_path(root: Path | str, split: str) -> Path:
    return Path(root) / f"ptb.{split}.txt"


def _read_lines(path: Path, root: Path) -> list[list[str]]:
    """Rejects what a broken download looks like: absent, empty, not text, or cut off before the final newline."""
    if not path.is_file():
        raise _bad(path, "is missing", root)
    raw = path.read_bytes()
    if not raw:
        raise _bad(path, "is empty", root)
    if not raw.endswith(b"\n"):
        raise _bad(path, "does not end with a newline (truncated download?)", root)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(path, f"is not UTF-8 text (byte {exc.start})", root) from None
    return [line.split() + [EOS] for line in text.split("\n")[:-1]]


def load_ptb(root: Path | str) -> Corpus:
    """Vocabulary in first-appearance order over train, so ids are reproducible without storing a vocabulary file.

    Every line ends in `<eos>` (as in Zaremba et al. and AWD-LSTM), which gives the usual 929,589 / 73,760 / 82,430
    tokens. A valid or test word missing from train means the files do not belong together, so that is an error
    rather than a silent `<unk>`.
    """
    root = Path(root)
    ids: dict[str, int] = {}
    streams = {}
    for split in SPLITS:
        path = split_path(root, split)
        tokens = []
        for number, words in enumerate(_read_lines(path, root), start=1):
            for word in words:
                if split == "train":
                    tokens.append(ids.setdefault(word, len(ids)))
                elif word in ids:
                    tokens.append(ids[word])
                else:
                    raise _bad(path, f"line {number} has {word!r}, which ptb.train.txt never uses", root)
        streams[split] = torch.tensor(tokens, dtype=torch.int64)
    return Corpus(vocab=list(ids), **streams)


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(T, B): column b is one contiguous slice of the stream, so hidden state can carry over between windows.

    The last len(tokens) % batch_size tokens are dropped rather than padded, as in Zaremba et al.
    """
    if tokens.dim() != 1:
        raise ConfigError(f"batchify needs a 1-D token stream, got shape {tuple(tokens.shape)}")
    if not 1 <= batch_size <= tokens.numel():
        raise ConfigError(f"batch size {batch_size} does not fit a stream of {tokens.numel()} tokens")
    steps = tokens.numel() // batch_size
    return tokens[: steps * batch_size].view(batch_size, steps).t().contiguous()
