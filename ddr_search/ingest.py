"""Ingest: validate a whole input, then stream it in batches through embed_and_index, with progress.

Nothing is written until every line has passed validation, so a bad file leaves the store as it was.
Each batch is one idempotent upsert: a crash keeps the batches already written, and running the same
ingest again completes it with no duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TypeVar

from ddr_search.data.documents import FileCheck, check_domain, check_file, document_from_record, read_documents
from ddr_search.errors import InputError
from ddr_search.types import Backend, Document, Encoder

T = TypeVar("T")


@dataclass
class IngestReport:
    """What an ingest did: documents written, and each skipped line with its reason."""

    source: str
    domain: str | None
    indexed: int
    skipped: list[InputError] = field(default_factory=list)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise InputError(f"batch size must be >= 1, got {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _index(
    documents: Iterable[Document],
    total: int,
    *,
    encoder: Encoder,
    backend: Backend,
    batch_size: int,
    progress: bool,
    desc: str,
) -> int:
    from tqdm.auto import tqdm

    from ddr_search.indexing import embed_and_index  # loads torch: only when there is work to do

    done = 0
    with tqdm(total=total, unit="doc", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for batch in batched(documents, batch_size):
            done += embed_and_index(batch, encoder, backend, batch_size=batch_size)
            bar.update(len(batch))
    refresh = getattr(backend, "refresh", None)  # build search caches now, not on the first query
    if callable(refresh):
        refresh()
    return done


def ingest_file(
    path: str | Path,
    *,
    encoder: Encoder,
    backend: Backend,
    domain: str | None = None,
    batch_size: int = 64,
    skip_invalid: bool = False,
    progress: bool = False,
) -> IngestReport:
    """Validate `path` (JSONL), then embed and write it. Raises InputError naming file, line and field."""
    check = check_file(path, domain=domain, skip_invalid=skip_invalid)
    return index_checked(
        check, encoder=encoder, backend=backend, domain=domain, batch_size=batch_size, progress=progress
    )


def index_checked(
    check: FileCheck,
    *,
    encoder: Encoder,
    backend: Backend,
    domain: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> IngestReport:
    """The second pass over a file `check_file` accepted: stream, embed, write.

    Split from validation so callers can validate before loading a model or opening a store.
    """
    documents = read_documents(check.path, domain=domain, skip_lines=check.skipped_lines)
    indexed = _index(
        documents,
        check.documents,
        encoder=encoder,
        backend=backend,
        batch_size=batch_size,
        progress=progress,
        desc=f"ingest {check.path.name}",
    )
    return IngestReport(source=str(check.path), domain=domain, indexed=indexed, skipped=check.skipped)


def check_documents(items: Iterable[Document | Mapping[str, object]], domain: str | None = None) -> list[Document]:
    """Validate in-memory documents (Document objects or JSONL-shaped dicts); errors name the item number."""
    if domain is not None:
        check_domain(domain)
    documents: list[Document] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        document = _as_document(item, domain, number)
        if document.id in seen:
            raise InputError(
                f"duplicate id {document.id!r} (first at item {seen[document.id]})",
                path="<documents>",
                line=number,
                field="id",
            )
        seen[document.id] = number
        documents.append(document)
    if not documents:
        raise InputError("no documents to ingest", path="<documents>")
    return documents


def ingest_documents(
    documents: Sequence[Document],
    *,
    encoder: Encoder,
    backend: Backend,
    domain: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> IngestReport:
    """Embed and write documents that `check_documents` returned."""
    indexed = _index(
        documents,
        len(documents),
        encoder=encoder,
        backend=backend,
        batch_size=batch_size,
        progress=progress,
        desc="ingest",
    )
    return IngestReport(source="<documents>", domain=domain, indexed=indexed)


def _as_document(item: Document | Mapping[str, object], domain: str | None, number: int) -> Document:
    if isinstance(item, Document):
        record: Mapping[str, object] = {
            "id": item.id,
            "title": item.title,
            "text": item.text,
            "metadata": dict(item.metadata),
            "domain": item.domain,
        }
    else:
        record = item
    return document_from_record(record, domain=domain, path="<documents>", line=number)


def describe_skipped(skipped: Sequence[InputError]) -> list[str]:
    """One line per skipped input line, as the CLI prints them."""
    return [f"skipped {e}" for e in skipped]
