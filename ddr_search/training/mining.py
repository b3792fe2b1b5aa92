"""Hard-negative mining (BM25 or dense) that never returns a positive of the same query."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ddr_search.training.pairs import Pair, Passage
from ddr_search.types import Document, Vectors, passage_text


def _doc_text(doc: Document) -> str:
    return passage_text(doc.title, doc.text)


def _is_positive(pair: Pair, doc: Document) -> bool:
    for positive in pair.positives:
        if positive.id is not None and positive.id == doc.id:
            return True
        if positive.id is None and positive.text.strip() in (doc.text.strip(), _doc_text(doc)):
            return True
    return False


def _attach(
    pairs: Sequence[Pair], docs: Sequence[Document], ranked: Sequence[Sequence[int]], count: int, skip: int
) -> list[Pair]:
    out = []
    for pair, row in zip(pairs, ranked, strict=True):
        negatives: list[Passage] = list(pair.negatives)
        seen = {n.key() for n in negatives}
        taken = 0
        for rank, index in enumerate(row):
            if taken >= count:
                break
            doc = docs[int(index)]
            if rank < skip or _is_positive(pair, doc):
                continue
            passage = Passage(doc.text, doc.id, doc.title)
            if passage.key() in seen:
                continue
            seen.add(passage.key())
            negatives.append(passage)
            taken += 1
        out.append(Pair(pair.query, pair.positives, tuple(negatives), pair.domain, pair.query_id))
    return out


def mine_bm25(pairs: Sequence[Pair], docs: Sequence[Document], *, count: int = 5, skip: int = 0) -> list[Pair]:
    """Top BM25 documents that are not positives. `skip` drops the very top ranks (likely unlabelled positives).

    Uses the product's BM25 (ddr_search.retrieval.bm25: bm25s, Lucene, same tokens), so the negatives
    are the documents search would actually confuse with the positives.
    """
    from ddr_search.retrieval.bm25 import BM25Index

    index = BM25Index.build([d.id for d in docs], [_doc_text(d) for d in docs])
    row = {d.id: i for i, d in enumerate(docs)}
    depth = min(len(docs), count + skip + max(len(p.positives) for p in pairs) + 5)
    ranked = [[row[doc_id] for doc_id, _ in index.search(p.query, depth)] for p in pairs]
    return _attach(pairs, docs, ranked, count, skip)


def mine_dense(
    pairs: Sequence[Pair],
    docs: Sequence[Document],
    query_vectors: Vectors,
    doc_vectors: Vectors,
    *,
    count: int = 5,
    skip: int = 0,
) -> list[Pair]:
    """Nearest documents by inner product (the frozen/general encoder) that are not positives."""
    depth = min(len(docs), count + skip + max(len(p.positives) for p in pairs) + 5)
    scores = np.asarray(query_vectors) @ np.asarray(doc_vectors).T
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return _attach(pairs, docs, ranked, count, skip)
