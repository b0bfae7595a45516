"""The non-finite guard: no update is ever made from a non-finite gradient.

The guard wraps the experiment's optimiser's ``step``: before the update it measures the global norm of the
gradients, and if that is NaN or infinite it either raises (``stop``, the default: the weights stay as they were) or
does nothing (``skip``: the step is counted and training goes on). The loop also checks every value an iteration
returns (loss, reward, norms), which covers iterations without an update (A2C's burn-in).
"""

from __future__ import annotations

import math

import torch

MODES = ("stop", "skip")


class NonFiniteStep(Exception):
    """Raised out of an experiment's step: ``metric`` was ``value``; the weights were not updated."""

    def __init__(self, metric: str, value: float):
        super().__init__(f"{metric} {value}")
        self.metric, self.value = metric, value


def gradient_norm(parameters) -> torch.Tensor:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def first_non_finite(values: dict) -> tuple[str, float] | None:
    """The first (name, value) of ``values`` (scalar tensors or numbers) that is NaN or infinite."""
    for name, value in values.items():
        number = float(value)
        if not math.isfinite(number):
            return name, number
    return None


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class NonFiniteGuard:
    """Installed on ``optimizer`` for the life of the experiment; ``skipped`` counts the updates left out."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str = "stop"):
        self.model, self.mode, self.skipped = model, mode, 0
        step = optimizer.step

        def guarded_step(*args, **kwargs):
            norm = gradient_norm(self.model.parameters())
            if not bool(torch.isfinite(norm)):
                if self.mode == "stop":
                    raise NonFiniteStep("grad_norm", float(norm))
                self.skipped += 1
                return None
            return step(*args, **kwargs)

        optimizer.step = guarded_step
