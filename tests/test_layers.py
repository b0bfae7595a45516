"""The plastic layers against a naive element-by-element reference, plus gradients and conventions."""

import itertools

import pytest
import torch

from plasticnet import ConfigError, PlasticLinear, PlasticRNN, PlasticRNNCell, Rule

pytestmark = pytest.mark.usefixtures("float64")

CONFIGS = (
    [dict(rule=None)]
    + [dict(rule=r, alpha=a) for r, a in itertools.product(["hebb", "oja", "clip", "softclip"],
                                                            ["full", "per_neuron", "scalar"])]
    + [dict(rule=r, alpha=a, modulation="simple", fanout=f)
       for r, a, f in itertools.product(["clip", "softclip"], ["full", "per_neuron"], [False, True])]
    + [dict(rule=r, alpha=a, modulation="retroactive", fanout=f)
       for r, a, f in itertools.product(["clip", "softclip"], ["full", "scalar"], [False, True])]
)


def _name(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


def _make(cfg, n=3, input_size=2, seed=0):
    torch.manual_seed(seed)
    cell = PlasticRNNCell(input_size, n, init_scale=0.5, **cfg)
    with torch.no_grad():  # large enough that every term matters, small enough that clips stay inactive
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if hasattr(cell, "eta"):
            cell.eta.fill_(0.3)
    return cell


def _naive_step(cell, x, h, hebb, elig):
    """Loops over units, written from the equations of the papers, independent of the library's fused forms."""
    n = cell.hidden_size
    u = cell.i2h(x)
    alpha = cell.alpha if cell.plastic else None
    h_new = torch.zeros_like(h)
    for b in range(h.shape[0]):
        for j in range(n):
            s = u[b, j]
            for i in range(n):
                weight = cell.w[i, j]
                if cell.plastic:
                    a = alpha if alpha.dim() == 0 else (alpha[j] if alpha.dim() == 1 else alpha[i, j])
                    weight = weight + a * hebb[b, i, j]
                s = s + h[b, i] * weight
            h_new[b, j] = torch.tanh(s)
    if not cell.plastic:
        return h_new, None, None
    new_hebb = torch.zeros_like(hebb)
    new_elig = None if elig is None else torch.zeros_like(elig)
    c = getattr(cell.rule, "clip", None)
    for b in range(h.shape[0]):
        if cell.modulation is None:
            rates = [cell.eta] * n
        else:
            m = torch.tanh(cell.h2mod.bias[0] + (cell.h2mod.weight[0] * h_new[b]).sum())
            rates = [cell.modfanout.weight[j, 0] * m + cell.modfanout.bias[j] if cell.fanout else m
                     for j in range(n)]
        for i in range(n):
            for j in range(n):
                pre, post, x_ij, r = h[b, i], h_new[b, j], hebb[b, i, j], rates[j]
                if cell.modulation == "retroactive":
                    d = r * elig[b, i, j]
                    rate_e = cell.eta.clamp(0, 1)
                    new_elig[b, i, j] = (1 - rate_e) * elig[b, i, j] + rate_e * pre * post
                else:
                    d = r * pre * post
                name = cell.rule.name
                if name == "hebb":
                    v = (1 - r) * x_ij + d
                elif name == "oja":
                    v = x_ij + r * post * (pre - post * x_ij)
                elif name == "clip":
                    v = torch.clamp(x_ij + d, -c, c)
                else:
                    v = x_ij + torch.clamp(d, min=0) * (1 - x_ij / c) + torch.clamp(d, max=0) * (1 + x_ij / c)
                    v = torch.clamp(v, -c, c)
                new_hebb[b, i, j] = v
    return h_new, new_hebb, new_elig


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_cell_matches_naive_equations(cfg):
    cell = _make(cfg)
    x = torch.randn(4, 2, 2)
    state = cell.initial_state(2)
    h, hebb, elig = state
    for t in range(4):
        h_ref, hebb_ref, elig_ref = _naive_step(cell, x[t], h, hebb, elig)
        out, state = cell(x[t], state)
        torch.testing.assert_close(out, h_ref)
        if cell.plastic:
            torch.testing.assert_close(state.hebb, hebb_ref)
        if elig_ref is not None:
            torch.testing.assert_close(state.eligibility, elig_ref)
        h, hebb, elig = h_ref, hebb_ref, elig_ref
    if cell.plastic:
        assert state.hebb.abs().max() < 1.9  # the comparison above never touched the clip


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_gradcheck_through_episode(cfg):
    """Full BPTT through traces and modulators: every parameter's gradient against finite differences."""
    cell = _make(cfg)
    x = torch.randn(3, 2, 2)
    readout = torch.randn(3, 2, 3)
    names, values = zip(*cell.named_parameters())

    def episode(*flat):
        params = dict(zip(names, flat))
        state = cell.initial_state(2)
        loss = 0.0
        for x_t, r_t in zip(x, readout):
            h, state = torch.func.functional_call(cell, params, (x_t, state))
            loss = loss + (h * r_t).sum()
        return loss

    assert torch.autograd.gradcheck(episode, tuple(v.detach().clone().requires_grad_() for v in values))


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c["rule"]], ids=_name)
def test_every_parameter_gets_a_gradient(cfg):
    cell = _make(cfg)
    state = None
    for x_t in torch.randn(5, 2, 2):  # retroactive traces reach the weights only from the fourth step
        h, state = cell(x_t, state)
    h.sum().backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_index_convention_pre_row_post_column():
    cell = PlasticRNNCell(None, 3, rule="hebb", alpha="scalar")
    with torch.no_grad():
        cell.w.zero_()
        cell.w[0, 1] = 1.0
        cell.eta.fill_(0.5)
    state = cell.initial_state(1)._replace(h=torch.tensor([[1.0, 0.0, 0.0]]))
    h, state = cell(torch.zeros(1, 3), state)
    assert h[0, 1] > 0.7 and h[0, 0] == 0 and h[0, 2] == 0  # unit 0 drives unit 1 through w[0, 1]
    assert state.hebb[0, 0, 1] > 0 and state.hebb[0, 1, 0] == 0  # trace[pre=0, post=1]


