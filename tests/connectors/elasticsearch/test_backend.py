"""The Elasticsearch backend on real 8.19.8 and 9.2.0 nodes, as the least-privileged file-realm user:
setup, writes, every search mode with filters, paging, rejections, reindex with searches running, errors."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from connectors.elasticsearch import admin
from connectors.elasticsearch.client import build_client, wrapped
from ddr_search.errors import BackendError, ConfigError, DocumentsRejected
from ddr_search.filters import parse_filters
from ddr_search.fusion import FusionConfig, Technique, fuse
from ddr_search.types import Document
from tests.connectors.elasticsearch.conftest import NODES, EsTarget, settings_env
from tests.doubles import CORPUS, HashEncoder, indexed


def loaded(target: EsTarget, **kwargs: object):
    backend = target.ready(**kwargs)
    backend.upsert(indexed(HashEncoder()))
    backend.refresh()
    return backend


def test_setup_twice_creates_template_index_and_alias_once(es_target: EsTarget) -> None:
    backend = es_target.backend()
    first = admin.setup(backend, es_target.settings, dimension=16, encoder_version="hash-a")
    alias = es_target.settings.index
    assert first.actions == [f"created index {alias}-vhash-a", f"alias {alias} -> {alias}-vhash-a"]
    assert admin.setup(backend, es_target.settings, dimension=16, encoder_version="hash-a").actions == []
    if es_target.name in NODES:
        assert first.info.version[0] == int(NODES[es_target.name].split("-")[1].split(".")[0])
    mapping = build_client(es_target.admin_settings).indices.get_mapping(index=f"{alias}-vhash-a")
    vector = mapping[f"{alias}-vhash-a"]["mappings"]["properties"]["embedding"]
    assert (vector["type"], vector["dims"], vector["similarity"], vector["index_options"]["type"]) == (
        "dense_vector",
        16,
        "dot_product",
        "hnsw",
    )
    with pytest.raises(BackendError, match="16-dimensional vectors but the encoder makes 8"):
        admin.setup(backend, es_target.settings, dimension=8, encoder_version="hash-a")


def test_the_default_analyzer_on_a_cluster_without_analysis_common_is_one_line(es_target: EsTarget) -> None:
    if es_target.name not in NODES:
        pytest.skip("a real cluster has analysis-common")
    english = es_target.settings.model_copy(update={"analyzer": "english"})
    with pytest.raises(
        ConfigError, match=r"no analysis-common .* set DDR_ELASTICSEARCH__ANALYZER=client .* or standard"
    ):
        admin.setup(es_target.backend(), english, dimension=16, encoder_version="hash-a")


def test_writes_are_idempotent_by_id_and_reads_round_trip(es_target: EsTarget) -> None:
    backend = es_target.ready()
    docs = indexed(HashEncoder())
    backend.upsert(docs)
    backend.upsert(docs)  # a redelivered batch
    backend.refresh()
    assert backend.count() == len(CORPUS) and backend.count("legal") == 4
    assert backend.domain_counts() == {"legal": 4, "medical": 4}
    assert backend.get(["d1", "nope"]) == {"d1": CORPUS[0]}
    assert backend.versions(["d1", "nope"]) == {"d1": "hash-a"}
    changed = Document("d1", "Rewritten text about equity.", "Equity", "legal", {"year": 2024})
    backend.upsert(indexed(HashEncoder(), [changed]))
    assert backend.get(["d1"])["d1"] == changed  # mget is real time
    assert backend.delete(["d1", "d2", "nope"]) == 2 and backend.count() == len(CORPUS) - 2


def test_a_refused_document_is_named_and_the_rest_are_indexed(es_target: EsTarget) -> None:
    backend = es_target.ready()
    backend.upsert(indexed(HashEncoder(), CORPUS[:1]))  # metadata.year -> long
    bad = Document("bad", "a year in words", "Odd", None, {"year": "nineteen"})
    with pytest.raises(
        DocumentsRejected,
        match=r"1 of 2 documents were not indexed: id 'bad': "
        r"document_parsing_exception|mapper_parsing_exception",
    ) as caught:
        backend.upsert(indexed(HashEncoder(), [bad, CORPUS[1]]))
    assert list(caught.value.failures) == ["bad"]
    backend.refresh()
    assert backend.count() == 2


def test_bm25_and_dense_with_domain_and_metadata_filters(es_target: EsTarget) -> None:
    backend = loaded(es_target)
    ids = [i for i, _ in backend.bm25_search("fraud limitations", 10)]
    assert set(ids) == {"d1", "d8", "d9"} and ids[-1] == "d8"
    assert {i for i, _ in backend.bm25_search("fraud limitations", 10, domain="legal")} == {"d1", "d9"}
    assert [i for i, _ in backend.bm25_search("vitamin", 10, filters=parse_filters({"year": 2020}))] == ["d10"]
    enc = HashEncoder()
    query = enc.encode_queries(["fraud limitations period"]).vectors[0]
    vectors = {d.document.id: d.vector for d in indexed(enc)}
    expected = sorted(((i, float(v @ query)) for i, v in vectors.items()), key=lambda x: -x[1])
    hits = backend.dense_search(query, 4)
    assert [i for i, _ in hits] == [i for i, _ in expected[:4]]
    assert [s for _, s in hits] == pytest.approx([s for _, s in expected[:4]], abs=1e-5)
    medical = backend.dense_search(query, 3, domain="medical")
    assert len(medical) == 3 and {i for i, _ in medical} <= {d.id for d in CORPUS if d.domain == "medical"}
    years = parse_filters({"year": [2019, 2020]})
    assert {i for i, _ in backend.dense_search(query, 5, filters=years)} == {"d1", "d2", "d4", "d10"}


@pytest.mark.parametrize("technique", list(Technique), ids=str)
def test_hybrid_is_the_fusion_of_the_two_searches_and_pages_that_ranking(es_target: EsTarget, technique) -> None:
    backend = loaded(es_target)
    config = FusionConfig(technique, (0.3, 0.7))
    text = "fraud vitamin court"
    query = HashEncoder().encode_queries([text]).vectors[0]
    got = backend.hybrid_search(text, query, 9, config=config, candidates=10)
    want = fuse([backend.bm25_search(text, 10), backend.dense_search(query, 10)], config, k=9)
    assert [(f.id, round(f.score, 6)) for f in got] == [(f.id, round(f.score, 6)) for f in want]
    pages = [backend.hybrid_search(text, query, 3, config=config, candidates=10, offset=o) for o in (0, 3, 6)]
    assert [f.id for page in pages for f in page] == [f.id for f in got]
    assert backend.hybrid_search(text, query, 5, config=config, candidates=10, offset=50) == []


def test_reindex_with_searches_running_throughout(es_target: EsTarget) -> None:
    backend = loaded(es_target)
    alias = es_target.settings.index
    searcher = es_target.backend()
    served: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def search_until_done() -> None:
        after = 0
        while after < 3 or len(served) < 5:
            after += done.is_set()
            try:
                assert len(searcher.bm25_search("fraud limitations", 10)) == 3
                response = searcher.client.search(index=alias, size=1, query={"match_all": {}})
                served.append(response["hits"]["hits"][0]["_index"])
            except BaseException as e:  # reported below
                errors.append(e)
                return

    thread = threading.Thread(target=search_until_done)
    thread.start()
    try:
        report = admin.reindex(backend, es_target.settings, HashEncoder("hash-b"), batch_size=3, delete_old=True)
    finally:
        done.set()
        thread.join(timeout=60)
    assert errors == [] and report.switched and report.documents == len(CORPUS)
    assert sum(1 for a, b in itertools.pairwise(served) if a != b) <= 1 and served[-1] == f"{alias}-vhash-b"
    assert backend.indices() == [f"{alias}-vhash-b"]
    assert backend.versions(["d1"]) == {"d1": "hash-b"}


def test_the_role_is_refused_everything_else_in_one_line(es_target: EsTarget) -> None:
    if es_target.name not in NODES:
        pytest.skip("the test nodes' file-realm user")
    client = build_client(es_target.settings)
    with (
        pytest.raises(BackendError, match="403 forbidden: the user lacks a permission"),
        wrapped("create index", es_target.settings.url),
    ):
        client.indices.create(index="not-ddr-index")


def test_a_wrong_password_and_a_dead_cluster_are_one_clear_line(es_target: EsTarget) -> None:
    from pydantic import SecretStr

    secret = "Not-The-Password-7!"
    wrong = es_target.settings.model_copy(update={"password": SecretStr(secret)})
    backend = type(es_target)(es_target.name, wrong, wrong).backend()
    with pytest.raises(BackendError) as caught:
        backend.count()
    assert "401 unauthorized" in str(caught.value) and secret not in str(caught.value)
    from tests.workers.conftest import closed_port

    dead = es_target.settings.model_copy(
        update={"url": f"{es_target.settings.url.split(':')[0]}://127.0.0.1:{closed_port()}", "timeout_s": 2}
    )
    started = time.monotonic()
    with pytest.raises(BackendError, match="connection failed"):
        type(es_target)(es_target.name, dead, dead).backend().count()
    assert time.monotonic() - started < 3


def test_the_client_and_the_cli_run_on_elasticsearch_through_the_settings(
    es_target: EsTarget, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ddr_search.cli.main import cli
    from ddr_search.client import DDRSearch
    from ddr_search.settings import Settings

    s = es_target.settings
    for key, value in settings_env(s).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DDR_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("ddr_search.factory.build_encoder", lambda settings: HashEncoder())
    result = CliRunner().invoke(cli, ["setup"])
    assert result.exit_code == 0, result.output
    assert "cluster: elasticsearch" in result.output and f"alias {s.index}" in result.output
    if es_target.name in NODES:  # the integ-test zips lack the rank-rrf module: both refused, and said so
        assert "cluster retrievers: rrf unavailable (400 parsing_exception: unknown retriever [rrf])" in result.output
        assert "linear unavailable (400 parsing_exception: unknown retriever [linear])" in result.output
    with DDRSearch(Settings(), encoder=HashEncoder()) as ddr:
        assert ddr.backend.kind == "elasticsearch"
        ddr.ingest(CORPUS)
        for mode in ("bm25", "dense", "hybrid"):
            assert ddr.search("fraud limitations", k=3, mode=mode), mode
        described = ddr.backend.describe()
        assert set(described["cluster_retrievers"]) == {"rrf", "linear"}
        hits = ddr.search("vitamin", domain="medical", k=2)
        assert hits and all(h.domain == "medical" for h in hits)
    assert np.isfinite([h.score for h in hits]).all()


@pytest.mark.slow
def test_a_real_worker_ingests_into_elasticsearch(
    es_target: EsTarget, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Celery workers write to Elasticsearch unchanged: a real `ddr-search worker` embeds a job into it."""
    import uuid

    from ddr_search.factory import build_encoder
    from ddr_search.settings import Settings
    from tests.conftest import service_missing
    from tests.workers.conftest import REDIS_URL, ingest_through_a_worker, reachable, worker_env, write_corpus

    if not reachable(6379):
        service_missing("Redis is not running on localhost:6379")
    s = es_target.settings
    queue = f"ddr-test-es-{uuid.uuid4().hex[:8]}"
    env = worker_env(tmp_path / "home", REDIS_URL, queue, **settings_env(s))
    for key, value in env.items():
        if key.startswith("DDR_"):
            monkeypatch.setenv(key, value)
    ids = write_corpus(tmp_path / "corpus.jsonl", 60)
    settings = Settings()
    encoder = build_encoder(settings)
    backend = es_target.ready(encoder.dimension, encoder.version)
    status = ingest_through_a_worker(env, tmp_path / "corpus.jsonl", tmp_path / "worker.log")
    assert (status.state.value, status.indexed, status.failures) == ("done", 60, {})
    assert backend.count() == 60 and sorted(backend.get(ids)) == sorted(ids)  # refreshed by the worker
