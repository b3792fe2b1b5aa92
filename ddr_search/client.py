"""DDRSearch: the Python client. Wires settings to an encoder and a backend: ingest, search, delete, stats,
and, with a broker, enqueue + job for ingests the Celery workers embed."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ddr_search.data.documents import check_file
from ddr_search.errors import ConfigError, InputError
from ddr_search.filters import parse_filters
from ddr_search.ingest import IngestReport, check_documents, check_domain_moves, index_checked, ingest_documents
from ddr_search.settings import Settings
from ddr_search.types import Backend, Document, Encoder, Hit, RoutingMode, SearchMode

if TYPE_CHECKING:
    from workers.jobs import JobStatus

log = logging.getLogger(__name__)


def _check_search_arguments(
    query: object, domain: object, k: object, mode: object, routing: object
) -> tuple[SearchMode, RoutingMode | None]:
    """InputError for what no search can use (a non-string query, k = 2.5, an unknown mode), not a
    TypeError from deep inside; checked before the encoder loads."""
    if not isinstance(query, str):
        raise InputError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InputError("the query is empty")
    if domain is not None and not isinstance(domain, str):
        raise InputError(f"domain must be a string or None, got {type(domain).__name__}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InputError(f"k must be a whole number >= 1, got {k!r}")
    try:
        checked_mode = SearchMode(mode)
    except ValueError:
        raise InputError(f"mode must be one of {', '.join(m.value for m in SearchMode)}, got {mode!r}") from None
    try:
        checked_routing = RoutingMode(routing) if routing is not None else None
    except ValueError:
        raise InputError(f"routing must be one of {', '.join(m.value for m in RoutingMode)}, got {routing!r}") from None
    return checked_mode, checked_routing


class DDRSearch:
    """Ingest, search, delete, stats over the configured backend (embedded under DDR_HOME by default).

    The encoder (torch, a few seconds to load) and the backend are built on first use, so `stats`,
    `delete` and bm25-only searches never load a model.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        encoder: Encoder | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self._encoder = encoder
        self._backend = backend
        self._checked_version = False
        self._domains: Mapping[str, Sequence[str]] | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            from ddr_search.factory import build_encoder

            self._encoder = build_encoder(self.settings)
        return self._encoder

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from ddr_search.factory import build_backend

            dimension = self._encoder.dimension if self._encoder is not None else None
            self._backend = build_backend(self.settings, dimension)
        return self._backend

    def ingest(
        self,
        source: str | Path | Iterable[Document | Mapping[str, object]],
        domain: str | None = None,
        *,
        skip_invalid: bool = False,
        batch_size: int | None = None,
        progress: bool = False,
        allow_domain_change: bool = False,
    ) -> IngestReport:
        """Embed and store documents: a JSONL path (validated whole first) or in-memory documents.

        Raises InputError (file, line, field) before writing anything if the input is bad, or if it would
        move a stored document to another domain (ids are global) without `allow_domain_change`.
        Documents stored already with the same content and encoder version are not encoded again.
        """
        size = batch_size or self.settings.batch_size
        if isinstance(source, str | Path):
            check = check_file(source, domain=domain, skip_invalid=skip_invalid)  # before loading anything
            return index_checked(
                check,
                encoder=self.encoder,
                backend=self.backend,
                domain=domain,
                batch_size=size,
                progress=progress,
                allow_domain_change=allow_domain_change,
            )
        documents = check_documents(source, domain)
        return ingest_documents(
            documents,
            encoder=self.encoder,
            backend=self.backend,
            domain=domain,
            batch_size=size,
            progress=progress,
            allow_domain_change=allow_domain_change,
        )

    def enqueue(
        self,
        path: str | Path,
        domain: str | None = None,
        *,
        skip_invalid: bool = False,
        batch_size: int | None = None,
        allow_domain_change: bool = False,
    ) -> str:
        """Hand a JSONL file to the Celery workers (DDR_BROKER_URL) and return its job id at once.

        The file is validated whole first, as `ingest` does: a bad line raises InputError before
        anything is recorded or sent. Lines skipped with `skip_invalid` are kept on the job.
        Raises ConfigError without a broker, BrokerUnavailableError / JobStoreError when unreachable.
        """
        from ddr_search.data.documents import read_documents
        from ddr_search.factory import build_celery_app, build_job_store
        from workers.ingest import submit

        if self.settings.broker_url is None:
            raise ConfigError(
                "enqueue needs a broker: set DDR_BROKER_URL (redis:// or amqp://) and run `ddr-search worker`"
            )
        check = check_file(path, domain=domain, skip_invalid=skip_invalid)
        check_domain_moves(
            read_documents(check.path, domain=domain, skip_lines=check.skipped_lines),
            self.backend,
            allow=allow_domain_change,
            source=str(check.path),
        )
        return submit(
            build_celery_app(self.settings),
            build_job_store(self.settings),
            lambda: read_documents(check.path, domain=domain, skip_lines=check.skipped_lines),
            batch_size=batch_size or self.settings.batch_size,
            total=check.documents,
            source=str(check.path),
            skipped={f"line {e.line}": str(e) for e in check.skipped},
        )

    def job(
        self, job_id: str, *, wait: bool = False, progress: bool = False, timeout_s: float | None = None
    ) -> JobStatus:
        """An enqueued ingest's progress and per-document failures; `wait` polls until it finishes.

        Raises UnknownJobError for an id the job store does not hold.
        """
        from ddr_search.factory import build_job_store
        from workers.ingest import wait as wait_for

        jobs = build_job_store(self.settings)
        if not wait:
            return jobs.status(job_id)
        return wait_for(
            jobs, job_id, progress=progress, timeout_s=timeout_s, stall_timeout_s=self.settings.workers.stall_timeout_s
        )

    def search(
        self,
        query: str,
        domain: str | None = None,
        k: int | None = None,
        mode: SearchMode | str = SearchMode.HYBRID,
        *,
        filter_domain: bool = True,
        routing: RoutingMode | None = None,
        filters: Mapping[str, object] | None = None,
    ) -> list[Hit]:
        """Hybrid (default), dense or bm25 search. `domain` routes to its modules and filters to its documents;
        `filters` keep documents whose metadata passes them (docs/filters.md), e.g.
        `{"lang": "en", "tags": ["a", "b"], "year": {"gte": 2020}, "source": {"exists": True}}`.

        Raises InputError for bad arguments (before any model loads), UnknownModuleError for a domain with
        neither documents nor modules.
        """
        from ddr_search.search import resolve_route, search

        mode, routing = _check_search_arguments(query, domain, k, mode, routing)
        conditions = parse_filters(filters)
        if domain is not None and self._encoder is None:  # an unknown domain fails before the model loads
            resolve_route(
                domain,
                module_domains=self._store_domains(),
                backend=self.backend,
                filter_domain=filter_domain,
                routing=routing,
            )
        encoder = None if mode is SearchMode.BM25 else self.encoder
        if encoder is not None:
            self._warn_on_stale_vectors(encoder)
        return search(
            query,
            backend=self.backend,
            encoder=encoder,
            settings=self.settings.search,
            domain=domain,
            k=k,
            mode=mode,
            filter_domain=filter_domain,
            routing=routing,
            filters=conditions,
        )

    def _store_domains(self) -> Mapping[str, Sequence[str]]:
        """Domain -> modules from the module store's manifest (read once, without torch or a model)."""
        if self._domains is None:
            from ddr_search.factory import default_module_store
            from ddr_search.manifest import read_manifest

            store = default_module_store(self.settings)
            self._domains = read_manifest(store).domains if store is not None else {}
        return self._domains

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many existed."""
        return self.backend.delete(list(ids))

    def stats(self) -> dict[str, object]:
        """Document counts per domain plus what the backend reports about itself."""
        backend = self.backend
        out: dict[str, object] = {"documents": backend.count(), "domains": backend.domain_counts()}
        out.update(backend.describe())
        return out

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> DDRSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _warn_on_stale_vectors(self, encoder: Encoder) -> None:
        """Vectors from another passage encoder are not comparable with this query encoder: say so once."""
        if self._checked_version:
            return
        self._checked_version = True
        versions = self.backend.describe().get("encoder_versions", {})
        stale = {v: n for v, n in dict(versions).items() if v != encoder.version}
        if stale:
            log.warning(
                "%d documents were embedded by another passage encoder (%s); current is %s: re-ingest them "
                "for correct dense scores",
                sum(stale.values()),
                ", ".join(stale),
                encoder.version,
            )
