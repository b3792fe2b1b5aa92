"""The training-pairs format (JSONL) and its strict reader/writer.

One JSON object per line:

    {"query": "...",                              required, non-empty string
     "positives": ["text", {"id": "d1", "title": "...", "text": "..."}],   or "positive": one item
     "negatives": [...],                          optional hard negatives, same item shapes
     "domain": "scifact",                         optional slug: which domain module learns it
     "query_id": "q17"}                           optional, kept for provenance / dev splits

A passage is a string or an object with `text` (and optional `id`, `title`). Ids let training
match a passage to a cached corpus embedding; without one the text itself is encoded.
Unknown fields are errors (a typo like "postives" must not silently train on nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ddr_search.data.jsonl import read_jsonl, read_lines
from ddr_search.errors import InputError
from ddr_search.names import check_name

FIELDS = {"query", "positive", "positives", "negatives", "domain", "query_id"}
PASSAGE_FIELDS = {"id", "title", "text"}


@dataclass(frozen=True, slots=True)
class Passage:
    text: str
    id: str | None = None
    title: str = ""

    def key(self) -> str:
        """Identity used to keep positives out of negatives: the id when known, else the text."""
        return f"id:{self.id}" if self.id is not None else f"text:{self.title}\n{self.text}"

    def to_json(self) -> str | dict[str, str]:
        if self.id is None and not self.title:
            return self.text
        out = {"text": self.text}
        if self.id is not None:
            out["id"] = self.id
        if self.title:
            out["title"] = self.title
        return out


@dataclass(frozen=True, slots=True)
class Pair:
    query: str
    positives: tuple[Passage, ...]
    negatives: tuple[Passage, ...] = ()
    domain: str | None = None
    query_id: str | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"query": self.query, "positives": [p.to_json() for p in self.positives]}
        if self.negatives:
            out["negatives"] = [p.to_json() for p in self.negatives]
        if self.domain is not None:
            out["domain"] = self.domain
        if self.query_id is not None:
            out["query_id"] = self.query_id
        return out


def _passage(value: object, path: Path, line: int, where: str) -> Passage:
    if isinstance(value, str):
        if not value.strip():
            raise InputError("empty passage text", path=path, line=line, field=where)
        return Passage(value)
    if not isinstance(value, dict):
        raise InputError("a passage must be a string or an object with 'text'", path=path, line=line, field=where)
    unknown = set(value) - PASSAGE_FIELDS
    if unknown:
        raise InputError(
            f"unknown passage field(s) {sorted(unknown)}; allowed: {sorted(PASSAGE_FIELDS)}",
            path=path,
            line=line,
            field=where,
        )
    text, title, pid = value.get("text"), value.get("title", ""), value.get("id")
    if not isinstance(text, str) or not (text.strip() or (isinstance(title, str) and title.strip())):
        raise InputError("passage 'text' must be a non-empty string", path=path, line=line, field=f"{where}.text")
    if not isinstance(title, str):
        raise InputError("must be a string", path=path, line=line, field=f"{where}.title")
    if pid is not None and (not isinstance(pid, str | int) or str(pid) == ""):
        raise InputError("must be a non-empty string", path=path, line=line, field=f"{where}.id")
    return Passage(text, None if pid is None else str(pid), title)


def _passages(record: dict[str, object], name: str, path: Path, line: int) -> list[Passage]:
    value = record.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError("must be a list", path=path, line=line, field=name)
    return [_passage(item, path, line, f"{name}[{i}]") for i, item in enumerate(value)]


def parse_pair(record: object, path: Path, line: int) -> Pair:
    """Validate one decoded line; every error names the file, line and field."""
    if not isinstance(record, dict):
        raise InputError("each line must be a JSON object", path=path, line=line)
    unknown = set(record) - FIELDS
    if unknown:
        raise InputError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(FIELDS)}", path=path, line=line)
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InputError("must be a non-empty string", path=path, line=line, field="query")
    if "positive" in record and "positives" in record:
        raise InputError("give 'positive' or 'positives', not both", path=path, line=line, field="positive")
    positives = _passages(record, "positives", path, line)
    if "positive" in record:
        positives = [_passage(record["positive"], path, line, "positive")]
    if not positives:
        raise InputError("at least one positive is required", path=path, line=line, field="positives")
    negatives = _passages(record, "negatives", path, line)
    positive_keys = {p.key() for p in positives}
    for i, negative in enumerate(negatives):
        if negative.key() in positive_keys:
            raise InputError("a passage is both positive and negative", path=path, line=line, field=f"negatives[{i}]")
    domain = record.get("domain")
    if domain is not None:
        if not isinstance(domain, str):
            raise InputError("must be a string", path=path, line=line, field="domain")
        try:
            check_name(domain)
        except InputError as e:
            raise InputError(str(e), path=path, line=line, field="domain") from None
    query_id = record.get("query_id")
    if query_id is not None and not isinstance(query_id, str | int):
        raise InputError("must be a string", path=path, line=line, field="query_id")
    return Pair(
        query=query,
        positives=tuple(positives),
        negatives=tuple(negatives),
        domain=domain,
        query_id=None if query_id is None else str(query_id),
    )


def read_pairs(path: Path, *, domain: str | None = None) -> list[Pair]:
    """Read and validate a pairs file; `domain` fills in records that name none."""
    path = Path(path)
    if not path.exists():
        raise InputError("pairs file not found", path=path)
    pairs = []
    for number, record in read_jsonl(path):
        pair = parse_pair(record, path, number)
        if pair.domain is None and domain is not None:
            pair = Pair(pair.query, pair.positives, pair.negatives, domain, pair.query_id)
        pairs.append(pair)
    if not pairs:
        raise InputError("no pairs in file", path=path)
    return pairs


def read_query_texts(path: Path) -> list[str]:
    """Query texts: a JSONL of pairs ("query") or of BEIR queries ("text"), else one query per line. What
    `ddr-search train domain --keep-queries` reads (queries a module should leave alone)."""
    path = Path(path)
    if not path.exists():
        raise InputError("queries file not found", path=path)
    if path.suffix != ".jsonl":
        texts = [text.strip() for _, text in read_lines(path)]
    else:
        texts = []
        for number, record in read_jsonl(path):
            value = record.get("query", record.get("text"))
            if not isinstance(value, str) or not value.strip():
                wanted = 'needs a non-empty "query" (pairs) or "text" (BEIR queries) string'
                raise InputError(wanted, path=path, line=number, field="query")
            texts.append(value)
    if not texts:
        raise InputError("no queries in file", path=path)
    return texts


def write_pairs(path: Path, pairs: Iterable[Pair]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


def split_dev(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A held-out slice for early stopping, split by query so no query is on both sides."""
    import random

    queries = sorted({p.query_id or p.query for p in pairs})
    random.Random(seed).shuffle(queries)
    n_dev = round(len(queries) * fraction) if fraction > 0 else 0
    if fraction > 0 and len(queries) > 1:
        n_dev = max(1, min(n_dev, len(queries) - 1))
    dev_queries = set(queries[:n_dev])
    train = [p for p in pairs if (p.query_id or p.query) not in dev_queries]
    dev = [p for p in pairs if (p.query_id or p.query) in dev_queries]
    return train, dev
