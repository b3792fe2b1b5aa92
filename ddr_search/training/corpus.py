"""Reading a raw corpus (JSONL documents) for training: ids, titles and texts, validated line by line."""

from __future__ import annotations

from pathlib import Path

from ddr_search.data.documents import document_from_record
from ddr_search.data.jsonl import read_jsonl
from ddr_search.errors import InputError
from ddr_search.types import Document


def read_corpus(path: Path) -> list[Document]:
    """JSONL with `id` (or BEIR's `_id`), optional `title`, and `text`; errors name file, line and field."""
    path = Path(path)
    if not path.exists():
        raise InputError("corpus file not found", path=path)
    docs: list[Document] = []
    seen: set[str] = set()
    for number, record in read_jsonl(path):
        document = document_from_record(record, path=path, line=number)  # the one document validator
        if document.id in seen:
            raise InputError(f"duplicate id {document.id!r}", path=path, line=number, field="id")
        seen.add(document.id)
        docs.append(document)
    if not docs:
        raise InputError("corpus is empty", path=path)
    return docs
