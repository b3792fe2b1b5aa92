"""Documents as small JSON task arguments, and the per-document checks a worker applies to them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from ddr_search.errors import InputError
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
    """Rebuild a Document, refusing what cannot be indexed (the ingest reader checks files the same way).

    Raises InputError naming the field: messages can come from any producer, not only our reader.
    """
    if not isinstance(item, Mapping):
        raise InputError(f"a document must be a JSON object, got {type(item).__name__}")
    doc_id = item.get("id")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise InputError("missing or empty (a non-empty string is required)", field="id")
    text = item.get("text")
    if not isinstance(text, str):
        raise InputError(f"must be a string, got {type(text).__name__}", field="text")
    title = item.get("title") or ""
    if not isinstance(title, str):
        raise InputError(f"must be a string, got {type(title).__name__}", field="title")
    if not text.strip() and not title.strip():
        raise InputError("is empty (and there is no title): nothing to index", field="text")
    domain = item.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise InputError(f"must be a string, got {type(domain).__name__}", field="domain")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InputError(f"must be an object, got {type(metadata).__name__}", field="metadata")
    return Document(
        id=doc_id, text=text, title=title, domain=domain, metadata=cast(dict[str, JSONValue], dict(metadata))
    )
