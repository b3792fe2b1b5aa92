"""TorchEncoder: batched passage/query encoding with routing, the reference for every other encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ddr_search.errors import UnknownModuleError
from ddr_search.model.backbone import load_backbone
from ddr_search.model.ddr import DDRModel
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
        default_routing: RoutingMode = RoutingMode.TOP_K,
        show_progress: bool = False,
    ) -> None:
        self.model = model.eval()
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
        general = self.model.general
        digest = None
        if general is not None:
            digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in general.parameters())).hexdigest()
        return encoder_version(self.model.backbone_info.fingerprint, digest)

    def domains(self) -> Mapping[str, Sequence[str]]:
        return dict(self.model.domain_map)

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    def _batches(self, texts: Sequence[str], batch_size: int, desc: str) -> list[tuple[np.ndarray, list[str]]]:
        # Sorting by length keeps padding (and so wasted attention) small; order is restored after.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        return [
            (order[i : i + batch_size], [texts[j] for j in order[i : i + batch_size]])
            for i in range(0, len(texts), batch_size)
        ]

    @torch.inference_mode()
    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors:
        """Backbone + general module only: one set of passage vectors serves every domain."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        batches = self._batches(texts, batch_size, "passages")
        for index, chunk in tqdm(batches, desc="encoding passages", unit="batch", disable=not self.show_progress):
            batch = self.tokenize(chunk, self.max_passage_length)
            out[index] = self.model(batch["input_ids"], batch["attention_mask"]).numpy()
        return out

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
        if domain is not None and domain not in self.model.domain_map:
            known = ", ".join(sorted(self.model.domain_map)) or "none"
            raise UnknownModuleError(f"no module is mapped to domain {domain!r} (domains with modules: {known})")
        mode = self.resolve_routing(domain, routing)
        names = self.model.module_names
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        weights_out: list[dict[str, float]] = [{} for _ in texts]
        for index, chunk in self._batches(texts, batch_size, "queries"):
            batch = self.tokenize(chunk, self.max_query_length)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            weights = None
            if mode is not RoutingMode.NONE:
                weights = self.model.route(ids, mask, mode, top_k=self.top_k, domains=[domain] * len(chunk))
            out[index] = self.model(ids, mask, weights).numpy()
            if weights is not None:
                for row, position in enumerate(index):
                    weights_out[position] = {
                        n: float(w) for n, w in zip(names, weights[row].tolist(), strict=True) if w > 0
                    }
        return QueryEncoding(vectors=out, weights=weights_out)
