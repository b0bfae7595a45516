"""The plastic LSTM against hand-computed steps and torch.nn.LSTMCell, gradients, and traces across segments."""

import pytest
import torch

from plasticnet import ConfigError, PlasticLSTM, PlasticLSTMCell
from plasticnet.lstm import detach_state, locked_dropout


pytestmark = pytest.mark.usefixtures("float64")

CONFIGS = [
    dict(rule=None),
    dict(rule="clip", alpha="per_neuron"),
    dict(rule="clip", alpha="full"),
    dict(rule="clip", alpha="scalar"),
    dict(rule="hebb", alpha="per_neuron"),
    dict(rule="clip", alpha="per_neuron", modulation="simple", fanout=True),
    dict(rule="clip", alpha="full", modulation="simple", fanout=False),
    dict(rule="clip", alpha="per_neuron", modulation="simple", fanout=True, modulator_input="cell"),
    dict(rule="clip", alpha="scalar", modulation="simple", fanout=True),
    dict(rule="clip", alpha="per_neuron", modulation="retroactive", fanout=True),
    dict(rule="clip", alpha="full", modulation="retroactive", fanout=False, modulator_input="cell"),
]


def _name(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


def _make(cfg, n=3, input_size=2, seed=0):
    torch.manual_seed(seed)
    cell = PlasticLSTMCell(input_size, n, **cfg)
    with torch.no_grad():  # large enough that every term matters, small enough that clips stay inactive
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if hasattr(cell, "eta"):
            cell.eta.fill_(0.3)
        if cell.plastic:
            cell.alpha.abs_().add_(0.2)
    return cell


def _sigmoid(z):
    return 1 / (1 + torch.exp(-z))


def _naive_step(cell, x, h, c, hebb, elig):
    """Element by element from the equations of reference section 5.3 (column = post-synaptic), written from the
    separate gate weights of the original's MyLSTM / PlasticLSTM rather than the library's fused blocks."""
    n, B = cell.hidden_size, h.shape[0]
    wx, bx, wh, bh = cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh
    h_new, c_new, g = torch.zeros_like(h), torch.zeros_like(c), torch.zeros_like(h)
    for b in range(B):
        for j in range(n):
            def pre_activation(k, plastic=False):
                s = sum(x[b, i] * wx[i, k * n + j] for i in range(x.shape[1])) + bx[k * n + j]
                for i in range(n):
                    weight = wh[i, k * n + j]
                    if plastic:
                        a = cell.alpha if cell.alpha.dim() == 0 else (
                            cell.alpha[j] if cell.alpha.dim() == 1 else cell.alpha[i, j])
                        weight = weight + a * hebb[b, i, j]
                    s = s + h[b, i] * weight
                return s if plastic else s + bh[k * n + j]
            i_, f_, o_ = (_sigmoid(pre_activation(k)) for k in range(3))
            g[b, j] = torch.tanh(pre_activation(3, plastic=cell.plastic))
            c_new[b, j] = f_ * c[b, j] + i_ * g[b, j]
            h_new[b, j] = o_ * torch.tanh(c_new[b, j])
    if not cell.plastic:
        return h_new, c_new, None, None
    new_hebb, new_elig = torch.zeros_like(hebb), None if elig is None else torch.zeros_like(elig)
    for b in range(B):
        if cell.modulation is None:
            rates = [cell.eta] * n
        else:
            source = h_new[b] if cell.modulator_input == "hidden" else c_new[b]
            m = torch.tanh(cell.h2mod.bias[0] + (cell.h2mod.weight[0] * source).sum())
            rates = [cell.modfanout.weight[j, 0] * m + cell.modfanout.bias[j] if cell.fanout else m
                     for j in range(n)]
        for i in range(n):
            for j in range(n):
                pre, post, old, r = h[b, i], g[b, j], hebb[b, i, j], rates[j]
                if cell.modulation == "retroactive":
                    new_hebb[b, i, j] = torch.clamp(old + r * elig[b, i, j], -2, 2)
                    rate_e = cell.eta.clamp(0, 1)
                    new_elig[b, i, j] = (1 - rate_e) * elig[b, i, j] + rate_e * pre * post
                elif cell.rule.name == "clip":
                    new_hebb[b, i, j] = torch.clamp(old + r * pre * post, -2, 2)
                else:
                    new_hebb[b, i, j] = (1 - r) * old + r * pre * post
    return h_new, c_new, new_hebb, new_elig


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_cell_matches_hand_computed_steps(cfg):
    cell = _make(cfg)
    x = torch.randn(4, 2, 2)
    state = cell.initial_state(2)
    h, c, hebb, elig = state
    for t in range(4):
        ref = _naive_step(cell, x[t], h, c, hebb, elig)
        out, state = cell(x[t], state)
        torch.testing.assert_close(out, ref[0])
        for got, want in zip(state[1:], ref[1:]):
            if want is not None:
                torch.testing.assert_close(got, want)
        h, c, hebb, elig = ref
    if cell.plastic:
        assert 0 < state.hebb.abs().max() < 1.9  # the trace moved, and the comparison never touched the clip


def test_plain_lstm_is_torch_lstm_cell():
    """rule=None is an ordinary LSTM: the same maths as torch.nn.LSTMCell (gates i, f, g, o there; i, f, o, g
    here, with weights stored transposed)."""
    torch.manual_seed(3)
    ours, theirs = PlasticLSTMCell(4, 5, rule=None), torch.nn.LSTMCell(4, 5)
    order = [0, 1, 3, 2]  # our block k is torch's block order[k]
    with torch.no_grad():
        for k, tk in enumerate(order):
            rows = slice(5 * tk, 5 * tk + 5)
            theirs.weight_ih[rows] = ours.weight_ih[:, 5 * k:5 * k + 5].T
            theirs.weight_hh[rows] = ours.weight_hh[:, 5 * k:5 * k + 5].T
            theirs.bias_ih[rows] = ours.bias_ih[5 * k:5 * k + 5]
            theirs.bias_hh[rows] = ours.bias_hh[5 * k:5 * k + 5]
    state, h, c = None, torch.zeros(3, 5), torch.zeros(3, 5)
    for x in torch.randn(6, 3, 4):
        out, state = ours(x, state)
        h, c = theirs(x, (h, c))
        torch.testing.assert_close(out, h)
        torch.testing.assert_close(state.c, c)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_gradcheck_through_a_segment(cfg):
    """Backpropagation through gates, traces, eligibility and modulator against finite differences."""
    cell = _make(cfg)
    x = torch.randn(3, 2, 2)
    readout = torch.randn(3, 2, 3)
    names, values = zip(*cell.named_parameters())

    def segment(*flat):
        outputs, _ = _run(cell, dict(zip(names, flat)), x)
        return (outputs * readout).sum()

    assert torch.autograd.gradcheck(segment, tuple(v.detach().clone().requires_grad_() for v in values))


def _run(cell, params, x):
    state, outputs = cell.initial_state(x.shape[1]), []
    for x_t in x:
        h, state = torch.func.functional_call(cell, params, (x_t, state))
        outputs.append(h)
    return torch.stack(outputs), state


def test_sequence_equals_step_loop():
    cell = _make(dict(rule="clip", modulation="retroactive", fanout=True))
    x = torch.randn(5, 2, 2)
    outputs, final = cell.sequence(x)
    state = None
    for t in range(5):
        h, state = cell(x[t], state)
        torch.testing.assert_close(outputs[t], h)
    for a, b in zip(final, state):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("modulation", [None, "simple", "retroactive"])
def test_traces_carry_across_segments_and_gradients_stop_there(modulation):
    torch.manual_seed(0)
    lstm = PlasticLSTM(3, [4, 5], 2, modulation=modulation, fanout=modulation is not None)
    x = torch.randn(8, 2, 3, requires_grad=True)
    whole, whole_state = lstm(x)
    first, state = lstm(x[:4])
    second, state = lstm(x[4:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second]), whole)  # values carried, traces included
    for layer_whole, layer_split in zip(whole_state, state):
        for a, b in zip(layer_whole, layer_split):
            if a is not None:
                torch.testing.assert_close(a, b)
    assert state[0].hebb.abs().sum() > 0
    second.sum().backward()
    assert x.grad[:4].abs().sum() == 0 and x.grad[4:].abs().sum() > 0  # nothing crosses the boundary
    x.grad = None
    whole[4:].sum().backward()
    assert x.grad[:4].abs().sum() > 0  # without the detach it would


