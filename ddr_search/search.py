"""The routed query path: route -> encode -> BM25 and dense sub-queries -> fusion -> hits.

Core code: it talks to an `Encoder` and a `Backend` through their Protocols and imports no connector,
so every backend answers a query the same way.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from ddr_search.errors import InputError, UnknownModuleError
from ddr_search.filters import Filters
from ddr_search.fusion import Fused, FusionConfig, Technique, fuse, routed_fusion
from ddr_search.settings import SearchSettings
from ddr_search.types import Backend, Encoder, Hit, HybridBackend, RoutingMode, ScoredIds, SearchMode


@dataclass(frozen=True, slots=True)
class Route:
    """How a query is encoded and filtered: the domain handed to the encoder, the routing mode, the filter."""

    encoder_domain: str | None
    routing: RoutingMode | None  # None: the encoder's default (auto: the accepting domain, else general)
    filter_domain: str | None


def resolve_route(
    domain: str | None,
    *,
    module_domains: Mapping[str, Sequence[str]],
    backend: Backend,
    filter_domain: bool = True,
    routing: RoutingMode | None = None,
) -> Route:
    """A domain with modules -> prior routing over them; with documents only -> the general module alone.

    Raises UnknownModuleError for a domain that has neither documents nor modules: a typo must not
    silently search everything.
    """
    if domain is None:
        return Route(None, routing, None)
    where = domain if filter_domain else None
    if domain in module_domains:
        return Route(domain, routing or RoutingMode.PRIOR, where)
    if backend.count(domain) > 0:
        return Route(None, RoutingMode.NONE, where)
    with_docs = sorted(backend.domain_counts())
    raise UnknownModuleError(
        f"unknown domain {domain!r}: no documents were ingested with it and no module is trained for it "
        f"(domains with documents: {', '.join(with_docs) or 'none'}; with modules: "
        f"{', '.join(sorted(module_domains)) or 'none'})"
    )


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a single query on `count` torch threads, then restore (1 is ~3x faster than 2: docs/architecture.md 6)."""
    torch = sys.modules.get("torch")  # only when an encoder already loaded it: never import it here
    if torch is None or count < 1 or torch.get_num_threads() == count:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fusion_config(settings: SearchSettings) -> FusionConfig:
    return FusionConfig(technique=Technique(settings.normalization), weights=tuple(settings.combination_weights))


def choose_fusion(
    settings: SearchSettings, encoder: Encoder | None, routing: Mapping[str, float], explicit: FusionConfig | None
) -> FusionConfig:
    """Which fusion a hybrid query uses: the caller's, else fusion settings the user set, else the one
    tuned for the module the query was routed to (the general module's when none), else the defaults."""
    if explicit is not None:
        return explicit
    if settings.model_fields_set & {"normalization", "combination_weights"} or encoder is None:
        return fusion_config(settings)
    return routed_fusion(routing, encoder.fusion_configs()) or fusion_config(settings)


