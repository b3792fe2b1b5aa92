"""Bulk writes on the real nodes: idempotent by id, per-document failures named, retries on 429/5xx."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.opensearch import admin
from ddr_search.errors import BackendError
from ddr_search.types import Document, IndexedDocument
from tests.connectors.opensearch.conftest import Target
from tests.doubles import CORPUS, HashEncoder, indexed


def ready(target: Target, **kwargs: object):
    backend = target.backend(16, **kwargs)
    admin.setup(backend, target.settings, dimension=16, encoder_version="hash-a")
    return backend


def test_upsert_is_idempotent_and_round_trips(target: Target) -> None:
    backend = ready(target)
    docs = indexed(HashEncoder())
    backend.upsert(docs)
    backend.upsert(docs)  # a redelivered batch
    backend.refresh()
    assert backend.count() == len(CORPUS)
    assert backend.count("legal") == 4 and backend.count("medical") == 4
    assert backend.domain_counts() == {"legal": 4, "medical": 4}
    got = backend.get(["d1", "d7", "missing"])
    assert set(got) == {"d1", "d7"}
    assert got["d1"] == CORPUS[0]
    assert got["d7"].domain is None and got["d7"].metadata == {"year": 2017}


def test_upsert_replaces_by_id(target: Target) -> None:
    backend = ready(target)
    enc = HashEncoder()
    backend.upsert(indexed(enc))
    backend.refresh()
    changed = Document("d1", "Rewritten text about equity.", "Equity", "legal", {"year": 2024})
    backend.upsert(indexed(enc, [changed]))
    backend.refresh()
    assert backend.count() == len(CORPUS)
    assert backend.get(["d1"])["d1"] == changed


def test_delete_counts_only_existing_ids(target: Target) -> None:
    backend = ready(target)
    backend.upsert(indexed(HashEncoder()))
    backend.refresh()
    assert backend.delete(["d1", "d2", "nope"]) == 2
    assert backend.count() == len(CORPUS) - 2
    assert backend.delete(["d1"]) == 0


def test_partial_failure_names_each_rejected_document_and_keeps_the_rest(target: Target) -> None:
    """A real mapping conflict: metadata.year is mapped `long` by the first batch; text there is refused."""
    backend = ready(target)
    enc = HashEncoder()
    backend.upsert(indexed(enc, CORPUS[:2]))
    backend.refresh()
    bad = [
        Document("bad1", "some text", "t", "legal", {"year": "not a year"}),
        Document("ok1", "fine text", "t", "legal", {"year": 2001}),
        Document("bad2", "more text", "t", None, {"year": {"nested": True}}),
    ]
    with pytest.raises(BackendError) as info:
        backend.upsert(indexed(enc, bad))
    message = str(info.value)
    assert message.startswith("2 of 3 documents were not indexed")
    assert "id 'bad1'" in message and "id 'bad2'" in message and "ok1" not in message
    assert "metadata.year" in message  # the reason from the cluster
    backend.refresh()
    assert backend.count() == 3  # the two good ones before, plus ok1: nothing silently dropped or kept
    assert set(backend.get(["ok1", "bad1", "bad2"])) == {"ok1"}


def test_wrong_vector_dimension_is_refused_before_sending(target: Target) -> None:
    backend = ready(target)
    doc = IndexedDocument(CORPUS[0], np.ones(8, dtype=np.float32), "hash-a")
    with pytest.raises(BackendError, match="'d1': vector has 8 dimensions, the index expects 16"):
        backend.upsert([doc])


def test_cluster_rejects_a_wrong_dimension_per_document(target: Target) -> None:
    """The same check done by the cluster (dimension unknown to the client): reported per id."""
    backend = ready(target)
    backend.dimension = None
    good = indexed(HashEncoder(), CORPUS[:1])
    wrong = IndexedDocument(CORPUS[1], np.ones(3, dtype=np.float32), "hash-a")
    with pytest.raises(BackendError, match=r"1 of 2 documents were not indexed: id 'd2': mapper_parsing_exception"):
        backend.upsert([*good, wrong])
    backend.refresh()
    assert backend.count() == 1


def test_bulk_retries_whole_request_503_and_item_429_with_backoff(faulty_target: Target) -> None:
    backend = ready(faulty_target, chunk_size=4)
    state = faulty_target.faults
    assert state is not None
    state.fail_bulk_requests = 2  # the first two bulk requests answer 503
    state.reject_items_once = {"d2", "d6"}  # then these two are refused once with 429
    backend.upsert(indexed(HashEncoder()))
    backend.refresh()
    assert backend.count() == len(CORPUS)
    sent = state.bulk_bodies
    assert sent[0] == sent[1] == sent[2] == ["d1", "d2", "d3", "d4"]  # 503, 503, then accepted but d2 429
    assert sent[3] == ["d2"]  # only the rejected item is retried
    assert ["d6"] in sent


def test_bulk_gives_up_after_max_retries_with_a_clear_error(faulty_target: Target) -> None:
    backend = ready(faulty_target, max_retries=2)
    assert faulty_target.faults is not None
    faulty_target.faults.fail_bulk_requests = 10
    with pytest.raises(BackendError, match=r"bulk index into .*: 503 unavailable_shards_exception"):
        backend.upsert(indexed(HashEncoder()))
    assert len(faulty_target.faults.bulk_bodies) == 3


def test_is_a_backend_built_by_the_factory_and_describes_itself(target: Target) -> None:
    from ddr_search.factory import build_backend
    from ddr_search.settings import Settings
    from ddr_search.types import Backend

    backend = build_backend(Settings(opensearch=target.settings), 16)
    assert isinstance(backend, Backend) and backend.kind == "opensearch"
    admin.setup(backend, target.settings, dimension=16, encoder_version="hash-a")
    backend.upsert(indexed(HashEncoder()))
    backend.refresh()
    info = backend.describe()
    assert info["alias"] == target.settings.index and info["indices"] == [f"{target.settings.index}-vhash-a"]
    assert info["encoder_versions"] == {"hash-a": len(CORPUS)}
    assert "@" not in str(info["url"])
    backend.close()


def test_writes_and_searches_before_setup_say_what_to_do(target: Target) -> None:
    backend = target.backend(16)
    with pytest.raises(BackendError, match=r"alias ddr-test-\w+ does not exist .*run `ddr-search setup` first"):
        backend.upsert(indexed(HashEncoder()))
    assert not target.client().indices.exists(index=target.settings.index)  # nothing auto-created
    with pytest.raises(BackendError, match=r"404 index_not_found_exception.*run `ddr-search setup` first"):
        backend.bm25_search("fraud", 3)


def test_bulk_requests_never_wait_for_a_refresh_and_one_refresh_makes_all_searchable(faulty_target: Target) -> None:
    backend = ready(faulty_target, chunk_size=3)
    backend.upsert(indexed(HashEncoder()))
    params = faulty_target.faults.bulk_params
    assert len(params) == 4 and all(p.get("refresh") in (None, False, "false", b"false") for p in params)
    backend.refresh()
    assert backend.count() == len(CORPUS)


def test_a_mapping_conflict_fails_that_document_only_and_a_worker_batch_keeps_the_rest(target: Target) -> None:
    """`metadata.year` is mapped as a number by the first document; a later text year is refused for good:
    the batch records that id as failed (no retry of the whole batch) and indexes every other document."""
    from ddr_search.errors import DocumentsRejected
    from workers.batch import index_batch

    backend = ready(target)
    backend.upsert(indexed(HashEncoder(), CORPUS[:1]))  # year: 2019 -> long
    backend.refresh()
    bad = {"id": "bad", "title": "Odd", "text": "a year in words", "metadata": {"year": "nineteen"}}
    good = [
        {"id": d.id, "title": d.title, "text": d.text, "domain": d.domain, "metadata": dict(d.metadata)}
        for d in CORPUS[1:4]
    ]
    with pytest.raises(DocumentsRejected) as caught:
        backend.upsert(indexed(HashEncoder(), [Document("bad", "a year in words", "Odd", None, {"year": "nineteen"})]))
    assert list(caught.value.failures) == ["bad"]
    outcome = index_batch([good[0], bad, *good[1:]], HashEncoder(), backend)
    assert outcome.indexed == 3
    assert list(outcome.failures) == ["bad"] and "mapper_parsing_exception" in outcome.failures["bad"]
    backend.refresh()
    assert backend.count() == 4


def test_an_ingest_refuses_moving_ids_between_domains_and_skips_what_is_stored(target: Target, tmp_path) -> None:
    """The client's ingest over OpenSearch: a cross-domain overwrite is refused before anything is written,
    and a re-run encodes only documents the index does not hold with the same content and encoder."""
    from ddr_search.client import DDRSearch
    from ddr_search.errors import InputError
    from ddr_search.settings import Settings

    backend = ready(target)
    encoder = HashEncoder()
    cooking = [{"id": f"c{i}", "text": f"recipe {i} with garlic"} for i in range(6)]
    with DDRSearch(Settings(home=tmp_path / "home"), encoder=encoder, backend=backend) as ddr:
        ddr.ingest(cooking, domain="cooking")
        assert encoder.encoded == 6
        with pytest.raises(InputError, match=r"1 documents are stored already under another domain .*'c2'"):
            ddr.ingest([{"id": "c2", "text": "a comet"}, {"id": "s1", "text": "a star"}], domain="astro")
        assert backend.count() == 6 and backend.get(["s1"]) == {}
        report = ddr.ingest([*cooking, {"id": "c6", "text": "recipe 6 with basil"}], domain="cooking")
        assert encoder.encoded == 7 and (report.written, report.unchanged) == (1, 6)
        ddr.ingest([{"id": "c2", "text": "a comet"}], domain="astro", allow_domain_change=True)
        assert backend.get(["c2"])["c2"].domain == "astro"
