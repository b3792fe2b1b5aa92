"""Embed one batch of documents with the passage encoder and write it to a backend (idempotent by id)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ddr_search.batching import batched
from ddr_search.types import Backend, Document, Encoder, IndexedDocument, passage_text


@dataclass
class IndexCounts:
    """What the batches of one ingest did: documents encoded and written, and those stored already."""

    written: int = 0
    unchanged: int = 0  # stored with the same content and encoder version: not encoded again
    replaced: int = 0  # an id stored with other content (or another encoder version), now overwritten


def embed_and_index(
    documents: Sequence[Document],
    encoder: Encoder,
    backend: Backend,
    *,
    batch_size: int = 32,
    counts: IndexCounts | None = None,
) -> int:
    """The unit of work of every ingest path (in-process and Celery): safe to repeat for the same batch.

    A document stored already with the same content and the same encoder version is neither encoded nor
    written again, so a re-run after a crash encodes only what is missing. Returns how many documents of
    the batch are now stored.
    """
    if not documents:
        return 0
    version = encoder.version
    todo, stored_versions = pending(documents, version, backend)
    if todo:
        vectors = encoder.encode_passages([passage_text(d.title, d.text) for d in todo], batch_size=batch_size)
        backend.upsert(
            [IndexedDocument(document=d, vector=v, encoder_version=version) for d, v in zip(todo, vectors, strict=True)]
        )
    if counts is not None:
        counts.written += len(todo)
        counts.unchanged += len(documents) - len(todo)
        counts.replaced += sum(1 for d in todo if d.id in stored_versions)
    return len(documents)


def pending(documents: Sequence[Document], version: str, backend: Backend) -> tuple[list[Document], Mapping[str, str]]:
    """The documents of a batch that must be encoded (not stored, or stored with other content or under
    another encoder version), and the encoder versions stored for the batch's ids."""
    stored_versions = backend.versions([d.id for d in documents])
    same_version = [d.id for d in documents if stored_versions.get(d.id) == version]
    stored = backend.get(same_version) if same_version else {}
    return [d for d in documents if stored.get(d.id) != d], stored_versions


def count_pending(documents: Iterable[Document], version: str, backend: Backend, *, chunk: int = 500) -> int:
    """How many of `documents` an ingest will encode: what a re-run after a crash has left, not its whole input."""
    return sum(len(pending(batch, version, backend)[0]) for batch in batched(documents, chunk))
