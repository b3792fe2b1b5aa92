"""The two InfoNCE losses for several positives per query, against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from ddr_search.training.config import TrainConfig
from ddr_search.training.losses import LOSSES, listwise_infonce, multi_positive_infonce


def test_single_positive_equals_cross_entropy():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    targets = torch.tensor([0, 3, 5, 9])
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[torch.arange(4), targets] = True
    expected = torch.nn.functional.cross_entropy(q @ c.T / 0.05, targets)
    assert torch.allclose(multi_positive_infonce(q, c, mask, 0.05), expected, atol=1e-5)


def test_other_positives_do_not_enter_the_denominator():
    q = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    mask = torch.tensor([[True, False, True]])
    base = multi_positive_infonce(q, c, mask, 0.1)
    moved = c.clone()
    moved[2] = torch.tensor([0.8, 0.6])  # the second positive scores higher: no penalty for the first
    loss_first = lambda cand: torch.nn.functional.softplus(  # noqa: E731
        torch.logsumexp(q @ cand[[1]].T / 0.1, -1) - (q @ cand[0]) / 0.1
    )
    assert torch.allclose(loss_first(moved), loss_first(c))
    assert multi_positive_infonce(q, moved, mask, 0.1) < base


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_with_one_positive_both_losses_are_cross_entropy(loss):
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    targets = torch.tensor([1, 0, 11, 4, 4])
    mask = torch.zeros(5, 12, dtype=torch.bool)
    mask[torch.arange(5), targets] = True
    expected = torch.nn.functional.cross_entropy(q @ c.T / 0.05, targets)
    assert torch.allclose(LOSSES[loss](q, c, mask, 0.05), expected, atol=1e-5)


def test_listwise_is_minus_log_the_softmax_mass_on_the_positives():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    mask = torch.tensor([[True, False, True], [False, False, False]])  # the second row has no positive
    e = torch.exp(torch.tensor([1.0, 0.0, 0.6]) / 0.1)
    expected = -torch.log((e[0] + e[2]) / e.sum())
    assert torch.allclose(listwise_infonce(q, c, mask, 0.1), expected, atol=1e-5)
    assert listwise_infonce(q, c, torch.zeros_like(mask), 0.1) == 0.0


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        TrainConfig(loss="hinge")


def test_the_cli_offers_exactly_the_losses_there_are():
    """The CLI lists the names itself (importing the losses would load torch for `--help`)."""
    from ddr_search.cli.train import train_domains_cmd

    (option,) = [p for p in train_domains_cmd.params if p.name == "loss"]
    assert sorted(option.type.choices) == sorted(LOSSES)
