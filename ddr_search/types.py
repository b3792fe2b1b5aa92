"""Plain data shared by every layer, and the Protocols (seams) the other packages implement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]
JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


class RoutingMode(StrEnum):
    """How a query's domain modules are weighted (DDR paper, section 3)."""

    SOFT = "soft"  # every domain module, softmax router weights
    TOP_K = "topk"  # the k largest softmax weights, not renormalised
    PRIOR = "prior"  # only the modules the query's known domain maps to
    NONE = "none"  # the general module alone


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

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors: ...

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        domain: str | None = None,
        routing: RoutingMode | None = None,
        batch_size: int = 64,
    ) -> QueryEncoding: ...
