"""ElasticsearchBackend: the Backend protocol over an index alias on Elasticsearch 8.x / 9.x.

BM25 is a `match` on the passage field, dense is the top-level `knn` search (filters inside it, so k hits
come back for a rare domain), hybrid sends both in one `_msearch` and fuses them here with
`ddr_search.fusion` over the raw BM25 scores and inner products: the embedded backend's exact formula.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, helpers
from numpy.typing import NDArray

from connectors.elasticsearch.client import build_client, wrapped
from connectors.elasticsearch.retrievers import probe
from connectors.elasticsearch.schema import dot_product_score_to_inner_product
from connectors.shared import (
    PASSAGE_FIELD,
    SOURCE_EXCLUDES,
    VECTOR_FIELD,
    bm25_terms,
    document_from_source,
    document_source,
    domain_counts,
    filter_clauses,
    item_reason,
    redact_url,
)
from ddr_search.errors import BackendError, ConfigError, DocumentsRejected
from ddr_search.filters import Filters
from ddr_search.fusion import Fused, FusionConfig, fuse
from ddr_search.settings import ElasticsearchSettings, Settings
from ddr_search.types import Document, IndexedDocument, ScoredIds, passage_text

log = logging.getLogger(__name__)

MAX_K = 10_000  # index.max_result_window and the kNN limit on k / num_candidates


@dataclass(frozen=True)
class ClusterInfo:
    version: tuple[int, int, int]

    def describe(self) -> str:
        return f"elasticsearch {'.'.join(map(str, self.version))}"


class ElasticsearchBackend:
    """Documents in the index behind `alias` (one `<alias>-v<encoder version>` index at a time); writes are
    `index` ops keyed by id through `helpers.streaming_bulk` (429s retried with backoff, per-item errors
    collected); bulk requests never wait for a refresh: `refresh()` once at the end of an ingest."""

    kind = "elasticsearch"

    def __init__(
        self,
        client: Elasticsearch,
        *,
        alias: str,
        url: str | None = None,
        dimension: int | None = None,
        num_candidates: int = 100,
        client_tokens: bool = False,
        chunk_size: int = 500,
        max_retries: int = 5,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        require_alias: bool = True,
    ) -> None:
        self.client = client
        self.alias = alias
        self.url = url
        self.dimension = dimension
        self.num_candidates = num_candidates
        self.client_tokens = client_tokens  # DDR_ELASTICSEARCH__ANALYZER=client: BM25 terms made here
        self.chunk_size = chunk_size
        self.max_retries = max_retries
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._info: ClusterInfo | None = None
        self._alias_ready = not require_alias

    @classmethod
    def from_settings(cls, settings: Settings, dimension: int | None = None) -> ElasticsearchBackend:
        es: ElasticsearchSettings = settings.elasticsearch
        return cls(
            build_client(es),
            alias=es.index,
            url=es.url,
            dimension=dimension,
            num_candidates=es.num_candidates,
            client_tokens=es.analyzer == "client",
        )

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with wrapped(action, self.url):
            return fn(*args, **kwargs)

    @property
    def info(self) -> ClusterInfo:
        """The version, from `_nodes/_local` (a cluster without the rest-root module answers `GET /` 405)."""
        if self._info is None:
            nodes = self._call("GET _nodes/_local", self.client.nodes.info, node_id="_local", metric="_none")
            numbers = [str(n.get("version", "0")) for n in nodes["nodes"].values()]
            parts = [int(p) for p in (numbers[0] if numbers else "0").split("-")[0].split(".")[:3]]
            self._info = ClusterInfo(tuple([*parts, 0, 0, 0][:3]))  # type: ignore[arg-type]
        return self._info

    # -- writes -----------------------------------------------------------------------------------

    def upsert(self, documents: Sequence[IndexedDocument], *, index: str | None = None) -> None:
        """Index every document (create or replace by id); DocumentsRejected names each refused id."""
        target = index or self.alias
        if index is None and not self._alias_ready:
            if not self.indices():  # a write to a missing alias would auto-create an index with no mapping
                raise BackendError(
                    f"alias {self.alias} does not exist on {redact_url(self.url)}: run `ddr-search setup` first"
                )
            self._alias_ready = True
        actions = [
            {"_op_type": "index", "_index": target, "_id": d.document.id, "_source": self._source(d)} for d in documents
        ]
        failures = self._bulk(actions, f"bulk index into {target}")
        if failures:
            shown = "; ".join(f"id {doc_id!r}: {why}" for doc_id, why in list(failures.items())[:10])
            more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
            raise DocumentsRejected(
                f"{len(failures)} of {len(documents)} documents were not indexed: {shown}{more}",
                failures,
                len(documents),
            )

    def _source(self, item: IndexedDocument) -> dict[str, Any]:
        source = document_source(item, self.dimension)
        if self.client_tokens:
            source[PASSAGE_FIELD] = bm25_terms(passage_text(item.document.title, item.document.text))
        return source

    def _bulk(self, actions: list[dict[str, Any]], what: str) -> dict[str, str]:
        failures: dict[str, str] = {}
        with wrapped(what, self.url):
            for ok, item in helpers.streaming_bulk(
                self.client,
                actions,
                chunk_size=self.chunk_size,
                raise_on_error=False,
                raise_on_exception=True,
                max_retries=self.max_retries,
                initial_backoff=self.initial_backoff_s,
                max_backoff=self.max_backoff_s,
                yield_ok=False,
            ):
                if ok:
                    continue
                ((op, info),) = item.items()
                if op == "delete" and info.get("status") == 404:
                    continue
                failures[str(info.get("_id"))] = item_reason(info)
        return failures

    def delete(self, ids: Sequence[str]) -> int:
        """Delete by id; returns how many existed (missing ids are not an error). Refreshes once."""
        if not ids:
            return 0
        existing = self.versions(ids)
        actions = [{"_op_type": "delete", "_index": self.alias, "_id": str(i)} for i in existing]
        failures = self._bulk(actions, f"bulk delete from {self.alias}")
        if failures:
            shown = "; ".join(f"id {doc_id!r}: {why}" for doc_id, why in list(failures.items())[:10])
            raise BackendError(f"{len(failures)} documents were not deleted: {shown}")
        self.refresh()
        return len(existing)

    # -- reads ------------------------------------------------------------------------------------

    def _hits(self, response: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
        """The hits, or BackendError for partial results (failed shards, timed out)."""
        shards = response.get("_shards") or {}
        failed = int(shards.get("failed") or 0)
        if failed or response.get("timed_out"):
            why = f"{failed} of {shards.get('total')} shards failed" if failed else "the search timed out"
            raise BackendError(f"Elasticsearch {what} on {redact_url(self.url)} returned partial results: {why}")
        return list(response["hits"]["hits"])

    @staticmethod
    def _k(k: int) -> int:
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be in [1, {MAX_K}], got {k}")
        return k

    def _bm25_body(self, text: str, k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        if self.client_tokens:
            text = bm25_terms(text)
        query: dict[str, Any] = {"bool": {"must": [{"match": {PASSAGE_FIELD: {"query": text}}}], "filter": clauses}}
        return {"query": query, "size": k, "_source": False, "track_total_hits": False}

    def _knn_body(self, vector: NDArray[np.float32], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        knn: dict[str, Any] = {
            "field": VECTOR_FIELD,
            "query_vector": [float(x) for x in np.asarray(vector, dtype=np.float32).ravel()],
            "k": k,
            "num_candidates": min(MAX_K, max(k, self.num_candidates)),
        }
        if clauses:
            knn["filter"] = clauses
        return {"knn": knn, "size": k, "_source": False, "track_total_hits": False}

    def bm25_search(self, text: str, k: int, *, domain: str | None = None, filters: Filters = ()) -> ScoredIds:
        body = self._bm25_body(text, self._k(k), filter_clauses(domain, filters))
        response = self._call("search", self.client.search, index=self.alias, **body)
        return [(h["_id"], float(h["_score"])) for h in self._hits(response, "search")]

    def dense_search(
        self, vector: NDArray[np.float32], k: int, *, domain: str | None = None, filters: Filters = ()
    ) -> ScoredIds:
        """Top-k by inner product (the raw x.y, as the embedded backend reports it)."""
        body = self._knn_body(vector, self._k(k), filter_clauses(domain, filters))
        response = self._call("search", self.client.search, index=self.alias, **body)
        return [
            (h["_id"], dot_product_score_to_inner_product(float(h["_score"]))) for h in self._hits(response, "search")
        ]

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
    ) -> list[Fused]:
        """BM25 + kNN in one `_msearch`, fused here over raw BM25 scores and inner products."""
        depth = self._k(max(candidates, offset + k))
        clauses = filter_clauses(domain, filters)
        searches = [
            {"index": self.alias},
            self._bm25_body(text, depth, clauses),
            {"index": self.alias},
            self._knn_body(vector, depth, clauses),
        ]
        response = self._call("msearch", self.client.msearch, searches=searches)
        lists: list[ScoredIds] = []
        for name, sub in zip(("bm25", "knn"), response["responses"], strict=True):
            if "error" in sub:
                raise BackendError(
                    f"Elasticsearch msearch ({name}) on {redact_url(self.url)}: {sub.get('status')} {item_reason(sub)}"
                )
            hits = self._hits(sub, f"msearch ({name})")
            to_score = dot_product_score_to_inner_product if name == "knn" else float
            lists.append([(h["_id"], to_score(float(h["_score"]))) for h in hits])
        return fuse(lists, config or FusionConfig(), k=offset + k)[offset:]

    def fuses_natively(self, config: FusionConfig) -> bool:
        """Always fused here, with per-hit sub-scores (connectors/elasticsearch/retrievers.py says why)."""
        return False

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        if not ids:
            return {}
        response = self._call(
            "mget", self.client.mget, index=self.alias, ids=[str(i) for i in ids], source_excludes=SOURCE_EXCLUDES
        )
        return {d["_id"]: document_from_source(d["_id"], d["_source"]) for d in response["docs"] if d.get("found")}

    def versions(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        response = self._call(
            "mget", self.client.mget, index=self.alias, ids=[str(i) for i in ids], source_includes=["encoder_version"]
        )
        return {d["_id"]: str(d["_source"].get("encoder_version")) for d in response["docs"] if d.get("found")}

    def count(self, domain: str | None = None) -> int:
        query = {"term": {"domain": domain}} if domain is not None else None
        return int(self._call("count", self.client.count, index=self.alias, query=query)["count"])

    def domain_counts(self) -> dict[str, int]:
        return domain_counts(
            lambda aggs: self._call("search", self.client.search, index=self.alias, size=0, aggregations=aggs)[
                "aggregations"
            ]["domains"]
        )

    def indices(self) -> list[str]:
        """The version indices (`<alias>-v*`) the alias points at; empty when the alias does not exist."""
        response = self._call(
            "GET alias",
            self.client.options(ignore_status=404).indices.get_alias,
            index=f"{self.alias}-v*",
            name=self.alias,
        )
        body = response.body if hasattr(response, "body") else response
        if not isinstance(body, dict) or "error" in body or body.get("status") == 404:
            return []
        return sorted(body)

    def describe(self) -> dict[str, object]:
        response = self._call(
            "search",
            self.client.search,
            index=self.alias,
            size=0,
            aggregations={"versions": {"terms": {"field": "encoder_version", "size": 100}}},
        )
        buckets = response["aggregations"]["versions"]["buckets"]
        return {
            "backend": self.kind,
            "url": redact_url(self.url),
            "alias": self.alias,
            "indices": self.indices(),
            "encoder_versions": {str(b["key"]): int(b["doc_count"]) for b in buckets},
            "cluster_retrievers": {
                name: why or "available" for name, why in probe(self.client, self.alias, self.url).refused.items()
            },
            "fusion": "client (one _msearch, per-hit BM25 and dense scores)",
        }

    def refresh(self) -> None:
        self._call("refresh", self.client.indices.refresh, index=self.alias)

    def scan(self, batch_size: int = 500) -> Iterator[list[Document]]:
        """Every document behind the alias, in batches (scroll), without vectors: what reindex re-embeds."""
        batch: list[Document] = []
        with wrapped("scroll", self.url):
            for hit in helpers.scan(
                self.client,
                index=self.alias,
                size=batch_size,
                scroll="5m",
                query={"query": {"match_all": {}}, "_source": {"excludes": SOURCE_EXCLUDES}},
            ):
                batch.append(document_from_source(hit["_id"], hit["_source"]))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self.client.close()
