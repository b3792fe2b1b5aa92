"""numpy routing weights against the torch router's rules (no export needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ddr_search.types import RoutingMode
from onnx_export.routing import routing_weights


@pytest.mark.parametrize("mode", [m for m in RoutingMode if m is not RoutingMode.AUTO])  # auto: no router logits
def test_numpy_routing_matches_torch(mode):
    import torch

    from ddr_search.model.router import routing_weights as torch_routing

    logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32) * 3
    allowed = [[0], [1, 2], [3], [0, 1, 2, 3], [], [2]] if mode is RoutingMode.PRIOR else None
    expected = torch_routing(torch.from_numpy(logits), mode, top_k=2, allowed=allowed).numpy()
    got = routing_weights(logits, mode, top_k=2, allowed=allowed)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    if mode is RoutingMode.TOP_K:
        assert ((got > 0).sum(axis=1) == 2).all()


def test_top_k_ties_go_to_the_lower_row():
    weights = routing_weights(np.zeros((1, 4), dtype=np.float32), RoutingMode.TOP_K, top_k=2)
    assert weights.tolist() == [[0.25, 0.25, 0.0, 0.0]]
