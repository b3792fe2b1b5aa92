"""TorchEncoder: batched passage/query encoding with routing, the reference for every other encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ddr_search.batching import by_length
from ddr_search.encoding import auto_encode, check_domain, named_weights
from ddr_search.fusion import FusionConfig
from ddr_search.model.backbone import load_backbone
from ddr_search.model.compiled import CompiledPassages
from ddr_search.model.ddr import DDRModel
from ddr_search.model.precision import PassageCompile, PassagePrecision, resolve_passage_precision
from ddr_search.model.store import load_store
from ddr_search.types import (
    QueryEncoding,
    RoutingMode,
    Vectors,
    passage_text,  # noqa: F401 (re-exported)
    resolve_routing,
)

DEFAULT_QUERY_LENGTH = 128


def encoder_version(backbone_fingerprint: str, general_digest: str | None) -> str:
    """Passage embeddings depend on the backbone and the general module only."""
    return hashlib.sha256(f"{backbone_fingerprint}:{general_digest or 'none'}".encode()).hexdigest()[:16]


class TorchEncoder:
    """Implements the `Encoder` protocol on a DDRModel (CPU, inference mode)."""

    def __init__(
        self,
        model: DDRModel,
        tokenizer: object,
        *,
        max_passage_length: int = 256,
        max_query_length: int = DEFAULT_QUERY_LENGTH,
        top_k: int = 2,
        default_routing: RoutingMode = RoutingMode.AUTO,
        show_progress: bool = False,
        passage_precision: PassagePrecision | str = PassagePrecision.AUTO,
        passage_compile: PassageCompile | str = PassageCompile.AUTO,
    ) -> None:
        self.model = model.eval()
        self.passage_precision = resolve_passage_precision(passage_precision)
        self.compiled = CompiledPassages(model.encoder, passage_compile)
        self.tokenizer = tokenizer
        self.max_passage_length = max_passage_length
        self.max_query_length = max_query_length
        self.top_k = top_k
        self.default_routing = default_routing
        self.show_progress = show_progress

    @classmethod
    def load(
        cls,
        store: Path | None = None,
        backbone: Path | None = None,
        *,
        prefix_length: int | None = None,
        **options: object,
    ) -> TorchEncoder:
        """The frozen backbone alone when `store` is None, otherwise the store's modules on it."""
        loaded = load_backbone(backbone)
        model = load_store(store, loaded, prefix_length) if store is not None else DDRModel(loaded)
        options.setdefault("max_passage_length", loaded.max_seq_length)
        return cls(model, loaded.tokenizer, **options)

    @property
    def dimension(self) -> int:
        return self.model.backbone_info.hidden_size

    @property
    def version(self) -> str:
        """A general module whose gates are all zero is an exact no-op (prefix.py): its passage vectors are
        the backbone's bit for bit, so it shares the backbone's version and no index needs re-embedding."""
        general = self.model.general
        digest = None
        if general is not None and bool(general.gates.detach().any()):
            digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in general.parameters())).hexdigest()
        return encoder_version(self.model.backbone_info.fingerprint, digest)

    def domains(self) -> Mapping[str, Sequence[str]]:
        return dict(self.model.domain_map)

    def fusion_configs(self) -> Mapping[str, FusionConfig]:
        return dict(self.model.fusion)

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    @torch.inference_mode()
    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors:
        """Backbone + general module only: one set of passage vectors serves every domain.

        In `passage_precision` (model/precision.py: bf16 on CPUs with native bf16), compiled once a process is known to
        encode enough passages to repay it (model/compiled.py); the vectors are fp32 either way."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        batches = by_length(texts, batch_size)
        bf16 = self.passage_precision is PassagePrecision.BF16
        self.compiled.expect(len(texts))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for index, chunk in tqdm(batches, desc="encoding passages", unit="batch", disable=not self.show_progress):
                batch = self.tokenize(chunk, self.max_passage_length)
                out[index] = self._passage_vectors(batch["input_ids"], batch["attention_mask"]).float().numpy()
        return out

    def _passage_vectors(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        backbone = self.compiled.backbone_for(len(ids))
        if backbone is not None:
            try:
                return self.model(ids, mask, skip_noop_general=True, backbone=backbone)
            except Exception as error:  # any compile failure: the eager path gives the same vectors
                self.compiled.failed(error)
        return self.model(ids, mask, skip_noop_general=True)

    def resolve_routing(self, domain: str | None, routing: RoutingMode | None) -> RoutingMode:
        has_modules = bool(self.model.module_names)
        return resolve_routing(domain, routing, has_modules=has_modules, default=self.default_routing)

    @torch.inference_mode()
    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        domain: str | None = None,
        routing: RoutingMode | None = None,
        batch_size: int = 64,
    ) -> QueryEncoding:
        """Router -> module weights -> query vectors. An unknown domain raises UnknownModuleError."""
        check_domain(domain, self.model.domain_map)
        mode = self.resolve_routing(domain, routing)
        names = self.model.module_names
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        weights_out: list[dict[str, float]] = [{} for _ in texts]
        for index, chunk in by_length(texts, batch_size):
            batch = self.tokenize(chunk, self.max_query_length)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            if mode is RoutingMode.AUTO:
                out[index], routed = self._auto(ids, mask)
                for row, position in enumerate(index):
                    weights_out[position] = routed[row]
                continue
            weights = None
            if mode is not RoutingMode.NONE:
                weights = self.model.route(ids, mask, mode, top_k=self.top_k, domains=[domain] * len(chunk))
            out[index] = self.model(ids, mask, weights, skip_noop_general=True).numpy()
            if weights is not None:
                for row, position in enumerate(index):
                    weights_out[position] = named_weights(names, weights[row].tolist())
        return QueryEncoding(vectors=out, weights=weights_out)

    def _auto(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, list[dict[str, float]]]:
        """General module first, then each accepted module on its own rows (ddr_search.encoding)."""
        names = self.model.module_names

        def encode_rows(rows: list[int], module: str) -> np.ndarray:
            weights = torch.zeros(len(rows), len(names))
            weights[:, names.index(module)] = 1.0
            return self.model(ids[rows], mask[rows], weights).numpy()

        profiles = [self.model.profiles[n] for n in names if n in self.model.profiles]
        return auto_encode(self.model(ids, mask, None, skip_noop_general=True).numpy(), profiles, encode_rows)
