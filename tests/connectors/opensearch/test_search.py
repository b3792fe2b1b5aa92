"""BM25 against osmem-server; kNN, hybrid and pipelines against the documented-scoring double (or a
real cluster with DDR_OPENSEARCH_URL): scores, efficient filtering, request shapes, pagination.
"""

from __future__ import annotations

import numpy as np
import pytest

from connectors.opensearch import admin
from connectors.opensearch.backend import inner_product_to_knn_score, knn_score_to_inner_product
from connectors.opensearch.client import build_client
from ddr_search.fusion import FusionConfig, Technique, fuse
from tests.connectors.opensearch.conftest import CORPUS, HashEncoder, Target, indexed
from tests.connectors.opensearch.knn_double import DoubleState, KnnDoubleConnection, space_score


def loaded(target: Target, **kwargs: object):
    backend = target.backend(16, **kwargs)
    admin.setup(backend, target.settings, dimension=16, encoder_version="hash-a",
                fusion_configs=admin.default_fusion_configs((0.5, 0.5)))
    backend.upsert(indexed(HashEncoder()))
    return backend


# --- BM25 (osmem-server for real) ------------------------------------------------------------------


def test_bm25_ranks_matching_documents_and_filters_by_domain(target: Target) -> None:
    backend = loaded(target)
    hits = backend.bm25_search("fraud limitations", 10)
    ids = [i for i, _ in hits]
    assert set(ids) == {"d1", "d8", "d9"}  # the only documents with either stem
    assert ids[-1] == "d8"  # one term, once; d1 and d9 hold both
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    legal = backend.bm25_search("fraud limitations", 10, domain="legal")
    assert {i for i, _ in legal} == {"d1", "d9"}
    assert backend.bm25_search("fraud", 10, domain="medical") == []


def test_bm25_metadata_filter_and_stemming(target: Target) -> None:
    backend = loaded(target)
    assert [i for i, _ in backend.bm25_search("supplementing vitamins", 10)][:2] in (["d4", "d10"], ["d10", "d4"])
    assert [i for i, _ in backend.bm25_search("vitamin", 10, metadata={"year": 2020})] == ["d10"]
    assert [i for i, _ in backend.bm25_search("vitamin", 10, metadata={"year": [2019, 2018]})] == ["d4"]
    # metadata strings are keywords: an exact, case-sensitive match
    assert [i for i, _ in backend.bm25_search("fraud", 10, metadata={"court": "appeals"})] == ["d1"]
    assert backend.bm25_search("fraud", 10, metadata={"court": "Appeals"}) == []


def test_client_side_hybrid_without_neural_search_uses_msearch(target: Target) -> None:
    """osmem lists no neural-search plugin -> fusion on the client; osmem runs the BM25 half for real
    and answers the kNN half with 400, which must surface as a BackendError naming the sub-query."""
    if target.name != "osmem":
        pytest.skip("osmem-specific: it has no k-NN")
    backend = loaded(target)
    assert not backend.features.native_hybrid
    from ddr_search.errors import BackendError

    with pytest.raises(BackendError, match=r"msearch \(knn\).*400"):
        backend.hybrid_search("fraud", HashEncoder().encode_passages(["fraud"])[0], 5)


# --- kNN (the double / a real cluster) ---------------------------------------------------------------


