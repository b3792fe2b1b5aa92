"""A cluster that is down, slow, or rejects credentials: a clear BackendError within the configured
timeout, no secret in any message or log line; SigV4 requests really signed.

`StubCluster` is a TEST DOUBLE (a tiny HTTP server) for the failure modes a real node cannot be made to
show on demand: answering slowly, or refusing every request with 401/403.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pydantic import SecretStr

from connectors.opensearch import OpenSearchBackend, admin
from ddr_search.errors import BackendError, ConfigError
from ddr_search.settings import OpenSearchSettings, Settings
from ddr_search.types import Document, IndexedDocument
from tests.doubles import HashEncoder

PASSWORD = "s3cr3t-Pa55w0rd"
INFO = {"name": "n", "cluster_name": "c", "version": {"distribution": "opensearch", "number": "3.3.0"}}


class StubCluster:
    """Answers like OpenSearch's security plugin (401), or slowly, and records request headers."""

    def __init__(self, mode: str, delay_s: float = 5.0) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.headers: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                if stub.mode == "slow":
                    time.sleep(stub.delay_s)
                if stub.mode == "unauthorized":
                    status, body = 401, b"Unauthorized"
                    content_type = "text/plain"
                elif stub.mode == "forbidden":
                    status, content_type = 403, "application/json"
                    body = json.dumps(
                        {"error": {"type": "security_exception", "reason": "no permissions"}, "status": 403}
                    ).encode()
                else:
                    status, body, content_type = 200, json.dumps(INFO).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(body)))
                    if status == 401:
                        self.send_header("WWW-Authenticate", 'Basic realm="OpenSearch Security"')
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub(request: pytest.FixtureRequest) -> Iterator[StubCluster]:
    s = StubCluster(request.param)
    yield s
    s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(settings: OpenSearchSettings) -> OpenSearchBackend:
    return OpenSearchBackend.from_settings(Settings(opensearch=settings), 16)


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert "wJalrXUtnFEMI" not in text  # the AWS secret key used below


def test_cluster_down_is_a_clear_error_fast(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"
    backend = backend_for(OpenSearchSettings(url=url, timeout_s=2))
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.count()
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert "connection failed (is the cluster up and the URL right?)" in message
    assert "http://127.0.0.1:" in message
    assert_no_secret(message + repr(info.value) + caplog.text)


@pytest.mark.parametrize("stub", ["slow"], indirect=True)
def test_slow_cluster_times_out_within_the_configured_timeout(stub: StubCluster) -> None:
    backend = backend_for(OpenSearchSettings(url=stub.url, timeout_s=1.0))
    start = time.monotonic()
    with pytest.raises(BackendError, match="timed out"):
        backend.bm25_search("fraud", 5)
    assert time.monotonic() - start < 2.0  # one attempt, no transport retries


@pytest.mark.parametrize("stub", ["unauthorized"], indirect=True)
def test_rejected_credentials_say_so_without_the_password(stub: StubCluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = OpenSearchSettings(url=stub.url, username="admin", password=SecretStr(PASSWORD), timeout_s=2)
    backend = backend_for(settings)
    with pytest.raises(BackendError) as info:
        admin.setup(backend, settings, dimension=16, encoder_version="v1")
    message = str(info.value)
    assert "401 unauthorized: the cluster rejected the credentials" in message
    assert stub.headers[0]["authorization"].startswith("Basic ")  # they were sent, just refused
    assert_no_secret(message + repr(info.value) + caplog.text + repr(settings) + str(settings.model_dump()))


@pytest.mark.parametrize("stub", ["unauthorized"], indirect=True)
def test_reindex_against_a_refusing_cluster_switches_nothing(stub: StubCluster) -> None:
    settings = OpenSearchSettings(url=stub.url, username="admin", password=SecretStr(PASSWORD), timeout_s=2)
    with pytest.raises(BackendError, match="401"):
        admin.reindex(backend_for(settings), settings, HashEncoder("hash-b"))
    assert len(stub.headers) == 1  # refused at the first request (GET _alias): nothing else was attempted


@pytest.mark.parametrize("stub", ["ok"], indirect=True)
def test_sigv4_signs_every_request(stub: StubCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = OpenSearchSettings(url=stub.url, aws_region="eu-west-1", aws_service="es", timeout_s=2)
    backend = backend_for(settings)
    assert backend.features.version == (3, 3, 0)
    auth = stub.headers[0]["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
    assert "/eu-west-1/es/aws4_request" in auth
    assert "x-amz-date" in stub.headers[0]
    assert_no_secret(json.dumps(stub.headers))


def test_settings_errors_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no OpenSearch URL configured"):
        backend_for(OpenSearchSettings())
    with pytest.raises(ConfigError, match=r"CA_FILE .*not found"):
        backend_for(OpenSearchSettings(url="https://localhost:9200", ca_file=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="expected http"):
        backend_for(OpenSearchSettings(url=f"ftp://admin:{PASSWORD}@host"))
    try:
        backend_for(OpenSearchSettings(url=f"ftp://admin:{PASSWORD}@host"))
    except ConfigError as e:
        assert_no_secret(str(e))


def test_tls_settings_reach_the_connection(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # content is checked by the TLS handshake, not here
    from connectors.opensearch.client import client_kwargs

    kwargs = client_kwargs(
        OpenSearchSettings(
            url="https://a.example:9200,https://b.example", ca_file=ca, username="u", password=SecretStr(PASSWORD)
        )
    )
    assert [(h["host"], h["port"], h["use_ssl"]) for h in kwargs["hosts"]] == [
        ("a.example", 9200, True),
        ("b.example", 443, True),
    ]
    assert kwargs["verify_certs"] is True and kwargs["ca_certs"] == str(ca)
    assert kwargs["http_auth"] == ("u", PASSWORD) and kwargs["max_retries"] == 0
    assert client_kwargs(OpenSearchSettings(url="http://h:9200"))["verify_certs"] is True  # on by default


def test_bulk_against_a_dead_cluster_fails_at_once_without_retries() -> None:
    backend = backend_for(OpenSearchSettings(url=f"http://127.0.0.1:{free_port()}", timeout_s=1))
    backend._alias_ready = True  # past the alias check: the bulk request itself meets the dead cluster
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"bulk index into ddr-documents .*connection failed"):
        backend.upsert([IndexedDocument(Document("a", "t"), np.zeros(16, np.float32), "v")])
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("stub", ["slow"], indirect=True)
def test_bulk_against_a_slow_cluster_times_out_once(stub: StubCluster) -> None:
    backend = backend_for(OpenSearchSettings(url=stub.url, timeout_s=1))
    backend._alias_ready = True
    start = time.monotonic()
    with pytest.raises(BackendError, match="timed out"):
        backend.upsert([IndexedDocument(Document("a", "t"), np.zeros(16, np.float32), "v")])
    assert time.monotonic() - start < 2.0
    assert len(stub.headers) == 1  # a timeout is not retried: the batch may or may not have landed


@pytest.mark.parametrize("stub", ["forbidden"], indirect=True)
def test_a_cluster_that_will_not_describe_itself_gets_client_side_fusion(stub: StubCluster) -> None:
    """Serverless collections (and users without monitor rights) refuse GET / and _nodes/plugins."""
    backend = backend_for(OpenSearchSettings(url=stub.url, timeout_s=2))
    features = backend.features
    assert features.plugins is None and features.version == (0, 0, 0)
    assert not features.native_hybrid
