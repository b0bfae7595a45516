"""Sweeps: the file format, status and report statistics (no Ray), then real Ray: the embedded local mode, and a
two-node cluster on loopback where a worker process is killed mid-run. Every swept run must equal the same run
trained alone, to the bit."""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from plasticnet.cli import main
from plasticnet.errors import ConfigError
from plasticnet.sweep import runs as run_state
from plasticnet.sweep.report import report, status
from plasticnet.sweep.spec import from_dict, save
from plasticnet.train.checkpoint import load

MINIMAL = """
task = "pattern"
preset = "paper-50bit"
seeds = [0, 1]
[settings]              # applied to every run; names as in config.json
iterations = 300
[conditions.plastic]    # one table per condition: the settings that differ
model = "plastic"
[conditions.rnn]
model = "rnn"
lr = 3e-5
"""


def tiny(conditions, seeds=(0, 1), iterations=60, **extra):
    """A small pattern sweep (12-bit patterns): seconds a run."""
    return from_dict({"task": "pattern", "preset": "paper-50bit", "seeds": list(seeds),
                      "settings": {"pattern_size": 12, "iterations": iterations, "log_every": 10,
                                   "save_every": 20},
                      "conditions": conditions, **extra})


# ---- the format ----

def test_the_minimal_file_gives_conditions_times_seeds(tmp_path):
    from plasticnet.sweep.spec import load

    (tmp_path / "s.toml").write_text(MINIMAL)
    sweep = load(tmp_path / "s.toml")
    runs = sweep.runs()
    assert [r.path for r in runs] == ["plastic/seed-0", "plastic/seed-1", "rnn/seed-0", "rnn/seed-1"]
    cfg = runs[3].config("pattern")
    assert (cfg.model, cfg.lr, cfg.iterations, cfg.seed, cfg.pattern_size) == ("rnn", 3e-5, 300, 1, 50)
    assert runs[0].config("pattern").lr == 3e-4  # the preset's, where no table changes it


@pytest.mark.parametrize("name", ["pattern-50bit", "maze-2019", "cue-reward", "ptb-small", "omniglot"])
def test_the_shipped_sweep_files_resolve(name):
    from plasticnet.sweep.spec import load

    sweep = load(Path(__file__).parent.parent / "sweeps" / f"{name}.toml")
    assert len(sweep.runs()) == len(sweep.seeds) * len(sweep.condition_names()) >= 5
    if name == "ptb-small":  # the small PTB table: four conditions x a grid, 16 runs each
        assert len(sweep.seeds) == 16 and len(sweep.condition_names()) == 8


def test_grid_points_are_conditions_and_a_condition_may_pick_its_preset():
    sweep = from_dict({"task": "maze", "preset": "paper-2019", "seeds": 2, "grid": {"lr": [1e-3, 1e-4]},
                       "conditions": {"modplast": {}, "rnn": {"preset": "paper-2019-rnn"}}})
    assert sweep.condition_names() == ["modplast-lr=0.001", "modplast-lr=0.0001", "rnn-lr=0.001", "rnn-lr=0.0001"]
    rnn = [r for r in sweep.runs() if r.condition == "rnn-lr=0.0001"]
    assert [r.seed for r in rnn] == [0, 1]
    cfg = rnn[1].config("maze")
    assert (cfg.agent, cfg.hidden_size, cfg.lr, cfg.seed) == ("rnn", 139, 1e-4, 1)


