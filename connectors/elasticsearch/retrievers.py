"""Whether the cluster's own hybrid retrievers (`rrf`, `linear`) run, found by asking it, and reported.

ddr-search fuses on the client on every Elasticsearch cluster all the same: the cluster's retrievers return
one fused score per hit, while the product promises each hit's BM25 and dense scores, fuses with the
module's chosen technique (min_max / l2 / z_score / rrf with weights; `linear` has no z_score) and must rank
as the embedded and OpenSearch backends do. The probe tells an operator what the cluster could do
(version, licence, the rank-rrf module) without guessing from version tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from connectors.elasticsearch.client import wrapped
from ddr_search.errors import BackendError

_NOTHING = {"standard": {"query": {"match_none": {}}}}
PROBES: dict[str, dict[str, Any]] = {
    "rrf": {"rrf": {"retrievers": [_NOTHING, _NOTHING]}},
    "linear": {"linear": {"retrievers": [{"retriever": _NOTHING, "weight": 1.0}] * 2}},
}


@dataclass(frozen=True)
class RetrieverSupport:
    """Each probed retriever's name -> None when the cluster ran it, else the cluster's one-line refusal."""

    refused: dict[str, str | None]

    def describe(self) -> str:
        parts = [
            f"{name} {'available' if why is None else f'unavailable ({why})'}" for name, why in self.refused.items()
        ]
        return f"cluster retrievers: {'; '.join(parts)}; hybrid fuses on the client (per-hit BM25 and dense scores)"


def _refusal(e: ApiError) -> str:
    """`status type: reason` of the refusal (unknown retriever, non-compliant licence, ...)."""
    error = e.body.get("error") if isinstance(e.body, dict) else None
    root = (error.get("root_cause") or [error])[0] if isinstance(error, dict) else {}
    return f"{e.meta.status} {root.get('type', 'error')}: {root.get('reason', e.message)}"


def probe(client: Elasticsearch, index: str, url: str | None) -> RetrieverSupport:
    """Run each retriever over `index` with queries that match nothing; a refusal is recorded, not raised
    (any other failure, such as the cluster being down, raises BackendError)."""
    refused: dict[str, str | None] = {}
    for name, retriever in PROBES.items():
        try:
            with wrapped(f"search {index} (probe the {name} retriever)", url):
                client.search(index=index, retriever=retriever, size=1)
            refused[name] = None
        except BackendError as e:
            cause = e.__cause__
            if not (isinstance(cause, ApiError) and cause.meta.status in (400, 403)):
                raise
            refused[name] = _refusal(cause)
    return RetrieverSupport(refused)
