"""Training pairs from a BEIR folder's train/dev qrels (never its test split)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from ddr_search.errors import InputError
from ddr_search.training.corpus import read_corpus
from ddr_search.training.pairs import Pair, Passage


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (header `query-id corpus-id score`) -> {query: {doc: grade}}."""
    path = Path(path)
    if not path.exists():
        raise InputError("qrels file not found", path=path)
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with path.open(encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (number == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise InputError(f"expected 3 tab-separated columns, got {len(row)}", path=path, line=number)
            try:
                qrels[row[0]][row[1]] = int(float(row[2]))
            except ValueError:
                raise InputError("score must be a number", path=path, line=number, field="score") from None
    return dict(qrels)


def read_queries(path: Path) -> dict[str, str]:
    path = Path(path)
    out = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                out[str(record["_id"])] = str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InputError(f"bad query line ({e})", path=path, line=number) from None
    return out


def pairs_from_beir(
    folder: Path, split: str = "train", *, domain: str | None = None, min_grade: int = 1, allow_test: bool = False
) -> list[Pair]:
    """One pair per query: every doc with grade >= min_grade is a positive (with its corpus id).

    The test split is refused unless `allow_test` (evaluation only): no choice may see test queries.
    """
    folder = Path(folder)
    if split == "test" and not allow_test:
        raise InputError("refusing to make training pairs from the test split; use train or dev", path=folder)
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = read_queries(folder / "queries.jsonl")
    docs = {d.id: d for d in read_corpus(folder / "corpus.jsonl")}
    pairs = []
    for qid in sorted(qrels):
        if qid not in queries:
            raise InputError(f"query {qid!r} is not in queries.jsonl", path=folder / "qrels" / f"{split}.tsv")
        positives = []
        for doc_id, grade in sorted(qrels[qid].items()):
            if grade < min_grade:
                continue
            if doc_id not in docs:
                raise InputError(f"document {doc_id!r} is not in corpus.jsonl", path=folder / "qrels" / f"{split}.tsv")
            doc = docs[doc_id]
            positives.append(Passage(doc.text, doc.id, doc.title))
        if positives:
            pairs.append(Pair(queries[qid], tuple(positives), (), domain, qid))
    return pairs
