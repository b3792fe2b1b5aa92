"""The embedded store's approximate graph (faiss HNSW), on a store made large by a low threshold: results
against exact search, exact scores, incremental generations (reuse, tombstones, rebuild) and filters."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.embedded import EmbeddedBackend
from connectors.embedded.ann import AnnConfig
from ddr_search.filters import parse_filters
from ddr_search.types import Document, IndexedDocument

DIM = 32
SMALL = AnnConfig(min_rows=1_000)  # the default graph settings


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 40 centres: structured like embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    vectors = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def documents(vectors: np.ndarray, start: int = 0) -> list[IndexedDocument]:
    return [
        IndexedDocument(
            Document(
                f"d{start + i}",
                f"text {start + i}",
                "",
                "rare" if (start + i) % 50 == 0 else "common",
                {"n": start + i},
            ),
            v,
            "test",
        )
        for i, v in enumerate(vectors)
    ]


@pytest.fixture
def pair(tmp_path):
    """The same 3,000 documents in a store with the graph and in one searched exactly."""
    approximate = EmbeddedBackend(tmp_path / "ann", DIM, ann=SMALL)
    exact = EmbeddedBackend(tmp_path / "exact", DIM, ann=AnnConfig(enabled=False))
    docs = documents(clustered(3_000, 0))
    for backend in (approximate, exact):
        backend.upsert(docs)
        backend.refresh()
    yield approximate, exact
    approximate.close()
    exact.close()


def recall(approximate: EmbeddedBackend, exact: EmbeddedBackend, queries: np.ndarray, **kwargs) -> float:
    found = 0
    for query in queries:
        got = approximate.dense_search(query, 10, **kwargs)
        want = exact.dense_search(query, 10, **kwargs)
        found += len({i for i, _ in got} & {i for i, _ in want})
        scores = dict(want)
        for doc_id, score in got:  # rescored exactly: a shared hit has the exact score
            if doc_id in scores:
                assert score == pytest.approx(scores[doc_id], abs=1e-6)
    return found / (10 * len(queries))


def test_a_large_store_searches_its_graph_with_exact_scores_and_exact_search_recall(pair) -> None:
    approximate, exact = pair
    assert approximate.snapshot().ann is not None and exact.snapshot().ann is None
    assert recall(approximate, exact, clustered(100, 1)) >= 0.99


def test_filters_keep_recall_through_the_selector_and_the_exact_scan(pair) -> None:
    approximate, exact = pair
    queries = clustered(50, 2)
    assert recall(approximate, exact, queries, domain="common") >= 0.99  # 98% of rows: the graph, filtered
    assert recall(approximate, exact, queries, domain="rare") == 1.0  # 60 rows: scanned exactly
    filters = parse_filters({"n": {"gte": 100}})  # 97% of rows
    assert recall(approximate, exact, queries, filters=filters) >= 0.99
    for doc_id, _ in approximate.dense_search(queries[0], 10, domain="rare"):
        assert int(doc_id[1:]) % 50 == 0


def test_a_new_generation_extends_the_graph_and_never_returns_what_is_gone(pair) -> None:
    approximate, _ = pair
    before = approximate.snapshot().ann
    changed = clustered(100, 3)
    approximate.upsert(documents(changed, start=0))  # d0..d99 get new vectors
    approximate.upsert(documents(clustered(200, 4), start=3_000))  # d3000..d3199 are new
    approximate.delete([f"d{i}" for i in range(100, 200)])
    approximate.refresh()
    after = approximate.snapshot().ann
    assert after is not None and after.graph.ntotal == before.graph.ntotal + 300  # extended, not rebuilt
    assert after.tombstones == 200  # d0..d99's old vectors and d100..d199
    gone = clustered(3_000, 0)[100:200]
    for vector in gone[:20]:
        assert all(int(i[1:]) not in range(100, 200) for i, _ in approximate.dense_search(vector, 10))
    for i in range(10):
        best_id, best_score = approximate.dense_search(changed[i], 1)[0]
        assert best_id == f"d{i}" and best_score == pytest.approx(1.0, abs=1e-5)


def test_too_many_tombstones_rebuild_the_graph(pair) -> None:
    approximate, _ = pair
    approximate.delete([f"d{i}" for i in range(1_200)])  # 40% of the graph
    approximate.refresh()
    after = approximate.snapshot().ann
    assert after is not None and after.graph.ntotal == 1_800 and after.tombstones == 0


def test_a_store_below_the_threshold_has_no_graph(tmp_path) -> None:
    backend = EmbeddedBackend(tmp_path / "small", DIM, ann=AnnConfig(min_rows=10_000))
    backend.upsert(documents(clustered(500, 0)))
    backend.refresh()
    assert backend.snapshot().ann is None
    backend.close()