def test_detach_state_keeps_values_and_structure():
    lstm = PlasticLSTM(3, 4, 2, modulation="retroactive")
    _, state = lstm(torch.randn(2, 1, 3))
    cut = detach_state(state)
    assert isinstance(cut, list) and type(cut[0]) is type(state[0])
    assert all(t is None or not t.requires_grad for layer in cut for t in layer)
    torch.testing.assert_close(cut[1].eligibility, state[1].eligibility)


def test_fanout_rate_is_per_post_synaptic_unit_at_batch_size_one():
    """The batch axis stays explicit: at batch 1 the fan-out still scales columns (post), not rows (the original's
    test-time mis-wiring, pitfall P9)."""
    cell = PlasticLSTMCell(2, 3, modulation="simple", fanout=True)
    with torch.no_grad():
        cell.modfanout.weight.zero_()
        cell.modfanout.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))  # only post unit 1 is plastic
    state = cell.initial_state(1)._replace(h=torch.tensor([[0.5, -0.5, 0.25]]))
    _, state = cell(torch.randn(1, 2), state)
    assert state.hebb[0, :, 1].abs().min() > 0
    assert state.hebb[0, :, 0].abs().sum() == 0 and state.hebb[0, :, 2].abs().sum() == 0


def test_parameter_counts_follow_the_reference_formulas():
    """Per layer (reference 5.6): MyLSTM 4H^2 + 4IH + 8H; per-neuron alpha with fan-out 4H^2 + 4IH + 11H + 1;
    per-neuron alpha without modulation 4H^2 + 4IH + 8H + 1; full alpha with fan-out 5H^2 + 4IH + 10H + 1."""
    def count(**kw):
        return sum(p.numel() for p in PlasticLSTMCell(7, 5, **kw).parameters())
    H, I = 5, 7
    assert count(rule=None) == 4 * H * H + 4 * I * H + 8 * H
    assert count(modulation="simple", fanout=True) == 4 * H * H + 4 * I * H + 11 * H + 1
    assert count() == 4 * H * H + 4 * I * H + 8 * H + 1
    assert count(alpha="full", modulation="simple", fanout=True) == 5 * H * H + 4 * I * H + 10 * H + 1
    assert count(modulation="retroactive", fanout=True) == 4 * H * H + 4 * I * H + 11 * H + 2  # + eta


