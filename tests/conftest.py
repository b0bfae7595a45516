import os

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
