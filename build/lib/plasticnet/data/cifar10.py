"""CIFAR-10 from either release people actually have: the official python pickles or Kaggle's PNG files."""
from __future__ import annotations

import csv
import io
import pickle
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from plasticnet.data._fault import data_error
from plasticnet.errors import ConfigError

_bad = partial(data_error, "cifar10")

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCH_FOLDER = "cifar-10-batches-py"
BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
LABELS_CSV = "trainLabels.csv"
TARBALL = "cifar-10-python.tar.gz"


def load_cifar10(
    root: Path | str, split: str = "train", with_labels: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 indexing CLASSES; labels are None for Kaggle's test images,
    which were released unlabelled. The layout is detected rather than configured, so one --root works for both.

    ``with_labels=False`` is for tasks that need only pixels (image completion): labels come back None, and Kaggle
    training images without a row in trainLabels.csv are kept instead of skipped."""
    if split not in BATCH_FILES:
        raise ConfigError(f"unknown CIFAR-10 split {split!r}; choose train or test")
    root = Path(root)
    if not root.is_dir():
        raise _bad(root, "is not a folder", root)
    batches = batch_folder(root)
    if batches is not None:
        images, labels = _load_batches(batches, split, root)
        return images, labels if with_labels else None
    if (root / LABELS_CSV).is_file() or kaggle_folder(root, "train") or kaggle_folder(root, "test"):
        return _load_kaggle(root, split, with_labels)
    if (root / TARBALL).is_file():
        raise _bad(root / TARBALL, f"is not extracted (no {BATCH_FOLDER}/ next to it)", root)
    raise _bad(root, f"holds neither {BATCH_FOLDER}/ nor Kaggle's {LABELS_CSV} and PNG folders", root)


def batch_folder(root: Path) -> Path | None:
    """Accept both the folder that holds cifar-10-batches-py/ and that folder itself."""
    for candidate in (root / BATCH_FOLDER, root):
        if any((candidate / name).exists() for names in BATCH_FILES.values() for name in names):
            return candidate
    return None


class _ArraysOnly(pickle.Unpickler):
    """The batches are pickles; allowing only what rebuilds numpy arrays and bytes keeps a tampered file from running
    code. Both numpy module spellings appear: numpy 2 renamed numpy.core, and old files keep the old name."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refuses to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise _bad(path, "is missing", root)
    try:
        batch = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:  # a damaged pickle can fail in many ways; all mean "replace this file"
        raise _bad(path, f"is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})", root) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise _bad(path, "lacks the b'data' and b'labels' entries of a CIFAR-10 batch", root)
    data = np.asarray(batch[b"data"])
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError):
        raise _bad(path, "has labels that are not integers", root) from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _bad(path, f"holds {data.dtype} data of shape {data.shape}, not (N, 3072) uint8", root)
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(CLASSES):
        raise _bad(path, f"has {labels.size} labels for {len(data)} images or labels outside 0..9", root)
    # Stored channel-major (3 planes of 32x32 per row); callers want height, width, channel like every image library.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_batches(folder: Path, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(folder / name, root) for name in BATCH_FILES[split]]
    return np.ascontiguousarray(np.concatenate([p[0] for p in parts])), np.concatenate([p[1] for p in parts])


def _read_labels(path: Path, root: Path) -> dict[int, int]:
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _bad(path, f"is not a CSV text file ({exc})", root) from None
    if not rows or [cell.strip() for cell in rows[0]] != ["id", "label"]:
        raise _bad(path, "does not start with the header id,label", root)
    labels: dict[int, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip().isdigit() or row[1].strip() not in CLASSES:
            raise _bad(path, f"line {number} is not ID,CLASS with a CIFAR-10 class: {','.join(row)!r}", root)
        image_id = int(row[0])
        if image_id in labels:
            raise _bad(path, f"line {number} repeats id {image_id}", root)
        labels[image_id] = CLASSES.index(row[1].strip())
    return labels


def kaggle_folder(root: Path, split: str) -> Path | None:
    """Kaggle names them train/ and test/, subsets append a suffix (train_1000samples/); a bare folder of PNGs is
    taken as labelled training images."""
    found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(split))
    if len(found) > 1:
        raise _bad(root, f"has several {split}* folders ({', '.join(p.name for p in found)}); keep one", root)
    if found:
        return found[0]
    if split == "train" and any(root.glob("*.png")):
        return root
    return None


def _read_png(path: Path, root: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image)
            mode = image.mode
    except Exception as exc:  # PIL reports truncation and garbage with assorted exception types
        raise _bad(path, f"is not a readable PNG ({exc})", root) from None
    if pixels.shape != (32, 32, 3) or mode != "RGB":
        raise _bad(path, f"is a {mode} image of shape {pixels.shape}, not 32x32 RGB", root)
    return pixels


def _png_ids(folder: Path, root: Path) -> dict[int, Path]:
    paths = {}
    for path in folder.glob("*.png"):
        if not path.stem.isdigit():
            raise _bad(path, "is not named ID.png with a numeric ID", root)
        paths[int(path.stem)] = path
    if not paths:
        raise _bad(folder, "holds no ID.png images", root)
    return paths


def _load_kaggle(root: Path, split: str, with_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Training images without a row in trainLabels.csv are left out, and rows without an image are ignored: subsets
    keep Kaggle's full label table but only some of the images, and an unlabelled image cannot be trained on."""
    folder = kaggle_folder(root, split)
    if folder is None:
        raise _bad(root / split, "is missing (no folder of ID.png images)", root)
    paths = _png_ids(folder, root)
    if split == "test" or not with_labels:
        return np.stack([_read_png(paths[i], root) for i in sorted(paths)]), None
    labels_csv = root / LABELS_CSV
    if not labels_csv.is_file():
        raise _bad(labels_csv, "is missing", root)
    table = _read_labels(labels_csv, root)
    labelled = sorted(set(paths) & set(table))
    if not labelled:
        raise _bad(folder, f"holds no image with a label in {LABELS_CSV}", root)
    images = np.stack([_read_png(paths[i], root) for i in labelled])
    return images, np.array([table[i] for i in labelled], dtype=np.int64)
