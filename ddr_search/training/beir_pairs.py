"""Training pairs from a BEIR folder's train/dev qrels (never its test split)."""

from __future__ import annotations

from pathlib import Path

from ddr_search.data.beir import read_corpus, read_qrels, read_queries
from ddr_search.errors import InputError
from ddr_search.training.pairs import Pair, Passage


def pairs_from_beir(
    folder: Path, split: str = "train", *, domain: str | None = None, min_grade: int = 1, allow_test: bool = False
) -> list[Pair]:
    """One pair per query: every doc with grade >= min_grade is a positive (with its corpus id).

    The test split is refused unless `allow_test` (evaluation only): no choice may see test queries.
    """
    folder = Path(folder)
    if split == "test" and not allow_test:
        raise InputError("refusing to make training pairs from the test split; use train or dev", path=folder)
    corpus = read_corpus(folder / "corpus.jsonl")
    queries = read_queries(folder / "queries.jsonl")
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv", queries=queries, corpus=corpus)  # ids checked, by line
    pairs = []
    for qid in sorted(qrels):
        positives = tuple(
            Passage(corpus[doc_id]["text"], doc_id, corpus[doc_id]["title"])
            for doc_id, grade in sorted(qrels[qid].items())
            if grade >= min_grade and doc_id in corpus  # a judged document absent from the corpus has no text
        )
        if positives:
            pairs.append(Pair(queries[qid], positives, (), domain, qid))
    return pairs


def pairs_as_beir(pairs: list[Pair]) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """A pairs file as a BEIR collection (corpus = every positive and negative, qrels = the positives):
    how answer-selection sets such as WikiQA are evaluated as retrieval over their candidate pool."""
    corpus: dict[str, dict[str, str]] = {}
    ids: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for n, pair in enumerate(pairs):
        qid = pair.query_id or f"q{n}"
        queries[qid] = pair.query
        for passage in (*pair.positives, *pair.negatives):
            key = passage.key()
            if key not in ids:
                ids[key] = passage.id or f"p{len(ids)}"
                corpus[ids[key]] = {"title": passage.title, "text": passage.text}
        qrels[qid] = {ids[p.key()]: 1 for p in pair.positives}
    return corpus, queries, qrels
