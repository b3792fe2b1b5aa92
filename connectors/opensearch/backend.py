"""OpenSearchBackend: the Backend protocol over an index alias, plus hybrid search (native or client-side)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors

from connectors import shared
from connectors.opensearch import queries, schema
from connectors.opensearch.client import build_client, describe_error, redact_url, wrapped
from connectors.opensearch.features import ClusterFeatures, detect
from connectors.shared import filter_clauses
from ddr_search.errors import BackendError, ConfigError, DocumentsRejected
from ddr_search.filters import Filters
from ddr_search.fusion import Fused, FusionConfig, fuse
from ddr_search.settings import Settings
from ddr_search.types import Document, IndexedDocument, ScoredIds

log = logging.getLogger(__name__)

HYBRID_MODES = ("auto", "native", "client")
EF_SEARCH_SINCE = (2, 16, 0)  # k-NN query `method_parameters.ef_search`
MULTI_SHARD_NATIVE_SINCE = (3, 5, 0)  # documented per-shard fusion fix; not verifiable here (no neural-search 3.x)


def inner_product_to_knn_score(ip: float) -> float:
    """The faiss innerproduct score OpenSearch reports for an inner product x.y (the k-NN 'Spaces' table)."""
    d = -ip
    return 1.0 / (1.0 + d) if d >= 0 else 1.0 - d


def knn_score_to_inner_product(score: float) -> float:
    """Invert the faiss innerproduct score (d = -x.y; score = 1 / (1 + d) if d >= 0 else 1 - d)."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def _retryable(status: object) -> bool:
    return isinstance(status, int) and (status == 429 or 500 <= status < 600)


def _reason(info: Mapping[str, Any]) -> str:
    error = info.get("error")
    if not isinstance(error, dict):
        return f"status {info.get('status')}: {error}"
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        text += f" ({cause.get('reason')})"
    return text


