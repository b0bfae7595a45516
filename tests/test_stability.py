"""Stable rules: a trace that a neuromodulator could drive without bound is refused, the bounded forms stay bounded
under a strongly negative modulator, and every layer and fast path uses one eligibility rate."""

import pytest
import torch

from plasticnet import ConfigError, PlasticLSTMCell, PlasticRNN, PlasticRNNCell, Rule
from plasticnet.agents import RecurrentAgent
from plasticnet.cli import main
from plasticnet.fast import fused_cell_run
from plasticnet.layers import eligibility_rate
from plasticnet.rules import DecayingHebb, Oja

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("rule", ["hebb", "oja"])
@pytest.mark.parametrize("make", [
    lambda rule, **kw: PlasticRNN(3, 8, rule=rule, **kw),
    lambda rule, **kw: PlasticLSTMCell(3, 8, rule=rule, **kw),
    lambda rule, **kw: RecurrentAgent(17, 4, "modplast", 8, rule=rule, fanout=kw.get("fanout", False)),
], ids=["rnn", "lstm", "agent"])
@pytest.mark.parametrize("fanout", [False, True])
def test_decaying_rules_are_refused_under_a_neuromodulator(rule, make, fanout):
    with pytest.raises(ConfigError, match=rf"rule '{rule}' is unstable under a neuromodulator: its decay .* grows "
                                          r"without bound; with modulation use rule='clip' or 'softclip'"):
        make(rule, modulation="simple", fanout=fanout)
    make("clip", modulation="simple", fanout=fanout)  # the bounded form is accepted
    PlasticRNN(3, 8, rule=rule)  # and the decaying rule with its learned eta


class Anti(Rule):
    name = "anti"

    def update(self, trace, pre, post, rate):
        return trace - rate * pre.unsqueeze(2) * post.unsqueeze(1)


class BoundedAnti(Anti):
    bounded = True

    def update(self, trace, pre, post, rate):
        return super().update(trace, pre, post, rate).clamp(-1, 1)


def test_a_custom_rule_takes_a_neuromodulator_only_when_it_declares_itself_bounded():
    with pytest.raises(ConfigError, match="rule 'anti' is unstable under a neuromodulator: it does not declare "
                                          "bounded = True"):
        PlasticRNNCell(3, 4, rule=Anti(), modulation="simple")
    PlasticRNNCell(3, 4, rule=Anti())
    PlasticRNNCell(3, 4, rule=BoundedAnti(), modulation="simple")


