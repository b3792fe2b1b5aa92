"""BM25Index against rank_bm25 on the same tokens (as bm25s's own tests do), on a real SciFact slice."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rank_bm25

from ddr_search.errors import InputError
from ddr_search.retrieval.bm25 import BM25Index, tokenize

N_DOCS, N_QUERIES = 400, 40


@pytest.fixture(scope="module")
def scifact_slice(shared_data: Path) -> tuple[list[str], list[str], list[str]]:
    root = shared_data / "beir" / "scifact"
    ids, texts = [], []
    with (root / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in itertools.islice(f, N_DOCS):
            doc = json.loads(line)
            ids.append(doc["_id"])
            texts.append(f"{doc['title']} {doc['text']}")
    with (root / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in itertools.islice(f, N_QUERIES)]
    return ids, texts, queries


class LuceneBM25(rank_bm25.BM25):
    """Reference Lucene BM25 on rank_bm25's own counting: idf log(1 + (N-n+.5)/(n+.5)), no (k1+1)."""

    def __init__(self, corpus: list[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        super().__init__(corpus)

    def _calc_idf(self, nd: dict[str, int]) -> None:
        self.idf = {w: math.log(1 + (self.corpus_size - n + 0.5) / (n + 0.5)) for w, n in nd.items()}

    def get_scores(self, query: list[str]) -> np.ndarray:
        scores = np.zeros(self.corpus_size)
        norm = self.k1 * (1 - self.b + self.b * np.array(self.doc_len) / self.avgdl)
        for q in query:
            tf = np.array([doc.get(q, 0) for doc in self.doc_freqs], dtype=float)
            scores += self.idf.get(q, 0.0) * tf / (tf + norm)
        return scores


def test_tokens_match_bm25s(scifact_slice) -> None:
    import bm25s
    import Stemmer

    _, texts, queries = scifact_slice
    sample = texts[:50] + queries
    expected = bm25s.tokenize(
        sample, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False, show_progress=False
    )
    assert tokenize(sample) == [list(t) for t in expected]


def test_atire_robertson_equals_rank_bm25_okapi(scifact_slice) -> None:
    ids, texts, queries = scifact_slice
    index = BM25Index.build(ids, texts, method="atire", idf_method="robertson")
    reference = rank_bm25.BM25Okapi(tokenize(texts), k1=1.5, b=0.75, epsilon=0.0)
    for q, tokens in zip(queries, tokenize(queries), strict=True):
        np.testing.assert_allclose(index.scores(q), reference.get_scores(tokens), rtol=1e-4, atol=1e-5)


def test_lucene_scores_and_top_k_match_reference(scifact_slice) -> None:
    ids, texts, queries = scifact_slice
    index = BM25Index.build(ids, texts)
    reference = LuceneBM25(tokenize(texts))
    for q, tokens in zip(queries, tokenize(queries), strict=True):
        expected = reference.get_scores(tokens)
        np.testing.assert_allclose(index.scores(q), expected, rtol=1e-4, atol=1e-5)
        hits = index.search(q, 10)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        top = np.sort(expected[expected > 0])[::-1][:10]
        np.testing.assert_allclose([s for _, s in hits], top, rtol=1e-4)


def test_mask_filters_rows(scifact_slice) -> None:
    ids, texts, queries = scifact_slice
    index = BM25Index.build(ids, texts)
    mask = np.zeros(len(ids), dtype=bool)
    mask[::3] = True
    allowed = {ids[i] for i in np.flatnonzero(mask)}
    for q in queries[:10]:
        hits = index.search(q, 20, mask=mask)
        assert hits and {d for d, _ in hits} <= allowed
        unmasked = [h for h in index.search(q, len(ids)) if h[0] in allowed][:20]
        assert [d for d, _ in hits] == [d for d, _ in unmasked]
    with pytest.raises(InputError, match="mask"):
        index.search(queries[0], 5, mask=mask[:-1])


def test_save_load_round_trip(scifact_slice, tmp_path: Path) -> None:
    ids, texts, queries = scifact_slice
    index = BM25Index.build(ids, texts)
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert len(loaded) == len(index) == N_DOCS
    assert [loaded.search(q, 10) for q in queries[:10]] == [index.search(q, 10) for q in queries[:10]]


def test_edges(tmp_path: Path) -> None:
    empty = BM25Index.build([], [])
    assert len(empty) == 0 and empty.search("anything", 5) == []
    empty.save(tmp_path / "e")
    assert len(BM25Index.load(tmp_path / "e")) == 0
    index = BM25Index.build(["a", "b"], ["vitamin D and fractures", "self-attention in transformers"])
    assert index.search("the of and", 5) == []  # stopwords only
    assert index.search("unknownword", 5) == []
    assert [d for d, _ in index.search("Transformers attention", 5)] == ["b"]
    with pytest.raises(InputError, match="repeat"):
        BM25Index.build(["a", "a"], ["x", "y"])
    with pytest.raises(InputError, match="not a BM25 index"):
        BM25Index.load(tmp_path / "missing")
