"""The retriever probe on the real nodes: a refusal is recorded with the cluster's reason, a retriever the
cluster runs is recorded as available, and anything else (a dead cluster) is an error, not a refusal."""

from __future__ import annotations

import pytest

from connectors.elasticsearch.retrievers import PROBES, probe
from ddr_search.errors import BackendError
from tests.connectors.elasticsearch.conftest import EsTarget


def test_the_probe_records_each_refusal_and_each_retriever_that_runs(
    es_target: EsTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = es_target.ready()
    support = probe(backend.client, es_target.settings.index, backend.url)
    assert set(support.refused) == {"rrf", "linear"}
    for why in support.refused.values():
        assert why is None or why.startswith(("400 ", "403 "))
    # a retriever every 8.14+ cluster runs goes through the same path and is recorded as available
    monkeypatch.setitem(PROBES, "standard", {"standard": {"query": {"match_none": {}}}})
    assert probe(backend.client, es_target.settings.index, backend.url).refused["standard"] is None
    assert "standard available" in probe(backend.client, es_target.settings.index, backend.url).describe()


def test_a_cluster_that_does_not_answer_is_an_error_not_a_refusal(es_target: EsTarget) -> None:
    from tests.workers.conftest import closed_port

    dead = es_target.settings.model_copy(
        update={"url": f"{es_target.settings.url.split(':')[0]}://127.0.0.1:{closed_port()}", "timeout_s": 2}
    )
    backend = type(es_target)(es_target.name, dead, dead).backend()
    with pytest.raises(BackendError, match="connection failed"):
        probe(backend.client, dead.index, backend.url)
