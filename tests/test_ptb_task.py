"""The Penn Treebank task: parameter matching of the presets, BPTT segments, the epoch schedule with traces carried,
detached and reset, alpha-gradient division, averaged SGD, resume, and the command line, on a tiny corpus."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from plasticnet.cli import main
from plasticnet.config import resolve
from plasticnet.data.ptb import batchify, load_ptb
from plasticnet.tasks.ptb import (LanguageModel, PtbConfig, PtbExperiment, count_parameters, matched_hidden_size,
                                  mean_loss, segment_lengths)
from plasticnet.train import read_metrics, train
from plasticnet.train.checkpoint import seed_everything

CONDITIONS = ("lstm", "plastic", "modplast", "modul")


def preset(name, **overrides):
    return resolve(PtbConfig, "ptb", name, {"data": "unused", **overrides})


def parameters(cfg):
    return count_parameters(cfg, 10000, matched_hidden_size(cfg, 10000))


@pytest.mark.parametrize("model, hidden, expected", [
    ("lstm", 1150, 24_221_600), ("modplast", 1149, 24_198_893), ("plastic", 1149, 24_190_799)])
def test_large_preset_parameter_counts_match_the_reference(model, hidden, expected):
    cfg = preset("large", model=model)
    assert matched_hidden_size(cfg, 10000) == hidden
    assert parameters(cfg) == expected


def test_small_preset_conditions_have_the_same_parameter_count_within_half_a_percent():
    counts = {m: parameters(preset("small", model=m)) for m in CONDITIONS}
    assert counts["lstm"] == 4_653_200  # 2 x 200-unit layers, 200-d embedding, untied 10k softmax
    for model, count in counts.items():
        assert count <= counts["lstm"] and count / counts["lstm"] > 0.995, (model, count)


def test_full_alpha_is_matched_by_a_smaller_hidden_size():
    cfg = preset("small", model="modplast", alpha="full")
    assert matched_hidden_size(cfg, 10000) < 199
    assert 0.995 < parameters(cfg) / parameters(preset("small")) <= 1


def test_learning_rate_schedules():
    small = preset("small")
    assert [small.lr_at(e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    assert preset("large").lr_at(300) == 30


def test_fixed_segments_cover_every_row_once():
    cfg = preset("small")
    assert segment_lengths(101, cfg, 0) == [20] * 5
    assert segment_lengths(47, cfg, 3) == [20, 20, 6]


def test_random_segments_follow_awd_lstm_and_repeat_per_seed_and_epoch():
    cfg = preset("large")
    lengths = segment_lengths(20001, cfg, 0)
    assert sum(lengths) == 20000 and max(lengths) <= 80 and min(lengths[:-1]) >= 5
    assert 60 < np.mean(lengths) < 70  # mostly around 70, one in twenty around 35
    assert segment_lengths(20001, cfg, 0) == lengths and segment_lengths(20001, cfg, 1) != lengths


WORDS = [f"w{i}" for i in range(12)]  # the words of the corpus_dir fixture (conftest.py)


def tiny(corpus_dir, **overrides):
    values = dict(data=str(corpus_dir), model="modul", emsize=6, hidden_size=5, batch_size=3, bptt=7, epochs=2,
                  lr=0.5, log_every=1000, save_every=1000, eval_batch_size=2)
    return resolve(PtbConfig, "ptb", "small", {**values, **overrides})


def test_epochs_carry_traces_detached_and_reset_them_at_each_epoch(corpus_dir):
    cfg = tiny(corpus_dir)
    seed_everything(0)
    experiment = PtbExperiment(cfg, torch.device("cpu"))
    received, forward = [], experiment.model.forward

    def recording(tokens, states=None):
        if experiment.model.training:  # not the end-of-epoch validation
            received.append(states)
        return forward(tokens, states)

    experiment.model.forward = recording
    per_epoch = len(segment_lengths(experiment.train_data.shape[0], cfg, 0))
    assert experiment.planned_iterations == 2 * per_epoch
    outputs = []
    for iteration in range(experiment.planned_iterations):
        experiment.step(iteration)
        outputs.append(experiment.states)
    for iteration, states in enumerate(received):
        if iteration % per_epoch == 0:
            assert states is None  # zero state and zero traces at each epoch start
        else:
            previous = outputs[iteration - 1][1]
            assert not states[1].hebb.requires_grad and previous.hebb.requires_grad  # cut at the boundary...
            torch.testing.assert_close(states[1].hebb, previous.hebb)  # ...with the values carried over
            torch.testing.assert_close(states[1].eligibility, previous.eligibility)


def test_validation_carries_state_across_segments(corpus_dir):
    cfg = tiny(corpus_dir)
    seed_everything(0)
    experiment = PtbExperiment(cfg, torch.device("cpu"))
    data = experiment.valid_data
    whole = mean_loss(experiment.model, data, data.shape[0])
    assert mean_loss(experiment.model, data, 3) == pytest.approx(whole, rel=1e-6)
    assert experiment.model.training


def test_alpha_gradient_is_divided_before_the_step(corpus_dir):
    changes = {}
    for divisor in (1.0, 10.0):
        cfg = tiny(corpus_dir, alpha_grad_divisor=divisor, grad_clip=1e9)
        seed_everything(0)
        experiment = PtbExperiment(cfg, torch.device("cpu"))
        before = [p.detach().clone() for p in experiment.model.parameters()]
        experiment.step(0)
        changes[divisor] = [p.detach() - b for p, b in zip(experiment.model.parameters(), before)]
    names = [n for n, _ in experiment.model.named_parameters()]
    for name, plain, divided in zip(names, changes[1.0], changes[10.0]):
        if name.endswith("alpha"):
            torch.testing.assert_close(divided, plain / 10)
        else:
            torch.testing.assert_close(divided, plain)


def test_averaged_sgd_evaluates_the_running_mean_of_the_weights(corpus_dir):
    cfg = tiny(corpus_dir, asgd_epoch=1)
    seed_everything(0)
    experiment = PtbExperiment(cfg, torch.device("cpu"))
    per_epoch = experiment.planned_iterations // 2
    seen = []
    for iteration in range(experiment.planned_iterations - 1):
        experiment.step(iteration)
        if iteration >= per_epoch:
            seen.append([p.detach().clone() for p in experiment.model.parameters()])
    assert experiment.averaged_steps == per_epoch - 1
    for mean, *steps in zip(experiment.average, *seen):
        torch.testing.assert_close(mean, torch.stack(steps).mean(0))


def test_train_logs_epochs_and_resumes_mid_epoch_identically(corpus_dir, tmp_path):
    cfg = tiny(corpus_dir, iterations=0)
    whole = train("ptb", cfg, tmp_path / "whole", progress=False)
    part = train("ptb", replace(cfg, iterations=4), tmp_path / "part", progress=False)
    train("ptb", cfg, part, resume=True, progress=False)
    epochs = [m for m in read_metrics(whole) if "epoch" in m]
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert all(m["val_ppl"] < len(WORDS) + 1 and m["train_ppl"] > 1 for m in epochs)
    resumed = [m for m in read_metrics(part) if "epoch" in m]
    for a, b in zip(epochs, resumed):
        assert (a["iteration"], a["train_ppl"], a["val_ppl"]) == (b["iteration"], b["train_ppl"], b["val_ppl"])


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_prints_one_json_object_with_the_parameter_count(corpus_dir, capsys):
    code, out, _ = run_cli(capsys, "train", "ptb", "--model", "modplast", "--data", str(corpus_dir),
                           "--hidden-size", "20", "--dry-run", "--json")
    info = json.loads(out)
    assert code == 0 and info["hidden_sizes"] == [19, 19] and info["vocabulary"] == len(WORDS) + 1
    cfg = replace(preset("small", model="modplast", hidden_size=20), data=str(corpus_dir))
    assert info["parameters"] == count_parameters(cfg, len(WORDS) + 1, 19)
    assert info["config"]["model"] == "modplast"


def test_eval_prints_test_perplexity_of_a_checkpoint(corpus_dir, tmp_path, capsys):
    cfg = tiny(corpus_dir, epochs=1)
    run = train("ptb", cfg, tmp_path / "run", progress=False)
    code, out, _ = run_cli(capsys, "eval", "ptb", "--checkpoint", str(run / "checkpoint.pt"), "--split", "test")
    assert code == 0 and out.startswith("ptb test: perplexity ")
    test = batchify(load_ptb(corpus_dir).test, 1)
    assert f"{test.shape[0] - 1} tokens, batch 1, best-validation weights after 1 epochs" in out
    state = torch.load(run / "checkpoint.pt", weights_only=True)["experiment"]
    model = LanguageModel(cfg, len(WORDS) + 1, matched_hidden_size(cfg, len(WORDS) + 1))
    model.load_state_dict(state["best"])
    expected = mean_loss(model, test, cfg.bptt)
    assert float(out.split()[3]) == pytest.approx(math.exp(expected), abs=0.006)
    code, out, _ = run_cli(capsys, "eval", "ptb", "--checkpoint", str(run), "--split", "test", "--json")
    info = json.loads(out)
    assert code == 0 and out.count("\n") == 1
    assert info["loss"] == pytest.approx(expected, rel=1e-6)
    assert info["perplexity"] == pytest.approx(math.exp(info["loss"]), rel=1e-12)
    assert (info["tokens"], info["split"], info["weights"], info["epoch"]) == (test.shape[0] - 1, "test", "best", 1)


def test_missing_data_is_one_line_naming_the_fix(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "ptb", "--data", str(tmp_path / "nowhere"), "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "plasticnet data download ptb" in err


def test_json_without_dry_run_is_refused(capsys):
    code, _, err = run_cli(capsys, "train", "ptb", "--json")
    assert code == 2 and "--json goes with --dry-run" in err


class _Unrecorded:
    """GraphedIteration's calling convention without a graph (CPU): copies in, the function, copies out."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *inputs):
        return {name: value.clone() for name, value in self.fn(*(t.clone() for t in inputs)).items()}


