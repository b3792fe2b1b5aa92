"""Re-embedding on the real nodes: the alias serves the old version while the new one fills, then one
atomic `_aliases` switch; any failure leaves the alias where it was."""

from __future__ import annotations

import itertools

import pytest

from connectors.opensearch import admin
from ddr_search.errors import BackendError
from tests.connectors.opensearch.conftest import Target
from tests.doubles import CORPUS, HashEncoder, indexed


def serving(target: Target) -> list[str]:
    return sorted(target.client().indices.get_alias(name=target.settings.index))


def loaded(target: Target):
    backend = target.backend(16)
    admin.setup(backend, target.settings, dimension=16, encoder_version="hash-a")
    backend.upsert(indexed(HashEncoder("hash-a")))
    backend.refresh()
    return backend


def test_reindex_fills_a_new_version_then_switches_the_alias_atomically(target: Target) -> None:
    backend = loaded(target)
    alias = target.settings.index
    old, new = f"{alias}-vhash-a", f"{alias}-vhash-b"
    seen: list[tuple[int, list[str], int]] = []

    def during(written: int) -> None:  # search keeps being served by the old version while filling
        seen.append((written, serving(target), backend.count()))

    report = admin.reindex(backend, target.settings, HashEncoder("hash-b", dimension=8), batch_size=4, on_batch=during)
    assert seen == [(4, [old], 10), (8, [old], 10), (10, [old], 10)]
    assert report.switched and report.new_index == new and report.old_indices == [old] and report.documents == 10
    assert serving(target) == [new]
    client = target.client()
    assert client.indices.get_alias(name=alias)[new]["aliases"][alias] == {"is_write_index": True}
    assert client.indices.exists(index=old)  # kept for rollback unless --delete-old
    mapping = client.indices.get_mapping(index=new)[new]["mappings"]
    assert mapping["properties"]["embedding"]["dimension"] == 8
    assert mapping["_meta"]["encoder_version"] == "hash-b"
    # the documents came across intact, each re-embedded by the new encoder
    assert backend.get([d.id for d in CORPUS]) == {d.id: d for d in CORPUS}
    source = client.get(index=alias, id="d1")["_source"]
    assert source["encoder_version"] == "hash-b" and len(source["embedding"]) == 8
    assert backend.bm25_search("fraud limitations", 3)[0][0] in ("d1", "d9")


def test_reindex_is_a_no_op_when_the_alias_already_serves_this_version(target: Target) -> None:
    backend = loaded(target)
    report = admin.reindex(backend, target.settings, HashEncoder("hash-a"))
    assert not report.switched and "nothing to do" in report.note
    assert serving(target) == [f"{target.settings.index}-vhash-a"]


def test_reindex_delete_old(target: Target) -> None:
    backend = loaded(target)
    report = admin.reindex(backend, target.settings, HashEncoder("hash-b"), delete_old=True)
    assert report.deleted_old
    assert not target.client().indices.exists(index=f"{target.settings.index}-vhash-a")
    assert backend.count() == len(CORPUS)


def test_a_crash_mid_fill_leaves_the_alias_untouched_and_cleans_up(target: Target) -> None:
    backend = loaded(target)
    alias = target.settings.index
    with pytest.raises(RuntimeError, match="injected encoder crash"):
        admin.reindex(backend, target.settings, HashEncoder("hash-b", fail_after=5), batch_size=4)
    assert serving(target) == [f"{alias}-vhash-a"]
    assert not target.client().indices.exists(index=f"{alias}-vhash-b")  # no half-filled index left
    assert backend.count() == len(CORPUS)
    # and a retry then succeeds
    assert admin.reindex(backend, target.settings, HashEncoder("hash-b"), batch_size=4).switched


def test_a_document_the_new_index_refuses_aborts_before_the_switch(target: Target) -> None:
    """Another team's higher-priority template maps metadata.court as integer for the new version's
    index: the document with court "appeals" is refused -> BackendError naming it; alias unchanged."""
    backend = loaded(target)
    alias = target.settings.index
    client = target.client()
    client.indices.put_index_template(
        name=f"{alias}-strict",
        body={
            "index_patterns": [f"{alias}-vhash-c*"],
            "priority": 500,
            "template": {"mappings": {"properties": {"metadata": {"properties": {"court": {"type": "integer"}}}}}},
        },
    )
    try:
        with pytest.raises(BackendError, match=r"1 of 4 documents were not indexed: id 'd1'.*metadata.court"):
            admin.reindex(backend, target.settings, HashEncoder("hash-c"), batch_size=4)
    finally:
        client.indices.delete_index_template(name=f"{alias}-strict")
    assert serving(target) == [f"{alias}-vhash-a"]
    assert not client.indices.exists(index=f"{alias}-vhash-c")


def test_reindex_without_setup_is_a_clear_error(target: Target) -> None:
    with pytest.raises(BackendError, match="does not exist: run `ddr-search setup` first"):
        admin.reindex(target.backend(16), target.settings, HashEncoder("hash-b"))


def test_a_failed_alias_switch_leaves_the_old_alias_serving(faulty_target: Target) -> None:
    backend = loaded(faulty_target)
    assert faulty_target.faults is not None
    faulty_target.faults.fail_paths["/_aliases"] = 1
    with pytest.raises(BackendError, match=r"_aliases \(switch .*503"):
        admin.reindex(backend, faulty_target.settings, HashEncoder("hash-b"))
    alias = faulty_target.settings.index
    assert serving(faulty_target) == [f"{alias}-vhash-a"]
    assert not faulty_target.client().indices.exists(index=f"{alias}-vhash-b")
    assert backend.count() == len(CORPUS)


def test_searches_running_throughout_a_reindex_never_fail_and_see_one_switch(target: Target) -> None:
    import threading

    backend = loaded(target)
    alias = target.settings.index
    searcher = target.backend(16)
    observed: list[tuple[str, int]] = []  # (index serving the hit, hits) per search
    errors: list[BaseException] = []
    done = threading.Event()

    def search_until_done() -> None:
        query = HashEncoder().encode_queries(["fraud"]).vectors[0]
        after = 0  # searches begun after the reindex returned: they must see the new index
        while after < 3 or len(observed) < 5:
            after += done.is_set()
            try:
                hits = searcher.bm25_search("fraud limitations", 10)
                searcher.hybrid_search("fraud", query, 5)
                response = target.client().search(index=alias, body={"size": 1, "query": {"match_all": {}}})
                observed.append((response["hits"]["hits"][0]["_index"], len(hits)))
            except BaseException as e:  # reported below
                errors.append(e)
                return

    thread = threading.Thread(target=search_until_done)
    thread.start()
    try:
        report = admin.reindex(backend, target.settings, HashEncoder("hash-b"), batch_size=2)
    finally:
        done.set()
        thread.join(timeout=60)
    assert errors == []
    assert report.switched
    served = [index for index, _ in observed]
    switches = sum(1 for a, b in itertools.pairwise(served) if a != b)
    assert set(served) <= {f"{alias}-vhash-a", f"{alias}-vhash-b"} and switches <= 1
    assert served[-1] == f"{alias}-vhash-b"
    assert all(n == 3 for _, n in observed)  # d1, d8, d9: never a half-filled index
