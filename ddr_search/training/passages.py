"""Passage embeddings for training, through the evaluation harness's on-disk cache.

Training domain modules never changes a passage embedding (docs/architecture.md section 5), so each corpus is encoded
once with the general passage encoder and every epoch, domain, routing mode and evaluation reuses
the matrix. Sharing ddr_search.evaluation.cache means a corpus encoded for training is already
cached for `ddr-search eval` and the benchmark (same key: encoder version + corpus digest + length).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ddr_search.types import Encoder, Vectors


def default_cache_dir() -> Path:
    from ddr_search.evaluation.harness import default_cache_dir as harness_default

    return harness_default()


def encode_cached(
    encoder: Encoder,
    texts: Sequence[str],
    cache_dir: Path | None = None,
    *,
    ids: Sequence[str] | None = None,
    show_progress: bool = True,
) -> Vectors:
    """encoder.encode_passages(texts), read from / written to the cache (default $DDR_HOME/cache)."""
    from ddr_search.evaluation.cache import encode_corpus

    ids = list(ids) if ids is not None else [f"#{i}" for i in range(len(texts))]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return encode_corpus(encoder, ids, list(texts), cache_dir=cache_dir, show_progress=show_progress).vectors