class OpenSearchBackend:
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

    def _source(self, item: IndexedDocument) -> dict[str, Any]:
        doc = item.document
        vector = np.asarray(item.vector, dtype=np.float32).ravel()
        if self.dimension is not None and vector.shape[0] != self.dimension:
            raise BackendError(
                f"document {doc.id!r}: vector has {vector.shape[0]} dimensions, the index expects {self.dimension}"
            )
        source: dict[str, Any] = {
            "title": doc.title,
            "text": doc.text,
            "metadata": dict(doc.metadata),
            "encoder_version": item.encoder_version,
            shared.VECTOR_FIELD: vector.tolist(),
        }
        if doc.domain is not None:
            source["domain"] = doc.domain
        return source

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
                d.document.id: {"_op_type": "index", "_index": target, "_id": d.document.id, "_source": self._source(d)}
                for d in chunk
            }
            failures.extend(self._bulk(actions, f"bulk index into {target}"))
        if failures:
            shown = "; ".join(f"id {doc_id!r}: {why}" for doc_id, why in failures[:10])
            more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
            raise DocumentsRejected(f"{len(failures)} of {len(documents)} documents were not indexed: {shown}{more}",
                                    dict(failures), len(documents))

    def _bulk(self, actions: dict[str, dict[str, Any]], what: str) -> list[tuple[str, str]]:
        """Send one chunk; retry the whole request on 429/5xx and single items on 429/5xx, with backoff.

        Returns (id, reason) for every item that finally failed; nothing is dropped silently.
        """
        pending = dict(actions)
        failures: list[tuple[str, str]] = []
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1)))
            last = attempt == self.max_retries
            retry: dict[str, dict[str, Any]] = {}
            try:
                for ok, item in helpers.streaming_bulk(
                    self.client,
                    list(pending.values()),
                    chunk_size=len(pending),
                    max_chunk_bytes=50 * 1024 * 1024,
                    raise_on_error=False,
                    yield_ok=False,
                    refresh=self.refresh_mode,
                ):
                    if ok:
                        continue
                    (op, info), = item.items()
                    doc_id = str(info.get("_id"))
                    if _retryable(info.get("status")) and not last:
                        retry[doc_id] = pending[doc_id]
                    elif op == "delete" and info.get("status") == 404:
                        continue
                    else:
                        failures.append((doc_id, _reason(info)))
            except os_errors.TransportError as e:
                if isinstance(e, os_errors.ConnectionError) or not _retryable(e.status_code) or last:
                    raise BackendError(f"OpenSearch {what} on {redact_url(self.url)}: {describe_error(e)}") from e
                log.warning("%s: %s, retrying (attempt %d)", what, describe_error(e), attempt + 1)
                continue
            if not retry:
                return failures
            log.warning("%s: %d documents rejected with 429/5xx, retrying (attempt %d)", what, len(retry), attempt + 1)
            pending = retry
        return failures

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
        response = self._call("mget", self.client.mget, index=self.alias, body={"ids": [str(i) for i in ids]},
                              params={"_source": "false"})
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
            reasons = {_reason({"error": f.get("reason")}) for f in shards.get("failures") or []}
            why = f"{failed} of {shards.get('total')} shards failed" if failed else "the search timed out"
            detail = f" ({'; '.join(sorted(reasons))[:300]})" if reasons else ""
            raise BackendError(f"OpenSearch {what} on {redact_url(self.url)} returned partial results: {why}{detail}")
        return list(response["hits"]["hits"])

    def bm25_search(
        self, text: str, k: int, *, domain: str | None = None, filters: Filters = ()
    ) -> ScoredIds:
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

    def hybrid_search(
        self,
        text: str,
        vector: NDArray[np.float32],
        k: int,
        *,
        domain: str | None = None,
        config: FusionConfig | None = None,
        candidates: int = 100,
        offset: int = 0,
        filters: Filters = (),
        sub_scores: bool = True,
    ) -> list[Fused]:
        """BM25 + kNN fused; results `[offset, offset + k)` of the fused ranking.

        Native `hybrid` query + search pipeline where the cluster has neural-search >= 2.19 (the cluster
        returns fused scores only; with `sub_scores` one more `_msearch` restricted to the k hits fetches
        each hit's BM25 score and inner product, else they are None); otherwise both
        sub-queries in one `_msearch` and `ddr_search.fusion.fuse` over the BM25 and k-NN scores
        (sub-scores reported: raw BM25, raw x.y).
        Each sub-query fetches `max(candidates, offset + k)` results either way.
        """
        config = config or FusionConfig()
        depth = self._k(max(candidates, offset + k))
        clauses = filter_clauses(domain, filters)
        if self._native(config):
            return self._native_hybrid(text, vector, k, depth, offset, clauses, config, sub_scores)
        lists = self._msearch_pair(text, vector, depth, clauses)
        # Fuse the k-NN *scores*, as the cluster's pipeline does (so native and client-side rank and score
        # identically), then report the dense sub-score as the raw inner product. For x.y >= 0 the score
        # is 1 + x.y, an affine map, so min_max / z_score / rrf equal fusing x.y itself (the embedded way).
        fused = fuse(lists, config, k=offset + k)[offset:]
        return [
            Fused(f.id, f.score, (f.sub_scores[0], None if f.sub_scores[1] is None
                                  else knn_score_to_inner_product(f.sub_scores[1])))
            for f in fused
        ]

    def _msearch_pair(
        self, text: str, vector: NDArray[np.float32], depth: int, clauses: Sequence[dict[str, Any]]
    ) -> list[ScoredIds]:
        """BM25 and kNN (scores as the cluster reports them) in one `_msearch` round trip."""
        body_bm25 = queries.search_body(queries.bm25_query(text, clauses), depth)
        body_knn = queries.search_body(queries.knn_query(vector, depth, clauses, self._ef_search()), depth)
        response = self._call(
            "msearch", self.client.msearch, body=[{"index": self.alias}, body_bm25, {"index": self.alias}, body_knn]
        )
        lists: list[ScoredIds] = []
        for name, sub in zip(("bm25", "knn"), response["responses"], strict=True):
            if "error" in sub:
                err = sub["error"]
                reason = err.get("reason") if isinstance(err, dict) else err
                where = f"OpenSearch msearch ({name}) on {redact_url(self.url)}"
                raise BackendError(f"{where}: {sub.get('status')} {reason}")
            lists.append([(h["_id"], float(h["_score"])) for h in self._complete_hits(sub, f"msearch ({name})")])
        return lists

    def _native(self, config: FusionConfig) -> bool:
        """Native `hybrid` where asked for or detected, and only where it ranks as `fuse` does: what the
        cluster's version can fuse, over a one-shard index (before 3.5 the pipeline normalises and ranks
        each shard's hits on their own; on a 2-shard 2.19.1 index 7 of 10 test rankings differed)."""
        if self.hybrid_mode == "client":
            return False
        if self.hybrid_mode == "native":
            return True
        if not self.features.fuses_natively(config):
            return False
        return self.features.version >= MULTI_SHARD_NATIVE_SINCE or self._shards() == 1

    def _ef_search(self) -> int | None:
        """The per-query HNSW candidate list, where the cluster takes one (`method_parameters`, 2.16+)."""
        if self.ef_search is None or self.features.plugins is None or self.features.version < EF_SEARCH_SINCE:
            return None
        return self.ef_search

    def _shards(self) -> int:
        """The most primary shards of any index behind the alias (asked once per backend)."""
        if self._shard_count is None:
            response = self._call("GET settings", self.client.indices.get_settings, index=self.alias,
                                  name="index.number_of_shards")
            counts = [int(v["settings"]["index"]["number_of_shards"]) for v in response.values()]
            self._shard_count = max(counts, default=1)
        return self._shard_count

    def fuses_natively(self, config: FusionConfig) -> bool:
        """Where `hybrid_search` fuses `config`: the cluster's pipeline (True) or `ddr_search.fusion` here."""
        return self._native(config)

    def _pipeline_exists(self, name: str) -> bool:
        if name not in self._pipelines:
            try:
                self.client.transport.perform_request("GET", f"/_search/pipeline/{name}")
                self._pipelines[name] = True
            except os_errors.NotFoundError:
                self._pipelines[name] = False
            except os_errors.TransportError as e:
                where = f"OpenSearch GET search pipeline on {redact_url(self.url)}"
                raise BackendError(f"{where}: {describe_error(e)}") from e
        return self._pipelines[name]

    def _native_hybrid(
        self,
        text: str,
        vector: NDArray[np.float32],
        k: int,
        depth: int,
        offset: int,
        clauses: list[dict[str, Any]],
        config: FusionConfig,
        sub_scores: bool,
    ) -> list[Fused]:
        name = schema.pipeline_name(self.alias, config)
        params: dict[str, Any] = {}
        inline = None
        if self._pipeline_exists(name):
            params["search_pipeline"] = name
        else:  # a configuration `setup` did not create: a temporary pipeline in the request
            inline = schema.pipeline_body(config, self.features.version)
        body = queries.hybrid_body(text, vector, k, depth, clauses, offset=offset, pipeline=inline,
                                   ef_search=self._ef_search())
        try:
            hits = self._search(body, **params)
        except BackendError as e:
            # neural-search answers a page past the last fused hit with 400 "Reached end of search result"
            # where the client-side fusion gives an empty page: so do we.
            if "Reached end of search result" not in json.dumps(getattr(e.__cause__, "info", None), default=str):
                raise
            return []
        if not hits or not sub_scores:
            return [Fused(h["_id"], float(h["_score"]), (None, None)) for h in hits]
        # The cluster returns fused scores only. Each hit's own BM25 score and inner product come from one
        # more _msearch restricted to these ids (a filter never changes a score): k documents, not `depth`.
        ids = [h["_id"] for h in hits]
        restricted = [*clauses, {"ids": {"values": ids}}]
        bm25, knn = (dict(lst) for lst in self._msearch_pair(text, vector, len(ids), restricted))
        return [
            Fused(i, float(h["_score"]), (bm25.get(i), knn_score_to_inner_product(knn[i]) if i in knn else None))
            for i, h in zip(ids, hits, strict=True)
        ]

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
        out: dict[str, Document] = {}
        for d in response["docs"]:
            if not d.get("found"):
                continue
            src = d["_source"]
            out[d["_id"]] = Document(
                id=d["_id"],
                text=src.get("text", ""),
                title=src.get("title", ""),
                domain=src.get("domain"),
                metadata=src.get("metadata") or {},
            )
        return out

    def versions(self, ids: Sequence[str]) -> dict[str, str]:
        """The encoder version of each stored id, by a real-time `mget` of that one field."""
        if not ids:
            return {}
        response = self._call("mget", self.client.mget, index=self.alias, body={"ids": [str(i) for i in ids]},
                              params={"_source_includes": "encoder_version"})
        return {d["_id"]: str(d["_source"].get("encoder_version")) for d in response["docs"] if d.get("found")}

    def count(self, domain: str | None = None) -> int:
        body = {"query": {"term": {"domain": domain}}} if domain is not None else None
        return int(self._call("count", self.client.count, index=self.alias, body=body)["count"])

    def domain_counts(self) -> dict[str, int]:
        return shared.domain_counts(lambda aggs: self._call(
            "search", self.client.search, index=self.alias, body={"size": 0, "aggs": aggs})["aggregations"]["domains"])

    def indices(self) -> list[str]:
        """The version indices (`<alias>-v*`) the alias points at; empty when the alias does not exist.

        Asked only of `<alias>-v*`, not of every index: a least-privilege user holds rights on its own
        indices alone, and the security plugin refuses a request that resolves to `*`.
        """
        # ignore=404: a missing alias is an answer here, not a failure worth a logged warning
        response = self._call("GET alias", self.client.indices.get_alias, index=f"{self.alias}-v*", name=self.alias,
                              ignore=[404])
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
                src = hit["_source"]
                batch.append(
                    Document(
                        id=hit["_id"],
                        text=src.get("text", ""),
                        title=src.get("title", ""),
                        domain=src.get("domain"),
                        metadata=src.get("metadata") or {},
                    )
                )
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self.client.close()
