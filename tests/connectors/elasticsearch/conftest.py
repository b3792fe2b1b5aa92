"""Targets for the Elasticsearch tests: the real 8.19.8 and 9.2.0 nodes `scripts/services` starts (security
on, basic auth; the tests connect as the file-realm user holding only deploy/elasticsearch/security-role.json),
or, when DDR_ELASTICSEARCH__URL is set, that cluster alone with the DDR_ELASTICSEARCH__* settings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.elasticsearch import ElasticsearchBackend, admin
from connectors.elasticsearch.client import build_client
from ddr_search.settings import ElasticsearchSettings, Settings
from tests.conftest import service_missing

CLUSTER_URL = os.environ.get("DDR_ELASTICSEARCH__URL")
NODES = {"es8": "elasticsearch-8.19.8", "es9": "elasticsearch-9.2.0"}  # test id -> tests/engines catalog name


@dataclass
class EsTarget:
    name: str
    settings: ElasticsearchSettings  # the least-privileged user
    admin_settings: ElasticsearchSettings  # the superuser, for clean-up and fault set-up

    def backend(self, dimension: int = 16, **kwargs: Any) -> ElasticsearchBackend:
        kwargs.setdefault("initial_backoff_s", 0.01)
        return ElasticsearchBackend(
            build_client(self.settings),
            alias=self.settings.index,
            url=self.settings.url,
            dimension=dimension,
            num_candidates=self.settings.num_candidates,
            **kwargs,
        )

    def ready(self, dimension: int = 16, version: str = "hash-a", **kwargs: Any) -> ElasticsearchBackend:
        backend = self.backend(dimension, **kwargs)
        admin.setup(backend, self.settings, dimension=dimension, encoder_version=version)
        return backend


def es_settings(name: str, alias: str) -> tuple[ElasticsearchSettings, ElasticsearchSettings]:
    if name == "cluster":
        configured = Settings().elasticsearch.model_copy(update={"index": alias})
        return configured, configured
    from tests.engines.node import running

    record = running(NODES[name])
    if record is None:
        service_missing(f"the {NODES[name]} test node is not running")
    ca_file = Path(str(record["ca_file"])) if record.get("ca_file") else None
    base = ElasticsearchSettings(url=str(record["url"]), ca_file=ca_file, index=alias, analyzer="standard", replicas=0)
    user = base.model_copy(
        update={"username": str(record["user"]), "password": SecretStr(str(record["user_password"]))}
    )
    superuser = base.model_copy(
        update={"username": str(record["username"]), "password": SecretStr(str(record["password"]))}
    )
    return user, superuser


def settings_env(settings: ElasticsearchSettings) -> dict[str, str]:
    """The DDR_ELASTICSEARCH__* variables that configure `settings` (for the CLI and worker processes)."""
    env = {
        "URL": str(settings.url),
        "USERNAME": str(settings.username),
        "PASSWORD": settings.password.get_secret_value() if settings.password else "",
        "INDEX": settings.index,
        "ANALYZER": settings.analyzer,
        "REPLICAS": str(settings.replicas),
    }
    if settings.ca_file is not None:
        env["CA_FILE"] = str(settings.ca_file)
    return {f"DDR_ELASTICSEARCH__{key}": value for key, value in env.items()}


def clean_up(settings: ElasticsearchSettings) -> None:
    client = build_client(settings)
    alias = settings.index
    indices = client.options(ignore_status=404).indices.get(index=f"{alias}-v*").body
    for index in indices if isinstance(indices, dict) and "error" not in indices else []:
        client.indices.delete(index=index)  # by name: 8.x refuses wildcard deletes
    client.options(ignore_status=404).indices.delete_index_template(name=f"{alias}-template")
    client.close()


def make_target(name: str) -> Iterator[EsTarget]:
    user, superuser = es_settings(name, f"ddr-test-{uuid.uuid4().hex[:8]}")
    try:
        yield EsTarget(name, user, superuser)
    finally:
        clean_up(superuser)


TARGETS = ["cluster"] if CLUSTER_URL else list(NODES)


@pytest.fixture(params=[pytest.param(t, marks=pytest.mark.cluster) for t in TARGETS])
def es_target(request: pytest.FixtureRequest) -> Iterator[EsTarget]:
    yield from make_target(request.param)
