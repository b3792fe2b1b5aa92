"""Hard-negative mining (BM25 or dense) that never returns a positive of the same query."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ddr_search.training.corpus import CorpusDoc
from ddr_search.training.pairs import Pair, Passage
from ddr_search.types import Vectors


def _doc_text(doc: CorpusDoc) -> str:
    return f"{doc.title} {doc.text}".strip()


def _is_positive(pair: Pair, doc: CorpusDoc) -> bool:
    for positive in pair.positives:
        if positive.id is not None and positive.id == doc.id:
            return True
        if positive.id is None and positive.text.strip() in (doc.text.strip(), _doc_text(doc)):
            return True
    return False


def _attach(pairs: Sequence[Pair], docs: Sequence[CorpusDoc], ranked: np.ndarray, count: int, skip: int) -> list[Pair]:
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


def mine_bm25(pairs: Sequence[Pair], docs: Sequence[CorpusDoc], *, count: int = 5, skip: int = 0) -> list[Pair]:
    """Top BM25 documents that are not positives. `skip` drops the very top ranks (likely unlabelled positives)."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=1.5, b=0.75)
    retriever.index(bm25s.tokenize([_doc_text(d) for d in docs], stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    depth = min(len(docs), count + skip + max(len(p.positives) for p in pairs) + 5)
    tokens = bm25s.tokenize([p.query for p in pairs], stopwords="en", stemmer=stemmer, show_progress=False)
    ranked, _ = retriever.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
    return _attach(pairs, docs, np.asarray(ranked), count, skip)


def mine_dense(
    pairs: Sequence[Pair],
    docs: Sequence[CorpusDoc],
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
