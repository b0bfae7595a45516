"""GPU paths give the CPU's results. Skipped where no CUDA device is present (run on the GPU machine with
`benchmarks/gpu_check.sh`)."""

import pytest
import torch

from plasticnet import PlasticRNN
from plasticnet.config import resolve
from plasticnet.fast import use_backend
from plasticnet.tasks.pattern import PatternConfig, PatternExperiment

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("rule, alpha, fused, every", [("hebb", "full", True, None), ("oja", "per_neuron", True, 4),
                                                       ("clip", "scalar", True, 3), ("clip", "full", False, None)])
def test_cuda_matches_cpu(rule, alpha, fused, every):
    torch.manual_seed(0)
    backend = "auto" if fused else "reference"
    cpu = PlasticRNN(5, 32, rule=rule, alpha=alpha, backend=backend, checkpoint_every=every).double()
    gpu = PlasticRNN(5, 32, rule=rule, alpha=alpha, backend=backend, checkpoint_every=every).double().cuda()
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


def _a2c(task: str, preset: str, graph: bool, **extra):
    from plasticnet.tasks import get_task
    from plasticnet.train.a2c import A2CExperiment

    cfg = resolve(get_task(task).config_cls, task, preset, {"device": "cuda", "batch_size": 5, "hidden_size": 24,
                                                            "burn_in": 1, "cuda_graph": graph, **extra})
    torch.manual_seed(0)
    return A2CExperiment(cfg, torch.device("cuda"))


@pytest.mark.parametrize("task, preset, extra", [
    ("maze", "paper-2019", {}), ("maze", "paper-2019", {"checkpoint_every": 7}),
    ("maze", "simplemaze", {}), ("maze", "paper-2019-plastic", {"rule": "hebb"}), ("maze", "paper-2019-rnn", {}),
    ("cue-reward", "paper", {}), ("cue-reward", "paper-plastic", {"rule": "oja"})])
def test_graphed_a2c_iterations_equal_eager_ones(task, preset, extra):
    """A whole A2C iteration replayed as a CUDA graph gives the eager iteration's metrics and parameters, update after
    update (burn-in included), every agent kind and rule: nothing in it is frozen at capture but the shapes."""
    graphed, eager = _a2c(task, preset, True, **extra), _a2c(task, preset, False, **extra)
    assert graphed.graphed and not eager.graphed and "CUDA graph" in graphed.describe()["agent"]
    for iteration in range(5):
        got, expected = graphed.step(iteration), eager.step(iteration)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_eager_episodes_between_graphed_iterations_change_nothing():
    """An eager episode of another batch size between two replays (an evaluation, say) leaves the graph's buffers
    alone: the next iterations are those of a run without it."""
    from plasticnet.train.a2c import rollout

    graphed, plain = _a2c("maze", "paper-2019", True), _a2c("maze", "paper-2019", True)
    for iteration in range(3):
        plain.step(iteration)
        graphed.step(iteration)
        env = graphed.cfg.make_env(11, "cuda", seed=iteration)
        episode = rollout(graphed.model, env, torch.Generator(device="cuda").manual_seed(0))
        episode.logits.sum().backward()  # the fused path's workspace is used and released, as in training
    got, expected = graphed.step(3), plain.step(3)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, extra, every", [
    ("modplast", {}, None), ("modplast", {"fanout": True, "clip": 0.05}, 5), ("plastic", {"rule": "hebb"}, None),
    ("plastic", {"rule": "oja", "alpha": "per_neuron"}, 4), ("modplast", {"rule": "hebb", "alpha": "scalar"}, 3),
    ("modplast", {"rule": "oja", "fanout": True}, None)])
