"""Hybrid search on OpenSearch: BM25 + kNN fused by the cluster (the native `hybrid` query with a search
pipeline) or here (both sub-queries in one `_msearch`, then `ddr_search.fusion`), and when each is used.

A mixin of OpenSearchBackend, split out by job: it uses the backend's client, alias, url, features,
hybrid mode and its `_call`, `_search`, `_complete_hits`, `_k` and `_ef_search`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from opensearchpy import exceptions as os_errors

from connectors.opensearch import queries, schema
from connectors.opensearch.client import describe_error
from connectors.opensearch.features import ClusterFeatures
from connectors.shared import filter_clauses, redact_url
from ddr_search.errors import BackendError
from ddr_search.filters import Filters
from ddr_search.fusion import Fused, FusionConfig, fuse
from ddr_search.types import ScoredIds

MULTI_SHARD_NATIVE_SINCE = (3, 5, 0)  # documented per-shard fusion fix; not verifiable here (no neural-search 3.x)


def inner_product_to_knn_score(ip: float) -> float:
    """The innerproduct score OpenSearch reports for an inner product x.y (faiss and lucene alike)."""
    d = -ip
    return 1.0 / (1.0 + d) if d >= 0 else 1.0 - d


def knn_score_to_inner_product(score: float) -> float:
    """Invert the innerproduct score (d = -x.y; score = 1 / (1 + d) if d >= 0 else 1 - d)."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


class HybridSearch:
    """`hybrid_search` and the rules for native vs client-side fusion (docs/opensearch.md)."""

    client: Any
    alias: str
    url: str | None
    hybrid_mode: str
    _pipelines: dict[str, bool]
    _shard_count: int | None

    features: ClusterFeatures

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
            Fused(
                f.id,
                f.score,
                (f.sub_scores[0], None if f.sub_scores[1] is None else knn_score_to_inner_product(f.sub_scores[1])),
            )
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

    def _shards(self) -> int:
        """The most primary shards of any index behind the alias (asked once per backend)."""
        if self._shard_count is None:
            response = self._call(
                "GET settings", self.client.indices.get_settings, index=self.alias, name="index.number_of_shards"
            )
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
        body = queries.hybrid_body(
            text, vector, k, depth, clauses, offset=offset, pipeline=inline, ef_search=self._ef_search()
        )
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
