"""Query-side low-rank adapters: a domain module's second part, next to its deep prefix.

Why: a prefix only adds attention targets; the query tower's projections and feed-forward layers stay as
they are. On NFCorpus that caps a 0.65% prefix module at a fifth of what fine-tuning the whole query tower
gains (bench/reports/headroom.md). A rank-r adapter on every linear layer of every transformer layer,

    y = W x + ADAPTER_SCALE * B (A x)        A: [r, in], B: [out, r]

reaches those weights with ~1.5% of the backbone's parameters at rank 8 (LoRA, Hu et al. 2021). B starts
at zero, so a new module is still an exact no-op. Only query encoding uses them: the general module has
none, so passages (and every stored vector) are the backbone's, and a query routed to no domain runs
exactly the plain linear layers. Routed queries mix modules like prefixes do, per query:
y = W x + scale * sum_i w_i B_i (A_i x).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ddr_search.errors import ModuleStoreError
from ddr_search.model.prefix import PrefixHolder

if TYPE_CHECKING:
    from ddr_search.model.prefix import PrefixModule

ADAPTER_SCALE = 2.0  # LoRA's alpha / r with alpha = 2r: the update's scale does not depend on the rank
DEFAULT_ADAPTER_RANK = 8


@dataclass(frozen=True)
class AdapterTerm:
    """The adapters of N modules for one forward pass, laid out once for every layer that reads them: their
    ranks side by side, so each adapted layer runs two plain matmuls (what ONNX Runtime quantises and runs
    fastest; an Einsum per layer cost the weighted int8 encoder 75%).

    down / up: key -> [in, N*r] / [N*r, out]; weights: [B, N*r] (each module's weight repeated over its rank)
    or None (all of each module).
    """

    down: dict[str, torch.Tensor]
    up: dict[str, torch.Tensor]
    weights: torch.Tensor | None = None

    @classmethod
    def stack(cls, modules: Sequence[PrefixModule], weights: torch.Tensor | None) -> AdapterTerm:
        """`modules`' adapters (A [r, in], B [out, r] each) mixed by `weights` [B, N] (None: all of each)."""
        rank = next(iter(modules[0].adapter_a.values())).shape[0]
        return cls(
            down={k: torch.cat([m.adapter_a[k] for m in modules]).transpose(0, 1) for k in modules[0].adapter_a},
            up={k: torch.cat([m.adapter_b[k].transpose(0, 1) for m in modules]) for k in modules[0].adapter_b},
            weights=None if weights is None else weights.repeat_interleave(rank, dim=1),
        )


class AdaptedLinear(nn.Module):
    """A frozen linear layer plus whatever adapters the current forward pass carries (none: the layer itself)."""

    def __init__(self, base: nn.Linear, key: str, holder: PrefixHolder) -> None:
        super().__init__()
        self.base = base
        self.key = key
        self._holder = holder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        state = self._holder.state
        if state is None or not state.adapters:
            return out
        for term in state.adapters:
            hidden = torch.matmul(x, term.down[self.key].to(x.dtype))
            if term.weights is not None:
                hidden = hidden * term.weights.to(x.dtype)[:, None, :]
            out = out + ADAPTER_SCALE * torch.matmul(hidden, term.up[self.key].to(x.dtype))
        return out


def _layers(backbone: nn.Module) -> list[nn.Module]:
    """BERT-family transformer layers: attention (with .output.dense), intermediate.dense, output.dense."""
    found = [m for m in backbone.modules() if all(hasattr(m, n) for n in ("attention", "intermediate", "output"))]
    if not found:
        raise ModuleStoreError(f"{type(backbone).__name__} has no BERT-style layers for query adapters")
    return found


def _slots(layer: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """target -> (parent module, attribute) of each adapted linear layer in one transformer layer: the
    attention's projections, its output projection, and the feed-forward pair."""
    attention = layer.attention
    return {
        "query": (attention.self, "query"),
        "key": (attention.self, "key"),
        "value": (attention.self, "value"),
        "attention_output": (attention.output, "dense"),
        "intermediate": (layer.intermediate, "dense"),
        "output": (layer.output, "dense"),
    }


def install_adapters(backbone: nn.Module, holder: PrefixHolder) -> dict[str, tuple[int, int]]:
    """Wrap every targeted linear layer (after the prefix attention is installed: it holds q/k/v);
    returns key -> (in_features, out_features), the shapes each module's adapters take."""
    shapes = {}
    for index, layer in enumerate(_layers(backbone)):
        for target, (parent, attribute) in _slots(layer).items():
            linear = getattr(parent, attribute)
            key = f"{index}_{target}"
            setattr(parent, attribute, AdaptedLinear(linear, key, holder))
            shapes[key] = (linear.in_features, linear.out_features)
    return shapes
