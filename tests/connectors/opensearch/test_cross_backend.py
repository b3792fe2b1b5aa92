"""Client-side fusion over OpenSearch and the embedded backend give the same top-10 on the same data.

OpenSearch side: the real nodes (Lucene BM25, k1 1.5, b 0.75, English stop words + Snowball, over title +
text; k-NN innerproduct). Embedded side: bm25s with the same parameters and exact inner products. Both fuse
with `ddr_search.fusion`.
Vectors here have non-negative components, so every x.y >= 0 and the faiss score 1 + x.y is an affine
map of x.y: min_max fusion of either gives the same ranking (the caveat for negative x.y is in
docs/opensearch.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from connectors.embedded import EmbeddedBackend
from connectors.opensearch import admin
from ddr_search.fusion import FusionConfig, Technique, fuse
from ddr_search.types import IndexedDocument
from tests.connectors.opensearch.conftest import Target
from tests.doubles import CORPUS, HashEncoder

QUERIES = [
    "fraud limitations period",
    "vitamin supplements bone",
    "court tolling fraud",
    "heart cholesterol",
    "attention token",
    "contract negligence damages",
]


def positive_documents(encoder: HashEncoder) -> list[IndexedDocument]:
    vectors = np.abs(encoder.encode_passages([f"{d.title} {d.text}" for d in CORPUS]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [IndexedDocument(d, v.astype(np.float32), encoder.version) for d, v in zip(CORPUS, vectors, strict=True)]


@pytest.mark.parametrize("technique", [Technique.MIN_MAX, Technique.RRF])
def test_same_top10_as_the_embedded_backend(target: Target, tmp_path, technique: Technique) -> None:
    encoder = HashEncoder()
    docs = positive_documents(encoder)
    opensearch = target.backend(16, hybrid="client")
    admin.setup(opensearch, target.settings, dimension=16, encoder_version=encoder.version)
    opensearch.upsert(docs)
    opensearch.refresh()
    embedded = EmbeddedBackend(tmp_path / "embedded", 16)
    embedded.upsert(docs)
    config = FusionConfig(technique, (0.5, 0.5))
    try:
        for text in QUERIES:
            query = np.abs(encoder.encode_queries([text]).vectors[0])
            query /= np.linalg.norm(query)
            for domain in (None, "legal"):
                ours = opensearch.hybrid_search(text, query, 10, domain=domain, config=config, candidates=100)
                theirs = fuse(
                    [embedded.bm25_search(text, 100, domain=domain), embedded.dense_search(query, 100, domain=domain)],
                    config,
                    k=10,
                )
                assert [f.id for f in ours] == [f.id for f in theirs], (text, domain)
                # dense sub-scores agree exactly; BM25 ones do not (see the test below), so fused scores
                # differ a little while the ranking is the same
                dense = {f.id: f.sub_scores[1] for f in theirs}
                for f in ours:
                    if f.sub_scores[1] is not None and dense[f.id] is not None:
                        assert f.sub_scores[1] == pytest.approx(dense[f.id], abs=1e-5)
    finally:
        embedded.close()


def test_bm25_ranks_match_bm25s(target: Target, tmp_path) -> None:
    """Same analyzer and BM25 parameters (k1 1.5, b 0.75): Lucene and bm25s give the same order here."""
    encoder = HashEncoder()
    docs = positive_documents(encoder)
    opensearch = target.backend(16)
    admin.setup(opensearch, target.settings, dimension=16, encoder_version=encoder.version)
    opensearch.upsert(docs)
    opensearch.refresh()
    embedded = EmbeddedBackend(tmp_path / "embedded", 16)
    embedded.upsert(docs)
    try:
        for text in QUERIES:
            ours, theirs = opensearch.bm25_search(text, 10), embedded.bm25_search(text, 10)
            assert [i for i, _ in ours] == [i for i, _ in theirs], text
    finally:
        embedded.close()


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "dense"])
def test_the_query_path_ranks_alike_on_both_backends(target: Target, tmp_path, mode: str) -> None:
    """DDRSearch (ingest + the shared query path) over OpenSearch and over the embedded store.

    Hybrid fuses with RRF here; min_max is compared in the test above.
    """
    from ddr_search.client import DDRSearch
    from ddr_search.settings import SearchSettings, Settings

    encoder = HashEncoder()
    opensearch = target.backend(16)
    admin.setup(opensearch, target.settings, dimension=16, encoder_version=encoder.version)
    settings = Settings(home=tmp_path / "home", search=SearchSettings(normalization="rrf"))
    with (
        DDRSearch(settings, encoder=encoder, backend=opensearch) as over_os,
        DDRSearch(settings, encoder=encoder, backend=EmbeddedBackend(tmp_path / "embedded", 16)) as local,
    ):
        for client in (over_os, local):
            client.ingest(CORPUS)
        assert over_os.stats()["domains"] == local.stats()["domains"] == {"legal": 4, "medical": 4}
        for text in QUERIES:
            for domain in (None, "medical"):
                a = over_os.search(text, domain=domain, k=10, mode=mode)
                b = local.search(text, domain=domain, k=10, mode=mode)
                assert [h.id for h in a] == [h.id for h in b], (text, domain)
                assert [h.dense_score for h in a] == pytest.approx([h.dense_score for h in b], abs=1e-5)
                assert [(h.title, h.text, h.domain, dict(h.metadata)) for h in a] == [
                    (h.title, h.text, h.domain, dict(h.metadata)) for h in b
                ]
