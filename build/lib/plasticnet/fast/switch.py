"""The on/off switch that each set of hand-written kernels (:mod:`.cpu_kernels`, :mod:`.gpu_kernels`) has."""

from __future__ import annotations

import contextlib
import os


class KernelSwitch:
    """Kernels are on when their compiler is ``installed`` and the environment ``variable`` is not ``0``; ``use``
    switches them inside a ``with`` block (to compare them with the PyTorch operations)."""

    def __init__(self, installed: bool, variable: str):
        self.installed = installed
        self.enabled = installed and os.environ.get(variable, "1") != "0"

    @contextlib.contextmanager
    def use(self, enabled: bool):
        previous = self.enabled
        self.enabled = enabled and self.installed
        try:
            yield
        finally:
            self.enabled = previous
