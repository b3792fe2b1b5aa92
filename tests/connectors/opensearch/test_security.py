"""The secured 2.19.1 node (security plugin, its demo TLS certificates, basic auth): the least-privilege
role of deploy/opensearch/security-role.json runs everything ddr-search does and nothing more; TLS is
verified against the node's CA; a wrong password is one clear line with no secret in it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from connectors.opensearch import admin
from connectors.opensearch.client import build_client, wrapped
from ddr_search.errors import BackendError
from ddr_search.settings import OpenSearchSettings
from tests.conftest import service_missing
from tests.connectors.opensearch.conftest import Target, clean_up
from tests.doubles import CORPUS, HashEncoder

pytestmark = pytest.mark.cluster

SECURE_NODE = "opensearch-2.19.1-secure"
ROLE = Path(__file__).resolve().parents[3] / "deploy" / "opensearch" / "security-role.json"


@pytest.fixture(scope="module")
def admin_settings() -> OpenSearchSettings:
    from tests.engines.node import running

    record = running(SECURE_NODE)
    if record is None:
        service_missing(f"the {SECURE_NODE} test node is not running")
    return OpenSearchSettings(
        url=str(record["url"]),
        username=str(record["username"]),
        password=str(record["password"]),
        ca_file=Path(str(record["ca_file"])),
        knn_engine="lucene",
        replicas=0,
    )


def security_api(settings: OpenSearchSettings, method: str, path: str, body: object = None) -> object:
    client = build_client(settings)
    try:
        return client.transport.perform_request(method, f"/_plugins/_security/api/{path}", body=body)
    finally:
        client.close()


@pytest.fixture()
def least_privileged(admin_settings: OpenSearchSettings) -> Iterator[Target]:
    """A user holding only the documented role, with its index patterns narrowed to this test's alias."""
    suffix = uuid.uuid4().hex[:8]
    alias, user, role, password = f"ddr-test-{suffix}", f"ddr-user-{suffix}", f"ddr-role-{suffix}", f"Pw-{suffix}-x9!"
    body = json.loads(ROLE.read_text())
    for rule in body["index_permissions"]:
        rule["index_patterns"] = [p.replace("ddr-documents", alias) for p in rule["index_patterns"]]
    security_api(admin_settings, "PUT", f"roles/{role}", body)
    security_api(admin_settings, "PUT", f"internalusers/{user}", {"password": password})
    security_api(admin_settings, "PUT", f"rolesmapping/{role}", {"users": [user]})
    settings = admin_settings.model_copy(update={"index": alias, "username": user, "password": SecretStr(password)})
    try:
        yield Target("secure", settings)
    finally:
        clean_up(admin_settings.model_copy(update={"index": alias}))
        for path in (f"rolesmapping/{role}", f"internalusers/{user}", f"roles/{role}"):
            security_api(admin_settings, "DELETE", path)


def test_the_documented_role_runs_setup_ingest_every_search_reindex_and_delete(
    least_privileged: Target, tmp_path
) -> None:
    from ddr_search.client import DDRSearch
    from ddr_search.settings import SearchSettings, Settings

    backend = least_privileged.backend(16)
    configs = admin.default_fusion_configs((0.5, 0.5))
    first = admin.setup(
        backend, least_privileged.settings, dimension=16, encoder_version="hash-a", fusion_configs=configs
    )
    assert first.actions and first.features.native_hybrid
    assert (
        admin.setup(
            backend, least_privileged.settings, dimension=16, encoder_version="hash-a", fusion_configs=configs
        ).actions
        == []
    )
    settings = Settings(home=tmp_path / "home", opensearch=least_privileged.settings)
    with DDRSearch(settings, encoder=HashEncoder(), backend=backend) as ddr:
        ddr.ingest(CORPUS)
        assert ddr.stats()["domains"] == {"legal": 4, "medical": 4}
        for mode in ("bm25", "dense", "hybrid"):
            assert ddr.search("fraud limitations", k=3, mode=mode)[0].id in ("d1", "d9"), mode
        for normalization in ("min_max", "rrf"):
            ddr.settings = settings.model_copy(update={"search": SearchSettings(normalization=normalization)})
            assert ddr.search("vitamin", domain="medical", k=2)
    client_side = least_privileged.backend(16, hybrid="client")
    query = HashEncoder().encode_queries(["fraud"]).vectors[0]
    assert client_side.hybrid_search("fraud", query, 3)
    report = admin.reindex(backend, least_privileged.settings, HashEncoder("hash-b"), delete_old=True)
    assert report.switched and report.documents == len(CORPUS)
    assert backend.delete(["d1"]) == 1 and backend.count() == len(CORPUS) - 1


