"""BM25, kNN, hybrid and pipelines on the real nodes (2.19.1 native hybrid, 3.5.0 client-side fusion):
scores, efficient filtering, request shapes, pagination, and what each version supports.
"""

from __future__ import annotations

import numpy as np
import pytest

from connectors.opensearch import admin
from connectors.opensearch.hybrid import inner_product_to_knn_score, knn_score_to_inner_product
from ddr_search.filters import parse_filters
from ddr_search.fusion import FusionConfig, Technique, fuse
from ddr_search.types import Document
from tests.connectors.opensearch.conftest import Target
from tests.connectors.opensearch.faults import FaultState
from tests.doubles import CORPUS, HashEncoder, indexed


def loaded(target: Target, **kwargs: object):
    backend = target.backend(16, **kwargs)
    admin.setup(
        backend,
        target.settings,
        dimension=16,
        encoder_version="hash-a",
        fusion_configs=admin.default_fusion_configs((0.5, 0.5)),
    )
    backend.upsert(indexed(HashEncoder()))
    backend.refresh()
    return backend


# --- BM25 -------------------------------------------------------------------------------------------


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
    assert [i for i, _ in backend.bm25_search("vitamin", 10, filters=parse_filters({"year": 2020}))] == ["d10"]
    assert [i for i, _ in backend.bm25_search("vitamin", 10, filters=parse_filters({"year": [2019, 2018]}))] == ["d4"]
    # metadata strings are keywords: an exact, case-sensitive match
    assert [i for i, _ in backend.bm25_search("fraud", 10, filters=parse_filters({"court": "appeals"}))] == ["d1"]
    assert backend.bm25_search("fraud", 10, filters=parse_filters({"court": "Appeals"})) == []


def test_client_side_hybrid_without_neural_search_uses_msearch(faulty_target: Target) -> None:
    """3.5 has no neural-search here (2.19: forced): both halves in one _msearch, fused on the client."""
    backend = loaded(faulty_target, hybrid="client")
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    assert backend.hybrid_search("fraud", query, 5)
    sent = faulty_target.faults.searches
    assert [s["path"] for s in sent] == ["/_msearch", "/_msearch"]
    assert [next(iter(s["body"]["query"])) for s in sent] == ["match", "knn"]


# --- kNN -------------------------------------------------------------------------------------------------


def test_innerproduct_scores_follow_the_documented_formula_and_invert(target: Target) -> None:
    """The node's innerproduct scores (both engines: d = -x.y; 1 / (1 + d) if d >= 0 else 1 - d) invert to x.y."""
    client = target.client()
    index = f"{target.settings.index}-vscores"
    method = {"name": "hnsw", "space_type": "innerproduct", "engine": target.settings.knn_engine}
    client.indices.create(
        index=index,
        body={
            "settings": {"index": {"knn": True, "number_of_replicas": target.settings.replicas}},
            "mappings": {"properties": {"v": {"type": "knn_vector", "dimension": 2, "method": method}}},
        },
    )
    vectors = {"a": [0.6, 0.8], "b": [-0.6, -0.8], "c": [1.0, 0.0], "d": [0.0, 1.0]}
    for doc_id, v in vectors.items():
        client.index(index=index, id=doc_id, body={"v": v})
    client.indices.refresh(index=index)
    query = [0.6, 0.8]
    hits = client.search(index=index, body={"query": {"knn": {"v": {"vector": query, "k": 4}}}})["hits"]["hits"]
    for hit in hits:
        ip = float(np.dot(query, vectors[hit["_id"]]))
        assert hit["_score"] == pytest.approx(inner_product_to_knn_score(ip), rel=1e-5)
        assert knn_score_to_inner_product(hit["_score"]) == pytest.approx(ip, abs=1e-5)
    assert [h["_id"] for h in hits] == ["a", "d", "c", "b"]


def test_dense_search_returns_exact_inner_products_with_efficient_domain_filter(target: Target) -> None:
    backend = loaded(target)
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


def test_dense_search_metadata_filter_goes_inside_knn(target: Target) -> None:
    backend = loaded(target)
    query = HashEncoder().encode_queries(["vitamin"]).vectors[0]
    hits = backend.dense_search(query, 5, domain="medical", filters=parse_filters({"year": [2019, 2020]}))
    assert {i for i, _ in hits} == {"d4", "d10"}