def test_initialisation_follows_the_original():
    torch.manual_seed(0)
    cell = PlasticLSTMCell(100, 100, alpha="per_neuron", modulation="simple", fanout=True)
    assert cell.w.abs().max() <= 0.01 and cell.w.abs().max() > 0.009
    assert 0 <= cell.alpha.min() and cell.alpha.max() < 1e-4
    assert cell.bias_hh.shape == (300,)  # the plastic matrix has no bias
    assert PlasticLSTMCell(3, 4, alpha="scalar").alpha.item() == pytest.approx(1e-4)


def test_locked_dropout_shares_one_mask_over_time():
    x = torch.ones(6, 4, 50)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:1].expand_as(y))
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_locked_dropout_of_a_shard_keeps_that_shard_of_the_whole_batch_mask():
    x = torch.ones(3, 6, 50)
    torch.manual_seed(0)
    whole, after = locked_dropout(x, 0.5, training=True), torch.rand(3)
    for part in (slice(0, 3), slice(3, 6)):  # what each of 2 data-parallel processes draws
        torch.manual_seed(0)
        shard, shard_after = locked_dropout(x[:, part], 0.5, training=True, batch_shard=(6, part)), torch.rand(3)
        assert torch.equal(shard, whole[:, part])
        assert torch.equal(shard_after, after)  # the generator stays in step with the one-process run's


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule=None, modulation="simple"), "modulation needs plasticity"),
    (dict(fanout=True), "fanout=True"),
    (dict(rule="hebb", modulation="retroactive"), "retroactive modulation needs"),
    (dict(modulation="simple", modulator_input="gate"), "unknown modulator_input"),
    (dict(alpha="diagonal"), "unknown alpha"),
])
def test_bad_combinations_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PlasticLSTMCell(2, 3, **kwargs)


def test_layer_widths_must_match_the_number_of_layers():
    with pytest.raises(ConfigError, match="2 widths for num_layers=3"):
        PlasticLSTM(3, [4, 5], 3)


def test_state_tensors_round_trip_keeps_absent_fields_absent():
    from plasticnet.lstm import state_tensors, states_from_tensors

    for kwargs in ({"rule": None}, {}, {"modulation": "retroactive"}):
        lstm = PlasticLSTM(3, [4, 5], 2, **kwargs)
        states = lstm.initial_state(2)
        flat = state_tensors(states)
        assert len(flat) == sum(t is not None for layer in states for t in layer)
        back = states_from_tensors([t + 1 for t in flat], states)
        for old, new in zip(states, back):
            assert type(new) is type(old)
            for a, b in zip(old, new):
                assert (a is None and b is None) or torch.equal(a + 1, b)
