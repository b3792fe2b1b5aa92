"""Small module stores whose prefixes really matter (built fresh: DDRModel rewires its backbone)."""

from __future__ import annotations

from pathlib import Path

PREFIX_LENGTH = 32
ADAPTER_RANK = 4  # domain modules carry query adapters too: the export must bake and mix them
MODULES = {"legal": ["legal", "mixed"], "bio": ["bio", "mixed"]}
TOP_K = 1  # with two modules, top-1 routing really drops one


def perturb(module, seed: int, gate: float = 0.5, noise: float = 0.5) -> None:
    """Non-zero gates and moved keys/values: an untrained (gate 0) module would hide export bugs."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.gates.fill_(gate)
        module.gates.add_(0.2 * gate * torch.randn(module.gates.shape, generator=generator))
        for tensor in (module.keys, module.values):
            tensor.add_(noise * tensor.abs().mean() * torch.randn(tensor.shape, generator=generator))
        for tensor in module.adapter_b.values():  # B starts at zero: a mild, real low-rank update
            tensor.copy_(0.1 * noise * torch.randn(tensor.shape, generator=generator))


def build_store(path: Path, seed: int = 0) -> Path:
    """A general and two domain modules ('mixed' is served by both), active but mild.

    Like a trained store, the prefixes change every embedding without wrecking retrieval (the quality
    tests compare int8 with fp32 on it; a destroyed retriever would amplify quantisation noise).
    """
    import torch

    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.store import save_store

    backbone = load_backbone()
    model = DDRModel(backbone, prefix_length=PREFIX_LENGTH, adapter_rank=ADAPTER_RANK)
    perturb(model.add_general(seed=seed), seed, gate=0.2, noise=0.1)
    for offset, (name, domains) in enumerate(MODULES.items(), start=1):
        module = model.add_domain_module(name, domains)
        with torch.no_grad():  # domain modules start at zero: a delta at a fifth of the general's scale
            module.keys.copy_(0.2 * model.general.keys.roll(offset, dims=1))
            module.values.copy_(0.2 * model.general.values.roll(offset, dims=1))
        perturb(module, seed + offset, gate=0.1, noise=0.1)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        model.router.weight.copy_(torch.randn(model.router.weight.shape, generator=generator))
    add_profiles(model, backbone.tokenizer)
    save_store(model, path)
    return path


PROFILE_QUERIES = {
    "legal": ["statute of limitations for fraud", "breach of contract damages", "court appeal deadline"],
    "bio": ["vitamin d and fractures", "macrophages in the lung", "bone density in older adults"],
}


BACKGROUND_QUERIES = ["who painted the mona lisa", "football world cup winners list", "how to change a car tyre"]


def add_profiles(model, tokenizer) -> None:
    """Auto routing profiles from a few topical queries, scored against a background of queries of no
    domain (the ONNX path must load it too): legal and medical texts route, others do not."""
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.routing import background_profile, calibrate
    from ddr_search.types import RoutingMode

    encoder = TorchEncoder(model.eval(), tokenizer)
    background = encoder.encode_queries(BACKGROUND_QUERIES, routing=RoutingMode.NONE).vectors
    model.routing_background = background_profile(background)
    for name, queries in PROFILE_QUERIES.items():
        vectors = encoder.encode_queries(queries, routing=RoutingMode.NONE).vectors
        model.profiles[name] = calibrate(name, vectors, quantile=0.0, neighbours=2, background=model.routing_background)


def tiny_store(backbone_dir: Path, path: Path, seed: int) -> Path:
    """General + one "legal" module on the tiny backbone; `seed` changes only the legal module."""
    import torch

    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.store import save_store

    model = DDRModel(load_backbone(backbone_dir), prefix_length=4, adapter_rank=2)
    perturb(model.add_general(), 0)
    legal = model.add_domain_module("legal")
    with torch.no_grad():
        legal.keys.copy_(model.general.keys)
        legal.values.copy_(model.general.values)
    perturb(legal, seed)
    save_store(model, path)
    return path
