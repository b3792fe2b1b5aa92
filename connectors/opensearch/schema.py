"""What `setup` writes: the index template (mapping + analysis + k-NN), versioned index names, pipelines.

Pure functions of the settings, so `deploy/` JSON, `ddr-search setup` and the tests agree on one shape.
"""

from __future__ import annotations

import re
from typing import Any

from ddr_search.errors import ConfigError
from ddr_search.fusion import FusionConfig, Technique
from ddr_search.settings import OpenSearchSettings

# Lucene BM25 with the parameters the embedded backend (bm25s) uses, so both rank alike (DESIGN.md 7).
BM25_K1 = 1.5
BM25_B = 0.75
# The embedded backend's BM25 tokens (ddr_search.retrieval.bm25.tokenize), rebuilt as an analyzer: the same
# 2+-character word pattern, lowercase, the same English stop-word list, then Snowball English (Porter2 in
# both Lucene and PyStemmer). Same tokens on both backends, so BM25 statistics can agree.
ANALYZER = "ddr_english"
JAVA_TOKEN_PATTERN = r"(?U)\b\w\w+\b"
VECTOR_FIELD = "embedding"
PASSAGE_FIELD = "passage"  # title + text (copy_to), the one field BM25 matches, as bm25s indexes title + text
TEMPLATE_PRIORITY = 200
_VERSION_SLUG = re.compile(r"[^a-z0-9_]+")


def english_stopwords() -> list[str]:
    """bm25s's English stop words (what the embedded backend removes), sorted for a stable template."""
    import logging

    from bm25s.stopwords import STOPWORDS_EN

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
    return sorted(set(STOPWORDS_EN))


def version_slug(encoder_version: str) -> str:
    """An encoder version as a legal index-name part (lowercase, [a-z0-9_-])."""
    slug = _VERSION_SLUG.sub("-", encoder_version.lower()).strip("-")
    if not slug:
        raise ConfigError(f"encoder version {encoder_version!r} gives an empty index name part")
    return slug[:80]


def index_name(alias: str, encoder_version: str) -> str:
    """The concrete index behind `alias` for one encoder version: `<alias>-v<version>`."""
    return f"{alias}-v{version_slug(encoder_version)}"


def template_name(alias: str) -> str:
    return f"{alias}-template"


def index_settings(settings: OpenSearchSettings) -> dict[str, Any]:
    return {
        "index": {
            "knn": True,
            "number_of_shards": settings.shards,
            "number_of_replicas": settings.replicas,
            "knn.algo_param.ef_search": settings.hnsw_ef_search,
            "similarity": {"default": {"type": "BM25", "k1": BM25_K1, "b": BM25_B}},
        },
        "analysis": {
            "tokenizer": {
                # bm25s / scikit-learn word tokens: 2+ word characters, Unicode-aware (Java's (?U) flag)
                "ddr_words": {"type": "pattern", "pattern": JAVA_TOKEN_PATTERN, "group": 0},
            },
            "filter": {
                "ddr_english_stop": {"type": "stop", "stopwords": english_stopwords()},
                "ddr_english_stemmer": {"type": "snowball", "language": "English"},
            },
            "analyzer": {
                ANALYZER: {
                    "type": "custom",
                    "tokenizer": "ddr_words",
                    "filter": ["lowercase", "ddr_english_stop", "ddr_english_stemmer"],
                }
            },
        },
    }


def mappings(settings: OpenSearchSettings, dimension: int) -> dict[str, Any]:
    """Strict top level (a typo'd field is an error, not a new field); free-form `metadata` object."""
    if dimension <= 0:
        raise ConfigError(f"vector dimension must be positive, got {dimension}")
    text = {"type": "text", "analyzer": ANALYZER, "copy_to": PASSAGE_FIELD}
    return {
        "dynamic": "strict",
        # metadata strings are exact values to filter on (`term`), not prose: keyword, not text
        "dynamic_templates": [
            {
                "metadata_strings": {
                    "path_match": "metadata.*",
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024},
                }
            }
        ],
        "properties": {
            "title": text,
            "text": text,
            PASSAGE_FIELD: {"type": "text", "analyzer": ANALYZER},
            "domain": {"type": "keyword"},
            "encoder_version": {"type": "keyword"},
            "metadata": {"type": "object", "dynamic": True},
            VECTOR_FIELD: {
                "type": "knn_vector",
                "dimension": dimension,
                "method": {
                    "name": "hnsw",
                    "space_type": "innerproduct",
                    "engine": settings.knn_engine,
                    "parameters": {"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction},
                },
            },
        },
    }


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
