"""GPU paths give the CPU's results. Skipped where no CUDA device is present (run on the GPU machine with
`benchmarks/gpu_check.sh`)."""

import pytest
import torch

from plasticnet import PlasticRNN
from plasticnet.config import resolve
from plasticnet.tasks.pattern import PatternConfig, PatternExperiment

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("rule, alpha, fused, every", [("hebb", "full", True, None), ("oja", "per_neuron", True, 4),
                                                       ("clip", "scalar", True, 3), ("clip", "full", False, None)])
def test_cuda_matches_cpu(rule, alpha, fused, every):
    torch.manual_seed(0)
    cpu = PlasticRNN(5, 32, rule=rule, alpha=alpha, fused=fused, checkpoint_every=every).double()
    gpu = PlasticRNN(5, 32, rule=rule, alpha=alpha, fused=fused, checkpoint_every=every).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(20, 3, 5, dtype=torch.float64)
    results = []
    for model, xs in ((cpu, x), (gpu, x.cuda())):
        out, state = model(xs)
        (out.sum() + state.hebb.sum()).backward()
        results.append([out, state.hebb] + [p.grad for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b.cpu())


def test_pattern_training_step_on_cuda():
    cfg = resolve(PatternConfig, "pattern", "paper-50bit", {"device": "cuda", "batch_size": 8})
    experiment = PatternExperiment(cfg, torch.device("cuda"))
    values = experiment.step(0)
    assert all(v.device.type == "cuda" for v in values.values())
    assert all(p.device.type == "cuda" for p in experiment.model.parameters())
