"""Multi-positive InfoNCE: other positives never act as negatives."""

from __future__ import annotations

import torch

from ddr_search.training.losses import multi_positive_infonce


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
