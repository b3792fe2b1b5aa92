"""The export folder's layout and manifest: what was exported, from which store, and its checksums.

<out>/
  manifest.json                 versions, store_version, encoder version, graphs, checksums
  tokenizer/                    the backbone's tokenizer files (tokenizer.json is what ORT uses)
  router.onnx                   input_ids, attention_mask -> router_logits [B, N] (always fp32)
  fp32/passage.onnx             backbone + general baked in          -> embeddings [B, d]
  fp32/query-<module>.onnx      backbone + general + <module> baked  -> embeddings [B, d]
  fp32/query-weighted.onnx      + module_weights [B, N] input        -> embeddings, router_logits
  int8/...                      the same encoders, dynamically quantised (with --int8)
  profiles/<module>.safetensors auto routing profiles, copied from the store (ddr_search.routing)
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ddr_search.errors import ExportError
from ddr_search.manifest import read_manifest

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
ROUTER_FILE = "router.onnx"
PASSAGE_FILE = "passage.onnx"
WEIGHTED_FILE = "query-weighted.onnx"
NO_STORE = "none"  # store_version of an export of the frozen backbone alone
FORMAT_VERSION = 1

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
MODULE_WEIGHTS = "module_weights"
EMBEDDINGS = "embeddings"
ROUTER_LOGITS = "router_logits"


class Precision(StrEnum):
    FP32 = "fp32"
    INT8 = "int8"


class Role(StrEnum):
    PASSAGE = "passage"
    QUERY_DOMAIN = "query-domain"
    QUERY_WEIGHTED = "query-weighted"
    ROUTER = "router"


def domain_file(module: str) -> str:
    return f"query-{module}.onnx"


class GraphRecord(BaseModel):
    """One ONNX file: what it encodes, its interface and its checksum."""

    file: str  # relative to the export folder
    role: Role
    precision: Precision
    module: str | None = None  # the domain module baked in (role query-domain)
    inputs: list[str]
    outputs: list[str]
    sha256: str
    bytes: int


class ExportManifest(BaseModel):
    format_version: int = FORMAT_VERSION
    created: str
    versions: dict[str, str]  # ddr-search, torch, transformers, onnx, onnxruntime
    opset: int
    store_path: str | None
    store_version: str  # Manifest.store_version() of the exported store, or "none"
    module_versions: dict[str, int]
    encoder_version: str  # equals TorchEncoder.version: documents embedded by either are interchangeable
    backbone: dict[str, str | int]
    dimension: int
    max_passage_length: int
    max_query_length: int
    pad_token: str
    pad_token_id: int
    module_names: list[str]  # router rows = module_weights columns, in order
    domains: dict[str, list[str]]
    precisions: list[Precision]
    graphs: dict[str, GraphRecord]  # key "<precision>/<role>[/<module>]" or "router"
    tokenizer_files: dict[str, str]  # file name -> sha256
    profiles: dict[str, dict[str, str | int | float]] = {}  # module -> the store's ModuleRecord.routing
    fusion: dict[str, dict[str, str | int | float]] = {}  # module -> the store's ModuleRecord.fusion

    def graph(self, role: Role, precision: Precision | None = None, module: str | None = None) -> GraphRecord:
        """The record for one encoder; raises ExportError naming what the export lacks."""
        for record in self.graphs.values():
            if record.role is role and record.module == module and (precision is None or record.precision is precision):
                return record
        what = f"{role}" + (f" for module {module!r}" if module else "") + (f" ({precision})" if precision else "")
        raise ExportError(f"this export has no {what} graph; re-run `ddr-search export`")


def graph_key(role: Role, precision: Precision | None, module: str | None = None) -> str:
    if role is Role.ROUTER:
        return "router"
    return "/".join(p for p in (str(precision), str(role), module) if p)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_export_manifest(directory: Path) -> ExportManifest:
    """Raises ExportError when the folder is not an export or its manifest is unreadable."""
    file = Path(directory) / MANIFEST
    if not file.exists():
        raise ExportError(
            f"{directory} is not an ONNX export (no {MANIFEST}); run `ddr-search export --out {directory}`"
        )
    try:
        return ExportManifest.model_validate_json(file.read_text())
    except ValidationError as e:
        raise ExportError(f"{file}: invalid export manifest: {e}") from e


def verify_file(directory: Path, relative: str, expected_sha256: str) -> Path:
    """A file the manifest lists must exist and match its checksum (truncated copies, edits)."""
    path = Path(directory) / relative
    if not path.exists():
        raise ExportError(f"{path} is listed in {Path(directory) / MANIFEST} but missing; re-run `ddr-search export`")
    if sha256_file(path) != expected_sha256:
        raise ExportError(
            f"{path} does not match its checksum in {Path(directory) / MANIFEST}; re-run `ddr-search export`"
        )
    return path


def store_version_of(store: Path | None) -> str:
    """The version an export of `store` must record ("none" for the frozen backbone alone)."""
    if store is None:
        return NO_STORE
    return read_manifest(Path(store)).store_version()


def check_store(manifest: ExportManifest, directory: Path, store: Path | None) -> None:
    """Refuse an export made for another module store version (stale modules would silently drift)."""
    expected = store_version_of(store)
    if manifest.store_version != expected:
        made_for = (
            f"module store version {manifest.store_version} ({manifest.store_path})"
            if manifest.store_version != NO_STORE
            else "the frozen backbone with no module store"
        )
        now = f"module store {store} is version {expected}" if store is not None else "no module store is configured"
        fix = (
            f"ddr-search export --modules {store} --out {directory}"
            if store
            else f"ddr-search export --out {directory}"
        )
        raise ExportError(f"ONNX export {directory} was made for {made_for}, but {now}: run `{fix}`")


def check_backbone(manifest: ExportManifest, directory: Path, fingerprint: str) -> None:
    if manifest.backbone.get("fingerprint") != fingerprint:
        raise ExportError(
            f"ONNX export {directory} was made for backbone {manifest.backbone.get('name')!r} "
            f"(fingerprint {str(manifest.backbone.get('fingerprint'))[:12]}), not the configured one "
            f"(fingerprint {fingerprint[:12]}): re-run `ddr-search export`"
        )
