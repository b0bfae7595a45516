"""Omniglot characters as one array, read from zips or extracted folders alike.

A character is identified by (alphabet, character folder), as in the data set's own layout
ALPHABET/characterNN/NNNN_MM.png; whatever wraps that tree (images_background/, a zip, a folder of zips) is ignored.
"""
from __future__ import annotations

import io
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image

from plasticnet.data._fault import data_error
from plasticnet.errors import ConfigError

_bad = partial(data_error, "omniglot")

LAYOUT = "ALPHABET/CHARACTER/NAME.png"

# (alphabet, character) -> {file name: (where, read)}: `where` names the drawing in messages, `read` fetches its bytes.
Drawings = dict[str, tuple[str, Callable[[], bytes]]]
Tree = dict[tuple[str, str], Drawings]


@dataclass(frozen=True)
class OmniglotCharacters:
    """images[c, d] is drawing d of character c, ink = 1 on a 0 background, so that ink is what a network sees as
    activity; alphabets[c] and characters[c] name character c. Sorted by (alphabet, character, file name), so an
    index means the same character on every machine."""

    images: np.ndarray
    alphabets: tuple[str, ...]
    characters: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def _visible(parts: tuple[str, ...]) -> bool:
    """Archivers add __MACOSX/ and dot files that look like PNGs but are not drawings."""
    return not any(part.startswith((".", "__MACOSX")) for part in parts)


def _tree(found: dict[tuple[str, ...], tuple[str, Callable[[], bytes]]], where: Path, fix_root: Path) -> Tree:
    """One depth per source, so a stray or misplaced PNG is an error rather than a new character."""
    depths = {len(parts) for parts in found}
    if len(depths) > 1 or min(depths) < 3:
        odd = min(found, key=len) if min(depths) < 3 else max(found, key=len)
        raise _bad(where, f"has {'/'.join(odd)}, which breaks the layout [FOLDER/]{LAYOUT}", fix_root)
    tree: Tree = {}
    for parts, drawing in found.items():
        tree.setdefault((parts[-3], parts[-2]), {})[parts[-1]] = drawing
    return tree


def _read_member(archive: zipfile.ZipFile, name: str, path: Path, fix_root: Path) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC mismatch or a cut-off archive
        raise _bad(path, f"is damaged at {name} ({exc})", fix_root) from None


def _zip_tree(path: Path, fix_root: Path, stack: ExitStack) -> Tree:
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad(path, f"is not a readable zip ({exc})", fix_root) from None
    found = {}
    for name in archive.namelist():
        parts = PurePosixPath(name).parts
        if name.lower().endswith(".png") and _visible(parts):
            found[parts] = (f"{path}:{name}", partial(_read_member, archive, name, path, fix_root))
    if not found:
        raise _bad(path, f"holds no PNG in the layout {LAYOUT}", fix_root)
    return _tree(found, path, fix_root)


def _folder_tree(folder: Path, skip: set[str]) -> Tree:
    found = {}
    for png in folder.rglob("*.png"):
        parts = png.relative_to(folder).parts
        if parts[0] not in skip and _visible(parts):
            found[parts] = (str(png), png.read_bytes)
    return _tree(found, folder, folder) if found else {}


def _sources(source: Path, fix_root: Path, stack: ExitStack) -> list[Tree]:
    """Zips win over a folder of the same name beside them: they carry a checksum, an unzip may have stopped halfway."""
    if source.is_file():
        return [_zip_tree(source, fix_root, stack)]
    if not source.is_dir():
        raise _bad(source, "does not exist", fix_root)
    zips = sorted(source.glob("*.zip"))
    trees = [_zip_tree(path, fix_root, stack) for path in zips]
    loose = _folder_tree(source, {path.stem for path in zips})
    trees += [loose] if loose else []
    if not trees:
        raise _bad(source, f"holds no Omniglot zip and no PNG in the layout {LAYOUT}", fix_root)
    return trees


def _merge(trees: list[Tree], source: Path, fix_root: Path) -> Tree:
    """A character in two sources (Greek is in both small background subsets) is kept once if its drawings agree,
    and every character must have the same number of drawings to fit one array."""
    merged: Tree = {}
    for tree in trees:
        for key, drawings in tree.items():
            if key in merged and set(merged[key]) != set(drawings):
                raise _bad(source, f"has two different versions of {'/'.join(key)}", fix_root)
            merged.setdefault(key, drawings)
    counts = {len(drawings) for drawings in merged.values()}
    if len(counts) > 1:
        key = min(merged, key=lambda k: (len(merged[k]), k))
        where = merged[key][min(merged[key])][0].rsplit("/", 1)[0]
        raise _bad(where, f"has {len(merged[key])} drawings, other characters {max(counts)}", fix_root)
    return merged


def _pixels(data: bytes, size: int, where: str, fix_root: Path) -> np.ndarray:
    """BOX resampling averages whole source pixels: antialiased without ringing, so values stay in [0, 1]."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            gray = image.convert("F")
    except Exception as exc:  # PIL reports truncation and garbage with assorted exception types
        raise _bad(where, f"is not a readable PNG ({exc})", fix_root) from None
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BOX)
    return 1.0 - np.asarray(gray, dtype=np.float32) / 255.0


def load_omniglot(source: Path | str, size: int = 31) -> OmniglotCharacters:
    """`source` is a zip, a folder of zips, or an extracted tree; putting the background and evaluation zips in one
    folder loads all 1623 characters. Drawings are resized to size x size (Miconi et al. use 31)."""
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"Omniglot image size must be a positive integer, got {size!r}")
    source = Path(source)
    fix_root = source.parent if source.is_file() or source.suffix == ".zip" else source
    with ExitStack() as stack:
        characters = _merge(_sources(source, fix_root, stack), source, fix_root)
        keys = sorted(characters)
        images = np.empty((len(keys), len(characters[keys[0]]), size, size), dtype=np.float32)
        for c, key in enumerate(keys):
            for d, name in enumerate(sorted(characters[key])):
                where, read = characters[key][name]
                images[c, d] = _pixels(read(), size, where, fix_root)
    return OmniglotCharacters(images, tuple(k[0] for k in keys), tuple(k[1] for k in keys))