def test_state_shapes_device_dtype():
    cell = PlasticRNNCell(4, 5, rule="clip", modulation="retroactive").to(torch.float32)
    s = cell.initial_state(7)
    assert s.h.shape == (7, 5) and s.hebb.shape == (7, 5, 5) and s.eligibility.shape == (7, 5, 5)
    assert s.hebb.dtype == torch.float32 and s.h.device == cell.w.device
    assert not s.hebb.any() and PlasticRNNCell(4, 5, rule=None).initial_state(2).hebb is None


def test_parameter_shapes():
    assert PlasticRNNCell(2, 4, alpha="full").alpha.shape == (4, 4)
    assert PlasticRNNCell(2, 4, alpha="per_neuron").alpha.shape == (4,)
    assert PlasticRNNCell(2, 4, alpha="scalar").alpha.shape == ()
    cell = PlasticRNNCell(2, 4, rule="clip", modulation="simple", fanout=True)
    assert cell.h2mod.weight.shape == (1, 4) and cell.modfanout.weight.shape == (4, 1)
    assert not hasattr(cell, "eta")
    assert sum(p.numel() for p in PlasticRNNCell(None, 1001).parameters()) == 2_004_003


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule=None, modulation="simple"), "modulation needs plasticity"),
    (dict(rule="clip", fanout=True), "fanout=True"),
    (dict(rule="hebb", modulation="retroactive"), "retroactive modulation needs"),
    (dict(rule="oja", modulation="sometimes"), "unknown modulation"),
    (dict(alpha="diagonal"), "unknown alpha"),
    (dict(activation="gelu"), "unknown activation"),
])
def test_bad_combinations_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PlasticRNNCell(2, 3, **kwargs)


@pytest.mark.parametrize("batch_first", [False, True])
def test_rnn_equals_cell_loop(batch_first):
    torch.manual_seed(1)
    rnn = PlasticRNN(2, 4, batch_first=batch_first, rule="clip", modulation="simple", fanout=True)
    x = torch.randn(5, 3, 2)
    out, state = rnn(x.transpose(0, 1) if batch_first else x)
    s = None
    for t in range(5):
        h, s = rnn.cell(x[t], s)
        torch.testing.assert_close(out[:, t] if batch_first else out[t], h)
    torch.testing.assert_close(state.hebb, s.hebb)


def test_clamp_overrides_activity_before_the_trace():
    cell = PlasticRNNCell(None, 3, rule="hebb")
    mask = torch.tensor([[True, False, False]])
    h, s = cell(torch.zeros(1, 3), clamp=(mask, torch.full((1, 3), 0.9)))
    assert h[0, 0] == 0.9
    h2, s2 = cell(torch.zeros(1, 3), s)
    assert s2.hebb[0, 0].abs().sum() > 0  # the clamped unit's activity entered the trace as pre


def test_plastic_linear_oja_one_shot():
    """With Oja and a one-hot output, the labelled column moves towards the input by eta (DP 2018, Omniglot)."""
    layer = PlasticLinear(4, 3, rule="oja", activation="softmax")
    x = torch.randn(2, 4)
    label = torch.nn.functional.one_hot(torch.tensor([2, 0]), 3).double()
    y, hebb = layer(x, extra=1000 * label)
    torch.testing.assert_close(y, label)
    torch.testing.assert_close(hebb[0, :, 2], layer.eta * x[0])
    assert hebb[0, :, :2].abs().sum() == 0
    y2, _ = layer(x, hebb)
    (y2.sum()).backward()
    assert layer.alpha.grad.abs().sum() > 0 and layer.eta.grad is not None


def test_plastic_linear_without_w_has_no_fixed_weight():
    layer = PlasticLinear(64, 5, alpha="full", use_w=False)
    assert layer.w is None and sum(p.numel() for p in layer.parameters()) == 321


class Anti(Rule):
    """An anti-Hebbian rule written as a user would: one small class, no change elsewhere."""

    name = "anti"

    def update(self, trace, pre, post, rate):
        return trace - rate * pre.unsqueeze(2) * post.unsqueeze(1)


def test_user_rule_plugs_in():
    cell = PlasticRNNCell(2, 3, rule=Anti())
    h, s = cell(torch.randn(1, 2))
    h, s2 = cell(torch.randn(1, 2), s)
    torch.testing.assert_close(s2.hebb, s.hebb - cell.eta * s.h.unsqueeze(2) * h.unsqueeze(1))