def search(
    query: str,
    *,
    backend: Backend,
    encoder: Encoder | None,
    settings: SearchSettings,
    domain: str | None = None,
    k: int | None = None,
    mode: SearchMode | str = SearchMode.HYBRID,
    filter_domain: bool = True,
    routing: RoutingMode | None = None,
    fusion: FusionConfig | None = None,
    filters: Filters = (),
) -> list[Hit]:
    """Top-k hits for one query. `encoder` may be None only in bm25 mode.

    Hybrid takes each sub-query's top `settings.candidates` and fuses them with `ddr_search.fusion`;
    every hit carries both raw sub-scores (None where that sub-query did not return it). `filters`
    (ddr_search.filters) restrict every sub-query to documents whose metadata passes them.
    """
    mode = SearchMode(mode)
    if not query or not query.strip():
        raise InputError("the query is empty")
    k = settings.k if k is None else k
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    module_domains = encoder.domains() if encoder is not None else {}
    route = resolve_route(
        domain, module_domains=module_domains, backend=backend, filter_domain=filter_domain, routing=routing
    )
    depth = max(k, settings.candidates) if mode is SearchMode.HYBRID else k
    weights: dict[str, float] = {}
    dense: ScoredIds = []
    bm25: ScoredIds = []
    # A backend that fuses on its side (OpenSearch: native `hybrid` query + pipeline, or one `_msearch`)
    # answers hybrid queries in one round trip with the same formulas as `fuse` below.
    hybrid = backend if mode is SearchMode.HYBRID and isinstance(backend, HybridBackend) else None
    config = fusion  # hybrid: the routed module's fusion, chosen once the query is encoded
    # Client-side hybrid: the BM25 sub-query needs no vector, so it runs on a second thread while the query
    # is encoded and the dense sub-query runs (both release the GIL): a query waits for the slower of the two.
    lexical: Future[ScoredIds] | None = None
    if mode is SearchMode.HYBRID and hybrid is None:
        lexical = lexical_pool().submit(backend.bm25_search, query, depth, domain=route.filter_domain, filters=filters)
    with torch_threads(settings.query_threads):
        if mode is not SearchMode.BM25:
            if encoder is None:
                raise InputError(f"{mode.value} search needs an encoder")
            encoded = encoder.encode_queries([query], domain=route.encoder_domain, routing=route.routing)
            weights = encoded.weights[0]
            config = choose_fusion(settings, encoder, weights, fusion)
            if hybrid is not None:
                fused = hybrid.hybrid_search(
                    query,
                    encoded.vectors[0],
                    k,
                    domain=route.filter_domain,
                    config=config,
                    candidates=depth,
                    filters=filters,
                )
                return to_hits(fused, backend, weights, "cluster" if hybrid.fuses_natively(config) else "client")
            dense = backend.dense_search(encoded.vectors[0], depth, domain=route.filter_domain, filters=filters)
        if lexical is not None:
            bm25 = lexical.result()
        elif mode is SearchMode.BM25:
            bm25 = backend.bm25_search(query, depth, domain=route.filter_domain, filters=filters)
    if mode is SearchMode.HYBRID:
        fused = fuse([bm25, dense], config or fusion_config(settings), k=k)
    elif mode is SearchMode.DENSE:
        fused = [Fused(i, s, (None, s)) for i, s in dense[:k]]
    else:
        fused = [Fused(i, s, (s, None)) for i, s in bm25[:k]]
    return to_hits(fused, backend, weights, "client" if mode is SearchMode.HYBRID else None)


_lexical_pool: ThreadPoolExecutor | None = None
_lexical_lock = threading.Lock()


def lexical_pool() -> ThreadPoolExecutor:
    """The threads client-side hybrid runs BM25 sub-queries on: started once per process, not per query
    (a thread per query cost about 0.2 ms); a forked child starts its own, as the parent's threads stay behind."""
    global _lexical_pool
    with _lexical_lock:
        if _lexical_pool is None:
            _lexical_pool = ThreadPoolExecutor(thread_name_prefix="ddr-search-bm25")
        return _lexical_pool


def _forget_lexical_pool() -> None:
    global _lexical_pool, _lexical_lock
    _lexical_pool, _lexical_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_lexical_pool)


def to_hits(
    fused: Sequence[Fused], backend: Backend, routing: dict[str, float], fused_by: str | None = None
) -> list[Hit]:
    """Attach stored documents; one deleted between the search and this fetch is left out."""
    documents = backend.get([f.id for f in fused])
    hits = []
    for f in fused:
        document = documents.get(f.id)
        if document is None:
            continue
        bm25_score, dense_score = f.sub_scores
        hits.append(
            Hit(
                id=f.id,
                title=document.title,
                text=document.text,
                domain=document.domain,
                metadata=document.metadata,
                score=f.score,
                bm25_score=bm25_score,
                dense_score=dense_score,
                routing=dict(routing),
                fused_by=fused_by,
            )
        )
    return hits