def test_the_command_line_refuses_an_unstable_agent_in_one_line(capsys):
    assert main(["train", "maze", "--preset", "paper-2019", "--rule", "oja", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rule 'oja' is unstable under a neuromodulator" in err and "'clip'" in err


def test_the_refused_forms_do_grow_under_a_negative_rate():
    """Why they are refused: the issue's case, 100 steps of a rate near -0.96 (tanh(-2)) on tanh-bounded activity."""
    torch.manual_seed(0)
    rate = torch.full((2, 1), torch.tanh(torch.tensor(-2.0)).item())
    for rule in (DecayingHebb(), Oja()):
        trace = torch.zeros(2, 8, 8)
        for _ in range(100):
            pre, post = torch.rand(2, 8).mul(2).sub(1).tanh(), torch.rand(2, 8).mul(2).sub(1).tanh()
            trace = rule.update(trace, pre, post, rate)
        assert trace.abs().max() > 1e6


@pytest.mark.parametrize("rule", ["clip", "softclip"])
@pytest.mark.parametrize("fanout", [False, True])
def test_the_bounded_forms_stay_bounded_under_a_strongly_negative_modulator(rule, fanout):
    torch.manual_seed(0)
    rnn = PlasticRNN(3, 8, rule=rule, modulation="simple", fanout=fanout, clip=2.0, init_scale=0.5).double()
    with torch.no_grad():
        rnn.cell.h2mod.weight.zero_()
        rnn.cell.h2mod.bias.fill_(-2.0)  # the modulator is tanh(-2) = -0.96 at every step
        if fanout:
            rnn.cell.modfanout.weight.fill_(3.0)  # fanned out to about -2.9 per unit
            rnn.cell.modfanout.bias.zero_()
    _, state = rnn(torch.randn(100, 4, 3, dtype=torch.float64))
    assert torch.isfinite(state.hebb).all() and state.hebb.abs().max() <= 2.0
    assert state.hebb.abs().max() > 0.5  # the rate did move the trace


def test_eligibility_rate_is_eta_clamped_to_0_1():
    eta = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    rate = eligibility_rate(eta)
    assert rate.tolist() == [0.0, 0.0, 0.3, 1.0, 1.0]
    rate.sum().backward()
    assert eta.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def _retro_rnn(eta, n=4, seed=0):
    torch.manual_seed(seed)
    cell = PlasticRNNCell(None, n, rule="clip", modulation="retroactive", clip=0.5, init_scale=0.5).double()
    with torch.no_grad():
        cell.eta.fill_(eta)
    return cell


def _retro_lstm(eta, n=4, seed=0):
    torch.manual_seed(seed)
    cell = PlasticLSTMCell(n, n, rule="clip", modulation="retroactive").double()
    with torch.no_grad():
        cell.eta.fill_(eta)
    return cell


@pytest.mark.parametrize("eta", [-0.5, 0.3, 1.5])
@pytest.mark.parametrize("make", [_retro_rnn, _retro_lstm], ids=["rnn", "lstm"])
def test_every_layer_uses_the_same_eligibility_rate(eta, make):
    """One step from a random eligibility: ``E' = (1 - r) E + r outer(pre, post)`` with r = eta clamped to [0, 1]
    (rate 1.5 gives E' = outer(pre, post), rate -0.5 leaves E as it was)."""
    cell = make(eta)
    h_prev = torch.rand(3, 4, dtype=torch.float64) - 0.5
    elig = torch.randn(3, 4, 4, dtype=torch.float64)
    state = cell.initial_state(3)._replace(h=h_prev, eligibility=elig)
    x = torch.randn(3, 4, dtype=torch.float64)
    _, new = cell(x, state)
    if isinstance(cell, PlasticRNNCell):
        post = new.h
    else:  # the LSTM pairs h_prev with the cell-input candidate g; hebb starts at zero, so g has no plastic term
        post = torch.tanh(cell.input_drive(x) + h_prev @ cell.weight_hh)[:, 3 * 4:]
    r = min(max(eta, 0.0), 1.0)
    expected = (1 - r) * elig + r * h_prev.unsqueeze(2) * post.unsqueeze(1)
    torch.testing.assert_close(new.eligibility, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("eta", [-0.5, 0.3, 1.5])
def test_the_fused_path_uses_the_same_eligibility_rate(eta):
    """Outputs, traces and gradients (eta's included: zero where it is clamped) of the fused run against the cell's
    steps, with eta inside and outside [0, 1]."""
    cell = _retro_rnn(eta)
    u = torch.randn(6, 3, 4, dtype=torch.float64)
    state0 = cell.initial_state(3)._replace(eligibility=0.3 * torch.randn(3, 4, 4, dtype=torch.float64))
    state, outs = state0, []
    for u_t in u:
        h, state = cell(u_t, state)
        outs.append(h)

    def loss(out, hebb, elig):
        return out.sin().sum() + hebb.cos().sum() + elig.square().sum()

    params = list(cell.parameters())
    expected = torch.autograd.grad(loss(torch.stack(outs), state.hebb, state.eligibility), params)
    out, (hebb, elig) = fused_cell_run(cell, u, state0)
    torch.testing.assert_close(out, torch.stack(outs), rtol=0, atol=1e-13)
    torch.testing.assert_close(elig, state.eligibility, rtol=0, atol=1e-13)
    got = torch.autograd.grad(loss(out, hebb, elig), params)
    for g, e, (name, _) in zip(got, expected, cell.named_parameters()):
        torch.testing.assert_close(g, e, rtol=1e-11, atol=1e-11, msg=name)
    eta_grad = got[[name for name, _ in cell.named_parameters()].index("eta")]
    assert (eta_grad == 0) if not 0 <= eta <= 1 else (eta_grad != 0)


def test_double_backward_through_the_fused_path_is_one_clear_error_and_works_on_the_reference():
    grads = {}
    for fused in (True, False):
        torch.manual_seed(0)
        rnn = PlasticRNN(3, 4, rule="clip", modulation="simple", backend="auto" if fused else "reference")
        out, _ = rnn(torch.randn(5, 2, 3))
        first = torch.autograd.grad(out.square().sum(), list(rnn.parameters()), create_graph=fused is False)
        if fused:
            out, _ = rnn(torch.randn(5, 2, 3))
            with pytest.raises(ConfigError, match="not differentiable; for second derivatives .* backend='reference'"):
                torch.autograd.grad(out.square().sum(), list(rnn.parameters()), create_graph=True)
        else:
            grads = torch.autograd.grad(sum(g.square().sum() for g in first), rnn.cell.w)
    assert grads[0].abs().sum() > 0
