"""Omniglot one-shot: episodes, class splits, the network and its gradients, and the eval command end to end."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plasticnet.cli import main
from plasticnet.config import resolve
from plasticnet.data import OmniglotCharacters
from plasticnet.errors import ConfigError, DataError
from plasticnet.tasks.omniglot import (EVALUATION_ALPHABETS, OmniglotConfig, OmniglotExperiment, OneShotNetwork,
                                       affine_images, episode_loss, evaluate_episodes, make_episodes, shift_images,
                                       split_classes, tilt_and_zoom)

CLASSES, DRAWINGS = 12, 4


def random_pool(classes=CLASSES, drawings=DRAWINGS, seed=0) -> torch.Tensor:
    """Unique, asymmetric drawings, so each image in an episode identifies its class, drawing and rotation."""
    return torch.rand(classes, drawings, 31, 31, generator=torch.Generator().manual_seed(seed))


def identify(image: torch.Tensor, pool: torch.Tensor, mirrored: bool = False) -> tuple[int, int, int]:
    """(class, drawing, quarter turns) of ``image``; with ``mirrored``, the turns of the mirrored pool count 4..7."""
    for m in range(2 if mirrored else 1):
        for k in range(4):
            turned = torch.rot90(pool.flip(-1) if m else pool, k, dims=(-2, -1))
            hits = (turned == image).all(-1).all(-1).nonzero()
            if len(hits):
                return int(hits[0, 0]), int(hits[0, 1]), 4 * m + k
    raise AssertionError("image not in the pool")


def make(cfg, pool, batch=16, seed=0, **kw):
    return make_episodes(cfg, pool, batch, torch.Generator().manual_seed(seed), **kw)


def test_paper_preset():
    cfg = resolve(OmniglotConfig, "omniglot", "paper", {})
    assert cfg.episode_length() == 6 and (cfg.lr, cfg.lr_gamma, cfg.lr_step_episodes) == (3e-5, 0.666, 1_000_000)
    assert cfg.rule == "oja" and cfg.use_w and cfg.split == "paper" and cfg.test_classes == 100
    assert not resolve(OmniglotConfig, "omniglot", "camera-ready", {}).use_w


def test_labels_only_on_support_steps_and_the_query_is_unlabelled():
    cfg = OmniglotConfig(shots=2, presentation_time=2, gap=1, test_time=3)
    ep = make(cfg, random_pool())
    T = cfg.episode_length()
    assert T == 2 * 5 * 3 + 3 and ep.images.shape == (T, 16, 31, 31) and ep.labels.shape == (T, 16, 5)
    for item in range(10):  # 2 rounds of 5 labelled drawings: shown for 2 steps, then a blank step
        start = 3 * item
        assert torch.all(ep.labels[start].sum(-1) == 1) and torch.equal(ep.labels[start], ep.labels[start + 1])
        assert not ep.labels[start + 2].any() and not ep.images[start + 2].any()
    for rnd in range(2):  # each round shows every label once
        shown = ep.labels[[3 * (5 * rnd + i) for i in range(5)]].argmax(-1)
        assert torch.equal(shown.sort(0).values, torch.arange(5)[:, None].expand(5, 16))
    assert not ep.labels[-3:].any()
    assert torch.equal(ep.images[-1], ep.images[-3])


def test_support_and_query_share_class_and_rotation_but_never_the_drawing():
    pool = random_pool()
    cfg = OmniglotConfig()
    ep = make(cfg, pool, batch=200)
    turns_seen = set()
    for b in range(200):
        support = {int(ep.labels[t, b].argmax()): identify(ep.images[t, b], pool) for t in range(5)}
        assert len({c for c, _, _ in support.values()}) == 5  # five distinct classes
        q_class, q_drawing, q_turn = identify(ep.images[-1, b], pool)
        s_class, s_drawing, s_turn = support[int(ep.target[b])]
        assert (q_class, q_turn) == (s_class, s_turn) and q_drawing != s_drawing
        turns_seen |= {k for _, _, k in support.values()}
    assert turns_seen == {0, 1, 2, 3}
    no_turns = make(OmniglotConfig(rotations=False), pool, batch=20)
    assert all(identify(no_turns.images[t, b], pool)[2] == 0 for t in range(6) for b in range(20))


def test_mirrored_classes_keep_their_mirroring_from_support_to_query():
    pool = random_pool()
    ep = make(OmniglotConfig(), pool, batch=200, mirror=True)
    seen = set()
    for b in range(200):
        support = {int(ep.labels[t, b].argmax()): identify(ep.images[t, b], pool, True) for t in range(5)}
        q_class, q_drawing, q_turn = identify(ep.images[-1, b], pool, True)
        s_class, s_drawing, s_turn = support[int(ep.target[b])]
        assert (q_class, q_turn) == (s_class, s_turn) and q_drawing != s_drawing
        seen |= {k for _, _, k in support.values()}
    assert seen == set(range(8))  # four turns of the drawing and four of its mirror image


def test_k_shot_needs_k_plus_one_drawings():
    with pytest.raises(ConfigError, match="4 distinct drawings"):
        make(OmniglotConfig(shots=3), random_pool(drawings=3))


def characters(alphabet_sizes: dict[str, int]) -> OmniglotCharacters:
    keys = sorted((a, f"character{i + 1:02d}") for a, n in alphabet_sizes.items() for i in range(n))
    return OmniglotCharacters(np.zeros((len(keys), 2, 1, 1), np.float32), tuple(k[0] for k in keys),
                              tuple(k[1] for k in keys))


SMALL = characters({"Alpha": 10, "Beta": 8, "Gamma": 6, "Delta": 7})


def test_shift_moves_each_drawing_by_its_own_offset_within_the_range():
    images = torch.ones(2, 50, 31, 31)  # a white background, one dark pixel per image at (15, 15)
    images[..., 15, 15] = 0.0
    moved = shift_images(images, 2, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and torch.equal(shift_images(images, 0, torch.Generator()), images)
    dark = (moved == 0).nonzero()  # (image, image, row, column) of each dark pixel: one per image
    assert len(dark) == 100 and ((dark[:, 2:] - 15).abs() <= 2).all()
    offsets = {tuple(o) for o in (dark[:, 2:] - 15).tolist()}
    assert len(offsets) > 15  # every one of the 25 offsets is as likely
    assert (moved[moved != 0] == 1).all()  # the space left is the background


def test_a_shift_of_half_the_drawing_or_more_is_refused():
    with pytest.raises(ConfigError, match="shift must be"):
        OmniglotConfig(shift=15).validate()


def test_affine_images_turns_a_quarter_as_rot90_and_scales_about_the_centre():
    images = torch.rand(3, 31, 31, generator=torch.Generator().manual_seed(0))
    same = affine_images(images, torch.zeros(3), torch.ones(3))
    assert torch.allclose(same, images, atol=1e-5)
    quarter = affine_images(images, torch.full((3,), 90.0), torch.ones(3))
    assert torch.allclose(quarter, torch.rot90(images, 1, dims=(-2, -1)), atol=1e-5)  # counter-clockwise
    dot = torch.ones(1, 31, 31)
    dot[0, 15, 20] = 0.0  # 5 pixels right of the centre
    doubled = affine_images(dot, torch.zeros(1), torch.full((1,), 2.0))
    assert doubled[0].argmin() == 15 * 31 + 25 and doubled[0, 15, 25] < 1e-5 and doubled[0, 15, 20] > 1 - 1e-5


def test_tilt_and_zoom_keep_each_drawing_within_their_ranges():
    images = torch.ones(400, 31, 31)
    images[:, 15, 25] = 0.0  # 10 pixels right of the centre
    generator = torch.Generator().manual_seed(0)
    assert tilt_and_zoom(images, 0, 0, generator) is images
    turned = tilt_and_zoom(images, 30, 0, generator)
    rows, cols = np.unravel_index(turned.flatten(1).argmin(1).numpy(), (31, 31))
    angles = np.degrees(np.arctan2(15 - rows, cols - 15))  # counter-clockwise, rows grow downwards
    assert np.abs(angles).max() <= 30 + 6 and angles.min() < -20 and angles.max() > 20
    assert np.allclose(np.hypot(rows - 15, cols - 15), 10, atol=1)
    zoomed = tilt_and_zoom(images, 0, 0.2, generator)
    cols = zoomed.flatten(1).argmin(1).numpy() % 31
    assert 15 + 8 - 1 <= cols.min() <= 24 and 26 <= cols.max() <= 15 + 12 + 1  # 10 pixels times 0.8 to 1.2
    for bad, match in (({"tilt": 181}, "tilt must be"), ({"zoom": 1}, "zoom must be"), ({"zoom": -0.1}, "zoom")):
        with pytest.raises(ConfigError, match=match):
            OmniglotConfig(**bad).validate()


def test_paper_split_holds_out_the_last_classes_of_a_per_seed_shuffle():
    splits = [split_classes(SMALL, OmniglotConfig(test_classes=9, seed=s), Path("x")) for s in (0, 0, 1)]
    train, test = splits[0]
    assert len(test) == 9 and len(train) == 31 - 9 and not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(31))
    assert np.array_equal(splits[1][1], test) and not np.array_equal(splits[2][1], test)
    with pytest.raises(ConfigError, match="fewer than 5 training"):
        split_classes(SMALL, OmniglotConfig(test_classes=27), Path("x"))


def test_alphabet_split():
    cfg = OmniglotConfig(split="alphabets", test_alphabets="Beta, Delta")
    train, test = split_classes(SMALL, cfg, Path("x"))
    assert {SMALL.alphabets[i] for i in test} == {"Beta", "Delta"} and len(test) == 15
    assert {SMALL.alphabets[i] for i in train} == {"Alpha", "Gamma"} and len(train) == 16
    cfg = OmniglotConfig(split="alphabets", test_alphabets="Beta", train_alphabets="Gamma")
    train, _ = split_classes(SMALL, cfg, Path("x"))
    assert {SMALL.alphabets[i] for i in train} == {"Gamma"}
    with pytest.raises(DataError, match="no alphabet Omega; it has Alpha, Beta, Delta, Gamma"):
        split_classes(SMALL, OmniglotConfig(split="alphabets", test_alphabets="Omega"), Path("x"))
    with pytest.raises(ConfigError, match="Beta both"):
        split_classes(SMALL, OmniglotConfig(split="alphabets", test_alphabets="Beta", train_alphabets="Beta"),
                      Path("x"))
    with pytest.raises(ConfigError, match="needs --test-alphabets"):
        OmniglotConfig(split="alphabets").validate()
    # the background preset names its test alphabets: the paper's split asks to clear just those
    with pytest.raises(ConfigError, match=r"for --split paper, clear them with --test-alphabets ''"):
        OmniglotConfig(split="paper", test_alphabets="Beta").validate()
    with pytest.raises(ConfigError, match=r"with --test-alphabets '' --train-alphabets ''"):
        OmniglotConfig(split="vinyals", test_alphabets="Beta", train_alphabets="Gamma").validate()


EVALUATION_SIZES = [20, 26, 26, 26, 26, 26, 45, 45, 41, 26, 47, 40, 30, 45, 46, 28, 23, 25, 42, 26]


def test_vinyals_split_is_1200_train_and_423_test_characters():
    sizes = dict(zip(EVALUATION_ALPHABETS, EVALUATION_SIZES))
    sizes.update({f"Background{i:02d}": 32 for i in range(30)})
    sizes["Background00"] += 4  # 964 background characters in all
    full = characters(sizes)
    train, test = split_classes(full, OmniglotConfig(split="vinyals"), Path("x"))
    assert (len(train), len(test)) == (1200, 423)
    names = [f"{full.alphabets[i]}/{full.characters[i]}" for i in test]
    assert names[0] == "Gurmukhi/character42" and names[-1] == "ULOG/character26"
    assert not any(name.startswith(("Angelic", "Glagolitic", "Background")) for name in names)
    with pytest.raises(DataError, match="full Omniglot"):
        split_classes(SMALL, OmniglotConfig(split="vinyals"), Path("x"))


def test_parameter_counts_of_the_paper():
    def count(**kw):
        return sum(p.numel() for p in OneShotNetwork(OmniglotConfig(**kw)).parameters())

    assert count() == 112_065
    assert count(use_w=False) == 111_745  # the camera-ready variant
    assert count(alpha="scalar") == 111_746
    assert count(batch_norm=True) == 112_065 + 4 * 2 * 64  # a scale and a shift per channel of each convolution


def test_batch_norm_uses_the_batch_in_training_and_running_statistics_in_evaluation():
    torch.manual_seed(0)
    cfg = OmniglotConfig(batch_norm=True, channels=8)
    net = OneShotNetwork(cfg)
    ep = make(cfg, random_pool(), batch=6)
    first = ep._replace(images=ep.images[:, :2], labels=ep.labels[:, :2], target=ep.target[:2])
    assert not torch.allclose(net(ep)[:2], net(first))  # training: normalised over the batch's drawings
    norm = net.embed.norms[0]
    assert norm.num_batches_tracked == 2 and not torch.equal(norm.running_mean, torch.zeros(8))
    net.eval()
    assert torch.allclose(net(ep)[:2], net(first), atol=1e-6)  # evaluation: each episode on its own
    net.train()
    mean = norm.running_mean.clone()
    evaluate_episodes(net, cfg, random_pool(), 10, torch.Generator().manual_seed(1))
    assert net.training and torch.equal(norm.running_mean, mean)  # evaluation changes no statistics


def test_the_query_output_depends_on_support_drawings_only_through_the_trace():
    torch.manual_seed(0)
    cfg = OmniglotConfig(use_w=False)
    net = OneShotNetwork(cfg)
    ep = make(cfg, random_pool(), batch=4)
    images = ep.images.clone().requires_grad_(True)
    loss = episode_loss(net(ep._replace(images=images)), ep.target)
    loss.backward()
    # Support outputs are clamped to their labels, so a support drawing can reach the loss only through the trace.
    assert images.grad[:5].abs().sum() > 0
    assert all(conv.weight.grad.abs().sum() > 0 for conv in net.embed.convs)
    assert net.head.alpha.grad.abs().sum() > 0 and net.head.eta.grad != 0


def test_labelled_steps_clamp_the_softmax_and_oja_writes_the_label_column():
    torch.manual_seed(0)
    cfg = OmniglotConfig()
    net = OneShotNetwork(cfg)
    ep = make(cfg, random_pool(), batch=2)
    x = net.embed(ep.images[0])
    y, hebb = net.head(x, None, extra=cfg.label_gain * ep.labels[0])
    torch.testing.assert_close(y, ep.labels[0])
    label = int(ep.labels[0, 0].argmax())
    torch.testing.assert_close(hebb[0, :, label], net.head.eta * x[0])


def test_learning_rate_steps_every_lr_step_episodes_whatever_the_batch(tmp_path):
    data = write_omniglot(tmp_path / "omni")
    cfg = OmniglotConfig(data=str(data), batch_size=32, lr=1e-3, lr_gamma=0.5, lr_step_episodes=64,
                         test_classes=5, eval_every=0)
    experiment = OmniglotExperiment(cfg, torch.device("cpu"))
    assert [experiment.learning_rate(i) for i in (0, 1, 2, 3, 4)] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]


def write_omniglot(root: Path, alphabets=("Alpha", "Beta", "Gamma"), per_alphabet=6, drawings=DRAWINGS) -> Path:
    """A tiny tree in Omniglot's layout: each character a random blob, its drawings noisy copies of it."""
    rng = np.random.default_rng(0)
    for a, alphabet in enumerate(alphabets):
        for c in range(per_alphabet):
            shape = rng.random((31, 31)) < 0.3
            folder = root / alphabet / f"character{c + 1:02d}"
            folder.mkdir(parents=True)
            for d in range(drawings):
                ink = shape ^ (rng.random((31, 31)) < 0.03)
                Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).save(folder / f"{a}{c:02d}_{d + 1:02d}.png")
    return root


