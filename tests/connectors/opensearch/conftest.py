"""Targets for the OpenSearch tests: the real test nodes `scripts/services` starts (OpenSearch 2.19.1 with
k-NN + neural-search, 3.5.0 with k-NN; lucene engine, no replicas), or, when DDR_OPENSEARCH_URL /
DDR_OPENSEARCH__URL is set, that cluster alone (with the DDR_OPENSEARCH__* settings of the environment).
Every test gets an alias of its own and deletes every index, template and pipeline it made.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from opensearchpy.exceptions import TransportError

from connectors.opensearch import OpenSearchBackend
from connectors.opensearch.client import build_client
from ddr_search.settings import OpenSearchSettings, Settings
from ddr_search.types import Document, IndexedDocument, QueryEncoding, RoutingMode
from tests.conftest import engine_url
from tests.connectors.opensearch.faults import FaultConnection, FaultState

CLUSTER_URL = os.environ.get("DDR_OPENSEARCH_URL") or os.environ.get("DDR_OPENSEARCH__URL")
NODES = {"os2.19": "opensearch-2.19.1", "os3.5": "opensearch-3.5.0"}  # test id -> tests/engines catalog name


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

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        domain: str | None = None,
        routing: RoutingMode | None = None,
        batch_size: int = 64,
    ) -> QueryEncoding:
        return QueryEncoding(np.stack([self._vec(t) for t in texts]), [{"general": 1.0} for _ in texts])


CORPUS = [
    Document(
        "d1",
        "The statute of limitations for fraud begins when the fraud is discovered.",
        "Fraud claims",
        "legal",
        {"year": 2019, "court": "appeals"},
    ),
    Document("d2", "A contract requires offer, acceptance and consideration.", "Contract law", "legal", {"year": 2020}),
    Document("d3", "Negligence claims need duty, breach, causation and damages.", "Torts", "legal", {"year": 2021}),
    Document(
        "d4",
        "Vitamin D supplementation did not reduce fractures in older adults.",
        "Vitamin D",
        "medical",
        {"year": 2019},
    ),
    Document(
        "d5",
        "Alveolar macrophages clear inhaled particles from the lower respiratory tract.",
        "Lungs",
        "medical",
        {"year": 2018},
    ),
    Document("d6", "Statins lower cholesterol and the risk of heart attacks.", "Statins", "medical", {"year": 2022}),
    Document(
        "d7",
        "Transformers use self-attention to relate every token to every other token.",
        "Attention",
        None,
        {"year": 2017},
    ),
    Document("d8", "Fraud detection models flag unusual card transactions.", "Fraud detection", None, {"year": 2023}),
    Document(
        "d9", "The court held the limitations period was tolled by the fraud.", "Tolling", "legal", {"year": 2018}
    ),
    Document(
        "d10", "Randomised trials of vitamin supplements for bone health.", "Supplements", "medical", {"year": 2020}
    ),
]


def indexed(encoder: HashEncoder, docs: Sequence[Document] = CORPUS) -> list[IndexedDocument]:
    vectors = encoder.encode_passages([f"{d.title} {d.text}" for d in docs])
    return [IndexedDocument(d, v, encoder.version) for d, v in zip(docs, vectors, strict=True)]


@dataclass
class Target:
    """Where a test runs: a test node (`os2.19`, `os3.5`) or `cluster` (DDR_OPENSEARCH_URL)."""

    name: str
    settings: OpenSearchSettings
    faults: FaultState | None = None

    def overrides(self) -> dict[str, Any]:
        if self.faults is None:
            return {}
        return {"connection_class": FaultConnection, "faults": self.faults}

    def client(self) -> Any:
        return build_client(self.settings, **self.overrides())

    def backend(self, dimension: int = 16, **kwargs: Any) -> OpenSearchBackend:
        kwargs.setdefault("initial_backoff_s", 0.01)
        kwargs.setdefault("ef_search", self.settings.hnsw_ef_search)
        return OpenSearchBackend(
            self.client(), alias=self.settings.index, url=self.settings.url, dimension=dimension, **kwargs
        )


def target_settings(name: str, alias: str) -> OpenSearchSettings:
    if name == "cluster":
        assert CLUSTER_URL
        return Settings().opensearch.model_copy(update={"url": CLUSTER_URL.rstrip("/"), "index": alias})
    return OpenSearchSettings(url=engine_url(NODES[name]), index=alias, knn_engine="lucene", replicas=0)


def clean_up(settings: OpenSearchSettings) -> None:
    """Delete what a test made under its alias: version indices, the template, its search pipelines."""
    client = build_client(settings)
    alias = settings.index
    for index in client.indices.get(index=f"{alias}-v*", params={"ignore": 404}):
        if index.startswith(f"{alias}-v"):
            client.indices.delete(index=index)
    client.indices.delete_index_template(name=f"{alias}-template", ignore=[404])
    with contextlib.suppress(TransportError):  # a cluster without search pipelines
        for name in client.transport.perform_request("GET", "/_search/pipeline", params={"ignore": 404}):
            if name.startswith(f"{alias}-"):
                client.transport.perform_request("DELETE", f"/_search/pipeline/{name}")
    client.close()


def _make_target(name: str, faults: FaultState | None = None) -> Iterator[Target]:
    target = Target(name, target_settings(name, f"ddr-test-{uuid.uuid4().hex[:8]}"), faults)
    try:
        yield target
    finally:
        clean_up(target.settings)


TARGETS = ["cluster"] if CLUSTER_URL else list(NODES)


@pytest.fixture(params=[pytest.param(t, marks=pytest.mark.cluster) for t in TARGETS])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Every OpenSearch the tier covers: both test nodes, or the cluster DDR_OPENSEARCH_URL names."""
    yield from _make_target(request.param)


@pytest.fixture(params=[pytest.param(TARGETS[0], marks=pytest.mark.cluster)])
def native_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The target with neural-search (native hybrid + pipelines): the 2.19.1 node, or the given cluster."""
    yield from _make_target(request.param)


@pytest.fixture(params=[pytest.param(TARGETS[0], marks=pytest.mark.cluster)])
def faulty_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A real node behind the fault-injecting connection (tests/connectors/opensearch/faults.py)."""
    yield from _make_target(request.param, FaultState())
