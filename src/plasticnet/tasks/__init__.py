"""The papers' experiments. Each task names its configuration class and how to build a trainable experiment.

A task module may also define ``add_eval_arguments(parser)`` and ``evaluate(args) -> int``; the command line
then offers ``plasticnet eval TASK``. ``FIGURES = {name: draw(checkpoint, out, seed=...) -> Path}`` gives
``plasticnet plot RUN --figure NAME``.

An experiment object has ``model``, ``metrics`` (names, the headline metric first), ``step(iteration)`` (one
optimisation step, returning a dict of scalar tensors) and ``state_dict`` / ``load_state_dict`` (everything needed
to resume: ``"model"`` holds the weights, and an optional ``"meta"`` the plain data evaluation needs besides them).
The training loop (:mod:`plasticnet.train`) never knows more than that, plus optional attributes:
``validate(iteration, final)`` (called after every step: whatever it returns, such as held-out metrics or an
epoch's results, is logged at that iteration), ``planned_iterations`` (an experiment with its own schedule, such as
epochs), ``optimizer`` (guarded against non-finite updates) and ``describe()`` (extra facts for
``plasticnet train --dry-run``). Everything ``state_dict`` returns must be tensors, numbers, strings, None and
dicts, lists and tuples of them: checkpoints are read without running code.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class Task:
    name: str
    module: str
    config_class: str
    experiment_class: str
    help: str

    def _attr(self, name):
        return getattr(import_module(f"plasticnet.tasks.{self.module}"), name)

    @property
    def config_cls(self) -> type:
        return self._attr(self.config_class)

    @property
    def experiment(self) -> Callable:
        return self._attr(self.experiment_class)

    def hook(self, name: str):
        """An optional module-level function of the task (``evaluate``, ``add_eval_arguments``), or None."""
        return getattr(import_module(f"plasticnet.tasks.{self.module}"), name, None)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("pattern", "pattern", "PatternConfig", "PatternExperiment",
             "binary pattern memorisation and completion (DP 2018, section 4.1)"),
        Task("images", "images", "ImagesConfig", "ImagesExperiment",
             "natural-image memorisation and completion on CIFAR-10 (DP 2018, section 4.2)"),
        Task("omniglot", "omniglot", "OmniglotConfig", "OmniglotExperiment",
             "Omniglot one-shot classification with a plastic output layer (DP 2018, section 4.3)"),
        Task("ptb", "ptb", "PtbConfig", "PtbExperiment",
             "Penn Treebank language modelling with (neuromodulated) plastic LSTMs (backpropamine, section 4.3)"),
        Task("maze", "maze", "MazeTrainConfig", "A2CExperiment",
             "grid maze meta-RL with A2C (DP 2018 section 4.4, backpropamine section 4.2)"),
        Task("cue-reward", "cue_reward", "CueRewardTrainConfig", "A2CExperiment",
             "cue-reward association meta-RL with A2C (backpropamine section 4.3)"),
    ]
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
