"""The scripts in examples/, run as a user runs them (a fresh process each), and what they print checked."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def percent(text: str, label: str) -> float:
    return float(re.search(rf"{label} ([\d.]+)%", text).group(1))


def test_own_model_plastic_layer_learns_what_a_plain_rnn_of_its_size_does_not():
    out = run("own_model.py")
    plain, plastic = percent(out, "plain RNN"), percent(out, "plastic RNN")
    assert plain > 30  # near chance (50%)
    assert plastic < 20
    assert plastic < plain / 2


def test_own_rule_matches_its_equation_and_learns():
    out = run("own_rule.py")
    assert float(re.search(r"largest difference ([\d.e+-]+)", out).group(1)) < 1e-12
    before, after = (float(x) for x in re.search(r"([\d.]+)% before training, ([\d.]+)% after", out).groups())
    assert before > 40
    assert after < 25


def test_gym_agent_learns_through_the_gymnasium_adapter():
    out = run("gym_agent.py")
    bumps = [float(x) for x in re.search(r"wall bumps ([\d.]+) / ([\d.]+)", out).groups()]
    found = [float(x) for x in re.search(r"rewards found ([\d.]+) / ([\d.]+)", out).groups()]
    assert bumps[0] > 3  # a random walk in the 5x5 maze bumps into a wall about one step in seven
    assert bumps[1] < bumps[0] / 2
    assert found[1] > found[0]


def shared_omniglot() -> Path:
    base = os.environ.get("PLASTICNET_SHARED_DATA") or ROOT.parent / "shared" / "data"
    folder = Path(base) / "omniglot"
    if not (folder / "images_background_small2.zip").is_file():
        pytest.skip(f"no Omniglot small background subsets at {folder} (set PLASTICNET_SHARED_DATA)")
    return folder


def test_omniglot_checkpoint_classifies_unseen_characters_well_above_chance():
    out = run("omniglot_checkpoint.py", str(shared_omniglot()))
    assert "106 characters never seen in training" in out
    assert percent(out, "episodes:") > 60  # chance is 20%; the checkpoint measured 82.7% on 1,000 episodes
