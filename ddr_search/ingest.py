"""Ingest: validate a whole input, then stream it in batches through embed_and_index, with progress.

Nothing is written until every line has passed validation, so a bad file leaves the store as it was.
Each batch is one idempotent upsert: a crash keeps the batches already written, and running the same
ingest again completes it with no duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ddr_search.batching import batched
from ddr_search.data.documents import FileCheck, document_from_record, read_documents
from ddr_search.errors import BackendError, DDRSearchError, InputError
from ddr_search.indexing import IndexCounts
from ddr_search.names import check_name
from ddr_search.types import Backend, Document, Encoder

T = TypeVar("T")


@dataclass
class IngestReport:
    """What an ingest did: documents now stored, of which how many were encoded and written, stored
    already (unchanged: not encoded again) or replaced an id stored with other content; skipped lines."""

    source: str
    domain: str | None
    indexed: int
    skipped: list[InputError] = field(default_factory=list)
    written: int = 0
    unchanged: int = 0
    replaced: int = 0

    def summary(self) -> str:
        """One line, as the CLI prints it."""
        detail = f"{self.written} encoded and written, {self.unchanged} unchanged (stored already)"
        if self.replaced:
            detail += f", {self.replaced} replaced documents stored under the same id"
        noun = "document" if self.indexed == 1 else "documents"
        return f"indexed {self.indexed} {noun} from {self.source} (domain: {self.domain or 'none'}; {detail})"


class IngestInterrupted(DDRSearchError):
    """Ctrl-C during an ingest: says how much is stored and how to resume (nothing is lost or half-written)."""


def check_domain_moves(
    documents: Iterable[Document], backend: Backend, *, allow: bool, source: str, chunk: int = 500
) -> None:
    """Ids are global across domains: refuse, before anything is written, an ingest that would move a stored
    document to another domain (two corpora with numeric ids would silently overwrite each other),
    unless `allow` says the move is meant."""
    if allow:
        return
    moves: list[str] = []
    total = 0
    for batch in batched(documents, chunk):
        stored = backend.get([d.id for d in batch])
        for d in batch:
            if d.id in stored and stored[d.id].domain != d.domain:
                total += 1
                if len(moves) < 5:
                    moves.append(f"id {d.id!r} ({stored[d.id].domain or 'no domain'} -> {d.domain or 'no domain'})")
    if total:
        more = f" and {total - len(moves)} more" if total > len(moves) else ""
        raise InputError(
            f"{total} documents are stored already under another domain and would move: {', '.join(moves)}{more}. "
            "Ids are global across domains: give these documents other ids, or pass --allow-domain-change "
            "(allow_domain_change=True) to move them",
            path=source,
        )


def _index(
    documents: Callable[[], Iterable[Document]],
    total: int,
    *,
    encoder: Encoder,
    backend: Backend,
    batch_size: int,
    progress: bool,
    desc: str,
    counts: IndexCounts,
) -> int:
    from tqdm.auto import tqdm

    from ddr_search.indexing import count_pending, embed_and_index
    from ddr_search.model.precision import COMPILE_AFTER, announce_passages

    if total >= COMPILE_AFTER:  # only a large ingest compiles the torch passage encoder at once (model/compiled.py)
        stored_check = tqdm(
            documents(), total=total, unit="doc", desc="checking what is stored", disable=not progress, leave=False
        )
        announce_passages(count_pending(stored_check, encoder.version, backend))  # a re-run: what is left
    done = 0
    try:
        with tqdm(total=total, unit="doc", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
            for batch in batched(documents(), batch_size):
                done += embed_and_index(batch, encoder, backend, batch_size=batch_size, counts=counts)
                bar.update(len(batch))
    except KeyboardInterrupt:
        raise IngestInterrupted(
            f"interrupted: {done} of {total} documents are stored (every finished batch is committed). "
            "Run the same ingest again to finish: documents stored already are not encoded again"
        ) from None
    try:
        backend.refresh()  # searchable now (the embedded store builds its caches here, not on the first query)
    except BackendError as e:
        raise BackendError(f"{done} documents are stored, but {e}") from e
    return done


def index_checked(
    check: FileCheck,
    *,
    encoder: Encoder,
    backend: Backend,
    domain: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
    allow_domain_change: bool = False,
) -> IngestReport:
    """The passes over a file `check_file` accepted: refuse unintended domain moves, then stream, embed, write.

    Split from validation so callers can validate before loading a model or opening a store.
    """

    def documents() -> Iterator[Document]:
        return read_documents(check.path, domain=domain, skip_lines=check.skipped_lines)

    check_domain_moves(documents(), backend, allow=allow_domain_change, source=str(check.path))
    counts = IndexCounts()
    indexed = _index(
        documents,
        check.documents,
        encoder=encoder,
        backend=backend,
        batch_size=batch_size,
        progress=progress,
        desc=f"ingest {check.path.name}",
        counts=counts,
    )
    return IngestReport(
        source=str(check.path),
        domain=domain,
        indexed=indexed,
        skipped=check.skipped,
        written=counts.written,
        unchanged=counts.unchanged,
        replaced=counts.replaced,
    )


def check_documents(items: Iterable[Document | Mapping[str, object]], domain: str | None = None) -> list[Document]:
    """Validate in-memory documents (Document objects or JSONL-shaped dicts); errors name the item number."""
    if domain is not None:
        check_name(domain)
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
    allow_domain_change: bool = False,
) -> IngestReport:
    """Embed and write documents that `check_documents` returned."""
    check_domain_moves(documents, backend, allow=allow_domain_change, source="<documents>")
    counts = IndexCounts()
    indexed = _index(
        lambda: documents,
        len(documents),
        encoder=encoder,
        backend=backend,
        batch_size=batch_size,
        progress=progress,
        desc="ingest",
        counts=counts,
    )
    return IngestReport(
        source="<documents>",
        domain=domain,
        indexed=indexed,
        written=counts.written,
        unchanged=counts.unchanged,
        replaced=counts.replaced,
    )


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
