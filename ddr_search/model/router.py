"""The router: beta = softmax(W x) over domain modules, and the routing modes built on it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ddr_search.types import RoutingMode


class Router(nn.Module):
    """One row of W per domain module (no bias, as in the paper); rows start at zero (uniform beta)."""

    def __init__(self, hidden_size: int, num_modules: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_modules, hidden_size))

    def add_row(self) -> None:
        """A new domain module gets a zero row; existing rows are kept bit for bit."""
        zero = torch.zeros(1, self.weight.shape[1], dtype=self.weight.dtype)
        self.weight = nn.Parameter(torch.cat([self.weight.data, zero], dim=0))

    def remove_row(self, index: int) -> None:
        keep = [i for i in range(self.weight.shape[0]) if i != index]
        self.weight = nn.Parameter(self.weight.data[keep].clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Router logits [B, N] from pooled embedding-layer features [B, hidden]."""
        return features @ self.weight.T


def routing_weights(
    logits: torch.Tensor,
    mode: RoutingMode,
    *,
    top_k: int = 2,
    allowed: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Module weights [B, N] for a routing mode.

    soft: softmax over all modules. topk: the k largest softmax weights, others zeroed, no
    renormalisation (the paper's choice). prior: softmax over only the modules in `allowed[b]`
    (the query's known domain), so they sum to 1. none: all zero (general module alone).
    """
    batch, num_modules = logits.shape
    if mode is RoutingMode.AUTO:
        raise ValueError("auto routing uses domain profiles (ddr_search.routing), not router logits")
    if mode is RoutingMode.NONE or num_modules == 0:
        return logits.new_zeros(batch, num_modules)
    if mode is RoutingMode.PRIOR:
        if allowed is None or len(allowed) != batch:
            raise ValueError("prior routing needs the allowed modules of every query")
        mask = torch.zeros(batch, num_modules, dtype=torch.bool)
        for row, indices in enumerate(allowed):
            mask[row, list(indices)] = True
        masked = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(masked, dim=-1)
        return torch.nan_to_num(weights, nan=0.0)  # a query allowed no module: general alone
    weights = torch.softmax(logits, dim=-1)
    if mode is RoutingMode.TOP_K and top_k < num_modules:
        kept = torch.topk(weights, top_k, dim=-1).indices
        weights = torch.zeros_like(weights).scatter(-1, kept, weights.gather(-1, kept))
    return weights
