"""Data-parallel training with real processes: torchrun starts 2 gloo processes, whose run must follow the
one-process run at the same global batch to rounding (parameters, metrics), written by rank 0 alone in the
one-process format, and resumable under torchrun."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from plasticnet.cli import main
from plasticnet.config import resolve
from plasticnet.tasks import get_task
from plasticnet.train import train
from plasticnet.train.checkpoint import load

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no torch.distributed with gloo")

PATTERN = ["pattern", "--preset", "paper-50bit", "--batch-size", "4", "--log-every", "2", "--save-every", "100"]
MAZE = ["maze", "--preset", "paper-2019", "--hidden-size", "16", "--batch-size", "4", "--burn-in", "0",
        "--log-every", "1", "--save-every", "2"]


def torchrun(*args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc), "-m", "plasticnet", "train", *args, "--no-progress"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def alone(task, argv_overrides, out):
    """The same run trained in this process, as `plasticnet train` would."""
    cls = get_task(task).config_cls
    cfg = resolve(cls, task, argv_overrides.pop("preset"), argv_overrides)
    train(task, cfg, out, preset="", progress=False)
    return out


def largest_difference(a, b):
    sa, sb = load(a / "checkpoint.pt")["experiment"]["model"], load(b / "checkpoint.pt")["experiment"]["model"]
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def moved(a, init):
    sa, s0 = load(a / "checkpoint.pt")["experiment"]["model"], init.state_dict()
    return max((sa[k].double() - s0[k].double()).abs().max().item() for k in sa)


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # torchrun launches 2 processes: 10-40 s, by how busy the machine is
def test_pattern_two_processes_follow_one(tmp_path):
    result = torchrun(*PATTERN, "--iterations", "6", "--out", str(tmp_path / "two"))
    assert result.stdout.count("run saved in") == 1  # rank 0 alone reports and writes
    two = tmp_path / "two"
    one = alone("pattern", {"preset": "paper-50bit", "batch_size": 4, "log_every": 2, "save_every": 100,
                            "iterations": 6}, tmp_path / "one")
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    assert json.loads((one / "config.json").read_text())["world_size"] == 1
    difference = largest_difference(one, two)
    print(f"pattern, 6 iterations of batch 4: largest parameter difference 2 processes vs 1: {difference:.3g}")
    assert difference < 1e-5
    # The training moved the weights far more than the rounding: the comparison can fail.
    cfg = resolve(get_task("pattern").config_cls, "pattern", "paper-50bit", {})
    torch.manual_seed(0)
    from plasticnet.tasks.pattern import make_model
    assert moved(one, make_model(cfg)) > 1e-3
    m1, m2 = metrics(one), metrics(two)
    assert [m["iteration"] for m in m1] == [m["iteration"] for m in m2] == [2, 4, 6]
    for a, b in zip(m1, m2):  # each logged point averages both shards: the global batch's error and loss
        assert list(a) == list(b)
        assert a["error"] == pytest.approx(b["error"], abs=1e-6) and a["loss"] == pytest.approx(b["loss"], rel=1e-5)


@pytest.mark.slow
def test_maze_two_processes_follow_one_and_resume(tmp_path):
    two = tmp_path / "two"
    torchrun(*MAZE, "--iterations", "2", "--out", str(two))
    torchrun("maze", "--resume", str(two), "--iterations", "4")  # resumed under torchrun from rank 0's checkpoint
    one = alone("maze", {"preset": "paper-2019", "hidden_size": 16, "batch_size": 4, "burn_in": 0, "log_every": 1,
                         "save_every": 2, "iterations": 4}, tmp_path / "one")
    assert load(two / "checkpoint.pt")["iteration"] == 4
    difference = largest_difference(one, two)
    print(f"maze, 4 iterations of batch 4 (2 + 2 resumed): largest parameter difference 2 processes vs 1: "
          f"{difference:.3g}")
    assert difference < 1e-5
    m1, m2 = metrics(one), metrics(two)
    assert [m["iteration"] for m in m2] == [1, 2, 3, 4]
    for a, b in zip(m1, m2):
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def ptb_options(corpus):
    """A neuromodulated plastic LSTM with eligibility traces (every kind of carried state), every dropout, and a
    gradient clip that acts at every step (so that each process must clip by the global batch's norm)."""
    return {"data": str(corpus), "model": "modul", "emsize": 6, "hidden_size": 5, "batch_size": 4, "bptt": 7,
            "epochs": 2, "lr": 0.5, "grad_clip": 0.1, "dropout": 0.3, "dropouth": 0.2, "dropouti": 0.2,
            "dropoute": 0.1, "eval_batch_size": 2, "log_every": 100, "save_every": 3}


@pytest.mark.slow
def test_ptb_two_processes_follow_one_and_resume(tmp_path, corpus_dir):
    options = ptb_options(corpus_dir)
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    two, moved_on = tmp_path / "two", tmp_path / "alone-after-two"
    torchrun("ptb", *argv, "--iterations", "7", "--out", str(two))  # stopped mid-epoch, state carried
    shutil.copytree(two, moved_on)
    torchrun("ptb", "--resume", str(two), "--iterations", "0")  # the rest of the 2 epochs, under torchrun
    assert main(["train", "ptb", "--resume", str(moved_on), "--iterations", "0", "--no-progress"]) == 0  # one process
    one = alone("ptb", {"preset": "small", **options}, tmp_path / "one")
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    assert load(two / "checkpoint.pt")["iteration"] == load(one / "checkpoint.pt")["iteration"] == 20
    for run in (two, moved_on):
        difference = largest_difference(one, run)
        print(f"ptb, 20 segments of batch 4 (7 under torchrun + 13 resumed): largest parameter difference vs one "
              f"process: {difference:.3g}")
        assert difference < 1e-5
        epochs = [m for m in metrics(run) if "epoch" in m]
        expected = [m for m in metrics(one) if "epoch" in m]
        assert [m["epoch"] for m in epochs] == [m["epoch"] for m in expected] == [1, 2]
        for a, b in zip(epochs, expected):  # the perplexities of the whole batch and of all validation columns
            assert a["train_ppl"] == pytest.approx(b["train_ppl"], rel=1e-6)
            assert a["val_ppl"] == pytest.approx(b["val_ppl"], rel=1e-6)
    # The training moved the weights far more than the rounding: the comparison can fail.
    from plasticnet.tasks.ptb import PtbConfig, PtbExperiment
    from plasticnet.train.checkpoint import seed_everything
    cfg = resolve(PtbConfig, "ptb", "small", dict(options))
    seed_everything(cfg.seed)  # as train() does before building the experiment
    assert moved(one, PtbExperiment(cfg, torch.device("cpu")).model) > 1e-3


def test_shards_are_contiguous_and_cover_the_batch(monkeypatch):
    from plasticnet.errors import ConfigError
    from plasticnet.train import distributed

    assert distributed.shard(6) == slice(0, 6)  # one process: the whole batch
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    shards = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shards.append(distributed.shard(6))
    assert shards == [slice(0, 2), slice(2, 4), slice(4, 6)]
    with pytest.raises(ConfigError, match="does not split into 3 equal shards"):
        distributed.shard(4)
