"""Derived, disposable search caches: the vector matrix and the BM25 index of one store generation.

A snapshot lives in `cache/gen-<generation>/` and never changes once renamed into place, so readers
load it without a lock. Building takes an exclusive file lock, so concurrent searchers build it once;
a crashed builder leaves only a `.tmp-*` folder that the next builder removes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from connectors.embedded.store import DocumentStore
from ddr_search.retrieval.bm25 import BM25Index
from ddr_search.types import ScoredIds

CACHE_DIR = "cache"
LOCK_FILE = ".lock"
VECTORS = "vectors.npy"
IDS = "ids.npy"
DOMAINS = "domains.npy"
INFO = "snapshot.json"
BM25_DIR = "bm25"
NO_DOMAIN = -1


@dataclass
class Snapshot:
    """One generation's matrix, ids, per-row domain codes and BM25 index (rows in the same order)."""

    generation: int
    ids: np.ndarray  # [n] str
    vectors: np.ndarray  # [n, d] float32 (memory-mapped: processes share the page cache)
    domain_codes: np.ndarray  # [n] int32, NO_DOMAIN for documents without a domain
    domain_names: list[str]
    bm25: BM25Index
    _masks: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, domain: str | None) -> np.ndarray | None:
        """Rows ingested with `domain` (None = no filter); all-False for a domain with no documents."""
        if domain is None:
            return None
        if domain not in self._masks:
            code = self.domain_names.index(domain) if domain in self.domain_names else -2
            self._masks[domain] = self.domain_codes == code
        return self._masks[domain]

    def dense_search(self, vector: np.ndarray, k: int, domain: str | None) -> ScoredIds:
        """Exact inner product over every row (or the domain's rows), best first."""
        if len(self) == 0 or k <= 0:
            return []
        scores = self.vectors @ np.asarray(vector, dtype=np.float32).reshape(-1)
        mask = self.mask(domain)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
            k = min(k, int(mask.sum()))
            if k == 0:
                return []
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(str(self.ids[i]), float(scores[i])) for i in top]

    def bm25_search(self, text: str, k: int, domain: str | None) -> ScoredIds:
        if k <= 0:
            return []
        mask = self.mask(domain)
        if mask is not None and not mask.any():
            return []
        return self.bm25.search(text, k, mask=mask)


def cache_root(directory: Path) -> Path:
    return Path(directory) / CACHE_DIR


def snapshot_dir(directory: Path, generation: int) -> Path:
    return cache_root(directory) / f"gen-{generation:012d}"


@contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    root = cache_root(directory)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_built(store: DocumentStore) -> Path:
    """The snapshot folder of the store's current generation, building it if no process has yet."""
    generation = store.generation()
    target = snapshot_dir(store.directory, generation)
    if (target / INFO).exists():
        return target
    with build_lock(store.directory):
        rows = store.rows()  # may be newer than `generation`: build that one instead
        target = snapshot_dir(store.directory, rows.generation)
        if not (target / INFO).exists():
            _write(rows, target)
        _prune(store.directory, keep=target)
    return target


def _write(rows, target: Path) -> None:  # type: ignore[no-untyped-def]
    root = target.parent
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    names = sorted({d for d in rows.domains if d is not None})
    index = {name: code for code, name in enumerate(names)}
    codes = np.array([index[d] if d is not None else NO_DOMAIN for d in rows.domains], dtype=np.int32)
    np.save(staging / VECTORS, rows.vectors)
    np.save(staging / IDS, np.array(rows.ids, dtype=str))
    np.save(staging / DOMAINS, codes)
    _quiet_bm25s()
    BM25Index.build(rows.ids, rows.texts).save(staging / BM25_DIR)
    info = {"generation": rows.generation, "count": len(rows.ids), "dimension": rows.dimension, "domains": names}
    (staging / INFO).write_text(json.dumps(info))  # written last: its presence marks a complete snapshot
    os.replace(staging, target)


def _quiet_bm25s() -> None:
    """bm25s sets its own logger to DEBUG on import, which floods any app that configures logging."""
    import bm25s  # noqa: F401  (the import is what sets the level)

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("bm25s").setLevel(logging.WARNING)


def _prune(directory: Path, keep: Path) -> None:
    """Remove older generations and crashed builds (only ever called under the build lock)."""
    for path in cache_root(directory).iterdir():
        if path.is_dir() and path != keep and (path.name.startswith(".tmp-") or path.name < keep.name):
            shutil.rmtree(path, ignore_errors=True)


def load(path: Path) -> Snapshot:
    """Load a finished snapshot; raises FileNotFoundError if a newer build pruned it meanwhile."""
    info = json.loads((path / INFO).read_text())
    ids = np.load(path / IDS)
    vectors = np.load(path / VECTORS, mmap_mode="r" if info["count"] else None)
    codes = np.load(path / DOMAINS)
    bm25 = BM25Index.load(path / BM25_DIR)
    return Snapshot(info["generation"], ids, vectors, codes, list(info["domains"]), bm25)
