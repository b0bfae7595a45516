"""Penn Treebank loader, vocabulary and batchify, on tiny files in the official format."""
from pathlib import Path

import pytest
import torch

from plasticnet.data.validate import check
from plasticnet.data.ptb import batchify, load_ptb
from plasticnet.data.sources import file_md5
from plasticnet.errors import ConfigError, DataError

TEXT = {
    "train": " the cat sat \n the dog <unk> \n",
    "valid": " the dog sat \n",
    "test": " <unk> cat \n\n",
}


@pytest.fixture
def ptb_root(tmp_path: Path) -> Path:
    for split, text in TEXT.items():
        (tmp_path / f"ptb.{split}.txt").write_text(text)
    return tmp_path


def test_vocabulary_in_first_appearance_order_with_eos_after_each_line(ptb_root):
    corpus = load_ptb(ptb_root)
    assert corpus.vocab == ["the", "cat", "sat", "<eos>", "dog", "<unk>"]
    assert corpus.train.tolist() == [0, 1, 2, 3, 0, 4, 5, 3]
    assert corpus.valid.tolist() == [0, 4, 2, 3]
    assert corpus.test.tolist() == [5, 1, 3, 3]  # an empty line is still a sentence end
    assert all(t.dtype == torch.int64 for t in (corpus.train, corpus.valid, corpus.test))


def test_word_unseen_in_train_names_file_and_line(ptb_root):
    (ptb_root / "ptb.valid.txt").write_text(" the cat \n a bird \n")
    with pytest.raises(DataError, match=r"ptb\.valid\.txt line 2 has 'a'"):
        load_ptb(ptb_root)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.unlink(), "is missing"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b" the cat sat \n the do"), "does not end with a newline"),
        (lambda p: p.write_bytes(b" the \xff\n"), "is not UTF-8"),
    ],
    ids=["missing", "empty", "truncated", "binary"],
)
def test_bad_file_gives_one_line_with_file_and_fix(ptb_root, damage, reason):
    damage(ptb_root / "ptb.train.txt")
    with pytest.raises(DataError) as caught:
        check("ptb", ptb_root)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{ptb_root / 'ptb.train.txt'} {reason}" in message
    assert f"run `plasticnet data download ptb --root {ptb_root}`" in message


def test_check_counts_tokens_and_compares_md5_only_for_known_names(ptb_root):
    assert check("ptb", ptb_root, checksums={}) == "ptb: usable (8 / 4 / 4 tokens, 6 words)"
    known = {f"ptb.{s}.txt": file_md5(ptb_root / f"ptb.{s}.txt") for s in TEXT}
    assert check("ptb", ptb_root, checksums=known).startswith("ptb: usable")


def test_check_rejects_a_file_that_differs_from_the_official_one(ptb_root):
    with pytest.raises(DataError, match=r"ptb\.train\.txt has md5 \w+, not the official f26c4b92"):
        check("ptb", ptb_root)


def test_batchify_makes_contiguous_columns_and_drops_the_remainder():
    batches = batchify(torch.arange(11), 3)
    assert batches.shape == (3, 3)
    assert batches[:, 0].tolist() == [0, 1, 2]
    assert batches[:, 2].tolist() == [6, 7, 8]
    assert batches.is_contiguous()


@pytest.mark.parametrize("tokens, size", [(torch.arange(4), 0), (torch.arange(4), 5), (torch.zeros(2, 2), 1)])
def test_batchify_rejects_impossible_shapes(tokens, size):
    with pytest.raises(ConfigError):
        batchify(tokens, size)
