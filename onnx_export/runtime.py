"""OrtEncoder: the `Encoder` protocol on exported ONNX graphs (onnxruntime + tokenizers, no torch).

Which graph answers what (the same routing rules as TorchEncoder):
- passages, and queries routed `none`: the passage encoder (general module only);
- prior routing to a domain served by one module: that module's query encoder (baked in, no router);
- top-k / soft routing, or a domain served by several modules: router -> weights -> weighted encoder.
Sessions open on first use, each after its file's checksum is verified.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ddr_search.batching import by_length
from ddr_search.encoding import auto_encode, check_domain, named_weights
from ddr_search.errors import ExportError
from ddr_search.fusion import FusionConfig
from ddr_search.routing import PROFILES_DIR, DomainProfile, read_profiles
from ddr_search.types import QueryEncoding, RoutingMode, Vectors, resolve_routing
from onnx_export.artifacts import (
    ATTENTION_MASK,
    INPUT_IDS,
    MODULE_WEIGHTS,
    TOKENIZER_DIR,
    ExportManifest,
    GraphRecord,
    Precision,
    Role,
    check_store,
    read_export_manifest,
    verify_file,
)
from onnx_export.routing import routing_weights

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer


def _load_tokenizers(directory: Path, manifest: ExportManifest, verify: bool) -> dict[int, Tokenizer]:
    """One tokenizer per max length: a shared one re-configured per call would race between threads."""
    from tokenizers import Tokenizer

    path = directory / TOKENIZER_DIR / "tokenizer.json"
    if verify and "tokenizer.json" in manifest.tokenizer_files:
        verify_file(directory, f"{TOKENIZER_DIR}/tokenizer.json", manifest.tokenizer_files["tokenizer.json"])
    if not path.exists():
        raise ExportError(f"{path} is missing: the export has no fast tokenizer; re-run `ddr-search export`")
    tokenizers = {}
    for max_length in {manifest.max_passage_length, manifest.max_query_length}:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(pad_id=manifest.pad_token_id, pad_token=manifest.pad_token)
        tokenizers[max_length] = tokenizer
    return tokenizers


def _copy_with_truncation(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.enable_truncation(max_length=max_length)
    return copy


class OrtEncoder:
    """Implements the `Encoder` protocol on an export folder (CPU execution provider)."""

    def __init__(
        self,
        directory: Path,
        manifest: ExportManifest,
        *,
        precision: Precision,
        query_threads: int = 1,
        passage_threads: int = 0,
        top_k: int = 2,
        default_routing: RoutingMode = RoutingMode.AUTO,
        verify: bool = True,
    ) -> None:
        if precision not in manifest.precisions:
            raise ExportError(
                f"{directory} has no {precision} encoders (exported: {[str(p) for p in manifest.precisions]})"
            )
        self.directory = Path(directory)
        self.manifest = manifest
        self.precision = precision
        self.query_threads = query_threads
        self.passage_threads = passage_threads
        self.top_k = top_k
        self.default_routing = default_routing
        self.verify = verify
        self.max_passage_length = manifest.max_passage_length
        self.max_query_length = manifest.max_query_length
        self._tokenizers = _load_tokenizers(self.directory, manifest, verify)
        self._sessions: dict[tuple[str, int], onnxruntime.InferenceSession] = {}
        self._profiles: list[DomainProfile] | None = None
        self._fusion = {name: FusionConfig.from_record(record) for name, record in manifest.fusion.items()}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        store: Path | None = None,
        check_store_version: bool = True,
        precision: Precision | str = "auto",
        **options: object,
    ) -> OrtEncoder:
        """Open an export. With `check_store_version`, an export made for another store is refused.

        precision "auto" picks int8 when it was exported, else fp32. Raises ExportError.
        """
        directory = Path(directory)
        manifest = read_export_manifest(directory)
        if check_store_version:
            check_store(manifest, directory, store)
        if precision == "auto":
            precision = Precision.INT8 if Precision.INT8 in manifest.precisions else Precision.FP32
        return cls(directory, manifest, precision=Precision(precision), **options)

    # -- Encoder protocol -------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self.manifest.dimension

    @property
    def version(self) -> str:
        """The torch encoder's version: an ORT and a torch encoder of one store embed interchangeably."""
        return self.manifest.encoder_version

    def domains(self) -> Mapping[str, Sequence[str]]:
        return {d: list(ms) for d, ms in self.manifest.domains.items()}

    def fusion_configs(self) -> Mapping[str, FusionConfig]:
        return self._fusion

    @property
    def module_names(self) -> list[str]:
        return list(self.manifest.module_names)

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors:
        """Backbone + general module only: one set of passage vectors serves every domain."""
        session = self._session(self.manifest.graph(Role.PASSAGE, self.precision), self.passage_threads)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for index, chunk in by_length(texts, batch_size):
            ids, mask = self.tokenize(chunk, self.max_passage_length)
            out[index] = session.run(None, {INPUT_IDS: ids, ATTENTION_MASK: mask})[0]
        return out

    def resolve_routing(self, domain: str | None, routing: RoutingMode | None) -> RoutingMode:
        has_modules = bool(self.manifest.module_names)
        return resolve_routing(domain, routing, has_modules=has_modules, default=self.default_routing)

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        domain: str | None = None,
        routing: RoutingMode | None = None,
        batch_size: int = 64,
    ) -> QueryEncoding:
        """Router -> module weights -> query vectors. An unknown domain raises UnknownModuleError."""
        domains = self.manifest.domains
        check_domain(domain, domains)
        mode = self.resolve_routing(domain, routing)
        names = self.manifest.module_names
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        weights_out: list[dict[str, float]] = [{} for _ in texts]
        single = domains[domain][0] if mode is RoutingMode.PRIOR and domain and len(domains[domain]) == 1 else None
        for index, chunk in by_length(texts, batch_size):
            ids, mask = self.tokenize(chunk, self.max_query_length)
            feeds = {INPUT_IDS: ids, ATTENTION_MASK: mask}
            if mode is RoutingMode.NONE:
                session = self._session(self.manifest.graph(Role.PASSAGE, self.precision), self.query_threads)
                out[index] = session.run(None, feeds)[0]
                continue
            if mode is RoutingMode.AUTO:
                out[index], routed = self._auto(ids, mask)
                for row, position in enumerate(index):
                    weights_out[position] = routed[row]
                continue
            if single is not None:
                record = self.manifest.graph(Role.QUERY_DOMAIN, self.precision, single)
                out[index] = self._session(record, self.query_threads).run(None, feeds)[0]
                weights = np.ones((len(chunk), 1), dtype=np.float32)
                row_names = [single]
            else:
                weights = self.route(ids, mask, mode, domain)
                weighted = self._session(self.manifest.graph(Role.QUERY_WEIGHTED, self.precision), self.query_threads)
                out[index] = weighted.run(None, {**feeds, MODULE_WEIGHTS: weights})[0]
                row_names = names
            for row, position in enumerate(index):
                weights_out[position] = named_weights(row_names, weights[row].tolist())
        return QueryEncoding(vectors=out, weights=weights_out)

    # -- parts ------------------------------------------------------------------------------------
    def _auto(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[dict[str, float]]]:
        """TorchEncoder._auto on the exported graphs: general first, then each accepted module's own rows."""
        general = self._session(self.manifest.graph(Role.PASSAGE, self.precision), self.query_threads)

        def encode_rows(rows: list[int], module: str) -> np.ndarray:
            record = self.manifest.graph(Role.QUERY_DOMAIN, self.precision, module)
            return self._session(record, self.query_threads).run(
                None, {INPUT_IDS: ids[rows], ATTENTION_MASK: mask[rows]}
            )[0]

        vectors = general.run(None, {INPUT_IDS: ids, ATTENTION_MASK: mask})[0]
        return auto_encode(vectors, self.profiles(), encode_rows)

    def profiles(self) -> list[DomainProfile]:
        """Auto routing profiles in router-row order, read (and checksummed) on first use."""
        with self._lock:
            if self._profiles is None:
                _, profiles = read_profiles(self.directory / PROFILES_DIR, self.manifest.profiles)
                self._profiles = [profiles[name] for name in self.manifest.module_names if name in profiles]
            return self._profiles

    def route(self, ids: np.ndarray, mask: np.ndarray, mode: RoutingMode, domain: str | None) -> np.ndarray:
        """Module weights [B, N] from the router graph (fp32 in every export)."""
        router = self._session(self.manifest.graph(Role.ROUTER), self.query_threads)
        logits = router.run(None, {INPUT_IDS: ids, ATTENTION_MASK: mask})[0]
        allowed = None
        if mode is RoutingMode.PRIOR:
            names = self.manifest.module_names
            allowed = [[names.index(m) for m in self.manifest.domains[domain]]] * len(ids) if domain else None
        return routing_weights(logits, mode, top_k=self.top_k, allowed=allowed)

    def tokenize(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask [B, T], padded to the longest text: the same ids as the HF tokenizer."""
        tokenizer = self._tokenizers.get(max_length)
        if tokenizer is None:  # an unusual length (tests, tools): a private copy, never a shared one
            tokenizer = _copy_with_truncation(next(iter(self._tokenizers.values())), max_length)
        encodings = tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def _session(self, record: GraphRecord, threads: int) -> onnxruntime.InferenceSession:
        key = (record.file, threads)
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = self._open(record, threads)
            return self._sessions[key]

    def _open(self, record: GraphRecord, threads: int) -> onnxruntime.InferenceSession:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime loads (ddr_search sets it too)
        import onnxruntime

        path = self.directory / record.file
        if self.verify:
            verify_file(self.directory, record.file, record.sha256)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0 = onnxruntime's default (one per physical core)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
