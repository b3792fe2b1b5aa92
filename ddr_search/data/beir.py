"""Read a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) into BEIR's plain dicts.

Every malformed input (unreadable file, non-UTF-8 bytes, bad JSON, a missing or mistyped field, a
repeated id, a qrels row with the wrong column count, a non-integer grade, a judgement naming an
unknown query or document) raises InputError with the file, the 1-based line and the field, so a
user can open the file at the right place. Shapes are BEIR's (and sentence-transformers'):
corpus ``{id: {"title", "text"}}``, queries ``{id: text}``, qrels ``{query_id: {doc_id: grade}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from ddr_search.data.jsonl import read_jsonl, read_lines
from ddr_search.errors import InputError

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]

QRELS_COLUMNS = ("query-id", "corpus-id", "score")

log = logging.getLogger(__name__)


class BeirDataset(NamedTuple):
    """One split of a BEIR folder; unpacks like BEIR's loader: ``corpus, queries, qrels = ...``.

    `queries` holds only the queries judged in this split (as BEIR's GenericDataLoader does).
    """

    corpus: Corpus
    queries: Queries
    qrels: Qrels


def _id(value: Mapping[str, object], path: Path, line: int) -> str:
    if "_id" not in value:
        raise InputError("missing (every line needs an id)", path=path, line=line, field="_id")
    raw = value["_id"]
    if isinstance(raw, bool) or not isinstance(raw, str | int) or str(raw) == "":
        raise InputError(f"must be a non-empty string, found {raw!r}", path=path, line=line, field="_id")
    return str(raw)


def _text(value: Mapping[str, object], name: str, path: Path, line: int, *, required: bool) -> str:
    if name not in value or value[name] is None:
        if required:
            raise InputError("missing", path=path, line=line, field=name)
        return ""
    raw = value[name]
    if not isinstance(raw, str):
        raise InputError(f"must be a string, found {type(raw).__name__}", path=path, line=line, field=name)
    return raw


def read_corpus(path: str | Path) -> Corpus:
    """corpus.jsonl: ``{"_id", "title" (optional), "text"}`` per line."""
    path = Path(path)
    corpus: Corpus = {}
    for line, value in read_jsonl(path):
        doc_id = _id(value, path, line)
        if doc_id in corpus:
            raise InputError(f"document id {doc_id!r} appears twice", path=path, line=line, field="_id")
        corpus[doc_id] = {
            "title": _text(value, "title", path, line, required=False),
            "text": _text(value, "text", path, line, required=True),
        }
    return corpus


def read_queries(path: str | Path) -> Queries:
    """queries.jsonl: ``{"_id", "text"}`` per line (extra keys such as "metadata" are ignored)."""
    path = Path(path)
    queries: Queries = {}
    for line, value in read_jsonl(path):
        query_id = _id(value, path, line)
        if query_id in queries:
            raise InputError(f"query id {query_id!r} appears twice", path=path, line=line, field="_id")
        queries[query_id] = _text(value, "text", path, line, required=True)
    return queries


def read_qrels(
    path: str | Path, *, queries: Mapping[str, object] | None = None, corpus: Mapping[str, object] | None = None
) -> Qrels:
    """qrels/<split>.tsv: a header line, then ``query-id<TAB>corpus-id<TAB>score`` rows.

    With `queries` given, every judged query must exist. With `corpus` given, a judgement naming a
    document absent from it is kept (relevant and unretrievable, as BEIR's and trec_eval's evaluators
    count it: the official ArguAna release has 5) and one warning says how many.
    """
    path = Path(path)
    qrels: Qrels = {}
    absent = 0
    first = True
    for line, text in read_lines(path):
        columns = text.split("\t")
        if first:
            first = False
            if len(columns) != 3 or not _is_int(columns[2]):
                continue  # the header (BEIR writes "query-id corpus-id score")
        if len(columns) != 3:
            raise InputError(
                f"expected 3 tab-separated columns ({', '.join(QRELS_COLUMNS)}), found {len(columns)}",
                path=path,
                line=line,
            )
        query_id, doc_id, grade = (c.strip() for c in columns)
        if not query_id:
            raise InputError("empty", path=path, line=line, field="query-id")
        if not doc_id:
            raise InputError("empty", path=path, line=line, field="corpus-id")
        if not _is_int(grade):
            raise InputError(f"must be an integer grade, found {grade!r}", path=path, line=line, field="score")
        if queries is not None and query_id not in queries:
            raise InputError(f"query {query_id!r} is not in queries.jsonl", path=path, line=line, field="query-id")
        if corpus is not None and doc_id not in corpus:
            absent += 1
        qrels.setdefault(query_id, {})[doc_id] = int(grade)
    if not qrels:
        raise InputError("no judgements (expected a header line and query-id/corpus-id/score rows)", path=path)
    if absent:
        log.warning(
            "%s: %d judgement(s) name documents absent from corpus.jsonl; kept as relevant and unretrievable",
            path,
            absent,
        )
    return qrels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Read and cross-check one split of a BEIR folder. Raises InputError naming file, line and field."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder; expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/", path=folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise InputError(f"no qrels for split {split!r} (splits here: {', '.join(splits) or 'none'})", path=qrels_path)
    corpus = read_corpus(folder / "corpus.jsonl")
    queries = read_queries(folder / "queries.jsonl")
    qrels = read_qrels(qrels_path, queries=queries, corpus=corpus)
    return BeirDataset(corpus, {q: queries[q] for q in qrels}, qrels)