def test_the_documented_role_is_refused_everything_else(least_privileged: Target) -> None:
    backend = least_privileged.backend(16)
    client = least_privileged.client()
    with (
        pytest.raises(BackendError, match="403 forbidden: the user lacks a permission"),
        wrapped("create index", least_privileged.settings.url),
    ):
        client.indices.create(index=f"not-ddr-{uuid.uuid4().hex[:6]}")
    with pytest.raises(BackendError, match="403"), wrapped("read the security index", least_privileged.settings.url):
        client.search(index=".opendistro_security")
    assert backend.indices() == []  # nothing of ours exists yet, and asking is allowed


def test_tls_is_verified_against_the_nodes_ca(admin_settings: OpenSearchSettings, tmp_path) -> None:
    assert build_client(admin_settings).info()["version"]["number"] == "2.19.1"
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(other_ca),
            "-subj",
            "/CN=unrelated test CA",
            "-days",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    untrusted = admin_settings.model_copy(update={"ca_file": other_ca})
    from connectors.opensearch.features import detect

    with pytest.raises(BackendError, match="TLS handshake failed"):
        detect(build_client(untrusted), untrusted.url)


def test_a_wrong_password_is_one_clear_line_without_the_secret(
    admin_settings: OpenSearchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ddr_search.cli.main import cli

    secret = "Not-The-Password-7!"
    monkeypatch.setenv("DDR_OPENSEARCH__URL", admin_settings.url or "")
    monkeypatch.setenv("DDR_OPENSEARCH__USERNAME", "admin")
    monkeypatch.setenv("DDR_OPENSEARCH__PASSWORD", secret)
    monkeypatch.setenv("DDR_OPENSEARCH__CA_FILE", str(admin_settings.ca_file))
    result = CliRunner().invoke(cli, ["setup", "--dimension", "16", "--encoder-version", "hash-a"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "401 unauthorized" in lines[0], result.output
    assert secret not in result.output


@pytest.mark.slow
def test_the_documented_role_ingests_through_a_real_worker(
    least_privileged: Target, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `ddr-search worker` holding only the role's credentials (TLS verified with the node's CA) embeds a
    job into the secured node."""
    from ddr_search.factory import build_encoder
    from ddr_search.settings import Settings
    from tests.workers.conftest import REDIS_URL, ingest_through_a_worker, reachable, worker_env, write_corpus

    if not reachable(6379):
        service_missing("Redis is not running on localhost:6379")
    s = least_privileged.settings
    queue = f"ddr-test-secure-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        tmp_path / "home",
        REDIS_URL,
        queue,
        DDR_OPENSEARCH__URL=str(s.url),
        DDR_OPENSEARCH__USERNAME=str(s.username),
        DDR_OPENSEARCH__PASSWORD=s.password.get_secret_value(),
        DDR_OPENSEARCH__CA_FILE=str(s.ca_file),
        DDR_OPENSEARCH__INDEX=s.index,
        DDR_OPENSEARCH__KNN_ENGINE="lucene",
        DDR_OPENSEARCH__REPLICAS="0",
    )
    for key, value in env.items():
        if key.startswith("DDR_"):
            monkeypatch.setenv(key, value)
    ids = write_corpus(tmp_path / "corpus.jsonl", 40)
    settings = Settings()
    encoder = build_encoder(settings)
    backend = least_privileged.backend(encoder.dimension)
    admin.setup(backend, s, dimension=encoder.dimension, encoder_version=encoder.version)
    status = ingest_through_a_worker(env, tmp_path / "corpus.jsonl", tmp_path / "worker.log")
    assert (status.state.value, status.indexed, status.failures) == ("done", 40, {})
    assert backend.count() == 40 and sorted(backend.get(ids)) == sorted(ids)
