"""Run one retrieval method over a BEIR split and score it: bm25, dense (frozen), ddr (modules), hybrid.

The building blocks (`bm25_runs`, `dense_runs`, `fuse_runs`, `score_run`) are public so benchmarks and
the training loop can compute each list once and fuse or score it many ways; `evaluate` composes them.
Runs are ``{query_id: [(doc_id, score), ...]}`` best first, each cut at `depth` (100: Recall@100 and
the fusion candidates both need it). Passage vectors come from the on-disk cache (cache.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from ddr_search.data.beir import BeirDataset, load_beir
from ddr_search.errors import InputError
from ddr_search.evaluation.cache import encode_corpus
from ddr_search.evaluation.metrics import score_run
from ddr_search.fusion import FusionConfig, fuse
from ddr_search.types import Encoder, JSONValue, RoutingMode, ScoredIds, Vectors, passage_text

Runs = dict[str, ScoredIds]
DEPTH = 100


class Method(StrEnum):
    BM25 = "bm25"
    DENSE = "dense"  # the frozen backbone, no modules
    DDR = "ddr"  # backbone + a module store, with a routing mode
    HYBRID = "hybrid"  # BM25 fused with dense (or ddr when modules / an encoder are given)


@dataclass
class EvalResult:
    """Scores of one method on one split, with what produced them. `run` is kept out of JSON by default."""

    dataset: str
    split: str
    method: str
    metrics: dict[str, float]
    num_queries: int
    num_documents: int
    config: dict[str, JSONValue]
    timings: dict[str, float]
    routing: dict[str, float] = field(default_factory=dict)  # mean weight per module over the queries
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    run: Runs = field(default_factory=dict, repr=False)

    @property
    def ndcg_at_10(self) -> float:
        return self.metrics["nDCG@10"]

    @property
    def recall_at_100(self) -> float:
        return self.metrics["R@100"]

    def to_dict(self, *, include_run: bool = False) -> dict[str, JSONValue]:
        data = asdict(self)
        if include_run:
            data["run"] = {q: [[d, s] for d, s in hits] for q, hits in self.run.items()}
        else:
            del data["run"]
        return data

    def write_json(self, path: str | Path, *, include_run: bool = False) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(include_run=include_run), indent=2) + "\n", encoding="utf-8")


def passage_texts(corpus: Mapping[str, Mapping[str, str]]) -> tuple[list[str], list[str]]:
    """(ids, "title text") in corpus order: the text BM25 indexes and the encoder embeds."""
    ids = list(corpus)
    texts = [passage_text(corpus[i].get("title", ""), corpus[i]["text"]) for i in ids]
    return ids, texts


def _drop_self(qid: str, hits: ScoredIds, exclude_self_hits: bool, depth: int) -> ScoredIds:
    if exclude_self_hits:
        hits = [h for h in hits if h[0] != qid]
    return hits[:depth]


def bm25_runs(
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, str],
    *,
    depth: int = DEPTH,
    exclude_self_hits: bool = False,
) -> tuple[Runs, dict[str, float]]:
    """BM25 (bm25s, Lucene) top `depth` per query, and timings (index_s, search_s)."""
    from ddr_search.retrieval.bm25 import BM25Index

    ids, texts = passage_texts(corpus)
    start = time.perf_counter()
    index = BM25Index.build(ids, texts)
    built = time.perf_counter()
    extra = 1 if exclude_self_hits else 0
    runs = {
        q: _drop_self(q, index.search(text, depth + extra), exclude_self_hits, depth) for q, text in queries.items()
    }
    done = time.perf_counter()
    return runs, {"index_s": built - start, "search_s": done - built}


def exact_top_k(
    query_vectors: Vectors, passage_vectors: Vectors, k: int, chunk: int = 256
) -> list[list[tuple[int, float]]]:
    """Exact inner-product top k rows per query (ties by row), chunked over queries to bound memory."""
    out: list[list[tuple[int, float]]] = []
    k = min(k, passage_vectors.shape[0])
    if k <= 0:
        return [[] for _ in range(query_vectors.shape[0])]
    for start in range(0, query_vectors.shape[0], chunk):
        scores = query_vectors[start : start + chunk] @ passage_vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, cols in zip(scores, top, strict=True):
            cols = cols[np.lexsort((cols, -row[cols]))]
            out.append([(int(c), float(row[c])) for c in cols])
    return out


def dense_runs(
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, str],
    encoder: Encoder,
    *,
    domain: str | None = None,
    routing: RoutingMode | None = None,
    depth: int = DEPTH,
    exclude_self_hits: bool = False,
    cache_dir: Path | None = None,
    source: str = "",
    show_progress: bool = True,
) -> tuple[Runs, dict[str, float], dict[str, float]]:
    """Dense top `depth` per query by exact inner product: (runs, timings, mean routing weight per module)."""
    ids, texts = passage_texts(corpus)
    encoded = encode_corpus(encoder, ids, texts, cache_dir=cache_dir, source=source, show_progress=show_progress)
    qids = list(queries)
    start = time.perf_counter()
    encoding = encoder.encode_queries([queries[q] for q in qids], domain=domain, routing=routing)
    encoded_queries = time.perf_counter()
    extra = 1 if exclude_self_hits else 0
    tops = exact_top_k(encoding.vectors, encoded.vectors, depth + extra)
    runs = {
        q: _drop_self(q, [(ids[r], s) for r, s in top], exclude_self_hits, depth)
        for q, top in zip(qids, tops, strict=True)
    }
    done = time.perf_counter()
    routing_mean: dict[str, float] = {}
    for weights in encoding.weights:
        for name, w in weights.items():
            routing_mean[name] = routing_mean.get(name, 0.0) + w / max(len(qids), 1)
    timings = {
        "encode_passages_s": encoded.seconds,
        "passages_cached": float(encoded.cached),
        "encode_queries_s": encoded_queries - start,
        "search_s": done - encoded_queries,
    }
    return runs, timings, routing_mean


def fuse_runs(sub_runs: Sequence[Runs], config: FusionConfig, *, depth: int = DEPTH) -> Runs:
    """Fuse per-query lists (sub-query 0 = BM25, 1 = dense) with ddr_search.fusion, keeping `depth`."""
    qids = dict.fromkeys(q for runs in sub_runs for q in runs)
    return {q: [(f.id, f.score) for f in fuse([runs.get(q, []) for runs in sub_runs], config, k=depth)] for q in qids}


def load_encoder(modules: Path | None, backbone: Path | None, top_k: int = 2) -> Encoder:
    """The torch encoder: the frozen backbone when `modules` is None, else the store's modules on it."""
    from ddr_search.model.encoder import TorchEncoder

    return TorchEncoder.load(modules, backbone, top_k=top_k)


