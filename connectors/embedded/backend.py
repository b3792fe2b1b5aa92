"""EmbeddedBackend: the Backend protocol over a local folder (SQLite truth + derived search caches)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from connectors.embedded import snapshot as snapshots
from connectors.embedded.ann import AnnConfig
from connectors.embedded.store import DocumentStore
from ddr_search.errors import BackendError, InputError
from ddr_search.filters import Filters
from ddr_search.types import Document, IndexedDocument, ScoredIds

log = logging.getLogger(__name__)


class EmbeddedBackend:
    """Documents in SQLite, exact inner-product search over a numpy matrix, BM25 with bm25s.

    Safe with several processes: writers serialise on SQLite; each searcher reloads its caches when
    the store's generation moves (one small SELECT per search).
    """

    kind = "embedded"

    def __init__(self, directory: Path, dimension: int | None = None, *, ann: AnnConfig | None = None) -> None:
        self.directory = Path(directory)
        self.store = DocumentStore(self.directory)
        self.dimension = dimension
        self.ann = ann or AnnConfig()
        self._snapshot: snapshots.Snapshot | None = None

    # -- writes -----------------------------------------------------------------------------------

    def upsert(self, documents: Sequence[IndexedDocument]) -> None:
        self.store.upsert(documents)

    def delete(self, ids: Sequence[str]) -> int:
        return self.store.delete(ids)

    def refresh(self) -> None:
        """Build the caches of the current state now, so the next search does not pay for it.

        Raises BackendError when they cannot be built (a full disk): the documents stay committed."""
        try:
            self.snapshot(strict=True)
        except OSError as e:
            raise BackendError(
                f"the search index under {self.directory} could not be built: {self._why(e)}. Free space; the "
                "next search builds it (nothing needs ingesting again)"
            ) from e

    # -- reads ------------------------------------------------------------------------------------

    def snapshot(self, *, strict: bool = False) -> snapshots.Snapshot:
        """The caches of the latest committed generation (built or reloaded only when it moved).

        When they cannot be built (a full disk), search goes on over the newest complete snapshot, with a
        warning that newer documents are not searchable yet; `strict` raises the OSError instead."""
        generation = self.store.generation()
        current = self._snapshot
        if current is not None and current.generation == generation:
            return current
        for _attempt in range(5):
            try:
                path = snapshots.ensure_built(self.store, self.ann)
            except OSError as e:
                if strict:
                    raise
                return self._fall_back(e)
            try:
                self._snapshot = snapshots.load(path, self.ann)
                break
            except (OSError, InputError):  # pruned by a newer build between ensure_built and load
                log.debug("snapshot %s was replaced while loading; retrying", path)
        else:
            raise BackendError(f"could not load a search snapshot under {self.directory}: retry the search")
        return self._snapshot

    def _fall_back(self, error: OSError) -> snapshots.Snapshot:
        """Serve the newest complete snapshot while a new one cannot be written (the next search retries)."""
        path = snapshots.latest_complete(self.directory)
        if path is None:
            raise BackendError(
                f"the search index under {self.directory} cannot be built: {self._why(error)}. "
                "Free space and search again (the documents are stored)"
            ) from error
        if self._snapshot is None or snapshots.snapshot_dir(self.directory, self._snapshot.generation) != path:
            self._snapshot = snapshots.load(path, self.ann)
        log.warning(
            "searching an older index (%s): a new one cannot be built (%s); documents stored since are not "
            "searchable until space is freed",
            path.name,
            self._why(error),
        )
        return self._snapshot

    def _why(self, error: OSError) -> str:
        """The OS's reason and the space left (numpy reports a short write without an errno)."""
        try:
            free = shutil.disk_usage(snapshots.cache_root(self.directory)).free
        except OSError:
            return str(error.strerror or error)
        return f"{error.strerror or error} ({free / 1e6:.1f} MB free on that disk)"

    def bm25_search(self, text: str, k: int, *, domain: str | None = None, filters: Filters = ()) -> ScoredIds:
        snapshot = self.snapshot()
        return snapshot.bm25_search(text, k, domain, self._allowed(snapshot, filters))

    def dense_search(
        self, vector: NDArray[np.float32], k: int, *, domain: str | None = None, filters: Filters = ()
    ) -> ScoredIds:
        snapshot = self.snapshot()
        return snapshot.dense_search(vector, k, domain, self._allowed(snapshot, filters))

    def _allowed(self, snapshot: snapshots.Snapshot, filters: Filters) -> np.ndarray | None:
        """The rows whose metadata passes `filters` (SQLite decides; cached per snapshot), applied before top-k."""
        if not filters:
            return None
        return snapshot.filter_mask(filters, lambda: self.store.ids_matching(filters))

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        return self.store.get(ids)

    def versions(self, ids: Sequence[str]) -> dict[str, str]:
        return self.store.versions(ids)

    def count(self, domain: str | None = None) -> int:
        return self.store.count(domain)

    def domain_counts(self) -> dict[str, int]:
        return self.store.domain_counts()

    def describe(self) -> dict[str, object]:
        """What `ddr-search stats` shows beyond counts: where, which encoder versions, which generation."""
        return {
            "backend": self.kind,
            "path": str(self.directory),
            "generation": self.store.generation(),
            "encoder_versions": self.store.encoder_versions(),
        }

    def close(self) -> None:
        self.store.close()
        self._snapshot = None
