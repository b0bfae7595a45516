"""CIFAR-10 from both releases, on tiny fixtures in each real format."""
import csv
import re
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plasticnet.data.validate import check
from plasticnet.data.cifar10 import BATCH_FILES, CLASSES, load_cifar10
from plasticnet.errors import ConfigError, DataError

PER_BATCH = 4


def write_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """Protocol 2 and bytes keys, as the official Python 2 pickles are read with encoding='bytes'."""
    path.write_bytes(pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=2))


@pytest.fixture
def batches(tmp_path: Path) -> Path:
    """The official layout: every image is filled with its global index, so order is checkable pixel by pixel."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate(BATCH_FILES["train"] + BATCH_FILES["test"]):
        first = i * PER_BATCH
        rows = np.repeat(np.arange(first, first + PER_BATCH, dtype=np.uint8)[:, None], 3072, axis=1)
        write_batch(folder / name, rows, [(first + k) % 10 for k in range(PER_BATCH)])
    return tmp_path


@pytest.fixture
def kaggle(tmp_path: Path) -> Path:
    """Kaggle's layout: train/ID.png, test/ID.png, trainLabels.csv; ids deliberately not in string order."""
    rng = np.random.default_rng(0)
    for split, ids in (("train", [2, 10, 1]), ("test", [3, 1])):
        (tmp_path / split).mkdir()
        for i in ids:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / split / f"{i}.png")
    with (tmp_path / "trainLabels.csv").open("w", newline="") as stream:
        csv.writer(stream).writerows([("id", "label"), (1, "frog"), (2, "truck"), (10, "airplane")])
    return tmp_path


def test_python_batches_give_hwc_uint8_images_and_labels_in_file_order(batches):
    images, labels = load_cifar10(batches, "train")
    assert images.shape == (5 * PER_BATCH, 32, 32, 3) and images.dtype == np.uint8
    assert images[:, 0, 0, 0].tolist() == list(range(5 * PER_BATCH))
    assert labels.dtype == np.int64 and labels.tolist() == [k % 10 for k in range(5 * PER_BATCH)]
    test_images, test_labels = load_cifar10(batches / "cifar-10-batches-py", "test")
    assert test_images.shape == (PER_BATCH, 32, 32, 3) and test_labels.shape == (PER_BATCH,)


def test_channel_planes_become_the_last_axis(tmp_path):
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_batch(folder / "test_batch", row[None], [3])
    images, _ = load_cifar10(tmp_path, "test")
    assert images[0, 5, 7].tolist() == [10, 20, 30]


def test_kaggle_pngs_sorted_by_numeric_id_with_labels_from_csv(kaggle):
    images, labels = load_cifar10(kaggle, "train")
    expected = [np.asarray(Image.open(kaggle / "train" / f"{i}.png")) for i in (1, 2, 10)]
    assert np.array_equal(images, np.stack(expected))
    assert [CLASSES[k] for k in labels] == ["frog", "truck", "airplane"]
    test_images, test_labels = load_cifar10(kaggle, "test")
    assert test_images.shape == (2, 32, 32, 3) and test_labels is None


def test_kaggle_subset_folders_and_unlabelled_images(kaggle):
    (kaggle / "train").rename(kaggle / "train_3samples")
    (kaggle / "test").rename(kaggle / "test_2samples")
    Image.new("RGB", (32, 32)).save(kaggle / "train_3samples" / "77.png")
    images, labels = load_cifar10(kaggle, "train")
    assert len(images) == len(labels) == 3
    assert check("cifar10", kaggle) == (
        "cifar10: usable (Kaggle PNGs: 3 labelled train images (1 without a label in trainLabels.csv, skipped), "
        "2 unlabelled test images)"
    )


def test_check_python_batches_verifies_official_md5s(batches):
    assert check("cifar10", batches, checksums={}) == "cifar10: usable (python batches: 20 train / 4 test images)"
    with pytest.raises(DataError, match=r"data_batch_1 has md5 \w+, not the official c99cafc1"):
        check("cifar10", batches)


