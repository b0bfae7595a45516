"""Image completion: preprocessing, the episode schedule, clamping against a naive loop, metrics, CLI end to end."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plasticnet.cli import main
from plasticnet.config import resolve
from plasticnet.tasks.images import (PIXELS, CompletionNetwork, ImagesConfig, baselines, erased_mse, grayscale,
                                     make_episodes)

TINY = dict(n_images=2, n_cycles=2, presentation_time=2, gap=1, test_time=2)  # T = 2*2*3 + 2 = 14


def tiny(**changes) -> ImagesConfig:
    return ImagesConfig(**{**TINY, **changes})


def pool(n=5, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(grayscale(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)))


def episodes(cfg, batch=64, seed=0, images=None):
    generator = torch.Generator().manual_seed(seed)
    return make_episodes(cfg, pool() if images is None else images, batch, generator)


def test_paper_preset_has_201_steps_and_1025_neurons():
    cfg = resolve(ImagesConfig, "images", "paper", {})
    assert cfg.episode_length == 201 and cfg.n_neurons == 1025 and cfg.lr == 1e-4


def test_grayscale_sums_channels_then_centres_and_scales_each_image():
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 0] = (10, 20, 30)  # R + G + B = 60
    image[0, 0, 1] = (0, 0, 30)
    gray = grayscale(image)[0]
    raw = np.zeros(PIXELS)
    raw[0], raw[1] = 60, 30
    expected = (raw - raw.mean()) / np.abs(raw - raw.mean()).max()
    np.testing.assert_allclose(gray, expected, rtol=1e-6, atol=1e-7)
    assert gray.max() == pytest.approx(1.0) and abs(gray.mean()) < 1e-6


def test_schedule_presents_every_image_once_per_cycle_with_gaps_then_the_probe():
    cfg = tiny()
    ep = episodes(cfg)
    T, B, N = ep.values.shape
    assert (T, N) == (cfg.episode_length, PIXELS + 1) == (14, 1025)
    assert ep.every_unit == (True, True, False) * 4 + (False, False)
    assert torch.all(ep.values[..., -1] == 1) and torch.all(ep.clamped[..., -1])  # the bias neuron, always
    for cycle in range(cfg.n_cycles):
        starts = [cycle * 6 + k * 3 for k in range(cfg.n_images)]
        seen = [ep.values[s, :, :PIXELS] for s in starts]
        # The cycle shows each of the K images exactly once, in some order (images are drawn with replacement, so
        # two may be equal: compare as multisets).
        for b in range(B):
            assert all(any(torch.equal(image[b], ep.shown[b, j]) for j in range(2)) for image in seen)
            torch.testing.assert_close(sum(image[b] for image in seen), ep.shown[b].sum(0))
        for s in starts:
            assert torch.equal(ep.values[s + 1], ep.values[s])  # held for presentation_time steps
            assert torch.all(ep.clamped[s])
            gap = s + 2  # only the bias is clamped, to 1, and nothing is shown
            assert not ep.clamped[gap, :, :PIXELS].any() and not ep.values[gap, :, :PIXELS].any()
    orders = {tuple(ep.values[[0, 3], b, 0].tolist()) for b in range(B)}
    assert len(orders) > 1  # the order is drawn per episode
    for t in (12, 13):
        torch.testing.assert_close(ep.values[t, :, :PIXELS], ep.probe)
        assert torch.equal(ep.clamped[t, :, :PIXELS], ~ep.erased)


def test_probe_erases_a_contiguous_top_or_bottom_half_of_one_of_the_shown_images():
    ep = episodes(tiny(), batch=200)
    bottom = torch.arange(PIXELS) >= PIXELS // 2
    is_bottom = (ep.erased == bottom).all(1)
    is_top = (ep.erased == ~bottom).all(1)
    assert torch.all(is_bottom ^ is_top) and 60 < int(is_top.sum()) < 140
    assert torch.all(ep.probe[ep.erased] == 0)
    torch.testing.assert_close(ep.probe[~ep.erased], ep.target[~ep.erased])
    assert all(any(torch.equal(ep.target[b], ep.shown[b, k]) for k in range(2)) for b in range(200))


def test_network_matches_a_naive_clamped_hebbian_loop():
    """Clamped neurons output their value, free ones tanh of the recurrent drive (no input inside the tanh), and
    the trace pairs the previous activity with the new, clamped one (reference section 3.3)."""
    torch.manual_seed(0)
    cfg = tiny(n_cycles=1)
    net = CompletionNetwork(cfg).double()
    with torch.no_grad():
        net.cell.alpha.normal_(0, 0.05)
        net.cell.w.normal_(0, 0.05)
        net.cell.eta.fill_(0.2)
    ep = episodes(cfg, batch=2)
    values, clamped = ep.values.double(), ep.clamped
    w, alpha, eta = net.cell.w, net.cell.alpha, net.cell.eta
    y = torch.zeros(2, PIXELS + 1, dtype=torch.float64)
    hebb = torch.zeros(2, PIXELS + 1, PIXELS + 1, dtype=torch.float64)
    for t in range(cfg.episode_length):
        free = torch.tanh(torch.einsum("bi,bij->bj", y, w + alpha * hebb))
        new = torch.where(clamped[t], values[t], free)
        hebb = (1 - eta) * hebb + eta * y[:, :, None] * new[:, None, :]
        y = new
    out = net(ep._replace(values=values))
    torch.testing.assert_close(out, y[:, :PIXELS])
    assert torch.all(out[~ep.erased] == ep.target.double()[~ep.erased])  # visible pixels are exact


def test_parameter_counts_of_the_paper():
    def count(**kw):
        return sum(p.numel() for p in CompletionNetwork(ImagesConfig(**kw)).parameters())

    assert count() == 2_101_251  # 2 * 1025^2 + 1
    assert count(alpha="scalar") == 1_050_627
    assert count(model="rnn") == 1_050_625


def test_loss_reaches_alpha_eta_and_w():
    torch.manual_seed(0)
    cfg = tiny()
    net = CompletionNetwork(cfg)
    ep = episodes(cfg, batch=2)
    ((net(ep) - ep.target).square().sum()).backward()
    for p in (net.cell.alpha, net.cell.eta, net.cell.w):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_metrics_on_a_hand_made_episode():
    cfg = tiny()
    ep = episodes(cfg, batch=1)
    target = torch.zeros(1, PIXELS)
    target[0, : PIXELS // 2] = 0.5
    target[0, PIXELS // 2:] = -0.5
    erased = (torch.arange(PIXELS) >= PIXELS // 2)[None]
    ep = ep._replace(target=target, erased=erased)
    assert float(erased_mse(torch.zeros(1, PIXELS), ep)) == pytest.approx(0.25)
    b = baselines(ep)
    assert float(b["zero_mse"]) == pytest.approx(0.25)
    assert float(b["mean_mse"]) == pytest.approx(1.0)  # visible mean 0.5 against -0.5
    assert float(b["minus_mean_mse"]) == pytest.approx(0.0)


def test_hebbian_recall_alone_completes_images():
    """The mechanism the task relies on: with no fixed weights and one hand-set alpha, the trace of the presented
    images fills in the erased half far better than predicting zero (a Hopfield-style recall, no training)."""
    cfg = tiny(alpha="scalar")
    test = episodes(cfg, batch=16, seed=99, images=pool(20))
    net = CompletionNetwork(cfg)
    with torch.no_grad():
        net.cell.w.zero_()
        net.cell.alpha.fill_(0.01)
        net.cell.eta.fill_(0.5)
        mse = float(erased_mse(net(test), test))
    assert mse < 0.7 * float(baselines(test)["zero_mse"])


def write_cifar(root: Path, n_train=6, n_test=3) -> Path:
    """Kaggle's layout without trainLabels.csv: completion needs no labels."""
    rng = np.random.default_rng(0)
    for folder, n in (("train", n_train), ("test", n_test)):
        (root / folder).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    return root


