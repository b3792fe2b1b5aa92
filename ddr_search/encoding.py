"""What the torch and the ONNX Runtime encoders share on the query side: the domain check, the auto
routing step and how routing weights are reported. Each encoder only says how it runs its graphs.
Also the one pass-through base for encoders that wrap another (EncoderWrapper)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ddr_search.errors import UnknownModuleError
from ddr_search.fusion import FusionConfig
from ddr_search.routing import DomainProfile, route
from ddr_search.types import Encoder, QueryEncoding, RoutingMode, Vectors


def check_domain(domain: str | None, domains: Mapping[str, Sequence[str]]) -> None:
    """A domain no module serves is an error, never a silent fallback to the general module."""
    if domain is not None and domain not in domains:
        known = ", ".join(sorted(domains)) or "none"
        raise UnknownModuleError(f"no module is mapped to domain {domain!r} (domains with modules: {known})")


def named_weights(names: Sequence[str], row: Sequence[float]) -> dict[str, float]:
    """Module name -> weight for one query, leaving out modules it does not use."""
    return {n: float(w) for n, w in zip(names, row, strict=True) if w > 0}


def auto_encode(
    general: np.ndarray,
    profiles: Sequence[DomainProfile],
    encode_rows: Callable[[list[int], str], np.ndarray],
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Auto routing on a batch whose general-module vectors are `general` (the answer for a query no
    domain accepts): each accepted module re-encodes only its own rows (`encode_rows(rows, module)`),
    so one module's queries never depend on another's. Returns the vectors and each query's weights.

    Each module's rows are padded (repeating its first row) to the batch's size: kernels can round
    differently for another number of rows, and which rows another module wins must not move a bit of
    this module's vectors."""
    vectors = general.copy()
    chosen = route(general, profiles)
    for module in sorted({c for c in chosen if c is not None}):
        rows = [r for r, c in enumerate(chosen) if c == module]
        padded = rows + [rows[0]] * (len(chosen) - len(rows))
        vectors[rows] = encode_rows(padded, module)[: len(rows)]
    return vectors, [{c: 1.0} if c is not None else {} for c in chosen]


class EncoderWrapper:
    """Implements `Encoder` by passing every call to `inner`; a subclass overrides what it changes, so the
    protocol's delegation lives in one place."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def version(self) -> str:
        return self.inner.version

    def domains(self) -> Mapping[str, Sequence[str]]:
        return self.inner.domains()

    def fusion_configs(self) -> Mapping[str, FusionConfig]:
        return self.inner.fusion_configs()

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors:
        return self.inner.encode_passages(texts, batch_size=batch_size)

    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        domain: str | None = None,
        routing: RoutingMode | None = None,
        batch_size: int = 64,
    ) -> QueryEncoding:
        return self.inner.encode_queries(texts, domain=domain, routing=routing, batch_size=batch_size)
