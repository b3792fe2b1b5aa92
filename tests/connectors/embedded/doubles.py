"""A test double for the encoder, used only where the real one is too slow for the test's size.

The real MiniLM encoder embeds ~40 short documents/s on this shared 2-core machine, so the
thousands-of-documents crash and concurrency tests would take minutes. What they test is the
store (transactions, idempotence, caches), which sees only vectors: `HashingEncoder` makes
deterministic unit vectors from a hash of each text, with an optional delay per batch so a
SIGKILL can land in the middle of an ingest. Tests of ranking and routing use the real encoder.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ddr_search.types import QueryEncoding, RoutingMode


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
