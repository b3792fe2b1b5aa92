"""What every cluster backend (OpenSearch 2.19.1 / 3.5.0, Elasticsearch 8.19.8 / 9.2.0) must do alike beyond
the backend contract: idempotent setup behind a versioned alias, a clear error before setup, hybrid paging
with per-hit sub-scores, and reindex into a new encoder version with one alias switch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ddr_search.errors import BackendError
from ddr_search.fusion import FusionConfig, Technique
from ddr_search.types import Encoder
from tests.doubles import CORPUS, HashEncoder, indexed

pytestmark = pytest.mark.cluster


@dataclass
class Cluster:
    name: str
    backend: Any  # OpenSearchBackend | ElasticsearchBackend
    setup: Callable[[str], list[str]]  # encoder version -> actions taken
    reindex: Callable[[Encoder], Any]  # -> ReindexReport
    alias: str


def _opensearch(node: str) -> Iterator[Cluster]:
    from connectors.opensearch import admin
    from tests.connectors.opensearch.conftest import _make_target

    targets = _make_target(node)
    target = next(targets)
    backend = target.backend(16, hybrid="client")
    try:
        yield Cluster(
            node,
            backend,
            lambda v: admin.setup(backend, target.settings, dimension=16, encoder_version=v).actions,
            lambda enc: admin.reindex(backend, target.settings, enc, batch_size=4),
            target.settings.index,
        )
    finally:
        targets.close()  # the target's own clean-up


def _elasticsearch(node: str) -> Iterator[Cluster]:
    from connectors.elasticsearch import admin
    from tests.connectors.elasticsearch.conftest import make_target

    targets = make_target(node)
    target = next(targets)
    backend = target.backend(16)
    try:
        yield Cluster(
            node,
            backend,
            lambda v: admin.setup(backend, target.settings, dimension=16, encoder_version=v).actions,
            lambda enc: admin.reindex(backend, target.settings, enc, batch_size=4),
            target.settings.index,
        )
    finally:
        targets.close()  # the target's own clean-up


CLUSTERS: dict[str, Callable[[str], Iterator[Cluster]]] = {
    "os2.19": _opensearch,
    "os3.5": _opensearch,
    "es8": _elasticsearch,
    "es9": _elasticsearch,
}


@pytest.fixture(params=list(CLUSTERS))
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    yield from CLUSTERS[request.param](request.param)


def test_writes_before_setup_say_what_to_do_and_setup_is_idempotent(cluster: Cluster) -> None:
    with pytest.raises(BackendError, match=r"does not exist .*run `ddr-search setup` first"):
        cluster.backend.upsert(indexed(HashEncoder()))
    first = cluster.setup("hash-a")
    assert first == [f"created index {cluster.alias}-vhash-a", f"alias {cluster.alias} -> {cluster.alias}-vhash-a"]
    assert cluster.setup("hash-a") == []
    assert cluster.backend.indices() == [f"{cluster.alias}-vhash-a"]


@pytest.mark.parametrize("technique", [Technique.MIN_MAX, Technique.RRF], ids=str)
def test_hybrid_pages_one_fused_ranking_with_sub_scores(cluster: Cluster, technique: Technique) -> None:
    cluster.setup("hash-a")
    cluster.backend.upsert(indexed(HashEncoder()))
    cluster.backend.refresh()
    text = "fraud vitamin court"
    query = HashEncoder().encode_queries([text]).vectors[0]
    config = FusionConfig(technique)
    whole = cluster.backend.hybrid_search(text, query, 9, config=config, candidates=10)
    pages = [cluster.backend.hybrid_search(text, query, 3, config=config, candidates=10, offset=o) for o in (0, 3, 6)]
    assert [f.id for page in pages for f in page] == [f.id for f in whole] and len(whole) == 9
    bm25 = dict(cluster.backend.bm25_search(text, 10))
    dense = dict(cluster.backend.dense_search(query, 10))
    for hit in whole:
        assert hit.sub_scores[0] == (pytest.approx(bm25[hit.id]) if hit.id in bm25 else None)
        assert hit.sub_scores[1] == pytest.approx(dense[hit.id], abs=1e-5)
    assert cluster.backend.hybrid_search(text, query, 3, config=config, candidates=10, offset=60) == []


def test_reindex_switches_the_alias_once_and_keeps_every_document(cluster: Cluster) -> None:
    cluster.setup("hash-a")
    cluster.backend.upsert(indexed(HashEncoder()))
    report = cluster.reindex(HashEncoder("hash-b"))
    assert report.switched and report.documents == len(CORPUS)
    assert cluster.backend.indices() == [f"{cluster.alias}-vhash-b"]
    assert cluster.backend.get([d.id for d in CORPUS]) == {d.id: d for d in CORPUS}
    assert set(cluster.backend.versions([d.id for d in CORPUS]).values()) == {"hash-b"}
    again = cluster.reindex(HashEncoder("hash-b"))
    assert not again.switched and "nothing to do" in again.note
