"""The module store: a folder with manifest.json plus one safetensors file per module and the router.

store/
  manifest.json            backbone fingerprint, prefix length, adapter rank, modules + versions, domain map
  modules/general.safetensors
  modules/<domain>.safetensors
  router.safetensors       one row per domain module, in manifest order
  profiles/<domain>.safetensors   auto routing's training-query vectors (ddr_search.routing)
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ddr_search.errors import ModuleStoreError
from ddr_search.files import replace_directory
from ddr_search.fusion import FusionConfig
from ddr_search.manifest import (
    MANIFEST,
    MODULES_DIR,
    ROUTER_FILE,
    Manifest,
    ModuleRecord,
    check_compatible,
    read_manifest,
)
from ddr_search.model.backbone import Backbone, load_backbone
from ddr_search.model.ddr import GENERAL, DDRModel
from ddr_search.model.prefix import PrefixModule
from ddr_search.routing import PROFILES_DIR, read_profiles, write_background, write_profile


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def module_tensors(module: PrefixModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().clone() for name, p in module.named_parameters()}


def save_store(model: DDRModel, path: Path, notes: dict[str, dict[str, str | int | float]] | None = None) -> Manifest:
    """Write the whole store atomically (temp folder + rename): a crash never leaves half a store.

    Module versions increase only for modules whose tensors changed since the store on disk.
    """
    path = Path(path)
    # Versions and notes carry over from the store on disk, else from the store the model was loaded from
    # (a module copied into a new store keeps its history).
    previous = read_manifest(path) if (path / MANIFEST).exists() else model.loaded_from
    now = datetime.now(UTC).isoformat(timespec="seconds")
    notes = notes or {}
    modules: dict[str, PrefixModule] = dict(model.domain_modules.items())
    if model.general is not None:
        modules = {GENERAL: model.general, **modules}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    (staging / MODULES_DIR).mkdir()
    records = {}
    for name, module in modules.items():
        tensors = module_tensors(module)
        digest = _tensor_digest(tensors)
        old = previous.modules.get(name) if previous else None
        unchanged = old is not None and old.sha256 == digest
        records[name] = ModuleRecord(
            name=name,
            kind="general" if name == GENERAL else "domain",
            version=old.version if unchanged else (old.version + 1 if old else 1),
            sha256=digest,
            parameters=module.num_parameters(),
            created=old.created if unchanged else now,
            notes=notes.get(name, old.notes if unchanged else {}),
            routing=_routing_record(model, staging / PROFILES_DIR, name),
            fusion=model.fusion[name].to_record() if name in model.fusion else None,
        )
        save_file(tensors, str(staging / MODULES_DIR / f"{name}.safetensors"))
    save_file({"weight": model.router.weight.detach().contiguous().clone()}, str(staging / ROUTER_FILE))
    info = model.backbone_info
    manifest = Manifest(
        backbone={
            "name": info.name,
            "fingerprint": info.fingerprint,
            "hidden_size": info.hidden_size,
            "num_layers": info.num_layers,
            "num_heads": info.num_heads,
            "parameters": sum(p.numel() for p in model.encoder.parameters()),
        },
        prefix_length=model.prefix_length,
        adapter_rank=model.adapter_rank,
        modules=records,
        router_rows=model.module_names,
        domains=model.domain_map,
    )
    (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    replace_directory(staging, path)
    return manifest


def _routing_record(model: DDRModel, directory: Path, name: str) -> dict[str, str | int | float] | None:
    """The general module records the store's routing background; a domain module its own profile."""
    if name == GENERAL:
        background = model.routing_background
        return write_background(directory, name, background) if background is not None else None
    return write_profile(directory, model.profiles[name], GENERAL) if name in model.profiles else None


def load_store(path: Path, backbone: Backbone, prefix_length: int | None = None) -> DDRModel:
    """Load a store onto a backbone. Raises ModuleStoreError on any mismatch or corruption."""
    path = Path(path)
    manifest = read_manifest(path)
    check_compatible(manifest, backbone.info, prefix_length, path)
    model = DDRModel(backbone, manifest.prefix_length, manifest.adapter_rank)
    for name, record in manifest.modules.items():
        file = path / MODULES_DIR / f"{name}.safetensors"
        if not file.exists():
            raise ModuleStoreError(f"module store {path}: {file.name} is listed in the manifest but missing")
        tensors = load_file(str(file))
        if _tensor_digest(tensors) != record.sha256:
            raise ModuleStoreError(f"module store {path}: {file.name} does not match its manifest checksum")
        module = model.new_module(adapters=record.kind != "general")
        try:
            module.load_state_dict(tensors)
        except RuntimeError as e:
            raise ModuleStoreError(f"module store {path}: {file.name} has the wrong shape: {e}") from e
        if record.kind == "general":
            model.general = module
        else:
            model.domain_modules[name] = module
    if list(model.domain_modules) != manifest.router_rows:
        model.domain_modules = torch.nn.ModuleDict({n: model.domain_modules[n] for n in manifest.router_rows})
    router = load_file(str(path / ROUTER_FILE))["weight"]
    if router.shape != (len(manifest.router_rows), backbone.info.hidden_size):
        raise ModuleStoreError(f"module store {path}: router shape {tuple(router.shape)} does not match the modules")
    model.router.weight = torch.nn.Parameter(router)
    model.domain_map = {d: list(ms) for d, ms in manifest.domains.items()}
    model.loaded_from = manifest
    routing = {name: record.routing for name, record in manifest.modules.items() if record.routing is not None}
    model.routing_background, model.profiles = read_profiles(path / PROFILES_DIR, routing)
    model.fusion = {
        name: FusionConfig.from_record(record.fusion)
        for name, record in manifest.modules.items()
        if record.fusion is not None
    }
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def recalibrate_routing(
    source: Path, out: Path, module: str, quantile: float, backbone: Path | None = None
) -> tuple[float, float]:
    """Move `module`'s auto-routing threshold to another quantile of its own queries and save the store to
    `out`: no retraining, no re-embedding; every module, version and other threshold stays as it was.
    `backbone`: the store's backbone folder (None: the packaged one). Returns (threshold before, after).
    Raises ModuleStoreError for a module without a routing profile."""
    from ddr_search.routing import recalibrate

    model = load_store(source, load_backbone(backbone))
    if module not in model.profiles:
        known = ", ".join(sorted(model.profiles)) or "none"
        raise ModuleStoreError(f"module store {source}: {module!r} has no routing profile (profiles: {known})")
    before = model.profiles[module].threshold
    model.profiles[module] = recalibrate(model.profiles[module], quantile)
    save_store(model, out)
    return before, model.profiles[module].threshold
