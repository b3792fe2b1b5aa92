"""Deep prefix modules and the self-attention wrapper that prepends them on every layer.

A module holds, per layer, P key and P value vectors (already in the attention's projected space,
as in prefix-tuning v2) and one gate per head. Attention over [prefix; tokens] is written as

    out = attn_tokens + gate * lambda * (attn_prefix - attn_tokens)

where lambda is the share of softmax mass the prefix would take in one joint softmax. gate = 1 is
exactly the paper's deep prefix; gate = 0 is exactly the backbone. Gates start at 0, so a new module
starts *at* the backbone (docs/architecture.md sections 4-5), yet still receives a gradient (d out / d gate != 0).
Token positions are untouched (no shift by P, unlike PEFT), so inputs keep the full 512 positions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ddr_search.errors import ModuleStoreError

if TYPE_CHECKING:
    from ddr_search.model.adapters import AdapterTerm


class PrefixModule(nn.Module):
    """One general or domain module: keys/values [layers, P, hidden] and gates [layers, heads], and for a
    domain module in a store with adapters, A [r, in] / B [out, r] per adapted linear layer (adapters.py).

    `adapter_shapes`: key -> (in, out) of each adapted layer; A starts seeded-random, B at zero (a no-op)."""

    def __init__(
        self,
        num_layers: int,
        prefix_length: int,
        hidden_size: int,
        num_heads: int,
        *,
        adapter_shapes: dict[str, tuple[int, int]] | None = None,
        adapter_rank: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.zeros(num_layers, prefix_length, hidden_size))
        self.values = nn.Parameter(torch.zeros(num_layers, prefix_length, hidden_size))
        self.gates = nn.Parameter(torch.zeros(num_layers, num_heads))
        self.adapter_a = nn.ParameterDict()
        self.adapter_b = nn.ParameterDict()
        generator = torch.Generator().manual_seed(seed)
        for key, (fan_in, fan_out) in (adapter_shapes or {}).items() if adapter_rank else ():
            self.adapter_a[key] = nn.Parameter(torch.randn(adapter_rank, fan_in, generator=generator) / fan_in**0.5)
            self.adapter_b[key] = nn.Parameter(torch.zeros(fan_out, adapter_rank))

    @property
    def prefix_length(self) -> int:
        return self.keys.shape[1]

    @property
    def has_adapters(self) -> bool:
        return len(self.adapter_a) > 0

    def prefix_parameters(self) -> list[nn.Parameter]:
        return [self.keys, self.values, self.gates]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [*self.adapter_a.values(), *self.adapter_b.values()]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def init_from_backbone(
    module: PrefixModule, embeddings: torch.Tensor, attentions: list[PrefixedSelfAttention], seed: int = 0
) -> None:
    """Give a fresh general module keys/values at the scale the backbone's own attention sees.

    Each layer's prefix starts as that layer's key/value projection of P random vocabulary
    embeddings. The gates stay at zero, so the module is still an exact no-op.
    """
    generator = torch.Generator().manual_seed(seed)
    for layer, attention in enumerate(attentions):
        token_ids = torch.randint(0, embeddings.shape[0], (module.prefix_length,), generator=generator)
        hidden = nn.functional.layer_norm(embeddings[token_ids], embeddings.shape[-1:])
        module.keys[layer].copy_(attention.key(hidden))
        module.values[layer].copy_(attention.value(hidden))


@dataclass
class PrefixState:
    """The prefix for one forward pass, shared by every wrapped layer.

    keys/values: [B or 1, layers, P, hidden]; gates: [B or 1, layers, heads]; mask: [B, T] (1 = token).
    keys None means no prefix at all: the layer computes exactly the backbone's attention.
    adapters: the query adapters the adapted linear layers add (adapters.py); empty = the plain layers.
    """

    mask: torch.Tensor
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    gates: torch.Tensor | None = None
    adapters: tuple[AdapterTerm, ...] = field(default_factory=tuple)


class PrefixHolder(threading.local):
    """The slot the encoder fills before each forward and the wrapped layers read. Thread-local: two
    threads encoding at once (a web server's query threads, a worker's) each see their own prefixes."""

    def __init__(self) -> None:
        self.state: PrefixState | None = None


class PrefixedSelfAttention(nn.Module):
    """Replaces a BERT-family self-attention; reuses its frozen query/key/value projections."""

    def __init__(self, original: nn.Module, layer_index: int, holder: PrefixHolder) -> None:
        super().__init__()
        self.query = original.query
        self.key = original.key
        self.value = original.value
        self.num_heads = int(original.num_attention_heads)
        self.head_dim = int(original.attention_head_size)
        self.layer_index = layer_index
        self._holder = holder

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> tuple[torch.Tensor, None]:
        state = self._holder.state
        if state is None:
            raise RuntimeError("PrefixedSelfAttention called outside DDRModel.forward")
        batch, length, _ = hidden_states.shape
        scale = self.head_dim**-0.5
        q = self._heads(self.query(hidden_states))
        k = self._heads(self.key(hidden_states))
        v = self._heads(self.value(hidden_states))
        pad = (1.0 - state.mask[:, None, None, :].to(q.dtype)) * torch.finfo(q.dtype).min
        if state.keys is None:  # no prefix (the backbone): torch's fused kernel, ~1.7x the eager passages/s
            attn_tokens = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=pad, scale=scale)
            return attn_tokens.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim), None
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale + pad
        attn_tokens = torch.matmul(torch.softmax(scores, dim=-1), v)
        pk = self._heads(state.keys[:, self.layer_index].expand(batch, -1, -1))
        pv = self._heads(state.values[:, self.layer_index].expand(batch, -1, -1))
        prefix_scores = torch.matmul(q, pk.transpose(-1, -2)) * scale
        attn_prefix = torch.matmul(torch.softmax(prefix_scores, dim=-1), pv)
        share = torch.sigmoid(
            torch.logsumexp(prefix_scores, dim=-1, keepdim=True) - torch.logsumexp(scores, dim=-1, keepdim=True)
        )
        gate = state.gates[:, self.layer_index][:, :, None, None]
        attn_tokens = attn_tokens + gate * share * (attn_prefix - attn_tokens)
        out = attn_tokens.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return out, None


def find_self_attentions(backbone: nn.Module) -> list[nn.Module]:
    """Every self-attention of a BERT-family encoder, in layer order."""
    found = [
        m
        for m in backbone.modules()
        if all(hasattr(m, name) for name in ("query", "key", "value", "num_attention_heads"))
        and not getattr(m, "is_cross_attention", False)
    ]
    if not found:
        raise ModuleStoreError(
            f"{type(backbone).__name__} has no BERT-style self-attention (query/key/value projections); "
            "ddr-search supports BERT-family encoders"
        )
    return found


def install_prefix_attention(backbone: nn.Module) -> tuple[PrefixHolder, list[PrefixedSelfAttention]]:
    """Swap every self-attention for a prefixed one; returns the slot that feeds them and the layers."""
    holder = PrefixHolder()
    wrapped = []
    for index, original in enumerate(find_self_attentions(backbone)):
        parent = next(m for m in backbone.modules() if getattr(m, "self", None) is original)
        parent.self = PrefixedSelfAttention(original, index, holder)
        wrapped.append(parent.self)
    return holder, wrapped
