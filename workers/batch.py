"""One batch, start to finish: check each document, embed, upsert, and say which documents failed and why.

The same function runs inside the Celery task and in-process; it is safe to repeat (upserts by id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ddr_search.encoding import EncoderWrapper
from ddr_search.errors import BackendError, DocumentsRejected, InputError
from ddr_search.types import Backend, Document, Encoder, Vectors
from workers.payload import from_payload, payload_key

# Worth retrying the whole batch: the store or the network, not the documents.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (BackendError, ConnectionError, TimeoutError)


@dataclass
class BatchOutcome:
    indexed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # document id -> reason

    @classmethod
    def all_failed(cls, items: Sequence[object], reason: str) -> BatchOutcome:
        return cls(0, {payload_key(item, i): reason for i, item in enumerate(items)})


class _CheckedEncoder(EncoderWrapper):
    """Passes through to an encoder, refusing vectors that would poison dense search (NaN, inf, zero)."""

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors:
        vectors = self.inner.encode_passages(texts, batch_size=batch_size)
        if vectors.shape != (len(texts), self.dimension):
            raise ValueError(f"encoder returned shape {vectors.shape}, expected ({len(texts)}, {self.dimension})")
        bad = ~np.isfinite(vectors).all(axis=1) | ~(np.abs(vectors).sum(axis=1) > 0)
        if bad.any():
            raise ValueError(f"encoder produced a non-finite or zero vector for {int(bad.sum())} passage(s)")
        return vectors


def index_batch(items: Sequence[object], encoder: Encoder, backend: Backend, *, batch_size: int = 32) -> BatchOutcome:
    """Index every valid document of a batch; report the others with their reason.

    Raises only TRANSIENT_ERRORS (for the caller to retry the whole batch, which is idempotent).
    """
    from ddr_search.indexing import embed_and_index  # loads torch: producers importing this module do not

    outcome = BatchOutcome()
    documents: list[Document] = []
    for position, item in enumerate(items):
        try:
            documents.append(from_payload(item))
        except InputError as e:
            outcome.failures[payload_key(item, position)] = f"invalid document: {e}"
    checked = _CheckedEncoder(encoder)
    try:
        outcome.indexed = embed_and_index(documents, checked, backend, batch_size=batch_size)
    except DocumentsRejected as e:  # permanent, per document: the rest of the batch is stored
        outcome.indexed = e.attempted - len(e.failures)
        outcome.failures.update({doc_id: f"rejected by the backend: {why}" for doc_id, why in e.failures.items()})
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        # Something in the batch breaks the encoder: find which documents, index all the others.
        outcome.indexed = 0
        for document in documents:
            try:
                outcome.indexed += embed_and_index([document], checked, backend)
            except TRANSIENT_ERRORS:
                raise
            except Exception as e:
                outcome.failures[document.id] = f"encoding failed: {type(e).__name__}: {e}"
    return outcome
