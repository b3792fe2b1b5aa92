"""Plain data shared by every layer, and the Protocols (seams) the other packages implement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ddr_search.errors import InputError
from ddr_search.filters import Filters

if TYPE_CHECKING:
    from ddr_search.fusion import Fused, FusionConfig

Vectors = NDArray[np.float32]
JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


def passage_text(title: str, text: str) -> str:
    """How a titled passage is fed to BM25 and the encoder (BEIR's convention: title, space, text)."""
    return f"{title} {text}".strip() if title else text


class RoutingMode(StrEnum):
    """How a query's domain modules are weighted (DDR paper, section 3)."""

    AUTO = "auto"  # the one domain whose profile accepts the query, else the general module alone
    SOFT = "soft"  # every domain module, softmax router weights
    TOP_K = "topk"  # the k largest softmax weights, not renormalised
    PRIOR = "prior"  # only the modules the query's known domain maps to
    NONE = "none"  # the general module alone


def resolve_routing(
    domain: str | None, routing: RoutingMode | None, *, has_modules: bool, default: RoutingMode
) -> RoutingMode:
    """Every encoder's rule: a known domain means prior routing unless the caller says otherwise; no
    modules means none. Raises InputError for prior routing without a domain."""
    if not has_modules:
        return RoutingMode.NONE
    if routing is None:
        routing = RoutingMode.PRIOR if domain is not None else default
    if routing is RoutingMode.PRIOR and domain is None:
        raise InputError("prior routing needs a domain: pass domain=... or choose soft/topk routing")
    return routing


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    DENSE = "dense"
    BM25 = "bm25"


@dataclass(frozen=True, slots=True)
class Document:
    """One passage as ingested. `domain` is the ingest-time prior for queries that target it."""

    id: str
    text: str
    title: str = ""
    domain: str | None = None
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueryEncoding:
    """Query vectors plus the routing weights that produced each (module name -> weight)."""

    vectors: Vectors
    weights: list[dict[str, float]]


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result with every score that produced its rank."""

    id: str
    title: str
    text: str
    domain: str | None
    metadata: Mapping[str, JSONValue]
    score: float
    bm25_score: float | None
    dense_score: float | None
    routing: dict[str, float]
    fused_by: str | None = None  # hybrid only: "cluster" (the engine's pipeline) or "client" (ddr_search.fusion)


@runtime_checkable
class Encoder(Protocol):
    """What the query path and the workers need from an encoder (torch or ONNX Runtime)."""

    @property
    def dimension(self) -> int: ...

    @property
    def version(self) -> str:
        """Identifies the passage encoder; documents embedded by another version need re-embedding."""
        ...

    def domains(self) -> Mapping[str, Sequence[str]]:
        """Domain name -> the module names prior routing uses for it."""
        ...

    def fusion_configs(self) -> Mapping[str, FusionConfig]:
        """Module name ("general" included) -> the hybrid fusion tuned for it when it was trained."""
        ...

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors: ...

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        domain: str | None = None,
        routing: RoutingMode | None = None,
        batch_size: int = 64,
    ) -> QueryEncoding: ...


@dataclass(frozen=True, slots=True)
class IndexedDocument:
    """A document with its passage vector, ready for a backend; `encoder_version` says who embedded it."""

    document: Document
    vector: NDArray[np.float32]
    encoder_version: str


ScoredIds = list[tuple[str, float]]


@runtime_checkable
class Backend(Protocol):
    """A document store with BM25 and exact/ANN inner-product search (embedded SQLite, OpenSearch,
    Elasticsearch); tests/contract holds every implementation to this.

    Every write is idempotent by document id: writing the same batch twice leaves one copy.
    `domain` restricts a search to documents ingested with that domain.
    """

    def upsert(self, documents: Sequence[IndexedDocument]) -> None: ...

    def delete(self, ids: Sequence[str]) -> int: ...

    def bm25_search(self, text: str, k: int, *, domain: str | None = None, filters: Filters = ()) -> ScoredIds:
        """`filters` (ddr_search.filters) apply before top-k: k hits come back even for a rare value."""
        ...

    def dense_search(
        self, vector: NDArray[np.float32], k: int, *, domain: str | None = None, filters: Filters = ()
    ) -> ScoredIds: ...

    def get(self, ids: Sequence[str]) -> dict[str, Document]: ...

    def versions(self, ids: Sequence[str]) -> dict[str, str]:
        """The encoder version each stored id was embedded with (ids not stored are left out): what lets a
        re-run skip documents stored already with the same content and encoder."""
        ...

    def count(self, domain: str | None = None) -> int: ...

    def domain_counts(self) -> dict[str, int]:
        """Documents per ingest domain (documents without a domain are not listed)."""
        ...

    def refresh(self) -> None:
        """Make every write searchable now (an ingest calls it once at the end; writes never wait for it)."""
        ...

    def describe(self) -> dict[str, object]:
        """What `ddr-search stats` shows beyond counts: where the documents live, encoder versions, ..."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class HybridBackend(Protocol):
    """A backend that answers hybrid queries itself in one round trip (the cluster connectors), with the
    formulas of `ddr_search.fusion`; the query path fuses two searches itself for the others."""

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
    ) -> list[Fused]: ...

    def fuses_natively(self, config: FusionConfig) -> bool:
        """Whether `hybrid_search` lets the engine fuse `config` (else it fuses with ddr_search.fusion)."""
        ...
