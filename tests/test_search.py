"""The routed query path on the real encoder and the embedded backend: routing, filters, modes, fusion."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddr_search.client import DDRSearch
from ddr_search.errors import InputError, UnknownModuleError
from ddr_search.fusion import MIN_SCORE, FusionConfig, Technique, fuse
from ddr_search.settings import SearchSettings, Settings
from ddr_search.types import RoutingMode, SearchMode

DEMO = Path(__file__).resolve().parents[1] / "ddr_search" / "demo"
pytestmark = pytest.mark.slow  # loads the real encoder and embeds the 150-document demo corpus


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Demo corpus in three domains; modules for legal and medical only (tech has documents, no module).

    The modules are untrained (gates at zero), so passage vectors equal the frozen backbone's while
    routing still runs for real.
    """
    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.encoder import TorchEncoder

    backbone = load_backbone()
    model = DDRModel(backbone, prefix_length=8)
    model.add_general()
    model.add_domain_module("legal")
    model.add_domain_module("medical")
    encoder = TorchEncoder(model, backbone.tokenizer, max_passage_length=128)
    home = tmp_path_factory.mktemp("search") / "home"
    ddr = DDRSearch(Settings(home=home), encoder=encoder)
    for domain in ("legal", "medical", "tech"):
        ddr.ingest(DEMO / f"{domain}.jsonl", domain=domain)
    yield ddr
    ddr.close()


def test_a_domain_with_modules_uses_prior_routing_and_filters(client):
    hits = client.search("can my landlord keep my deposit", domain="legal", k=5)
    assert len(hits) == 5 and {h.domain for h in hits} == {"legal"}
    assert all(h.routing == {"legal": 1.0} for h in hits)
    assert hits[0].id == "legal-035"


def test_a_domain_with_documents_but_no_module_uses_the_general_module_alone(client):
    hits = client.search("retrying requests after a failure", domain="tech", k=5)
    assert {h.domain for h in hits} == {"tech"}
    assert all(h.routing == {} for h in hits)


def test_no_domain_and_no_profiles_means_the_general_module_over_every_document(client):
    hits = client.search("chest pain spreading to the arm", k=10)  # auto routing: these modules have no profile
    assert hits[0].routing == {} and hits[0].id == "medical-007"


def test_top_k_routing_is_still_there_when_asked_for(client):
    hits = client.search("chest pain spreading to the arm", k=10, routing=RoutingMode.TOP_K)
    assert set(hits[0].routing) == {"legal", "medical"}  # top-2 of 2 modules
    assert sum(hits[0].routing.values()) == pytest.approx(1.0)
    assert hits[0].id == "medical-007"


def test_the_filter_can_be_turned_off(client):
    hits = client.search("chest pain spreading to the arm", domain="legal", k=3, filter_domain=False)
    assert hits[0].id == "medical-007" and hits[0].routing == {"legal": 1.0}


def test_an_unknown_domain_is_an_error_never_a_fallback(client):
    with pytest.raises(UnknownModuleError, match=r"unknown domain 'astrology'.*with documents: legal, medical, tech"):
        client.search("stars", domain="astrology")


def test_hybrid_scores_are_the_fusion_of_the_sub_query_scores(client):
    query = "statute of limitations for fraud"
    hits = client.search(query, k=10)
    vector = client.encoder.encode_queries([query]).vectors[0]
    bm25 = client.backend.bm25_search(query, 100)
    dense = client.backend.dense_search(vector, 100)
    expected = fuse([bm25, dense], FusionConfig(Technique.MIN_MAX, (0.5, 0.5)), k=10)
    assert [h.id for h in hits] == [f.id for f in expected]
    for hit, fused in zip(hits, expected, strict=True):
        assert hit.score == pytest.approx(fused.score, abs=1e-6)
        assert (hit.bm25_score, hit.dense_score) == pytest.approx(fused.sub_scores, abs=1e-5)
    # By hand for the top hit: min-max per list, missing = 0, then the 0.5 / 0.5 arithmetic mean.
    b = dict(bm25)
    d = dict(dense)
    top = hits[0]

    def norm(scores: dict[str, float], doc: str) -> float:
        if doc not in scores:
            return 0.0
        low, high = min(scores.values()), max(scores.values())
        return max((scores[doc] - low) / (high - low), MIN_SCORE)

    assert top.score == pytest.approx(0.5 * norm(b, top.id) + 0.5 * norm(d, top.id), abs=1e-6)


def test_fusion_settings_reach_the_query_path(client):
    from ddr_search.search import search

    query = "insulin and blood sugar"
    hits = search(
        query,
        backend=client.backend,
        encoder=client.encoder,
        settings=SearchSettings(normalization="rrf", combination_weights=(0.3, 0.7)),
        k=5,
    )
    vector = client.encoder.encode_queries([query]).vectors[0]
    expected = fuse(
        [client.backend.bm25_search(query, 100), client.backend.dense_search(vector, 100)],
        FusionConfig(Technique.RRF, (0.3, 0.7)),
        k=5,
    )
    assert [(h.id, round(h.score, 9)) for h in hits] == [(f.id, round(f.score, 9)) for f in expected]


def test_single_modes_carry_one_score(client):
    dense = client.search("heart rhythm", mode="dense", k=3)
    assert all(h.bm25_score is None and h.score == h.dense_score for h in dense)
    bm25 = client.search("heart rhythm", mode=SearchMode.BM25, k=3)
    assert all(h.dense_score is None and h.score == h.bm25_score and h.routing == {} for h in bm25)
    assert bm25[0].id == "medical-008"


def test_routing_can_be_overridden(client):
    hits = client.search("court", domain="legal", routing=RoutingMode.NONE, k=1)
    assert hits[0].routing == {}


def test_bad_queries(client):
    with pytest.raises(InputError, match="empty"):
        client.search("   ")
    with pytest.raises(InputError, match="k must be"):
        client.search("court", k=0)


def test_a_single_query_runs_on_one_torch_thread_and_restores_the_setting(client):
    import torch

    from ddr_search.search import torch_threads

    torch.set_num_threads(2)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    client.search("court", k=1)
    assert torch.get_num_threads() == 2
