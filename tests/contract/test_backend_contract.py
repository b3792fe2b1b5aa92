"""The backend contract: what every backend must do alike, run on each of them (the embedded store,
OpenSearch 2.19.1 and 3.5.0, Elasticsearch 8.19.8 and 9.2.0 test nodes): writes by id, reads, counts,
every search mode, and the metadata filter language (docs/filters.md) applied before top-k.

Backend-specific behaviour (pipelines, aliases, reindex, security) stays in tests/connectors/<backend>/.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ddr_search.errors import InputError
from ddr_search.filters import parse_filters
from ddr_search.search import search
from ddr_search.settings import SearchSettings
from ddr_search.types import Backend, Document
from tests.doubles import HashEncoder, indexed

DOCS = [
    Document(
        "a",
        "fraud statute limitations",
        "A",
        "legal",
        {"lang": "en", "year": 2019, "tags": ["x", "y"], "date": "2019-05-01", "source": "court"},
    ),
    Document(
        "b", "fraud detection cards", "B", "legal", {"lang": "de", "year": 2020, "tags": ["y"], "date": "2020-01-15"}
    ),
    Document(
        "c",
        "vitamin supplements fraud",
        "C",
        "medical",
        {"lang": "en", "year": 2021, "tags": ["z"], "date": "2021-07-30", "source": "journal"},
    ),
    Document("d", "vitamin bone density", "D", "medical", {"lang": "fr", "year": 2022, "date": "2022-02-02"}),
    Document(
        "e", "attention tokens fraud", "E", None, {"lang": "en", "year": 2023, "tags": ["x"], "date": "2023-12-31"}
    ),
    Document("f", "contract consideration fraud", "F", "legal", {"lang": "en", "year": 2018.5}),
]
FILTER_CASES = {
    "equals": ({"lang": "en"}, {"a", "c", "e", "f"}),
    "any-of": ({"lang": ["de", "fr"]}, {"b", "d"}),
    "list field holds": ({"tags": "x"}, {"a", "e"}),
    "not equal": ({"lang": {"ne": "en"}}, {"b", "d"}),
    "number range": ({"year": {"gte": 2020, "lt": 2023}}, {"b", "c", "d"}),
    "fractional bound": ({"year": {"lt": 2019}}, {"f"}),
    "date range": ({"date": {"gt": "2020-01-15", "lte": "2022-12-31"}}, {"c", "d"}),
    "exists": ({"source": {"exists": True}}, {"a", "c"}),
    "absent": ({"tags": {"exists": False}}, {"d", "f"}),
    "all must hold": ({"lang": "en", "year": {"gte": 2021}}, {"c", "e"}),
}


@dataclass
class Contract:
    name: str
    backend: Backend


def _embedded(tmp_path: Path) -> Iterator[Contract]:
    from connectors.embedded import EmbeddedBackend

    backend = EmbeddedBackend(tmp_path / "embedded", 16)
    try:
        yield Contract("embedded", backend)
    finally:
        backend.close()


def _opensearch(node: str) -> Callable[[Path], Iterator[Contract]]:
    def make(_tmp: Path) -> Iterator[Contract]:
        from connectors.opensearch import admin
        from tests.connectors.opensearch.conftest import _make_target

        for target in _make_target(node):
            backend = target.backend(16)
            admin.setup(backend, target.settings, dimension=16, encoder_version="hash-a")
            yield Contract(node, backend)

    return make


def _elasticsearch(node: str) -> Callable[[Path], Iterator[Contract]]:
    def make(_tmp: Path) -> Iterator[Contract]:
        from tests.connectors.elasticsearch.conftest import make_target

        for target in make_target(node):
            yield Contract(node, target.ready())

    return make


BACKENDS: dict[str, Callable[[Path], Iterator[Contract]]] = {
    "embedded": _embedded,
    "os2.19": _opensearch("os2.19"),
    "os3.5": _opensearch("os3.5"),
    "es8": _elasticsearch("es8"),
    "es9": _elasticsearch("es9"),
}


@pytest.fixture(
    params=[pytest.param(name, marks=() if name == "embedded" else pytest.mark.cluster) for name in BACKENDS]
)
def contract(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Contract]:
    yield from BACKENDS[request.param](tmp_path / uuid.uuid4().hex[:6])


def refreshed(backend: Backend) -> Backend:
    refresh = getattr(backend, "refresh", None)
    if callable(refresh):
        refresh()
    return backend


def loaded(contract: Contract) -> Backend:
    contract.backend.upsert(indexed(HashEncoder(), DOCS))
    return refreshed(contract.backend)


def test_writes_by_id_reads_and_counts(contract: Contract) -> None:
    backend = contract.backend
    backend.upsert(indexed(HashEncoder(), DOCS))
    backend.upsert(indexed(HashEncoder(), DOCS))  # a repeated batch leaves one copy
    refreshed(backend)
    assert backend.count() == len(DOCS) and backend.count("legal") == 3 and backend.count("nope") == 0
    assert backend.domain_counts() == {"legal": 3, "medical": 2}
    assert backend.get(["a", "missing"]) == {"a": DOCS[0]}
    assert backend.versions(["a", "missing"]) == {"a": "hash-a"}
    changed = Document("a", "rewritten", "A2", "legal", {"lang": "en"})
    backend.upsert(indexed(HashEncoder("hash-b"), [changed]))
    refreshed(backend)
    assert backend.get(["a"]) == {"a": changed} and backend.versions(["a"]) == {"a": "hash-b"}
    assert backend.count() == len(DOCS)
    assert backend.delete(["a", "b", "missing"]) == 2
    assert backend.count() == len(DOCS) - 2 and backend.get(["a", "b"]) == {}


def test_every_search_mode_ranks_and_scores(contract: Contract) -> None:
    backend = loaded(contract)
    bm25 = backend.bm25_search("vitamin bone", 10)
    assert bm25[0][0] == "d" and {i for i, _ in bm25} == {"c", "d"}
    enc = HashEncoder()
    query = enc.encode_queries(["fraud statute"]).vectors[0]
    vectors = {d.document.id: d.vector for d in indexed(enc, DOCS)}
    exact = sorted(((i, float(v @ query)) for i, v in vectors.items()), key=lambda x: -x[1])
    dense = backend.dense_search(query, 3)
    assert [i for i, _ in dense] == [i for i, _ in exact[:3]]
    assert [s for _, s in dense] == pytest.approx([s for _, s in exact[:3]], abs=1e-5)
    for mode in ("bm25", "dense", "hybrid"):
        hits = search("fraud statute", backend=backend, encoder=enc, settings=SearchSettings(), k=3, mode=mode)
        assert len(hits) == 3 and hits[0].id == "a", mode
        assert all(h.score >= hits[-1].score for h in hits)
    legal = search("vitamin fraud", backend=backend, encoder=enc, settings=SearchSettings(), domain="legal", k=5)
    assert {h.id for h in legal} <= {"a", "b", "f"} and all(h.domain == "legal" for h in legal)


@pytest.mark.parametrize("case", list(FILTER_CASES))
def test_metadata_filters_apply_before_top_k_in_every_mode(contract: Contract, case: str) -> None:
    backend = loaded(contract)
    spec, expected = FILTER_CASES[case]
    filters = parse_filters(spec)
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    assert {i for i, _ in backend.dense_search(query, 10, filters=filters)} == expected  # every match, none else
    assert {i for i, _ in backend.dense_search(query, 1, filters=filters)} <= expected
    bm25 = {i for i, _ in backend.bm25_search("fraud", 10, filters=filters)}
    assert bm25 == expected & {"a", "b", "c", "e", "f"}  # the documents holding "fraud"
    hybrid = search("fraud", backend=backend, encoder=HashEncoder(), settings=SearchSettings(), k=10, filters=filters)
    assert {h.id for h in hybrid} == expected
    with_domain = {i for i, _ in backend.dense_search(query, 10, domain="legal", filters=filters)}
    assert with_domain == expected & {"a", "b", "f"}


def test_a_bad_filter_is_one_clear_error() -> None:
    for spec, message in (
        ({"year": {"between": [1, 2]}}, "unknown operator 'between'"),
        ({"year": {"gte": "soon"}}, "neither a number nor an ISO-8601 date"),
        ({"year": {"gte": 2020, "lt": "2024-01-01"}}, "numbers or dates, not both"),
        ({"lang": []}, "an empty list matches nothing"),
        ({"bad key!": 1}, "filter key 'bad key!'"),
        ({"lang": {"a": 1}}, "unknown operator"),
    ):
        with pytest.raises(InputError, match=message):
            parse_filters(spec)
    assert {c.key for c in parse_filters({"source.site": "x"})} == {"source.site"}


def test_hybrid_uses_the_fusion_tuned_for_the_routed_module(contract: Contract) -> None:
    """A module's stored fusion weights (chosen on its dev queries) are what search fuses with; a query
    routed to no module uses the general module's; weights the user set win over both."""
    from ddr_search.fusion import FusionConfig, fuse

    tuned = {"legal": FusionConfig(weights=(0.9, 0.1)), "general": FusionConfig(weights=(0.2, 0.8))}
    encoder = HashEncoder(fusion=tuned)
    backend = loaded(contract)
    text = "fraud vitamin statute"
    vector = encoder.encode_queries([text]).vectors[0]
    bm25 = backend.bm25_search(text, 100)
    dense = backend.dense_search(vector, 100)
    for domain, expected, settings in (
        ("legal", tuned["legal"], SearchSettings()),
        (None, tuned["general"], SearchSettings()),
        (None, FusionConfig(weights=(0.6, 0.4)), SearchSettings(combination_weights=(0.6, 0.4))),
    ):
        hits = search(text, backend=backend, encoder=encoder, settings=settings, domain=domain, k=6)
        if domain is not None:
            bm25_d = backend.bm25_search(text, 100, domain=domain)
            dense_d = backend.dense_search(vector, 100, domain=domain)
            reference = fuse([bm25_d, dense_d], expected, k=6)
        else:
            reference = fuse([bm25, dense], expected, k=6)
        assert [h.id for h in hits] == [f.id for f in reference], (domain, expected)
        assert [h.score for h in hits] == pytest.approx([f.score for f in reference], abs=1e-4)
