"""ddr-search: Dynamic Dense Retrieval (routed prefix modules) for OpenSearch and an embedded store."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

# onnxruntime 1.32 reports telemetry on Linux unless this is set before it loads.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ddr_search.client import DDRSearch

__all__ = ["DDRSearch", "__version__"]


def __getattr__(name: str) -> object:
    # Lazy: `import ddr_search` must stay cheap (no torch) so `ddr-search --help` is instant.
    if name == "DDRSearch":
        from ddr_search.client import DDRSearch

        return DDRSearch
    raise AttributeError(name)
