"""Runs that survive faults and files that cannot run code: the non-finite guard of every trainer family, safe
checkpoints and exports, one writer per run directory, folders plasticnet did not make, failed writes, torn metrics,
SIGKILLed training processes resumed bit-identically, and corrupt data inputs. Every failure is one line."""

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import plasticnet.tasks.cue_reward as cue_reward_task
import plasticnet.tasks.pattern as pattern_task
import plasticnet.tasks.ptb as ptb_task
from plasticnet.cli import main
from plasticnet.train import checkpoint as ckpt
from plasticnet.train.loop import read_metrics

PATTERN = ["train", "pattern", "--preset", "paper-50bit", "--no-progress"]
CUE = ["train", "cue-reward", "--batch-size", "3", "--hidden-size", "12", "--burn-in", "2", "--no-progress"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def run(capsys, *argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def corpus(corpus_dir: Path) -> Path:
    """A tiny Penn Treebank folder (conftest.py's)."""
    return corpus_dir


def ptb_args(corpus):
    return ["train", "ptb", "--data", str(corpus), "--model", "modul", "--emsize", "6", "--hidden-size", "5",
            "--batch-size", "3", "--bptt", "7", "--epochs", "2", "--lr", "0.5", "--eval-batch-size", "2",
            "--no-progress"]


# ---------------------------------------------------------------------------------------------------- non-finite

def poisoned(cls, at: int, seen: list):
    """``cls`` whose iteration ``at`` (1-based) gets NaN gradients on its first parameter; records the weights
    just before that iteration and the experiment itself in ``seen``."""

    class Poisoned(cls):
        def __init__(self, cfg, device):
            super().__init__(cfg, device)
            self.poison = False
            next(self.model.parameters()).register_hook(lambda g: g * math.nan if self.poison else g)
            seen.append(self)

        def step(self, iteration):
            self.poison = iteration + 1 == at
            if self.poison:
                self.before = [p.detach().clone() for p in self.model.parameters()]
            return super().step(iteration)

    return Poisoned


FAMILIES = {  # trainer family: (module, experiment class, command line, the guard's path)
    "supervised": (pattern_task, "PatternExperiment", lambda c: PATTERN + ["--iterations", "12"]),
    "a2c": (cue_reward_task, "A2CExperiment", lambda c: CUE + ["--burn-in", "0", "--iterations", "12"]),
    "a2c-burn-in": (cue_reward_task, "A2CExperiment", lambda c: CUE + ["--burn-in", "20", "--iterations", "12"]),
    "ptb": (ptb_task, "PtbExperiment", lambda c: ptb_args(c) + ["--iterations", "12"]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_non_finite_gradient_stops_the_run_before_the_update(family, monkeypatch, tmp_path, corpus, capsys):
    module, name, argv = FAMILIES[family]
    seen = []
    monkeypatch.setattr(module, name, poisoned(getattr(module, name), 9, seen))
    out = tmp_path / "run"
    code, err = run(capsys, *argv(corpus), "--save-every", "4", "--log-every", "2", "--out", out)
    assert code == 3 and "\n" not in err and "Traceback" not in err
    assert "iteration 9: grad_norm is nan" in err and "keeps iteration 8" in err
    experiment = seen[0]
    for before, after in zip(experiment.before, experiment.model.parameters()):
        assert torch.equal(before, after)  # the update never touched the weights
    saved = ckpt.load(out / "checkpoint.pt")
    assert saved["iteration"] == 8
    assert all(torch.isfinite(v).all() for v in saved["experiment"]["model"].values())
    assert max(m["iteration"] for m in read_metrics(out)) == 8


@pytest.mark.parametrize("family", ["supervised", "a2c", "ptb"])
def test_skip_leaves_the_step_out_and_counts_it(family, monkeypatch, tmp_path, corpus, capsys):
    module, name, argv = FAMILIES[family]
    seen = []
    monkeypatch.setattr(module, name, poisoned(getattr(module, name), 5, seen))
    out = tmp_path / "run"
    code, err = run(capsys, *argv(corpus), "--log-every", "4", "--on-nonfinite", "skip", "--out", out)
    assert code == 0, err
    points = [m for m in read_metrics(out) if "skipped" in m and m["iteration"] % 4 == 0]
    assert [(m["iteration"], m["skipped"]) for m in points] == [(4, 0), (8, 1), (12, 0)]
    assert all(math.isfinite(v) for m in points for v in m.values())  # the NaN step is not averaged in
    saved = ckpt.load(out / "checkpoint.pt")
    assert saved["iteration"] == 12
    assert all(torch.isfinite(v).all() for v in saved["experiment"]["model"].values())


def test_the_issue_s_divergent_run_keeps_its_last_finite_checkpoint(tmp_path, capsys):
    """lr 1e6 on the 50-bit task (the issue's example): NaN at the second iteration, exit 3, nothing written over."""
    out = tmp_path / "run"
    code, err = run(capsys, *PATTERN, "--lr", "1e6", "--iterations", "300", "--save-every", "1", "--out", out)
    assert code == 3 and "\n" not in err and "iteration 2: grad_norm is nan" in err and "keeps iteration 1" in err
    saved = ckpt.load(out / "checkpoint.pt")
    assert saved["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in saved["experiment"]["model"].values())


# ---------------------------------------------------------------------------------------------------- safe files

class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do (a real one would run anything)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_a_malicious_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    assert main(PATTERN + ["--iterations", "5", "--out", str(run_dir)]) == 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["experiment"]["meta"] = Payload(marker)
    torch.save(state, run_dir / "checkpoint.pt")
    evil = tmp_path / "evil.pt"
    torch.save({"task": "omniglot", "config": {}, "model": Payload(marker)}, evil)

    for argv in (["train", "pattern", "--resume", run_dir, "--iterations", "10"],
                 ["eval", "omniglot", "--checkpoint", evil], ["eval", "maze", "--checkpoint", evil],
                 ["eval", "ptb", "--checkpoint", evil], ["export", evil, "--out", tmp_path / "x.safetensors"],
                 ["plot", evil, "--figure", "completion"]):
        code, err = run(capsys, *argv)
        assert code == 2 and "\n" not in err and "needs code to load (exec)" in err, (argv, err)
        assert not marker.exists()
    torch.load(evil, weights_only=False)  # the control: the payload is real
    assert marker.exists()


def test_export_is_safetensors_and_every_reader_takes_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(CUE + ["--iterations", "3", "--out", str(run_dir)]) == 0
    exported = tmp_path / "agent.safetensors"
    assert main(["export", str(run_dir), "--out", str(exported)]) == 0
    from safetensors.torch import load_file

    tensors = load_file(str(exported))  # plain safetensors: nothing but tensors and a JSON header
    assert all(key.startswith("model/") for key in tensors)
    a, b = ckpt.read_model(run_dir), ckpt.read_model(exported)
    assert a["task"] == b["task"] == "cue-reward" and a["config"] == b["config"] and a["iteration"] == b["iteration"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    capsys.readouterr()
    for source in (run_dir, exported):
        assert main(["eval", "cue-reward", "--checkpoint", str(source), "--episodes", "4", "--json"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert json.loads(first) == json.loads(second)
    assert main(["plot", str(exported), "--figure", "modulator", "--out", str(tmp_path / "m.png")]) == 0
    # an existing file that is not a plasticnet model is never overwritten
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    code, err = run(capsys, "export", run_dir, "--out", precious)
    assert code == 2 and "not a plasticnet model" in err and precious.read_text() == "mine"


def test_ptb_export_keeps_the_best_and_last_weights(tmp_path, corpus, capsys):
    run_dir = tmp_path / "run"
    assert main(ptb_args(corpus) + ["--epochs", "1", "--out", str(run_dir)]) == 0
    exported = tmp_path / "lm.safetensors"
    assert main(["export", str(run_dir), "--out", str(exported)]) == 0
    capsys.readouterr()
    for weights in ("best", "last"):
        outputs = []
        for source in (run_dir, exported):
            assert main(["eval", "ptb", "--checkpoint", str(source), "--weights", weights]) == 0
            outputs.append(capsys.readouterr().out)
        assert outputs[0] == outputs[1] and "after 1 epochs" in outputs[0]


def test_checkpoints_of_earlier_versions_still_load(tmp_path, capsys):
    """Earlier versions stored NumPy's generator state as an array and exports as torch.save files: both load
    (the array type is the one thing allowed besides plain data), and the resumed run goes on."""
    run_dir = tmp_path / "run"
    assert main(PATTERN + ["--iterations", "5", "--out", str(run_dir)]) == 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    np.random.seed(3)
    state["rng"]["numpy"] = np.random.get_state()
    torch.save(state, run_dir / "checkpoint.pt")
    assert main(["train", "pattern", "--resume", str(run_dir), "--iterations", "10", "--no-progress"]) == 0
    assert ckpt.load(run_dir / "checkpoint.pt")["iteration"] == 10
    old_export = tmp_path / "old.pt"
    model = ckpt.read_model(run_dir)
    torch.save({k: model[k] for k in ("task", "config", "iteration", "model", "meta")}, old_export)
    assert ckpt.read_model(old_export)["iteration"] == 10


# ---------------------------------------------------------------------------------------------------- one writer

def _start(argv, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "plasticnet", *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(condition, proc, seconds=180):
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_one_writer_per_run_directory_and_a_dead_writer_s_lock_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = _start(PATTERN + ["--iterations", "100000", "--save-every", "20", "--out", run_dir])
    try:
        _wait_for(lambda: (run_dir / "checkpoint.pt").exists(), first)
        for argv in (["train", "pattern", "--resume", run_dir], PATTERN + ["--out", run_dir]):
            began = time.monotonic()
            code, err = run(capsys, *argv)
            assert code == 2 and "\n" not in err and f"being trained by process {first.pid}" in err, (err, first.poll())
            assert time.monotonic() - began < 30  # refused at once, not after waiting for the lock
        lines = len(read_metrics(run_dir))
        _wait_for(lambda: len(read_metrics(run_dir)) > lines + 2, first)  # the first run goes on
    finally:
        first.kill()  # SIGKILL: no clean-up, the lock file stays behind
        first.wait()
    assert (run_dir / ".lock").read_text() == str(first.pid)
    assert main(["train", "pattern", "--resume", str(run_dir), "--iterations",
                 str(ckpt.load(run_dir / "checkpoint.pt")["iteration"] + 5), "--no-progress"]) == 0


# ---------------------------------------------------------------------------------------------------- never delete

def test_no_command_writes_into_or_deletes_a_folder_it_did_not_make(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mywork"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for argv in (["demo", "--out", mine, "--budget", "1"], PATTERN + ["--out", mine]):
        code, err = run(capsys, *argv)
        assert code == 2 and "is not a run directory plasticnet made (it holds thesis.tex)" in err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    monkeypatch.chdir(mine)  # `--out .`: the current folder
    code, err = run(capsys, "demo", "--out", ".", "--budget", "1")
    assert code == 2 and (mine / "thesis.tex").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = run(capsys, *PATTERN, "--out", afile)
    assert code == 2 and "is a file" in err and afile.read_text() == "x"


def test_a_demo_trains_again_in_its_own_run_directory(tmp_path, capsys):
    out = tmp_path / "demo"
    for _ in range(2):
        assert main(["demo", "--out", str(out), "--budget", "0.5"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint.pt", "config.json", "curve.png",
                                                      "metrics.jsonl", "tb"]
    assert read_metrics(out)[0]["iteration"] == 10  # started afresh, not appended to the first demo's metrics


# ---------------------------------------------------------------------------------------------------- failed writes

def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real_save = torch.save
    saves = []

    def full_disk(obj, f):
        saves.append(obj["iteration"])
        if len(saves) == 2:  # the second checkpoint: half written, then the disk is full
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", full_disk)
    code, err = run(capsys, *PATTERN, "--iterations", "20", "--save-every", "5", "--out", run_dir)
    assert code == 2 and "\n" not in err and "No space left on device" in err and "previous file is kept" in err
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.load(run_dir / "checkpoint.pt")["iteration"] == 5  # the first checkpoint, intact
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert main(["train", "pattern", "--resume", str(run_dir), "--no-progress"]) == 0


def test_a_torn_last_metrics_line_is_repaired_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(PATTERN + ["--iterations", "10", "--log-every", "5", "--out", str(run_dir)]) == 0
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 15, "seconds": 0.1, "err')  # killed in the middle of a write
    assert [m["iteration"] for m in read_metrics(run_dir)] == [5, 10]
    assert main(["train", "pattern", "--resume", str(run_dir), "--iterations", "20", "--no-progress"]) == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [5, 10, 15, 20]
    with (run_dir / "metrics.jsonl").open("a") as f:  # damage that is not a torn last line is an error
        f.write("garbage\n")
    code, err = run(capsys, "train", "pattern", "--resume", run_dir, "--iterations", "25")
    assert code == 2 and "metrics.jsonl line 5 is not a logged point" in err


# ---------------------------------------------------------------------------------------------------- SIGKILL

def _comparable(run_dir):
    state = ckpt.load(run_dir / "checkpoint.pt")
    points = [{k: v for k, v in m.items() if k not in ("seconds", "cpu_seconds")} for m in read_metrics(run_dir)]
    return state, points


def _kill_and_resume(argv, run_dir, targets, rng):
    """Start the run and SIGKILL it once it has logged each of the iterations ``targets`` (a few milliseconds later,
    so that the kill lands anywhere in an iteration, a metrics write or a checkpoint write); each restart resumes
    from the checkpoint, or starts afresh when the kill came before the first one. Then let it finish."""
    for target in [*targets, None]:
        resume = (run_dir / "checkpoint.pt").exists()
        proc = _start(argv[:2] + ["--resume", run_dir] + argv[2:] if resume else argv + ["--out", run_dir])
        try:
            if target is not None:
                _wait_for(lambda: max([m["iteration"] for m in read_metrics(run_dir)], default=0) >= target, proc)
                time.sleep(rng.uniform(0.0, 0.05))
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=600)
        finally:
            proc.kill()
        assert proc.returncode == (0 if target is None else -signal.SIGKILL), proc.stderr.read()


@pytest.mark.parametrize("argv, total, kills", [
    (["train", "pattern", "--preset", "paper-50bit", "--save-every", "7", "--log-every", "4"], 160, 3),
    (CUE[:2] + ["--save-every", "3", "--log-every", "2"] + CUE[2:-1], 30, 2),
], ids=["supervised", "a2c"])
def test_sigkill_at_random_points_then_resume_is_bit_identical(argv, total, kills, tmp_path):
    argv = argv + ["--iterations", str(total), "--no-progress"]
    straight = tmp_path / "straight"
    # A fresh process as the killed ones are (one thread: the same operations in the same order), not this one,
    # whose state other tests may have changed.
    done = subprocess.run([sys.executable, "-m", "plasticnet", *argv, "--out", str(straight)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rng = random.Random(total)
    log_every = int(argv[argv.index("--log-every") + 1])
    targets = sorted(rng.sample(range(log_every, total - 3 * log_every, log_every), kills))
    killed = tmp_path / "killed"
    _kill_and_resume(argv, killed, targets, rng)
    (a, points_a), (b, points_b) = _comparable(straight), _comparable(killed)
    assert points_a == points_b and len(points_a) == total // log_every
    assert a["iteration"] == b["iteration"] == total
    for key, value in a["experiment"]["model"].items():
        assert torch.equal(value, b["experiment"]["model"][key]), key
    for key, value in a["experiment"]["optimizer"]["state"].items():
        assert all(torch.equal(v, b["experiment"]["optimizer"]["state"][key][k]) for k, v in value.items())
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


# ---------------------------------------------------------------------------------------------------- data

def _omniglot_zip(path: Path, drawing_size=(105, 105), truncate=False) -> Path:
    import io
    import zipfile

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", drawing_size, 1).save(buffer, format="PNG")
    with zipfile.ZipFile(path, "w") as archive:
        for c in range(6):
            for d in range(3):
                archive.writestr(f"images_background/Alpha/character{c:02d}/{d}.png", buffer.getvalue())
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _cifar_pngs(root: Path, size=(32, 32), mode="RGB") -> Path:
    from PIL import Image

    (root / "train").mkdir(parents=True)
    for i in range(1, 4):
        Image.new(mode if i == 2 else "RGB", size if i == 2 else (32, 32)).save(root / "train" / f"{i}.png")
    (root / "trainLabels.csv").write_text("id,label\n1,cat\n2,dog\n3,cat\n")
    return root


def _ptb_with(corpus: Path, split: str, data: bytes) -> Path:
    (corpus / f"ptb.{split}.txt").write_bytes(data)
    return corpus


CORRUPT = {
    "omniglot truncated zip": ("omniglot", lambda t, c: _omniglot_zip(t / "o.zip", truncate=True),
                               "is not a readable zip"),
    "cifar10 PNG of the wrong size": ("images", lambda t, c: _cifar_pngs(t / "c", size=(31, 32)), "not 32x32 RGB"),
    "cifar10 PNG of the wrong mode": ("images", lambda t, c: _cifar_pngs(t / "c", mode="L"), "not 32x32 RGB"),
    "ptb text that is not UTF-8": ("ptb", lambda t, c: _ptb_with(c, "valid", b"w1 \xff\xfe w2\n"), "is not UTF-8"),
    "ptb empty split": ("ptb", lambda t, c: _ptb_with(c, "test", b""), "is empty"),
    "omniglot empty split": ("omniglot", lambda t, c: _omniglot_zip(t / "o.zip").parent / "nothing-here",
                             "does not exist"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_data_gives_one_line(case, tmp_path, corpus, capsys):
    task, make, fragment = CORRUPT[case]
    data = make(tmp_path, corpus)
    for argv in (["train", task, "--data", data, "--dry-run"], ["train", task, "--data", data, "--out",
                                                               tmp_path / "run"]):
        code, err = run(capsys, *argv)
        assert code == 2 and "\n" not in err and "Traceback" not in err and fragment in err, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
