"""What the cluster can do (GET / and GET _nodes/plugins): decides native `hybrid` vs client-side fusion."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from connectors.opensearch.client import wrapped
from ddr_search.errors import BackendError
from ddr_search.fusion import FusionConfig, Technique

NEURAL_PLUGIN = "opensearch-neural-search"
# hybrid `pagination_depth` and the score-ranker (RRF) processor both arrived in 2.19
NATIVE_HYBRID_SINCE = (2, 19, 0)
Z_SCORE_SINCE = (3, 0, 0)  # 2.19.1: "provided normalization technique is not supported"


@dataclass(frozen=True)
class ClusterFeatures:
    distribution: str
    version: tuple[int, int, int]
    plugins: frozenset[str] | None  # None: the cluster would not list them (e.g. OpenSearch Serverless)

    @property
    def neural_search(self) -> bool:
        return self.plugins is not None and NEURAL_PLUGIN in self.plugins

    @property
    def native_hybrid(self) -> bool:
        """The `hybrid` query with search pipelines, as this connector sends it."""
        return self.distribution == "opensearch" and self.neural_search and self.version >= NATIVE_HYBRID_SINCE

    def fuses_natively(self, config: FusionConfig) -> bool:
        """Whether the cluster's pipeline can fuse `config` exactly as `ddr_search.fusion.fuse` does.

        z_score needs 3.0. Weighted RRF stays on the client everywhere: 2.19 refuses RRF weights, and
        3.1+ multiplies by the weights without the mean-1 scaling `fuse` uses (same order, other scores).
        """
        if not self.native_hybrid:
            return False
        if config.technique is Technique.Z_SCORE:
            return self.version >= Z_SCORE_SINCE
        if config.technique is Technique.RRF:
            return len(set(config.weights)) == 1
        return True

    def describe(self) -> str:
        version = ".".join(map(str, self.version))
        plugins = "unknown" if self.plugins is None else (", ".join(sorted(self.plugins)) or "none")
        native = "available" if self.native_hybrid else "no (hybrid fuses on the client over _msearch)"
        return f"{self.distribution} {version}; plugins: {plugins}; native hybrid query: {native}"


def _parse_version(number: str) -> tuple[int, int, int]:
    major, minor, patch = ([int(p) for p in re.findall(r"\d+", number)[:3]] + [0, 0, 0])[:3]
    return major, minor, patch


def _tolerant(call: Callable[[], Any], action: str, url: str | None) -> Any:
    """The call's result, or None when the cluster answers 400 / 403 / 404 (anything else raises)."""
    try:
        with wrapped(action, url):
            return call()
    except BackendError as e:
        cause = e.__cause__
        if isinstance(cause, os_errors.TransportError) and cause.status_code in (400, 403, 404):
            return None
        raise


def detect(client: OpenSearch, url: str | None) -> ClusterFeatures:
    """Version and plugins; raises BackendError when the cluster cannot be reached or rejects the credentials.

    A cluster that will not say (OpenSearch Serverless has no `GET /` or `_nodes`; a user may lack
    the monitor permission) is taken as unknown: no native hybrid, the client-side fusion works anywhere.
    """
    info = _tolerant(lambda: client.info(), "GET /", url) or {}
    version = info.get("version", {})
    # _nodes/plugins needs only cluster:monitor/nodes/info (`_cat/plugins` also needs the cluster state)
    nodes = _tolerant(lambda: client.nodes.info(metric="plugins"), "GET _nodes/plugins", url)
    plugins = None
    if isinstance(nodes, dict) and isinstance(nodes.get("nodes"), dict):
        plugins = frozenset(
            str(p.get("name", ""))
            for node in nodes["nodes"].values()
            for p in node.get("plugins") or []
            if isinstance(p, dict)
        )
    return ClusterFeatures(
        distribution=str(version.get("distribution", "elasticsearch")),
        version=_parse_version(str(version.get("number", "0"))),
        plugins=plugins,
    )
