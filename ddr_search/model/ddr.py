"""DDRModel: the frozen backbone with a general prefix, named domain prefixes and a router."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import nn

from ddr_search.encoding import check_domain
from ddr_search.errors import InputError, UnknownModuleError
from ddr_search.fusion import FusionConfig
from ddr_search.manifest import Manifest
from ddr_search.model.adapters import AdapterTerm, install_adapters
from ddr_search.model.backbone import Backbone, BackboneInfo, pool
from ddr_search.model.prefix import PrefixModule, PrefixState, init_from_backbone, install_prefix_attention
from ddr_search.model.router import Router, routing_weights
from ddr_search.names import check_name
from ddr_search.routing import DomainProfile, Matrix
from ddr_search.types import RoutingMode

GENERAL = "general"


class DDRModel(nn.Module):
    """Passages: backbone + general. Queries: backbone + general + sum_i beta_i * domain_i.

    `adapter_rank` > 0: every domain module also carries rank-r query adapters (model/adapters.py)."""

    def __init__(self, backbone: Backbone, prefix_length: int = 128, adapter_rank: int = 0) -> None:
        super().__init__()
        if prefix_length < 1:
            raise InputError(f"prefix length must be >= 1, got {prefix_length}")
        if adapter_rank < 0:
            raise InputError(f"adapter rank must be >= 0, got {adapter_rank}")
        self.encoder = backbone.model
        self.backbone_info: BackboneInfo = backbone.info
        self.pooling = backbone.pooling
        self.normalize = backbone.normalize
        self.prefix_length = prefix_length
        self._holder, self._attentions = install_prefix_attention(self.encoder)
        self.adapter_rank = adapter_rank
        self.adapter_shapes = install_adapters(self.encoder, self._holder) if adapter_rank else {}
        self.general: PrefixModule | None = None
        self.domain_modules = nn.ModuleDict()
        self.router = Router(backbone.info.hidden_size)
        self.domain_map: dict[str, list[str]] = {}
        self.profiles: dict[str, DomainProfile] = {}  # auto routing, per domain module (ddr_search.routing)
        self.routing_background: Matrix | None = None  # queries of no domain: what profiles score against
        self.fusion: dict[str, FusionConfig] = {}  # hybrid fusion per module ("general" too), tuned on dev
        self.loaded_from: Manifest | None = None  # the store this model was loaded from (versions, notes)

    # -- modules --------------------------------------------------------------------------------
    def new_module(self, *, adapters: bool = False, seed: int = 0) -> PrefixModule:
        """A zero module; `adapters` (domain modules of a store with adapters): B zero, A seeded-random."""
        info = self.backbone_info
        return PrefixModule(
            info.num_layers,
            self.prefix_length,
            info.hidden_size,
            info.num_heads,
            adapter_shapes=self.adapter_shapes if adapters else None,
            adapter_rank=self.adapter_rank,
            seed=seed,
        )

    def add_general(self, seed: int = 0) -> PrefixModule:
        """A fresh general module: keys/values at the backbone's scale, gates at zero (a no-op)."""
        module = self.new_module()
        init_from_backbone(module, self.encoder.get_input_embeddings().weight, self._attentions, seed)
        self.general = module
        return module

    def add_domain_module(self, name: str, domains: Sequence[str] | None = None) -> PrefixModule:
        """A new domain module starts as an exact zero delta on the general module."""
        check_name(name, "module")
        if name == GENERAL or name in self.domain_modules:
            raise InputError(f"module {name!r} already exists")
        # Seeded by name: a module starts from the same tensors whatever the store already holds.
        self.domain_modules[name] = self.new_module(adapters=True, seed=zlib.crc32(name.encode()))
        self.router.add_row()
        for domain in domains or [name]:
            self.domain_map.setdefault(check_name(domain), []).append(name)
        return self.domain_modules[name]

    def remove_domain_module(self, name: str) -> None:
        if name not in self.domain_modules:
            raise UnknownModuleError(f"no domain module {name!r}; modules: {self.module_names}")
        self.router.remove_row(self.module_names.index(name))
        del self.domain_modules[name]
        self.profiles.pop(name, None)
        self.fusion.pop(name, None)
        self.domain_map = {d: [m for m in ms if m != name] for d, ms in self.domain_map.items()}
        self.domain_map = {d: ms for d, ms in self.domain_map.items() if ms}

    @property
    def module_names(self) -> list[str]:
        """Domain module names in router-row order."""
        return list(self.domain_modules.keys())

    # -- routing --------------------------------------------------------------------------------
    def router_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the embedding-layer output: known before the transformer runs, so routing is cheap."""
        embedded = self.encoder.embeddings(input_ids=input_ids)
        mask = attention_mask.unsqueeze(-1).to(embedded.dtype)
        return (embedded * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def allowed_modules(self, domains: Sequence[str | None]) -> list[list[int]]:
        """Router rows each query may use under prior routing; unknown domains are an error."""
        names = self.module_names
        allowed = []
        for domain in domains:
            if domain is None:
                allowed.append(list(range(len(names))))
            else:
                check_domain(domain, self.domain_map)
                allowed.append([names.index(m) for m in self.domain_map[domain]])
        return allowed

    def route(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mode: RoutingMode,
        *,
        top_k: int = 2,
        domains: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        logits = self.router(self.router_features(input_ids, attention_mask))
        allowed = self.allowed_modules(domains) if mode is RoutingMode.PRIOR and domains is not None else None
        return routing_weights(logits, mode, top_k=top_k, allowed=allowed)

    # -- encoding -------------------------------------------------------------------------------
    def general_is_noop(self) -> bool:
        """All gates at zero: the general module alone changes nothing (prefix.py), so inference on the
        general module alone may skip its prefix attention and run the plain backbone (torch's fused attention)."""
        return self.general is None or not bool(self.general.gates.detach().any())

    def prefix_state(
        self, attention_mask: torch.Tensor, weights: torch.Tensor | None, skip_noop_general: bool = False
    ) -> PrefixState:
        """Combine modules element-wise: general + sum_i weights[:, i] * domain_i (prefixes), and the
        domain modules' adapters weighted the same way. A general module with adapters exists only in the
        ONNX export's template graph (the slot per-domain encoders are baked into)."""
        parts_k, parts_v, parts_g = [], [], []
        adapters: list[AdapterTerm] = []
        if weights is None and skip_noop_general and self.general_is_noop():
            return PrefixState(mask=attention_mask)  # the general module alone, a no-op: the backbone
        if self.general is not None:
            parts_k.append(self.general.keys[None])
            parts_v.append(self.general.values[None])
            parts_g.append(self.general.gates[None])
            if self.general.has_adapters:
                adapters.append(AdapterTerm.stack([self.general], None))
        if weights is not None and len(self.domain_modules):
            modules = list(self.domain_modules.values())
            stack = {
                "k": torch.stack([m.keys for m in modules]),
                "v": torch.stack([m.values for m in modules]),
                "g": torch.stack([m.gates for m in modules]),
            }
            parts_k.append(torch.einsum("bn,nlph->blph", weights, stack["k"]))
            parts_v.append(torch.einsum("bn,nlph->blph", weights, stack["v"]))
            parts_g.append(torch.einsum("bn,nlh->blh", weights, stack["g"]))
            if self.adapter_rank:
                adapters.append(AdapterTerm.stack(modules, weights))
        if not parts_k:
            return PrefixState(mask=attention_mask)
        return PrefixState(
            mask=attention_mask, keys=sum(parts_k), values=sum(parts_v), gates=sum(parts_g), adapters=tuple(adapters)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        weights: torch.Tensor | None = None,
        *,
        skip_noop_general: bool = False,
        backbone: nn.Module | None = None,
    ) -> torch.Tensor:
        """Pooled (normalised) embeddings; weights None = the passage encoder (general module only).

        `skip_noop_general` (inference): a no-op general module's prefix attention is not computed at all
        (the same vectors to float rounding through torch's fused attention, about 2x the passages/s of the
        computed prefix); training keeps it. `backbone`: a compiled twin of `self.encoder` to run in its
        place (model/compiled.py); the prefixes reach it the same way."""
        self._holder.state = self.prefix_state(attention_mask, weights, skip_noop_general)
        try:
            run = backbone if backbone is not None else self.encoder
            hidden = run(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            self._holder.state = None
        return pool(hidden, attention_mask, self.pooling, self.normalize)
