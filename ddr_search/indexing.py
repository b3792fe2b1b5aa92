"""Embed one batch of documents with the passage encoder and write it to a backend (idempotent by id)."""

from __future__ import annotations

from collections.abc import Sequence

from ddr_search.types import Backend, Document, Encoder, IndexedDocument, passage_text


def embed_and_index(documents: Sequence[Document], encoder: Encoder, backend: Backend, *, batch_size: int = 32) -> int:
    """The unit of work of every ingest path (in-process and Celery): safe to repeat for the same batch."""
    if not documents:
        return 0
    vectors = encoder.encode_passages([passage_text(d.title, d.text) for d in documents], batch_size=batch_size)
    version = encoder.version
    backend.upsert(
        [
            IndexedDocument(document=d, vector=v, encoder_version=version)
            for d, v in zip(documents, vectors, strict=True)
        ]
    )
    return len(documents)
