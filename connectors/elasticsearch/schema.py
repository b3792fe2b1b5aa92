"""What `setup` writes on Elasticsearch: index settings (BM25, analysis), the mapping (dense_vector for
normalised vectors with `dot_product`), and the index template. Pure functions of the settings."""

from __future__ import annotations

from typing import Any

from connectors.shared import ANALYZER, BM25_B, BM25_K1, document_mappings, english_analysis, english_stopwords
from ddr_search.settings import ElasticsearchSettings

TEMPLATE_PRIORITY = 200


def analysis(settings: ElasticsearchSettings) -> dict[str, Any]:
    """`english`: the embedded backend's tokens (pattern tokenizer, stop words, Snowball; analysis-common).
    `standard`: the standard tokenizer, lowercase and the same stop words: core Lucene only.
    `client`: none (the client writes the tokens; the mapping names the built-in `whitespace` analyzer)."""
    if settings.analyzer == "english":
        return english_analysis()
    if settings.analyzer == "client":
        return {}
    return {
        "filter": {"ddr_english_stop": {"type": "stop", "stopwords": english_stopwords()}},
        "analyzer": {
            ANALYZER: {"type": "custom", "tokenizer": "standard", "filter": ["lowercase", "ddr_english_stop"]}
        },
    }


def index_settings(settings: ElasticsearchSettings) -> dict[str, Any]:
    return {
        "index": {
            "number_of_shards": settings.shards,
            "number_of_replicas": settings.replicas,
            "similarity": {"default": {"type": "BM25", "k1": BM25_K1, "b": BM25_B}},
        },
        "analysis": analysis(settings),
    }


def mappings(settings: ElasticsearchSettings, dimension: int) -> dict[str, Any]:
    """The shared document mapping with an HNSW `dense_vector` of float32 (`index_options.type: hnsw`, not the
    int8 default of 8.14+, so scores equal exact inner products; `dot_product` for normalised vectors)."""
    return document_mappings(
        dimension,
        {
            "type": "dense_vector",
            "dims": dimension,
            "index": True,
            "similarity": "dot_product",
            "index_options": {"type": "hnsw", "m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction},
        },
        client_tokens=settings.analyzer == "client",
    )


def index_template(settings: ElasticsearchSettings, dimension: int) -> dict[str, Any]:
    return {
        "index_patterns": [f"{settings.index}-v*"],
        "priority": TEMPLATE_PRIORITY,
        "template": {"settings": index_settings(settings), "mappings": mappings(settings, dimension)},
        "_meta": {"managed_by": "ddr-search", "dimension": dimension},
    }


def dot_product_score_to_inner_product(score: float) -> float:
    """Elasticsearch scores `dot_product` kNN hits as (1 + x.y) / 2: back to x.y."""
    return 2.0 * score - 1.0
