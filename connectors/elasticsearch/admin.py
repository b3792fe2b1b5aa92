"""`ddr-search setup` and `ddr-search reindex` on Elasticsearch: template, versioned index behind the alias,
and re-embedding into a new version followed by one atomic alias switch (the OpenSearch connector's
design; docs/elasticsearch.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from elasticsearch import ApiError

from connectors import shared
from connectors.elasticsearch import schema
from connectors.elasticsearch.backend import ClusterInfo, ElasticsearchBackend
from connectors.elasticsearch.client import MISSING_ANALYSIS, wrapped
from connectors.elasticsearch.retrievers import RetrieverSupport, probe
from connectors.reindex import ClusterAdmin, reindex_behind_alias
from connectors.shared import ReindexReport
from ddr_search.errors import BackendError, ConfigError
from ddr_search.settings import ElasticsearchSettings
from ddr_search.types import Encoder

log = logging.getLogger(__name__)


@dataclass
class SetupReport:
    info: ClusterInfo
    template: str
    index: str
    alias: str
    retrievers: RetrieverSupport | None = None  # the cluster's rrf / linear, probed once the alias exists
    actions: list[str] = field(default_factory=list)  # what changed; empty when everything was in place
    notes: list[str] = field(default_factory=list)


def _analysis_refused(e: BackendError, settings: ElasticsearchSettings) -> BackendError:
    """The default analyzer on a cluster without analysis-common: one line naming the setting to change."""
    cause = e.__cause__
    if (
        settings.analyzer == "english"
        and isinstance(cause, ApiError)
        and any(m in str(cause.body) for m in MISSING_ANALYSIS)
    ):
        return ConfigError(
            "this cluster has no analysis-common module (no pattern tokenizer / snowball stemmer) for the "
            "default English analyzer: set DDR_ELASTICSEARCH__ANALYZER=client (the same terms, split by this "
            "client) or standard (no stemming)"
        )
    return e


def put_template(backend: ElasticsearchBackend, settings: ElasticsearchSettings, dimension: int) -> str:
    name = shared.template_name(settings.index)
    body = schema.index_template(settings, dimension)
    try:
        with wrapped(f"PUT _index_template/{name}", backend.url):
            backend.client.indices.put_index_template(
                name=name,
                index_patterns=body["index_patterns"],
                priority=body["priority"],
                template=body["template"],
                meta=body["_meta"],
            )
    except BackendError as e:
        raise _analysis_refused(e, settings) from e.__cause__
    return name


def _check_existing(backend: ElasticsearchBackend, settings: ElasticsearchSettings, index: str, dimension: int) -> None:
    """An existing index must hold this encoder's dimension and be analysed the way the settings write."""
    with wrapped(f"GET {index}/_mapping", backend.url):
        mapping = backend.client.indices.get_mapping(index=index)
    props = next(iter(mapping.values()))["mappings"].get("properties", {})
    vector = props.get(shared.VECTOR_FIELD)
    found = int(vector["dims"]) if vector else None
    if found != dimension:
        raise BackendError(
            f"index {index} holds {found}-dimensional vectors but the encoder makes {dimension}: "
            "delete that index or change DDR_ELASTICSEARCH__INDEX"
        )
    client_tokens = props.get(shared.PASSAGE_FIELD, {}).get("analyzer") == "whitespace"
    if client_tokens != (settings.analyzer == "client"):
        made = "client" if client_tokens else "english or standard"
        raise ConfigError(
            f"index {index} was set up with DDR_ELASTICSEARCH__ANALYZER={made}, not {settings.analyzer}: "
            "set it back, or set DDR_ELASTICSEARCH__INDEX to a new name and ingest again"
        )