def test_double_reproduces_the_documented_faiss_filter_example(double_target: Target) -> None:
    """The efficient-filtering page's faiss example (l2): its response lists scores 0.8620689, 0.029691212."""
    client = double_target.client()
    client.indices.create(index="products-shirts", body={"settings": {"index": {"knn": True}}, "mappings": {
        "properties": {"item_vector": {"type": "knn_vector", "dimension": 3,
                                       "method": {"name": "hnsw", "space_type": "l2", "engine": "faiss"}}}}})
    rows = [([5.2, 4.4, 8.4], "large", 5), ([5.2, 3.9, 2.9], "small", 4), ([4.9, 3.4, 2.2], "xlarge", 9),
            ([4.2, 4.6, 5.5], "large", 6), ([3.3, 4.5, 8.8], "medium", 8), ([6.4, 3.4, 6.6], "small", 9),
            ([4.2, 6.2, 4.6], "small", 5), ([2.4, 4.0, 3.0], "small", 8), ([1.4, 3.2, 9.0], "small", 5),
            ([7.0, 9.9, 9.0], "xlarge", 9), ([3.0, 2.3, 2.0], "large", 6), ([5.0, 1.0, 4.0], "large", 3)]
    for i, (vec, size, rating) in enumerate(rows, start=1):
        client.index(index="products-shirts", id=str(i), body={"item_vector": vec, "size": size, "rating": rating})
    client.indices.refresh(index="products-shirts")
    response = client.search(index="products-shirts", body={"size": 2, "query": {"knn": {"item_vector": {
        "vector": [2, 4, 3], "k": 10, "filter": {"bool": {"must": [
            {"range": {"rating": {"gte": 7, "lte": 10}}}, {"term": {"size": "small"}}]}}}}}})
    hits = response["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["8", "6"]
    assert hits[0]["_score"] == pytest.approx(0.8620689, abs=1e-6)
    assert hits[1]["_score"] == pytest.approx(0.029691212, abs=1e-8)


def test_innerproduct_score_formula_and_its_inverse() -> None:
    x = [0.6, 0.8]
    assert space_score("innerproduct", x, [0.6, 0.8]) == pytest.approx(2.0)  # x.y = 1 -> d = -1 -> 1 - d
    assert space_score("innerproduct", x, [-0.6, -0.8]) == pytest.approx(0.5)  # x.y = -1 -> d = 1 -> 1/(1+d)
    assert space_score("cosinesimil", [1.0, 0.0], [0.0, 2.0]) == pytest.approx(0.5)  # cos 0 -> (2 - 1) / 2
    assert space_score("cosinesimil", [1.0, 1.0], [3.0, 3.0]) == pytest.approx(1.0)
    assert space_score("cosinesimil", [1.0, 0.0], [-1.0, 0.0]) == pytest.approx(0.0)
    for ip in (-3.0, -0.25, 0.0, 0.4, 2.5):
        d = -ip
        score = 1 / (1 + d) if d >= 0 else 1 - d
        assert knn_score_to_inner_product(score) == pytest.approx(ip)


def test_dense_search_returns_exact_inner_products_with_efficient_domain_filter(knn_target: Target) -> None:
    backend = loaded(knn_target)
    enc = HashEncoder()
    query = enc.encode_queries(["fraud limitations period"]).vectors[0]
    vectors = {d.document.id: d.vector for d in indexed(enc)}
    expected = sorted(((i, float(v @ query)) for i, v in vectors.items()), key=lambda x: -x[1])
    hits = backend.dense_search(query, 4)
    assert [i for i, _ in hits] == [i for i, _ in expected[:4]]
    assert [s for _, s in hits] == pytest.approx([s for _, s in expected[:4]], abs=1e-5)
    medical = backend.dense_search(query, 3, domain="medical")
    legal_ids = {d.id for d in CORPUS if d.domain == "legal"}
    assert len(medical) == 3 and not legal_ids & {i for i, _ in medical}  # k results even under a filter
    if knn_target.double is not None:
        body = knn_target.double.searches[-1]["body"]
        assert body["query"] == {"knn": {"embedding": {"vector": pytest.approx(query.tolist()), "k": 3,
                                                        "filter": {"term": {"domain": "medical"}}}}}
        assert body["size"] == 3 and body["_source"] is False


def test_dense_search_metadata_filter_goes_inside_knn(knn_target: Target) -> None:
    backend = loaded(knn_target)
    query = HashEncoder().encode_queries(["vitamin"]).vectors[0]
    hits = backend.dense_search(query, 5, domain="medical", metadata={"year": [2019, 2020]})
    assert {i for i, _ in hits} == {"d4", "d10"}
    if knn_target.double is not None:
        knn = knn_target.double.searches[-1]["body"]["query"]["knn"]["embedding"]
        assert knn["filter"] == {"bool": {"filter": [{"term": {"domain": "medical"}},
                                                     {"terms": {"metadata.year": [2019, 2020]}}]}}


def test_double_rejects_bodies_a_cluster_would_reject(double_target: Target) -> None:
    from opensearchpy.exceptions import RequestError

    loaded(double_target)
    client = double_target.client()
    alias = double_target.settings.index
    with pytest.raises(RequestError, match="invalid dimension"):
        client.search(index=alias, body={"query": {"knn": {"embedding": {"vector": [1.0, 2.0], "k": 2}}}})
    with pytest.raises(RequestError, match="exactly one of k"):
        client.search(index=alias, body={"query": {"knn": {"embedding": {"vector": [0.0] * 16}}}})
    with pytest.raises(RequestError, match="sum of weights"):
        client.transport.perform_request("PUT", "/_search/pipeline/bad", body={"phase_results_processors": [
            {"normalization-processor": {"combination": {"parameters": {"weights": [0.5, 0.7]}}}}]})
    with pytest.raises(RequestError, match="needs a search pipeline"):
        client.search(index=alias, body={"query": {"hybrid": {"queries": [{"match_all": {}}]}}})


# --- hybrid -----------------------------------------------------------------------------------------

def last_hybrid(state: DoubleState) -> dict:
    return [s for s in state.searches if "hybrid" in s["body"]["query"]][-1]


CONFIGS = [FusionConfig(Technique.MIN_MAX, (0.5, 0.5)), FusionConfig(Technique.MIN_MAX, (0.3, 0.7)),
           FusionConfig(Technique.L2, (0.5, 0.5)), FusionConfig(Technique.RRF, (0.5, 0.5))]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.technique}-{c.weights[0]}")
