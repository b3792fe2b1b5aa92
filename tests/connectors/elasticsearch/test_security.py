"""TLS and credentials on the real nodes: 9.2.0 serves HTTPS with its own CA (8.19.8 plain HTTP), so every
test on es9 already runs over verified TLS; here, what a wrong trust setting or a wrong API key looks like."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from ddr_search.errors import BackendError
from tests.connectors.elasticsearch.conftest import CLUSTER_URL, NODES, EsTarget, make_target


@pytest.fixture
def tls_target() -> Iterator[EsTarget]:
    """The HTTPS node (es9), or the configured cluster."""
    yield from make_target("cluster" if CLUSTER_URL else "es9")


@pytest.mark.cluster
def test_https_is_verified_against_the_configured_ca_and_refused_without_it(tls_target: EsTarget) -> None:
    es_target = tls_target
    if es_target.settings.ca_file is None:
        pytest.skip("the configured cluster is not reached through DDR_ELASTICSEARCH__CA_FILE")
    assert es_target.settings.url.startswith("https://")
    assert es_target.ready().count() == 0  # verified against the CA, as every other es9 test
    untrusted = es_target.settings.model_copy(update={"ca_file": None})
    with pytest.raises(BackendError, match=r"TLS handshake failed .*DDR_ELASTICSEARCH__CA_FILE"):
        EsTarget(es_target.name, untrusted, untrusted).backend().count()
    unverified = es_target.settings.model_copy(update={"ca_file": None, "verify_certs": False})
    assert EsTarget(es_target.name, unverified, unverified).backend().count() == 0


def test_a_wrong_api_key_is_one_clear_line_without_the_key(es_target: EsTarget) -> None:
    """API keys cannot be created on the test nodes (the .security index needs analysis-common), so only
    the refusal is provable here: the key reaches the node as `Authorization: ApiKey` and is rejected."""
    if es_target.name not in NODES:
        pytest.skip("a real cluster: its own keys")
    secret = "ZGRyOm5vdC1hLXJlYWwta2V5"
    keyed = es_target.settings.model_copy(update={"api_key": SecretStr(secret), "username": None, "password": None})
    with pytest.raises(BackendError) as caught:
        EsTarget(es_target.name, keyed, keyed).backend().count()
    assert "401 unauthorized" in str(caught.value) and secret not in str(caught.value)
    assert secret not in repr(keyed)


def test_a_ca_file_with_a_plain_http_url_is_one_line(tmp_path) -> None:
    from connectors.elasticsearch.client import build_client
    from ddr_search.errors import ConfigError
    from ddr_search.settings import ElasticsearchSettings

    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = ElasticsearchSettings(url="http://user:pw@localhost:9200", ca_file=ca)
    with pytest.raises(ConfigError, match=r"CA_FILE is set but http://localhost:9200 is plain HTTP") as caught:
        build_client(settings)
    assert "pw" not in str(caught.value)
