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
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from connectors.embedded import ann
from connectors.embedded.ann import AnnConfig, AnnIndex
from connectors.embedded.store import DocumentStore
from ddr_search.retrieval.bm25 import BM25Index
from ddr_search.types import ScoredIds

CACHE_DIR = "cache"
LOCK_FILE = ".lock"
VECTORS = "vectors.npy"
IDS = "ids.npy"
DOMAINS = "domains.npy"
FILTER_CACHE = 64  # distinct metadata filters whose row masks a snapshot keeps
INFO = "snapshot.json"
BM25_DIR = "bm25"
NO_DOMAIN = -1
COARSE_FROM = 20_000  # rows; below this one float32 product is already fast
RESCORE_MARGIN = 64  # extra coarse candidates rescored exactly, beyond k (at least k more)
INT8_WIDTH_MULTIPLE = 32  # torch's int8 kernel is only trusted on row widths it blocks cleanly
INT8_PROBE_TOLERANCE = 0.05  # int8 probe scores within 5% of the largest exact score, else float16


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
    _rows: dict[str, int] | None = None  # id -> row, built on the first filtered search
    _filter_masks: OrderedDict[object, np.ndarray] = field(default_factory=OrderedDict)  # filters -> rows, LRU
    _coarse: Callable[[np.ndarray], np.ndarray] | None = None  # built on first large dense search
    ann: AnnIndex | None = None  # the approximate graph of a large store (connectors/embedded/ann.py)

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

    def filter_mask(self, filters: object, matching: Callable[[], Sequence[str]]) -> np.ndarray:
        """The rows passing `filters` (hashable), from `matching()` ids on first use, then from a small LRU
        cache: a snapshot is one generation, so the cache can never be stale."""
        mask = self._filter_masks.get(filters)
        if mask is None:
            mask = self.rows_of(matching())
            self._filter_masks[filters] = mask
            while len(self._filter_masks) > FILTER_CACHE:
                self._filter_masks.popitem(last=False)
        else:
            self._filter_masks.move_to_end(filters)
        return mask

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """A row mask of `ids` (a metadata filter's matches; ids not in this generation are left out)."""
        if self._rows is None:
            self._rows = {str(doc_id): row for row, doc_id in enumerate(self.ids)}
        mask = np.zeros(len(self), dtype=bool)
        rows = [self._rows[i] for i in ids if i in self._rows]
        mask[rows] = True
        return mask

    def _combined(self, domain: str | None, allowed: np.ndarray | None) -> np.ndarray | None:
        mask = self.mask(domain)
        if allowed is None:
            return mask
        return allowed if mask is None else mask & allowed

    def dense_search(
        self, vector: np.ndarray, k: int, domain: str | None, allowed: np.ndarray | None = None
    ) -> ScoredIds:
        """Exact inner product over every row (or the rows of the domain and `allowed`), best first.

        Large matrices are first scored coarsely by torch in int8 (a quarter of the memory traffic of
        the bandwidth-bound float32 product; float16 where the int8 kernel is missing), then the best
        `k + max(k, RESCORE_MARGIN)` rows are rescored exactly in float32: returned scores are exact,
        and the order is exact unless the coarse error exceeds the margin's score gap (it never did in
        the tests or the 300 benchmark queries). Smaller stores use one float32 product (torch's import
        would cost more than it saves).
        """
        if len(self) == 0 or k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        mask = self._combined(domain, allowed)
        k = min(k, len(self) if mask is None else int(mask.sum()))
        if k == 0:
            return []
        fetch = min(k + max(k, RESCORE_MARGIN), len(self))
        if self.ann is not None:
            if mask is not None and int(mask.sum()) <= self.ann.config.exact_filtered_rows:
                candidates = np.flatnonzero(mask)  # few rows: scanned exactly, the graph would lose recall
            else:
                candidates = self.ann.candidates(query, fetch, mask)
            return self._rescored(np.sort(candidates), query, k)
        coarse_scorer = self._coarse_scorer()
        if coarse_scorer is None:
            scores = _matvec(self.vectors, query)
            rows = _top_rows(scores if mask is None else np.where(mask, scores, -np.inf), k)
            return [(str(self.ids[i]), float(scores[i])) for i in rows]
        coarse = coarse_scorer(query)
        if mask is not None:
            coarse = np.where(mask, coarse, -np.inf)
        candidates = _top_rows(coarse, fetch)
        return self._rescored(np.sort(candidates[np.isfinite(coarse[candidates])]), query, k)

    def _rescored(self, candidates: np.ndarray, query: np.ndarray, k: int) -> ScoredIds:
        """The best k of `candidates` (sorted rows) by exact float32 inner product; ties by row."""
        exact = _matvec(np.asarray(self.vectors[candidates]), query)
        order = np.lexsort((candidates, -exact))[:k]
        return [(str(self.ids[candidates[i]]), float(exact[i])) for i in order]

    def _coarse_scorer(self) -> Callable[[np.ndarray], np.ndarray] | None:
        if len(self) < COARSE_FROM:
            return None
        if self._coarse is None:
            try:  # a dependency of the package; imported here, so small stores and bm25 never load it
                import torch
            except ImportError:
                return None
            self._coarse = _int8_scorer(torch, self.vectors) or _half_scorer(torch, self.vectors)
        return self._coarse

    def bm25_search(self, text: str, k: int, domain: str | None, allowed: np.ndarray | None = None) -> ScoredIds:
        if k <= 0:
            return []
        mask = self._combined(domain, allowed)
        if mask is not None and not mask.any():
            return []
        return self.bm25.search(text, k, mask=mask)


