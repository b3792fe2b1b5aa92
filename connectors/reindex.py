"""Re-embedding every document behind an alias into a new versioned index, then switching the alias in
one call: the one algorithm both cluster connectors run, over a small seam (`IndexAdmin`) each
connector implements with its own client calls."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from connectors.shared import ReindexReport, index_name
from ddr_search.errors import BackendError
from ddr_search.indexing import embed_and_index
from ddr_search.types import Backend, Document, Encoder

log = logging.getLogger(__name__)


class IndexAdmin(Protocol):
    """The index operations reindex needs from a cluster, for one alias and the encoder it moves to;
    each raises BackendError naming the request."""

    alias: str
    encoder: Encoder

    def indices(self) -> list[str]:
        """The indices the alias serves now."""
        ...

    def count(self) -> int:
        """Documents behind the alias."""
        ...

    def exists(self, index: str) -> bool: ...

    def delete(self, indices: Sequence[str]) -> None: ...

    def create(self, index: str) -> None:
        """A new index with the mapping for the encoder being reindexed to."""
        ...

    def refresh(self, index: str) -> None:
        """Make every write to `index` (or the alias) visible, however long a large index needs."""
        ...

    def writer(self, index: str) -> Backend:
        """A backend that writes into `index` itself, not through the alias."""
        ...

    def documents(self, batch_size: int) -> Iterator[list[Document]]:
        """Every document behind the alias, in batches, without vectors."""
        ...

    def switch(self, old: Sequence[str], new: str) -> None:
        """Point the alias from `old` to `new` in one request (it is the write index afterwards)."""
        ...


@dataclass
class ClusterAdmin:
    """The part of `IndexAdmin` both cluster clients spell alike; each connector adds create, refresh,
    writer and switch (its own template, refresh timeout, backend options and alias request)."""

    backend: Any  # OpenSearchBackend | ElasticsearchBackend: .client, .url, .indices(), .count(), .scan()
    alias: str
    encoder: Encoder
    wrapped: Callable[[str, str], AbstractContextManager[object]]  # the connector's error wrapper

    def indices(self) -> list[str]:
        return self.backend.indices()

    def count(self) -> int:
        return self.backend.count()

    def exists(self, index: str) -> bool:
        with self.wrapped(f"HEAD {index}", self.backend.url):
            return bool(self.backend.client.indices.exists(index=index))

    def delete(self, indices: Sequence[str]) -> None:
        with self.wrapped(f"DELETE {','.join(indices)}", self.backend.url):
            self.backend.client.indices.delete(index=",".join(indices))

    def documents(self, batch_size: int) -> Iterator[list[Document]]:
        return self.backend.scan(batch_size=batch_size)

    def switch_actions(self, old: Sequence[str], new: str) -> list[dict[str, object]]:
        """The `_aliases` actions that move the alias from `old` to `new` in one request."""
        actions: list[dict[str, object]] = [{"remove": {"index": i, "alias": self.alias}} for i in old]
        actions.append({"add": {"index": new, "alias": self.alias, "is_write_index": True}})
        return actions


def reindex_behind_alias(
    admin: IndexAdmin,
    *,
    batch_size: int = 64,
    delete_old: bool = False,
    force: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> ReindexReport:
    """Re-embed every document into `<alias>-v<encoder.version>` (`admin`'s alias and encoder), then
    switch the alias in one call.

    The alias keeps serving the old index until the switch; any failure before it leaves the alias
    untouched and deletes the half-filled new index, so a retry starts clean. Documents written through
    the alias meanwhile land in the old index and are caught by the final count check: pause ingest.
    `force` re-embeds into a fresh copy even when the alias serves this encoder version already.
    """
    alias, encoder = admin.alias, admin.encoder
    old = admin.indices()
    if not old:
        raise BackendError(f"alias {alias} does not exist: run `ddr-search setup` first")
    new = index_name(alias, encoder.version)
    if old == [new] and not force:
        return ReindexReport(
            alias, old, new, admin.count(), switched=False, note=f"{alias} already serves {new}: nothing to do"
        )
    admin.refresh(alias)  # the scan and the count check below see only refreshed writes
    if new not in old and admin.exists(new):
        log.warning("deleting %s, left half-filled by an earlier reindex", new)
        admin.delete([new])
    target = new
    if new in old:  # --force onto the same version: fill a fresh copy beside it
        target = f"{new}-{len(old)}"
        if admin.exists(target):
            admin.delete([target])
    admin.create(target)
    expected = admin.count()
    writer = admin.writer(target)
    written = 0
    try:
        for batch in admin.documents(batch_size):
            written += embed_and_index(batch, encoder, writer, batch_size=batch_size)
            if on_batch is not None:
                on_batch(written)
        admin.refresh(target)
        filled = writer.count()
        if filled != expected or written != expected:
            raise BackendError(
                f"reindex wrote {filled} documents into {target} but {alias} holds {expected} "
                "(was something ingesting meanwhile?): alias left on the old index"
            )
        admin.switch(old, target)
    except BaseException:
        try:
            if target not in admin.indices():  # a switch that timed out may still have happened
                admin.delete([target])
        except Exception:  # the original error matters more; the next reindex deletes it anyway
            log.warning("could not delete the half-filled index %s", target)
        raise
    report = ReindexReport(alias, old, target, written, switched=True)
    if delete_old:
        admin.delete(old)
        report.deleted_old = True
    return report