def _create_index(
    backend: ElasticsearchBackend, settings: ElasticsearchSettings, index: str, dimension: int, encoder_version: str
) -> bool:
    """Create `index` unless it exists (then check its dimension). Returns whether it was created."""
    client = backend.client
    with wrapped(f"HEAD {index}", backend.url):
        exists = bool(client.indices.exists(index=index))
    if not exists:
        mappings = schema.mappings(settings, dimension)
        mappings["_meta"] = {"managed_by": "ddr-search", "encoder_version": encoder_version, "dimension": dimension}
        try:
            with wrapped(f"create index {index}", backend.url):
                client.indices.create(index=index, settings=schema.index_settings(settings), mappings=mappings)
            return True
        except BackendError as e:
            cause = e.__cause__
            if not (isinstance(cause, ApiError) and "resource_already_exists_exception" in str(cause.body)):
                raise _analysis_refused(e, settings) from cause
    _check_existing(backend, settings, index, dimension)
    return False


def setup(
    backend: ElasticsearchBackend, settings: ElasticsearchSettings, *, dimension: int, encoder_version: str
) -> SetupReport:
    """Bring the cluster to the configured state; running it again changes nothing."""
    alias = settings.index
    index = shared.index_name(alias, encoder_version)
    with wrapped(f"HEAD {index}", backend.url):
        if backend.client.indices.exists(index=index):
            _check_existing(backend, settings, index, dimension)  # before the template changes anything
    report = SetupReport(
        info=backend.info, template=put_template(backend, settings, dimension), index=index, alias=alias
    )
    serving = backend.indices()
    if not serving:
        with wrapped(f"HEAD {alias}", backend.url):
            if backend.client.indices.exists(index=alias):
                raise BackendError(
                    f"{alias} is a concrete index, not an alias: ddr-search serves an alias over versioned "
                    "indices; set DDR_ELASTICSEARCH__INDEX to another name"
                )
        if _create_index(backend, settings, index, dimension, encoder_version):
            report.actions.append(f"created index {index}")
        with wrapped(f"POST _aliases ({alias} -> {index})", backend.url):
            backend.client.indices.update_aliases(
                actions=[{"add": {"index": index, "alias": alias, "is_write_index": True}}]
            )
        report.actions.append(f"alias {alias} -> {index}")
    elif serving == [index]:
        if _create_index(backend, settings, index, dimension, encoder_version):
            report.actions.append(f"created index {index}")
    else:
        report.notes.append(
            f"alias {alias} serves {', '.join(serving)}, made by another encoder version: "
            f"run `ddr-search reindex` to re-embed into {index} and switch"
        )
    report.retrievers = probe(backend.client, alias, backend.url)
    return report


@dataclass
class _Admin(ClusterAdmin):
    """connectors.reindex.IndexAdmin over the official Elasticsearch client."""

    settings: ElasticsearchSettings

    def create(self, index: str) -> None:
        put_template(self.backend, self.settings, self.encoder.dimension)  # the mapping for this encoder
        _create_index(self.backend, self.settings, index, self.encoder.dimension, self.encoder.version)

    def refresh(self, index: str) -> None:
        with wrapped(f"refresh {index}", self.backend.url):
            self.backend.client.options(request_timeout=300).indices.refresh(index=index)

    def writer(self, index: str) -> ElasticsearchBackend:
        b = self.backend
        return ElasticsearchBackend(
            b.client,
            alias=index,
            url=b.url,
            dimension=self.encoder.dimension,
            client_tokens=b.client_tokens,
            chunk_size=b.chunk_size,
            max_retries=b.max_retries,
            require_alias=False,
        )

    def switch(self, old: Sequence[str], new: str) -> None:
        with wrapped(f"POST _aliases (switch {self.alias} -> {new})", self.backend.url):
            self.backend.client.indices.update_aliases(actions=self.switch_actions(old, new))


def reindex(
    backend: ElasticsearchBackend,
    settings: ElasticsearchSettings,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    delete_old: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> ReindexReport:
    """Re-embed every document into `<alias>-v<encoder.version>` and switch the alias in one call
    (connectors.reindex: the alias serves the old index until then; a failure leaves it untouched)."""
    return reindex_behind_alias(
        _Admin(backend, settings.index, encoder, wrapped, settings),
        batch_size=batch_size,
        delete_old=delete_old,
        on_batch=on_batch,
    )
