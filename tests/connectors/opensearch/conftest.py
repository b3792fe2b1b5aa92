"""Targets for the OpenSearch tests: osmem-server (real, in-memory), the k-NN double over it, or a real
cluster (opt-in, marker `cluster`, when DDR_OPENSEARCH_URL / DDR_OPENSEARCH__URL is set).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from opensearchpy.exceptions import TransportError

from connectors.opensearch import OpenSearchBackend
from connectors.opensearch.client import build_client
from ddr_search.settings import OpenSearchSettings, Settings
from ddr_search.types import Document, IndexedDocument, QueryEncoding, RoutingMode
from tests.connectors.opensearch.knn_double import DoubleState, KnnDoubleConnection

CLUSTER_URL = os.environ.get("DDR_OPENSEARCH_URL") or os.environ.get("DDR_OPENSEARCH__URL")


class HashEncoder:
    """TEST DOUBLE for the torch/ONNX encoder: hashed bag of words, L2-normalised (fast, deterministic).

    Different `version`s hash differently, so a reindex really changes every vector.
    """

    def __init__(self, version: str = "hash-a", dimension: int = 16, fail_after: int | None = None) -> None:
        self._version = version
        self._dimension = dimension
        self.fail_after = fail_after  # raise on the call after this many passages (a crash mid-reindex)
        self.encoded = 0

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def version(self) -> str:
        return self._version

    def domains(self) -> Mapping[str, Sequence[str]]:
        return {}

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self._dimension, dtype=np.float32)
        for tok in re.findall(r"\w+", text.lower()):
            h = hashlib.sha1(f"{self._version}:{tok}".encode()).digest()
            v[h[0] % self._dimension] += 1.0 if h[1] % 2 else -1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if self.fail_after is not None and self.encoded + len(texts) > self.fail_after:
            raise RuntimeError("injected encoder crash")
        self.encoded += len(texts)
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self._dimension), np.float32)

    def encode_queries(self, texts: Sequence[str], *, domain: str | None = None,
                       routing: RoutingMode | None = None, batch_size: int = 64) -> QueryEncoding:
        return QueryEncoding(np.stack([self._vec(t) for t in texts]), [{"general": 1.0} for _ in texts])


CORPUS = [
    Document("d1", "The statute of limitations for fraud begins when the fraud is discovered.", "Fraud claims",
             "legal", {"year": 2019, "court": "appeals"}),
    Document("d2", "A contract requires offer, acceptance and consideration.", "Contract law", "legal",
             {"year": 2020}),
    Document("d3", "Negligence claims need duty, breach, causation and damages.", "Torts", "legal", {"year": 2021}),
    Document("d4", "Vitamin D supplementation did not reduce fractures in older adults.", "Vitamin D", "medical",
             {"year": 2019}),
    Document("d5", "Alveolar macrophages clear inhaled particles from the lower respiratory tract.", "Lungs",
             "medical", {"year": 2018}),
    Document("d6", "Statins lower cholesterol and the risk of heart attacks.", "Statins", "medical", {"year": 2022}),
    Document("d7", "Transformers use self-attention to relate every token to every other token.", "Attention",
             None, {"year": 2017}),
    Document("d8", "Fraud detection models flag unusual card transactions.", "Fraud detection", None,
             {"year": 2023}),
    Document("d9", "The court held the limitations period was tolled by the fraud.", "Tolling", "legal",
             {"year": 2018}),
    Document("d10", "Randomised trials of vitamin supplements for bone health.", "Supplements", "medical",
             {"year": 2020}),
]


def indexed(encoder: HashEncoder, docs: Sequence[Document] = CORPUS) -> list[IndexedDocument]:
    vectors = encoder.encode_passages([f"{d.title} {d.text}" for d in docs])
    return [IndexedDocument(d, v, encoder.version) for d, v in zip(docs, vectors, strict=True)]


@dataclass
class Target:
    """Where a test runs: `osmem`, `double` (osmem + the k-NN double) or `cluster` (a real one)."""

    name: str
    settings: OpenSearchSettings
    double: DoubleState | None = None
    created: list[str] = field(default_factory=list)

    def overrides(self) -> dict[str, Any]:
        if self.double is None:
            return {}
        return {"connection_class": KnnDoubleConnection, "double": self.double}

    def client(self) -> Any:
        return build_client(self.settings, **self.overrides())

    def backend(self, dimension: int = 16, **kwargs: Any) -> OpenSearchBackend:
        kwargs.setdefault("initial_backoff_s", 0.01)
        return OpenSearchBackend(self.client(), alias=self.settings.index, url=self.settings.url,
                                 dimension=dimension, **kwargs)


def _make_target(request: pytest.FixtureRequest, name: str) -> Iterator[Target]:
    alias = f"ddr-test-{uuid.uuid4().hex[:8]}"
    if name == "cluster":
        if not CLUSTER_URL:
            pytest.skip("set DDR_OPENSEARCH_URL to run against a real OpenSearch cluster")
        base = Settings().opensearch
        target = Target(name, base.model_copy(update={"url": CLUSTER_URL.rstrip("/"), "index": alias}))
        yield target
        client = target.client()
        for index in client.indices.get(index=f"{alias}-v*", params={"ignore": 404}):
            if index.startswith(f"{alias}-v"):
                client.indices.delete(index=index)
        client.indices.delete_index_template(name=f"{alias}-template", ignore=[404])
        for pipeline in ("min_max-0.5-0.5", "min_max-0.3-0.7", "rrf-60"):
            with contextlib.suppress(TransportError):  # absent, or a cluster without search pipelines
                client.transport.perform_request("DELETE", f"/_search/pipeline/{alias}-{pipeline}")
        return
    clone = request.getfixturevalue("osmem_clone")
    yield Target(name, OpenSearchSettings(url=clone.url, index=alias),
                 double=DoubleState() if name == "double" else None)


@pytest.fixture(params=["osmem", pytest.param("cluster", marks=pytest.mark.cluster)])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Everything osmem-server implements for real: setup, mappings, bulk, BM25, aliases, reindex."""
    yield from _make_target(request, request.param)


@pytest.fixture(params=["double", pytest.param("cluster", marks=pytest.mark.cluster)])
def knn_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """kNN, hybrid and pipelines: the documented-scoring double over osmem, or a real cluster."""
    yield from _make_target(request, request.param)


@pytest.fixture()
def double_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The double alone (fault injection, recorded bodies): no real-cluster variant."""
    yield from _make_target(request, "double")