def _int8_scorer(torch, vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:  # type: ignore[no-untyped-def]
    """Per-row symmetric int8 rows and scales, scored by torch's CPU int8 weight kernel (None if unusable).

    The kernel is private to torch: it reads out of bounds for a row width that is not a multiple of
    its block (K = 4 returned garbage and crashed here), so it is used only for widths that are a
    multiple of 32 (every real embedding size) and only after it reproduces exact scores on real rows.
    """
    kernel = getattr(torch, "_weight_int8pack_mm", None)
    if kernel is None or vectors.ndim != 2 or vectors.shape[1] % INT8_WIDTH_MULTIPLE:
        return None
    scales = np.maximum(np.abs(vectors).max(axis=1), 1e-12) / 127.0
    rows = torch.from_numpy(np.round(vectors / scales[:, None]).astype(np.int8))
    scale_tensor = torch.from_numpy(scales.astype(np.float32)).to(torch.bfloat16)

    def score(query: np.ndarray) -> np.ndarray:
        # torch.tensor copies: queries may be read-only arrays
        out = kernel(torch.tensor(query[None], dtype=torch.bfloat16), rows, scale_tensor)
        return out[0].float().numpy()

    probe = np.array(vectors[0], dtype=np.float32)
    try:
        coarse = score(probe)
    except (RuntimeError, NotImplementedError):  # a torch build without the CPU kernel
        return None
    exact = _matvec(vectors, probe)
    tolerance = INT8_PROBE_TOLERANCE * max(float(np.abs(exact).max()), 1e-12)
    if coarse.shape != exact.shape or not np.all(np.abs(coarse - exact) <= tolerance):
        return None
    return score


def _half_scorer(torch, vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:  # type: ignore[no-untyped-def]
    half = torch.from_numpy(np.asarray(vectors, dtype=np.float16))
    return lambda query: (half @ torch.from_numpy(query).to(torch.float16)).float().numpy()


def _matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix @ vector without BLAS: one query is memory bound, and BLAS's thread pool spin-waits.

    On this 2-core machine under load, `matrix @ vector` through OpenBLAS's two threads took 24 ms
    at 5k x 384 where this single-threaded loop takes 0.7 ms; at 100k both are bandwidth bound.
    """
    return np.einsum("ij,j->i", matrix, vector)


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties by row order)."""
    rows = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return rows[np.lexsort((rows, -scores[rows]))]


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


def ensure_built(store: DocumentStore, config: AnnConfig) -> Path:
    """The snapshot folder of the store's current generation, building it if no process has yet (the
    approximate graph, for a large store, extends the previous generation's)."""
    generation = store.generation()
    target = snapshot_dir(store.directory, generation)
    if (target / INFO).exists():
        return target
    with build_lock(store.directory):
        rows = store.rows()  # may be newer than `generation`: build that one instead
        target = snapshot_dir(store.directory, rows.generation)
        if not (target / INFO).exists():
            _write(rows, target, config, previous=latest_complete(store.directory))
        _prune(store.directory, keep=target)
    return target


def _write(rows, target: Path, config: AnnConfig, previous: Path | None) -> None:  # type: ignore[no-untyped-def]
    """Build in a staging folder, then rename it in; a failed build (a full disk) leaves nothing behind."""
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        _fill(rows, staging, config, previous)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def latest_complete(directory: Path) -> Path | None:
    """The newest snapshot that finished building (what search falls back to when a build fails)."""
    root = cache_root(directory)
    done = sorted(p for p in root.glob("gen-*") if (p / INFO).exists()) if root.exists() else []
    return done[-1] if done else None


def _fill(rows, staging: Path, config: AnnConfig, previous: Path | None) -> None:  # type: ignore[no-untyped-def]
    names = sorted({d for d in rows.domains if d is not None})
    index = {name: code for code, name in enumerate(names)}
    codes = np.array([index[d] if d is not None else NO_DOMAIN for d in rows.domains], dtype=np.int32)
    np.save(staging / VECTORS, rows.vectors)
    np.save(staging / IDS, np.array(rows.ids, dtype=str))
    np.save(staging / DOMAINS, codes)
    _quiet_bm25s()
    try:
        bm25 = BM25Index.build(rows.ids, rows.texts)
    except ValueError:  # bm25s cannot index a corpus without a single token (every text like "a"): no matches
        bm25 = BM25Index.build([], [])
    bm25.save(staging / BM25_DIR)
    ann.build(rows.ids, rows.vectors, config, previous, staging)
    info = {"generation": rows.generation, "count": len(rows.ids), "dimension": rows.dimension, "domains": names}
    (staging / INFO).write_text(json.dumps(info))  # written last: its presence marks a complete snapshot


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


def load(path: Path, config: AnnConfig) -> Snapshot:
    """Load a finished snapshot; raises FileNotFoundError if a newer build pruned it meanwhile."""
    info = json.loads((path / INFO).read_text())
    ids = np.load(path / IDS)
    vectors = np.load(path / VECTORS, mmap_mode="r" if info["count"] else None)
    codes = np.load(path / DOMAINS)
    bm25 = BM25Index.load(path / BM25_DIR)
    graph = ann.load(path, config)
    return Snapshot(info["generation"], ids, vectors, codes, list(info["domains"]), bm25, ann=graph)
