"""The module store's manifest, read and checked without torch: which modules and domains a store holds,
for which backbone and prefix length. The ONNX Runtime query path, the CLI and the early argument checks
read it without loading a model; ddr_search.model.store writes it with the tensors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from ddr_search.errors import ModuleStoreError

if TYPE_CHECKING:
    from ddr_search.model.backbone import BackboneInfo

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
    # Auto routing's profile of this domain module (ddr_search.routing.write_profile); None = prior only.
    routing: dict[str, str | int | float] | None = None
    # Hybrid fusion chosen on this module's dev queries (FusionConfig.to_record); None = the settings'.
    fusion: dict[str, str | int | float] | None = None


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    backbone: dict[str, str | int]
    prefix_length: int
    adapter_rank: int = 0  # rank of every domain module's query adapters (model/adapters.py); 0 = prefixes only
    modules: dict[str, ModuleRecord]
    router_rows: list[str]
    domains: dict[str, list[str]]

    def store_version(self) -> str:
        """Changes whenever any module or the router changes; exports record it."""
        digest = hashlib.sha256()
        for name in sorted(self.modules):
            record = self.modules[name]
            digest.update(f"{name}:{record.sha256};".encode())
            for extra in (record.routing, record.fusion):
                if extra is not None:
                    digest.update(json.dumps(extra, sort_keys=True).encode())
        digest.update(json.dumps(self.router_rows).encode())
        digest.update(json.dumps(self.domains, sort_keys=True).encode())
        return digest.hexdigest()[:16]


def read_manifest(path: Path) -> Manifest:
    file = Path(path) / MANIFEST
    if not file.exists():
        raise ModuleStoreError(f"{path} is not a module store (no {MANIFEST})")
    try:
        return Manifest.model_validate_json(file.read_text())
    except ValidationError as e:
        raise ModuleStoreError(f"{file}: invalid manifest: {e}") from e


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