def test_native_hybrid_and_client_side_fusion_rank_alike(knn_target: Target, config: FusionConfig) -> None:
    native = loaded(knn_target, hybrid="native")
    if not native.features.native_hybrid:
        pytest.skip("this cluster has no neural-search >= 2.19")
    client_side = knn_target.backend(16, hybrid="client")
    text = "fraud limitations vitamin"
    query = HashEncoder().encode_queries([text]).vectors[0]
    a = native.hybrid_search(text, query, 10, config=config, candidates=10)
    b = client_side.hybrid_search(text, query, 10, config=config, candidates=10)
    assert [f.id for f in a] == [f.id for f in b]
    assert [f.score for f in a] == pytest.approx([f.score for f in b], rel=1e-4)
    # both report the raw BM25 score and the raw inner product (here every document is a candidate)
    bm25 = dict(client_side.bm25_search(text, 10))
    dense = dict(client_side.dense_search(query, 10))
    for f in [*a, *b]:
        assert f.sub_scores[0] == (pytest.approx(bm25[f.id]) if f.id in bm25 else None)
        assert f.sub_scores[1] == (pytest.approx(dense[f.id], abs=1e-5) if f.id in dense else None)
    bare = native.hybrid_search(text, query, 10, config=config, candidates=10, sub_scores=False)
    assert [f.id for f in bare] == [f.id for f in a] and all(f.sub_scores == (None, None) for f in bare)


def test_native_hybrid_request_shape_named_and_temporary_pipelines(double_target: Target) -> None:
    backend = loaded(double_target, hybrid="native")
    state = double_target.double
    assert state is not None
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    hits = backend.hybrid_search("fraud", query, 3, domain="legal", config=FusionConfig(), candidates=20)
    sent = last_hybrid(state)
    alias = double_target.settings.index
    assert sent["params"] == {"search_pipeline": f"{alias}-min_max-0.5-0.5"}  # made by setup
    assert sent["body"]["size"] == 3 and "search_pipeline" not in sent["body"]
    hybrid = sent["body"]["query"]["hybrid"]
    assert hybrid["pagination_depth"] == 20
    bm25, knn = hybrid["queries"]
    assert bm25 == {"bool": {"must": [{"match": {"passage": {"query": "fraud"}}}],
                             "filter": [{"term": {"domain": "legal"}}]}}
    assert knn["knn"]["embedding"]["k"] == 20 and knn["knn"]["embedding"]["filter"] == {"term": {"domain": "legal"}}
    # a configuration setup did not create travels as a temporary pipeline in the body
    # the sub-scores of the 3 hits: kNN restricted to their ids, inside the same domain filter
    knn = state.searches[-1]["body"]["query"]["knn"]["embedding"]
    assert knn["k"] == 3 and knn["filter"] == {"bool": {"filter": [
        {"term": {"domain": "legal"}}, {"ids": {"values": [h.id for h in hits]}}]}}
    backend.hybrid_search("fraud", query, 3, config=FusionConfig(Technique.MIN_MAX, (0.3, 0.7)))
    sent = last_hybrid(state)
    assert sent["params"] == {}
    assert sent["body"]["search_pipeline"]["phase_results_processors"][0]["normalization-processor"][
        "combination"]["parameters"]["weights"] == [0.3, 0.7]


def test_auto_mode_picks_native_where_neural_search_is_listed(double_target: Target) -> None:
    backend = loaded(double_target)
    assert backend.features.native_hybrid
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    backend.hybrid_search("fraud", query, 3)
    assert last_hybrid(double_target.double)["params"]["search_pipeline"]
    without = DoubleState(plugins=("opensearch-knn",))  # a cluster with k-NN but no neural-search
    plain = double_target.backend(16)
    plain.client = build_client(double_target.settings, connection_class=KnnDoubleConnection, double=without)
    assert not plain.features.native_hybrid
    plain.hybrid_search("fraud", query, 3)
    assert [list(s["body"]["query"]) for s in without.searches] == [["knn"]]  # via _msearch: BM25 went to osmem


@pytest.mark.parametrize("hybrid", ["native", "client"])
def test_hybrid_pagination_pages_the_same_fused_ranking(knn_target: Target, hybrid: str) -> None:
    backend = loaded(knn_target, hybrid=hybrid)
    if hybrid == "native" and not backend.features.native_hybrid:
        pytest.skip("this cluster has no neural-search >= 2.19")
    text = "fraud vitamin court"
    query = HashEncoder().encode_queries([text]).vectors[0]
    whole = backend.hybrid_search(text, query, 9, candidates=10)
    pages = [backend.hybrid_search(text, query, 3, candidates=10, offset=o) for o in (0, 3, 6)]
    assert [f.id for page in pages for f in page] == [f.id for f in whole]


def test_client_side_fusion_equals_fuse_over_the_two_searches(knn_target: Target) -> None:
    backend = loaded(knn_target, hybrid="client")
    text = "statute fraud"
    query = HashEncoder().encode_queries([text]).vectors[0]
    got = backend.hybrid_search(text, query, 5, domain="legal", candidates=10)
    dense = [(i, inner_product_to_knn_score(ip)) for i, ip in backend.dense_search(query, 10, domain="legal")]
    want = fuse([backend.bm25_search(text, 10, domain="legal"), dense], FusionConfig(), k=5)
    assert [(f.id, round(f.score, 6)) for f in got] == [(f.id, round(f.score, 6)) for f in want]
    assert {f.id for f in got} <= {d.id for d in CORPUS if d.domain == "legal"}
    assert np.all(np.diff([f.score for f in got]) <= 0)
