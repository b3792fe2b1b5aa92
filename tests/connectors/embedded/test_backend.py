"""EmbeddedBackend: upsert/delete by id, exact search, domain filters, persistence, cache reloads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from connectors.embedded import EmbeddedBackend
from connectors.embedded.snapshot import cache_root
from ddr_search.errors import BackendError
from ddr_search.types import Backend, Document, IndexedDocument

WORDS = ["court", "fraud", "heart", "lung", "cache", "index", "query", "vector", "token", "graph", "contract", "tenant"]


def make(i: int, *, dimension: int = 8, domain: str | None = None, text: str | None = None, seed: int = 0):
    rng = np.random.default_rng(1000 * seed + i)
    vector = rng.standard_normal(dimension).astype(np.float32)
    body = text if text is not None else f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} document {i}"
    return IndexedDocument(Document(id=f"d{i}", text=body, title=f"title {i}", domain=domain), vector, "v1")


@pytest.fixture()
def backend(tmp_path):
    b = EmbeddedBackend(tmp_path / "store")
    yield b
    b.close()


def test_implements_the_backend_protocol(backend):
    assert isinstance(backend, Backend)


def test_empty_store_answers_empty(backend):
    assert backend.count() == 0
    assert backend.bm25_search("court", 5) == []
    assert backend.dense_search(np.ones(8, np.float32), 5) == []
    assert backend.get(["nope"]) == {}


def test_upsert_is_idempotent_and_replaces_by_id(backend):
    docs = [make(i, domain="legal") for i in range(20)]
    backend.upsert(docs)
    backend.upsert(docs)  # a redelivered batch
    assert backend.count() == 20
    changed = IndexedDocument(Document(id="d3", text="tenant eviction notice", domain="tenancy"), docs[3].vector, "v2")
    backend.upsert([changed])
    assert backend.count() == 20
    assert backend.get(["d3"])["d3"].text == "tenant eviction notice"
    assert backend.domain_counts() == {"legal": 19, "tenancy": 1}
    assert backend.describe()["encoder_versions"] == {"v1": 19, "v2": 1}
    assert [i for i, _ in backend.bm25_search("eviction", 5)] == ["d3"]


def test_delete_by_id(backend):
    backend.upsert([make(i) for i in range(10)])
    assert backend.delete(["d1", "d2", "missing"]) == 2
    assert backend.count() == 8
    assert set(backend.get(["d1", "d2", "d3"])) == {"d3"}
    found = {i for i, _ in backend.dense_search(make(1).vector, 10)}
    assert "d1" not in found and len(found) == 8
    assert backend.delete(["d1"]) == 0


def test_dense_search_is_exact_inner_product(backend):
    docs = [make(i) for i in range(200)]
    backend.upsert(docs)
    query = np.random.default_rng(7).standard_normal(8).astype(np.float32)
    scores = np.stack([d.vector for d in docs]) @ query
    expected = [f"d{i}" for i in np.argsort(-scores)[:10]]
    got = backend.dense_search(query, 10)
    assert [i for i, _ in got] == expected
    assert [s for _, s in got] == pytest.approx(sorted(scores, reverse=True)[:10], abs=1e-5)


def test_domain_filter_restricts_both_sub_queries(backend):
    backend.upsert([make(i, domain="legal" if i % 2 else "medical") for i in range(40)])
    backend.upsert([make(i) for i in range(40, 50)])  # no domain
    query = make(3).vector
    legal = backend.dense_search(query, 100, domain="legal")
    assert len(legal) == 20 and all(int(i[1:]) % 2 == 1 and int(i[1:]) < 40 for i, _ in legal)
    assert all(int(i[1:]) % 2 == 1 for i, _ in backend.bm25_search("court document", 100, domain="legal"))
    assert backend.dense_search(query, 5, domain="nothing-here") == []
    assert backend.bm25_search("court", 5, domain="nothing-here") == []
    assert len(backend.dense_search(query, 100)) == 50
    assert backend.count("legal") == 20 and backend.count() == 50


def test_wrong_dimension_is_refused(backend):
    backend.upsert([make(0)])
    with pytest.raises(BackendError, match="8-dimensional"):
        backend.upsert([make(1, dimension=16)])
    assert backend.count() == 1


def test_persists_across_instances_and_processes(tmp_path):
    first = EmbeddedBackend(tmp_path / "store")
    first.upsert([make(i, domain="legal") for i in range(30)])
    first.close()
    code = (
        "import sys; from connectors.embedded import EmbeddedBackend; "
        "b = EmbeddedBackend(sys.argv[1]); print(b.count(), b.domain_counts(), b.bm25_search('court', 1)[0][0])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("30 {'legal': 30} d")


def test_a_searcher_sees_another_writers_commits(tmp_path):
    reader = EmbeddedBackend(tmp_path / "store")
    writer = EmbeddedBackend(tmp_path / "store")
    writer.upsert([make(i) for i in range(5)])
    assert len(reader.dense_search(make(0).vector, 10)) == 5
    writer.upsert([make(i) for i in range(5, 9)])
    writer.delete(["d0"])
    ids = {i for i, _ in reader.dense_search(make(0).vector, 10)}
    assert ids == {f"d{i}" for i in range(1, 9)}


def test_old_snapshots_and_crashed_builds_are_pruned(backend):
    backend.upsert([make(0)])
    backend.refresh()
    crashed = cache_root(backend.directory) / ".tmp-crashed"
    crashed.mkdir()
    backend.upsert([make(1)])
    backend.refresh()
    folders = sorted(p.name for p in cache_root(backend.directory).iterdir() if p.is_dir())
    assert folders == [f"gen-{backend.store.generation():012d}"]


def test_a_forked_child_opens_its_own_connection(backend):
    """Celery prefork: a backend built before fork must not share its SQLite handle with the child."""
    import multiprocessing

    backend.upsert([make(0)])
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_child_upsert, args=(backend,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert backend.count() == 6


def _child_upsert(backend: EmbeddedBackend) -> None:
    backend.upsert([make(i) for i in range(1, 6)])


@pytest.mark.parametrize("kernel", ["int8", "float16"])
def test_coarse_scoring_with_exact_rescoring_matches_exact_search(backend, monkeypatch, kernel):
    """Large stores score coarsely (int8, else float16; when torch is loaded) and rescore exactly."""
    import torch

    from connectors.embedded import snapshot

    if kernel == "float16":
        monkeypatch.setattr(snapshot, "_int8_scorer", lambda torch, vectors: None)
    else:
        assert snapshot._int8_scorer(torch, np.ones((2, 64), np.float32)) is not None, "int8 kernel missing"

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    backend.upsert(
        [
            IndexedDocument(Document(id=f"d{i}", text="t", domain="odd" if i % 2 else None), v, "v1")
            for i, v in enumerate(vectors)
        ]
    )
    for query in rng.standard_normal((5, 64)).astype(np.float32):
        for domain in (None, "odd"):
            monkeypatch.setattr(snapshot, "COARSE_FROM", 10**9)
            exact = backend.dense_search(query, 100, domain=domain)
            monkeypatch.setattr(snapshot, "COARSE_FROM", 0)
            fast = backend.dense_search(query, 100, domain=domain)
            assert backend.snapshot()._coarse is not None
            assert [i for i, _ in fast] == [i for i, _ in exact]
            assert [s for _, s in fast] == pytest.approx([s for _, s in exact], abs=1e-6)
            if domain:
                assert all(int(i[1:]) % 2 for i, _ in fast)
    assert backend.bm25_search("t", 5) == []  # no text here has an indexable token: no BM25 matches


@pytest.mark.parametrize("width", [4, 12, 100])
def test_int8_kernel_is_not_trusted_on_widths_it_does_not_block_cleanly(width):
    """torch's private int8 kernel returned garbage (and crashed) at width 4: such stores use float16."""
    import torch

    from connectors.embedded import snapshot

    assert snapshot._int8_scorer(torch, np.ones((16, width), np.float32)) is None


