"""What `setup` writes: the index template (mapping + analysis + k-NN), versioned index names, pipelines.

Pure functions of the settings, so `deploy/` JSON, `ddr-search setup` and the tests agree on one shape.
Field names, the analyzer and index names are shared with the Elasticsearch connector (connectors.shared).
"""

from __future__ import annotations

from typing import Any

from connectors.shared import BM25_B, BM25_K1, document_mappings, english_analysis
from ddr_search.fusion import FusionConfig, Technique
from ddr_search.settings import OpenSearchSettings

TEMPLATE_PRIORITY = 200


def index_settings(settings: OpenSearchSettings) -> dict[str, Any]:
    return {
        "index": {
            "knn": True,
            "number_of_shards": settings.shards,
            "number_of_replicas": settings.replicas,
            "knn.algo_param.ef_search": settings.hnsw_ef_search,
            "similarity": {"default": {"type": "BM25", "k1": BM25_K1, "b": BM25_B}},
        },
        "analysis": english_analysis(),
    }


def mappings(settings: OpenSearchSettings, dimension: int) -> dict[str, Any]:
    """The shared document mapping with a `knn_vector` (HNSW, inner product, the configured engine)."""
    return document_mappings(
        dimension,
        {
            "type": "knn_vector",
            "dimension": dimension,
            "method": {
                "name": "hnsw",
                "space_type": "innerproduct",
                "engine": settings.knn_engine,
                "parameters": {"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction},
            },
        },
    )


def index_template(settings: OpenSearchSettings, dimension: int) -> dict[str, Any]:
    """A composable index template for every version index behind the alias (`<alias>-v*`)."""
    return {
        "index_patterns": [f"{settings.index}-v*"],
        "priority": TEMPLATE_PRIORITY,
        "template": {"settings": index_settings(settings), "mappings": mappings(settings, dimension)},
        "_meta": {"managed_by": "ddr-search", "dimension": dimension},
    }


def index_body(settings: OpenSearchSettings, dimension: int, encoder_version: str) -> dict[str, Any]:
    """The body that creates one version index: the template's content, explicit (the template may be
    shadowed by a higher-priority one on a shared cluster), plus the encoder version in `_meta`."""
    body_mappings = mappings(settings, dimension)
    body_mappings["_meta"] = {"managed_by": "ddr-search", "encoder_version": encoder_version, "dimension": dimension}
    return {"settings": index_settings(settings), "mappings": body_mappings}


# --- search pipelines ---------------------------------------------------------------------------


def pipeline_name(alias: str, config: FusionConfig) -> str:
    """A stable name per fusion configuration, e.g. `ddr-documents-min_max-0.3-0.7` / `...-rrf-60`."""
    if config.technique is Technique.RRF:
        detail = f"rrf-{config.rank_constant}"
    else:
        detail = f"{config.technique.value}-" + "-".join(f"{w:g}" for w in config.weights)
    return f"{alias}-{detail}"


RANK_CONSTANT_TOP_LEVEL_SINCE = (3, 0, 0)
PROVEN_VERSION = (2, 19, 1)  # the neural-search version the test tier runs: deploy/ and `setup --print-template`


def pipeline_body(config: FusionConfig, version: tuple[int, int, int]) -> dict[str, Any]:
    """A search pipeline with one phase-results processor, in the shape the cluster's version reads.

    min_max / l2 / z_score: `normalization-processor` + `arithmetic_mean` with the weights (2.10+).
    rrf: `score-ranker-processor` (2.19+). On 2.19 `rank_constant` is read from
    `combination.parameters` and a top-level one is silently ignored (checked on a 2.19.1 node: it
    then ranks with 60); 3.x documents it at the top level. Weighted RRF never gets here (see
    `ClusterFeatures.fuses_natively`).
    """
    weights = [round(w, 6) for w in config.weights]
    if config.technique is Technique.RRF:
        combination: dict[str, Any] = {"technique": "rrf"}
        if version >= RANK_CONSTANT_TOP_LEVEL_SINCE:
            combination["rank_constant"] = config.rank_constant
        else:
            combination["parameters"] = {"rank_constant": config.rank_constant}
        processor = {"score-ranker-processor": {"combination": combination}}
    else:
        processor = {
            "normalization-processor": {
                "normalization": {"technique": config.technique.value},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": weights}},
            }
        }
    return {"description": "ddr-search hybrid: BM25 + dense fusion", "phase_results_processors": [processor]}
