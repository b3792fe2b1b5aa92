"""OpenSearchBackend: the Backend protocol over an index alias, plus hybrid search (native or client-side)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from opensearchpy import OpenSearch, helpers

from connectors import shared
from connectors.opensearch import queries
from connectors.opensearch.bulk import RetryPolicy, send_bulk
from connectors.opensearch.client import build_client, wrapped
from connectors.opensearch.features import ClusterFeatures, detect
from connectors.opensearch.hybrid import HybridSearch, knn_score_to_inner_product
from connectors.shared import document_from_source, document_source, filter_clauses, item_reason, redact_url
from ddr_search.errors import BackendError, ConfigError, DocumentsRejected
from ddr_search.filters import Filters
from ddr_search.settings import Settings
from ddr_search.types import Document, IndexedDocument, ScoredIds

log = logging.getLogger(__name__)

HYBRID_MODES = ("auto", "native", "client")
EF_SEARCH_SINCE = (2, 16, 0)  # k-NN query `method_parameters.ef_search`


class OpenSearchBackend(HybridSearch):
    """Documents in the index behind `alias` (one `<alias>-v<encoder version>` index at a time).

    Writes go to `alias` (or to `index` while `ddr-search reindex` fills a new version); every write is
    an `index` op keyed by document id, so repeating a batch leaves one copy. Bulk requests do not wait
    for a refresh (`refresh=wait_for` per batch costs a refresh interval each): an ingest calls
    `refresh()` once at the end, and the index's own refresh interval covers writes in between.
    """

    kind = "opensearch"

    def __init__(
        self,
        client: OpenSearch,
        *,
        alias: str,
        url: str | None = None,
        dimension: int | None = None,
        hybrid: str = "auto",
        refresh: bool | str = False,
        chunk_size: int = 500,
        max_retries: int = 5,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        require_alias: bool = True,
        ef_search: int | None = None,
    ) -> None:
        if hybrid not in HYBRID_MODES:
            raise ConfigError(f"opensearch hybrid mode must be one of {HYBRID_MODES}, got {hybrid!r}")
        self.client = client
        self.alias = alias
        self.url = url
        self.dimension = dimension
        self.hybrid_mode = hybrid
        self.refresh_mode = refresh
        self.chunk_size = chunk_size
        self.max_retries = max_retries
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._features: ClusterFeatures | None = None
        self._pipelines: dict[str, bool] = {}
        self._shard_count: int | None = None
        self.ef_search = ef_search
        self._alias_ready = not require_alias  # False: `alias` may name a concrete index (reindex's writer)

    @classmethod
    def from_settings(
        cls, settings: Settings, dimension: int | None = None, **client_overrides: Any
    ) -> OpenSearchBackend:
        os_settings = settings.opensearch
        return cls(
            build_client(os_settings, **client_overrides),
            alias=os_settings.index,
            url=os_settings.url,
            dimension=dimension,
            hybrid=os_settings.hybrid,
            ef_search=os_settings.hnsw_ef_search,
        )

    # -- cluster ----------------------------------------------------------------------------------

    @property
    def features(self) -> ClusterFeatures:
        if self._features is None:
            self._features = detect(self.client, self.url)
        return self._features

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with wrapped(action, self.url):
            return fn(*args, **kwargs)

    # -- writes -----------------------------------------------------------------------------------

    def upsert(self, documents: Sequence[IndexedDocument], *, index: str | None = None) -> None:
        """Index every document (create or replace by id). Raises BackendError naming each failed id."""
        target = index or self.alias
        if index is None and not self._alias_ready:
            # a write to a missing alias would auto-create a concrete index with a float-array "embedding"
            if not self.indices():
                raise BackendError(
                    f"alias {self.alias} does not exist on {redact_url(self.url)}: run `ddr-search setup` first"
                )
            self._alias_ready = True
        failures: list[tuple[str, str]] = []
        for start in range(0, len(documents), self.chunk_size):
            chunk = documents[start : start + self.chunk_size]
            actions = {
                d.document.id: {
                    "_op_type": "index",
                    "_index": target,
                    "_id": d.document.id,
                    "_source": document_source(d, self.dimension),
                }
                for d in chunk
            }
            failures.extend(self._bulk(actions, f"bulk index into {target}"))
        if failures:
            shown = "; ".join(f"id {doc_id!r}: {why}" for doc_id, why in failures[:10])
            more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
            raise DocumentsRejected(
                f"{len(failures)} of {len(documents)} documents were not indexed: {shown}{more}",
                dict(failures),
                len(documents),
            )

    def _bulk(self, actions: dict[str, dict[str, Any]], what: str) -> list[tuple[str, str]]:
        policy = RetryPolicy(self.max_retries, self.initial_backoff_s, self.max_backoff_s)
        return send_bulk(self.client, actions, what, url=self.url, refresh=self.refresh_mode, policy=policy)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete by id; returns how many existed. Missing ids are not an error. Refreshes once at the end,
        so a deleted document is gone from the next search."""
        if not ids:
            return 0
        deleted = 0
        for start in range(0, len(ids), self.chunk_size):
            chunk = [str(i) for i in ids[start : start + self.chunk_size]]
            before = self.count_ids(chunk)
            actions = {i: {"_op_type": "delete", "_index": self.alias, "_id": i} for i in chunk}
            failures = self._bulk(actions, f"bulk delete from {self.alias}")
            if failures:
                shown = "; ".join(f"id {doc_id!r}: {why}" for doc_id, why in failures[:10])
                raise BackendError(f"{len(failures)} documents were not deleted: {shown}")
            deleted += before
        self.refresh()
        return deleted

    def count_ids(self, ids: Sequence[str]) -> int:
        """How many of `ids` exist, by a real-time `mget` (a count would miss writes not yet refreshed)."""
        response = self._call(
            "mget", self.client.mget, index=self.alias, body={"ids": [str(i) for i in ids]}, params={"_source": "false"}
        )
        return sum(1 for d in response["docs"] if d.get("found"))

    # -- reads ------------------------------------------------------------------------------------

    def _search(self, body: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
        response = self._call("search", self.client.search, index=self.alias, body=body, params=params or None)
        return self._complete_hits(response, "search")

    def _complete_hits(self, response: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
        """The hits, or BackendError when the cluster answered with part of the index (shards failed or
        the search timed out): an incomplete ranking must not pass as the ranking."""
        shards = response.get("_shards") or {}
        failed = int(shards.get("failed") or 0)
        if failed or response.get("timed_out"):
            reasons = {item_reason({"error": f.get("reason")}) for f in shards.get("failures") or []}
            why = f"{failed} of {shards.get('total')} shards failed" if failed else "the search timed out"
            detail = f" ({'; '.join(sorted(reasons))[:300]})" if reasons else ""
            raise BackendError(f"OpenSearch {what} on {redact_url(self.url)} returned partial results: {why}{detail}")
        return list(response["hits"]["hits"])

    def bm25_search(self, text: str, k: int, *, domain: str | None = None, filters: Filters = ()) -> ScoredIds:
        body = queries.search_body(queries.bm25_query(text, filter_clauses(domain, filters)), self._k(k))
        return [(h["_id"], float(h["_score"])) for h in self._search(body)]

    def dense_search(
        self,
        vector: NDArray[np.float32],
        k: int,
        *,
        domain: str | None = None,
        filters: Filters = (),
    ) -> ScoredIds:
        """Top-k by inner product (the raw x.y, as the embedded backend reports it)."""
        k = self._k(k)
        clauses = filter_clauses(domain, filters)
        body = queries.search_body(queries.knn_query(vector, k, clauses, self._ef_search()), k)
        return [(h["_id"], knn_score_to_inner_product(float(h["_score"]))) for h in self._search(body)]

    @staticmethod
    def _k(k: int) -> int:
        if not 1 <= k <= queries.MAX_K:
            raise ConfigError(f"k must be in [1, {queries.MAX_K}], got {k}")
        return k

    def _ef_search(self) -> int | None:
        """The per-query HNSW candidate list, where the cluster takes one (`method_parameters`, 2.16+)."""
        if self.ef_search is None or self.features.plugins is None or self.features.version < EF_SEARCH_SINCE:
            return None
        return self.ef_search

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        if not ids:
            return {}
        response = self._call(
            "mget",
            self.client.mget,
            index=self.alias,
            body={"ids": [str(i) for i in ids]},
            params={"_source_excludes": ",".join(queries.SOURCE_EXCLUDES)},
        )
        return {d["_id"]: document_from_source(d["_id"], d["_source"]) for d in response["docs"] if d.get("found")}

    def versions(self, ids: Sequence[str]) -> dict[str, str]:
        """The encoder version of each stored id, by a real-time `mget` of that one field."""
        if not ids:
            return {}
        response = self._call(
            "mget",
            self.client.mget,
            index=self.alias,
            body={"ids": [str(i) for i in ids]},
            params={"_source_includes": "encoder_version"},
        )
        return {d["_id"]: str(d["_source"].get("encoder_version")) for d in response["docs"] if d.get("found")}

    def count(self, domain: str | None = None) -> int:
        body = {"query": {"term": {"domain": domain}}} if domain is not None else None
        return int(self._call("count", self.client.count, index=self.alias, body=body)["count"])

    def domain_counts(self) -> dict[str, int]:
        return shared.domain_counts(
            lambda aggs: self._call("search", self.client.search, index=self.alias, body={"size": 0, "aggs": aggs})[
                "aggregations"
            ]["domains"]
        )

    def indices(self) -> list[str]:
        """The version indices (`<alias>-v*`) the alias points at; empty when the alias does not exist.

        Asked only of `<alias>-v*`, not of every index: a least-privilege user holds rights on its own
        indices alone, and the security plugin refuses a request that resolves to `*`.
        """
        # ignore=404: a missing alias is an answer here, not a failure worth a logged warning
        response = self._call(
            "GET alias", self.client.indices.get_alias, index=f"{self.alias}-v*", name=self.alias, ignore=[404]
        )
        if not isinstance(response, dict) or "error" in response or response.get("status") == 404:
            return []
        return sorted(response)

    def describe(self) -> dict[str, object]:
        """What `ddr-search stats` shows: where, which indices, and documents per encoder version."""
        body = {"size": 0, "aggs": {"versions": {"terms": {"field": "encoder_version", "size": 100}}}}
        buckets = self._call("search", self.client.search, index=self.alias, body=body)["aggregations"]["versions"]
        return {
            "backend": self.kind,
            "url": redact_url(self.url),
            "alias": self.alias,
            "indices": self.indices(),
            "encoder_versions": {str(b["key"]): int(b["doc_count"]) for b in buckets["buckets"]},
        }

    def refresh(self) -> None:
        """Make every write searchable now (ingest calls this at the end of a run)."""
        self._call("refresh", self.client.indices.refresh, index=self.alias)

    def scan(self, batch_size: int = 500) -> Iterator[list[Document]]:
        """Every document behind the alias, in batches (scroll), without vectors: what reindex re-embeds."""
        batch: list[Document] = []
        with wrapped("scroll", self.url):
            for hit in helpers.scan(
                self.client,
                index=self.alias,
                query={"query": {"match_all": {}}, "_source": {"excludes": queries.SOURCE_EXCLUDES}},
                size=batch_size,
                scroll="5m",
            ):
                batch.append(document_from_source(hit["_id"], hit["_source"]))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self.client.close()
