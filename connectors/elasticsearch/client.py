"""The official `elasticsearch` client built from settings (basic auth or API key, TLS), and error wrapping.

Secrets never reach a log line or an error message: the URL is shown without user-info, and client
errors are re-raised as BackendError carrying only the status, the error type and the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from elasticsearch import ApiError, Elasticsearch, TransportError
from elasticsearch import ConnectionError as EsConnectionError
from elasticsearch import ConnectionTimeout as EsConnectionTimeout
from elasticsearch import SSLError as EsSSLError

from connectors.shared import describe_status, redact_url
from ddr_search.errors import BackendError, ConfigError
from ddr_search.settings import ElasticsearchSettings

# A cluster without analysis-common refuses the default analyzer with one of these (the test node does).
MISSING_ANALYSIS = ("Unknown tokenizer type [pattern]", "Unknown filter type [snowball]")


def build_client(settings: ElasticsearchSettings, **overrides: Any) -> Elasticsearch:
    """An Elasticsearch client; transport retries off, so a dead or slow cluster fails within `timeout_s`
    (bulk writes retry 429s themselves, through the client's `streaming_bulk`)."""
    if not settings.url:
        raise ConfigError("no Elasticsearch URL configured: set DDR_ELASTICSEARCH__URL (e.g. https://localhost:9200)")
    hosts = [h.strip() for h in settings.url.split(",")]
    for host in hosts:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Elasticsearch URL {redact_url(host)!r}: expected http(s)://host[:port]")
        if parts.scheme == "http" and settings.ca_file is not None:
            raise ConfigError(
                f"DDR_ELASTICSEARCH__CA_FILE is set but {redact_url(host)} is plain HTTP: use https:// or unset it"
            )
    kwargs: dict[str, Any] = {
        "hosts": hosts,
        "request_timeout": settings.timeout_s,
        "max_retries": 0,
        "retry_on_timeout": False,
        "verify_certs": settings.verify_certs,
        "ssl_show_warn": settings.verify_certs,
    }
    if settings.ca_file is not None:
        if not settings.ca_file.exists():
            raise ConfigError(f"DDR_ELASTICSEARCH__CA_FILE {settings.ca_file}: file not found")
        kwargs["ca_certs"] = str(settings.ca_file)
    if settings.api_key is not None:
        kwargs["api_key"] = settings.api_key.get_secret_value()
    elif settings.username is not None:
        password = settings.password.get_secret_value() if settings.password is not None else ""
        kwargs["basic_auth"] = (settings.username, password)
    kwargs.update(overrides)
    return Elasticsearch(**kwargs)


def describe_error(e: Exception) -> str:
    """Status, type and reason of a client error, never its request (headers hold the credentials)."""
    if isinstance(e, EsConnectionTimeout):
        return "timed out"
    if isinstance(e, EsSSLError):
        return "TLS handshake failed (check DDR_ELASTICSEARCH__CA_FILE / verify_certs)"
    if isinstance(e, EsConnectionError):
        return "connection failed (is the cluster up and the URL right?)"
    if isinstance(e, ApiError):
        return describe_status(e.meta.status, e.body, e.message)
    return type(e).__name__


@contextlib.contextmanager
def wrapped(action: str, url: str | None) -> Iterator[None]:
    """Re-raise client errors as BackendError('Elasticsearch <action> on <redacted url>: <reason>')."""
    try:
        yield
    except (ApiError, TransportError) as e:
        raise BackendError(f"Elasticsearch {action} on {redact_url(url)}: {describe_error(e)}") from e