def test_gpu_kernels_equal_the_pytorch_operations(kind, extra, every):
    """The Triton step kernels give the PyTorch operations' episode and gradients (float64), every rule, alpha mode
    and modulation they cover, with and without recomputed chunks (clip 0.05 saturates the traces)."""
    from plasticnet.agents import RecurrentAgent
    from plasticnet.envs import MazeEnv
    from plasticnet.fast import gpu_kernels
    from plasticnet.train.a2c import rollout

    if not gpu_kernels.available():
        pytest.skip("Triton is not installed")
    results = []
    for enabled in (True, False):
        torch.manual_seed(0)
        agent = RecurrentAgent(17, 4, kind, 40, init_scale=0.3, checkpoint_every=every, **extra).double().cuda()
        env = MazeEnv(6, "paper-2019", device="cuda", seed=1)
        with use_backend("triton" if enabled else "torch"):
            episode = rollout(agent, env, torch.Generator(device="cuda").manual_seed(2))
            (episode.logits.sum() + episode.hidden.square().sum()).backward()
        results.append((episode, [p.grad for p in agent.parameters() if p.grad is not None]))
    assert results[0][0].actions.equal(results[1][0].actions)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("rule, alpha, every", [("hebb", "full", None), ("oja", "per_neuron", 4),
                                               ("clip", "scalar", 3)])
def test_gpu_kernels_run_open_loops_as_the_pytorch_operations(rule, alpha, every):
    from plasticnet.fast import gpu_kernels

    if not gpu_kernels.available():
        pytest.skip("Triton is not installed")
    x = torch.randn(30, 4, 5, dtype=torch.float64, device="cuda")
    results = []
    for enabled in (True, False):
        torch.manual_seed(0)
        model = PlasticRNN(5, 48, rule=rule, alpha=alpha, checkpoint_every=every).double().cuda()
        with use_backend("triton" if enabled else "torch"):
            out, state = model(x)
            (out.sum() + 0.3 * state.hebb.sum()).backward()
        results.append([out, state.hebb] + [p.grad for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def _ptb(corpus_dir, model: str, graph: bool, **extra):
    from plasticnet.tasks.ptb import PtbConfig, PtbExperiment

    cfg = resolve(PtbConfig, "ptb", "small", {
        "data": str(corpus_dir), "model": model, "emsize": 6, "hidden_size": 5, "batch_size": 3, "bptt": 7,
        "epochs": 2, "eval_batch_size": 2, "log_every": 1000, "save_every": 1000, "device": "cuda",
        "cuda_graph": graph, **extra})
    torch.manual_seed(0)
    return PtbExperiment(cfg, torch.device("cuda"))


@pytest.mark.parametrize("model", ["lstm", "plastic", "modplast", "modul"])
def test_graphed_ptb_segments_equal_eager_ones(corpus_dir, model):
    """Two epochs of PTB segments, the full-length ones replayed as a CUDA graph, the last short one of each epoch
    eager, a validation at each epoch's end and the epoch's zero state and traces between: the eager run's losses,
    validation perplexities and weights, segment after segment."""
    graphed, eager = _ptb(corpus_dir, model, True), _ptb(corpus_dir, model, False)
    assert graphed.graph is not None and eager.graph is None and graphed.describe()["cuda_graph"]
    assert graphed.lengths[-1] < 7  # each epoch ends with a short segment, run eagerly
    for iteration in range(graphed.planned_iterations):
        got, expected = graphed.step(iteration), eager.step(iteration)
        torch.testing.assert_close(got["loss"], expected["loss"], rtol=1e-5, atol=1e-6)
        ends = graphed.validate(iteration, False), eager.validate(iteration, False)
        assert ends[0].keys() == ends[1].keys()
        for name in ends[1]:
            assert ends[0][name] == pytest.approx(ends[1][name], rel=1e-5)
    assert graphed.epoch == 2
    for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_graphed_ptb_segments_draw_new_dropout_masks_at_each_replay(corpus_dir):
    """Dropout draws its masks inside the graph: two replays of one segment from the same state give different
    losses, and without dropout the same one."""
    for p, differ in ((0.3, True), (0.0, False)):
        run = _ptb(corpus_dir, "modplast", True, dropout=p, dropouth=p, dropouti=p)
        x, y = run.train_data[:7], run.train_data[1:8]
        zeros = [t for layer in run.model.rnn.initial_state(3) for t in layer if t is not None]
        assert bool(run.graph(x, y, *zeros)["ce"] != run.graph(x, y, *zeros)["ce"]) == differ
