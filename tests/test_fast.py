"""The fused recurrence gives the cell's results: outputs, final trace and every gradient, with and without
chunked recomputation, for each fusable rule and alpha mode. Every test runs twice on CPU: on backend ``numba`` (the
Numba trace kernels, the CPU default) and on ``torch`` (the PyTorch operations)."""

import itertools

import pytest
import torch

from plasticnet import PlasticRNN, PlasticRNNCell
from plasticnet.errors import ConfigError
from plasticnet.fast import (Workspace, cpu_kernels, fusable, fused_cell_run, fused_closed_loop, fused_plastic_rnn,
                             recurrence, use_backend)
from plasticnet.rules import make_rule


@pytest.fixture(autouse=True, params=["numba", "torch"])
def trace_ops(request):
    """Which backend does the trace work (True: numba); Numba is a dependency, so the kernels must be there."""
    kernels = request.param == "numba"
    if kernels:
        assert cpu_kernels.numba is not None, "numba is missing: pip install numba (a plasticnet dependency)"
    with use_backend(request.param):
        yield kernels

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
    # five examples: the CPU step kernel takes four at once (every rule's loop) and the fifth alone
    x = torch.randn(5, 5, 4, dtype=torch.float64, requires_grad=True)
    state, outs = cell.initial_state(5), []
    for x_t in x:
        h, state = cell(x_t, state)
        outs.append(h)
    params = [x, cell.w, cell.alpha, cell.eta]
    expected = torch.autograd.grad(_loss(torch.stack(outs), state.hebb), params)
    out, trace = fused_plastic_rnn(x, torch.zeros(5, 4).double(), torch.zeros(5, 4, 4).double(),
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


def test_plastic_rnn_uses_fused_path_only_where_it_applies(trace_ops):
    assert PlasticRNN(3, 4, rule="oja").fused
    assert not PlasticRNN(3, 4, rule="oja", backend="reference").fused
    assert PlasticRNN(3, 4, rule="clip", modulation="simple", fanout=True).fused
    assert PlasticRNN(3, 4, rule="clip", modulation="retroactive").fused
    assert not fusable(None) and fusable(make_rule("clip"))
    with use_backend("auto"):  # inside the fixture's block: auto again, which falls back to the reference
        for kwargs in (dict(rule="softclip", modulation="retroactive"), dict(rule="softclip"),
                       dict(rule="hebb", activation="selu")):
            assert PlasticRNN(3, 4, **kwargs).chosen_backend() == "reference"
            with pytest.raises(ConfigError, match="does not cover this cell"):
                PlasticRNN(3, 4, backend="fused", **kwargs)
    assert PlasticRNN(3, 4).chosen_backend() == ("numba" if trace_ops else "torch")
    assert "backend='auto' -> " + ("numba" if trace_ops else "torch") in repr(PlasticRNN(3, 4))


def test_use_backend_naming_a_backend_that_does_not_cover_the_cell_is_one_clear_error():
    """The refusal names what auto would choose without the block (a recursion through the block's setting, once)."""
    rnn = PlasticRNN(3, 4, rule="clip", modulation="retroactive")
    with use_backend("triton"), pytest.raises(ConfigError, match=r"backend 'triton' does not cover this cell: .*"
                                                                   r"use backend='auto' \(here: (numba|torch)\)"):
        rnn(torch.randn(2, 1, 3))


@pytest.mark.parametrize("every", [None, 3])
def test_plastic_rnn_fused_matches_unfused_with_input_projection(every):
    torch.manual_seed(3)
    fused = PlasticRNN(3, 5, rule="hebb", batch_first=True, checkpoint_every=every).double()
    plain = PlasticRNN(3, 5, rule="hebb", batch_first=True, backend="reference").double()
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


def test_chunked_recomputation_keeps_fewer_traces(trace_ops):
    """Autograd's saved bytes fall from T traces to about T/k + k when checkpointing every k steps; without a
    choice (None), numba recomputes chunks of about sqrt(T) steps, and torch keeps every trace."""
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
    assert saved_bytes(1) > 100 * trace_bytes
    assert saved_bytes(10) < 25 * trace_bytes
    assert (saved_bytes(None) < 25 * trace_bytes) if trace_ops else (saved_bytes(None) > 100 * trace_bytes)


MODULATED = ([dict(rule="clip", alpha=a, modulation="simple", fanout=f)
              for a, f in itertools.product(["full", "per_neuron", "scalar"], [False, True])]
             + [dict(rule="clip", alpha=a, modulation="retroactive", fanout=f)
                for a, f in itertools.product(["full", "per_neuron", "scalar"], [False, True])])


def _modulated_cell(cfg, input_size=None, n=4):
    torch.manual_seed(1)
    cell = PlasticRNNCell(input_size, n, init_scale=0.5, clip=0.3, **cfg).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if hasattr(cell, "eta"):
            cell.eta.fill_(0.3)
    return cell


def _random_state(cell, batch=2):
    state = cell.initial_state(batch)
    traces = [0.2 * torch.randn_like(t) if t is not None else None for t in state]
    return type(state)(*[t.clone().requires_grad_() if t is not None else None for t in traces])


def _traces_loss(out, hebb, eligibility):
    loss = _loss(out, hebb)
    return loss if eligibility is None else loss + eligibility.cos().sum()


@pytest.mark.parametrize("cfg", MODULATED, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("every", [None, 2])
@pytest.mark.parametrize("alpha_grad_per_example", [False, True])
def test_fused_modulated_cell_equals_cell_steps(cfg, every, alpha_grad_per_example, monkeypatch):
    """Outputs, final traces, and the gradients of every parameter and of the initial state."""
    if alpha_grad_per_example:
        monkeypatch.setattr(recurrence, "_PER_EXAMPLE_ALPHA_GRAD_UNITS", 0)
    cell = _modulated_cell(cfg)
    state0 = _random_state(cell, batch=5)  # four examples at once in the CPU step kernel, and one alone
    u = torch.randn(5, 5, 4, dtype=torch.float64, requires_grad=True)
    state, outs = state0, []
    for u_t in u:
        h, state = cell(u_t, state)
        outs.append(h)
    wrt = [u, *cell.parameters(), *[t for t in state0 if t is not None]]
    expected = torch.autograd.grad(_traces_loss(torch.stack(outs), state.hebb, state.eligibility), wrt)
    out, (hebb, eligibility) = fused_cell_run(cell, u, state0, every)
    torch.testing.assert_close(out, torch.stack(outs), rtol=0, atol=1e-13)
    torch.testing.assert_close(hebb, state.hebb, rtol=0, atol=1e-13)
    if cfg["modulation"] == "retroactive":
        torch.testing.assert_close(eligibility, state.eligibility, rtol=0, atol=1e-13)
    got = torch.autograd.grad(_traces_loss(out, hebb, eligibility), wrt)
    for g, e, name in zip(got, expected, ["u", *[n for n, _ in cell.named_parameters()], "h0", "hebb0", "elig0"]):
        torch.testing.assert_close(g, e, rtol=1e-11, atol=1e-11, msg=name)
    if cfg["rule"] == "clip":
        assert (hebb.abs() >= 0.3).any()  # the clip saturated somewhere, so its mask was exercised


def _feedback_input(t, h):
    """A deterministic stand-in for an environment: the next input depends on the activity, non-differentiably."""
    return torch.stack([(h[:, 0] > 0).double(), torch.full_like(h[:, 0], float(t)), h[:, 1].sign()], dim=1)


@pytest.mark.parametrize("cfg", [dict(rule="clip", alpha="full", modulation="simple"),
                                 dict(rule="clip", alpha="full", modulation="retroactive", fanout=True),
                                 dict(rule="oja", alpha="full"), dict(rule="clip", alpha="scalar")])
@pytest.mark.parametrize("every", [None, 3])
def test_closed_loop_equals_stepping_the_cell(cfg, every):
    """The closed loop feeds each step's input from the last activity; no gradient goes through the feedback."""
    cell = _modulated_cell(cfg, input_size=3)
    params = list(cell.parameters())
    x0 = torch.randn(2, 3, dtype=torch.float64)
    state, x, outs, calls = cell.initial_state(2), x0, [], []
    for t in range(7):
        h, state = cell(x, state)
        outs.append(h)
        with torch.no_grad():
            x = _feedback_input(t, h)
    expected = torch.autograd.grad(_loss(torch.stack(outs), torch.zeros(())), params)

    def feedback(t, h):
        calls.append(t)
        return _feedback_input(t, h)

    workspace = Workspace()
    for _ in range(2):  # a second episode with the same workspace gives the same result
        calls.clear()
        out = fused_closed_loop(cell, x0, feedback, 7, every, workspace)
        torch.testing.assert_close(out, torch.stack(outs), rtol=0, atol=1e-13)
        assert calls == list(range(7))
        got = torch.autograd.grad(_loss(out, torch.zeros(())), params)
        for g, e, (name, _) in zip(got, expected, cell.named_parameters()):
            torch.testing.assert_close(g, e, rtol=1e-11, atol=1e-11, msg=name)


def test_a_second_call_before_the_first_backward_gets_buffers_of_its_own():
    """A workspace is reused only once the backward pass of the call that used it has run: two episodes run before
    either backward pass both get their own gradients right; after a backward pass, the buffers are reused."""
    cell = _modulated_cell(dict(rule="clip", alpha="full", modulation="simple"), input_size=3)
    x0 = torch.randn(2, 3, dtype=torch.float64)
    expected = torch.autograd.grad(fused_closed_loop(cell, x0, _feedback_input, 4).sum(), cell.w)
    workspace = Workspace()
    first = fused_closed_loop(cell, x0, _feedback_input, 4, workspace=workspace)
    second = fused_closed_loop(cell, x0, _feedback_input, 4, workspace=workspace)
    assert workspace.busy
    for out in (second, first):
        torch.testing.assert_close(torch.autograd.grad(out.sum(), cell.w), expected, rtol=1e-12, atol=1e-12)
    assert not workspace.busy
    buffer = workspace.get("h", (5, 2, 4), x0)
    fused_closed_loop(cell, x0, _feedback_input, 4, workspace=workspace).sum().backward()
    assert workspace.get("h", (5, 2, 4), x0).data_ptr() == buffer.data_ptr()
    with torch.no_grad():  # no backward pass will come: nothing stays reserved
        fused_closed_loop(cell, x0, _feedback_input, 4, workspace=workspace)
    assert not workspace.busy


@pytest.mark.parametrize("cfg, kernel", [(dict(rule="hebb"), "plastic"),
                                         (dict(rule="clip", modulation="simple"), "plastic"),
                                         (dict(rule="clip", modulation="retroactive"), "retro")])
def test_cpu_kernels_do_the_work_when_switched_on(cfg, kernel, trace_ops, monkeypatch):
    calls = []

    def spy(name):
        function = getattr(cpu_kernels, name)
        return lambda *args: calls.append(name) or function(*args)

    for name in ("plastic_step", "plastic_backward", "retro_step", "retro_backward"):
        monkeypatch.setattr(cpu_kernels, name, spy(name))
    cell = _modulated_cell(dict(alpha="full", **cfg))
    out, (hebb, eligibility) = fused_cell_run(cell, torch.randn(5, 2, 4, dtype=torch.float64), _random_state(cell), 2)
    _traces_loss(out, hebb, eligibility).backward()
    # one call per step forward, one for the whole backward pass
    expected = {f"{kernel}_step": 5, f"{kernel}_backward": 1} if trace_ops else {}
    assert {name: calls.count(name) for name in set(calls)} == expected


@pytest.mark.parametrize("every", [None, 1, 4])
def test_cpu_kernels_give_the_same_result_on_any_number_of_threads(every, trace_ops, monkeypatch):
    """On two threads the kernels share the examples out; each example's backward pass has an alpha gradient of its
    own, so the result is the one thread's to the last bit."""
    if not trace_ops:
        pytest.skip("the PyTorch operations' results may depend on the thread count")
    if cpu_kernels.numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread on this machine")
    parallel_calls = []
    for kernel in (cpu_kernels.plastic_step, cpu_kernels.plastic_backward):
        monkeypatch.setattr(kernel, "parallel", lambda *a, f=kernel.parallel: parallel_calls.append(a[-1]) or f(*a))
    cell = _modulated_cell(dict(rule="clip", alpha="full", modulation="simple"), n=6)
    u, state0 = torch.randn(9, 5, 6, dtype=torch.float64), _random_state(cell, batch=5)
    results = []
    previous = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            out, (hebb, _) = fused_cell_run(cell, u, state0, every)
            results.append(torch.autograd.grad(_loss(out, hebb), [*cell.parameters(), *state0[:2]]))
        finally:
            torch.set_num_threads(previous)
    # the backward pass on two threads, and the 9 steps where Numba's threading layer starts threads cheaply
    assert parallel_calls == [2] * (10 if cpu_kernels._cheap_launches() else 1)
    for a, b in zip(*results):
        assert torch.equal(a, b)