@pytest.mark.parametrize("model", ["lstm", "plastic", "modul"])
def test_the_graphed_segment_function_steps_as_the_eager_step(corpus_dir, model):
    """What a GPU run replays as a CUDA graph (the states flattened in and out, the gradients left for the update
    outside), run here without the graph: the eager run's losses, validations and weights over two epochs, whose
    last short segments run eagerly between."""
    runs = []
    for graphed in (True, False):
        seed_everything(0)
        runs.append(PtbExperiment(tiny(corpus_dir, model=model), torch.device("cpu")))
        if graphed:
            runs[-1].graph = _Unrecorded(runs[-1]._graphed_gradients)
    graphed, eager = runs
    assert graphed.lengths[-1] < graphed.cfg.bptt
    for iteration in range(graphed.planned_iterations):
        torch.testing.assert_close(graphed.step(iteration)["loss"], eager.step(iteration)["loss"])
        assert graphed.validate(iteration, False) == eager.validate(iteration, False)
    for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("width", [199, 200, 5])
def test_aligned_linear_is_linear(width):
    """The decoder's product with its width padded to a multiple of 8: F.linear's values and gradients."""
    from plasticnet.tasks.ptb import aligned_linear

    torch.manual_seed(0)
    x, w, b = (torch.randn(*shape, dtype=torch.float64, requires_grad=True)
               for shape in ((4, 3, width), (11, width), (11,)))
    grads = []
    for fn in (aligned_linear, torch.nn.functional.linear):
        out = fn(x, w, b)
        (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads.append((out.detach(), *(t.grad.clone() for t in (x, w, b))))
        for t in (x, w, b):
            t.grad = None
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected)