TINY_FLAGS = ["--n-images", "2", "--n-cycles", "1", "--presentation-time", "2", "--gap", "1", "--test-time", "1"]


def test_train_eval_and_completion_figure_from_the_command_line(tmp_path, capsys):
    data = write_cifar(tmp_path / "cifar")
    run = tmp_path / "run"
    assert main(["train", "images", "--data", str(data), "--out", str(run), "--iterations", "2", "--log-every", "1",
                 "--eval-every", "2", "--eval-episodes", "3", "--no-progress", *TINY_FLAGS]) == 0
    points = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "val_mse" not in points[0]
    assert {"mse", "loss", "val_mse", "val_zero_mse", "val_mean_mse", "val_minus_mean_mse"} <= set(points[1])
    capsys.readouterr()
    assert main(["eval", "images", "--checkpoint", str(run), "--episodes", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"mse", "zero_mse", "mean_mse", "minus_mean_mse", "episodes"} and result["episodes"] == 4
    assert main(["plot", str(run), "--figure", "completion", "--out", str(tmp_path / "c.png")]) == 0
    with Image.open(tmp_path / "c.png") as figure:
        assert min(figure.size) > 100


def test_unlabelled_kaggle_images_are_all_used(tmp_path):
    from plasticnet.data import load_cifar10

    data = write_cifar(tmp_path / "cifar", n_train=4)
    (data / "trainLabels.csv").write_text("id,label\n1,cat\n")
    assert len(load_cifar10(data, "train")[0]) == 1
    images, labels = load_cifar10(data, "train", with_labels=False)
    assert images.shape == (4, 32, 32, 3) and labels is None


def one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("plasticnet: error:"), err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_inputs_give_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PLASTICNET_SHARED_DATA", str(tmp_path / "nowhere"))
    one_line_error(capsys, ["train", "images", "--out", str(tmp_path / "r1"), "--no-progress"],
                   "plasticnet data download cifar10")
    one_line_error(capsys, ["train", "images", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")],
                   "missing")
    one_line_error(capsys, ["train", "images", "--model", "lstm", "--out", str(tmp_path / "r3")], "unknown model")
    one_line_error(capsys, ["train", "images", "--eval-every", "15", "--out", str(tmp_path / "r4")], "multiple")
    one_line_error(capsys, ["eval", "images", "--checkpoint", str(tmp_path / "none.pt")], "no checkpoint")
    data = write_cifar(tmp_path / "cifar")
    run = tmp_path / "run"
    assert main(["train", "images", "--data", str(data), "--out", str(run), "--iterations", "1", "--eval-every", "0",
                 "--no-progress", *TINY_FLAGS]) == 0
    one_line_error(capsys, ["plot", str(run), "--figure", "maze"], "no figure 'maze'", "completion")
    one_line_error(capsys, ["eval", "omniglot", "--checkpoint", str(run)], "images model", "plasticnet eval images")
