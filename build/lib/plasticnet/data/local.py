"""Where a task finds its data when no --data is given: ``$PLASTICNET_SHARED_DATA/FOLDER``, else the project's
``../shared/data/FOLDER`` beside a source checkout (the real data sets the project is developed on)."""
from __future__ import annotations

import os
from pathlib import Path

from plasticnet.errors import DataError

SHARED_ENV = "PLASTICNET_SHARED_DATA"


def shared_data_dir() -> Path:
    base = os.environ.get(SHARED_ENV)
    return Path(base) if base else Path(__file__).resolve().parents[4] / "shared" / "data"


def resolve_data(given: str | Path | None, dataset: str, folder: str) -> Path:
    """``given`` if set; otherwise the shared copy of ``folder``, or a DataError that says how to get the data."""
    if given:
        return Path(given)
    candidate = shared_data_dir() / folder
    if candidate.exists():
        return candidate
    raise DataError(f"no --data given and no {dataset} data at {candidate}; run "
                    f"`plasticnet data download {dataset} --root DIR` and pass --data DIR")