def evaluate(
    dataset: str | Path | BeirDataset,
    method: Method | str = Method.DENSE,
    *,
    split: str = "test",
    encoder: Encoder | None = None,
    modules: Path | None = None,
    backbone: Path | None = None,
    routing: RoutingMode | str | None = None,
    domain: str | None = None,
    top_k: int = 2,
    fusion: FusionConfig | None = None,
    exclude_self_hits: bool = False,
    depth: int = DEPTH,
    max_queries: int | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> EvalResult:
    """Evaluate `method` on a BEIR folder (or an already loaded BeirDataset) and return its scores.

    - `encoder`: any Encoder (e.g. a model being trained); otherwise one is loaded from `modules`
      (a module store; required for ddr) on `backbone` (default: the packaged all-MiniLM-L6-v2).
    - `routing` / `domain` / `top_k`: how ddr queries are routed (`domain` implies prior routing).
    - `fusion`: hybrid's fusion (default min_max, BM25 0.5 / dense 0.5) over each list's top `depth`.
    - `exclude_self_hits`: drop hits whose id equals the query id (ArguAna-style sets).
    - `cache_dir`: where passage vectors are cached (default $DDR_HOME/cache); `use_cache=False`
      encodes afresh and stores nothing.
    Raises InputError for a malformed dataset or inconsistent options, UnknownModuleError for a
    domain no module serves.
    """
    method = Method(method)
    routing = RoutingMode(routing) if routing is not None else None
    if method is Method.DENSE and (modules is not None or routing is not None or domain is not None):
        raise InputError("dense is the frozen backbone: use --method ddr (or hybrid) with --modules for routing")
    if method is Method.HYBRID and encoder is None and modules is None and (routing or domain) is not None:
        raise InputError("routing and --domain need modules: add --modules STORE (hybrid then fuses BM25 with ddr)")
    if method is Method.DDR and encoder is None and modules is None:
        raise InputError("ddr needs a module store: pass --modules STORE (or an encoder)")
    if method is Method.BM25 and (modules is not None or encoder is not None):
        raise InputError("bm25 uses no encoder or modules: drop --modules, or use --method hybrid")
    if isinstance(dataset, BeirDataset):
        data, source = dataset, "<in memory>"
    else:
        data, source = load_beir(dataset, split), str(Path(dataset).resolve())
    corpus, queries, qrels = data
    if max_queries is not None:
        queries = dict(list(queries.items())[:max_queries])
        qrels = {q: qrels[q] for q in queries}
    if use_cache and cache_dir is None:
        cache_dir = default_cache_dir()
    timings: dict[str, float] = {}
    routing_mean: dict[str, float] = {}
    dense: Runs | None = None
    lexical: Runs | None = None
    if method is not Method.BM25:
        if encoder is None:
            start = time.perf_counter()
            encoder = load_encoder(modules, backbone, top_k)
            timings["load_encoder_s"] = time.perf_counter() - start
        dense, dense_timings, routing_mean = dense_runs(
            corpus,
            queries,
            encoder,
            domain=domain,
            routing=routing,
            depth=depth,
            exclude_self_hits=exclude_self_hits,
            cache_dir=cache_dir if use_cache else None,
            source=source,
            show_progress=show_progress,
        )
        timings.update({f"dense_{k}": v for k, v in dense_timings.items()})
    if method in (Method.BM25, Method.HYBRID):
        lexical, bm25_timings = bm25_runs(corpus, queries, depth=depth, exclude_self_hits=exclude_self_hits)
        timings.update({f"bm25_{k}": v for k, v in bm25_timings.items()})
    fusion = fusion or FusionConfig()
    if method is Method.HYBRID:
        start = time.perf_counter()
        run = fuse_runs([lexical or {}, dense or {}], fusion, depth=depth)
        timings["fuse_s"] = time.perf_counter() - start
    else:
        run = lexical if method is Method.BM25 else dense
    assert run is not None
    metrics, per_query = score_run(qrels, run)
    query_time = sum(v for k, v in timings.items() if k.endswith(("search_s", "encode_queries_s", "fuse_s")))
    timings["queries_per_s"] = len(queries) / query_time if query_time > 0 else 0.0
    config: dict[str, JSONValue] = {
        "depth": depth,
        "exclude_self_hits": exclude_self_hits,
        "max_queries": max_queries,
    }
    if method is not Method.BM25 and encoder is not None:
        config.update(
            encoder_version=encoder.version,
            modules=str(modules) if modules is not None else None,
            backbone=str(backbone) if backbone is not None else None,
            routing=str(routing) if routing is not None else None,
            domain=domain,
            max_passage_length=getattr(encoder, "max_passage_length", None),
            max_query_length=getattr(encoder, "max_query_length", None),
        )
    if method is Method.HYBRID:
        config["fusion"] = {
            "technique": str(fusion.technique),
            "weights": list(fusion.weights),
            "rank_constant": fusion.rank_constant,
        }
    return EvalResult(
        dataset=source,
        split=split,
        method=str(method),
        metrics=metrics,
        num_queries=len(queries),
        num_documents=len(corpus),
        config=config,
        timings={k: round(v, 4) for k, v in timings.items()},
        routing=routing_mean,
        per_query=per_query,
        run=run,
    )


def default_cache_dir() -> Path:
    """$DDR_HOME/cache (settings are read here, at call time, never at import)."""
    from ddr_search.settings import Settings

    return Settings().home / "cache"


__all__ = [
    "DEPTH",
    "EvalResult",
    "Method",
    "Runs",
    "bm25_runs",
    "default_cache_dir",
    "dense_runs",
    "evaluate",
    "exact_top_k",
    "fuse_runs",
    "load_beir",
    "load_encoder",
    "passage_texts",
]
