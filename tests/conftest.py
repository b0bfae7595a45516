import os

import numpy as np
import pytest
import torch

# Without a GPU, Triton's kernels run in its interpreter on CPU tensors (tests/test_reference.py): the variable must
# be set before Triton reads it, when the kernels are defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def float64():
    """Double precision for one test file's comparisons (``pytestmark = pytest.mark.usefixtures("float64")``);
    restored afterwards, since a module-level switch would leak into every other test file."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def steps_match_on_cuda():
    """``check(cpu, cuda, actions)``: a CUDA environment, reset on the same episodes as its CPU twin, steps exactly as
    it does through ``actions`` (T, B), and never waits on the host while stepping."""
    def check(cpu, cuda, actions):
        cuda_actions = actions.cuda()
        torch.cuda.set_sync_debug_mode("error")
        try:
            cuda_results = [cuda.step(action)[:2] for action in cuda_actions]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for action, (obs, reward) in zip(actions, cuda_results):
            expected_obs, expected_reward, _ = cpu.step(action)
            assert torch.equal(obs.cpu(), expected_obs) and torch.equal(reward.cpu(), expected_reward)
    return check


@pytest.fixture
def corpus_dir(tmp_path):
    """A tiny Penn Treebank folder, ``tmp_path / "ptb"``: words w0..w11, 40 training lines (about 230 tokens), 8 validation
    and 8 test lines; every word appears in training."""
    rng = np.random.default_rng(0)
    root = tmp_path / "ptb"
    root.mkdir()
    words = [f"w{i}" for i in range(12)]
    for split, lines in (("train", 40), ("valid", 8), ("test", 8)):
        text = "".join(" " + " ".join(rng.choice(words, size=rng.integers(3, 8))) + " \n" for _ in range(lines))
        if split == "train":
            text = " " + " ".join(words) + " \n" + text
        (root / f"ptb.{split}.txt").write_text(text)
    return root
