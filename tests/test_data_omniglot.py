"""Omniglot loader on a tiny tree in the real layout, zipped, extracted and nested."""
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plasticnet.data.validate import check
from plasticnet.data.omniglot import load_omniglot
from plasticnet.errors import ConfigError, DataError

# Sorted (alphabet, character) order; names chosen so that creation order below differs from it.
CHARACTERS = [("Alpha", "character01"), ("Alpha", "character02"), ("Beta", "character01"), ("Beta", "character02")]
DRAWINGS = ["0101_01.png", "0101_02.png", "0101_03.png"]


def drawing(index: int) -> bytes:
    """105x105 binary PNG like the originals (ink black = 0 on white), with 5 * (index + 1) inked columns, so that
    the ink count tells which drawing landed where."""
    pixels = np.full((105, 105), 255, np.uint8)
    pixels[:, : 5 * (index + 1)] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def members(prefix: str = "images_background/") -> list[tuple[str, bytes]]:
    """Reverse order, so that anything relying on archive or directory order gets it wrong."""
    found = []
    for c, (alphabet, character) in enumerate(CHARACTERS):
        for d, name in enumerate(DRAWINGS):
            found.append((f"{prefix}{alphabet}/{character}/{name}", drawing(3 * c + d)))
    return found[::-1]


def write_zip(path: Path, entries, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def write_tree(root: Path, entries) -> Path:
    for name, data in entries:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def zipped(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "images_background.zip", members())


def ink_columns(images: np.ndarray) -> np.ndarray:
    return images.sum(axis=(-1, -2)) / 105


def test_sorted_characters_with_ink_as_one(zipped):
    chars = load_omniglot(zipped, size=105)
    assert chars.images.shape == (4, 3, 105, 105) and chars.images.dtype == np.float32
    assert list(zip(chars.alphabets, chars.characters)) == CHARACTERS
    assert np.array_equal(ink_columns(chars.images), 5 * (np.arange(12).reshape(4, 3) + 1))
    assert set(np.unique(chars.images)) == {0.0, 1.0}
    assert chars.images[2, 1, 50, 0] == 1.0 and chars.images[2, 1, 50, 104] == 0.0
    assert len(chars) == 4


def test_resize_averages_area_into_zero_one(zipped):
    chars = load_omniglot(zipped, size=21)  # 105 = 5 * 21: each output pixel is the mean of a 5x5 block
    assert chars.images.shape == (4, 3, 21, 21)
    assert np.allclose(chars.images[0, 0, :, 0], 1.0) and np.allclose(chars.images[0, 0, :, 1:], 0.0)
    odd = load_omniglot(zipped).images  # 31 does not divide 105: partial pixels, still within [0, 1]
    assert odd.shape == (4, 3, 31, 31) and odd.min() >= 0.0 and odd.max() <= 1.0
    assert 0.0 < odd[0, 0, 0, 1] < 1.0


@pytest.mark.parametrize("prefix", ["", "images_background/", "omniglot/images_background/"])
def test_extracted_trees_at_any_depth_match_the_zip(zipped, tmp_path, prefix):
    expected = load_omniglot(zipped)
    chars = load_omniglot(write_tree(tmp_path / "tree", members(prefix)))
    assert np.array_equal(chars.images, expected.images)
    assert (chars.alphabets, chars.characters) == (expected.alphabets, expected.characters)


def test_folder_of_zips_merges_sets_and_keeps_shared_characters_once(tmp_path):
    write_zip(tmp_path / "small1.zip", [m for m in members("small1/") if "/Alpha/" in m[0] or "/Beta/" in m[0]])
    write_zip(tmp_path / "small2.zip", [m for m in members("small2/") if "/Beta/" in m[0]]
              + [(f"small2/Gamma/character01/{n}", drawing(0)) for n in DRAWINGS])
    chars = load_omniglot(tmp_path)
    assert list(zip(chars.alphabets, chars.characters)) == CHARACTERS + [("Gamma", "character01")]


def test_zip_wins_over_its_extracted_copy(zipped, tmp_path):
    write_tree(tmp_path, members()[1:])  # an interrupted unzip: one drawing short
    assert load_omniglot(tmp_path).images.shape == (4, 3, 31, 31)


def test_check_reports_and_compares_md5_for_official_names(zipped):
    summary = "omniglot: usable (4 characters in 2 alphabets, 3 drawings each)"
    assert check("omniglot", zipped.parent, checksums={}) == summary
    assert check("omniglot", zipped, checksums={}).startswith("omniglot: usable (4 characters")
    with pytest.raises(DataError, match=r"images_background\.zip has md5 \w+, not the official 68d2efa1"):
        check("omniglot", zipped.parent)


def flip_inside_first_png(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 8] ^= 0xFF
    path.write_bytes(bytes(data))


def bad_zip(entries, compression=zipfile.ZIP_DEFLATED):
    return lambda folder: write_zip(folder / "images_background.zip", entries, compression)


def garbage(folder: Path) -> None:
    (folder / "images_background.zip").write_bytes(b"not a zip")


def cut_short(folder: Path) -> None:
    path = write_zip(folder / "images_background.zip", members())
    path.write_bytes(path.read_bytes()[:3000])


def two_versions(folder: Path) -> None:
    write_zip(folder / "a.zip", members())
    write_zip(folder / "b.zip", members()[1:])


ZIP = "images_background.zip"


@pytest.mark.parametrize(
    "make, culprit, reason",
    [
        (garbage, ZIP, "is not a readable zip"),
        (cut_short, ZIP, "is not a readable zip"),
        (lambda d: flip_inside_first_png(bad_zip(members(), zipfile.ZIP_STORED)(d)), ZIP, "is damaged at images_"),
        (bad_zip([("Alpha/0101_01.png", drawing(0))]), ZIP, "breaks the layout"),
        (bad_zip(members() + [("x/A/c/extra/1.png", drawing(0))]), ZIP, "x/A/c/extra/1.png, which breaks the layout"),
        (bad_zip(members()[1:]), f"{ZIP}:images_background/Beta/character02", "has 2 drawings, other characters 3"),
        (bad_zip([("Alpha/c/1.png", b"garbage")]), f"{ZIP}:Alpha/c/1.png", "is not a readable PNG"),
        (bad_zip([("readme.txt", b"hi")]), ZIP, "holds no PNG"),
        (two_versions, "", "has two different versions of Beta/character02"),
        (lambda d: None, "", "holds no Omniglot zip"),
    ],
    ids=[
        "garbage", "partial", "bad-crc", "too-shallow", "mixed-depth",
        "uneven", "bad-png", "no-png", "conflict", "empty",
    ],
)
def test_bad_data_gives_one_line_with_file_and_fix(tmp_path, make, culprit, reason):
    make(tmp_path)
    with pytest.raises(DataError, match=re.escape(reason)) as caught:
        check("omniglot", tmp_path, checksums={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / culprit}".rstrip("/") if culprit else str(tmp_path))
    assert message.endswith(f"run `plasticnet data download omniglot --root {tmp_path}`")


def test_missing_source_and_bad_size(tmp_path, zipped):
    with pytest.raises(DataError, match=f"does not exist; run .* --root {tmp_path}`$"):
        load_omniglot(tmp_path / "nowhere.zip")
    with pytest.raises(ConfigError):
        load_omniglot(zipped, size=0)
