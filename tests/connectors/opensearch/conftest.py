"""Targets for the OpenSearch tests: the real test nodes `scripts/services` starts (OpenSearch 2.19.1 with
k-NN + neural-search, 3.5.0 with k-NN; lucene engine, no replicas), or, when DDR_OPENSEARCH_URL /
DDR_OPENSEARCH__URL is set, that cluster alone (with the DDR_OPENSEARCH__* settings of the environment).
Every test gets an alias of its own and deletes every index, template and pipeline it made.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opensearchpy.exceptions import TransportError

from connectors.opensearch import OpenSearchBackend
from connectors.opensearch.client import build_client
from ddr_search.settings import OpenSearchSettings, Settings
from tests.conftest import engine_url
from tests.connectors.opensearch.faults import FaultConnection, FaultState

CLUSTER_URL = os.environ.get("DDR_OPENSEARCH_URL") or os.environ.get("DDR_OPENSEARCH__URL")
NODES = {"os2.19": "opensearch-2.19.1", "os3.5": "opensearch-3.5.0"}  # test id -> tests/engines catalog name


@dataclass
class Target:
    """Where a test runs: a test node (`os2.19`, `os3.5`) or `cluster` (DDR_OPENSEARCH_URL)."""

    name: str
    settings: OpenSearchSettings
    faults: FaultState | None = None

    def overrides(self) -> dict[str, Any]:
        if self.faults is None:
            return {}
        return {"connection_class": FaultConnection, "faults": self.faults}

    def client(self) -> Any:
        return build_client(self.settings, **self.overrides())

    def backend(self, dimension: int = 16, **kwargs: Any) -> OpenSearchBackend:
        kwargs.setdefault("initial_backoff_s", 0.01)
        kwargs.setdefault("ef_search", self.settings.hnsw_ef_search)
        return OpenSearchBackend(
            self.client(), alias=self.settings.index, url=self.settings.url, dimension=dimension, **kwargs
        )


def target_settings(name: str, alias: str) -> OpenSearchSettings:
    if name == "cluster":
        assert CLUSTER_URL
        return Settings().opensearch.model_copy(update={"url": CLUSTER_URL.rstrip("/"), "index": alias})
    return OpenSearchSettings(url=engine_url(NODES[name]), index=alias, knn_engine="lucene", replicas=0)


def clean_up(settings: OpenSearchSettings) -> None:
    """Delete what a test made under its alias: version indices, the template, its search pipelines."""
    client = build_client(settings)
    alias = settings.index
    for index in client.indices.get(index=f"{alias}-v*", params={"ignore": 404}):
        if index.startswith(f"{alias}-v"):
            client.indices.delete(index=index)
    client.indices.delete_index_template(name=f"{alias}-template", ignore=[404])
    with contextlib.suppress(TransportError):  # a cluster without search pipelines
        for name in client.transport.perform_request("GET", "/_search/pipeline", params={"ignore": 404}):
            if name.startswith(f"{alias}-"):
                client.transport.perform_request("DELETE", f"/_search/pipeline/{name}")
    client.close()


def _make_target(name: str, faults: FaultState | None = None) -> Iterator[Target]:
    target = Target(name, target_settings(name, f"ddr-test-{uuid.uuid4().hex[:8]}"), faults)
    try:
        yield target
    finally:
        clean_up(target.settings)


TARGETS = ["cluster"] if CLUSTER_URL else list(NODES)


@pytest.fixture(params=[pytest.param(t, marks=pytest.mark.cluster) for t in TARGETS])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Every OpenSearch the tier covers: both test nodes, or the cluster DDR_OPENSEARCH_URL names."""
    yield from _make_target(request.param)


@pytest.fixture(params=[pytest.param(TARGETS[0], marks=pytest.mark.cluster)])
def native_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The target with neural-search (native hybrid + pipelines): the 2.19.1 node, or the given cluster."""
    yield from _make_target(request.param)


@pytest.fixture(params=[pytest.param(TARGETS[0], marks=pytest.mark.cluster)])
def faulty_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A real node behind the fault-injecting connection (tests/connectors/opensearch/faults.py)."""
    yield from _make_target(request.param, FaultState())
