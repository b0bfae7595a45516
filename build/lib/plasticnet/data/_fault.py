"""One way to say what is wrong with a data file, so every message names the file and the command that fixes it."""
from __future__ import annotations

from pathlib import Path

from plasticnet.errors import DataError


def data_error(dataset: str, path: Path | str, problem: str, root: Path | str) -> DataError:
    """The command line prints this as the single line a user sees, so newlines in `problem` are flattened."""
    flat = " ".join(str(problem).split())
    return DataError(f"{path} {flat}; run `plasticnet data download {dataset} --root {root}`")
