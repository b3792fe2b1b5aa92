"""The module store: a folder with manifest.json plus one safetensors file per module and the router.

store/
  manifest.json            backbone fingerprint, prefix length, modules + versions, domain map
  modules/general.safetensors
  modules/<domain>.safetensors
  router.safetensors       one row per domain module, in manifest order
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import load_file, save_file

from ddr_search.errors import ModuleStoreError
from ddr_search.model.backbone import Backbone, BackboneInfo
from ddr_search.model.ddr import GENERAL, DDRModel
from ddr_search.model.prefix import PrefixModule

MANIFEST = "manifest.json"
MODULES_DIR = "modules"
ROUTER_FILE = "router.safetensors"
FORMAT_VERSION = 1


class ModuleRecord(BaseModel):
    name: str
    kind: str  # "general" | "domain"
    version: int
    sha256: str
    parameters: int
    created: str
    notes: dict[str, str | int | float] = {}


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    backbone: dict[str, str | int]
    prefix_length: int
    modules: dict[str, ModuleRecord]
    router_rows: list[str]
    domains: dict[str, list[str]]

    def store_version(self) -> str:
        """Changes whenever any module or the router changes; exports record it."""
        digest = hashlib.sha256()
        for name in sorted(self.modules):
            digest.update(f"{name}:{self.modules[name].sha256};".encode())
        digest.update(json.dumps(self.router_rows).encode())
        digest.update(json.dumps(self.domains, sort_keys=True).encode())
        return digest.hexdigest()[:16]


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def module_tensors(module: PrefixModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().clone() for name, p in module.named_parameters()}


def read_manifest(path: Path) -> Manifest:
    file = Path(path) / MANIFEST
    if not file.exists():
        raise ModuleStoreError(f"{path} is not a module store (no {MANIFEST})")
    try:
        return Manifest.model_validate_json(file.read_text())
    except ValidationError as e:
        raise ModuleStoreError(f"{file}: invalid manifest: {e}") from e


def save_store(model: DDRModel, path: Path, notes: dict[str, dict[str, str | int | float]] | None = None) -> Manifest:
    """Write the whole store atomically (temp folder + rename): a crash never leaves half a store.

    Module versions increase only for modules whose tensors changed since the store on disk.
    """
    path = Path(path)
    previous = read_manifest(path) if (path / MANIFEST).exists() else None
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
        },
        prefix_length=model.prefix_length,
        modules=records,
        router_rows=model.module_names,
        domains=model.domain_map,
    )
    (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    replace_directory(staging, path)
    return manifest


def replace_directory(staging: Path, target: Path) -> None:
    """Swap a finished folder in by renames, so a reader sees the old folder or the new one, never half."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def check_compatible(manifest: Manifest, backbone: BackboneInfo, prefix_length: int | None, where: Path) -> None:
    """Refuse a store made for other weights or another prefix length, saying which and why."""
    recorded = manifest.backbone
    if recorded.get("fingerprint") != backbone.fingerprint:
        raise ModuleStoreError(
            f"module store {where} was trained on backbone {recorded.get('name')!r} "
            f"(fingerprint {str(recorded.get('fingerprint'))[:12]}), but the loaded backbone is {backbone.name!r} "
            f"(fingerprint {backbone.fingerprint[:12]}): prefixes only work on the weights they were trained "
            "on. Pass the matching --backbone, or retrain the modules."
        )
    if prefix_length is not None and prefix_length != manifest.prefix_length:
        raise ModuleStoreError(
            f"module store {where} holds prefixes of length {manifest.prefix_length}, but length "
            f"{prefix_length} was requested: use --prefix-length {manifest.prefix_length} or a new store."
        )


def load_store(path: Path, backbone: Backbone, prefix_length: int | None = None) -> DDRModel:
    """Load a store onto a backbone. Raises ModuleStoreError on any mismatch or corruption."""
    path = Path(path)
    manifest = read_manifest(path)
    check_compatible(manifest, backbone.info, prefix_length, path)
    model = DDRModel(backbone, manifest.prefix_length)
    for name, record in manifest.modules.items():
        file = path / MODULES_DIR / f"{name}.safetensors"
        if not file.exists():
            raise ModuleStoreError(f"module store {path}: {file.name} is listed in the manifest but missing")
        tensors = load_file(str(file))
        if _tensor_digest(tensors) != record.sha256:
            raise ModuleStoreError(f"module store {path}: {file.name} does not match its manifest checksum")
        module = model.new_module()
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
    for param in model.parameters():
        param.requires_grad_(False)
    return model