@pytest.mark.parametrize("raw, message", [
    ({"preset": "paper-50bit", "seeds": 1}, "missing 'task'"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": 1, "sedes": 2}, "unknown key(s) sedes"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": 1, "settings": {"learning_rate": 1}},
     "unknown setting(s) learning_rate"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": [0, 0]}, "distinct"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": 1, "settings": {"seed": 3}}, "list the seeds"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": 1, "conditions": {"a/b": {}}}, "names a folder"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": 1, "conditions": {"x": {"model": "gru"}}},
     "run x/seed-0: unknown model"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": 1, "cpu_budget": -1}, "cpu_budget"),
    ({"task": "pattern", "preset": "paper-50bit", "seeds": 1, "report": {"statistic": "mode"}}, "statistic"),
])
def test_bad_sweeps_are_refused_in_one_line(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(raw)


def test_the_command_line_refuses_a_bad_file_with_exit_2(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('task = "pattern"\npreset = "paper-50bit"\nseeds = 1\n[settings]\nlr = "x"\n')
    assert main(["sweep", "run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plasticnet: error:") and len(err.splitlines()) == 1
    assert main(["sweep", "status", str(tmp_path / "nothing")]) == 2
    assert "holds no sweep" in capsys.readouterr().err


def test_plasticnet_and_train_never_import_ray(tmp_path):
    code = ("import sys, plasticnet, plasticnet.cli\n"
            "assert 'ray' not in sys.modules, 'import plasticnet imported ray'\n"
            f"plasticnet.cli.main(['train', 'pattern', '--preset', 'paper-50bit', '--pattern-size', '8', "
            f"'--iterations', '2', '--no-progress', '--out', {str(tmp_path / 'r')!r}])\n"
            "assert 'ray' not in sys.modules, 'plasticnet train imported ray'\n"
            f"plasticnet.cli.main(['sweep', 'status', {str(tmp_path)!r}])\n"
            "assert 'ray' not in sys.modules, 'plasticnet sweep status imported ray'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]


# ---- status and report, on run directories written by hand ----

def fake_run(path: Path, errors, done=True):
    """A run directory as training leaves it: its configuration (that of the sweep's run) and metrics."""
    from plasticnet.config import to_dict
    from plasticnet.sweep.spec import read

    run = next(r for r in read(path.parent.parent).runs() if path.as_posix().endswith(r.path))
    path.mkdir(parents=True)
    path.joinpath("config.json").write_text(json.dumps({"task": "pattern", "preset": run.preset,
                                                        "config": to_dict(run.config("pattern"))}))
    path.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"iteration": 10 * (i + 1), "seconds": 1.0, "error": e}) + "\n" for i, e in enumerate(errors)))
    if done:
        path.joinpath(run_state.DONE).write_text("{}")


def test_a_run_recorded_by_an_earlier_version_is_taken_and_a_changed_one_refused(tmp_path):
    from plasticnet.config import to_dict

    sweep = tiny({"rnn": {"model": "rnn"}}, seeds=(0,))
    run = sweep.runs()[0]
    (tmp_path / run.path).mkdir(parents=True)
    recorded = to_dict(run.config("pattern"))
    del recorded["backend"]  # a setting that an earlier version did not write: its default
    (tmp_path / run.path / "config.json").write_text(json.dumps({"task": "pattern", "config": recorded}))
    save(sweep, tmp_path)
    recorded["lr"] = 0.5
    (tmp_path / run.path / "config.json").write_text(json.dumps({"task": "pattern", "config": recorded}))
    with pytest.raises(ConfigError, match="other settings .*lr"):
        save(sweep, tmp_path)


def test_report_statistics_by_hand(tmp_path):
    sweep = tiny({"a": {"model": "plastic"}, "b": {"model": "rnn"}}, seeds=(0, 1, 2),
                 report={"final_points": 2})
    save(sweep, tmp_path)
    # final values (the mean of the last 2 points): a 0.1, 0.2, 0.3; b 0.5, 0.6, 0.7
    for seed, v in enumerate([0.1, 0.2, 0.3]):
        fake_run(tmp_path / f"a/seed-{seed}", [0.9, v - 0.01, v + 0.01])
    for seed, v in enumerate([0.5, 0.6, 0.7]):
        fake_run(tmp_path / f"b/seed-{seed}", [0.9, v, v])
    text, md, csv, figure = report(tmp_path)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 d.f.) * sd / sqrt(n)
    assert f"| a | 3/3 | 0.2 | [{0.2 - half:.4g}, {0.2 + half:.4g}] | 30 |" in text
    # rank-sum: all of a below all of b, z = (6 - 10.5) / sqrt(9 * 7 / 12) = -1.964
    assert "| a | 0.0495 |" in text
    rows = {line.split(",")[0]: line.split(",") for line in csv.read_text().splitlines()}
    assert float(rows["b"][2 + 4]) == pytest.approx(0.6)  # the median column
    assert figure.is_file() and md.is_file()
    text, *_ = report(tmp_path, statistic="median")
    assert "| b | 3/3 | 0.6 | 0.5 | 0.7 | 30 |" in text


