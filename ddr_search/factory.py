"""Wiring from settings to concrete parts: which encoder (ONNX or torch) and which backend.

Only this module, the client and the CLI may import connectors/, onnx_export/ and workers/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ddr_search.errors import ConfigError
from ddr_search.settings import Settings
from ddr_search.types import Backend, Encoder

if TYPE_CHECKING:
    from celery import Celery

    from workers.jobs import JobStore

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def default_module_store(settings: Settings) -> Path | None:
    """The configured store (DDR_MODULES), else the one `ddr-search train` wrote under DDR_HOME, else the
    modules shipped with the package (if any), else none (the frozen backbone)."""
    if settings.modules is not None:
        return settings.modules
    trained = settings.home / "modules"
    if settings.backbone is None and (trained / "manifest.json").exists():
        if trained not in _announced:  # said once per process: which store answers, and how to choose another
            _announced.add(trained)
            logging.getLogger(__name__).warning(
                "using the module store trained under DDR_HOME: %s (DDR_MODULES chooses another)", trained
            )
        return trained
    if settings.backbone is None and (PRETRAINED_DIR / "manifest.json").exists():
        return PRETRAINED_DIR
    return None


_announced: set[Path] = set()


def default_onnx_dir(settings: Settings) -> Path:
    """Where `ddr-search export` writes and where the encoder looks: DDR_ONNX_DIR, else <home>/onnx."""
    return settings.onnx_dir if settings.onnx_dir is not None else settings.home / "onnx"


def build_encoder(settings: Settings, *, passage_threads: int = 0) -> Encoder:
    """ONNX Runtime encoders when an export for this very store exists, else the torch encoder. Where
    passages run in bf16 (model/precision.py: CPUs with native bf16), an export answers queries only and
    torch's bf16 passages, the faster of the two with the same ranking, encode every passage (MixedEncoder).

    `passage_threads`: the passage encoder's threads (0 = every core; a worker process gets its share).
    """
    from ddr_search.model.precision import PassagePrecision, resolve_passage_precision

    store = default_module_store(settings)
    onnx = _onnx_encoder(settings, store, passage_threads)
    if onnx is None:
        return _torch_encoder(settings, store, threads=passage_threads)
    if resolve_passage_precision(settings.passage_precision) is PassagePrecision.BF16:
        from ddr_search.mixed_encoder import MixedEncoder

        return MixedEncoder(onnx, lambda: _torch_encoder(settings, store, threads=passage_threads))
    return onnx


def _torch_encoder(settings: Settings, store: Path | None, *, threads: int = 0) -> Encoder:
    """The torch encoder; `threads` > 0 sets torch's (process-wide) intra-op threads before it loads."""
    from ddr_search.model.encoder import TorchEncoder

    if threads:
        import torch

        torch.set_num_threads(threads)
    return TorchEncoder.load(
        store,
        settings.backbone,
        top_k=settings.search.top_k_modules,
        default_routing=settings.routing,
        passage_precision=settings.passage_precision,
        passage_compile=settings.passage_compile,
    )


def _onnx_encoder(settings: Settings, store: Path | None, passage_threads: int = 0) -> Encoder | None:
    """The export under DDR_ONNX_DIR / <home>/onnx, checked against the store and backbone in use.

    An export named explicitly (DDR_ONNX_DIR) that is missing or stale raises ExportError; the default
    location falls back to torch with a warning, so a forgotten re-export never serves stale modules.
    """
    from ddr_search.errors import ExportError

    directory = default_onnx_dir(settings)
    explicit = settings.onnx_dir is not None
    if not (directory / "manifest.json").exists():
        if explicit:
            raise ExportError(f"DDR_ONNX_DIR={directory} holds no ONNX export: run `ddr-search export`")
        return None
    from ddr_search.model.backbone import fingerprint, packaged_backbone_path
    from onnx_export.artifacts import check_backbone
    from onnx_export.runtime import OrtEncoder

    try:
        encoder = OrtEncoder.load(
            directory,
            store=store,
            precision="auto",  # int8 when it was exported
            query_threads=settings.search.query_threads,
            passage_threads=passage_threads,
            top_k=settings.search.top_k_modules,
            default_routing=settings.routing,
        )
        check_backbone(encoder.manifest, directory, fingerprint(settings.backbone or packaged_backbone_path()))
    except ExportError as e:
        if explicit:
            raise
        logging.getLogger(__name__).warning("%s (using the torch encoder meanwhile)", e)
        return None
    return encoder


def build_backend(settings: Settings, dimension: int | None = None) -> Backend:
    """OpenSearch or Elasticsearch when its URL is configured, otherwise the embedded store under DDR_HOME.

    `dimension` (the encoder's) is needed only to create a new index; an existing store knows its own.
    """
    if settings.opensearch.url is not None and settings.elasticsearch.url is not None:
        raise ConfigError("both DDR_OPENSEARCH__URL and DDR_ELASTICSEARCH__URL are set: keep the one to use")
    if settings.elasticsearch.url is not None:
        from connectors.elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend.from_settings(settings, dimension)
    if settings.opensearch.url is not None:
        from connectors.opensearch import OpenSearchBackend

        return OpenSearchBackend.from_settings(settings, dimension)
    from connectors.embedded import EmbeddedBackend
    from connectors.embedded.ann import AnnConfig

    embedded = settings.embedded
    ann = AnnConfig(
        enabled=embedded.ann == "auto",
        min_rows=embedded.ann_min_documents,
        m=embedded.ann_m,
        ef_construction=embedded.ann_ef_construction,
        ef_search=embedded.ann_ef_search,
    )
    return EmbeddedBackend(settings.embedded_dir, dimension, ann=ann)


def build_celery_app(settings: Settings, *, processes: int = 1, threads: int | None = None) -> Celery:
    """The workers' Celery app with these parts; by default the CPUs' threads split across the processes."""
    from workers.app import create_app

    threads = threads or max(1, (os.cpu_count() or 1) // processes)

    def make_encoder() -> Encoder:
        """Each worker process takes its share of the cores, whichever encoder serves: two processes on two
        cores must not run two threads each."""
        return build_encoder(settings, passage_threads=threads)

    def make_backend(dimension: int) -> Backend:
        return build_backend(settings, dimension)

    return create_app(settings, make_encoder, make_backend)


def build_job_store(settings: Settings) -> JobStore:
    """Where ingest jobs record their progress (Redis: DDR_WORKERS__JOBS_URL, else the Redis broker)."""
    from workers.app import jobs_url
    from workers.jobs import JobStore

    return JobStore.from_url(jobs_url(settings))
