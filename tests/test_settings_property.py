"""Property: for every setting of every task, any value, valid or not, gives exit 0, or one line and exit 2 (3 for a
valid setting whose one iteration diverged), from `train --dry-run` and from a one-iteration run; never a traceback.

Hypothesis draws the values (seeded, a few examples per setting, so that the whole file takes seconds): integers
around the edges of every range, floats including NaN, infinities and huge ones, every choice of a string setting
and some that are not. Sizes stay small: a valid size of millions would be a run that fills the memory, not an
error. Tasks that read data get a tiny synthetic data set."""

import dataclasses
import io
import math
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from plasticnet.cli import main
from plasticnet.tasks import TASKS

EXAMPLES = 2  # per setting: about 150 settings in all

CHOICES = {  # string settings: what a user might type, valid and not
    "model": ["plastic", "rnn", "lstm", "modplast", "modul", "transformer"],
    "rule": ["hebb", "oja", "clip", "softclip", "bogus"],
    "alpha": ["full", "per_neuron", "scalar", "none"],
    "split": ["paper", "vinyals", "alphabets", "random"],
    "activation": ["tanh", "relu", "selu", "identity", "sigmoid"],
    "agent": ["rnn", "plastic", "modplast", "modul", "lstm"],
    "baseline": ["own", "element0", "none"],
    "modulator_input": ["hidden", "cell", "input"],
    "device": ["cpu", "cuda:7", "tpu", ""],
    "test_alphabets": ["", "Alpha", "Alpha,Beta", "Klingon"],
    "train_alphabets": ["", "Beta", "Klingon"],
    "env": ["paper", "paper-2019", "paper-2018", "small", "bogus"],
}


def _png(size, mode="L", ink=0):
    buffer = io.BytesIO()
    Image.new(mode, size, ink).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    omniglot = root / "omniglot.zip"
    with zipfile.ZipFile(omniglot, "w") as archive:
        for c in range(8):
            for d in range(3):
                archive.writestr(f"images_background/{'Alpha' if c < 4 else 'Beta'}/character{c:02d}/{d}.png",
                                 _png((105, 105), "1", (c + d) % 2))
    cifar = root / "cifar"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (cifar / split).mkdir(parents=True)
        for i in range(1, 5):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(cifar / split / f"{i}.png")
    (cifar / "trainLabels.csv").write_text("id,label\n1,cat\n2,dog\n3,cat\n4,dog\n")
    ptb = root / "ptb"
    ptb.mkdir()
    words = [f"w{i}" for i in range(12)]
    for split, lines in (("train", 30), ("valid", 6), ("test", 6)):
        text = "".join(" " + " ".join(rng.choice(words, size=5)) + " \n" for _ in range(lines))
        (ptb / f"ptb.{split}.txt").write_text((" " + " ".join(words) + " \n" if split == "train" else "") + text)
    return {"omniglot": omniglot, "images": cifar, "ptb": ptb}


def base(task: str, data: dict) -> list[str]:
    """Small, fast settings each drawn value is applied over."""
    small = {
        "pattern": ["--preset", "paper-50bit"],
        "images": ["--n-images", "1", "--n-cycles", "1", "--presentation-time", "2", "--gap", "0", "--test-time", "1",
                   "--eval-episodes", "2", "--eval-every", "10"],
        "omniglot": ["--test-classes", "3", "--channels", "4", "--eval-episodes", "4", "--eval-every", "10"],
        "ptb": ["--emsize", "6", "--hidden-size", "5", "--batch-size", "2", "--bptt", "5", "--epochs", "1",
                "--eval-batch-size", "2", "--test-batch-size", "1"],
        "maze": ["--batch-size", "2", "--hidden-size", "8"],
        "cue-reward": ["--batch-size", "2", "--hidden-size", "8"],
    }[task]
    if task in data:
        small += ["--data", str(data[task])]
    return small + ["--log-every", "1", "--save-every", "1000", "--no-progress"]


def flag(field) -> str:
    return "--" + field.metadata.get("flag", field.name.replace("_", "-"))


def value_strategy(field, kind, data_path):
    if kind is bool:
        return st.booleans().map(lambda v: [flag(field) if v else "--no-" + flag(field)[2:]])
    if kind is int:
        values = st.integers(-3, 8)
        if field.name == "seed":
            values = values | st.sampled_from([2**31 - 1, 2**31, 2**40])
        return values.map(lambda v: [flag(field), str(v)])
    if kind is float:
        values = st.floats(-2, 2) | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, 1e6, 1e300])
        return values.map(lambda v: [flag(field), repr(v)])
    choices = CHOICES.get(field.name)
    if field.name == "data":
        choices = [str(data_path), "", "/nonexistent/data"] if data_path else ["", "/nonexistent/data"]
    return st.sampled_from(choices or ["", "bogus"]).map(lambda v: [flag(field), v])


SETTINGS = [(name, field.name) for name, task in TASKS.items() for field in dataclasses.fields(task.config_cls)]


def check_outcome(code, err, allowed):
    assert code in allowed, (code, err)
    if code != 0:
        line = err.strip()
        assert line and "\n" not in line and "Traceback" not in line, err


@pytest.mark.parametrize("task, setting", SETTINGS, ids=[f"{t}-{s}" for t, s in SETTINGS])
def test_any_value_of_any_setting_gives_exit_0_or_one_line(task, setting, data, tmp_path_factory, capsys):
    config_cls = TASKS[task].config_cls
    field = next(f for f in dataclasses.fields(config_cls) if f.name == setting)
    kind = typing.get_type_hints(config_cls)[setting]

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(value=value_strategy(field, kind, data.get(task)))
    def check(value):
        argv = ["train", task, *base(task, data), *value]
        code, err = _main(argv + ["--dry-run", "--json"], capsys)
        check_outcome(code, err, (0, 2))
        if code == 0:
            out = tmp_path_factory.mktemp("run") / "run"
            code, err = _main(argv + ["--iterations", "1", "--out", str(out)], capsys)
            check_outcome(code, err, (0, 2, 3))

    check()


def _main(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a value that is not a number
        code = exc.code
    return code, capsys.readouterr().err
