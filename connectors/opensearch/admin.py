"""`ddr-search setup` and `ddr-search reindex`: template, versioned index behind the alias, pipelines,
and re-embedding into a new version followed by one atomic alias switch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opensearchpy import exceptions as os_errors

from connectors import shared
from connectors.opensearch import schema
from connectors.opensearch.backend import OpenSearchBackend
from connectors.opensearch.client import wrapped
from connectors.opensearch.features import ClusterFeatures
from connectors.reindex import ClusterAdmin, reindex_behind_alias
from connectors.shared import ReindexReport
from ddr_search.errors import BackendError
from ddr_search.fusion import FusionConfig, Technique
from ddr_search.settings import OpenSearchSettings
from ddr_search.types import Encoder

log = logging.getLogger(__name__)


@dataclass
class SetupReport:
    features: ClusterFeatures
    template: str
    index: str
    alias: str
    actions: list[str] = field(default_factory=list)  # what changed; empty when everything was in place
    pipelines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_fusion_configs(weights: Sequence[float]) -> list[FusionConfig]:
    """The pipelines setup creates: min_max with the configured weights, and RRF (k = 60)."""
    return [FusionConfig(Technique.MIN_MAX, tuple(weights)), FusionConfig(Technique.RRF, (0.5, 0.5))]


def _index_dimension(backend: OpenSearchBackend, index: str) -> int | None:
    with wrapped(f"GET {index}/_mapping", backend.url):
        mapping = backend.client.indices.get_mapping(index=index)
    props = next(iter(mapping.values()))["mappings"].get("properties", {})
    vector = props.get(shared.VECTOR_FIELD)
    return int(vector["dimension"]) if vector else None


def _create_index(
    backend: OpenSearchBackend, settings: OpenSearchSettings, index: str, dimension: int, encoder_version: str
) -> bool:
    """Create `index` unless it exists (then check its dimension). Returns whether it was created."""
    client = backend.client
    with wrapped(f"HEAD {index}", backend.url):
        exists = client.indices.exists(index=index)
    if not exists:
        try:
            client.indices.create(index=index, body=schema.index_body(settings, dimension, encoder_version))
            return True
        except os_errors.RequestError as e:
            if e.error != "resource_already_exists_exception":  # lost a race with another setup: fine
                with wrapped(f"create index {index}", backend.url):
                    raise
    found = _index_dimension(backend, index)
    if found != dimension:
        raise BackendError(
            f"index {index} holds {found}-dimensional vectors but the encoder makes {dimension}: "
            "delete that index or change DDR_OPENSEARCH__INDEX"
        )
    return False


REFRESH_TIMEOUT_S = 300.0
REFRESH_ATTEMPTS = 3


def refresh_patiently(backend: OpenSearchBackend, index: str) -> None:
    """Refresh `index`, waiting as long as a large index needs: a refresh that outlives the client's
    timeout still completes on the cluster, so a timeout is retried (refresh is idempotent) instead of
    failing the reindex and deleting the index it has just filled."""
    for attempt in range(1, REFRESH_ATTEMPTS + 1):
        try:
            with wrapped(f"refresh {index}", backend.url):
                backend.client.indices.refresh(index=index, request_timeout=REFRESH_TIMEOUT_S)
            return
        except BackendError as e:
            if not isinstance(e.__cause__, os_errors.ConnectionTimeout) or attempt == REFRESH_ATTEMPTS:
                raise
            log.warning("refresh of %s outlived %.0f s, asking again (attempt %d)", index, REFRESH_TIMEOUT_S, attempt)


def put_template(backend: OpenSearchBackend, settings: OpenSearchSettings, dimension: int) -> str:
    name = shared.template_name(settings.index)
    with wrapped(f"PUT _index_template/{name}", backend.url):
        backend.client.indices.put_index_template(name=name, body=schema.index_template(settings, dimension))
    return name


def put_pipelines(backend: OpenSearchBackend, alias: str, configs: Sequence[FusionConfig]) -> list[str]:
    """One pipeline per configuration the cluster can fuse natively (the others fuse on the client)."""
    names = []
    version = backend.features.version
    for config in configs:
        if not backend.features.fuses_natively(config):
            continue
        name = schema.pipeline_name(alias, config)
        with wrapped(f"PUT _search/pipeline/{name}", backend.url):
            backend.client.transport.perform_request(
                "PUT", f"/_search/pipeline/{name}", body=schema.pipeline_body(config, version)
            )
        names.append(name)
    return names


def setup(
    backend: OpenSearchBackend,
    settings: OpenSearchSettings,
    *,
    dimension: int,
    encoder_version: str,
    fusion_configs: Sequence[FusionConfig] = (),
) -> SetupReport:
    """Bring the cluster to the configured state; running it again changes nothing.

    Index template (PUT is idempotent), the version index for this encoder (created once), the alias
    (added only when absent: an alias serving another encoder version is left alone and reported,
    since moving it is `reindex`'s job), and search pipelines where the cluster runs neural-search.
    """
    features = backend.features
    alias = settings.index
    index = shared.index_name(alias, encoder_version)
    report = SetupReport(
        features=features, template=put_template(backend, settings, dimension), index=index, alias=alias
    )
    serving = backend.indices()
    if not serving:
        with wrapped(f"HEAD {alias}", backend.url):
            if backend.client.indices.exists(index=alias):
                raise BackendError(
                    f"{alias} is a concrete index, not an alias: ddr-search serves an alias over versioned "
                    "indices; set DDR_OPENSEARCH__INDEX to another name"
                )
        if _create_index(backend, settings, index, dimension, encoder_version):
            report.actions.append(f"created index {index}")
        with wrapped(f"POST _aliases ({alias} -> {index})", backend.url):
            backend.client.indices.update_aliases(
                body={"actions": [{"add": {"index": index, "alias": alias, "is_write_index": True}}]}
            )
        report.actions.append(f"alias {alias} -> {index}")
    elif serving == [index]:
        if _create_index(backend, settings, index, dimension, encoder_version):  # checks the dimension
            report.actions.append(f"created index {index}")
    else:
        report.notes.append(
            f"alias {alias} serves {', '.join(serving)}, made by another encoder version: "
            f"run `ddr-search reindex` to re-embed into {index} and switch"
        )
    if features.native_hybrid and fusion_configs:
        report.pipelines = put_pipelines(backend, alias, fusion_configs)
    elif fusion_configs:
        report.notes.append("no neural-search plugin (>= 2.19): hybrid search fuses on the client over _msearch")
    return report


@dataclass
class _Admin(ClusterAdmin):
    """connectors.reindex.IndexAdmin over opensearch-py."""

    settings: OpenSearchSettings

    def create(self, index: str) -> None:
        put_template(self.backend, self.settings, self.encoder.dimension)  # the mapping for this encoder
        _create_index(self.backend, self.settings, index, self.encoder.dimension, self.encoder.version)

    def refresh(self, index: str) -> None:
        refresh_patiently(self.backend, index)

    def writer(self, index: str) -> OpenSearchBackend:
        b = self.backend
        return OpenSearchBackend(
            b.client,
            alias=index,
            url=b.url,
            dimension=self.encoder.dimension,
            refresh=False,
            chunk_size=b.chunk_size,
            max_retries=b.max_retries,
            initial_backoff_s=b.initial_backoff_s,
            max_backoff_s=b.max_backoff_s,
            require_alias=False,
        )

    def switch(self, old: Sequence[str], new: str) -> None:
        with wrapped(f"POST _aliases (switch {self.alias} -> {new})", self.backend.url):
            self.backend.client.indices.update_aliases(body={"actions": self.switch_actions(old, new)})


def reindex(
    backend: OpenSearchBackend,
    settings: OpenSearchSettings,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    delete_old: bool = False,
    force: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> ReindexReport:
    """Re-embed every document into `<alias>-v<encoder.version>` and switch the alias in one call
    (connectors.reindex: the alias serves the old index until then; a failure leaves it untouched)."""
    return reindex_behind_alias(
        _Admin(backend, settings.index, encoder, wrapped, settings),
        batch_size=batch_size,
        delete_old=delete_old,
        force=force,
        on_batch=on_batch,
    )
