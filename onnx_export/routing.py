"""Routing weights from router logits in numpy: the same rules as ddr_search.model.router, without torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ddr_search.types import RoutingMode


def _softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def routing_weights(
    logits: NDArray[np.float32],
    mode: RoutingMode,
    *,
    top_k: int = 2,
    allowed: Sequence[Sequence[int]] | None = None,
) -> NDArray[np.float32]:
    """Module weights [B, N]: soft, top-k (not renormalised), prior (softmax over allowed) or none.

    Ties in top-k go to the lower router row (a stable sort), as torch.topk does on CPU.
    """
    batch, num_modules = logits.shape
    if mode is RoutingMode.AUTO:
        raise ValueError("auto routing uses domain profiles (ddr_search.routing), not router logits")
    if mode is RoutingMode.NONE or num_modules == 0:
        return np.zeros((batch, num_modules), dtype=np.float32)
    if mode is RoutingMode.PRIOR:
        if allowed is None or len(allowed) != batch:
            raise ValueError("prior routing needs the allowed modules of every query")
        mask = np.zeros((batch, num_modules), dtype=bool)
        for row, indices in enumerate(allowed):
            mask[row, list(indices)] = True
        masked = np.where(mask, logits, -np.inf).astype(np.float32)
        with np.errstate(invalid="ignore"):
            weights = _softmax(masked)
        return np.nan_to_num(weights, nan=0.0)  # a query allowed no module: general alone
    weights = _softmax(logits.astype(np.float32))
    if mode is RoutingMode.TOP_K and top_k < num_modules:
        order = np.argsort(-weights, axis=-1, kind="stable")[:, :top_k]
        kept = np.zeros_like(weights)
        np.put_along_axis(kept, order, np.take_along_axis(weights, order, axis=-1), axis=-1)
        weights = kept
    return weights
