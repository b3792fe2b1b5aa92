"""Passage embeddings cached on disk, so repeated evaluations (and training loops) encode a corpus once.

Encoding is the slow part (~25-35 documents/s on 2 cores). A cache entry is keyed by what the vectors
depend on: the passage encoder's version (backbone + general module), the passage texts in order
(a digest, so a changed file or a slice never reuses stale vectors; ids are left out because they do
not change a vector, so training code that numbers passages itself shares the entry), the corpus
size and the passage max length. Entries are written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddr_search.batching import by_length
from ddr_search.errors import InputError
from ddr_search.files import write_atomically
from ddr_search.types import Encoder, Vectors

log = logging.getLogger(__name__)

CHUNK = 128  # documents per encoder call: bounds memory and drives the progress bar


def corpus_digest(texts: Sequence[str]) -> str:
    """Content fingerprint of the passage texts, in order (row i of the vectors is text i)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_key(encoder_version: str, digest: str, size: int, max_length: int | None) -> str:
    return hashlib.sha256(f"{encoder_version}|{digest}|{size}|{max_length}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class EncodedCorpus:
    vectors: Vectors
    cached: bool  # True when read from the cache
    seconds: float  # time spent encoding (0 on a cache hit)
    path: Path | None  # the cache file, when caching is on


def encode_in_chunks(encoder: Encoder, texts: Sequence[str], *, show_progress: bool, batch_size: int = 32) -> Vectors:
    """Encode passages longest first (little padding), with a per-document progress bar; input order kept."""
    from tqdm.auto import tqdm

    out = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
    with tqdm(total=len(texts), desc="encoding passages", unit="doc", disable=not show_progress) as bar:
        for rows, chunk in by_length(texts, CHUNK):
            out[rows] = encoder.encode_passages(chunk, batch_size=batch_size)
            bar.update(len(rows))
    return out


def encode_corpus(
    encoder: Encoder,
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    cache_dir: Path | None,
    source: str = "",
    show_progress: bool = True,
) -> EncodedCorpus:
    """Passage vectors for `texts` (row i = ids[i]), from `cache_dir` when present, else encoded and stored.

    `cache_dir` None disables caching. `source` (e.g. the dataset path) is recorded for humans only.
    """
    if len(ids) != len(texts):
        raise InputError(f"{len(ids)} ids for {len(texts)} passage texts")
    max_length = getattr(encoder, "max_passage_length", None)
    path = None
    if cache_dir is not None:
        key = cache_key(encoder.version, corpus_digest(texts), len(texts), max_length)
        path = Path(cache_dir) / f"passages-{key}.npy"
        if path.exists():
            try:
                vectors = np.load(path)
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable embedding cache %s: %s", path, e)
            else:
                if vectors.shape == (len(ids), encoder.dimension):
                    return EncodedCorpus(vectors.astype(np.float32, copy=False), True, 0.0, path)
                log.warning("ignoring embedding cache %s with shape %s", path, vectors.shape)
    start = time.perf_counter()
    vectors = encode_in_chunks(encoder, texts, show_progress=show_progress)
    seconds = time.perf_counter() - start
    if path is not None:
        _write(
            path,
            vectors,
            {
                "encoder_version": encoder.version,
                "source": source,
                "documents": len(ids),
                "max_passage_length": max_length,
                "dimension": encoder.dimension,
                "encode_seconds": round(seconds, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    return EncodedCorpus(vectors, False, seconds, path)


def _write(path: Path, vectors: Vectors, meta: dict[str, object]) -> None:
    write_atomically(path, lambda f: np.save(f, vectors))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