def test_dense_request_puts_the_filter_inside_knn(faulty_target: Target) -> None:
    backend = loaded(faulty_target)
    query = HashEncoder().encode_queries(["vitamin"]).vectors[0]
    backend.dense_search(query, 3, domain="medical", filters=parse_filters({"year": [2019, 2020]}))
    body = faulty_target.faults.searches[-1]["body"]
    assert body["query"] == {
        "knn": {
            "embedding": {
                "vector": pytest.approx(query.tolist()),
                "k": 3,
                "method_parameters": {"ef_search": 256},
                "filter": {
                    "bool": {"filter": [{"term": {"domain": "medical"}}, {"terms": {"metadata.year": [2019, 2020]}}]}
                },
            }
        }
    }
    assert body["size"] == 3 and body["_source"] is False


# --- hybrid -----------------------------------------------------------------------------------------


def tie_groups(fused: list) -> list[frozenset[str]]:
    """The ranking as groups of ids with equal scores (to 6 digits): equal however ties were broken."""
    groups: list[tuple[float, set[str]]] = []
    for f in fused:
        score = round(f.score, 6)
        if groups and groups[-1][0] == score:
            groups[-1][1].add(f.id)
        else:
            groups.append((score, {f.id}))
    return [frozenset(ids) for _, ids in groups]


def last_hybrid(state: FaultState) -> dict:
    return [s for s in state.searches if "hybrid" in s["body"]["query"]][-1]


