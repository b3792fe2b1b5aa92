"""Documents as small JSON task arguments, and the per-document checks a worker applies to them."""

from __future__ import annotations

from collections.abc import Mapping

from ddr_search.data.documents import document_from_record
from ddr_search.types import Document, JSONValue

Payload = dict[str, JSONValue]


def to_payload(document: Document) -> Payload:
    """Plain JSON (no pickle): a batch message stays small and readable by any worker version."""
    return {
        "id": document.id,
        "title": document.title,
        "text": document.text,
        "domain": document.domain,
        "metadata": dict(document.metadata),
    }


def payload_key(item: object, position: int) -> str:
    """The id a failure is reported under; a document without a usable id gets its batch position."""
    if isinstance(item, Mapping):
        doc_id = item.get("id")
        if isinstance(doc_id, str) and doc_id:
            return doc_id
    return f"<item {position}>"


def from_payload(item: object) -> Document:
    """Rebuild a Document with the ingest reader's own validator: messages can come from any producer, so
    a worker refuses exactly what a file ingest refuses. Raises InputError naming the field."""
    return document_from_record(item)