def test_status_counts_states(tmp_path):
    sweep = tiny({"a": {}}, seeds=(0, 1, 2, 3))
    save(sweep, tmp_path)
    fake_run(tmp_path / "a/seed-0", [0.5])
    fake_run(tmp_path / "a/seed-1", [0.5], done=False)
    (tmp_path / "a/seed-1" / run_state.RUNNING).write_text("host 1\n")
    fake_run(tmp_path / "a/seed-2", [0.5], done=False)
    (tmp_path / "a/seed-2" / run_state.FAILED).write_text("boom\n")
    info = status(tmp_path)
    assert (info["done"], info["running"], info["failed"], info["left"]) == (1, 1, 1, 1)
    stale = time.time() - 2 * run_state.STALE_SECONDS
    os.utime(tmp_path / "a/seed-1" / run_state.RUNNING, (stale, stale))
    assert status(tmp_path)["left"] == 2  # a heartbeat nobody renews: the process that trained it is gone


# ---- real Ray ----

ray = pytest.importorskip("ray", reason='Ray is the sweep extra: pip install "plasticnet[sweep]"')


def train_in_a_process(task: str, config, out: Path, preset: str, cpu_budget=None) -> None:
    """``train(...)`` in a fresh process, as a sweep's runs are (this one's state other tests may have changed), on
    one thread."""
    from plasticnet.config import to_dict

    code = ("import json, sys; from plasticnet.config import from_dict; from plasticnet.tasks import get_task; "
            "from plasticnet.train import train; task = get_task(sys.argv[1]); "
            "train(task.name, from_dict(task.config_cls, json.loads(sys.argv[2])), sys.argv[3], preset=sys.argv[4], "
            "progress=False, cpu_budget=json.loads(sys.argv[5]))")
    done = subprocess.run([sys.executable, "-c", code, task, json.dumps(to_dict(config)), str(out), preset,
                           json.dumps(cpu_budget)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def trained_alone(sweep, run, root: Path) -> Path:
    out = root / run.path
    train_in_a_process(sweep.task, run.config(sweep.task), out, run.preset)
    return out


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = load(a / "checkpoint.pt")["experiment"], load(b / "checkpoint.pt")["experiment"]
    return sa["model"].keys() == sb["model"].keys() and all(torch.equal(sa["model"][k], sb["model"][k])
                                                            for k in sa["model"])


@pytest.mark.slow  # an embedded Ray: about 30 s
def test_embedded_ray_sweep_equals_runs_alone_skips_and_resumes(tmp_path):
    from plasticnet.sweep.ray_driver import run_sweep

    sweep = tiny({"plastic": {"model": "plastic"}, "rnn": {"model": "rnn", "lr": 3e-5}}, seeds=(0, 1))
    out = tmp_path / "sweep"
    # plastic/seed-1 was started before and stopped at its first logged point, with a checkpoint
    first = sweep.runs()[1]
    train_in_a_process("pattern", first.config("pattern"), out / first.path, first.preset, cpu_budget=1e-9)
    assert load(out / first.path / "checkpoint.pt")["iteration"] == 10
    try:
        counts = run_sweep(sweep, out, cpus=2)
    except Exception as exc:  # Ray itself could not start here: say so rather than fail the library's tests
        if "ray" in type(exc).__module__.lower():
            pytest.skip(f"Ray could not start an embedded cluster: {exc}")
        raise
    assert counts == {"done": 4, "failed": 0, "skipped": 0}
    assert json.loads((out / first.path / run_state.DONE).read_text())["resumed_from"] == 10
    for run in sweep.runs():
        assert same_weights(out / run.path, trained_alone(sweep, run, tmp_path / "alone")), run.path
        swept = [{k: v for k, v in m.items() if "seconds" not in k} for m in
                 map(json.loads, (out / run.path / "metrics.jsonl").read_text().splitlines())]
        alone = [{k: v for k, v in m.items() if "seconds" not in k} for m in
                 map(json.loads, (tmp_path / "alone" / run.path / "metrics.jsonl").read_text().splitlines())]
        assert swept == alone, run.path
    assert run_sweep(sweep, out, cpus=2) == {"done": 0, "failed": 0, "skipped": 4}  # nothing left: Ray not started
    assert status(out)["done"] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `ray start` clusters authenticate with a token (~/.ray/auth_token); drivers must ask for token mode.
RAY_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): what a node started, its workers included."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class LoopbackCluster:
    """A head node and one worker node, each a `ray start --block` process of its own process group, given
    127.0.0.1 as their address, with one CPU each; :meth:`stop` ends both and every process below them, whatever
    happened."""

    def __init__(self):
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes = []

    def _node(self, *args):
        ray_cli = str(Path(sys.executable).with_name("ray"))
        ports = [a for name in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port",
                                "--object-manager-port") for a in (name, str(_free_port()))]
        env = RAY_ENV
        log = open(Path(self.temp) / f"node{len(self.nodes)}.log", "w")
        self.nodes.append(subprocess.Popen([ray_cli, "start", "--block", "--node-ip-address", "127.0.0.1",
                                            "--num-cpus", "1", "--object-store-memory", str(80 * 2**20),
                                            "--disable-usage-stats", *ports, *args],
                                           stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    def start(self):
        self._node("--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir", self.temp)
        self._wait()
        self._node("--address", self.address)
        self._wait()

    def _wait(self, timeout=120):
        """Until the node last started says it runs (`ray start` prints this once the node has joined)."""
        log = Path(self.temp) / f"node{len(self.nodes) - 1}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(n.poll() is not None for n in self.nodes):
                raise RuntimeError("a `ray start` process exited: " + self.logs())
            if "Ray runtime started" in log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"a node did not start in {timeout} s: " + self.logs())

    def logs(self) -> str:
        return " | ".join(p.read_text(errors="replace")[-800:] for p in sorted(Path(self.temp).glob("node*.log")))

    def stop(self):
        below = [p for node in self.nodes for p in _descendants(node.pid)]
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in reversed(self.nodes):  # `ray start --block` stops its processes on SIGTERM, not always at once
            try:
                node.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        time.sleep(1)  # then whatever is left of the nodes is ended
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in self.nodes:
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster():
    c = LoopbackCluster()
    try:
        c.start()
    except Exception as exc:
        c.stop()
        pytest.skip(f"a Ray cluster could not start on 127.0.0.1 here: {str(exc)[:500]}")
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.slow  # two Ray nodes started and stopped, 6 runs, one of them twice: about a minute
def test_cluster_sweep_survives_a_killed_worker(cluster, tmp_path):
    sweep = tiny({"rnn": {"model": "rnn"}, "lstm": {"model": "lstm"}}, seeds=(0, 1, 2), iterations=200)
    out = tmp_path / "sweep"
    driver = subprocess.Popen([sys.executable, "-c", "from plasticnet.sweep.ray_driver import run_sweep; "
                               "from plasticnet.sweep.spec import from_dict; import json, sys; "
                               f"run_sweep(from_dict(json.loads(sys.argv[1])), {str(out)!r}, "
                               f"address={cluster.address!r})", json.dumps(sweep.to_dict())],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=RAY_ENV)
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and driver.poll() is None and time.monotonic() < deadline:
            for run in sweep.runs():
                run_dir = out / run.path
                beat = run_dir / run_state.RUNNING
                # mid-run: a live worker, a checkpoint behind it, iterations ahead of it
                if beat.is_file() and (run_dir / "checkpoint.pt").is_file() and not (run_dir / run_state.DONE).exists():
                    try:
                        pid = int(beat.read_text().split()[1])
                        os.kill(pid, signal.SIGKILL)
                    except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
                        continue
                    killed = (run, load(run_dir / "checkpoint.pt")["iteration"], pid)
                    break
            time.sleep(0.02)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-3000:]
    assert killed is not None, "no run was caught mid-run to kill: " + output[-2000:]
    run, iteration, pid = killed
    done = json.loads((out / run.path / run_state.DONE).read_text())
    print(f"killed the worker process {pid} training {run.path} (checkpoint at iteration {iteration}); "
          f"it restarted from iteration {done['resumed_from']} and ended at {done['iteration']}")
    assert done["resumed_from"] is not None and done["iteration"] == 200
    assert "6 trained, 0 failed" in output
    for r in sweep.runs():
        assert same_weights(out / r.path, trained_alone(sweep, r, tmp_path / "alone")), r.path