CONFIGS = [
    FusionConfig(Technique.MIN_MAX, (0.5, 0.5)),
    FusionConfig(Technique.MIN_MAX, (0.3, 0.7)),
    FusionConfig(Technique.L2, (0.5, 0.5)),
    FusionConfig(Technique.RRF, (0.5, 0.5)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.technique}-{c.weights[0]}")
def test_native_hybrid_and_client_side_fusion_rank_alike(native_target: Target, config: FusionConfig) -> None:
    native = loaded(native_target, hybrid="native")
    assert native.features.native_hybrid, native.features.describe()
    client_side = native_target.backend(16, hybrid="client")
    text = "fraud limitations vitamin"
    query = HashEncoder().encode_queries([text]).vectors[0]
    a = native.hybrid_search(text, query, 10, config=config, candidates=10)
    b = client_side.hybrid_search(text, query, 10, config=config, candidates=10)
    assert tie_groups(a) == tie_groups(b)  # the cluster breaks ties by Lucene doc id, `fuse` by id
    assert [f.score for f in a] == pytest.approx([f.score for f in b], rel=1e-4)
    # both report the raw BM25 score and the raw inner product (here every document is a candidate)
    bm25 = dict(client_side.bm25_search(text, 10))
    dense = dict(client_side.dense_search(query, 10))
    for f in [*a, *b]:
        assert f.sub_scores[0] == (pytest.approx(bm25[f.id]) if f.id in bm25 else None)
        assert f.sub_scores[1] == (pytest.approx(dense[f.id], abs=1e-5) if f.id in dense else None)
    bare = native.hybrid_search(text, query, 10, config=config, candidates=10, sub_scores=False)
    assert [f.id for f in bare] == [f.id for f in a] and all(f.sub_scores == (None, None) for f in bare)


def test_native_hybrid_request_shape_named_and_temporary_pipelines(faulty_target: Target) -> None:
    backend = loaded(faulty_target, hybrid="native")
    state = faulty_target.faults
    assert state is not None
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    hits = backend.hybrid_search("fraud", query, 3, domain="legal", config=FusionConfig(), candidates=20)
    sent = last_hybrid(state)
    alias = faulty_target.settings.index
    assert sent["params"] == {"search_pipeline": f"{alias}-min_max-0.5-0.5"}  # made by setup
    assert sent["body"]["size"] == 3 and "search_pipeline" not in sent["body"]
    hybrid = sent["body"]["query"]["hybrid"]
    assert hybrid["pagination_depth"] == 20
    bm25, knn = hybrid["queries"]
    assert bm25 == {
        "bool": {"must": [{"match": {"passage": {"query": "fraud"}}}], "filter": [{"term": {"domain": "legal"}}]}
    }
    assert knn["knn"]["embedding"]["k"] == 20 and knn["knn"]["embedding"]["filter"] == {"term": {"domain": "legal"}}
    # a configuration setup did not create travels as a temporary pipeline in the body
    # the sub-scores of the 3 hits: kNN restricted to their ids, inside the same domain filter
    knn = state.searches[-1]["body"]["query"]["knn"]["embedding"]
    assert knn["k"] == 3 and knn["filter"] == {
        "bool": {"filter": [{"term": {"domain": "legal"}}, {"ids": {"values": [h.id for h in hits]}}]}
    }
    backend.hybrid_search("fraud", query, 3, config=FusionConfig(Technique.MIN_MAX, (0.3, 0.7)))
    sent = last_hybrid(state)
    assert sent["params"] == {}
    assert sent["body"]["search_pipeline"]["phase_results_processors"][0]["normalization-processor"]["combination"][
        "parameters"
    ]["weights"] == [0.3, 0.7]


EXPECTED_NATIVE = {"os2.19": True, "os3.5": False}  # neural-search 2.19.1 is on the first node only


def test_auto_mode_picks_native_where_neural_search_is_listed(target: Target) -> None:
    watched = Target(target.name, target.settings, FaultState())
    backend = loaded(watched)
    native = backend.features.native_hybrid
    if target.name in EXPECTED_NATIVE:
        assert native is EXPECTED_NATIVE[target.name], backend.features.describe()
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    assert backend.hybrid_search("fraud", query, 3)
    sent = [s for s in watched.faults.searches if s["path"].endswith("_search") or "hybrid" in s["body"]["query"]]
    if native:
        assert last_hybrid(watched.faults)["params"]["search_pipeline"]
    else:  # both halves in one _msearch
        assert [next(iter(s["body"]["query"])) for s in watched.faults.searches[-2:]] == ["match", "knn"]
        assert not [s for s in sent if "hybrid" in s["body"]["query"]]


def test_hybrid_pagination_pages_the_same_fused_ranking(target: Target) -> None:
    modes = ["client", "native"] if target.backend(16).features.native_hybrid else ["client"]
    for mode in modes:
        backend = loaded(target, hybrid=mode) if mode == "client" else target.backend(16, hybrid=mode)
        text = "fraud vitamin court"
        query = HashEncoder().encode_queries([text]).vectors[0]
        whole = backend.hybrid_search(text, query, 9, candidates=10)
        pages = [backend.hybrid_search(text, query, 3, candidates=10, offset=o) for o in (0, 3, 6)]
        assert [f.id for page in pages for f in page] == [f.id for f in whole], mode


def test_client_side_fusion_equals_fuse_over_the_two_searches(target: Target) -> None:
    backend = loaded(target, hybrid="client")
    text = "statute fraud"
    query = HashEncoder().encode_queries([text]).vectors[0]
    got = backend.hybrid_search(text, query, 5, domain="legal", candidates=10)
    dense = [(i, inner_product_to_knn_score(ip)) for i, ip in backend.dense_search(query, 10, domain="legal")]
    want = fuse([backend.bm25_search(text, 10, domain="legal"), dense], FusionConfig(), k=5)
    assert [(f.id, round(f.score, 6)) for f in got] == [(f.id, round(f.score, 6)) for f in want]
    assert {f.id for f in got} <= {d.id for d in CORPUS if d.domain == "legal"}
    assert np.all(np.diff([f.score for f in got]) <= 0)


def test_a_native_page_past_the_last_fused_hit_is_empty_as_on_the_client(native_target: Target) -> None:
    native = loaded(native_target, hybrid="native")
    client_side = native_target.backend(16, hybrid="client")
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    for backend in (native, client_side):
        assert backend.hybrid_search("fraud", query, 5, candidates=10, offset=50) == []


def test_partial_results_raise_instead_of_passing_as_the_ranking(target: Target) -> None:
    """An alias that also covers an index whose `embedding` is no knn_vector: that shard fails the k-NN
    query and the node answers 200 with `_shards.failed: 1`; the backend must not return the half."""
    from ddr_search.errors import BackendError

    backend = loaded(target)
    client = target.client()
    broken = f"{target.settings.index}-vbroken"
    client.indices.create(
        index=broken,
        body={"settings": {"number_of_replicas": 0}, "mappings": {"properties": {"embedding": {"type": "float"}}}},
    )
    client.indices.update_aliases(body={"actions": [{"add": {"index": broken, "alias": target.settings.index}}]})
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    with pytest.raises(BackendError, match=r"partial results: 1 of 2 shards failed"):
        backend.dense_search(query, 5)
    with pytest.raises(BackendError, match=r"partial results"):
        target.backend(16, hybrid="client").hybrid_search("fraud", query, 5)


def test_a_two_shard_index_fuses_on_the_client_where_native_fusion_is_per_shard(native_target: Target) -> None:
    """2.19: the pipeline normalises and ranks each shard's hits on their own, so auto mode fuses on the
    client for a multi-shard index; forced native mode really ranks otherwise on this data."""
    settings = native_target.settings.model_copy(update={"shards": 2})
    sharded = Target(native_target.name, settings)
    auto = loaded(sharded)
    docs = [
        Document(f"x{i}", f"{CORPUS[i % 10].text} extra {i}", CORPUS[i % 10].title, CORPUS[i % 10].domain)
        for i in range(60)
    ]
    auto.upsert(indexed(HashEncoder(), docs))
    auto.refresh()
    client_side = sharded.backend(16, hybrid="client")
    forced = sharded.backend(16, hybrid="native")
    differ = 0
    for text in ("fraud limitations", "court fraud", "vitamin bone", "attention token"):
        query = HashEncoder().encode_queries([text]).vectors[0]
        for config in (FusionConfig(), FusionConfig(Technique.RRF)):
            got = auto.hybrid_search(text, query, 10, config=config, candidates=20)
            want = client_side.hybrid_search(text, query, 10, config=config, candidates=20)
            assert [(f.id, f.score) for f in got] == [(f.id, f.score) for f in want]
            native = forced.hybrid_search(text, query, 10, config=config, candidates=20)
            differ += [f.id for f in native] != [f.id for f in want]
    if native_target.backend(16).features.version < (3, 5, 0):
        assert differ > 0  # the reason for the fallback, still true on this version


@pytest.mark.parametrize("technique", list(Technique), ids=str)
def test_every_fusion_technique_works_in_auto_mode_and_ranks_as_the_client(target: Target, technique) -> None:
    """Where the version cannot fuse a technique natively (z_score on 2.19), auto mode fuses on the client."""
    config = FusionConfig(technique, (0.3, 0.7))
    auto = loaded(target)
    client_side = target.backend(16, hybrid="client")
    text = "fraud vitamin statute"
    query = HashEncoder().encode_queries([text]).vectors[0]
    got = auto.hybrid_search(text, query, 10, config=config, candidates=10)
    want = client_side.hybrid_search(text, query, 10, config=config, candidates=10)
    assert got and tie_groups(got) == tie_groups(want)
    assert auto.fuses_natively(config) == (
        auto.features.native_hybrid
        and technique is not Technique.RRF
        and (technique is not Technique.Z_SCORE or auto.features.version >= (3,))
    )


def test_each_hit_says_who_fused_it(native_target: Target) -> None:
    """Auto mode on 2.19.1: min_max fuses in the cluster's pipeline, z_score (3.0+ only) on the client."""
    from ddr_search.search import search
    from ddr_search.settings import SearchSettings

    backend = loaded(native_target, hybrid="auto")
    encoder = HashEncoder()
    for normalization, expected in (("min_max", "cluster"), ("z_score", "client")):
        hits = search(
            "fraud", backend=backend, encoder=encoder, settings=SearchSettings(normalization=normalization), k=3
        )
        assert hits and {h.fused_by for h in hits} == {expected}, normalization
    dense = search("fraud", backend=backend, encoder=encoder, settings=SearchSettings(), k=3, mode="dense")
    assert {h.fused_by for h in dense} == {None}
