"""The fused plastic LSTM gives the step-by-step cell's results: outputs, final state and every gradient, for each
rule, alpha mode, rate form and modulator input, in double precision; in single precision at the PTB preset's size."""

from types import SimpleNamespace

import pytest
import torch

from plasticnet import PlasticLSTM
from plasticnet.errors import ConfigError
from plasticnet.fast import cpu_kernels, plastic_lstm, resolve_cell, use_backend
from plasticnet.lstm import LSTMState

CASES = [
    dict(rule="clip", alpha="per_neuron"),
    dict(rule="clip", alpha="full"),
    dict(rule="hebb", alpha="scalar"),
    dict(rule="oja", alpha="full"),
    dict(rule="clip", alpha="per_neuron", modulation="simple", fanout=True),
    dict(rule="clip", alpha="full", modulation="simple", fanout=False),
    dict(rule="clip", alpha="per_neuron", modulation="simple", fanout=True, modulator_input="cell"),
    dict(rule="clip", alpha="scalar", modulation="simple", fanout=False, modulator_input="cell"),
    dict(rule="clip", alpha="per_neuron", modulation="retroactive", fanout=True),
    dict(rule="clip", alpha="full", modulation="retroactive", fanout=False, modulator_input="cell"),
    dict(rule="clip", alpha="scalar", modulation="retroactive", fanout=True, modulator_input="cell"),
]


@pytest.fixture(autouse=True)
def kernels_on():
    assert cpu_kernels.numba is not None, "numba is missing: pip install numba (a plasticnet dependency)"
    yield


def _name(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


def _pair(cfg, sizes, dtype, clip=0.3, seed=0):
    """A fused LSTM and a step-by-step twin with the same weights, large enough that every term matters."""
    torch.manual_seed(seed)
    fused = PlasticLSTM(3, sizes, len(sizes), clip=clip, **cfg).to(dtype)
    with torch.no_grad():
        for cell in fused.cells:
            cell.alpha.normal_(0, 1.0)
            cell.w.normal_(0, 0.5)
            if hasattr(cell, "eta"):
                cell.eta.fill_(0.4)
    stepped = PlasticLSTM(3, sizes, len(sizes), clip=clip, backend="reference", **cfg).to(dtype)
    stepped.load_state_dict(fused.state_dict())
    assert fused.chosen_backend() == "numba" and stepped.chosen_backend() == "reference"
    return fused, stepped


def _random_state(lstm, batch, dtype):
    """A state away from zero (traces included), so that the initial state's gradients are checked too."""
    def perturb(t):
        return None if t is None else (t + 0.2 * torch.randn_like(t)).requires_grad_()
    return [LSTMState(*(perturb(t) for t in s)) for s in lstm.initial_state(batch)]


def _loss(out, states):
    weights = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin()
    return (out * weights).sum() + sum(t.sin().sum() for s in states for t in s if t is not None)


def _run(lstm, x, states):
    out, final = lstm(x, states)
    inputs = [x, *(t for s in states for t in s if t is not None), *lstm.parameters()]
    return out, final, torch.autograd.grad(_loss(out, final), inputs)


@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "chunks"])
@pytest.mark.parametrize("cfg", CASES, ids=_name)
def test_fused_lstm_equals_cell_steps(cfg, chunked, monkeypatch):
    if chunked:  # chunks of 3, 3 and 1 steps, as a long sequence of wide layers has (the backward pass recomputes
        monkeypatch.setattr(plastic_lstm, "_WHOLE_SEQUENCE_WORK_BYTES", 0)  # the traces inside each)
    fused, stepped = _pair(cfg, [4, 5], torch.float64)
    # 7 steps, 5 examples (the forward kernel takes four at once and the fifth alone)
    x = torch.randn(7, 5, 3, dtype=torch.float64, requires_grad=True)
    states = _random_state(fused, 5, torch.float64)
    out, final, grads = _run(fused, x, states)
    out_s, final_s, grads_s = _run(stepped, x, states)
    torch.testing.assert_close(out, out_s, rtol=0, atol=1e-13)
    for layer, layer_s in zip(final, final_s):
        for a, b in zip(layer, layer_s):
            if b is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    for got, want in zip(grads, grads_s):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)
    if cfg["rule"] == "clip":  # the clip was active, so its mask was exercised
        assert any((s.hebb.abs() >= 0.3 - 1e-12).any() for s in final_s)


@pytest.mark.parametrize("cfg", [CASES[0], CASES[9]], ids=_name)
def test_fused_lstm_gradcheck(cfg):
    """Finite differences for the inputs and the initial state (the clip set high: no kink near the point)."""
    fused, _ = _pair(cfg, [3], torch.float64, clip=50.0)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    state = _random_state(fused, 2, torch.float64)[0]
    tensors = [t for t in state if t is not None]

    def f(x, *tensors):
        out, final = fused(x, [LSTMState(*tensors) if len(tensors) == 4 else LSTMState(*tensors, None)])
        return _loss(out, final)
    assert torch.autograd.gradcheck(f, (x, *tensors))


