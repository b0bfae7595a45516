"""The `plasticnet data` command line: `download` fetches official releases, `check` says whether a folder is usable."""
from __future__ import annotations

import argparse
from pathlib import Path

from plasticnet.data.fetch import download
from plasticnet.data.sources import DATASETS
from plasticnet.data.validate import check


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `data download` and `data check`; each sets `func`, which returns the exit code or raises DataError."""
    data = subparsers.add_parser("data", help="download and validate CIFAR-10, Omniglot and Penn Treebank")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="{download,check}")

    fetch = actions.add_parser("download", help="fetch the official release, verify its md5s, keep it for next time")
    fetch.add_argument("name", choices=DATASETS)
    fetch.add_argument("--root", type=Path, required=True, help="folder to put the files in")
    fetch.add_argument(
        "--base-url",
        default=None,
        help="mirror to fetch from instead of the official site (or set PLASTICNET_DATA_URL_<NAME>)",
    )
    fetch.set_defaults(func=_download)

    inspect = actions.add_parser("check", help="validate a data folder: exit 0 if usable, 2 with the reason if not")
    inspect.add_argument("name", choices=DATASETS)
    inspect.add_argument("root", type=Path, help="folder (or, for omniglot, zip) to validate")
    inspect.set_defaults(func=_check)


def _download(args: argparse.Namespace) -> int:
    paths = download(args.name, args.root, base_url=args.base_url, progressbar=True)
    print(f"{args.name}: {', '.join(str(p) for p in paths)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    print(check(args.name, args.root))
    return 0
