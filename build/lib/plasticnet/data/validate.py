"""Is a data folder usable? Loading it is the only honest answer, so `check` loads, then compares md5s where the file
is one the official release names."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from plasticnet.data import cifar10, omniglot, ptb
from plasticnet.data._fault import data_error
from plasticnet.data.sources import KNOWN_MD5, dataset_name, file_md5


def check(name: str, root: Path | str, checksums: Mapping[str, str] = KNOWN_MD5) -> str:
    """One line describing what `root` holds, or DataError. `checksums` maps file names to md5s; the default holds the
    official files, and a file whose name is not in it is checked for format only."""
    root = Path(root)
    summary = {"cifar10": _cifar10, "omniglot": _omniglot, "ptb": _ptb}[dataset_name(name)](root, checksums)
    return f"{name}: usable ({summary})"


def _verify(paths: list[Path], checksums: Mapping[str, str], name: str, root: Path) -> None:
    for path in paths:
        expected = checksums.get(path.name)
        if expected is not None and (actual := file_md5(path)) != expected:
            problem = f"has md5 {actual}, not the official {expected} (modified or partial copy)"
            raise data_error(name, path, problem, root)


def _ptb(root: Path, checksums: Mapping[str, str]) -> str:
    corpus = ptb.load_ptb(root)
    _verify([ptb.split_path(root, split) for split in ptb.SPLITS], checksums, "ptb", root)
    counts = " / ".join(str(len(getattr(corpus, split))) for split in ptb.SPLITS)
    return f"{counts} tokens, {len(corpus.vocab)} words"


def _cifar10(root: Path, checksums: Mapping[str, str]) -> str:
    train_images, train_labels = cifar10.load_cifar10(root, "train")
    folder = cifar10.batch_folder(root)
    if folder is not None:
        test_images, _ = cifar10.load_cifar10(root, "test")
        _verify([folder / f for files in cifar10.BATCH_FILES.values() for f in files], checksums, "cifar10", root)
        return f"python batches: {len(train_images)} train / {len(test_images)} test images"
    pngs = sum(1 for _ in cifar10.kaggle_folder(root, "train").glob("*.png"))
    found = f"Kaggle PNGs: {len(train_images)} labelled train images"
    if pngs > len(train_images):
        found += f" ({pngs - len(train_images)} without a label in {cifar10.LABELS_CSV}, skipped)"
    if cifar10.kaggle_folder(root, "test") is not None:
        found += f", {len(cifar10.load_cifar10(root, 'test')[0])} unlabelled test images"
    return found


def _omniglot(root: Path, checksums: Mapping[str, str]) -> str:
    characters = omniglot.load_omniglot(root)
    if root.is_file():
        _verify([root], checksums, "omniglot", root.parent)
    else:
        _verify(sorted(root.glob("*.zip")), checksums, "omniglot", root)
    return (
        f"{len(characters)} characters in {len(set(characters.alphabets))} alphabets, "
        f"{characters.images.shape[1]} drawings each"
    )