@pytest.mark.parametrize("model", ["plastic", "modplast", "modul"])
def test_fused_lstm_float32_at_ptb_size(model):
    """The PTB small preset's layer (199 units, batch 20, 20-step segments, clip rule, per-neuron alpha, fan-out)
    in single precision: outputs, final trace and every gradient within 1e-5 of a double-precision run (relative to
    its largest value), or within 4 times the stepped layer's own error where that is larger."""
    cfg = dict(rule="clip", alpha="per_neuron", **{"plastic": {}, "modplast": dict(modulation="simple", fanout=True),
                                                   "modul": dict(modulation="retroactive", fanout=True)}[model])
    torch.manual_seed(0)
    fused = PlasticLSTM(200, 199, 1, clip=2.0, **cfg)
    with torch.no_grad():  # traces that matter: alpha as a trained model's, a state carried from earlier segments
        fused.cells[0].alpha.fill_(0.02)
    stepped = PlasticLSTM(200, 199, 1, clip=2.0, backend="reference", **cfg)
    stepped.load_state_dict(fused.state_dict())
    x = torch.randn(20, 20, 200)
    states = _random_state(fused, 20, torch.float32)
    results = [_run(lstm, x.clone().requires_grad_(), states) for lstm in (fused, stepped)]
    reference = _run(stepped.double(), x.double().requires_grad_(),
                     [LSTMState(*(t.detach().double().requires_grad_() if t is not None else None for t in s))
                      for s in states])

    def errors(result):  # outputs, final trace, then each gradient, relative to the reference's largest value
        pairs = [(result[0], reference[0]), (result[1][0].hebb, reference[1][0].hebb), *zip(result[2], reference[2])]
        return [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in pairs]
    fused_errors, stepped_errors = errors(results[0]), errors(results[1])
    for got, baseline in zip(fused_errors, stepped_errors):
        assert got <= max(4 * baseline, 1e-5), (fused_errors, stepped_errors)
    print(f"{model}: largest relative error, fused {max(fused_errors):.1e}, stepped {max(stepped_errors):.1e}")


def test_auto_chooses_numba_where_it_covers_the_cells_and_says_so():
    for kwargs in (dict(rule="clip"), dict(rule="oja", alpha="full"),
                   dict(rule="clip", modulation="simple", fanout=True), dict(rule="clip", modulation="retroactive")):
        lstm = PlasticLSTM(3, 4, **kwargs)
        assert lstm.chosen_backend() == "numba" and lstm.fused
        assert "backend='auto' -> numba" in repr(lstm)
    for kwargs in (dict(rule=None), dict(rule="softclip"), dict(rule="softclip", modulation="retroactive")):
        lstm = PlasticLSTM(3, 4, **kwargs)  # the plain LSTM, and a rule without a fused backward pass
        assert lstm.chosen_backend() == "reference" and not lstm.fused
        assert "backend='auto' -> reference" in repr(lstm)
    lstm, x = PlasticLSTM(3, 4, rule="clip"), torch.randn(2, 1, 3)
    assert lstm.chosen_backend(x) == "numba" and lstm.chosen_backend(x.half()) == "reference"
    assert repr(PlasticLSTM(3, 4, rule="clip", backend="reference")).count("backend='reference'") == 1


@pytest.mark.parametrize("backend, kwargs, words", [
    ("numba", dict(rule="softclip"), "rule 'softclip' has no fused backward pass"),
    ("fused", dict(rule=None), "a cell without plasticity runs on the reference"),
    ("torch", dict(rule="clip"), "no fused form on torch"),
    ("triton", dict(rule="clip", modulation="simple"), "no fused form on triton"),
    ("fused", dict(rule="softclip", modulation="simple"), "rule 'softclip' has no fused backward pass"),
])
def test_a_backend_that_cannot_cover_the_cells_is_refused_when_built(backend, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        PlasticLSTM(3, 4, backend=backend, **kwargs)


def test_numba_is_refused_on_tensors_it_does_not_run():
    lstm = PlasticLSTM(3, 4, rule="clip", backend="numba")
    with pytest.raises(ConfigError, match="backend 'numba' does not cover this cell: cpu tensors of torch.float16"):
        lstm.half()(torch.randn(2, 1, 3).half())
    cuda_like = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)
    with pytest.raises(ConfigError, match="cuda tensors of torch.float32"):
        resolve_cell("numba", lstm.cells[0], cuda_like)
    assert resolve_cell("auto", lstm.cells[0], cuda_like) == "reference"
    with pytest.raises(ConfigError, match="backend 'fused' does not cover this cell: cuda tensors"):
        resolve_cell("fused", lstm.cells[0], cuda_like)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_numba_is_refused_on_a_cuda_model_and_auto_steps_it():
    x = torch.randn(3, 2, 3, device="cuda")
    with pytest.raises(ConfigError, match="cuda tensors"):
        PlasticLSTM(3, 4, rule="clip", backend="numba").cuda()(x)
    lstm = PlasticLSTM(3, 4, rule="clip").cuda()
    assert lstm.chosen_backend() == "reference" and lstm(x)[0].shape == (3, 2, 4)


def test_use_backend_switches_auto_layers_only(monkeypatch):
    calls = []
    run = plastic_lstm.fused_lstm_run
    monkeypatch.setattr(plastic_lstm, "fused_lstm_run", lambda *args: calls.append(1) or run(*args))
    auto, pinned = PlasticLSTM(3, 4, 2, rule="clip"), PlasticLSTM(3, 4, 2, rule="clip", backend="numba")
    x = torch.randn(5, 2, 3)
    with use_backend("reference"):
        assert auto.chosen_backend() == "reference" and "backend='auto' -> reference" in repr(auto)
        auto(x)
        assert calls == []  # stepped under autograd
        assert pinned.chosen_backend() == "numba"
        pinned(x)
        assert len(calls) == 2  # one fused run per layer
    with use_backend("torch"), pytest.raises(ConfigError, match="no fused form on torch"):
        auto(x)
    auto(x)
    assert len(calls) == 4