def test_train_export_and_eval_on_unseen_characters(tmp_path, capsys):
    data = write_omniglot(tmp_path / "omni")
    run = tmp_path / "run"
    assert main(["train", "omniglot", "--data", str(data), "--split", "alphabets", "--test-alphabets", "Gamma",
                 "--out", str(run), "--iterations", "2", "--batch-size", "4", "--log-every", "1", "--eval-every", "2",
                 "--eval-episodes", "10", "--no-w", "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["use_w"] is False
    points = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(points[-1]) and "val_accuracy" not in points[0]
    exported = tmp_path / "model.pt"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    assert exported.stat().st_size < (run / "checkpoint.pt").stat().st_size
    capsys.readouterr()
    assert main(["eval", "omniglot", "--checkpoint", str(exported), "--data", str(data), "--episodes", "30",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"accuracy", "ci95", "episodes"} <= set(result) and result["episodes"] == 30
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["ci95"] < 0.2
    assert result["classes"] == 6 and result["alphabets"] == ["Gamma"]
    # Another folder: characters the model trained on (Alpha, Beta) are left out wherever they appear.
    other = write_omniglot(tmp_path / "other", alphabets=("Alpha", "Delta", "Epsilon"))
    assert main(["eval", "omniglot", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(other),
                 "--episodes", "5", "--shots", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["alphabets"] == ["Delta", "Epsilon"] and result["classes"] == 12 and result["shots"] == 2
    assert main(["eval", "omniglot", "--checkpoint", str(run), "--episodes", "5"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_augmented_batch_normalised_run_exports_its_running_statistics(tmp_path, capsys):
    data = write_omniglot(tmp_path / "omni")
    run, exported = tmp_path / "run", tmp_path / "model.safetensors"
    assert main(["train", "omniglot", "--data", str(data), "--split", "alphabets", "--test-alphabets", "Gamma",
                 "--out", str(run), "--iterations", "3", "--batch-size", "4", "--log-every", "1", "--eval-every", "0",
                 "--batch-norm", "--mirror", "--tilt", "10", "--zoom", "0.1", "--shift", "1", "--no-progress"]) == 0
    assert main(["export", str(run), "--out", str(exported)]) == 0
    results = []
    for checkpoint in (run, exported):
        capsys.readouterr()
        assert main(["eval", "omniglot", "--checkpoint", str(checkpoint), "--episodes", "40", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]  # the exported file carries the batch-norm statistics


def test_a_tiny_plastic_network_learns_one_shot_matching(tmp_path):
    """Characters whose drawings are noisy copies of one blob: after the plateau every run of this task starts with
    (alpha * eta is tiny at initialisation), 350 steps (a few seconds) lift accuracy on held-out characters far
    above chance (20%)."""
    torch.manual_seed(0)
    data = write_omniglot(tmp_path / "omni", alphabets=("A", "B", "C", "D"), per_alphabet=5)
    cfg = OmniglotConfig(data=str(data), split="alphabets", test_alphabets="D", batch_size=16, lr=3e-3,
                         channels=16, eval_episodes=200)
    experiment = OmniglotExperiment(cfg, torch.device("cpu"))
    for i in range(350):
        experiment.step(i)
    assert experiment.validate(350, True)["val_accuracy"] > 0.6


def one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("plasticnet: error:"), err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_inputs_give_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PLASTICNET_SHARED_DATA", str(tmp_path / "nowhere"))
    one_line_error(capsys, ["train", "omniglot", "--out", str(tmp_path / "r0")], "plasticnet data download omniglot")
    data = write_omniglot(tmp_path / "omni")
    common = ["--data", str(data), "--no-progress", "--iterations", "1", "--eval-every", "0"]
    one_line_error(capsys, ["train", "omniglot", *common, "--split", "vinyals", "--out", str(tmp_path / "r1")],
                   "full Omniglot")
    one_line_error(capsys, ["train", "omniglot", *common, "--split", "alphabets", "--test-alphabets", "Klingon",
                            "--out", str(tmp_path / "r2")], "no alphabet Klingon")
    one_line_error(capsys, ["train", "omniglot", *common, "--split", "random", "--out", str(tmp_path / "r3")],
                   "unknown split")
    one_line_error(capsys, ["train", "omniglot", *common, "--data", str(tmp_path / "void"),
                            "--out", str(tmp_path / "r4")], "does not exist")
    run = tmp_path / "run"
    assert main(["train", "omniglot", *common, "--split", "alphabets", "--test-alphabets", "Gamma", "--batch-size", "2",
                 "--out", str(run)]) == 0
    one_line_error(capsys, ["eval", "omniglot", "--checkpoint", str(run), "--ways", "20"], "--ways must be 5")
    one_line_error(capsys, ["eval", "omniglot", "--checkpoint", str(run), "--episodes", "0"], "at least 1")
    one_line_error(capsys, ["eval", "omniglot", "--checkpoint", str(run), "--shots", "4"], "5 distinct drawings")
    seen = write_omniglot(tmp_path / "seen", alphabets=("Alpha",))
    one_line_error(capsys, ["eval", "omniglot", "--checkpoint", str(run), "--data", str(seen)],
                   "not trained on", "at least 5")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    one_line_error(capsys, ["eval", "omniglot", "--checkpoint", str(tmp_path / "junk.pt")], "not a readable")
    one_line_error(capsys, ["eval", "images", "--checkpoint", str(run)], "omniglot model")
