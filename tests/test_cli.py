"""The command line: one-line errors with exit code 2, the run directory contract, resuming, plotting."""

import json
import subprocess
import sys

import pytest
import torch

from plasticnet.cli import main

TINY = ["train", "pattern", "--preset", "paper-50bit", "--log-every", "5", "--save-every", "10", "--no-progress"]


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, fragment", [
    (["train", "pattern", "--preset", "paper-9bit"], "unknown preset 'paper-9bit'"),
    (["train", "pattern", "--model", "transformer"], "unknown model 'transformer'"),
    (["train", "pattern", "--iterations", "many"], "invalid int value"),
    (["train", "pattern", "--pattern-size", "7"], "pattern_size must be even"),
    (["train", "pattern", "--device", "cuda:7" if not torch.cuda.is_available() else "tpu"], "device"),
    (["train", "maybe"], "invalid choice"),
    (["plot", "/nonexistent/run"], "config.json not found"),
])
def test_bad_input_exits_2_with_one_line(argv, fragment, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv + (["--out", str(tmp_path / "r")] if argv[0] == "train" and
                                      argv[1] == "pattern" else [])))
    assert exc.value.code == 2
    assert fragment in _error_line(capsys)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_contract(tmp_path):
    run = tmp_path / "run"
    assert main(TINY + ["--iterations", "20", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "pattern" and config["preset"] == "paper-50bit"
    assert config["config"]["pattern_size"] == 50 and config["config"]["log_every"] == 5
    points = _metrics(run)
    assert [p["iteration"] for p in points] == [5, 10, 15, 20]
    assert all(0 <= p["error"] <= 1 and "loss" in p for p in points)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 20
    assert any((run / "tb").iterdir())


def test_resume_continues_exactly_where_it_stopped(tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(TINY + ["--iterations", "30", "--out", str(straight)]) == 0
    assert main(TINY + ["--iterations", "20", "--out", str(split)]) == 0
    assert main(TINY + ["--iterations", "30", "--resume", str(split)]) == 0
    a, b = _metrics(straight), _metrics(split)
    assert [p["iteration"] for p in b] == [5, 10, 15, 20, 25, 30]
    for p, q in zip(a, b):
        assert p["error"] == pytest.approx(q["error"]) and p["loss"] == pytest.approx(q["loss"], rel=1e-5)

    with pytest.raises(SystemExit) as exc:  # a finished run directory is not overwritten
        raise SystemExit(main(TINY + ["--iterations", "30", "--out", str(split)]))
    assert exc.value.code == 2 and "--resume" in _error_line(capsys)
    assert main(["train", "pattern", "--resume", str(split), "--lr", "1.0"]) == 2
    assert "only --iterations may change" in _error_line(capsys)


def test_cpu_budget_counts_across_resumes(tmp_path):
    run = tmp_path / "run"
    assert main(TINY + ["--iterations", "40", "--cpu-budget", "1e-6", "--out", str(run)]) == 0
    points = _metrics(run)
    assert [p["iteration"] for p in points] == [5]  # stopped at the first logged point
    assert points[0]["cpu_seconds"] > 0
    assert main(["train", "pattern", "--resume", str(run), "--cpu-budget", "1e-6", "--no-progress"]) == 0
    assert [p["iteration"] for p in _metrics(run)] == [5]  # spent: a resume trains nothing more
    budget = str(points[0]["cpu_seconds"] + 1000)
    assert main(["train", "pattern", "--resume", str(run), "--cpu-budget", budget, "--no-progress"]) == 0
    points = _metrics(run)
    assert points[-1]["iteration"] == 40
    assert all(a["cpu_seconds"] < b["cpu_seconds"] for a, b in zip(points, points[1:]))


def test_corrupt_checkpoint_is_reported(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(TINY + ["--iterations", "10", "--out", str(run)]) == 0
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "pattern", "--resume", str(run), "--iterations", "20"]) == 2
    assert "not a readable plasticnet checkpoint" in _error_line(capsys)


def test_plot_groups_seeds(tmp_path):
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"s{seed}")
        assert main(TINY + ["--iterations", "10", "--seed", str(seed), "--out", str(runs[-1])]) == 0
    out = tmp_path / "curve.png"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_labels_name_conditions(tmp_path, capsys):
    from plasticnet.plot import curves

    runs = []
    for lr in ("0.01", "0.02"):
        runs.append(tmp_path / f"lr{lr}")
        assert main(TINY + ["--iterations", "10", "--lr", lr, "--out", str(runs[-1])]) == 0
    runs.append(tmp_path / "lr0.01-seed1")  # the first condition's second seed
    assert main(TINY + ["--iterations", "10", "--lr", "0.01", "--seed", "1", "--out", str(runs[-1])]) == 0
    assert [c[0] for c in curves(runs, "loss")] == ["lr=0.01", "lr=0.02"]
    drawn = curves(runs, "loss", labels=["slow", "fast"])
    assert [(label, len(values)) for label, _, values in drawn] == [("slow", 2), ("fast", 1)]
    out = tmp_path / "curve.png"
    assert main(["plot", *map(str, runs), "--label", "slow", "--label", "fast", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["plot", *map(str, runs), "--label", "only one", "--out", str(out)]) == 2
    assert "1 --label for 2 conditions" in _error_line(capsys)


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "plasticnet", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("plasticnet ")


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stopped_run_saves_a_checkpoint_that_resumes(signum, tmp_path):
    """SIGTERM (a scheduler, `kill`) and Ctrl-C end a run after the iteration under way: whole metric lines, a
    checkpoint, exit code 130, and a resumed run that goes on from there."""
    import signal
    import time

    run = tmp_path / "run"
    # SIGINT as a terminal delivers it: a test run in the background inherits it ignored, which the run respects.
    proc = subprocess.Popen([sys.executable, "-m", "plasticnet", *TINY, "--iterations", "1000000", "--out", str(run)],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        metrics = run / "metrics.jsonl"
        while not metrics.exists() or metrics.read_text().count("\n") < 2:  # past the first logging points
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    stopped_at = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    assert stopped_at >= _metrics(run)[-1]["iteration"]
    assert main(TINY + ["--iterations", str(stopped_at + 5), "--resume", str(run)]) == 0
    assert _metrics(run)[-1]["iteration"] == stopped_at + 5
