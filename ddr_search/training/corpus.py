"""Reading a raw corpus (JSONL documents) for training: ids, titles and texts, validated line by line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ddr_search.data.beir import read_jsonl
from ddr_search.errors import InputError


@dataclass(frozen=True, slots=True)
class CorpusDoc:
    id: str
    title: str
    text: str


def read_corpus(path: Path) -> list[CorpusDoc]:
    """JSONL with `id` (or BEIR's `_id`), optional `title`, and `text`; errors name file, line and field."""
    path = Path(path)
    if not path.exists():
        raise InputError("corpus file not found", path=path)
    docs: list[CorpusDoc] = []
    seen: set[str] = set()
    for number, record in read_jsonl(path):
        doc_id = record.get("id", record.get("_id"))
        if not isinstance(doc_id, str | int) or str(doc_id) == "":
            raise InputError("missing or empty document id", path=path, line=number, field="id")
        doc_id = str(doc_id)
        if doc_id in seen:
            raise InputError(f"duplicate document id {doc_id!r}", path=path, line=number, field="id")
        text = record.get("text")
        if not isinstance(text, str):
            raise InputError("must be a string", path=path, line=number, field="text")
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise InputError("must be a string", path=path, line=number, field="title")
        if not (title.strip() or text.strip()):
            raise InputError("document has neither title nor text", path=path, line=number, field="text")
        seen.add(doc_id)
        docs.append(CorpusDoc(doc_id, title, text))
    if not docs:
        raise InputError("corpus is empty", path=path)
    return docs
