"""The opensearch-py client built from settings (basic auth, TLS, SigV4), and error wrapping at the boundary.

Secrets (passwords, AWS keys, credentials embedded in a URL) never reach a log line or an error
message: the URL is shown with its user-info removed, and opensearch-py errors are re-raised as
BackendError carrying only the status, the error type and the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from connectors.shared import describe_status, redact_url
from ddr_search.errors import BackendError, ConfigError
from ddr_search.settings import OpenSearchSettings


def _credentials(settings: OpenSearchSettings) -> tuple[str | None, str | None]:
    """Username/password from settings, else from the URL's user-info (settings win)."""
    parts = urlsplit(settings.url or "")
    user = settings.username or (unquote(parts.username) if parts.username else None)
    password = settings.password.get_secret_value() if settings.password is not None else None
    if password is None and parts.password:
        password = unquote(parts.password)
    return user, password


def _sigv4_auth(settings: OpenSearchSettings) -> Any:
    """opensearch-py's SigV4 signer over botocore's credential chain (env, profile, IRSA, instance role)."""
    try:
        import botocore.session
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(
            "DDR_OPENSEARCH__AWS_REGION is set but botocore is not installed: pip install 'ddr-search[aws]'"
        ) from e
    from opensearchpy import RequestsAWSV4SignerAuth

    credentials = botocore.session.Session().get_credentials()
    if credentials is None:
        raise ConfigError(
            "AWS SigV4 signing needs credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or run with an instance/pod role"
        )
    return RequestsAWSV4SignerAuth(credentials, settings.aws_region, settings.aws_service)


def client_kwargs(settings: OpenSearchSettings) -> dict[str, Any]:
    """Keyword arguments for `OpenSearch(...)`: one host list, auth, TLS and the request timeout.

    Transport-level retries are off (max_retries=0) so a dead or slow cluster fails within
    `timeout_s`; the bulk path retries 429 / 5xx itself with backoff.
    """
    if not settings.url:
        raise ConfigError("no OpenSearch URL configured: set DDR_OPENSEARCH__URL (e.g. https://localhost:9200)")
    hosts = []
    for raw in settings.url.split(","):
        parts = urlsplit(raw.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OpenSearch URL {redact_url(raw.strip())!r}: expected http(s)://host[:port]")
        hosts.append(
            {
                "host": parts.hostname,
                "port": parts.port or (443 if parts.scheme == "https" else 9200),
                "use_ssl": parts.scheme == "https",
                "url_prefix": parts.path.rstrip("/"),
            }
        )
    kwargs: dict[str, Any] = {
        "hosts": hosts,
        "timeout": settings.timeout_s,
        "max_retries": 0,
        "retry_on_timeout": False,
        "verify_certs": settings.verify_certs,
        "ssl_show_warn": settings.verify_certs,
        "http_compress": True,
    }
    if settings.ca_file is not None:
        if not settings.ca_file.exists():
            raise ConfigError(f"DDR_OPENSEARCH__CA_FILE {settings.ca_file}: file not found")
        kwargs["ca_certs"] = str(settings.ca_file)
    if settings.aws_region:
        from opensearchpy import RequestsHttpConnection

        kwargs["http_auth"] = _sigv4_auth(settings)
        kwargs["connection_class"] = RequestsHttpConnection
        kwargs["http_compress"] = False  # SigV4 signs the body as sent
    else:
        user, password = _credentials(settings)
        if user is not None:
            kwargs["http_auth"] = (user, password or "")
    return kwargs


def build_client(settings: OpenSearchSettings, **overrides: Any) -> OpenSearch:
    """An OpenSearch client for `settings`; `overrides` (e.g. `connection_class`) win over the defaults."""
    kwargs = client_kwargs(settings)
    kwargs.update(overrides)
    return OpenSearch(**kwargs)


def describe_error(e: Exception) -> str:
    """Status, type and reason of an opensearch-py error, never its request (headers may hold secrets)."""
    if isinstance(e, os_errors.ConnectionTimeout):
        return "timed out"
    if isinstance(e, os_errors.SSLError):
        return "TLS handshake failed (check DDR_OPENSEARCH__CA_FILE / verify_certs)"
    if isinstance(e, os_errors.ConnectionError):
        return "connection failed (is the cluster up and the URL right?)"
    if isinstance(e, os_errors.TransportError):
        return describe_status(e.status_code, e.info, str(e.error))
    return type(e).__name__


@contextlib.contextmanager
def wrapped(action: str, url: str | None) -> Iterator[None]:
    """Re-raise opensearch-py errors as BackendError('<action> on <redacted url>: <reason>')."""
    try:
        yield
    except os_errors.OpenSearchException as e:
        raise BackendError(f"OpenSearch {action} on {redact_url(url)}: {describe_error(e)}") from e
