"""Bulk writes with retries: whole requests and single items answered 429 / 5xx are sent again with
exponential backoff; every item that finally fails comes back with its reason (nothing dropped silently).

Why not opensearch-py's own `streaming_bulk(max_retries=...)`: it retries items rejected with 429 only,
never a whole request answered 429 / 5xx (a node restarting, a full queue at the coordinating node),
which is what a loaded cluster answers most; this loop retries both, the items one at a time, and
fails at once on a connection error (a dead cluster) so a worker's own retry takes over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors

from connectors.opensearch.client import describe_error
from connectors.shared import item_reason, redact_url
from ddr_search.errors import BackendError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def backoff_s(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))


def _retryable(status: object) -> bool:
    return isinstance(status, int) and (status == 429 or 500 <= status < 600)


def send_bulk(
    client: OpenSearch,
    actions: dict[str, dict[str, Any]],
    what: str,
    *,
    url: str | None,
    refresh: bool | str,
    policy: RetryPolicy,
) -> list[tuple[str, str]]:
    """Send one chunk of `actions` (document id -> bulk action); returns (id, reason) for every item that
    finally failed. Raises BackendError when the cluster cannot be reached or keeps refusing the request."""
    pending = dict(actions)
    failures: list[tuple[str, str]] = []
    for attempt in range(policy.max_retries + 1):
        if attempt:
            time.sleep(policy.backoff_s(attempt))
        last = attempt == policy.max_retries
        retry: dict[str, dict[str, Any]] = {}
        try:
            for ok, item in helpers.streaming_bulk(
                client,
                list(pending.values()),
                chunk_size=len(pending),
                max_chunk_bytes=50 * 1024 * 1024,
                raise_on_error=False,
                yield_ok=False,
                refresh=refresh,
            ):
                if ok:
                    continue
                ((op, info),) = item.items()
                doc_id = str(info.get("_id"))
                if _retryable(info.get("status")) and not last:
                    retry[doc_id] = pending[doc_id]
                elif op == "delete" and info.get("status") == 404:
                    continue
                else:
                    failures.append((doc_id, item_reason(info)))
        except os_errors.TransportError as e:
            if isinstance(e, os_errors.ConnectionError) or not _retryable(e.status_code) or last:
                raise BackendError(f"OpenSearch {what} on {redact_url(url)}: {describe_error(e)}") from e
            log.warning("%s: %s, retrying (attempt %d)", what, describe_error(e), attempt + 1)
            continue
        if not retry:
            return failures
        log.warning("%s: %d documents rejected with 429/5xx, retrying (attempt %d)", what, len(retry), attempt + 1)
        pending = retry
    return failures
