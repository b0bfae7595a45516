"""Fetch the official files with pooch: it verifies md5s, keeps what is already there and retries failed transfers."""
from __future__ import annotations

import tarfile
from collections.abc import Mapping
from pathlib import Path

import pooch

from plasticnet.data._fault import data_error
from plasticnet.data.cifar10 import BATCH_FILES, BATCH_FOLDER, TARBALL
from plasticnet.data.sources import DOWNLOADS, dataset_name, url_for


def download(
    name: str,
    root: Path | str,
    base_url: str | None = None,
    files: Mapping[str, str] | None = None,
    progressbar: bool = False,
    retries: int = 2,
) -> list[Path]:
    """Returns the local paths. A file already in `root` with the right md5 is not fetched again; one with a wrong
    md5 is replaced. `base_url` overrides the official site (see sources.url_for); `files` (name -> md5) replaces the
    official file list, e.g. to fetch images_background_small1.zip from the same site."""
    root = Path(root)
    url = url_for(dataset_name(name), base_url)
    files = DOWNLOADS[name] if files is None else files
    fetcher = pooch.create(
        path=root,
        base_url=url + "/",
        registry={file: f"md5:{md5}" for file, md5 in files.items()},
        retry_if_failed=retries,
    )
    paths = []
    for file in files:
        try:
            paths.append(Path(fetcher.fetch(file, progressbar=progressbar)))
        except (ValueError, OSError) as exc:  # pooch: md5 mismatch or bad URL; requests and disk errors are OSErrors
            raise data_error(name, f"{url}/{file}", f"could not be fetched into {root} ({exc})", root) from None
    if name == "cifar10" and TARBALL in files:
        paths.append(extract_cifar10(root / TARBALL, root))
    return paths


def extract_cifar10(tarball: Path, root: Path) -> Path:
    """Extract only the six batch files, by name, so a crafted archive cannot write outside `root`."""
    folder = root / BATCH_FOLDER
    wanted = {f"{BATCH_FOLDER}/{file}" for files in BATCH_FILES.values() for file in files}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = [m for m in archive.getmembers() if m.name in wanted and m.isfile()]
            if len(members) != len(wanted):
                raise data_error("cifar10", tarball, f"lacks some of {', '.join(sorted(wanted))}", root)
            folder.mkdir(exist_ok=True)
            for member in members:
                (folder / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise data_error("cifar10", tarball, f"could not be extracted ({exc})", root) from None
    return folder
