"""The loaders on the real data sets in ../shared/data (or $PLASTICNET_SHARED_DATA); skipped where that is absent."""
import os
from pathlib import Path

import numpy as np
import pytest

from plasticnet.data import check, load_cifar10, load_omniglot, load_ptb


def shared(name: str) -> Path:
    base = os.environ.get("PLASTICNET_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = Path(base) / name
    if not folder.is_dir():
        pytest.skip(f"no shared data at {folder}")
    return folder


@pytest.fixture(scope="module")
def corpus():
    return load_ptb(shared("ptb"))


@pytest.fixture(scope="module")
def small():
    folder = shared("omniglot")
    return [load_omniglot(folder / f"images_background_small{i}.zip") for i in (1, 2)]


def test_ptb_has_the_standard_token_counts_and_vocabulary(corpus):
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929589, 73760, 82430)
    assert len(corpus.vocab) == 10000 and {"<eos>", "<unk>"} <= set(corpus.vocab)
    assert int(corpus.train.max()) == 9999
    assert check("ptb", shared("ptb")) == "ptb: usable (929589 / 73760 / 82430 tokens, 10000 words)"


def test_omniglot_small_background_subsets(small):
    one, two = small
    assert one.images.shape == (136, 20, 31, 31) and two.images.shape == (156, 20, 31, 31)
    alphabets = [set(part.alphabets) for part in small]
    assert [len(a) for a in alphabets] == [5, 5]  # 10 alphabet folders in all...
    assert alphabets[0] & alphabets[1] == {"Greek", "Latin"}  # ...of which 2 appear in both, so 8 distinct
    ink = one.images.mean()
    assert 0.02 < ink < 0.2  # strokes are thin: ink must be the minority value, or the polarity is wrong


def test_omniglot_folder_of_both_subsets_counts_shared_characters_once(small):
    folder = shared("omniglot")
    both = load_omniglot(folder)
    assert len(both) == 242 and len(set(both.alphabets)) == 8
    index = both.alphabets.index("Greek")
    assert np.array_equal(both.images[index], small[0].images[small[0].alphabets.index("Greek")])
    assert check("omniglot", folder) == "omniglot: usable (242 characters in 8 alphabets, 20 drawings each)"


def test_cifar10_kaggle_subset():
    folder = shared("cifar10-subset")
    images, labels = load_cifar10(folder, "train")
    # The subset's trainLabels.csv holds ids 1..1000, but its 1000 images have ids up to 1663: 505 are labelled.
    assert images.shape == (505, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (505,) and labels.min() >= 0 and labels.max() <= 9
    test_images, test_labels = load_cifar10(folder, "test")
    assert test_images.shape == (100, 32, 32, 3) and test_labels is None
    assert check("cifar10", folder) == (
        "cifar10: usable (Kaggle PNGs: 505 labelled train images (495 without a label in trainLabels.csv, skipped), "
        "100 unlabelled test images)"
    )
