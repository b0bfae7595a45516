"""Cue-reward association (backpropamine.md §4): in each trial two of four cues are shown, then a Go signal; the
agent is rewarded for responding exactly when the episode's target cue was shown, and must find out which cue that
is from rewards alone. Trained with A2C (:mod:`plasticnet.train.a2c`); presets in ``configs/cue-reward.json``.

Preset ``paper-eta1`` differs from the paper's ``paper`` (retroactive neuromodulation) in one setting: the
eligibility trace's rate starts at 1 instead of 0.1. At 0.1 the trace holds a trial's cue-evoked coactivity at a
tenth of its size beside the running average of everything else; trained networks raise the rate (to 0.4-0.9 on the
easy task), but as one scalar at lr 1e-4 it moves about 0.002 in 5,000 iterations, and the paper-sized task stays
at chance for tens of thousands of iterations. From 1 it learns the easy task as fast as simple modulation, and the
paper-sized one at about the same iteration (docs/results.md#cue-reward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..envs import CUE_REWARD_PRESETS, CueRewardEnv
from ..train.a2c import A2CConfig, A2CExperiment, add_eval_arguments, evaluate

__all__ = ["CueRewardTrainConfig", "A2CExperiment", "add_eval_arguments", "evaluate"]


@dataclass
class CueRewardTrainConfig(A2CConfig):
    env: str = "paper"

    env_presets: ClassVar[tuple] = tuple(CUE_REWARD_PRESETS)

    def make_env(self, batch_size: int, device, seed: int | None) -> CueRewardEnv:
        return CueRewardEnv(batch_size, self.env, device=device, seed=seed)



def draw_modulator(checkpoint, out, seed: int = 0):
    """``plasticnet plot RUN --figure modulator``: the modulator of the agent in a checkpoint over one episode,
    with cues, Go signals, responses and rewards marked."""
    from ..pictures import cue_reward_modulator

    return cue_reward_modulator(checkpoint, out, seed)


FIGURES = {"modulator": draw_modulator}
