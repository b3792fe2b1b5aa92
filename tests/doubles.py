"""The test doubles, in one place. Each stands in for a part only where the real one would make a test
too slow for its size, and each says so in its name or docstring; tests of ranking and routing use the
real encoder, and every backend test runs on the real store or a real engine node.

- `HashingEncoder`: the encoder as vectors seeded from a hash of each text (no model), with an optional
  delay per batch so a SIGKILL can land mid-ingest; `CountingEncoder` also counts what it encodes.
- `HashEncoder`: a hashed bag of words, L2-normalised: deterministic vectors whose inner products follow
  shared words, so dense and hybrid rankings mean something on a small corpus.
- `CORPUS` / `indexed`: ten short documents with domains and metadata, and their indexed form.

Fault doubles stay beside the tests that use them: tests/connectors/opensearch/faults.py (503s and 429s over
a real node), StubCluster in tests/connectors/opensearch/test_failures.py (a slow or refusing cluster).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ddr_search.types import Document, IndexedDocument, QueryEncoding, RoutingMode


def hash_vector(text: str, dimension: int = 32) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


class HashingEncoder:
    """TEST DOUBLE for ddr_search.types.Encoder: hash-seeded vectors, no model."""

    def __init__(self, dimension: int = 32, delay_s: float = 0.0) -> None:
        self._dimension = dimension
        self.delay_s = delay_s

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def version(self) -> str:
        return "hashing-test-double"

    def domains(self) -> Mapping[str, Sequence[str]]:
        return {}

    def fusion_configs(self) -> Mapping[str, object]:
        return {}

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.stack([hash_vector(t, self._dimension) for t in texts]) if texts else np.zeros((0, self._dimension))

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        domain: str | None = None,
        routing: RoutingMode | None = None,
        batch_size: int = 64,
    ) -> QueryEncoding:
        return QueryEncoding(vectors=self.encode_passages(texts), weights=[{} for _ in texts])


class CountingEncoder(HashingEncoder):
    """TEST DOUBLE: the hashing encoder, counting the passages it encodes; optionally Ctrl-C on a call."""

    def __init__(self, interrupt_on_call: int | None = None) -> None:
        super().__init__()
        self.passages = 0
        self.calls = 0
        self.interrupt_on_call = interrupt_on_call

    def encode_passages(self, texts, *, batch_size=32):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        self.passages += len(texts)
        return super().encode_passages(texts, batch_size=batch_size)


class HashEncoder:
    """TEST DOUBLE for the torch/ONNX encoder: hashed bag of words, L2-normalised (fast, deterministic).

    Different `version`s hash differently, so a reindex really changes every vector.
    """

    def __init__(
        self,
        version: str = "hash-a",
        dimension: int = 16,
        fail_after: int | None = None,
        fusion: Mapping[str, object] | None = None,
    ) -> None:
        self._version = version
        self._dimension = dimension
        self.fail_after = fail_after  # raise on the call after this many passages (a crash mid-reindex)
        self.encoded = 0
        self.fusion = dict(fusion or {})  # module -> FusionConfig; a query given a domain routes to it

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def version(self) -> str:
        return self._version

    def domains(self) -> Mapping[str, Sequence[str]]:
        return {name: [name] for name in self.fusion if name != "general"}

    def fusion_configs(self) -> Mapping[str, object]:
        return self.fusion

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
        routed = {domain: 1.0} if domain is not None else {}
        return QueryEncoding(np.stack([self._vec(t) for t in texts]), [dict(routed) for _ in texts])


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