def test_tampered_pickle_is_refused_without_running_it(batches, tmp_path):
    marker = tmp_path / "ran"
    (batches / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (Path.touch, (marker,))})())
    )
    with pytest.raises(DataError, match=r"data_batch_3 is not a readable CIFAR-10 batch"):
        load_cifar10(batches)
    assert not marker.exists()


def one_line(message: str, path: Path, root: Path) -> None:
    assert "\n" not in message
    assert message.startswith(str(path))
    assert message.endswith(f"run `plasticnet data download cifar10 --root {root}`")


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.unlink(), "is missing"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "is not a readable CIFAR-10 batch"),
        (lambda p: p.write_bytes(b""), "is not a readable CIFAR-10 batch"),
        (lambda p: write_batch(p, np.zeros((2, 100), np.uint8), [0, 1]), "not (N, 3072) uint8"),
        (lambda p: write_batch(p, np.zeros((2, 3072), np.uint8), [0, 10]), "labels outside 0..9"),
        (lambda p: write_batch(p, np.zeros((2, 3072), np.uint8), ["cat", "dog"]), "labels that are not integers"),
        (lambda p: p.write_bytes(pickle.dumps({b"data": 1}, protocol=2)), "lacks the b'data' and b'labels'"),
    ],
    ids=["missing", "partial", "empty", "wrong-shape", "bad-label", "text-label", "wrong-keys"],
)
def test_bad_batch(batches, damage, reason):
    path = batches / "cifar-10-batches-py" / "data_batch_2"
    damage(path)
    with pytest.raises(DataError, match=re.escape(reason)) as caught:
        check("cifar10", batches, checksums={})
    one_line(str(caught.value), path, batches)


@pytest.mark.parametrize(
    "damage, culprit, reason",
    [
        (lambda r: (r / "trainLabels.csv").unlink(), "trainLabels.csv", "is missing"),
        (lambda r: (r / "trainLabels.csv").write_text("id,label\n1,frog\n2,tiger\n"), "trainLabels.csv", "line 3"),
        (lambda r: (r / "trainLabels.csv").write_text("1,frog\n"), "trainLabels.csv", "header id,label"),
        (lambda r: (r / "trainLabels.csv").write_text("id,label\n1,frog\n1,cat\n"), "trainLabels.csv", "repeats id 1"),
        (lambda r: (r / "trainLabels.csv").write_bytes(b"id,label\n\xff\n"), "trainLabels.csv", "is not a CSV text"),
        (lambda r: (r / "train" / "2.png").write_bytes(b"\x89PNG\r\n"), "train/2.png", "is not a readable PNG"),
        (lambda r: Image.new("L", (32, 32)).save(r / "train" / "2.png"), "train/2.png", "not 32x32 RGB"),
        (lambda r: Image.new("RGB", (8, 8)).save(r / "train" / "2.png"), "train/2.png", "not 32x32 RGB"),
        (lambda r: (r / "train" / "cat.png").write_bytes(b""), "train/cat.png", "numeric ID"),
        (lambda r: [p.unlink() for p in (r / "test").iterdir()], "test", "holds no ID.png"),
        (lambda r: (r / "train_b").mkdir(), "", "several train"),
    ],
    ids=[
        "no-csv", "bad-class", "no-header", "duplicate", "binary-csv",
        "partial-png", "gray", "small", "bad-name", "empty", "ambiguous",
    ],
)
def test_bad_kaggle(kaggle, damage, culprit, reason):
    damage(kaggle)
    with pytest.raises(DataError, match=re.escape(reason)) as caught:
        check("cifar10", kaggle)
    one_line(str(caught.value), kaggle / culprit, kaggle)


def test_unextracted_tarball_and_unknown_folder(tmp_path):
    with pytest.raises(DataError, match="holds neither"):
        load_cifar10(tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match="is not extracted"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(ConfigError):
        load_cifar10(tmp_path, "valid")