def test_a_store_written_before_the_metadata_side_table_is_filled_on_open(tmp_path) -> None:
    """Stores made by an earlier release have no metadata_values table: opening one fills it from the
    documents' JSON once, and filters then answer as on a new store."""
    import sqlite3

    from ddr_search.filters import parse_filters
    from ddr_search.types import Document, IndexedDocument

    store = tmp_path / "store"
    backend = EmbeddedBackend(store, 4)
    vector = np.full(4, 0.5, dtype=np.float32)
    backend.upsert(
        [
            IndexedDocument(Document("a", "t", metadata={"lang": "en", "tags": ["x", "y"]}), vector, "v"),
            IndexedDocument(Document("b", "t", metadata={"lang": "de"}), vector, "v"),
        ]
    )
    backend.close()
    with sqlite3.connect(store / "store.sqlite3") as db:  # what an earlier release left on disk
        db.execute("DROP TABLE metadata_values")
        db.execute("DELETE FROM meta WHERE key = 'metadata_values'")
    reopened = EmbeddedBackend(store, 4)
    try:
        assert reopened.store.ids_matching(parse_filters({"tags": "y"})) == ["a"]
        assert reopened.store.ids_matching(parse_filters({"lang": {"ne": "en"}})) == ["b"]
    finally:
        reopened.close()
