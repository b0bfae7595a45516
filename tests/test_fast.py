"""The fused recurrence gives the cell's results: outputs, final trace and every gradient, with and without
chunked recomputation, for each fusable rule and alpha mode."""

import itertools

import pytest
import torch

from plasticnet import PlasticRNN, PlasticRNNCell
from plasticnet.fast import fusable, fused_plastic_rnn
from plasticnet.rules import make_rule

CASES = list(itertools.product(["hebb", "oja", "clip"], ["full", "per_neuron", "scalar"], [None, 2, 3]))


def _cell(rule, alpha):
    torch.manual_seed(0)
    cell = PlasticRNNCell(None, 4, rule=rule, alpha=alpha, init_scale=0.5, clip=0.3).double()
    with torch.no_grad():
        cell.eta.fill_(0.3)
    return cell


def _loss(out, trace):
    weights = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin()
    return (out * weights).sum() + trace.sin().sum()


@pytest.mark.parametrize("rule, alpha, every", CASES)
def test_fused_equals_cell_steps(rule, alpha, every):
    cell = _cell(rule, alpha)
    x = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    state, outs = cell.initial_state(2), []
    for x_t in x:
        h, state = cell(x_t, state)
        outs.append(h)
    params = [x, cell.w, cell.alpha, cell.eta]
    expected = torch.autograd.grad(_loss(torch.stack(outs), state.hebb), params)
    out, trace = fused_plastic_rnn(x, torch.zeros(2, 4).double(), torch.zeros(2, 4, 4).double(),
                                   cell.w, cell.alpha, cell.eta, cell.rule, every)
    torch.testing.assert_close(out, torch.stack(outs), rtol=0, atol=1e-14)
    torch.testing.assert_close(trace, state.hebb, rtol=0, atol=1e-14)
    for got, want in zip(torch.autograd.grad(_loss(out, trace), params), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if rule == "clip":
        assert (trace.abs() >= 0.3).any()  # the clip was active, so its mask was exercised


@pytest.mark.parametrize("rule, alpha", [("hebb", "full"), ("oja", "per_neuron"), ("clip", "scalar")])
def test_fused_gradcheck_with_initial_state(rule, alpha):
    cell = _cell(rule, alpha)
    inputs = (torch.randn(4, 2, 4, dtype=torch.float64), 0.5 * torch.randn(2, 4, dtype=torch.float64),
              0.1 * torch.randn(2, 4, 4, dtype=torch.float64), cell.w.detach(), cell.alpha.detach(),
              cell.eta.detach())
    inputs = tuple(t.clone().requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(lambda *a: _loss(*fused_plastic_rnn(*a, cell.rule, 2)), inputs)


def test_plastic_rnn_uses_fused_path_only_where_it_applies():
    assert PlasticRNN(3, 4, rule="oja").fused
    assert not PlasticRNN(3, 4, rule="oja", fused=False).fused
    assert not PlasticRNN(3, 4, rule="clip", modulation="simple").fused
    assert not PlasticRNN(3, 4, rule="softclip").fused
    assert not PlasticRNN(3, 4, rule="hebb", activation="selu").fused
    assert not fusable(None) and fusable(make_rule("clip"))


@pytest.mark.parametrize("every", [None, 3])
def test_plastic_rnn_fused_matches_unfused_with_input_projection(every):
    torch.manual_seed(3)
    fused = PlasticRNN(3, 5, rule="hebb", batch_first=True, checkpoint_every=every).double()
    plain = PlasticRNN(3, 5, rule="hebb", batch_first=True, fused=False).double()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    out_f, s_f = fused(x)
    out_p, s_p = plain(x)
    torch.testing.assert_close(out_f, out_p)
    torch.testing.assert_close(s_f.hebb, s_p.hebb)
    out_f.sum().backward()
    out_p.sum().backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_chunked_recomputation_keeps_fewer_traces():
    """Autograd's saved bytes fall from T traces to about T/k + k when checkpointing every k steps."""
    def saved_bytes(every):
        rnn = PlasticRNN(None, 64, rule="hebb", checkpoint_every=every)
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            rnn(torch.randn(100, 4, 64))
        return sum(storages.values())

    trace_bytes = 4 * 64 * 64 * 4
    assert saved_bytes(None) > 100 * trace_bytes
    assert saved_bytes(10) < 25 * trace_bytes
