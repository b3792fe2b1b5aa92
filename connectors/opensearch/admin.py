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
from connectors.shared import ReindexReport
from ddr_search.errors import BackendError
from ddr_search.fusion import FusionConfig, Technique
from ddr_search.indexing import embed_and_index
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
    """Re-embed every document into `<alias>-v<encoder.version>`, then switch the alias in one call.

    The alias keeps serving the old index until the final `_aliases` request, which removes the old
    indices and adds the new one atomically; any failure before it leaves the alias untouched (the
    half-filled new index is deleted, so a retry starts clean). Documents written through the alias
    while this runs land in the old index and are caught by the final count check: pause ingest.
    """
    alias = settings.index
    old = backend.indices()
    if not old:
        raise BackendError(f"alias {alias} does not exist: run `ddr-search setup` first")
    new = shared.index_name(alias, encoder.version)
    if old == [new] and not force:
        return ReindexReport(
            alias, old, new, backend.count(), switched=False, note=f"{alias} already serves {new}: nothing to do"
        )
    put_template(backend, settings, encoder.dimension)
    refresh_patiently(backend, alias)  # the scroll below and the count check see only refreshed writes
    client = backend.client
    with wrapped(f"HEAD {new}", backend.url):
        if new not in old and client.indices.exists(index=new):
            log.warning("deleting %s, left half-filled by an earlier reindex", new)
            client.indices.delete(index=new)
    target = new
    if new in old:  # --force onto the same version: fill a fresh copy beside it
        target = f"{new}-{len(old)}"
        with wrapped(f"HEAD {target}", backend.url):
            if client.indices.exists(index=target):
                client.indices.delete(index=target)
    _create_index(backend, settings, target, encoder.dimension, encoder.version)
    expected = backend.count()
    writer = OpenSearchBackend(
        client,
        alias=target,
        url=backend.url,
        dimension=encoder.dimension,
        refresh=False,
        chunk_size=backend.chunk_size,
        max_retries=backend.max_retries,
        initial_backoff_s=backend.initial_backoff_s,
        max_backoff_s=backend.max_backoff_s,
        require_alias=False,
    )
    written = 0
    try:
        for batch in backend.scan(batch_size=batch_size):
            written += embed_and_index(batch, encoder, writer, batch_size=batch_size)
            if on_batch is not None:
                on_batch(written)
        refresh_patiently(backend, target)
        filled = writer.count()
        if filled != expected or written != expected:
            raise BackendError(
                f"reindex wrote {filled} documents into {target} but {alias} holds {expected} "
                "(was something ingesting meanwhile?): alias left on the old index"
            )
        actions = [{"remove": {"index": i, "alias": alias}} for i in old]
        actions.append({"add": {"index": target, "alias": alias, "is_write_index": True}})
        with wrapped(f"POST _aliases (switch {alias} -> {target})", backend.url):
            client.indices.update_aliases(body={"actions": actions})
    except BaseException:
        try:
            if target not in backend.indices():  # a switch that timed out may still have happened
                client.indices.delete(index=target)
        except Exception:  # the original error matters more; the next reindex deletes it anyway
            log.warning("could not delete the half-filled index %s", target)
        raise
    report = ReindexReport(alias, old, target, written, switched=True)
    if delete_old:
        with wrapped("delete old indices", backend.url):
            client.indices.delete(index=",".join(old))
        report.deleted_old = True
    return report
