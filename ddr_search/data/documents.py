"""Document JSONL: strict validation with file/line/field errors, then a constant-memory stream.

One document per line: {"id", "title", "text", "metadata"}; BEIR's "_id" is accepted for "id".
Ingest reads a file twice: `check_file` validates every line before anything is written (so a bad
file leaves the store unchanged), then `read_documents` streams it for embedding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ddr_search.data.jsonl import parse_line
from ddr_search.errors import InputError
from ddr_search.names import check_name
from ddr_search.types import Document, JSONValue


def document_from_record(
    record: object,
    *,
    domain: str | None = None,
    path: str | Path | None = None,
    line: int | None = None,
) -> Document:
    """Validate one parsed record; `domain` (the ingest's --domain) overrides a record's own "domain"."""

    def fail(message: str, name: str | None = None) -> InputError:
        return InputError(message, path=path, line=line, field=name)

    if not isinstance(record, Mapping):
        raise fail(f"expected a JSON object, got {type(record).__name__}")
    key = "id" if "id" in record else "_id" if "_id" in record else None
    if key is None:
        raise fail("missing: every document needs an 'id' (or BEIR '_id')", "id")
    raw_id = record[key]
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    if not isinstance(raw_id, str) or not raw_id.strip():
        raise fail(f"must be a non-empty string, got {raw_id!r}", key)
    if "text" not in record:
        raise fail("missing: every document needs a 'text'", "text")
    text = record["text"]
    if not isinstance(text, str):
        raise fail(f"must be a string, got {type(text).__name__}", "text")
    title = record.get("title") or ""
    if not isinstance(title, str):
        raise fail(f"must be a string, got {type(title).__name__}", "title")
    if not text.strip() and not title.strip():
        raise fail("is empty (and there is no title): nothing to index", "text")
    metadata = record.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):  # [] and 0 too: only an object (or nothing) is metadata
        raise fail(f"must be a JSON object, got {type(metadata).__name__}", "metadata")
    for name, value in (
        ("id", raw_id),
        ("title", title),
        ("text", text),
        ("metadata", metadata),
        ("domain", record.get("domain")),
    ):
        if (where := _unencodable(value)) is not None:
            raise fail(
                f"holds {where}, which is not valid Unicode (a lone surrogate escape such as "
                "\\udc80 in the JSON): fix the text or drop the escape",
                name,
            )
    own = record.get("domain")
    if domain is None and own is not None:
        try:
            domain = check_name(own)
        except InputError as e:
            raise fail(str(e), "domain") from None
    return Document(id=raw_id, text=text, title=title, domain=domain, metadata=_json_dict(metadata))


def _unencodable(value: object) -> str | None:
    """Where a parsed JSON value holds a string that cannot be UTF-8 encoded, or None when it all can.

    Valid JSON may escape a lone surrogate ("\\udc80"); json.loads accepts it, then SQLite, the tokenizer
    and every cluster client fail on it, halfway through an ingest."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"the character {value[e.start]!r} at position {e.start}"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _unencodable(key) or _unencodable(item)
            if found is not None:
                return f"{found} (key {key!r})" if isinstance(key, str) and _unencodable(key) is None else found
    if isinstance(value, list):
        for item in value:
            if (found := _unencodable(item)) is not None:
                return found
    return None


def _json_dict(metadata: Mapping[str, object]) -> dict[str, JSONValue]:
    return dict(metadata)  # type: ignore[arg-type]  # json.loads produced it: already JSON values


def _parse(raw: bytes, path: Path, line: int, domain: str | None) -> Document | None:
    """One line -> a Document, None for a blank line; InputError for anything else."""
    record = parse_line(raw, path, line)
    return None if record is None else document_from_record(record, domain=domain, path=path, line=line)


@dataclass
class FileCheck:
    """The validation pass's result: how many documents will be ingested and which lines are skipped."""

    path: Path
    documents: int
    skipped: list[InputError] = field(default_factory=list)

    @property
    def skipped_lines(self) -> frozenset[int]:
        return frozenset(e.line for e in self.skipped if e.line is not None)


def check_file(path: str | Path, *, domain: str | None = None, skip_invalid: bool = False) -> FileCheck:
    """Validate every line; raise the first InputError, or with `skip_invalid` collect them all.

    Memory: one line at a time plus the set of ids seen (to catch duplicates within the file).
    """
    path = Path(path)
    if domain is not None:
        check_name(domain)
    if not path.is_file():
        raise InputError("no such file", path=path)
    seen: dict[str, int] = {}
    check = FileCheck(path=path, documents=0)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                document = _parse(raw, path, number, domain)
                if document is None:
                    continue
                if document.id in seen:
                    raise InputError(
                        f"duplicate id {document.id!r} (first on line {seen[document.id]})",
                        path=path,
                        line=number,
                        field="id",
                    )
            except InputError as e:
                if not skip_invalid:
                    raise
                check.skipped.append(e)
                continue
            seen[document.id] = number
            check.documents += 1
    if check.documents == 0:
        reason = f"no valid documents ({len(check.skipped)} lines skipped)" if check.skipped else "no documents"
        raise InputError(f"{reason}: expected one JSON object per line", path=path)
    return check


def read_documents(
    path: str | Path, *, domain: str | None = None, skip_lines: frozenset[int] = frozenset()
) -> Iterator[Document]:
    """Stream the documents of a file that `check_file` accepted, leaving out `skip_lines`."""
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number in skip_lines:
                continue
            document = _parse(raw, path, number, domain)
            if document is not None:
                yield document
