"""Approximate dense search for large embedded stores: a faiss HNSW graph beside each snapshot.

Exact search stays the answer below `AnnConfig.min_rows` (it is fast enough there and exact). Above it,
the graph proposes candidates and the snapshot rescores them exactly, so returned scores are exact inner
products and only recall is approximate (bench/reports/ann.md measures it against exact search).

The graph is built incrementally from the SQLite truth: a new generation starts from the previous
generation's graph, keeps the labels of documents whose id and vector are unchanged, adds the new and
changed ones, and marks the rest as tombstones (skipped through an id selector); once tombstones pass
`rebuild_ratio` of the graph it is rebuilt from scratch. Filtered searches that leave few rows scan those
rows exactly instead (HNSW recall falls with a selective filter).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

GRAPH_FILE = "ann.faiss"
LABEL_IDS = "ann-ids.npy"  # label -> document id (what it was added for)
LABEL_PRINTS = "ann-prints.npy"  # label -> fingerprint of the vector it was added with
LABEL_ROWS = "ann-rows.npy"  # label -> row of this generation, -1 for a tombstone
BUILD_INFO = "ann.json"  # what the last build did: rows, labels added / kept, tombstones, seconds
_PRINT_SEED = 20261206
MASK_BITMAPS = 16  # filter bitmaps kept per graph (a domain, a frequent metadata filter)


@dataclass(frozen=True)
class AnnConfig:
    """When and how the embedded store builds its approximate index (DDR_EMBEDDED__* settings)."""

    enabled: bool = True
    min_rows: int = 200_000  # below this, exact search (the int8 coarse scan + exact rescoring) is used
    m: int = 48  # HNSW neighbours per node
    ef_construction: int = 200
    ef_search: int = 1024  # candidates explored per query (at least the rows fetched for rescoring)
    exact_filtered_rows: int = 50_000  # a filter leaving at most this many rows is scanned exactly
    rebuild_ratio: float = 0.3  # tombstones above this share of the graph trigger a rebuild


def fingerprints(vectors: np.ndarray) -> np.ndarray:
    """One float64 per row that changes when the vector does (a fixed random projection)."""
    if len(vectors) == 0:
        return np.empty(0, dtype=np.float64)
    projection = np.random.default_rng(_PRINT_SEED).standard_normal(vectors.shape[1])
    return np.asarray(vectors, dtype=np.float64) @ projection


@dataclass
class AnnIndex:
    graph: object  # faiss.IndexHNSWFlat (inner product)
    label_ids: np.ndarray  # [labels] str
    label_prints: np.ndarray  # [labels] float64
    label_rows: np.ndarray  # [labels] int64, -1 = tombstone
    config: AnnConfig
    _alive_bits: np.ndarray | None = None
    # filter masks (the snapshot's cached arrays, held here so their ids stay theirs) -> label bitmaps
    _mask_bits: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=OrderedDict)

    @property
    def tombstones(self) -> int:
        return int((self.label_rows < 0).sum())

    def candidates(self, query: np.ndarray, fetch: int, mask: np.ndarray | None) -> np.ndarray:
        """Rows of up to `fetch` approximate nearest neighbours among the live rows passing `mask`."""
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.config.ef_search, fetch)
        bits = None
        if mask is not None:
            bits = self._bits_of(mask)
        elif self.tombstones:
            if self._alive_bits is None:
                self._alive_bits = np.packbits(self.label_rows >= 0, bitorder="little")
            bits = self._alive_bits
        if bits is not None:
            selector = faiss.IDSelectorBitmap(len(self.label_rows), faiss.swig_ptr(bits))
            params.sel = selector
        _, labels = self.graph.search(np.asarray(query, dtype=np.float32)[None], fetch, params=params)
        found = labels[0][labels[0] >= 0]
        return self.label_rows[found]

    def _bits_of(self, mask: np.ndarray) -> np.ndarray:
        """The label bitmap of a row mask; cached, since the snapshot hands the same array for a filter."""
        cached = self._mask_bits.get(id(mask))
        if cached is not None and cached[0] is mask:
            self._mask_bits.move_to_end(id(mask))
            return cached[1]
        allowed = np.zeros(len(self.label_rows), dtype=bool)
        live = self.label_rows >= 0
        allowed[live] = mask[self.label_rows[live]]
        bits = np.packbits(allowed, bitorder="little")
        self._mask_bits[id(mask)] = (mask, bits)
        while len(self._mask_bits) > MASK_BITMAPS:
            self._mask_bits.popitem(last=False)
        return bits


def build(
    ids: list[str], vectors: np.ndarray, config: AnnConfig, previous: Path | None, target: Path
) -> AnnIndex | None:
    """Write the graph of this generation into `target` (None below `min_rows` or when disabled),
    extending `previous` (a snapshot folder with a graph) where it can."""
    if not config.enabled or len(ids) < config.min_rows:
        return None
    import faiss

    started = time.perf_counter()
    prints = fingerprints(vectors)
    index = _reusable(previous, config, vectors.shape[1])
    rows_of_label: np.ndarray
    if index is not None:
        labels_of = {doc_id: label for label, doc_id in enumerate(index.label_ids.tolist())}
        reuse = np.array([labels_of.get(doc_id, -1) for doc_id in ids], dtype=np.int64)
        same = reuse >= 0
        same[same] = index.label_prints[reuse[same]] == prints[same]
        total = len(index.label_ids) + int((~same).sum())
        if total - len(ids) > config.rebuild_ratio * total:
            log.info("rebuilding the ANN graph: %d of %d labels would be tombstones", total - len(ids), total)
            index = None
    if index is None:
        graph = faiss.IndexHNSWFlat(vectors.shape[1], config.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = config.ef_construction
        log.info("building the ANN graph over %d rows", len(ids))
        graph.add(np.ascontiguousarray(vectors, dtype=np.float32))
        label_ids, label_prints = np.array(ids, dtype=str), prints
        rows_of_label = np.arange(len(ids), dtype=np.int64)
        added_count = len(ids)
    else:
        graph = index.graph
        added = np.flatnonzero(~same)
        first = len(index.label_ids)
        log.info("extending the ANN graph: %d rows added, %d unchanged", len(added), int(same.sum()))
        if len(added):
            graph.add(np.ascontiguousarray(vectors[added], dtype=np.float32))
        label_ids = np.concatenate([index.label_ids, np.array([ids[r] for r in added], dtype=str)])
        label_prints = np.concatenate([index.label_prints, prints[added]])
        rows_of_label = np.full(len(label_ids), -1, dtype=np.int64)
        rows_of_label[reuse[same]] = np.flatnonzero(same)
        rows_of_label[first + np.arange(len(added))] = added
        added_count = len(added)
    faiss.write_index(graph, str(target / GRAPH_FILE))
    np.save(target / LABEL_IDS, label_ids)
    np.save(target / LABEL_PRINTS, label_prints)
    np.save(target / LABEL_ROWS, rows_of_label)
    info = {
        "rows": len(ids),
        "labels": len(label_ids),
        "added": added_count,
        "kept": len(ids) - added_count,
        "tombstones": int((rows_of_label < 0).sum()),
        "rebuilt": index is None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (target / BUILD_INFO).write_text(json.dumps(info))
    log.info("ANN graph: %s", info)
    return AnnIndex(graph, label_ids, label_prints, rows_of_label, config)


def _reusable(previous: Path | None, config: AnnConfig, dimension: int) -> AnnIndex | None:
    if previous is None or not (previous / GRAPH_FILE).exists():
        return None
    index = load(previous, config)
    if index is None or index.graph.d != dimension:
        return None
    return index


def load(folder: Path, config: AnnConfig) -> AnnIndex | None:
    """The graph of a snapshot folder, or None when it has none (a small store) or the graph is turned off
    (DDR_EMBEDDED__ANN=off: exact search even where a graph was built)."""
    if not config.enabled or not (folder / GRAPH_FILE).exists():
        return None
    import faiss

    return AnnIndex(
        faiss.read_index(str(folder / GRAPH_FILE)),
        np.load(folder / LABEL_IDS),
        np.load(folder / LABEL_PRINTS),
        np.load(folder / LABEL_ROWS),
        config,
    )
