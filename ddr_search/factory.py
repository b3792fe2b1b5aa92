"""Wiring from settings to concrete parts: which encoder (ONNX or torch) and which backend.

Only this module, the client and the CLI may import connectors/, onnx_export/ and workers/.
"""

from __future__ import annotations

from pathlib import Path

from ddr_search.settings import Settings
from ddr_search.types import Backend, Encoder

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def default_module_store(settings: Settings) -> Path | None:
    """The configured store, else the modules shipped with the package (if any), else none (frozen backbone)."""
    if settings.modules is not None:
        return settings.modules
    if settings.backbone is None and (PRETRAINED_DIR / "manifest.json").exists():
        return PRETRAINED_DIR
    return None


def build_encoder(settings: Settings) -> Encoder:
    """The torch encoder over the module store. (The ONNX branch is added by onnx_export.)"""
    from ddr_search.model.encoder import TorchEncoder

    return TorchEncoder.load(
        default_module_store(settings),
        settings.backbone,
        top_k=settings.search.top_k_modules,
        default_routing=settings.routing,
    )


def build_backend(settings: Settings, dimension: int | None = None) -> Backend:
    """OpenSearch when a URL is configured, otherwise the embedded store under DDR_HOME.

    `dimension` (the encoder's) is needed only to create a new index; an existing store knows its own.
    """
    if settings.opensearch.url is not None:
        from connectors.opensearch import OpenSearchBackend

        return OpenSearchBackend.from_settings(settings, dimension)
    from connectors.embedded import EmbeddedBackend

    return EmbeddedBackend(settings.embedded_dir, dimension)
