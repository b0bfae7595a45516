"""Each rule against a hand-computed 2x3 example (pre = [1, -2], post = [0.5, 0, -1], rate 0.1)."""

import pytest
import torch

from plasticnet import ClippedHebb, ConfigError, DecayingHebb, Oja, Rule, SoftBoundHebb
from plasticnet.rules import make_rule, outer

PRE = torch.tensor([[1.0, -2.0]])
POST = torch.tensor([[0.5, 0.0, -1.0]])
TRACE = torch.tensor([[[0.1, 0.2, 0.3], [-0.1, 0.0, 0.4]]])
ETA = torch.tensor(0.1)


def test_outer_is_pre_by_post():
    assert torch.equal(outer(PRE, POST), torch.tensor([[[0.5, 0.0, -1.0], [-1.0, 0.0, 2.0]]]))


def test_decaying_hebb_by_hand():
    expected = torch.tensor([[[0.14, 0.18, 0.17], [-0.19, 0.0, 0.56]]])
    torch.testing.assert_close(DecayingHebb().update(TRACE, PRE, POST, ETA), expected)


def test_oja_by_hand():
    expected = torch.tensor([[[0.1475, 0.2, 0.17], [-0.1975, 0.0, 0.56]]])
    torch.testing.assert_close(Oja().update(TRACE, PRE, POST, ETA), expected)


def test_oja_one_hot_post_moves_only_its_column_towards_pre():
    post = torch.tensor([[0.0, 1.0, 0.0]])
    new = Oja().update(TRACE, PRE, post, ETA)
    torch.testing.assert_close(new[..., [0, 2]], TRACE[..., [0, 2]])
    torch.testing.assert_close(new[0, :, 1], TRACE[0, :, 1] + 0.1 * (PRE[0] - TRACE[0, :, 1]))


def test_clipped_hebb_by_hand():
    expected = torch.tensor([[[0.15, 0.2, 0.2], [-0.2, 0.0, 0.5]]])
    torch.testing.assert_close(ClippedHebb(clip=0.5).update(TRACE, PRE, POST, ETA), expected)


def test_soft_bound_by_hand():
    expected = torch.tensor([[[0.145, 0.2, 0.17], [-0.19, 0.0, 0.52]]])
    torch.testing.assert_close(SoftBoundHebb(clip=1.0).update(TRACE, PRE, POST, ETA), expected)


def test_zero_pre_only_decays():
    pre = torch.zeros(1, 2)
    torch.testing.assert_close(DecayingHebb().update(TRACE, pre, POST, ETA), 0.9 * TRACE)
    torch.testing.assert_close(ClippedHebb().update(TRACE, pre, POST, ETA), TRACE)


@pytest.mark.parametrize("rule", [DecayingHebb(), Oja(), ClippedHebb(2.0), SoftBoundHebb(2.0)])
def test_per_post_rate_equals_rate_times_outer(rule):
    """A (B, n_post) rate gives each post-synaptic column its own rate: compare column by column."""
    rate = torch.tensor([[0.1, -0.3, 0.7]])
    new = rule.update(TRACE, PRE, POST, rate)
    for j in range(3):
        alone = rule.update(TRACE, PRE, POST, rate[0, j])
        torch.testing.assert_close(new[..., j], alone[..., j])


def test_per_example_rate_broadcasts_over_batch():
    trace = TRACE.repeat(2, 1, 1)
    rate = torch.tensor([[0.1], [0.5]])
    new = ClippedHebb().update(trace, PRE.repeat(2, 1), POST.repeat(2, 1), rate)
    torch.testing.assert_close(new[1], TRACE[0] + 0.5 * outer(PRE, POST)[0])


def test_clip_accumulate_clips():
    new = ClippedHebb(clip=1.0).accumulate(TRACE, torch.full_like(TRACE, 0.8))
    assert new.max().item() == 1.0


def test_make_rule_names_and_errors():
    assert isinstance(make_rule("oja"), Oja)
    assert make_rule("clip", clip=3.0).clip == 3.0
    assert make_rule(None) is None
    with pytest.raises(ConfigError, match="unknown rule"):
        make_rule("hebbian")
    with pytest.raises(ConfigError, match="cannot accumulate"):
        Rule().accumulate(TRACE, TRACE)
